//! The tracking loop: attach, register and arm, then every interval discover new mappings,
//! harvest, and emit one delta; stop on a signal, a count, a duration or the target's exit.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};

use crate::attach;
use crate::cli::{ArmMethod, Format, Method, TrackArgs};
use crate::exit::{ExitCode, usage};
use crate::launch;
use crate::maps::{self, Selected, Span, Vma};
use crate::output::{self, Addr, Emitter, EndReason, Record, Timestamp};
use crate::scan::{DirtySource, PagemapRead, PagemapScan, SoftDirty};
use crate::sys::{self, abi};
use crate::target::Target;
use crate::uffd::{self, Uffd};

/// Longest single sleep while waiting for the next tick, so a stop request is seen promptly.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// A VMA as /proc/PID/maps shows it: range, file, offset and the permissions that decide
/// whether it is tracked. Two VMAs with one key are told apart by the unarmed-memory query.
type VmaKey = (u64, u64, u64, u64, bool, bool);

fn key(v: &Vma) -> VmaKey {
    (v.start, v.end, v.inode, v.offset, v.write, v.shared)
}

/// Which parts of the target are registered with our userfaultfd.
#[derive(Default)]
struct Registry {
    /// Union of the registered spans after the last refresh.
    armed: Vec<Span>,
    /// Registered pieces after the last refresh, for the start record.
    pieces: Vec<Selected>,
    /// VMAs that failed to register, so each is tried and reported once.
    failed: HashSet<VmaKey>,
    /// Their spans: never harvested, since PAGEMAP_SCAN would happily read and re-protect
    /// memory armed by *another* async userfaultfd (the program's own write tracking).
    excluded: Vec<Span>,
}

pub(crate) struct Skip {
    piece: Selected,
    reason: String,
}

impl Registry {
    /// Register the trackable VMA pieces in `scope` that are new since the last refresh, and
    /// those overlapping `stale` (VMAs replaced in place: munmap + mmap of the same range
    /// looks identical in /proc/PID/maps, so the caller finds them with an unarmed-memory
    /// query). Each REGISTER takes the target's mmap write lock, so known VMAs are not
    /// registered again. Contiguous pieces go in one call; a failing run is retried piece by
    /// piece.
    fn refresh(
        &mut self,
        uffd: &Uffd,
        pid: i32,
        vmas: &[Vma],
        scope: &[Span],
        stale: &[Span],
    ) -> io::Result<Vec<Skip>> {
        let present: HashSet<VmaKey> = vmas.iter().map(key).collect();
        self.failed.retain(|k| present.contains(k));
        let pieces: Vec<Selected> = maps::select(vmas, scope)
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
                                    && !still_mapped(pid, &p.vma) => {}
                            Err(e) => {
                                self.failed.insert(key(&p.vma));
                                skipped.push(Skip {
                                    piece: p.clone(),
                                    reason: uffd::register_failure_reason(&e),
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
        self.excluded = maps::union(
            vmas.iter()
                .filter(|v| self.failed.contains(&key(v)))
                .map(|v| Span::new(v.start, v.end))
                .collect(),
        );
        Ok(skipped)
    }
}

/// Whether `vma` is still mapped as listed: a VMA unmapped between listing and registering
/// fails with EINVAL too, and must not be remembered as unregistrable.
fn still_mapped(pid: i32, vma: &Vma) -> bool {
    maps::read_maps(pid).is_ok_and(|vmas| vmas.iter().any(|v| key(v) == key(vma)))
}

/// The target's memory is gone (exit or exec): ESRCH, or ENOMEM from REGISTER on a dead mm.
fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOMEM))
}

pub(crate) enum Wake {
    Tick,
    Stop,
    TargetExited,
}

/// Sleep until `deadline`, waking early for a stop request or the target's exit.
pub(crate) fn wait_until(deadline: Instant, target: &Target, stop: &AtomicBool) -> Wake {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Wake::Stop;
        }
        let now = Instant::now();
        if now >= deadline {
            return Wake::Tick;
        }
        let slice = (deadline - now).min(WAIT_SLICE);
        let mut pfd = libc::pollfd {
            fd: target.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, slice.as_millis().max(1) as libc::c_int) };
        if r > 0 && pfd.revents & libc::POLLIN != 0 {
            return Wake::TargetExited;
        }
    }
}

/// Terminates a launched command that outlives tracking, whatever way `run` leaves.
pub(crate) struct Child {
    pid: i32,
    status: Option<i32>,
    /// Stopped under our ptrace: SIGTERM would wait for nothing, so it is killed outright.
    pub(crate) traced: bool,
}

impl Child {
    pub(crate) fn reap(&mut self) -> Option<i32> {
        if self.status.is_none() {
            self.status = launch::try_reap(self.pid);
        }
        self.status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.traced {
            launch::kill_and_reap(self.pid);
            return;
        }
        if self.reap().is_none() {
            let status = launch::terminate(self.pid);
            eprintln!(
                "uffd-dirty: tracking ended first: terminated the command (PID {}, exit status {status})",
                self.pid
            );
        }
    }
}

/// What one run of `track` ended with.
pub struct Outcome {
    pub reason: EndReason,
    pub exit: ExitCode,
}

/// How freshly registered memory is write-protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arming {
    /// Everything, by PAGEMAP_SCAN (kernels with the PMD-hole fix).
    Scan,
    /// Everything, by UFFDIO_WRITEPROTECT (marks empty page-table ranges on every kernel).
    Writeprotect,
    /// Only empty slots: what is already populated is reported by the next harvest. For
    /// memory that may have been written before it was armed (a new image after exec).
    Unpopulated,
}

impl Arming {
    fn name(self) -> &'static str {
        match self {
            Arming::Scan => "pagemap-scan",
            Arming::Writeprotect => "writeprotect",
            Arming::Unpopulated => "unpopulated",
        }
    }
}

/// Why the target's memory went away.
pub(crate) enum Gone {
    Exited,
    Exec,
}

/// Everything bound to one address space of the target; replaced when the target execs.
/// Pieces at least this large, and populated to less than 1/SPARSE_FILL of it (and every
/// piece not writable when first seen) are tracked as sparse: only their populated pages are ever protected, because arming empty slots makes
/// the kernel allocate page tables for all of it (1/512 of the size: 2 GiB for a 1 TiB
/// reservation). Pages populated later are caught as present-but-unprotected, and pages that
/// vanish (zapped) by comparing the populated set between harvests.
const SPARSE_MIN: u64 = 1 << 30;
const SPARSE_FILL: u64 = 8;

pub(crate) struct Mm {
    /// Set for `--method pagemap-read`: harvest by plain pagemap reads, of these spans.
    reader: Option<PagemapRead>,
    read_spans: Vec<Span>,
    uffd: Uffd,
    scanner: PagemapScan,
    registry: Registry,
    vmas: Vec<Vma>,
    runs: Vec<Span>,
    /// Pages of freshly armed memory that were populated when it was armed, for the next delta.
    populated: Vec<Span>,
    /// Shared memory's populated pages at the last harvest (see `harvest_all`).
    shared_populated: Vec<Span>,
    /// Sparse memory (see SPARSE_MIN), and its populated pages at the last harvest.
    sparse: Vec<Span>,
    sparse_populated: Vec<Span>,
}

/// A fresh attachment to the target's current address space.
pub(crate) struct Attachment {
    pub(crate) mm: Source,
    /// What is tracked, for the start and exec records.
    pieces: Vec<Selected>,
    arm_method: &'static str,
    skipped: Vec<Skip>,
    attach_us: u64,
    thread_stopped_us: u64,
}

/// Create a userfaultfd in the target, register everything in scope and arm it.
pub(crate) fn attach_mm(
    target: &Target,
    scope: &[Span],
    at_exec: bool,
    arming: Arming,
    method: Method,
) -> Result<Attachment> {
    let started = Instant::now();
    let arm = |fd| -> Result<(Mm, Vec<Skip>)> {
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
            vmas: Vec::new(),
            runs: Vec::with_capacity(1024),
            populated: Vec::new(),
            shared_populated: Vec::new(),
            sparse: Vec::new(),
            sparse_populated: Vec::new(),
        };
        let skipped = mm
            .arm(target, scope, arming)
            .map_err(|e| match target.check_alive() {
                Err(_) => anyhow!("PID {} exited while being attached to", target.pid),
                Ok(()) => e,
            })?;
        Ok((mm, skipped))
    };
    // A launched command is armed before it runs at all; a running process keeps running
    // (only one thread stops, for the injected calls) while it is armed.
    let (mm, skipped, stopped) = if at_exec {
        let inj = attach::take_userfaultfd_after_exec(target, arm)?;
        (inj.value.0, inj.value.1, inj.stopped)
    } else {
        let inj = attach::take_userfaultfd(target)?;
        let (mm, skipped) = arm(inj.value)?;
        (mm, skipped, inj.stopped)
    };
    warn_skipped(target.pid, &skipped);
    Ok(Attachment {
        pieces: mm.registry.pieces.clone(),
        arm_method: arming.name(),
        mm: Source::Uffd(Box::new(mm)),
        skipped,
        attach_us: started.elapsed().as_micros() as u64,
        thread_stopped_us: stopped.as_micros() as u64,
    })
}

impl Mm {
    /// Register everything in scope, then write-protect it.
    fn arm(&mut self, target: &Target, scope: &[Span], arming: Arming) -> Result<Vec<Skip>> {
        self.vmas = maps::read_maps(target.pid).context("reading the target's mappings")?;
        let skipped = self
            .registry
            .refresh(&self.uffd, target.pid, &self.vmas, scope, &[])
            .context("registering the target's memory")?;
        if self.registry.armed.is_empty() {
            return Err(anyhow!(
                "none of the selected memory of PID {} could be registered",
                target.pid
            ));
        }
        let armed = self.registry.armed.clone();
        self.classify_sparse(&armed)?;
        let dense = maps::subtract(&armed, &self.sparse);
        if arming != Arming::Unpopulated {
            // Sparse memory: protect what exists, never the empty slots. (After an exec, with
            // `Unpopulated`, nothing is protected: the next harvest reports what exists.)
            let sparse = self.sparse.clone();
            let mut ignored = Vec::new();
            self.scanner.harvest_populated(&sparse, &mut ignored)?;
            self.scanner
                .populated(&sparse, &mut self.sparse_populated)?;
        }
        for &span in &dense {
            let r = match arming {
                Arming::Scan => self.scanner.protect(span),
                Arming::Unpopulated => self.scanner.protect_unpopulated(span, &mut self.populated),
                // A VMA unmapped since it was registered leaves a hole: protect what is left.
                Arming::Writeprotect => match self.uffd.writeprotect(span) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        self.writeprotect_live(target, span)
                    }
                    r => r,
                },
            };
            r.with_context(|| format!("write-protecting {span} of PID {}", target.pid))?;
        }
        Ok(skipped)
    }

    /// Decide which of the newly armed `spans` are sparse (see SPARSE_MIN).
    fn classify_sparse(&mut self, spans: &[Span]) -> io::Result<()> {
        let new: Vec<&Selected> = self
            .registry
            .pieces
            .iter()
            .filter(|p| spans.iter().any(|a| a.intersect(&p.span).is_some()))
            .collect();
        // Memory that is not writable (PROT_NONE reservations, read-only anonymous memory) is
        // always armed page by page: it may be huge, and it is written only after an mprotect.
        let read_only: Vec<Span> = new
            .iter()
            .filter(|p| !p.vma.write)
            .map(|p| p.span)
            .collect();
        self.sparse.extend(read_only);
        let big: Vec<Span> = new
            .iter()
            .filter(|p| p.vma.write && p.span.len() >= SPARSE_MIN)
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

    /// UFFDIO_WRITEPROTECT over the parts of `span` that are still mapped.
    fn writeprotect_live(&self, target: &Target, span: Span) -> io::Result<()> {
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
    fn refresh_mappings(
        &mut self,
        target: &Target,
        scope: &[Span],
        time: Timestamp,
    ) -> io::Result<Vec<output::Mapping>> {
        let old_vmas = std::mem::replace(&mut self.vmas, maps::read_maps(target.pid)?);
        // Memory we believe registered that is not (a VMA replaced in place): the kernel skips
        // registered VMAs without walking them, so this costs little.
        let mut stale = Vec::new();
        self.scanner.unarmed(&self.registry.armed, &mut stale)?;
        let before = std::mem::take(&mut self.registry.armed);
        let skipped = self
            .registry
            .refresh(&self.uffd, target.pid, &self.vmas, scope, &stale)?;
        warn_skipped(target.pid, &skipped);
        let added = maps::subtract(&self.registry.armed, &before);
        let removed = maps::subtract(&before, &self.registry.armed);
        self.sparse = maps::intersect(&self.sparse, &self.registry.armed);
        self.classify_sparse(&added)?;
        for span in maps::subtract(&added, &self.sparse) {
            self.scanner
                .protect_unpopulated(span, &mut self.populated)?;
        }
        Ok(mapping_events(&old_vmas, &self.vmas, added, removed, time))
    }

    /// The fast path over dense memory; over sparse memory, written pages that exist plus the
    /// pages that vanished since the last harvest (zapped: their content is zero now).
    fn harvest_all(&mut self, scope: &[Span]) -> io::Result<()> {
        let scope = &maps::subtract(scope, &self.registry.excluded);
        // Shared memory: punching a hole (MADV_REMOVE, fallocate) zeroes pages but the kernel
        // re-installs the uffd-wp marker over them, so they read clean. Pages present at the
        // last harvest and gone now are reported (a zap that kept the page, MADV_DONTNEED of a
        // shared mapping, is a false positive).
        let shared: Vec<Span> = maps::intersect(
            &maps::union(
                self.registry
                    .pieces
                    .iter()
                    .filter(|p| p.vma.shared)
                    .map(|p| p.span)
                    .collect(),
            ),
            scope,
        );
        let mut shared_now = Vec::new();
        if !shared.is_empty() {
            self.scanner.present(&shared, &mut shared_now)?;
        }
        let r = self.harvest_unshared(scope);
        if !shared.is_empty() {
            let before = maps::intersect(&self.shared_populated, &shared);
            let vanished = maps::subtract(&before, &shared_now);
            shared_now.extend(maps::intersect(&self.runs, &shared));
            self.shared_populated = maps::union(shared_now);
            if !vanished.is_empty() {
                self.runs.extend(vanished);
                self.runs = maps::union(std::mem::take(&mut self.runs));
            }
        }
        r
    }

    fn harvest_unshared(&mut self, scope: &[Span]) -> io::Result<()> {
        if self.reader.is_some() {
            return self.harvest_by_reads(scope);
        }
        if self.sparse.is_empty() {
            return self.scanner.harvest(scope, &mut self.runs);
        }
        let dense = maps::subtract(scope, &self.sparse);
        self.scanner.harvest(&dense, &mut self.runs)?;
        let sparse = maps::intersect(&self.sparse, scope);
        let mut now = Vec::new();
        self.scanner.populated(&sparse, &mut now)?;
        let mut written = Vec::new();
        self.scanner.harvest_populated(&sparse, &mut written)?;
        let before = maps::intersect(&self.sparse_populated, &sparse);
        self.runs.extend(maps::subtract(&before, &now));
        self.runs.extend_from_slice(&written);
        self.runs = maps::union(std::mem::take(&mut self.runs));
        // A page populated after the snapshot but found written by the harvest counts as
        // populated too, or a zap of it before the next harvest would go unseen.
        now.extend(written);
        self.sparse_populated = maps::union(now);
        Ok(())
    }

    /// `--method pagemap-read`: read the entries of the armed memory, then re-protect what was
    /// read as written (see `scan::pagemap_read` for why nothing is lost).
    fn harvest_by_reads(&mut self, scope: &[Span]) -> io::Result<()> {
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

    /// Tell apart an exited target, an exec (our mm is gone, the process lives on), and a
    /// real error.
    fn gone(&self, target: &Target, e: &io::Error) -> Option<Gone> {
        if target.check_alive().is_err() {
            return Some(Gone::Exited);
        }
        let mm_may_be_gone = is_gone(e) || e.kind() == io::ErrorKind::NotFound;
        (mm_may_be_gone && self.scanner.mm_is_gone()).then_some(Gone::Exec)
    }

    /// One harvest: mapping events and the delta, or why the memory is gone.
    fn harvest(
        &mut self,
        target: &Target,
        scope: &[Span],
        seq: u64,
        since: Instant,
        page_size: u64,
    ) -> Result<std::result::Result<(Vec<output::Mapping>, output::Delta), Gone>> {
        // The delta's instant is taken before the mapping refresh: a mapping replaced after
        // this point may be seen only by the next harvest, and so may a page written after it.
        let time = SystemTime::now();
        let t0 = Instant::now();
        // An exec leaves our fds on the old, dead mm, where queries just find nothing: check.
        if self.scanner.mm_is_gone() {
            return Ok(Err(if target.check_alive().is_err() {
                Gone::Exited
            } else {
                Gone::Exec
            }));
        }
        let events = match self.refresh_mappings(target, scope, Timestamp(time)) {
            Ok(ev) => ev,
            Err(e) => match self.gone(target, &e) {
                Some(g) => return Ok(Err(g)),
                None => return Err(e).context("refreshing the target's mappings"),
            },
        };
        self.runs.clear();
        if let Err(e) = self.harvest_all(scope) {
            return match self.gone(target, &e) {
                Some(g) => Ok(Err(g)),
                None => {
                    Err(e).with_context(|| format!("harvesting dirty pages of PID {}", target.pid))
                }
            };
        }
        let scan_us = t0.elapsed().as_micros() as u64;
        if !self.populated.is_empty() {
            self.runs.append(&mut self.populated);
            self.runs = maps::union(std::mem::take(&mut self.runs));
        }
        let dirty_pages = self.runs.iter().map(|r| r.len()).sum::<u64>() / page_size;
        let delta = output::Delta {
            seq,
            time: Timestamp(time),
            elapsed_ms: since.elapsed().as_millis() as u64,
            dirty_pages,
            ranges: output::dirty_runs(&self.runs, page_size),
            scan_us,
            bitmap: None,
            // Memory that stopped being tracked (made read-only) stays registered until it is
            // unmapped, and its writes are reported: it counts as tracked for the bitmaps.
            tracked: maps::union(
                maps::intersect(&self.registry.armed, scope)
                    .into_iter()
                    .chain(self.runs.iter().copied())
                    .collect(),
            ),
        };
        Ok(Ok((events, delta)))
    }
}

/// `mapping` records for what appeared and went between two listings. A span that went and
/// one that appeared with the same size and the same file offset (anonymous memory keeps its
/// page offset when mremap moves it) are one move.
fn mapping_events(
    old: &[Vma],
    new: &[Vma],
    added: Vec<Span>,
    mut removed: Vec<Span>,
    time: Timestamp,
) -> Vec<output::Mapping> {
    let page_offset = |vmas: &[Vma], s: &Span| {
        maps::vma_at(vmas, s.start).map(|v| (v.inode, v.offset + (s.start - v.start), s.len()))
    };
    let mut events = Vec::with_capacity(added.len() + removed.len());
    for a in added {
        let v = maps::vma_at(new, a.start);
        let (mapping, kind) = v.map_or((String::new(), "unmapped"), |v| {
            (v.display_name().to_string(), v.kind().as_str())
        });
        let here = page_offset(new, &a);
        let from = removed
            .iter()
            .position(|r| here.is_some() && page_offset(old, r) == here)
            .map(|i| removed.remove(i));
        events.push(output::Mapping {
            event: if from.is_some() { "moved" } else { "added" },
            start: Addr(a.start),
            end: Addr(a.end),
            from: from.map(|r| Addr(r.start)),
            mapping,
            kind,
            time,
        });
    }
    for r in removed {
        let (mapping, kind) = maps::vma_at(old, r.start).map_or((String::new(), "unmapped"), |v| {
            (v.display_name().to_string(), v.kind().as_str())
        });
        events.push(output::Mapping {
            event: "removed",
            start: Addr(r.start),
            end: Addr(r.end),
            from: None,
            mapping,
            kind,
            time,
        });
    }
    events
}

/// Where deltas come from: the target's userfaultfd (pagemap-scan, pagemap-read), or its
/// soft-dirty bits.
pub(crate) enum Source {
    Uffd(Box<Mm>),
    Soft(SoftMm),
}

pub(crate) type Harvested = std::result::Result<(Vec<output::Mapping>, output::Delta), Gone>;

impl Source {
    fn vmas(&self) -> &[Vma] {
        match self {
            Source::Uffd(mm) => &mm.vmas,
            Source::Soft(s) => &s.vmas,
        }
    }

    pub(crate) fn harvest(
        &mut self,
        target: &Target,
        scope: &[Span],
        seq: u64,
        since: Instant,
        page_size: u64,
    ) -> Result<Harvested> {
        match self {
            Source::Uffd(mm) => mm.harvest(target, scope, seq, since, page_size),
            Source::Soft(s) => s.harvest(target, scope, seq, since, page_size),
        }
    }
}

/// `--method soft-dirty`: clear_refs and pagemap bit 55, no userfaultfd.
pub(crate) struct SoftMm {
    sd: SoftDirty,
    vmas: Vec<Vma>,
    tracked: Vec<Span>,
    /// Stop the target around read + clear (off when the caller already did).
    pub(crate) freeze: bool,
    /// How long the last clear_refs took (it holds the target's mmap write lock).
    pub(crate) last_clear_us: u64,
    /// Populated pages at the last harvest, to see zaps.
    populated: Vec<Span>,
}

/// Open the target's soft-dirty files and, with `clear`, clear its bits (the attach instant);
/// after an exec, `clear` is off: the new program's memory all reads dirty, as it should.
/// `freeze`: stop the target around this clear and every harvest's read + clear.
pub(crate) fn attach_soft(
    target: &Target,
    scope: &[Span],
    freeze: bool,
    clear: bool,
) -> Result<Attachment> {
    let started = Instant::now();
    let clear_refs = std::fs::OpenOptions::new()
        .write(true)
        .open(target.proc_path("clear_refs"))
        .with_context(|| format!("opening /proc/{}/clear_refs", target.pid))?;
    target.check_alive()?;
    let mut soft = SoftMm {
        sd: SoftDirty::new(target.open_proc("pagemap")?, clear_refs),
        vmas: maps::read_maps(target.pid).context("reading the target's mappings")?,
        tracked: Vec::new(),
        freeze,
        last_clear_us: 0,
        populated: Vec::new(),
    };
    let pieces = maps::select(&soft.vmas, scope);
    soft.tracked = maps::union(pieces.iter().map(|p| p.span).collect());
    let stopped = Instant::now();
    {
        let _frozen = freeze.then(|| attach::Frozen::new(target)).transpose()?;
        let (mut ignored, mut populated) = (Vec::new(), Vec::new());
        for &span in &soft.tracked {
            soft.sd.dirty(span, &mut ignored, &mut populated)?;
        }
        soft.populated = maps::union(populated);
        if clear {
            soft.sd
                .clear()
                .with_context(|| format!("clearing the soft-dirty bits of PID {}", target.pid))?;
        }
    }
    Ok(Attachment {
        mm: Source::Soft(soft),
        pieces,
        arm_method: "clear-refs",
        skipped: Vec::new(),
        attach_us: started.elapsed().as_micros() as u64,
        thread_stopped_us: if freeze {
            stopped.elapsed().as_micros() as u64
        } else {
            0
        },
    })
}

impl SoftMm {
    fn harvest(
        &mut self,
        target: &Target,
        scope: &[Span],
        seq: u64,
        since: Instant,
        page_size: u64,
    ) -> Result<Harvested> {
        let time = SystemTime::now();
        let t0 = Instant::now();
        let gone = |e: &io::Error| {
            if target.check_alive().is_err() {
                Some(Gone::Exited)
            } else if e.raw_os_error() == Some(libc::ESRCH) || e.kind() == io::ErrorKind::NotFound {
                Some(Gone::Exec)
            } else {
                None
            }
        };
        // Everything under one freeze: the listing too, or memory mapped and written between
        // listing and clearing would be cleared unread.
        let mut runs = Vec::new();
        let mut events = Vec::new();
        let result = (|| -> io::Result<()> {
            let _frozen = self
                .freeze
                .then(|| attach::Frozen::new(target))
                .transpose()
                .map_err(io::Error::other)?;
            let vmas = maps::read_maps(target.pid)?;
            // Memory read before stays read while mapped, even made read-only: a write just
            // before the mprotect is still in its bits.
            let mapped = maps::union(vmas.iter().map(|v| Span::new(v.start, v.end)).collect());
            let writable = maps::union(maps::select(&vmas, scope).iter().map(|p| p.span).collect());
            let tracked = maps::union(
                writable
                    .into_iter()
                    .chain(maps::intersect(&self.tracked, &mapped))
                    .collect(),
            );
            let added = maps::subtract(&tracked, &self.tracked);
            let removed = maps::subtract(&self.tracked, &tracked);
            events = mapping_events(&self.vmas, &vmas, added, removed, Timestamp(time));
            self.vmas = vmas;
            self.tracked = tracked;
            let mut now = Vec::new();
            for &span in &self.tracked {
                self.sd.dirty(span, &mut runs, &mut now)?;
            }
            // Soft-dirty has no bit for a zapped page (MADV_DONTNEED leaves an empty entry):
            // pages populated last time and empty now changed to zero.
            runs.extend(maps::subtract(
                &maps::intersect(&self.populated, &self.tracked),
                &now,
            ));
            self.populated = maps::union(now);
            let t = Instant::now();
            self.sd.clear()?;
            self.last_clear_us = t.elapsed().as_micros() as u64;
            Ok(())
        })();
        if let Err(e) = result {
            return gone(&e)
                .map(Err)
                .ok_or(e)
                .with_context(|| format!("reading soft-dirty bits of PID {}", target.pid));
        }
        let runs = maps::union(runs);
        let dirty_pages = runs.iter().map(|r| r.len()).sum::<u64>() / page_size;
        Ok(Ok((
            events,
            output::Delta {
                seq,
                time: Timestamp(time),
                elapsed_ms: since.elapsed().as_millis() as u64,
                dirty_pages,
                ranges: output::dirty_runs(&runs, page_size),
                scan_us: t0.elapsed().as_micros() as u64,
                bitmap: None,
                tracked: self.tracked.clone(),
            },
        )))
    }
}

/// The record stream. A reader that goes away (`| head`) is a clean end, not an error.
pub(crate) struct Out<'a> {
    emitter: Box<dyn Emitter + 'a>,
    closed: bool,
}

impl Out<'_> {
    fn emit(&mut self, record: Record, vmas: &[Vma]) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        match self.emitter.emit(&record, vmas) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => r.context("writing output"),
        }
    }
}

pub(crate) fn tracked_ranges(pieces: &[Selected], page_size: u64) -> Vec<output::TrackedRange> {
    pieces
        .iter()
        .map(|p| output::TrackedRange {
            start: Addr(p.span.start),
            end: Addr(p.span.end),
            pages: p.span.len() / page_size,
            mapping: p.vma.display_name().to_string(),
            kind: p.vma.kind().as_str(),
        })
        .collect()
}

pub(crate) fn skipped_ranges(skips: &[Skip]) -> Vec<output::SkippedRange> {
    skips
        .iter()
        .map(|s| output::SkippedRange {
            start: Addr(s.piece.span.start),
            end: Addr(s.piece.span.end),
            mapping: s.piece.vma.display_name().to_string(),
            reason: s.reason.clone(),
        })
        .collect()
}

fn warn_skipped(pid: i32, skips: &[Skip]) {
    for s in skips {
        eprintln!(
            "uffd-dirty: PID {pid}: not tracking {} {}: {}",
            s.piece.span,
            s.piece.vma.display_name(),
            s.reason
        );
    }
}

/// Check `--range` values against the target's mappings before anything touches it.
fn check_scope(target: &Target, ranges: &[Span], vmas: &[Vma]) -> Result<()> {
    for r in ranges {
        if maps::select(vmas, std::slice::from_ref(r)).is_empty() {
            return Err(usage(format!(
                "--range {r} holds no writable mapping of PID {}: pick a range from /proc/{}/maps",
                target.pid, target.pid
            )));
        }
    }
    if maps::select(vmas, &[Span::new(0, abi::TASK_SIZE)]).is_empty() {
        return Err(usage(format!(
            "PID {} has no writable mappings to track",
            target.pid
        )));
    }
    Ok(())
}

/// The target: a running process, or a launched command held at its exec (still traced: on
/// any error before it is attached, it is killed). `--range` values are checked against its
/// mappings before anything touches it.
pub(crate) fn open_target(
    pid: Option<i32>,
    command: &[OsString],
    ranges: &[Span],
) -> Result<(Target, Option<Child>)> {
    match pid {
        Some(pid) => {
            let target = Target::open(pid)?;
            let vmas = maps::read_maps(pid).context("reading the target's mappings")?;
            check_scope(&target, ranges, &vmas)?;
            Ok((target, None))
        }
        None => {
            let launched = launch::spawn(command)?;
            let child = Child {
                pid: launched.target.pid,
                status: None,
                traced: true,
            };
            let vmas = maps::read_maps(child.pid).context("reading the command's mappings")?;
            check_scope(&launched.target, ranges, &vmas)?;
            Ok((launched.target, Some(child)))
        }
    }
}

/// The `method` field of the start record.
pub(crate) fn method_name(m: Method) -> &'static str {
    match m {
        Method::PagemapScan => "pagemap-scan",
        Method::PagemapRead => "pagemap-read",
        Method::SoftDirty => "soft-dirty",
    }
}

pub fn run(args: &TrackArgs, stop: &AtomicBool, out: Box<dyn Emitter + '_>) -> Result<Outcome> {
    let support = uffd::probe()?;
    if args.method == Method::SoftDirty {
        if !crate::scan::soft_dirty::works().context("probing soft-dirty")? {
            return Err(crate::exit::unsupported(format!(
                "this kernel ({}) has no working soft-dirty tracking (built without CONFIG_MEM_SOFT_DIRTY, or not x86_64/ppc64le/s390x): use --method pagemap-scan",
                uffd::kernel_release()
            )));
        }
    } else {
        support.require_async_wp()?;
    }
    let scope = if args.ranges.is_empty() {
        vec![Span::new(0, abi::TASK_SIZE)]
    } else {
        maps::union(args.ranges.clone())
    };
    let arming = match args.arm {
        ArmMethod::Auto if support.pmd_hole_fix => Arming::Scan,
        ArmMethod::Auto | ArmMethod::Writeprotect => Arming::Writeprotect,
        ArmMethod::PagemapScan => Arming::Scan,
    };

    if args.method != Method::SoftDirty && !support.pmd_hole_fix {
        eprintln!(
            "uffd-dirty: warning: this kernel ({}) lacks the 2026 PAGEMAP_SCAN fix for empty page-table ranges: a page table freed by a zap of a whole huge page (MADV_DONTNEED of 2 MiB) or by page-table reclaim reads as not written, so those zeroed pages are not reported",
            uffd::kernel_release()
        );
    }
    let (target, mut child) = open_target(args.pid, &args.command, &args.ranges)?;
    let attachment = match args.method {
        Method::SoftDirty => {
            // Launch mode: the command is held at its exec stop; its bits are cleared there,
            // before it runs, and then it is let go.
            let launched = child.is_some();
            if args.no_freeze {
                eprintln!(
                    "uffd-dirty: warning: --no-freeze: soft-dirty bits are read and cleared while PID {} runs, so a write between the two is lost",
                    target.pid
                );
            }
            let mut a = attach_soft(&target, &scope, !args.no_freeze && !launched, true)?;
            if launched {
                attach::release_after_exec(target.pid)?;
                if let Source::Soft(s) = &mut a.mm {
                    s.freeze = !args.no_freeze;
                }
            }
            a
        }
        m => attach_mm(&target, &scope, child.is_some(), arming, m)?,
    };
    if let Some(c) = child.as_mut() {
        c.traced = false;
    }
    let page_size = sys::page_size();
    let start = output::Start {
        version: output::FORMAT_VERSION,
        pid: target.pid,
        page_size,
        method: method_name(args.method),
        interval_ms: args.interval.as_millis() as u64,
        ranges: tracked_ranges(&attachment.pieces, page_size),
        skipped: skipped_ranges(&attachment.skipped),
        arm_method: attachment.arm_method,
        attach_us: attachment.attach_us,
        thread_stopped_us: attachment.thread_stopped_us,
        time: Timestamp(SystemTime::now()),
    };
    let mut out = Out {
        emitter: out,
        closed: false,
    };
    out.emit(Record::Start(start), attachment.mm.vmas())?;
    let mut tracking = Tracking {
        fork_noted: false,
        target: &target,
        scope,
        args,
        page_size,
        seq: 0,
        total: 0,
    };
    let (reason, error) = tracking.follow(attachment, stop, &mut out)?;
    let exit_status = match reason {
        EndReason::TargetExited => child.as_mut().and_then(Child::reap),
        _ => None,
    };
    let end = output::End {
        reason,
        deltas: tracking.seq,
        dirty_pages_total: tracking.total,
        exit_status,
        error: error.clone(),
        time: Timestamp(SystemTime::now()),
    };
    out.emit(Record::End(end), &[])?;
    if let Some(e) = error {
        return Err(anyhow!(e));
    }
    let exit = match exit_status {
        Some(status) => ExitCode::Command(status.clamp(0, 255) as u8),
        None => ExitCode::Success,
    };
    Ok(Outcome { reason, exit })
}

/// The tracking loop's state, which lives across re-attaches after exec.
struct Tracking<'a> {
    /// Whether the "a fork is not tracked" note was printed.
    fork_noted: bool,
    target: &'a Target,
    scope: Vec<Span>,
    args: &'a TrackArgs,
    page_size: u64,
    seq: u64,
    total: u64,
}

impl Tracking<'_> {
    /// Say once that children the target forked are not tracked (their memory is their own
    /// mm; the kernel resets their VMAs' registration at fork).
    fn note_fork(&mut self) {
        if self.fork_noted {
            return;
        }
        let Ok(tids) = self.target.threads() else {
            return;
        };
        let child = tids.iter().find_map(|tid| {
            let text =
                std::fs::read_to_string(format!("/proc/{}/task/{tid}/children", self.target.pid))
                    .ok()?;
            text.split_whitespace().next().map(str::to_string)
        });
        if let Some(child) = child {
            self.fork_noted = true;
            eprintln!(
                "uffd-dirty: PID {} forked PID {child}: children are not tracked (only PID {} is)",
                self.target.pid, self.target.pid
            );
        }
    }

    /// Harvest every interval until something ends tracking; after an exec, attach to the new
    /// image (unless `--no-follow-exec`) and go on. Returns the end reason and error message.
    fn follow(
        &mut self,
        first: Attachment,
        stop: &AtomicBool,
        out: &mut Out,
    ) -> Result<(EndReason, Option<String>)> {
        let since = Instant::now();
        let end_at = self.args.duration.map(|d| since + d);
        let mut next = since + self.args.interval;
        // Dropping an `Mm` closes its userfaultfd: the kernel drops every protection.
        let mut mm = first.mm;
        loop {
            let deadline = end_at.map_or(next, |e| next.min(e));
            let wake = wait_until(deadline, self.target, stop);
            if let Wake::TargetExited = wake {
                return Ok((EndReason::TargetExited, None));
            }
            match mm.harvest(
                self.target,
                &self.scope,
                self.seq + 1,
                since,
                self.page_size,
            ) {
                Ok(Ok((events, mut delta))) => {
                    if self.args.json_bitmap {
                        let dirty: Vec<Span> = delta
                            .ranges
                            .iter()
                            .map(|r| Span::new(r.start.0, r.end.0))
                            .collect();
                        delta.bitmap = Some(output::bitmap::bitmaps(
                            &delta.tracked,
                            &dirty,
                            self.page_size,
                        ));
                    }
                    for ev in events {
                        out.emit(Record::Mapping(ev), mm.vmas())?;
                    }
                    self.seq += 1;
                    self.total += delta.dirty_pages;
                    self.note_fork();
                    out.emit(Record::Delta(delta), mm.vmas())?;
                }
                Ok(Err(Gone::Exited)) => return Ok((EndReason::TargetExited, None)),
                Ok(Err(Gone::Exec)) => {
                    drop(mm);
                    if self.args.no_follow_exec {
                        return Ok((EndReason::Exec, None));
                    }
                    // Everything of the new image is new memory: what it populated before we
                    // armed it is reported by the next harvest.
                    let again = match self.args.method {
                        Method::SoftDirty => {
                            attach_soft(self.target, &self.scope, !self.args.no_freeze, false)
                        }
                        m => attach_mm(self.target, &self.scope, false, Arming::Unpopulated, m),
                    };
                    match again {
                        Ok(a) => {
                            let exe = std::fs::read_link(self.target.proc_path("exe"))
                                .map(|p| p.display().to_string())
                                .unwrap_or_default();
                            out.emit(
                                Record::Exec(output::Exec {
                                    pid: self.target.pid,
                                    exe,
                                    ranges: tracked_ranges(&a.pieces, self.page_size),
                                    skipped: skipped_ranges(&a.skipped),
                                    attach_us: a.attach_us,
                                    thread_stopped_us: a.thread_stopped_us,
                                    time: Timestamp(SystemTime::now()),
                                }),
                                a.mm.vmas(),
                            )?;
                            mm = a.mm;
                            // Harvest the new image at once, then keep the cadence.
                            continue;
                        }
                        Err(e) if self.target.check_alive().is_err() => {
                            let _ = e;
                            return Ok((EndReason::TargetExited, None));
                        }
                        Err(e) => {
                            return Ok((
                                EndReason::Exec,
                                Some(format!("re-attaching after exec: {e:#}")),
                            ));
                        }
                    }
                }
                Err(e) => return Ok((EndReason::Error, Some(format!("{e:#}")))),
            }
            if out.closed {
                return Ok((EndReason::OutputClosed, None));
            }
            if let Wake::Stop = wake {
                return Ok((EndReason::Signal, None));
            }
            if self.args.count.is_some_and(|n| self.seq >= n) {
                return Ok((EndReason::Count, None));
            }
            if end_at.is_some_and(|e| Instant::now() >= e) {
                return Ok((EndReason::Duration, None));
            }
            next += self.args.interval;
            let now = Instant::now();
            if next < now {
                // Harvests fell behind: skip the missed ticks rather than burst to catch up.
                next = now + self.args.interval;
            }
        }
    }
}

/// The emitter for a format, writing to stdout.
/// `to_terminal`: the sink is stdout (not `--output`), so people may be reading it.
pub fn emitter_for(
    format: Format,
    sink: Box<dyn io::Write>,
    to_terminal: bool,
) -> Box<dyn Emitter> {
    match format {
        Format::Json => Box::new(output::ndjson::Ndjson::new(sink)),
        Format::Human => Box::new(output::human::Human::new(sink, to_terminal)),
        Format::Bitmap => Box::new(output::bitmap::Bitmap::new(sink)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(line: &str) -> Vma {
        maps::parse_line(line).unwrap()
    }

    #[test]
    fn a_move_is_paired_by_size_and_page_offset() {
        let time = Timestamp(SystemTime::UNIX_EPOCH);
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
        let ev = mapping_events(&old, &new, added, removed, time);
        let summary: Vec<_> = ev
            .iter()
            .map(|e| (e.event, e.start.0, e.from.map(|f| f.0)))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("moved", 0x50000, Some(0x10000)),
                ("added", 0x60000, None),
                ("removed", 0x20000, None)
            ]
        );
    }
}
