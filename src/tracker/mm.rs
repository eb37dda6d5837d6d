//! One address space of the target under userfaultfd tracking: arming, the mapping refresh,
//! and the harvests of every method that uses the userfaultfd.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};

use super::registry::{Registry, Skip, is_gone};
use super::{
    ArmedBy, Arming, Attachment, Change, Gone, Harvest, MappingChange, Method, SETTLE, Source,
    exits_within, skipped_mappings, why_gone,
};
use crate::attach;
use crate::maps::{self, Vma};
use crate::process::Process;
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
                let end = ((at / size + 1) * size).min(s.end);
                let piece = Span::new(at, end);
                at = end;
                piece
            })
        })
    })
}

/// Everything bound to one address space of the target; replaced when the target execs.
pub(crate) struct Mm {
    /// Set for `--method pagemap-read`: harvest by plain pagemap reads, of these spans.
    pub(crate) reader: Option<PagemapRead>,
    pub(crate) read_spans: Vec<Span>,
    pub(crate) uffd: Uffd,
    pub(crate) scanner: PagemapScan,
    pub(crate) registry: Registry,
    pub(crate) maps: maps::MapsReader,
    pub(crate) vmas: Vec<Vma>,
    pub(crate) runs: Vec<Span>,
    /// Pages of freshly armed memory that were populated when it was armed, for the next delta.
    pub(crate) populated: Vec<Span>,
    /// Shared memory's populated pages at the last harvest (see `harvest_all`).
    pub(crate) shared_populated: Vec<Span>,
    /// Sparse memory (see SPARSE_MIN), and its populated pages at the last harvest.
    pub(crate) sparse: Vec<Span>,
    pub(crate) sparse_populated: Vec<Span>,
    /// What a harvest covers, recomputed only when the scope or the registry changed.
    coverage: Coverage,
    coverage_stale: bool,
    /// Buffers a harvest works in, kept so that a steady-state harvest allocates nothing.
    scratch: Scratch,
    /// How long the last harvest spent watching the mappings (see `refresh_mappings`).
    pub(crate) watch: Duration,
}

/// What a harvest covers: derived from the scope and the registry.
#[derive(Default)]
struct Coverage {
    /// The scope it was derived for.
    scope: Vec<Span>,
    /// The scope less the memory that failed to register, and its dense and sparse parts.
    harvested: Vec<Span>,
    dense: Vec<Span>,
    sparse: Vec<Span>,
    /// Shared memory in it.
    shared: Vec<Span>,
    /// The armed memory in the scope.
    armed: Vec<Span>,
}

#[derive(Default)]
struct Scratch {
    now: Vec<Span>,
    written: Vec<Span>,
    before: Vec<Span>,
    vanished: Vec<Span>,
    shared_now: Vec<Span>,
    outside: Vec<Span>,
}

/// Create a userfaultfd in the target, register everything in scope and arm it, telling
/// `progress` (bytes armed, bytes to arm) as arming goes.
pub(crate) fn attach_mm(
    target: &Process,
    scope: &Scope,
    at_exec: Option<&mut attach::helper::Helper>,
    arming: Arm,
    method: Method,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Attachment> {
    let started = Instant::now();
    let mut arm = |fd: OwnedFd| -> Result<(Mm, Vec<Skip>)> {
        let reader = match method {
            Method::PagemapRead => Some(PagemapRead::new(target.open_proc("pagemap")?)),
            _ => None,
        };
        let mut mm = Mm {
            reader,
            read_spans: Vec::new(),
            uffd: Uffd::handshake(fd)?,
            scanner: PagemapScan::new(target.open_proc("pagemap")?),
            registry: Registry::default(),
            maps: maps::MapsReader::watching(target.pid),
            vmas: Vec::new(),
            runs: Vec::with_capacity(1024),
            populated: Vec::new(),
            shared_populated: Vec::new(),
            sparse: Vec::new(),
            sparse_populated: Vec::new(),
            coverage: Coverage::default(),
            coverage_stale: true,
            scratch: Scratch::default(),
            watch: Duration::ZERO,
        };
        let skipped = mm
            .arm(target, scope, arming, progress)
            .map_err(|e| attach_failed(target, e))?;
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

impl Mm {
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
        if self.registry.armed.is_empty() {
            return Err(anyhow!(
                "none of the selected memory of PID {} could be registered: {}",
                target.pid,
                why_none_registered(&skipped)
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
                Arm::Writeprotect => match self.uffd.writeprotect(span) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        self.writeprotect_live(target, span)
                    }
                    r => r,
                },
            };
            r.with_context(|| format!("write-protecting {span} of PID {}", target.pid))?;
            done += span.len();
            progress(done, total);
        }
        Ok(skipped)
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
    fn protect_file_pages(&mut self, spans: &[Span]) -> io::Result<()> {
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

    /// Pick up mappings created since the last harvest, arm them, and return the `mapping`
    /// records for what appeared or went.
    pub(crate) fn refresh_mappings(
        &mut self,
        target: &Process,
        scope: &Scope,
        into: &mut Harvest,
    ) -> io::Result<()> {
        // After a piece was dropped as unmapped meanwhile, list afresh: it may be back, and
        // the listing that had it is stale either way.
        let listed = match self.registry.retry {
            true => Some(self.maps.read()?),
            false => self.maps.changed()?,
        };
        // Memory we believe registered that is not (a VMA replaced in place): the kernel skips
        // registered VMAs without walking them, so this costs little.
        let mut stale = Vec::new();
        self.scanner
            .unarmed(&self.registry.armed, &self.vmas, &mut stale)?;
        let vmas = match listed {
            Some(vmas) => vmas,
            // The steady state: nothing to register, nothing to report.
            None if stale.is_empty() => return Ok(()),
            None => self.vmas.clone(),
        };
        self.coverage_stale = true;
        let old_vmas = std::mem::replace(&mut self.vmas, vmas);
        let before = std::mem::take(&mut self.registry.armed);
        let skipped = self
            .registry
            .refresh(&self.uffd, target.pid, &self.vmas, scope, &stale)?;
        into.skipped = skipped_mappings(&skipped);
        let added = maps::subtract(&self.registry.armed, &before);
        let removed = maps::subtract(&before, &self.registry.armed);
        self.sparse = maps::intersect(&self.sparse, &self.registry.armed);
        self.classify_sparse(&added)?;
        let dense = maps::subtract(&added, &self.sparse);
        self.protect_file_pages(&dense)?;
        for span in dense {
            self.scanner
                .protect_unpopulated(span, &mut self.populated)?;
        }
        into.changes = mapping_changes(&old_vmas, &self.vmas, added, removed);
        Ok(())
    }

    /// Derive what a harvest covers, unless neither `scope` nor the registry changed since.
    fn cover(&mut self, scope: &[Span]) {
        if !self.coverage_stale && self.coverage.scope == scope {
            return;
        }
        let harvested = maps::subtract(scope, &self.registry.excluded);
        let shared = maps::union(
            self.registry
                .pieces
                .iter()
                .filter(|p| p.vma.shared)
                .map(|p| p.span)
                .collect(),
        );
        self.coverage = Coverage {
            scope: scope.to_vec(),
            dense: maps::subtract(&harvested, &self.sparse),
            sparse: maps::intersect(&self.sparse, &harvested),
            shared: maps::intersect(&shared, &harvested),
            armed: maps::intersect(&self.registry.armed, scope),
            harvested,
        };
        self.coverage_stale = false;
    }

    /// The fast path over dense memory; over sparse memory, written pages that exist plus the
    /// pages that vanished since the last harvest (zapped: their content is zero now).
    pub(crate) fn harvest_all(&mut self, scope: &[Span]) -> io::Result<()> {
        self.cover(scope);
        let coverage = std::mem::take(&mut self.coverage);
        let r = self.harvest_covered(&coverage);
        self.coverage = coverage;
        r
    }

    fn harvest_covered(&mut self, c: &Coverage) -> io::Result<()> {
        // Shared memory: punching a hole (MADV_REMOVE, fallocate) zeroes pages but the kernel
        // re-installs the uffd-wp marker over them, so they read clean. Pages present at the
        // last harvest and gone now are reported (a zap that kept the page, MADV_DONTNEED of a
        // shared mapping, is a false positive).
        let mut shared_now = std::mem::take(&mut self.scratch.shared_now);
        shared_now.clear();
        if !c.shared.is_empty() {
            self.scanner.present(&c.shared, &mut shared_now)?;
        }
        let r = self.harvest_unshared(c);
        if !c.shared.is_empty() {
            let Scratch {
                before, vanished, ..
            } = &mut self.scratch;
            before.clear();
            maps::intersect_into(&self.shared_populated, &c.shared, before);
            vanished.clear();
            maps::subtract_into(before, &shared_now, vanished);
            maps::intersect_into(&self.runs, &c.shared, &mut shared_now);
            maps::union_in_place(&mut shared_now);
            std::mem::swap(&mut self.shared_populated, &mut shared_now);
            if !vanished.is_empty() {
                self.runs.extend_from_slice(vanished);
                maps::union_in_place(&mut self.runs);
            }
        }
        self.scratch.shared_now = shared_now;
        r
    }

    fn harvest_unshared(&mut self, c: &Coverage) -> io::Result<()> {
        if self.reader.is_some() {
            return self.harvest_by_reads(&c.harvested);
        }
        if c.sparse.is_empty() {
            return self.scanner.harvest(&c.harvested, &mut self.runs);
        }
        self.scanner.harvest(&c.dense, &mut self.runs)?;
        let Scratch {
            now,
            written,
            before,
            ..
        } = &mut self.scratch;
        now.clear();
        self.scanner.populated(&c.sparse, now)?;
        written.clear();
        self.scanner.harvest_populated(&c.sparse, written)?;
        before.clear();
        maps::intersect_into(&self.sparse_populated, &c.sparse, before);
        maps::subtract_into(before, now, &mut self.runs);
        self.runs.extend_from_slice(written);
        maps::union_in_place(&mut self.runs);
        // A page populated after the snapshot but found written by the harvest counts as
        // populated too, or a zap of it before the next harvest would go unseen.
        now.extend_from_slice(written);
        maps::union_in_place(now);
        std::mem::swap(&mut self.sparse_populated, now);
        Ok(())
    }

    /// `--method pagemap-read`: read the entries of the armed memory, then re-protect what was
    /// read as written (see `scan::pagemap_read` for why nothing is lost).
    pub(crate) fn harvest_by_reads(&mut self, scope: &[Span]) -> io::Result<()> {
        let reader = self.reader.as_mut().expect("pagemap-read harvest");
        // Memory that was armed stays registered while mapped, even made read-only, and a
        // write just before the mprotect is still unprotected there: keep reading it.
        let mapped = maps::union(
            self.vmas
                .iter()
                .map(|v| Span::new(v.start, v.end))
                .collect(),
        );
        let armed = maps::intersect(
            &maps::union(
                self.registry
                    .armed
                    .iter()
                    .copied()
                    .chain(maps::intersect(&self.read_spans, &mapped))
                    .collect(),
            ),
            scope,
        );
        self.read_spans = armed.clone();
        let sparse = maps::intersect(&self.sparse, &armed);
        for span in maps::subtract(&armed, &sparse) {
            reader.scan(span, true, &mut self.runs, None)?;
        }
        let mut now = Vec::new();
        for &span in &sparse {
            reader.scan(span, false, &mut self.runs, Some(&mut now))?;
        }
        let written = maps::union(std::mem::take(&mut self.runs));
        for &run in &written {
            match self.uffd.writeprotect(run) {
                // Unmapped or replaced since it was read: nothing left to protect.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                r => r?,
            }
        }
        self.runs = written;
        if !sparse.is_empty() {
            let before = maps::intersect(&self.sparse_populated, &sparse);
            self.runs.extend(maps::subtract(&before, &now));
            self.sparse_populated = now;
            self.runs = maps::union(std::mem::take(&mut self.runs));
        }
        Ok(())
    }

    /// What a delta's bitmaps cover, into `out`: the armed memory in scope, and memory that
    /// stopped being tracked (made read-only) but stays registered until unmapped, whose
    /// writes are still reported. Linear in the runs; only dirty runs outside the armed
    /// memory are sorted in.
    fn tracked_into(&mut self, out: &mut Vec<Span>) {
        out.clear();
        out.extend_from_slice(&self.coverage.armed);
        let outside = &mut self.scratch.outside;
        outside.clear();
        maps::subtract_into(&self.runs, &self.coverage.armed, outside);
        if !outside.is_empty() {
            out.extend_from_slice(outside);
            maps::union_in_place(out);
        }
    }

    /// Tell apart an exit, an exec (our mm is gone, see `why_gone`), and a real error.
    pub(crate) fn gone(&self, target: &Process, e: &io::Error) -> Option<Gone> {
        if target.check_alive().is_err() {
            return Some(Gone::Exited);
        }
        let mm_may_be_gone = is_gone(e) || e.kind() == io::ErrorKind::NotFound;
        (mm_may_be_gone && self.scanner.mm_is_gone()).then(|| why_gone(target))
    }

    /// One harvest into `into`, or why the memory is gone.
    pub(crate) fn harvest(
        &mut self,
        target: &Process,
        scope: &Scope,
        into: &mut Harvest,
    ) -> Result<std::result::Result<(), Gone>> {
        // The harvest's instant is taken before the mapping refresh: a mapping replaced after
        // this point may be seen only by the next harvest, and so may a page written after it.
        into.time = Some(SystemTime::now());
        let t0 = Instant::now();
        // An exec or an exit leaves our fds on a dead mm, where PAGEMAP_SCAN just finds nothing:
        // check, unless the refresh starts with a PROCMAP_QUERY pass, which fails with ESRCH
        // there.
        let queries_first = self.maps.queries() && !self.registry.retry;
        if !queries_first && self.scanner.mm_is_gone() {
            return Ok(Err(why_gone(target)));
        }
        if let Err(e) = self.refresh_mappings(target, scope, into) {
            return match self.gone(target, &e) {
                Some(g) => Ok(Err(g)),
                None => Err(e).context("refreshing the target's mappings"),
            };
        }
        self.watch = t0.elapsed();
        into.watch = Some(self.watch);
        self.runs.clear();
        if let Err(e) = self.harvest_all(&scope.spans) {
            return match self.gone(target, &e) {
                Some(g) => Ok(Err(g)),
                None => {
                    Err(e).with_context(|| format!("harvesting dirty pages of PID {}", target.pid))
                }
            };
        }
        into.cost = t0.elapsed();
        if !self.populated.is_empty() {
            self.runs.append(&mut self.populated);
            maps::union_in_place(&mut self.runs);
        }
        let tracked = into.tracked.vec_mut();
        self.tracked_into(tracked);
        // The runs go to the harvest, and its old vector comes back to be filled next time.
        std::mem::swap(&mut self.runs, into.dirty.vec_mut());
        Ok(Ok(()))
    }
}

/// The changes between two listings. A span that went and one that appeared with the same
/// size and the same file offset (anonymous memory keeps its page offset when mremap moves
/// it) are one move.
pub(crate) fn mapping_changes(
    old: &[Vma],
    new: &[Vma],
    added: Vec<Span>,
    mut removed: Vec<Span>,
) -> Vec<MappingChange> {
    let page_offset = |vmas: &[Vma], s: &Span| {
        maps::mapping_at(vmas, s.start).map(|v| (v.inode, v.offset + (s.start - v.start), s.len()))
    };
    let described = |vmas: &[Vma], span: Span, change: Change| {
        let vma = maps::mapping_at(vmas, span.start);
        MappingChange {
            change,
            span,
            name: vma.map_or_else(String::new, |v| v.display_name().to_string()),
            kind: vma.map(Vma::kind),
        }
    };
    let mut changes = Vec::with_capacity(added.len() + removed.len());
    for a in added {
        let here = page_offset(new, &a);
        let from = removed
            .iter()
            .position(|r| here.is_some() && page_offset(old, r) == here)
            .map(|i| removed.remove(i));
        let change = match from {
            Some(from) => Change::Moved { from: from.start },
            None => Change::Added,
        };
        changes.push(described(new, a, change));
    }
    for r in removed {
        changes.push(described(old, r, Change::Removed));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(line: &str) -> Vma {
        maps::parse_line(line).unwrap()
    }

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

    #[test]
    fn a_move_is_paired_by_size_and_page_offset() {
        let old = [
            vma("10000-14000 rw-p 00010000 00:00 0"),
            vma("20000-24000 rw-p 00020000 00:00 0"),
        ];
        // mremap keeps the page offset: the first one moved to 0x50000; the second was
        // replaced by a fresh mapping elsewhere (different offset).
        let new = [
            vma("50000-54000 rw-p 00010000 00:00 0"),
            vma("60000-64000 rw-p 00060000 00:00 0"),
        ];
        let added = vec![Span::new(0x50000, 0x54000), Span::new(0x60000, 0x64000)];
        let removed = vec![Span::new(0x10000, 0x14000), Span::new(0x20000, 0x24000)];
        let changes = mapping_changes(&old, &new, added, removed);
        let summary: Vec<_> = changes.iter().map(|c| (c.change, c.span.start)).collect();
        assert_eq!(
            summary,
            vec![
                (Change::Moved { from: 0x10000 }, 0x50000),
                (Change::Added, 0x60000),
                (Change::Removed, 0x20000)
            ]
        );
    }
}
