//! Which parts of the target are registered with our userfaultfd, and what failed to.

use std::collections::HashSet;
use std::io;

use crate::maps::{self, Vma};
use crate::scope::{Scope, Selected, select};
use crate::span::Span;
use crate::uffd::{self, Uffd};

/// A VMA as /proc/PID/maps shows it: range, file, offset and the permissions that decide
/// whether it is tracked. Two VMAs with one key are told apart by the unarmed-memory query.
pub(crate) type VmaKey = (u64, u64, u64, u64, bool, bool);

pub(crate) fn key(v: &Vma) -> VmaKey {
    (v.start, v.end, v.inode, v.offset, v.write, v.shared)
}

/// Which parts of the target are registered with our userfaultfd.
#[derive(Default)]
pub(crate) struct Registry {
    /// Union of the registered spans after the last refresh.
    pub(crate) armed: Vec<Span>,
    /// Registered pieces after the last refresh, for the start record.
    pub(crate) pieces: Vec<Selected>,
    /// VMAs that failed to register, so each is tried and reported once.
    pub(crate) failed: HashSet<VmaKey>,
    /// Their spans: never harvested, since PAGEMAP_SCAN would happily read and re-protect
    /// memory armed by *another* async userfaultfd (the program's own write tracking).
    pub(crate) excluded: Vec<Span>,
    /// A piece was dropped by the last refresh because it was unmapped meanwhile: the next
    /// refresh must run even if the listing reads as before (it may be mapped again).
    pub(crate) retry: bool,
}

pub(crate) struct Skip {
    pub(crate) piece: Selected,
    pub(crate) reason: String,
    /// The kernel refused it as never writable (EPERM: a shared mapping of a file opened
    /// read-only): nothing can be missed there, so it is listed but not warned about.
    pub(crate) never_writable: bool,
    /// Refused as registered already by another userfaultfd (EBUSY).
    pub(crate) busy: bool,
}

impl Registry {
    /// Register the trackable VMA pieces in `scope` that are new since the last refresh, and
    /// those overlapping `stale` (VMAs replaced in place: munmap + mmap of the same range
    /// looks identical in /proc/PID/maps, so the caller finds them with an unarmed-memory
    /// query). Each REGISTER takes the target's mmap write lock, so known VMAs are not
    /// registered again. Contiguous pieces go in one call; a failing run is retried piece by
    /// piece.
    pub(crate) fn refresh(
        &mut self,
        uffd: &Uffd,
        pid: i32,
        vmas: &[Vma],
        scope: &Scope,
        stale: &[Span],
    ) -> io::Result<Vec<Skip>> {
        self.retry = false;
        let present: HashSet<VmaKey> = vmas.iter().map(key).collect();
        self.failed.retain(|k| present.contains(k));
        let pieces: Vec<Selected> = select(vmas, scope)
            .into_iter()
            .filter(|p| !self.failed.contains(&key(&p.vma)))
            .collect();
        let known: HashSet<(Span, VmaKey)> =
            self.pieces.iter().map(|p| (p.span, key(&p.vma))).collect();
        let mut skipped = Vec::new();
        let mut registered = Vec::with_capacity(pieces.len());
        let (fresh, mut todo): (Vec<Selected>, Vec<Selected>) = pieces.into_iter().partition(|p| {
            known.contains(&(p.span, key(&p.vma)))
                && !stale.iter().any(|s| s.intersect(&p.span).is_some())
        });
        registered.extend(fresh);
        let mut run_start = 0;
        for i in 0..todo.len() {
            let last_of_run = i + 1 == todo.len() || todo[i + 1].span.start != todo[i].span.end;
            if !last_of_run {
                continue;
            }
            let run = &todo[run_start..=i];
            let span = Span::new(run[0].span.start, run[run.len() - 1].span.end);
            match uffd.register(span) {
                Ok(()) => registered.extend_from_slice(run),
                Err(e) if is_gone(&e) => return Err(e),
                Err(_) => {
                    for p in run {
                        match uffd.register(p.span) {
                            Ok(()) => registered.push(p.clone()),
                            Err(e) if is_gone(&e) => return Err(e),
                            // Unmapped between listing and registering: it is simply gone.
                            Err(e)
                                if e.raw_os_error() == Some(libc::EINVAL)
                                    && !still_mapped(pid, &p.vma) =>
                            {
                                self.retry = true;
                            }
                            Err(e) => {
                                self.failed.insert(key(&p.vma));
                                skipped.push(Skip {
                                    piece: p.clone(),
                                    reason: uffd::register_failure_reason(&e),
                                    never_writable: e.raw_os_error() == Some(libc::EPERM),
                                    busy: e.raw_os_error() == Some(libc::EBUSY),
                                });
                            }
                        }
                    }
                }
            }
            run_start = i + 1;
        }
        todo.clear();
        registered.sort_by_key(|p| p.span);
        self.armed = maps::union(registered.iter().map(|p| p.span).collect());
        self.pieces = registered;
        // Mappings the selectors leave out are not harvested either: another userfaultfd may
        // own them.
        self.excluded = maps::union(
            vmas.iter()
                .filter(|v| self.failed.contains(&key(v)) || !scope.selects(v))
                .map(|v| Span::new(v.start, v.end))
                .collect(),
        );
        Ok(skipped)
    }
}

/// Whether `vma` is still mapped as listed: a VMA unmapped between listing and registering
/// fails with EINVAL too, and must not be remembered as unregistrable.
pub(crate) fn still_mapped(pid: i32, vma: &Vma) -> bool {
    maps::read_maps(pid).is_ok_and(|vmas| vmas.iter().any(|v| key(v) == key(vma)))
}

/// The target's memory is gone (exit or exec): ESRCH, or ENOMEM from REGISTER on a dead mm.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOMEM))
}
