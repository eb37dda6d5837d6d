//! One address space of the target under userfaultfd tracking: arming, the mapping refresh,
//! and the harvests of every method that uses the userfaultfd.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};

use super::registry::{Registry, Skip};
use super::watch::Watch;
use super::{ArmedBy, Arming, Attachment, Method, SETTLE, Source, exits_within};
use crate::attach;
use crate::maps::{self, Vma};
use crate::process::Process;
use crate::scan::pagemap_scan::HOLD_SPAN;
use crate::scan::{PagemapRead, PagemapScan};
use crate::scope::{Scope, Selected};
use crate::span::Span;
use crate::uffd::{self, Uffd};

/// How freshly registered memory is write-protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arm {
    /// Everything, by PAGEMAP_SCAN (kernels with the PMD-hole fix).
    Scan,
    /// Everything, by UFFDIO_WRITEPROTECT (marks empty page-table ranges on every kernel).
    Writeprotect,
    /// Only empty slots: what is already populated is reported by the next harvest. For
    /// memory that may have been written before it was armed (a new image after exec).
    Unpopulated,
}

impl Arm {
    /// The arming asked for; `Auto` is PAGEMAP_SCAN where the kernel has the PMD-hole fix
    /// (about 7x faster), else UFFDIO_WRITEPROTECT (marks empty page-table ranges on every
    /// kernel).
    pub(crate) fn choose(arming: Arming, support: &uffd::KernelSupport) -> Arm {
        match arming {
            Arming::Auto if support.pmd_hole_fix => Arm::Scan,
            Arming::Auto | Arming::Writeprotect => Arm::Writeprotect,
            Arming::PagemapScan => Arm::Scan,
            Arming::ReportPopulated => Arm::Unpopulated,
        }
    }

    /// As the attach reports it.
    pub(crate) fn reported(self) -> ArmedBy {
        match self {
            Arm::Scan => ArmedBy::PagemapScan,
            Arm::Writeprotect => ArmedBy::Writeprotect,
            Arm::Unpopulated => ArmedBy::Unpopulated,
        }
    }
}

/// Pieces at least this large, and populated to less than 1/SPARSE_FILL of it (and pieces
/// not writable when first seen, see SPARSE_READ_ONLY_MIN), are tracked as sparse: only
/// their populated pages are ever protected, because arming empty slots makes the kernel
/// allocate page tables for all of it (1/512 of the size: 2 GiB for a 1 TiB reservation).
/// Pages populated later are caught as present-but-unprotected, and pages that vanish
/// (zapped) by comparing the populated set between harvests.
pub(crate) const SPARSE_MIN: u64 = 1 << 30;
pub(crate) const SPARSE_FILL: u64 = 8;
/// Anonymous memory that is not writable (PROT_NONE reservations, read-only anonymous memory)
/// is sparse from this size: it may be huge, and is written only after an mprotect, so how
/// much of it is populated now tells nothing; a read of it maps the zero page, reported once.
/// Smaller pieces (guard pages of thread stacks, mostly) are armed whole: at most two page
/// tables, and the one fast-path harvest covers them instead of two queries each per
/// interval. Read-only *file* mappings (program text, RELRO, data files) are sized like
/// writable memory instead: a page read from them later is the file's, not the zero page, so
/// arming only what is populated would report every page read for the first time, and they
/// are no larger than their files.
pub(crate) const SPARSE_READ_ONLY_MIN: u64 = 2 << 20;

/// Arming goes in pieces cut at multiples of this size, so that progress can be reported
/// while a single huge mapping is armed (1 GiB populated takes about 12 ms). As large as the
/// largest huge page: huge pages are aligned to their size, so no cut splits one (a split
/// hugetlb page fails to arm; a split THP would be split in the target).
const ARM_CHUNK: u64 = 1 << 30;

/// `spans` cut at every multiple of `size` (a power of two), in order.
fn chunks(spans: &[Span], size: u64) -> impl Iterator<Item = Span> + '_ {
    spans.iter().flat_map(move |s| {
        let mut at = s.start;
        std::iter::from_fn(move || {
            (at < s.end).then(|| {
                let end = (at / size + 1)
                    .checked_mul(size)
                    .map_or(s.end, |cut| cut.min(s.end));
                let piece = Span::new(at, end);
                at = end;
                piece
            })
        })
    })
}

/// Everything bound to one address space of the target; replaced when the target execs.
pub(crate) struct UffdSpace {
    /// How harvests find the written pages.
    pub(crate) reading: Reading,
    pub(crate) uffd: Uffd,
    pub(crate) scanner: PagemapScan,
    pub(crate) registry: Registry,
    pub(crate) maps: maps::MapsReader,
    pub(crate) vmas: Vec<Vma>,
    pub(crate) runs: Vec<Span>,
    /// Pages a failed harvest found written (and re-protected), for the next one to report.
    pub(crate) carried: Vec<Span>,
    /// Pages of freshly armed memory that were populated when it was armed, for the next delta.
    pub(crate) populated: Vec<Span>,
    /// Shared memory's populated pages at the last harvest (see `harvest_all`).
    pub(crate) shared_populated: Vec<Span>,
    /// Sparse memory (see SPARSE_MIN), and its populated pages at the last harvest.
    pub(crate) sparse: Vec<Span>,
    pub(crate) sparse_populated: Vec<Span>,
    /// What a harvest covers, recomputed only when the scope or the registry changed.
    pub(super) coverage: Coverage,
    pub(super) coverage_stale: bool,
    /// Buffers a harvest works in, kept so that a steady-state harvest allocates nothing.
    pub(super) scratch: Scratch,
    /// How long the last harvest spent watching the mappings (see `refresh_mappings`).
    pub(crate) watch_cost: Duration,
    /// What the cheap watch compares against (see `watch`).
    pub(crate) watch: Watch,
    /// Hold the target's mmap lock a bounded time per call: arm and write-protect in pieces
    /// of HOLD_SPAN, and unregister in quarter pieces before the close (see `Drop`).
    pub(crate) bounded_holds: bool,
}

impl Drop for UffdSpace {
    /// Closing the userfaultfd unregisters everything at once, under one hold of the
    /// target's mmap lock for writing that clears every page's protection (118 ms at 4 GiB
    /// populated, the target's mmap and page faults that need the lock waiting): unregister
    /// piece by piece first, each under a hold of its own, yielding the CPU between them so
    /// a waiting thread of the target takes the lock rather than our next piece (the pieces
    /// are a quarter of HOLD_SPAN: about 1 ms each at 4 GiB populated, where 64 MiB held it
    /// 3.3 ms and the target's mmap+munmap waited 12-20 ms; now 9). What this leaves (an
    /// error: the address space gone, no memory to split a VMA) the close does.
    fn drop(&mut self) {
        if !self.bounded_holds {
            return;
        }
        for p in &self.registry.pieces {
            // A hugetlb VMA is unregistered whole: a piece must not split a huge page.
            let size = if p.vma.kind() == crate::MappingKind::Hugetlb {
                u64::MAX
            } else {
                HOLD_SPAN / 4
            };
            for piece in chunks(std::slice::from_ref(&p.span), size) {
                match self.uffd.unregister(piece) {
                    Ok(()) => std::thread::yield_now(),
                    // Unmapped or remapped since the last refresh: nothing of ours there.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

/// How harvests find the written pages.
pub(crate) enum Reading {
    /// PAGEMAP_SCAN gets and re-protects them in one call (`--method pagemap-scan`).
    Scan,
    /// Plain reads of `/proc/PID/pagemap`, then UFFDIO_WRITEPROTECT of what was read as
    /// written (`--method pagemap-read`); `spans` are what the last harvest read.
    Reads {
        pagemap: PagemapRead,
        spans: Vec<Span>,
    },
}

/// What a harvest covers: derived from the scope and the registry.
#[derive(Default)]
pub(super) struct Coverage {
    /// The scope it was derived for.
    pub(super) scope: Vec<Span>,
    /// The scope less the memory that failed to register, and its dense and sparse parts.
    pub(super) harvested: Vec<Span>,
    pub(super) dense: Vec<Span>,
    pub(super) sparse: Vec<Span>,
    /// Shared memory in it.
    pub(super) shared: Vec<Span>,
    /// The armed memory in the scope.
    pub(super) armed: Vec<Span>,
}

#[derive(Default)]
pub(super) struct Scratch {
    pub(super) now: Vec<Span>,
    pub(super) written: Vec<Span>,
    pub(super) before: Vec<Span>,
    pub(super) vanished: Vec<Span>,
    pub(super) shared_now: Vec<Span>,
    pub(super) outside: Vec<Span>,
}

/// Create a userfaultfd in the target, register everything in scope and arm it, telling
/// `progress` (bytes armed, bytes to arm) as arming goes.
pub(crate) fn attach_uffd(
    target: &Process,
    scope: &Scope,
    at_exec: Option<&mut attach::helper::Helper>,
    arming: Arm,
    method: Method,
    bounded_holds: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Attachment> {
    let started = Instant::now();
    let mut armed_at = None;
    let mut arm = |fd: OwnedFd| -> Result<(UffdSpace, Vec<Skip>)> {
        let reading = match method {
            Method::PagemapRead => Reading::Reads {
                pagemap: PagemapRead::new(target.open_proc("pagemap")?),
                spans: Vec::new(),
            },
            _ => Reading::Scan,
        };
        let mut mm = UffdSpace {
            reading,
            uffd: Uffd::handshake(fd)?,
            scanner: match PagemapScan::new(target.open_proc("pagemap")?) {
                s if bounded_holds => s,
                s => s.unbounded(),
            },
            bounded_holds,
            registry: Registry::default(),
            maps: maps::MapsReader::watching(target.pid),
            vmas: Vec::new(),
            runs: Vec::with_capacity(1024),
            carried: Vec::new(),
            populated: Vec::new(),
            shared_populated: Vec::new(),
            sparse: Vec::new(),
            sparse_populated: Vec::new(),
            coverage: Coverage::default(),
            coverage_stale: true,
            scratch: Scratch::default(),
            watch_cost: Duration::ZERO,
            watch: Watch::default(),
        };
        let skipped = mm
            .arm(target, scope, arming, progress)
            .map_err(|e| attach_failed(target, e))?;
        armed_at = Some(SystemTime::now());
        Ok((mm, skipped))
    };
    // A launched command is armed before it runs at all; a running process keeps running
    // (only one thread stops, for the injected calls) while it is armed.
    let (mm, skipped, stopped) = if let Some(helper) = at_exec {
        let inj = helper.take_after_exec(arm)?;
        (inj.value.0, inj.value.1, inj.stopped)
    } else {
        let inj = attach::take_userfaultfd(target)?;
        let (mm, skipped) = arm(inj.value)?;
        (mm, skipped, inj.stopped)
    };
    Ok(Attachment {
        pieces: mm.registry.pieces.clone(),
        armed_by: arming.reported(),
        mm: Source::Uffd(Box::new(mm)),
        skipped,
        duration: started.elapsed(),
        armed_at: armed_at.expect("armed"),
        thread_stopped: stopped,
    })
}

/// What an arming error means when the target's memory went away under it: an exit (its
/// mm is torn down before its pidfd says so: give it a moment), or an exec.
fn attach_failed(target: &Process, e: anyhow::Error) -> anyhow::Error {
    if exits_within(target, SETTLE) {
        return anyhow!("PID {} exited while being attached to", target.pid);
    }
    // ENOMEM/ESRCH: the userfaultfd's mm is gone while the process lives on: an execve.
    let mm_gone = e
        .chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| matches!(io.raw_os_error(), Some(libc::ENOMEM | libc::ESRCH)));
    if mm_gone {
        return anyhow!(
            "PID {} ran a new program (execve) while being attached to: attach again ({e:#})",
            target.pid
        );
    }
    e
}

/// Why nothing could be registered, from the refusals: each distinct reason once, the most
/// frequent first, with how many mappings it refused ("already registered by another
/// userfaultfd (…) (32 mappings)"). EBUSY, the common case, is a second tracker on the same
/// process, or a program that uses userfaultfd itself.
fn why_none_registered(skipped: &[Skip]) -> String {
    let mut reasons: Vec<(&str, u64)> = Vec::new();
    for s in skipped {
        match reasons.iter_mut().find(|(r, _)| *r == s.reason) {
            Some((_, n)) => *n += 1,
            None => reasons.push((&s.reason, 1)),
        }
    }
    if reasons.is_empty() {
        return "no trackable mapping in the selected ranges".into();
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    reasons
        .iter()
        .map(|(r, n)| format!("{r} ({n} mapping{})", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Who holds the registrations that refused ours (EBUSY), when that is the cause: the
/// target's own userfaultfds (a program managing its memory: QEMU postcopy, CRIU
/// lazy-pages, a compacting GC), and uffd-dirty processes started on its PID. Empty when no
/// registration was refused as busy.
fn userfaultfd_holders(pid: i32, skipped: &[Skip]) -> String {
    if !skipped.iter().any(|s| s.busy) {
        return String::new();
    }
    let own: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            (link.as_os_str() == "anon_inode:[userfaultfd]")
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    let me = std::process::id() as i32;
    let pid_arg = pid.to_string();
    let trackers: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let other: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            if other == me {
                return None;
            }
            let cmdline = std::fs::read(format!("/proc/{other}/cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let is_tracker = args
                .first()
                .is_some_and(|a| a.rsplit(|&b| b == b'/').next() == Some(b"uffd-dirty"));
            let on_pid = args
                .windows(2)
                .any(|w| matches!(w[0], b"--pid" | b"-p") && w[1] == pid_arg.as_bytes())
                || args.iter().any(|a| *a == format!("--pid={pid}").as_bytes());
            (is_tracker && on_pid).then(|| other.to_string())
        })
        .collect();
    let mut said = String::new();
    if !trackers.is_empty() {
        said += &format!(
            "; uffd-dirty is already tracking PID {pid} (PID {}): stop it first",
            trackers.join(", ")
        );
    }
    if !own.is_empty() {
        said += &format!(
            "; PID {pid} uses userfaultfd itself (fd {} in /proc/{pid}/fd): the memory it registered cannot be tracked, only the rest (--range, --mapping)",
            own.join(", ")
        );
    }
    said
}

impl UffdSpace {
    /// Register everything in scope, then write-protect it, telling `progress` (bytes armed,
    /// bytes to arm) after each piece.
    pub(crate) fn arm(
        &mut self,
        target: &Process,
        scope: &Scope,
        arming: Arm,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Vec<Skip>> {
        self.vmas = self.maps.read().context("reading the target's mappings")?;
        let skipped = self
            .registry
            .refresh(&self.uffd, target.pid, &self.vmas, scope, &[])
            .context("registering the target's memory")?;
        // Nothing selected yet (a new program's libraries, not loaded at its exec) is armed as
        // it appears; selected memory that all failed to register is an error.
        if self.registry.armed.is_empty() && !skipped.is_empty() {
            return Err(anyhow!(
                "none of the selected memory of PID {} could be registered: {}",
                target.pid,
                why_none_registered(&skipped) + &userfaultfd_holders(target.pid, &skipped)
            ));
        }
        let armed = self.registry.armed.clone();
        self.classify_sparse(&armed)?;
        let dense = maps::subtract(&armed, &self.sparse);
        let total: u64 = armed.iter().map(Span::len).sum();
        let mut done = 0;
        progress(done, total);
        if arming != Arm::Unpopulated {
            // Sparse memory: protect what exists, never the empty slots. (After an exec, with
            // `Unpopulated`, nothing is protected: the next harvest reports what exists.)
            let sparse = self.sparse.clone();
            let mut ignored = Vec::new();
            for chunk in chunks(&sparse, ARM_CHUNK) {
                self.scanner.harvest_populated(&[chunk], &mut ignored)?;
                ignored.clear();
                self.scanner
                    .populated(&[chunk], &mut self.sparse_populated)?;
                done += chunk.len();
                progress(done, total);
            }
        }
        if arming == Arm::Unpopulated {
            self.protect_file_pages(&dense)?;
        }
        for span in chunks(&dense, ARM_CHUNK) {
            let r = match arming {
                Arm::Scan => self.scanner.protect(span),
                Arm::Unpopulated => self.scanner.protect_unpopulated(span, &mut self.populated),
                // A VMA unmapped since it was registered leaves a hole: protect what is left.
                Arm::Writeprotect => self.writeprotect_in_pieces(target, span),
            };
            r.with_context(|| format!("write-protecting {span} of PID {}", target.pid))?;
            done += span.len();
            progress(done, total);
        }
        Ok(skipped)
    }

    /// UFFDIO_WRITEPROTECT `span` in pieces of HOLD_SPAN (each holds the target's mmap lock
    /// for reading throughout), or whole where it holds hugetlb memory, whose pages a piece
    /// must not split.
    fn writeprotect_in_pieces(&mut self, target: &Process, span: Span) -> io::Result<()> {
        let hugetlb = self.registry.pieces.iter().any(|p| {
            p.vma.kind() == crate::MappingKind::Hugetlb && p.span.intersect(&span).is_some()
        });
        let size = if self.bounded_holds && !hugetlb {
            HOLD_SPAN
        } else {
            u64::MAX
        };
        for piece in chunks(std::slice::from_ref(&span), size) {
            match self.uffd.writeprotect(piece) {
                // A VMA unmapped since it was registered leaves a hole: protect what is left.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    self.writeprotect_live(target, piece)?
                }
                r => r?,
            }
        }
        Ok(())
    }

    /// Decide which of the newly armed `spans` are sparse (see SPARSE_MIN).
    pub(crate) fn classify_sparse(&mut self, spans: &[Span]) -> io::Result<()> {
        let new: Vec<&Selected> = self
            .registry
            .pieces
            .iter()
            .filter(|p| spans.iter().any(|a| a.intersect(&p.span).is_some()))
            .collect();
        let read_only_anon = |p: &Selected| !p.vma.write && p.vma.inode == 0;
        let read_only: Vec<Span> = new
            .iter()
            .filter(|p| read_only_anon(p) && p.span.len() >= SPARSE_READ_ONLY_MIN)
            .map(|p| p.span)
            .collect();
        self.sparse.extend(read_only);
        let big: Vec<Span> = new
            .iter()
            .filter(|p| !read_only_anon(p) && p.span.len() >= SPARSE_MIN)
            .map(|p| p.span)
            .collect();
        for span in big {
            let mut pop = Vec::new();
            self.scanner.populated(&[span], &mut pop)?;
            let filled: u64 = pop.iter().map(|r| r.len()).sum();
            if filled * SPARSE_FILL < span.len() {
                self.sparse.push(span);
            }
        }
        self.sparse = maps::union(std::mem::take(&mut self.sparse));
        Ok(())
    }

    /// In the private file mappings among freshly registered `spans`, protect the present
    /// pages that are still the file's: never written through the mapping (a write copies
    /// the page), so they need not be reported the way other pages populated before arming
    /// are. Without this, every page of a library's text that ran before the tracker first
    /// saw the library would be reported written.
    pub(super) fn protect_file_pages(&mut self, spans: &[Span]) -> io::Result<()> {
        let files = maps::union(
            self.registry
                .pieces
                .iter()
                .filter(|p| p.vma.is_private_file())
                .map(|p| p.span)
                .collect(),
        );
        for span in maps::intersect(&files, spans) {
            self.scanner.protect_file_pages(span)?;
        }
        Ok(())
    }

    /// UFFDIO_WRITEPROTECT over the parts of `span` that are still mapped.
    pub(crate) fn writeprotect_live(&self, target: &Process, span: Span) -> io::Result<()> {
        let live = maps::union(
            maps::read_maps(target.pid)?
                .iter()
                .map(|v| Span::new(v.start, v.end))
                .collect(),
        );
        for part in live.iter().filter_map(|v| v.intersect(&span)) {
            match self.uffd.writeprotect(part) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                r => r?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_each_span_in_order() {
        // Cut at multiples of the size, not at offsets from each span's start.
        let spans = [Span::new(0x1000, 0x6000), Span::new(0x8000, 0x9000)];
        let got: Vec<Span> = chunks(&spans, 0x2000).collect();
        assert_eq!(
            got,
            vec![
                Span::new(0x1000, 0x2000),
                Span::new(0x2000, 0x4000),
                Span::new(0x4000, 0x6000),
                Span::new(0x8000, 0x9000)
            ]
        );
    }
}
