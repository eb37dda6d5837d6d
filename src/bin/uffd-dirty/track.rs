//! `track`: attach a [`Tracker`], then every interval harvest and emit one delta; stop on a
//! signal, a count, a duration, the target's exit, or the output's reader going away.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow};

use crate::cli::{Format, TargetArgs, TrackArgs};
use crate::exit::ExitCode;
use crate::os::{self, PollFlags};
use crate::output::{self, Addr, Emitter, EndReason, Record, Timestamp};
use crate::progress;
use crate::stop::Stop;
use uffd_dirty::Mapping;
use uffd_dirty::{
    Attached, Error, Gone, Harvest, Method, SkippedMapping, Target, Tracker, TrackerBuilder,
};

pub(crate) enum Wake {
    Tick,
    Stop,
    TargetExited,
    /// The reader of the output went away (POLLERR on a pipe whose read end closed).
    OutputClosed,
    /// `--trigger`: this many harvests asked for.
    Triggered(u64),
    /// `--trigger stdin`: the end of the input.
    TriggerClosed,
}

/// What `--trigger` waits on: stdin, read line by line, or a pipe SIGUSR1 writes a byte to.
pub(crate) struct Triggers {
    fd: std::os::fd::OwnedFd,
    /// Lines: stdin; else one trigger per byte.
    lines: bool,
    /// A line begun and not ended yet.
    partial: bool,
}

impl Triggers {
    pub(crate) fn new(trigger: crate::cli::Trigger) -> Result<Triggers> {
        use std::os::fd::AsRawFd;
        match trigger {
            crate::cli::Trigger::Stdin => Ok(Triggers {
                fd: crate::os::dup_raw(io::stdin().as_raw_fd()).context("duplicating stdin")?,
                lines: true,
                partial: false,
            }),
            crate::cli::Trigger::Sigusr1 => {
                let (read, write) = nix::unistd::pipe2(
                    nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
                )?;
                signal_hook::low_level::pipe::register(signal_hook::consts::SIGUSR1, write)
                    .context("handling SIGUSR1")?;
                Ok(Triggers {
                    fd: read,
                    lines: false,
                    partial: false,
                })
            }
        }
    }

    /// Read what is there: how many triggers it holds, or None at the end of the input.
    fn take(&mut self) -> Option<u64> {
        let mut buf = [0u8; 4096];
        match nix::unistd::read(&self.fd, &mut buf) {
            // A last line without its newline counts; then the end.
            Ok(0) if self.lines => std::mem::take(&mut self.partial).then_some(1),
            Ok(0) => Some(0),
            Ok(n) if self.lines => {
                let got = &buf[..n];
                self.partial = got.last() != Some(&b'\n');
                Some(got.iter().filter(|&&b| b == b'\n').count() as u64)
            }
            Ok(n) => Some(n as u64),
            Err(_) => Some(0),
        }
    }
}

/// Sleep until `deadline`, waking early for a stop request, the target's exit, or `output`
/// (the fd records are written to) losing its reader: `track --interval 10s | head -n 1` ends
/// as soon as `head` does, not at the next harvest, with the target armed all that time.
pub(crate) fn wait_until(
    deadline: Instant,
    target: &Target,
    stop: &Stop,
    output: Option<BorrowedFd<'_>>,
    mut trigger: Option<&mut Triggers>,
) -> Wake {
    const GONE: PollFlags = PollFlags::POLLERR.union(PollFlags::POLLHUP);
    const IN: PollFlags = PollFlags::POLLIN;
    loop {
        if stop.requested() {
            return Wake::Stop;
        }
        let now = Instant::now();
        if now >= deadline {
            return Wake::Tick;
        }
        // Rounded up to whole milliseconds: the wait never ends just short of the deadline.
        // Absent fds are watched as stop's again (for nothing), to keep one poll set.
        let out = output.unwrap_or(stop.fd());
        let told = trigger.as_ref().map_or(stop.fd(), |t| t.fd.as_fd());
        let [exited, woken, out_events, told_events] = os::poll(
            [
                (target.as_fd(), IN),
                (stop.fd(), IN),
                (out, PollFlags::empty()),
                (told, IN),
            ],
            deadline - now,
        );
        if output.is_some() && out_events.intersects(GONE) {
            return Wake::OutputClosed;
        }
        if exited.contains(IN) {
            return Wake::TargetExited;
        }
        if let Some(t) = trigger.as_deref_mut()
            && told_events.intersects(IN | PollFlags::POLLHUP)
        {
            match t.take() {
                None => return Wake::TriggerClosed,
                Some(0) => {}
                Some(n) => return Wake::Triggered(n),
            }
        }
        if woken.contains(IN) {
            stop.drain_stray_wakeups();
        }
    }
}

/// What one run of `track` ended with.
pub struct Outcome {
    pub exit: ExitCode,
}

/// The record stream. A reader that goes away (`| head`) is a clean end, not an error.
pub(crate) struct RecordStream<'a> {
    emitter: Box<dyn Emitter + 'a>,
    closed: bool,
    /// The fd written to, watched between harvests for its reader going away.
    watch: Option<std::os::fd::OwnedFd>,
}

impl RecordStream<'_> {
    fn emit(&mut self, record: &Record, vmas: &[Mapping]) -> Result<()> {
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

/// The record of what an attach tracks.
fn tracked_ranges(attached: &Attached, page_size: u64) -> Vec<output::TrackedRange> {
    attached
        .tracked
        .iter()
        .map(|t| output::TrackedRange {
            start: Addr(t.span.start),
            end: Addr(t.span.end),
            pages: t.span.pages(page_size),
            mapping: t.name.clone(),
            kind: t.kind,
        })
        .collect()
}

fn skipped_ranges(skips: &[SkippedMapping]) -> Vec<output::SkippedRange> {
    skips
        .iter()
        .map(|s| output::SkippedRange {
            start: Addr(s.span.start),
            end: Addr(s.span.end),
            mapping: s.name.clone(),
            reason: s.reason.clone(),
        })
        .collect()
}

/// Say on stderr what the kernel refused to track (not what can never be written).
pub(crate) fn warn_skipped(pid: i32, skips: &[SkippedMapping]) {
    for s in skips.iter().filter(|s| !s.never_writable) {
        eprintln!(
            "uffd-dirty: PID {pid}: not tracking {} {}: {}",
            s.span, s.name, s.reason
        );
    }
}

/// One stderr line per kind of blind spot, the first time it is found.
#[derive(Default)]
struct BlindWarnings(std::collections::BTreeSet<uffd_dirty::BlindKind>);

impl BlindWarnings {
    fn warn(&mut self, pid: i32, found: &[uffd_dirty::Blind]) {
        for b in found {
            if self.0.insert(b.kind) {
                eprintln!(
                    "uffd-dirty: warning: PID {pid}: {}, so those writes are not reported (README: \"Guarantees, and what cannot be seen\")",
                    b.detail
                );
            }
        }
    }
}

/// Say on stderr, once per kind, what writes cannot be seen in PID `pid`.
pub(crate) fn warn_blind(pid: i32, found: &[uffd_dirty::Blind]) {
    BlindWarnings::default().warn(pid, found);
}

/// How many userfaultfds process `pid` holds in its fd table.
fn userfaultfds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.as_os_str() == "anon_inode:[userfaultfd]")
        .count()
}

/// The target of `track`, `compare` and the demo: `--pid`, or the command launched.
pub(crate) fn open_target(args: &crate::cli::TargetArgs) -> Result<Target> {
    Ok(match args.pid {
        Some(pid) => Target::open(pid)?,
        None => Target::launch(&args.command)?,
    })
}

/// `b` narrowed to the `--range`s and `--mapping`s of `args`.
pub(crate) fn scoped<'p>(args: &TargetArgs, mut b: TrackerBuilder<'p>) -> TrackerBuilder<'p> {
    for &r in &args.ranges {
        b = b.range(r);
    }
    for s in &args.mappings {
        b = b.select(s.clone());
    }
    b
}

/// The tracker `track` describes, before it attaches.
fn builder(args: &TrackArgs) -> TrackerBuilder<'static> {
    let b = TrackerBuilder::new()
        .method(args.method)
        .arming(args.arm)
        .follow_exec(!args.no_follow_exec)
        .freeze(!args.no_freeze);
    scoped(&args.target, b)
}

/// `watch`: the fd `out` writes to, to end tracking as soon as its reader is gone.
pub fn run(
    args: &TrackArgs,
    stop: &Stop,
    out: Box<dyn Emitter + '_>,
    watch: Option<std::os::fd::OwnedFd>,
) -> Result<Outcome> {
    if args.trigger == Some(crate::cli::Trigger::Stdin) && args.target.pid.is_none() {
        return Err(crate::exit::usage(
            "--trigger stdin reads the stdin a launched command would share: start the command apart and give --pid, or use --trigger sigusr1",
        ));
    }
    // What the kernel lacks is said before any target is looked at.
    let support = uffd_dirty::probe::require(args.method)?;
    if !support.pmd_hole_fix {
        eprintln!(
            "uffd-dirty: warning: this kernel ({}) lacks the 2026 PAGEMAP_SCAN fix for empty page-table ranges: a page table freed by a zap of a whole huge page (MADV_DONTNEED of 2 MiB) or by page-table reclaim reads as not written, so those zeroed pages are not reported",
            uffd_dirty::probe::kernel_release()
        );
    }
    let target = open_target(&args.target)?;
    if args.method == Method::SoftDirty && args.no_freeze {
        eprintln!(
            "uffd-dirty: warning: --no-freeze: soft-dirty bits are read and cleared while PID {} runs, so a write between the two is lost",
            target.pid()
        );
    }
    let mut bar = (args.method != Method::SoftDirty).then(|| progress::Bar::on_stderr("arming"));
    let tracker = builder(args)
        .on_progress(|done, total| {
            if let Some(bar) = bar.as_mut() {
                bar.update(done, total)
            }
        })
        .attach(&target);
    drop(bar);
    let mut tracker = tracker?;
    let page_size = tracker.page_size();
    warn_skipped(target.pid(), &tracker.attached().skipped);
    let mut blind_warnings = BlindWarnings::default();
    blind_warnings.warn(target.pid(), tracker.blind_spots());
    let attached = tracker.attached();
    let start = output::Start {
        version: output::FORMAT_VERSION,
        pid: target.pid(),
        page_size,
        method: args.method,
        pid_namespace: attached.pid_namespace.clone(),
        pid_in_namespace: attached.pid_in_namespace,
        interval_ms: args.target.interval.as_millis() as u64,
        ranges: tracked_ranges(attached, page_size),
        skipped: skipped_ranges(&attached.skipped),
        blind: tracker
            .blind_spots()
            .iter()
            .map(|b| output::Blind::of(b, page_size))
            .collect(),
        arm_method: attached.armed_by,
        attach_us: attached.duration.as_micros() as u64,
        thread_stopped_us: attached.thread_stopped.as_micros() as u64,
        time: Timestamp(attached.armed_at),
    };
    let mut out = RecordStream {
        emitter: out,
        closed: false,
        watch,
    };
    out.emit(&Record::Start(start), tracker.mappings())?;
    let mut tracking = Tracking {
        fork_noted: false,
        userfaultfds: userfaultfds(target.pid()),
        userfaultfd_noted: false,
        userfaultfd_checked: Instant::now(),
        fork_checked: None,
        blind_warnings,
        blind_checked: Instant::now(),
        target: &target,
        args,
        page_size,
        seq: 0,
        total: 0,
        written: args.summary.then(uffd_dirty::SpanSet::new),
        harvest: Harvest::new(),
        delta: None,
    };
    let (reason, error) = tracking.follow(&mut tracker, stop, &mut out)?;
    drop(tracker);
    let exit_status = match reason {
        EndReason::TargetExited => target.wait(),
        _ => None,
    };
    let end = output::End {
        reason,
        deltas: tracking.seq,
        dirty_pages_total: tracking.total,
        exit_status,
        error: error.clone(),
        written_pages: tracking.written.as_ref().map(|w| w.pages(page_size)),
        written: tracking
            .written
            .as_ref()
            .map(|w| output::dirty_runs(w.as_slice(), page_size)),
        time: Timestamp(SystemTime::now()),
    };
    out.emit(&Record::End(end), &[])?;
    // A launched command that outlives tracking is terminated, and that is said.
    if let Some(status) = target.terminate()
        && !args.output.look.quiet
    {
        eprintln!(
            "uffd-dirty: tracking ended first: terminated the command (PID {}, exit status {status})",
            target.pid()
        );
    }
    if let Some(e) = error {
        return Err(anyhow!(e));
    }
    let exit = match exit_status {
        Some(status) => ExitCode::Command(status.clamp(0, 255) as u8),
        None => ExitCode::Success,
    };
    Ok(Outcome { exit })
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

    /// The end of `--duration`, if given.
    pub(crate) fn end(&self) -> Option<Instant> {
        self.end_at
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

/// The tracking loop's state.
struct Tracking<'a> {
    /// The target's own userfaultfds when tracking began, whether a new one was warned about,
    /// and when they were last counted.
    userfaultfds: usize,
    userfaultfd_noted: bool,
    userfaultfd_checked: Instant,
    /// Whether the "a fork is not tracked" note was printed, and when children were last
    /// looked for.
    fork_noted: bool,
    fork_checked: Option<Instant>,
    /// Writes the tracker cannot see, looked for again at most once a second.
    blind_warnings: BlindWarnings,
    blind_checked: Instant,
    target: &'a Target,
    args: &'a TrackArgs,
    page_size: u64,
    seq: u64,
    total: u64,
    /// `--summary`: every page written since the attach.
    written: Option<uffd_dirty::SpanSet>,
    /// Reused every interval, so that a steady-state interval allocates nothing.
    harvest: Harvest,
    delta: Option<output::Delta>,
}

impl Tracking<'_> {
    /// Warn once when the target makes a userfaultfd of its own while tracked: its
    /// registrations over memory registered here fail with EBUSY, which may change what it
    /// does. Counted at most once a second (one directory listing).
    fn note_userfaultfd(&mut self) {
        if self.userfaultfd_noted || self.userfaultfd_checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.userfaultfd_checked = Instant::now();
        let pid = self.target.pid();
        if userfaultfds(pid) > self.userfaultfds {
            self.userfaultfd_noted = true;
            eprintln!(
                "uffd-dirty: warning: PID {pid} made a userfaultfd of its own while tracked: where it registers memory tracked here, it gets EBUSY (its behaviour may change); track around that memory with --range or --mapping, or attach once it has registered"
            );
        }
    }

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
        let pid = self.target.pid();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return;
        };
        let child = tasks.filter_map(|t| t.ok()).find_map(|t| {
            let text = std::fs::read_to_string(t.path().join("children")).ok()?;
            text.split_whitespace().next().map(str::to_string)
        });
        if let Some(child) = child {
            self.fork_noted = true;
            eprintln!(
                "uffd-dirty: PID {pid} forked PID {child}: children are not tracked (only PID {pid} is)"
            );
        }
    }

    /// Announce sources of unseen writes that appeared since attach (a `blind` record each,
    /// one stderr line per kind). Looked for at most once a second.
    fn note_blind(&mut self, tracker: &mut Tracker, out: &mut RecordStream) -> Result<()> {
        if self.blind_checked.elapsed() < Duration::from_secs(1) {
            return Ok(());
        }
        self.blind_checked = Instant::now();
        let found = tracker.check_blind_spots();
        self.blind_warnings.warn(self.target.pid(), &found);
        for blind in &found {
            let record = output::BlindFound {
                blind: output::Blind::of(blind, self.page_size),
                time: Timestamp(SystemTime::now()),
            };
            out.emit(&Record::Blind(record), tracker.mappings())?;
        }
        Ok(())
    }

    /// The delta record of the last harvest, in vectors reused from the one before.
    fn delta(&mut self, since: Instant) -> output::Delta {
        let h = &self.harvest;
        let mut delta = self.delta.take().unwrap_or_else(|| output::Delta {
            seq: 0,
            time: Timestamp(SystemTime::UNIX_EPOCH),
            elapsed_ms: 0,
            dirty_pages: 0,
            ranges: Vec::new(),
            scan_us: 0,
            bitmap: None,
            tracked: Vec::new(),
        });
        delta.seq = self.seq;
        delta.time = Timestamp(h.time());
        delta.elapsed_ms = since.elapsed().as_millis() as u64;
        delta.dirty_pages = h.dirty_pages();
        delta.ranges.clear();
        output::dirty_runs_into(h.dirty().as_slice(), self.page_size, &mut delta.ranges);
        delta.scan_us = h.cost().as_micros() as u64;
        delta.tracked.clear();
        delta.tracked.extend_from_slice(h.tracked().as_slice());
        delta.bitmap = self
            .args
            .json_bitmap
            .then(|| output::bitmap::bitmaps(&delta.tracked, h.dirty().as_slice(), self.page_size));
        delta
    }

    /// The exec record after the tracker followed the target into a new program.
    fn exec_record(&self, tracker: &Tracker) -> Record {
        let a = tracker.attached();
        let exe = a.exe.clone();
        Record::Exec(output::Exec {
            pid: self.target.pid(),
            exe,
            ranges: tracked_ranges(a, self.page_size),
            skipped: skipped_ranges(&a.skipped),
            attach_us: a.duration.as_micros() as u64,
            thread_stopped_us: a.thread_stopped.as_micros() as u64,
            time: Timestamp(SystemTime::now()),
        })
    }

    /// Harvest every interval until something ends tracking. Returns the end reason and
    /// error message.
    fn follow(
        &mut self,
        tracker: &mut Tracker,
        stop: &Stop,
        out: &mut RecordStream,
    ) -> Result<(EndReason, Option<String>)> {
        let since = Instant::now();
        let mut cadence = Cadence::start(&self.args.target, since);
        let mut triggers = self.args.trigger.map(Triggers::new).transpose()?;
        // Harvests asked for and not yet made (several lines may come in one read).
        let mut pending = 0u64;
        loop {
            let watch = out.watch.as_ref().map(|fd| fd.as_fd());
            let wake = if pending > 0 {
                Wake::Triggered(0)
            } else {
                // Triggered: no tick but the end of --duration.
                let deadline = match triggers {
                    Some(_) => cadence
                        .end()
                        .unwrap_or_else(|| since + crate::cli::MAX_DURATION),
                    None => cadence.deadline(),
                };
                wait_until(deadline, self.target, stop, watch, triggers.as_mut())
            };
            match wake {
                Wake::Triggered(n) => pending = (pending + n).saturating_sub(1),
                Wake::TriggerClosed => return Ok((EndReason::InputClosed, None)),
                Wake::Tick if triggers.is_some() => return Ok((EndReason::Duration, None)),
                _ => {}
            }
            match wake {
                Wake::TargetExited => return Ok((EndReason::TargetExited, None)),
                // Nobody reads what a harvest would report: end now, as a failed write does.
                Wake::OutputClosed => {
                    out.closed = true;
                    return Ok((EndReason::OutputClosed, None));
                }
                _ => {}
            }
            let mut harvest = std::mem::take(&mut self.harvest);
            let harvested = tracker.harvest_into(&mut harvest);
            self.harvest = harvest;
            match harvested {
                Ok(()) => {
                    if self.harvest.after_exec() {
                        warn_skipped(self.target.pid(), &tracker.attached().skipped);
                        out.emit(&self.exec_record(tracker), tracker.mappings())?;
                    }
                    warn_skipped(self.target.pid(), self.harvest.skipped());
                    let time = Timestamp(self.harvest.time());
                    for change in self.harvest.changes() {
                        let record = Record::Mapping(output::MappingEvent::of(change, time));
                        out.emit(&record, tracker.mappings())?;
                    }
                    self.seq += 1;
                    self.total += self.harvest.dirty_pages();
                    if let Some(written) = self.written.as_mut() {
                        written.extend_from(self.harvest.dirty());
                    }
                    self.note_fork();
                    self.note_userfaultfd();
                    self.note_blind(tracker, out)?;
                    let record = Record::Delta(self.delta(since));
                    out.emit(&record, tracker.mappings())?;
                    if let Record::Delta(delta) = record {
                        self.delta = Some(delta);
                    }
                }
                Err(Error::Gone {
                    why: Gone::Exited, ..
                }) => return Ok((EndReason::TargetExited, None)),
                Err(Error::Gone {
                    why: Gone::Exec, ..
                }) => return Ok((EndReason::Exec, None)),
                Err(Error::AfterExec(e)) => {
                    return Ok((
                        EndReason::Exec,
                        Some(format!("re-attaching after exec: {e}")),
                    ));
                }
                Err(e) => return Ok((EndReason::Error, Some(e.to_string()))),
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
