//! The cheap watch: whether the target's mappings may have changed since the last listing,
//! told without visiting every mapping from userspace (a `PROCMAP_QUERY` per mapping costs
//! about 1 µs: 20 ms a harvest at 20 k mappings, more than the harvest proper).
//!
//! A mapping can change, as far as tracking goes, in four ways, each seen by one check:
//!
//! 1. Memory appears where the last listing had none (mmap, brk, an mremap move, a mapping
//!    grown in place by mremap, which keeps its registration): one `PAGEMAP_SCAN` call per gap
//!    of the listing finds any mapping there, registered or not (an address with no VMA costs
//!    nothing).
//! 2. Tracked memory is replaced in place (MAP_FIXED, munmap + mmap of the same range): the
//!    new mapping is unregistered, and a `PAGEMAP_SCAN` pass over the tracked memory for
//!    unregistered memory finds it (the kernel skips registered VMAs without walking them).
//!    This check ran every harvest before the cheap watch, too.
//! 3. A mapping left unregistered (the vDSO, what the scope leaves out, what the kernel
//!    refused: few, usually) is replaced, grown or gone, or a tracked mapping grows in place
//!    over the range its neighbour left (munmap, then mremap), where the two map different
//!    things or share differently (another file, another part of one, or one shared and the
//!    other private: where they map the same, a listing would see no change either): a
//!    `PROCMAP_QUERY` for each such mapping and neighbour.
//! 4. Memory goes (munmap, mremap shrinking it): the address space's size
//!    (`/proc/PID/statm`) changes.
//!
//! What none of them sees is a change of permissions alone (mprotect splits and merges
//! mappings, keeping their registration: nothing tracked changes; the listing's permissions
//! and splits go stale until the next full one, at most [`FULL_EVERY`] later), and tracked
//! memory replaced in place by memory registered with *another* userfaultfd before our next
//! harvest (the program's own write tracking): check 2 cannot tell that registration from
//! ours. A target that holds a userfaultfd of its own, when attached to or at a full listing,
//! is therefore listed whole at every harvest, as before the cheap watch.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::refresh::source;
use crate::maps::{self, MapsReader, Vma};
use crate::span::{Span, overlaps};
use crate::sys::abi;

/// The longest the listing is trusted without a full `PROCMAP_QUERY` pass.
pub(crate) const FULL_EVERY: Duration = Duration::from_secs(10);

/// What the cheap checks compare against, derived from the last listing and registry.
#[derive(Default)]
pub(crate) struct Watch {
    /// Made from a listing (none before the first full pass).
    ready: bool,
    /// The user addresses the last listing had no mapping at, for check 1.
    pub(crate) gaps: Vec<Span>,
    /// The mappings of the last listing that are not wholly registered, and the tracked
    /// ones a neighbour mapping something else could grow over, for check 3.
    queried: Vec<Vma>,
    /// The address space's size in pages at the last listing, for check 4.
    size_pages: u64,
    /// The target holds a userfaultfd of its own: every pass is a full one.
    own_userfaultfd: bool,
    /// When the last full pass ran.
    full_at: Option<Instant>,
    /// `/proc/PID/statm` and `/proc/PID/fd`, kept open.
    statm: Option<std::fs::File>,
    fds: Option<std::fs::File>,
}

impl Watch {
    /// A full pass is due: never made, stale, or too old.
    pub(crate) fn full_pass_due(&self) -> bool {
        !self.ready
            || self.own_userfaultfd
            || self.full_at.is_none_or(|t| t.elapsed() >= FULL_EVERY)
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
    pub(crate) fn listed(&mut self, pid: i32, vmas: &[Vma], armed: &[Span], size_pages: u64) {
        self.own_userfaultfd = self.holds_userfaultfd(pid);
        let mapped = maps::union(
            vmas.iter()
                .filter(|v| v.start < abi::TASK_SIZE)
                .map(|v| Span::new(v.start, v.end))
                .collect(),
        );
        let outside = maps::subtract(&mapped, armed);
        self.gaps = maps::subtract(&[Span::new(0, abi::TASK_SIZE)], &mapped);
        self.queried = vmas
            .iter()
            .filter(|v| v.start < abi::TASK_SIZE && overlaps(&outside, Span::new(v.start, v.end)))
            .cloned()
            .collect();
        // Seams: a tracked mapping right after one that maps something else there, or
        // shares it differently (shared memory's zapped pages are watched apart).
        self.queried.extend(
            vmas.windows(2)
                .filter(|w| {
                    let (left, right) = (&w[0], &w[1]);
                    left.end == right.start
                        && right.start < abi::TASK_SIZE
                        && (source(left, right.start), left.shared)
                            != (source(right, right.start), right.shared)
                        && !overlaps(&outside, Span::new(right.start, right.end))
                })
                .map(|w| w[1].clone()),
        );
        self.size_pages = size_pages;
        self.full_at = Some(Instant::now());
        self.ready = true;
    }

    /// Note that a full pass found `vmas` as they were, with `armed` registered and the
    /// address space at `size_pages`: as [`Watch::listed`], without deriving anything again
    /// (nor allocating) when that was done for them already.
    pub(crate) fn steady(&mut self, pid: i32, vmas: &[Vma], armed: &[Span], size_pages: u64) {
        if !self.ready {
            return self.listed(pid, vmas, armed, size_pages);
        }
        if !self.own_userfaultfd {
            self.own_userfaultfd = self.holds_userfaultfd(pid);
        }
        self.size_pages = size_pages;
        self.full_at = Some(Instant::now());
    }

    /// Whether the target holds a userfaultfd of its own now.
    fn holds_userfaultfd(&mut self, pid: i32) -> bool {
        if self.fds.is_none() {
            self.fds = std::fs::File::open(format!("/proc/{pid}/fd")).ok();
        }
        self.fds.as_ref().is_none_or(has_userfaultfd)
    }

    /// Checks 3 and 4: the known-unregistered mappings and the size are as they were.
    /// (Checks 1 and 2 are the caller's `PAGEMAP_SCAN` passes over [`Watch::gaps`] and the
    /// tracked memory.)
    pub(crate) fn unchanged(&self, maps: &MapsReader, size_pages: u64) -> io::Result<bool> {
        Ok(self.ready && size_pages == self.size_pages && maps.same(&self.queried)?)
    }
}

/// Whether the process whose `/proc/PID/fd` directory `fds` is holds a userfaultfd (ours,
/// made in it to attach, is closed there by then). Unknown (unreadable) counts as yes: the
/// full listing is always right. Into buffers on the stack: a steady-state harvest
/// allocates nothing, its full passes included.
fn has_userfaultfd(fds: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    const UFFD: &[u8] = b"anon_inode:[userfaultfd]";
    let dir = fds.as_raw_fd();
    // SAFETY: lseek on our own directory fd, to read it from the start again.
    if unsafe { libc::lseek(dir, 0, libc::SEEK_SET) } != 0 {
        return true;
    }
    let mut entries = [0u8; 4096];
    loop {
        // SAFETY: getdents64 writes at most `entries.len()` bytes into `entries`.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir,
                entries.as_mut_ptr(),
                entries.len(),
            )
        };
        if n < 0 {
            return true;
        }
        if n == 0 {
            return false;
        }
        let mut at = 0usize;
        while at + 19 < n as usize {
            // struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name (NUL-ended).
            let reclen = u16::from_ne_bytes([entries[at + 16], entries[at + 17]]) as usize;
            if reclen == 0 {
                return true;
            }
            let name = &entries[at + 19..at + reclen];
            let mut target = [0u8; 64];
            // SAFETY: `name` holds a NUL-ended file name inside `entries`; readlinkat writes
            // at most `target.len()` bytes into `target`.
            let len = unsafe {
                libc::readlinkat(
                    dir,
                    name.as_ptr().cast(),
                    target.as_mut_ptr().cast(),
                    target.len(),
                )
            };
            if len > 0 && target[..len as usize] == *UFFD {
                return true;
            }
            at += reclen;
        }
    }
}
