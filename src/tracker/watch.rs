//! The cheap watch: whether the target's mappings may have changed since the last listing,
//! told without visiting every mapping from userspace (a `PROCMAP_QUERY` per mapping costs
//! about 1 µs: 20 ms a harvest at 20 k mappings, more than the harvest proper).
//!
//! Every mapping the target creates is unregistered with our userfaultfd when it appears
//! (mmap, brk past a registered heap, an mremap move, MAP_FIXED over tracked memory: none of
//! them inherits a registration). So the mappings are unchanged, as far as what is tracked
//! goes, when:
//!
//! 1. one `PAGEMAP_SCAN` pass over every address outside the mappings known to be
//!    unregistered finds no unregistered memory (the kernel skips registered VMAs at the VMA
//!    level, and an address with no VMA costs nothing);
//! 2. those known-unregistered mappings (the vDSO, what the scope leaves out or the kernel
//!    refused: few, usually) are each as they were, by `PROCMAP_QUERY`;
//! 3. the address space's size (`/proc/PID/statm`) is as it was: an munmap, or a
//!    registered mapping that mremap shrank or grew in place (which keeps its registration),
//!    changes it.
//!
//! What this cannot see: permission changes (mprotect keeps registrations, so nothing
//! tracked changes; the listing's permissions go stale until the next one), and an in-place
//! mremap growth balanced to the page by an unmap or shrink elsewhere in the same interval.
//! Neither loses a write: the harvest walks every registered VMA in scope, armed or not, so
//! a page written in a grown part reads as written. What they delay is the listing, and so
//! the `mapping` records: a full pass every [`FULL_EVERY`] bounds that.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::maps::{self, MapsReader, Vma};
use crate::span::Span;
use crate::sys::abi;

/// The longest the listing is trusted without a full `PROCMAP_QUERY` pass.
pub(crate) const FULL_EVERY: Duration = Duration::from_secs(10);

/// What the cheap checks compare against, derived from the last listing and registry.
#[derive(Default)]
pub(crate) struct Watch {
    /// Made from a listing (none before the first full pass).
    ready: bool,
    /// Every user address outside the known-unregistered mappings, for check 1.
    pub(crate) walked: Vec<Span>,
    /// The mappings of the last listing that are not wholly registered, for check 2.
    unregistered: Vec<Vma>,
    /// The address space's size in pages at the last listing, for check 3.
    size_pages: u64,
    /// When the last full pass ran.
    full_at: Option<Instant>,
    /// `/proc/PID/statm`, kept open.
    statm: Option<std::fs::File>,
}

impl Watch {
    /// A full pass is due: never made, stale, or too old.
    pub(crate) fn full_pass_due(&self) -> bool {
        !self.ready || self.full_at.is_none_or(|t| t.elapsed() >= FULL_EVERY)
    }

    /// Make the next harvest's pass a full one.
    pub(crate) fn relist(&mut self) {
        self.full_at = None;
    }

    /// The size of the address space in pages now (`/proc/PID/statm`'s first field), read
    /// through an fd kept open, into no allocation.
    pub(crate) fn size_pages(&mut self, pid: i32) -> io::Result<u64> {
        if self.statm.is_none() {
            self.statm = Some(std::fs::File::open(format!("/proc/{pid}/statm"))?);
        }
        let statm = self.statm.as_ref().expect("opened above");
        let mut text = [0u8; 128];
        let n = crate::sys::pread_full(statm.as_fd(), &mut text, 0)?;
        text[..n]
            .split(|b| *b == b' ')
            .next()
            .and_then(|f| std::str::from_utf8(f).ok()?.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("no size in /proc/{pid}/statm")))
    }

    /// Note that a full pass (the listing compared whole) was just made, over `vmas` with
    /// `armed` registered, with the address space at `size_pages`.
    pub(crate) fn listed(&mut self, vmas: &[Vma], armed: &[Span], size_pages: u64) {
        let mapped = maps::union(
            vmas.iter()
                .filter(|v| v.start < abi::TASK_SIZE)
                .map(|v| Span::new(v.start, v.end))
                .collect(),
        );
        let outside = maps::subtract(&mapped, armed);
        self.walked = maps::subtract(&[Span::new(0, abi::TASK_SIZE)], &outside);
        self.unregistered = vmas
            .iter()
            .filter(|v| {
                v.start < abi::TASK_SIZE
                    && !maps::intersect(&[Span::new(v.start, v.end)], &outside).is_empty()
            })
            .cloned()
            .collect();
        self.size_pages = size_pages;
        self.full_at = Some(Instant::now());
        self.ready = true;
    }

    /// Note that a full pass found `vmas` as they were, with `armed` registered and the
    /// address space at `size_pages`: as [`Watch::listed`], without deriving anything again
    /// (nor allocating) when that was done for them already.
    pub(crate) fn steady(&mut self, vmas: &[Vma], armed: &[Span], size_pages: u64) {
        if !self.ready {
            return self.listed(vmas, armed, size_pages);
        }
        self.size_pages = size_pages;
        self.full_at = Some(Instant::now());
    }

    /// Checks 2 and 3: the known-unregistered mappings and the size are as they were.
    /// (Check 1 is the caller's unarmed-memory pass over [`Watch::walked`].)
    pub(crate) fn unchanged(&self, maps: &MapsReader, size_pages: u64) -> io::Result<bool> {
        Ok(self.ready && size_pages == self.size_pages && maps.same(&self.unregistered)?)
    }
}
