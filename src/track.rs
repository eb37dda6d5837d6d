//! The tracking loop: attach, register and arm, then every interval discover new mappings,
//! harvest, and emit one delta; stop on a signal, a count, a duration or the target's exit.

use std::collections::HashSet;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};

use crate::attach;
use crate::cli::{ArmMethod, Format, TrackArgs};
use crate::exit::{ExitCode, usage};
use crate::launch;
use crate::maps::{self, Selected, Span, Vma};
use crate::output::{self, Addr, Emitter, EndReason, Record, Timestamp};
use crate::scan::{DirtySource, PagemapScan};
use crate::sys::{self, abi};
use crate::target::Target;
use crate::uffd::{self, Uffd};

/// Longest single sleep while waiting for the next tick, so a stop request is seen promptly.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// A VMA's identity for remembering registration failures.
type VmaKey = (u64, u64, u64, u64);

fn key(v: &Vma) -> VmaKey {
    (v.start, v.end, v.inode, v.offset)
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
}

struct Skip {
    piece: Selected,
    reason: String,
}

impl Registry {
    /// Register every trackable VMA piece in `scope`. Already-registered VMAs are a no-op in
    /// the kernel, so re-registering catches VMAs that were replaced in place (munmap + mmap
    /// of the same range looks identical in /proc/PID/maps). Contiguous pieces go in one call,
    /// which takes the target's mmap write lock once; a failing run is retried piece by piece.
    fn refresh(
        &mut self,
        uffd: &Uffd,
        pid: i32,
        vmas: &[Vma],
        scope: &[Span],
    ) -> io::Result<Vec<Skip>> {
        let present: HashSet<VmaKey> = vmas.iter().map(key).collect();
        self.failed.retain(|k| present.contains(k));
        let pieces: Vec<Selected> = maps::select(vmas, scope)
            .into_iter()
            .filter(|p| !self.failed.contains(&key(&p.vma)))
            .collect();
        let mut skipped = Vec::new();
        let mut registered = Vec::with_capacity(pieces.len());
        let mut run_start = 0;
        for i in 0..pieces.len() {
            let last_of_run =
                i + 1 == pieces.len() || pieces[i + 1].span.start != pieces[i].span.end;
            if !last_of_run {
                continue;
            }
            let run = &pieces[run_start..=i];
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
        self.armed = maps::union(registered.iter().map(|p| p.span).collect());
        self.pieces = registered;
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

enum Wake {
    Tick,
    Stop,
    TargetExited,
}

/// Sleep until `deadline`, waking early for a stop request or the target's exit.
fn wait_until(deadline: Instant, target: &Target, stop: &AtomicBool) -> Wake {
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
struct Child {
    pid: i32,
    status: Option<i32>,
}

impl Child {
    fn reap(&mut self) -> Option<i32> {
        if self.status.is_none() {
            self.status = launch::try_reap(self.pid);
        }
        self.status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
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

struct Session<'a> {
    target: &'a Target,
    uffd: Uffd,
    scanner: PagemapScan,
    scope: Vec<Span>,
    registry: Registry,
    emitter: Box<dyn Emitter + 'a>,
    page_size: u64,
    vmas: Vec<Vma>,
    runs: Vec<Span>,
}

fn tracked_ranges(pieces: &[Selected], page_size: u64) -> Vec<output::TrackedRange> {
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

fn skipped_ranges(skips: &[Skip]) -> Vec<output::SkippedRange> {
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

pub fn run(args: &TrackArgs, stop: &AtomicBool, out: Box<dyn Emitter + '_>) -> Result<Outcome> {
    let support = uffd::probe()?;
    support.require_async_wp()?;
    let scope = if args.ranges.is_empty() {
        vec![Span::new(0, abi::TASK_SIZE)]
    } else {
        maps::union(args.ranges.clone())
    };

    let (target, mut child) = match args.pid {
        Some(pid) => {
            let target = Target::open(pid)?;
            check_scope(
                &target,
                &args.ranges,
                &maps::read_maps(pid).context("reading the target's mappings")?,
            )?;
            (target, None)
        }
        None => {
            let launched = launch::spawn(&args.command)?;
            let pid = launched.target.pid;
            (launched.target, Some(Child { pid, status: None }))
        }
    };
    if child.is_some() {
        check_scope(&target, &args.ranges, &maps::read_maps(target.pid)?)?;
    }

    let attach_started = Instant::now();
    let injection = if child.is_some() {
        attach::take_userfaultfd_after_exec(&target)?
    } else {
        attach::take_userfaultfd(&target)?
    };
    let uffd = Uffd::handshake(injection.uffd)?;
    let pagemap = target.open_proc("pagemap")?;
    let mut session = Session {
        target: &target,
        uffd,
        scanner: PagemapScan::new(pagemap),
        scope,
        registry: Registry::default(),
        emitter: out,
        page_size: sys::page_size(),
        vmas: Vec::new(),
        runs: Vec::with_capacity(1024),
    };
    let arm_with_scan = match args.arm {
        ArmMethod::Auto => support.pmd_hole_fix,
        ArmMethod::PagemapScan => true,
        ArmMethod::Writeprotect => false,
    };
    let skipped = session.arm(arm_with_scan)?;
    warn_skipped(target.pid, &skipped);
    let start = output::Start {
        version: output::FORMAT_VERSION,
        pid: target.pid,
        page_size: session.page_size,
        method: session.scanner.method(),
        interval_ms: args.interval.as_millis() as u64,
        ranges: tracked_ranges(&session.registry.pieces, session.page_size),
        skipped: skipped_ranges(&skipped),
        arm_method: if arm_with_scan {
            "pagemap-scan"
        } else {
            "writeprotect"
        },
        attach_us: attach_started.elapsed().as_micros() as u64,
        thread_stopped_us: injection.stopped.as_micros() as u64,
        time: Timestamp(SystemTime::now()),
    };
    let outcome = session.track(start, args, stop, child.as_mut());
    // Closing our userfaultfd is the detach: the kernel drops every protection.
    drop(session);
    let outcome = outcome?;
    let exit = match child.as_mut().and_then(Child::reap) {
        Some(status) if outcome.reason == EndReason::TargetExited => {
            ExitCode::Command(status.clamp(0, 255) as u8)
        }
        _ => outcome.exit,
    };
    Ok(Outcome { exit, ..outcome })
}

impl Session<'_> {
    /// Register everything in scope, then write-protect it, never-touched pages included.
    fn arm(&mut self, with_scan: bool) -> Result<Vec<Skip>> {
        self.vmas = maps::read_maps(self.target.pid).context("reading the target's mappings")?;
        let skipped = self
            .registry
            .refresh(&self.uffd, self.target.pid, &self.vmas, &self.scope)
            .context("registering the target's memory")?;
        if self.registry.armed.is_empty() {
            return Err(anyhow!(
                "none of the selected memory of PID {} could be registered",
                self.target.pid
            ));
        }
        for &span in &self.registry.armed {
            // PAGEMAP_SCAN protects about 7x faster, but marks empty page-table ranges only on
            // kernels with the PMD-hole fix; UFFDIO_WRITEPROTECT marks them everywhere.
            let r = if with_scan {
                self.scanner.protect(span)
            } else {
                self.uffd.writeprotect(span)
            };
            r.with_context(|| format!("write-protecting {span} of PID {}", self.target.pid))?;
        }
        Ok(skipped)
    }

    fn emit(&mut self, record: Record) -> io::Result<()> {
        self.emitter.emit(&record, &self.vmas)
    }

    /// Pick up mappings created since the last harvest and report what appeared or went.
    fn refresh_mappings(&mut self) -> io::Result<()> {
        self.vmas = maps::read_maps(self.target.pid)?;
        let before = std::mem::take(&mut self.registry.armed);
        let skipped =
            self.registry
                .refresh(&self.uffd, self.target.pid, &self.vmas, &self.scope)?;
        warn_skipped(self.target.pid, &skipped);
        let now = Timestamp(SystemTime::now());
        let added = maps::subtract(&self.registry.armed, &before);
        let removed = maps::subtract(&before, &self.registry.armed);
        for &span in &added {
            self.scanner.protect_unpopulated(span)?;
        }
        for (event, spans) in [("added", added), ("removed", removed)] {
            for s in spans {
                let (mapping, kind) = match maps::vma_at(&self.vmas, s.start) {
                    Some(v) if event == "added" => {
                        (v.display_name().to_string(), v.kind().as_str())
                    }
                    _ => (String::new(), "unmapped"),
                };
                self.emit(Record::Mapping(output::Mapping {
                    event,
                    start: Addr(s.start),
                    end: Addr(s.end),
                    mapping,
                    kind,
                    time: now,
                }))?;
            }
        }
        Ok(())
    }

    /// One harvest. `Ok(None)`: the target's memory is gone.
    fn harvest(&mut self, seq: u64, since: Instant) -> Result<Option<output::Delta>> {
        match self.refresh_mappings() {
            Err(e)
                if is_gone(&e)
                    || e.kind() == io::ErrorKind::NotFound
                    || self.target.check_alive().is_err() =>
            {
                return Ok(None);
            }
            r => r.context("refreshing the target's mappings")?,
        }
        let time = SystemTime::now();
        let t0 = Instant::now();
        self.runs.clear();
        match self.scanner.harvest(&self.scope, &mut self.runs) {
            Err(e) if is_gone(&e) => return Ok(None),
            r => r.with_context(|| format!("harvesting dirty pages of PID {}", self.target.pid))?,
        }
        let scan_us = t0.elapsed().as_micros() as u64;
        let dirty_pages = self.runs.iter().map(|r| r.len()).sum::<u64>() / self.page_size;
        Ok(Some(output::Delta {
            seq,
            time: Timestamp(time),
            elapsed_ms: since.elapsed().as_millis() as u64,
            dirty_pages,
            ranges: output::dirty_runs(&self.runs, self.page_size),
            scan_us,
        }))
    }

    fn track(
        &mut self,
        start: output::Start,
        args: &TrackArgs,
        stop: &AtomicBool,
        mut child: Option<&mut Child>,
    ) -> Result<Outcome> {
        let since = Instant::now();
        let end_at = args.duration.map(|d| since + d);
        let mut next = since + args.interval;
        let (mut seq, mut total) = (0u64, 0u64);
        let mut error = None;
        let ok = |r: io::Result<()>| -> Result<bool> {
            match r {
                Ok(()) => Ok(true),
                // The reader went away (`| head`): a clean, successful end.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
                Err(e) => Err(e).context("writing output"),
            }
        };
        if !ok(self.emit(Record::Start(start)))? {
            return Ok(Outcome {
                reason: EndReason::Signal,
                exit: ExitCode::Success,
            });
        }
        let reason = loop {
            let deadline = end_at.map_or(next, |e| next.min(e));
            let wake = wait_until(deadline, self.target, stop);
            if let Wake::TargetExited = wake {
                break EndReason::TargetExited;
            }
            let delta = match self.harvest(seq + 1, since) {
                Ok(Some(d)) => d,
                Ok(None) => break EndReason::TargetExited,
                Err(e) => {
                    error = Some(format!("{e:#}"));
                    break EndReason::Error;
                }
            };
            seq += 1;
            total += delta.dirty_pages;
            if !ok(self.emit(Record::Delta(delta)))? {
                return Ok(Outcome {
                    reason: EndReason::Signal,
                    exit: ExitCode::Success,
                });
            }
            if let Wake::Stop = wake {
                break EndReason::Signal;
            }
            if args.count.is_some_and(|n| seq >= n) {
                break EndReason::Count;
            }
            if end_at.is_some_and(|e| Instant::now() >= e) {
                break EndReason::Duration;
            }
            next += args.interval;
            let now = Instant::now();
            if next < now {
                // Harvests fell behind: skip the missed ticks rather than burst to catch up.
                next = now + args.interval;
            }
        };
        let exit_status = if reason == EndReason::TargetExited {
            child.as_mut().and_then(|c| c.reap())
        } else {
            None
        };
        let end = output::End {
            reason,
            deltas: seq,
            dirty_pages_total: total,
            exit_status,
            error: error.clone(),
            time: Timestamp(SystemTime::now()),
        };
        ok(self.emit(Record::End(end)))?;
        if let Some(e) = error {
            return Err(anyhow!(e));
        }
        Ok(Outcome {
            reason,
            exit: ExitCode::Success,
        })
    }
}

/// The emitter for a format, writing to stdout.
pub fn emitter_for(format: Format) -> Box<dyn Emitter> {
    let stdout = io::BufWriter::new(io::stdout());
    match format {
        Format::Json => Box::new(output::ndjson::Ndjson::new(stdout)),
        Format::Human => Box::new(output::human::Human::new(stdout)),
    }
}
