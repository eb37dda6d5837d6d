//! Which pages of a process's memory are written, and when: the engine of `uffd-dirty`,
//! built on userfaultfd asynchronous write-protection (`UFFD_FEATURE_WP_ASYNC`,
//! `UFFD_FEATURE_WP_UNPOPULATED`) and the `PAGEMAP_SCAN` ioctl, with clear_refs soft-dirty as
//! a second, older mechanism.
//!
//! # Lifecycle: attach, harvest, detach
//!
//! A [`Target`] is a process, opened by PID or launched as a command (held before its
//! `execve` until a tracker attaches, so the new program is tracked from its first
//! instruction). [`TrackerBuilder::attach`] makes a userfaultfd *inside* the target (by
//! ptrace syscall injection, from a short-lived helper process, so that nothing of the
//! target's is left behind however the caller dies), registers every mapping in scope and
//! write-protects it, empty pages included. From then on every first write to a page clears
//! its protection, in the kernel, without stopping the target. Each [`Tracker::harvest`]
//! reads which pages lost it and protects them again in the same atomic call: a
//! [`Harvest`] holds the pages written since the previous one, as a [`SpanSet`]. Dropping
//! the tracker closes the userfaultfd and the kernel drops every protection.
//!
//! ```no_run
//! use uffd_dirty::{Target, TrackerBuilder};
//!
//! let target = Target::open(1234)?;
//! let mut tracker = TrackerBuilder::new().attach(&target)?;
//! for _ in 0..10 {
//!     std::thread::sleep(std::time::Duration::from_millis(100));
//!     let harvest = tracker.harvest()?;
//!     println!("{} pages written", harvest.dirty_pages());
//!     for span in harvest.dirty() {
//!         println!("  {span}");
//!     }
//! }
//! tracker.detach();
//! # Ok::<(), uffd_dirty::Error>(())
//! ```
//!
//! # What is reported, exactly
//!
//! Every page of the tracked memory written between two harvests is in the second one: no
//! write is lost, including writes to pages never touched before, to memory mapped after
//! the attach (new mappings are armed by the next harvest and reported from it on), and to
//! memory written and made read-only again between two harvests. A write that races with a
//! harvest may be reported by both that harvest and the next (the documented double
//! report); pages may also be reported that were zapped (`MADV_DONTNEED`) rather than
//! written, since their contents changed. Writes made without a page fault — by a device
//! through DMA, by io_uring into registered buffers — cannot be seen: a tracker lists such
//! sources it finds in [`Tracker::blind_spots`].
//!
//! # Pieces
//!
//! [`probe::Support`] says what the running kernel offers. [`Tracker::read_pages`] copies
//! page contents, for pre-copy (see `examples/precopy.rs`). [`Target::freeze`] stops the
//! target for a last, race-free round. Errors are an [`Error`] whose variants a caller can
//! match on.
//!
//! The attach helper is the `uffd-dirty` binary (`uffd-dirty attach-helper`): a program
//! using this library finds it beside itself, one directory up, in `PATH`, or named by the
//! environment variable `UFFD_DIRTY_ATTACH_HELPER`.

#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

/// `Display` as the serde name, so that records, messages and the command line spell an
/// enum's values one way: `pagemap-scan`, `heap`, `io_uring`, ...
macro_rules! display_as_serialized {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(name)) => f.write_str(&name),
                    _ => write!(f, "{self:?}"),
                }
            }
        }
    )*};
}

mod attach;
mod blind;
// The C API: built with the `capi` feature, and always in the unit tests.
#[cfg(any(feature = "capi", test))]
mod capi;
mod error;
mod launch;
mod maps;
pub mod probe;
mod process;
mod scan;
mod scope;
mod span;
mod sys;
mod target;
#[cfg(test)]
#[path = "testing.rs"]
mod testing;
mod tracker;
mod uffd;

pub use blind::{Blind, BlindKind};
pub use error::{Error, Gone, Result};
pub use maps::{MappingKind, Vma as Mapping, mapping_at, visible as printable};
pub use scope::Selector;
pub use span::{Span, SpanSet};
pub use target::Target;
pub use tracker::{
    ArmedBy, Arming, Attached, Change, Frozen, Harvest, MappingChange, Method, SkippedMapping,
    TrackedMapping, Tracker, TrackerBuilder,
};

/// Run as the attach helper: `uffd-dirty attach-helper --pid PID [--launched]`, started by
/// the library with its socket on fd 3 and the target's pidfd on fd 4. A program that wants
/// to be its own helper (named in `UFFD_DIRTY_ATTACH_HELPER`) calls this, and nothing else,
/// when started so; it returns when the attach is done or abandoned.
///
/// # Safety
///
/// Only in a process started by the library as its helper: this takes ownership of fds 3
/// and 4 (closing them when done), blocks every signal of the calling thread, lowers the
/// process's OOM score, and ptrace-injects system calls into process `pid`.
pub unsafe fn serve_attach_helper(pid: i32, launched: bool) -> Result<()> {
    attach::helper::serve(pid, launched).map_err(error::lift)
}
