//! The tracking loop: attach, register and arm, then every interval discover new mappings,
//! harvest, and emit one delta; stop on a signal, a count, a duration or the target's exit.
//!
//! Submodules: `registry` (what is registered with our userfaultfd), `mm` (one address space
//! under userfaultfd tracking: arming, mapping refresh, harvests), `soft` (soft-dirty). They
//! share this module's imports.

mod mm;
mod registry;
mod soft;

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};

use crate::attach;
use crate::cli::{ArmMethod, Format, Method, TargetArgs, TrackArgs};
use crate::exit::{ExitCode, usage};
use crate::launch;
use crate::maps::{self, Selected, Span, Vma};
use crate::output::{self, Addr, Emitter, EndReason, Record, Timestamp};
use crate::progress;
use crate::scan::{PagemapRead, PagemapScan, SoftDirty};
use crate::stop::Stop;
use crate::sys::{self, abi};
use crate::target::Target;
use crate::uffd::{self, Uffd};

use mm::mapping_events;
pub(crate) use mm::{Arming, Attachment, Mm, attach_mm};
use registry::{Registry, Skip, is_gone};
pub(crate) use soft::{SoftMm, attach_soft};

pub(crate) enum Wake {
    Tick,
    Stop,
    TargetExited,
    /// The reader of the output went away (POLLERR on a pipe whose read end closed).
    OutputClosed,
}

/// Sleep until `deadline`, waking early for a stop request, the target's exit, or `output`
/// (the fd records are written to) losing its reader: `track --interval 10s | head -n 1` ends
/// as soon as `head` does, not at the next harvest, with the target armed all that time.
pub(crate) fn wait_until(
    deadline: Instant,
    target: &Target,
    stop: &Stop,
    output: Option<BorrowedFd<'_>>,
) -> Wake {
    const GONE: libc::c_short = libc::POLLERR | libc::POLLHUP;
    loop {
        if stop.requested() {
            return Wake::Stop;
        }
        let now = Instant::now();
        if now >= deadline {
            return Wake::Tick;
        }
        // Rounded up to whole milliseconds: the wait never ends just short of the deadline.
        let watched = [
            (target.pidfd.as_fd(), libc::POLLIN),
            (stop.fd(), libc::POLLIN),
        ];
        let (exited, woken, closed) = match output {
            Some(out) => {
                let [e, w, o] = sys::poll([watched[0], watched[1], (out, 0)], deadline - now);
                (e, w, o & GONE != 0)
            }
            None => {
                let [e, w] = sys::poll(watched, deadline - now);
                (e, w, false)
            }
        };
        if closed {
            return Wake::OutputClosed;
        }
        if exited & libc::POLLIN != 0 {
            return Wake::TargetExited;
        }
        if woken & libc::POLLIN != 0 {
            stop.drain_stray_wakeups();
        }
    }
}

/// Terminates a launched command that outlives tracking, whatever way `run` leaves.
pub(crate) struct Child {
    pid: i32,
    status: Option<i32>,
    /// Reaped, but not by `reap` or `wait_exit`: a command that exits while we attach to it
    /// (after an exec) is reaped by ptrace's wait for its next stop.
    reaped_elsewhere: bool,
    /// Stopped under ptrace (ours or the helper's): SIGTERM would wait for nothing, so it is
    /// killed outright.
    pub(crate) traced: bool,
    /// The attach helper holding it at its exec, for userfaultfd tracking.
    pub(crate) helper: Option<attach::helper::Helper>,
    /// `--quiet`: terminating it at the end goes unsaid.
    pub(crate) quiet: bool,
}

impl Child {
    pub(crate) fn new(pid: i32, helper: Option<attach::helper::Helper>) -> Child {
        Child {
            pid,
            status: None,
            reaped_elsewhere: false,
            traced: true,
            helper,
            quiet: false,
        }
    }

    /// Its exit status, if it has exited (reaped now, without waiting).
    pub(crate) fn reap(&mut self) -> Option<i32> {
        if self.status.is_none() && !self.reaped_elsewhere {
            match launch::try_reap(self.pid) {
                Ok(status) => self.status = status,
                Err(_) => self.reaped_elsewhere = true,
            }
        }
        self.status
    }

    /// Its exit status, waiting for the end of an exit under way: tracking ends with
    /// `target-exited` as soon as the command's memory is gone, before it is a zombie. If it
    /// was reaped elsewhere, the pidfd still has its status (Linux 6.15).
    pub(crate) fn wait_exit(&mut self, pidfd: BorrowedFd<'_>) -> Option<i32> {
        if self.status.is_none() && !self.reaped_elsewhere {
            match launch::wait(self.pid) {
                Ok(status) => self.status = Some(status),
                Err(_) => self.reaped_elsewhere = true,
            }
        }
        if self.status.is_none() && self.reaped_elsewhere {
            self.status = sys::pidfd_exit_code(pidfd).map(launch::exit_status);
        }
        self.status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.traced {
            // Killed first, so it never runs; then its tracer, the helper, is let go (it
            // detaches the dead command, which only then can be reaped here).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            drop(self.helper.take());
            launch::kill_and_reap(self.pid);
            return;
        }
        // Reaped already, by us or elsewhere: its PID may be another process's by now.
        if self.reap().is_none() && !self.reaped_elsewhere {
            let status = launch::terminate(self.pid);
            if self.quiet {
                return;
            }
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

/// Why the target's memory went away.
pub(crate) enum Gone {
    Exited,
    Exec,
}

/// How long a target is given to show that it is exiting when that is in doubt: its /proc
/// entry is unreadable, or re-attaching to it failed (ptrace refuses a task that has begun to
/// exit, a moment before the task drops its memory).
pub(crate) const SETTLE: Duration = Duration::from_millis(500);

/// Why the address space our fds are bound to is gone (no task uses it any more). That alone
/// tells nothing: an exiting process drops its memory (`exit_mm`) before its pidfd turns
/// readable, just as an exec'ing one drops the old image's. The process tells: an exec
/// installs the new address space before it lets go of the old one, so a process that has one
/// exec'ed, and one that has none is exiting (its new image too, if it exec'ed first).
pub(crate) fn why_gone(target: &Target) -> Gone {
    if target.has_exited() {
        return Gone::Exited;
    }
    match target.has_mm() {
        // The pidfd asked again: a PID reused after a reap would have memory too.
        Ok(true) if !target.has_exited() => Gone::Exec,
        Ok(_) => Gone::Exited,
        Err(_) if exits_within(target, SETTLE) => Gone::Exited,
        // /proc unreadable but the process lives on: the re-attach decides.
        Err(_) => Gone::Exec,
    }
}

/// Whether the target has exited or is exiting (its memory gone), waiting up to `patience`
/// for it to be.
pub(crate) fn exits_within(target: &Target, patience: Duration) -> bool {
    const STEP: Duration = Duration::from_millis(2);
    let deadline = Instant::now() + patience;
    loop {
        if target.has_exited() || matches!(target.has_mm(), Ok(false)) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Wakes at once when the pidfd turns readable; the memory is looked at every STEP.
        let _ = sys::readable([target.pidfd.as_fd()], STEP.min(deadline - now));
    }
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

    /// How long the last harvest spent watching the mappings (userfaultfd methods).
    pub(crate) fn watch(&self) -> Option<Duration> {
        match self {
            Source::Uffd(mm) => Some(mm.watch),
            Source::Soft(_) => None,
        }
    }

    /// Hand back a delta once written, so that its vectors are filled again next time.
    pub(crate) fn recycle(&mut self, delta: output::Delta) {
        if let Source::Uffd(mm) = self {
            mm.recycle(delta);
        }
    }
}

/// The record stream. A reader that goes away (`| head`) is a clean end, not an error.
pub(crate) struct Out<'a> {
    emitter: Box<dyn Emitter + 'a>,
    closed: bool,
    /// The fd written to, watched between harvests for its reader going away.
    watch: Option<std::os::fd::OwnedFd>,
}

impl Out<'_> {
    fn emit(&mut self, record: &Record, vmas: &[Vma]) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        match self.emitter.emit(record, vmas) {
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
    for s in skips.iter().filter(|s| !s.never_writable) {
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
    // An exiting process loses its mappings: that is an exit, not a bad range.
    let exiting = || vmas.is_empty() || exits_within(target, SETTLE);
    let exited = || anyhow!("PID {} exited while being attached to", target.pid);
    for r in ranges {
        if maps::select(vmas, std::slice::from_ref(r)).is_empty() {
            if exiting() {
                return Err(exited());
            }
            return Err(usage(format!(
                "--range {r} holds no trackable mapping of PID {}: pick a range from /proc/{}/maps",
                target.pid, target.pid
            )));
        }
    }
    if maps::select(vmas, &[Span::new(0, abi::TASK_SIZE)]).is_empty() {
        if exiting() {
            return Err(exited());
        }
        return Err(usage(format!(
            "PID {} has no trackable mappings",
            target.pid
        )));
    }
    Ok(())
}

/// The target: a running process, or a launched command held at its exec (still traced: on
/// any error before it is attached, it is killed). `--range` values are checked against its
/// mappings before anything touches it.
pub(crate) fn open_target(args: &TargetArgs, method: Method) -> Result<(Target, Option<Child>)> {
    match args.pid {
        Some(pid) => {
            let target = Target::open(pid)?;
            let vmas = maps::read_maps(pid).context("reading the target's mappings")?;
            check_scope(&target, &args.ranges, &vmas)?;
            Ok((target, None))
        }
        None => {
            let launched = launch::spawn(&args.command, method != Method::SoftDirty)?;
            let child = Child::new(launched.target.pid, launched.helper);
            let vmas = maps::read_maps(child.pid).context("reading the command's mappings")?;
            check_scope(&launched.target, &args.ranges, &vmas)?;
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

/// `watch`: the fd `out` writes to, to end tracking as soon as its reader is gone.
pub fn run(
    args: &TrackArgs,
    stop: &Stop,
    out: Box<dyn Emitter + '_>,
    watch: Option<std::os::fd::OwnedFd>,
) -> Result<Outcome> {
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
    let scope = args.target.scope();
    let arming = Arming::choose(args.arm, &support);

    if args.method != Method::SoftDirty && !support.pmd_hole_fix {
        eprintln!(
            "uffd-dirty: warning: this kernel ({}) lacks the 2026 PAGEMAP_SCAN fix for empty page-table ranges: a page table freed by a zap of a whole huge page (MADV_DONTNEED of 2 MiB) or by page-table reclaim reads as not written, so those zeroed pages are not reported",
            uffd::kernel_release()
        );
    }
    let (target, mut child) = open_target(&args.target, args.method)?;
    if let Some(c) = child.as_mut() {
        c.quiet = args.output.look.quiet;
    }
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
        m => {
            let mut bar = progress::Bar::on_stderr("arming");
            attach_mm(
                &target,
                &scope,
                child.as_mut().and_then(|c| c.helper.as_mut()),
                arming,
                m,
                &mut |done, total| bar.update(done, total),
            )?
        }
    };
    if let Some(c) = child.as_mut() {
        c.traced = false;
    }
    let page_size = sys::page_size();
    let (mut blind, blind_found) = crate::blind::Watch::start(target.pid, page_size);
    blind.warn(&blind_found);
    let start = output::Start {
        version: output::FORMAT_VERSION,
        pid: target.pid,
        page_size,
        method: method_name(args.method),
        interval_ms: args.target.interval.as_millis() as u64,
        ranges: tracked_ranges(&attachment.pieces, page_size),
        skipped: skipped_ranges(&attachment.skipped),
        blind: blind_found,
        arm_method: attachment.arm_method,
        attach_us: attachment.attach_us,
        thread_stopped_us: attachment.thread_stopped_us,
        time: Timestamp(SystemTime::now()),
    };
    let mut out = Out {
        emitter: out,
        closed: false,
        watch,
    };
    out.emit(&Record::Start(start), attachment.mm.vmas())?;
    let mut tracking = Tracking {
        fork_noted: false,
        fork_checked: None,
        blind,
        blind_checked: Instant::now(),
        target: &target,
        scope,
        args,
        page_size,
        seq: 0,
        total: 0,
    };
    let (reason, error) = tracking.follow(attachment, stop, &mut out)?;
    let exit_status = match reason {
        EndReason::TargetExited => child
            .as_mut()
            .and_then(|c| c.wait_exit(target.pidfd.as_fd())),
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
    out.emit(&Record::End(end), &[])?;
    if let Some(e) = error {
        return Err(anyhow!(e));
    }
    let exit = match exit_status {
        Some(status) => ExitCode::Command(status.clamp(0, 255) as u8),
        None => ExitCode::Success,
    };
    Ok(Outcome { reason, exit })
}

/// The interval clock: a tick every interval from the start, skipping ticks a slow harvest
/// missed rather than bursting to catch up, and the end of `--duration`.
pub(crate) struct Cadence {
    next: Instant,
    interval: Duration,
    end_at: Option<Instant>,
}

impl Cadence {
    /// The parsers bound both times by [`crate::cli::MAX_DURATION`]; a `--duration` past the
    /// clock's range all the same (a caller building `TargetArgs` by hand) never ends.
    pub(crate) fn start(args: &TargetArgs, since: Instant) -> Cadence {
        let interval = args.interval.min(crate::cli::MAX_DURATION);
        Cadence {
            next: since + interval,
            interval,
            end_at: args.duration.and_then(|d| since.checked_add(d)),
        }
    }

    /// When to harvest next (the end of `--duration` if that comes first).
    pub(crate) fn deadline(&self) -> Instant {
        self.end_at.map_or(self.next, |e| self.next.min(e))
    }

    pub(crate) fn over(&self) -> bool {
        self.end_at.is_some_and(|e| Instant::now() >= e)
    }

    pub(crate) fn advance(&mut self) {
        self.next += self.interval;
        let now = Instant::now();
        if self.next < now {
            self.next = now + self.interval;
        }
    }
}

/// The tracking loop's state, which lives across re-attaches after exec.
struct Tracking<'a> {
    /// Whether the "a fork is not tracked" note was printed, and when children were last
    /// looked for.
    fork_noted: bool,
    fork_checked: Option<Instant>,
    /// Writes the tracker cannot see, looked for again at most once a second.
    blind: crate::blind::Watch,
    blind_checked: Instant,
    target: &'a Target,
    scope: Vec<Span>,
    args: &'a TrackArgs,
    page_size: u64,
    seq: u64,
    total: u64,
}

impl Tracking<'_> {
    /// Say once that children the target forked are not tracked (their memory is their own
    /// mm; the kernel resets their VMAs' registration at fork). Looked for at most once a
    /// second: it lists every thread's children, which would cost more than a harvest.
    fn note_fork(&mut self) {
        const EVERY: Duration = Duration::from_secs(1);
        // A note: `--quiet` goes without it (and without the cost of looking).
        if self.fork_noted
            || self.args.output.look.quiet
            || self.fork_checked.is_some_and(|t| t.elapsed() < EVERY)
        {
            return;
        }
        self.fork_checked = Some(Instant::now());
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

    /// Announce sources of unseen writes that appeared since attach (a `blind` record each,
    /// one stderr line per kind). Looked for at most once a second: one status read, and the
    /// fd list only when the pinned counts moved.
    fn note_blind(&mut self, out: &mut Out, vmas: &[Vma]) -> Result<()> {
        if self.blind_checked.elapsed() < Duration::from_secs(1) {
            return Ok(());
        }
        self.blind_checked = Instant::now();
        let found = self.blind.check();
        self.blind.warn(&found);
        for blind in found {
            let record = output::BlindFound {
                blind,
                time: Timestamp(SystemTime::now()),
            };
            out.emit(&Record::Blind(record), vmas)?;
        }
        Ok(())
    }

    /// Harvest every interval until something ends tracking; after an exec, attach to the new
    /// image (unless `--no-follow-exec`) and go on. Returns the end reason and error message.
    fn follow(
        &mut self,
        first: Attachment,
        stop: &Stop,
        out: &mut Out,
    ) -> Result<(EndReason, Option<String>)> {
        let since = Instant::now();
        let mut cadence = Cadence::start(&self.args.target, since);
        // Dropping an `Mm` closes its userfaultfd: the kernel drops every protection.
        let mut mm = first.mm;
        loop {
            let watch = out.watch.as_ref().map(|fd| fd.as_fd());
            let wake = wait_until(cadence.deadline(), self.target, stop, watch);
            match wake {
                Wake::TargetExited => return Ok((EndReason::TargetExited, None)),
                // Nobody reads what a harvest would report: end now, as a failed write does.
                Wake::OutputClosed => {
                    out.closed = true;
                    return Ok((EndReason::OutputClosed, None));
                }
                _ => {}
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
                        out.emit(&Record::Mapping(ev), mm.vmas())?;
                    }
                    self.seq += 1;
                    self.total += delta.dirty_pages;
                    self.note_fork();
                    self.note_blind(out, mm.vmas())?;
                    let record = Record::Delta(delta);
                    out.emit(&record, mm.vmas())?;
                    if let Record::Delta(delta) = record {
                        mm.recycle(delta);
                    }
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
                        m => attach_mm(
                            self.target,
                            &self.scope,
                            None,
                            Arming::Unpopulated,
                            m,
                            &mut |_, _| {},
                        ),
                    };
                    match again {
                        Ok(a) => {
                            let exe = std::fs::read_link(self.target.proc_path("exe"))
                                .map(|p| {
                                    use std::os::unix::ffi::OsStrExt;
                                    maps::name_text(p.as_os_str().as_bytes())
                                })
                                .unwrap_or_default();
                            out.emit(
                                &Record::Exec(output::Exec {
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
                        // The new image exited, or was killed, while we attached.
                        Err(_) if exits_within(self.target, SETTLE) => {
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
            if self.args.target.count.is_some_and(|n| self.seq >= n) {
                return Ok((EndReason::Count, None));
            }
            if cadence.over() {
                return Ok((EndReason::Duration, None));
            }
            cadence.advance();
        }
    }
}

/// The emitter for a format, writing to `sink`. `styled`: human output may be bold (as
/// `--color` decides); `quiet`: human output without its table and skipped list.
pub fn emitter_for(
    format: Format,
    sink: Box<dyn io::Write>,
    styled: bool,
    quiet: bool,
) -> Box<dyn Emitter> {
    match format {
        Format::Json => Box::new(output::ndjson::Ndjson::new(sink)),
        Format::Human => Box::new(output::human::Human::new(sink, styled, quiet)),
        Format::Bitmap => Box::new(output::bitmap::Bitmap::new(sink)),
    }
}
