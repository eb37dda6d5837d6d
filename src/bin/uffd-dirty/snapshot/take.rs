//! `snapshot`: round 0 copies every tracked page holding data; each pre-copy round then
//! copies the pages written since the previous one, until the dirty set is small (or will not
//! get small); the final round stops the target, harvests and copies once more, and lets it go
//! (or leaves it stopped). Each page is read right after the harvest that reported it: a
//! write after that harvest is reported by the next one, which makes the final round exact.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;

use super::store::{
    self, ChangeRecord, End, Manifest, MappingRecord, RoundEntry, RoundIndex, RoundKind,
    RoundWriter, State,
};
use crate::cli::{FinalRound, SnapshotTakeArgs, TableFormat};
use crate::exit::ExitCode;
use crate::output::Timestamp;
use crate::stop::Stop;
use crate::track::{Triggers, Wake, wait_until};
use uffd_dirty::{
    Arming, Change, Harvest, MappingKind, Span, SpanSet, Target, Tracker, TrackerBuilder,
};

/// Pre-copy rounds without a new smallest dirty set after which the run is said not to converge.
const STALLED_ROUNDS: usize = 5;

/// Exit status of a snapshot whose pre-copy did not converge (the final round was still taken).
pub const EXIT_NOT_CONVERGED: u8 = 3;

/// One round's numbers, as printed and as NDJSON (`"type": "round"`).
#[derive(Debug, Clone, Serialize)]
struct RoundStats {
    #[serde(rename = "type")]
    record: &'static str,
    round: u32,
    kind: RoundKind,
    time: Timestamp,
    dirty_pages: u64,
    copied_pages: u64,
    stored_bytes: u64,
    zero_pages: u64,
    copy_ms: f64,
    copy_mib_s: f64,
    /// Pages written per second since the previous round, as MiB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    dirty_mib_s: Option<f64>,
    /// Rounds still needed to reach the threshold, from the last two rounds' shrinkage (none
    /// when the dirty set does not shrink).
    #[serde(skip_serializing_if = "Option::is_none")]
    projected_rounds: Option<u64>,
}

/// The end record (`"type": "end"`).
#[derive(Debug, Serialize)]
struct EndRecord<'a> {
    #[serde(rename = "type")]
    record: &'static str,
    reason: &'a str,
    message: &'a str,
    rounds: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    downtime_ms: Option<f64>,
    left_stopped: bool,
    dir: String,
}

/// Why pre-copy rounds ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Converged,
    MaxRounds,
    NotConverging,
    InputClosed,
    Signal,
    TargetExited,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Reason::Converged => "converged",
            Reason::MaxRounds => "max-rounds",
            Reason::NotConverging => "not-converging",
            Reason::InputClosed => "input-closed",
            Reason::Signal => "signal",
            Reason::TargetExited => "target-exited",
        }
    }

    /// The target is still there to take a final round of.
    fn final_round_possible(self) -> bool {
        !matches!(self, Reason::Signal | Reason::TargetExited)
    }
}

struct Taker<'a> {
    args: &'a SnapshotTakeArgs,
    dir: &'a Path,
    tracker: Tracker,
    manifest: Manifest,
    page: u64,
    /// The harvest before the next, for the dirty rate.
    last_harvest: Instant,
    history: Vec<RoundStats>,
    threshold: u64,
}

pub fn run(args: &SnapshotTakeArgs, stop: &Stop) -> Result<ExitCode> {
    let (Some(pid), Some(dir)) = (args.pid, args.dir.as_deref()) else {
        return Err(crate::exit::usage(
            "snapshot needs --pid PID and --dir DIR (or a subcommand: verify, materialize, info)",
        ));
    };
    let page = crate::os::page_size();
    let threshold = args.until_dirty_below.pages(page);
    uffd_dirty::probe::require(uffd_dirty::Method::PagemapScan)?;
    let target = Target::open(pid).with_context(|| format!("opening PID {pid}"))?;
    store::create_dir(dir)?;
    let mut triggers = args.trigger.map(Triggers::new).transpose()?;
    let mut builder = TrackerBuilder::new()
        .follow_exec(false)
        .arming(Arming::ReportPopulated);
    for span in &args.ranges {
        builder = builder.range(*span);
    }
    for selector in &args.mappings {
        builder = builder.select(selector.clone());
    }
    let tracker = builder.attach(&target)?;
    crate::track::warn_skipped(target.pid(), &tracker.attached().skipped);
    let manifest = Manifest {
        format: store::FORMAT.into(),
        version: store::VERSION,
        pid: target.pid(),
        exe: tracker.attached().exe.clone(),
        page_size: page,
        started: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        rounds: Vec::new(),
        state: State::Running,
        end: None,
    };
    let mut taker = Taker {
        args,
        dir,
        tracker,
        manifest,
        page,
        last_harvest: Instant::now(),
        history: Vec::new(),
        threshold,
    };
    taker.header(&target);
    match taker.take(&target, stop, triggers.as_mut()) {
        Ok(code) => Ok(code),
        Err(e) => {
            // Whatever went wrong, the rounds already named stay readable.
            let done = taker.manifest.rounds.len();
            taker.end(
                State::Incomplete,
                End {
                    reason: "error".into(),
                    message: format!("{e:#}"),
                    downtime_ms: None,
                    left_stopped: false,
                },
            );
            Err(e.context(format!(
                "snapshot into {} stopped after {done} complete round(s), which stay readable",
                dir.display()
            )))
        }
    }
}

impl Taker<'_> {
    fn take(
        &mut self,
        target: &Target,
        stop: &Stop,
        mut triggers: Option<&mut Triggers>,
    ) -> Result<ExitCode> {
        self.round(0, RoundKind::Full)?;
        let mut n = 1;
        let reason = loop {
            if let Some(reason) = self.precopy_done(n) {
                break reason;
            }
            let deadline = match triggers {
                Some(_) => Instant::now() + Duration::from_secs(100 * 365 * 86400),
                None => self.last_harvest + self.args.interval,
            };
            match wait_until(deadline, target, stop, None, triggers.as_deref_mut()) {
                Wake::Stop => break Reason::Signal,
                Wake::TargetExited => break Reason::TargetExited,
                Wake::TriggerClosed => break Reason::InputClosed,
                Wake::Tick | Wake::Triggered(_) | Wake::OutputClosed => {}
            }
            match self.round(n, RoundKind::Precopy) {
                // Its memory goes a moment before its pidfd says it exited.
                Err(e) if exits_soon(target) => {
                    eprintln!(
                        "uffd-dirty: PID {} exited during round {n}: {e:#}",
                        target.pid()
                    );
                    break Reason::TargetExited;
                }
                r => r?,
            };
            n += 1;
        };
        let mut downtime = None;
        let left_stopped = self.args.leave_stopped && reason.final_round_possible();
        if reason.final_round_possible() && self.args.r#final == FinalRound::Stop {
            // Nothing of the target's runs from the freeze to the end of the copy.
            let t = Instant::now();
            let frozen = target.freeze()?;
            self.round(n, RoundKind::Final)?;
            if left_stopped {
                // Pending when the threads are let go: they stop before running again.
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(target.pid()),
                    nix::sys::signal::Signal::SIGSTOP,
                )
                .context("stopping the target (--leave-stopped)")?;
            }
            drop(frozen);
            downtime = Some(t.elapsed());
        } else if left_stopped {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(target.pid()),
                nix::sys::signal::Signal::SIGSTOP,
            )
            .context("stopping the target (--leave-stopped)")?;
        }
        if left_stopped && !wait_group_stopped(target.pid(), Duration::from_secs(2)) {
            eprintln!(
                "uffd-dirty: warning: not every thread of PID {} had stopped 2 s after SIGSTOP",
                target.pid()
            );
        }
        let message = self.message(reason, downtime);
        let state = if reason.final_round_possible() {
            State::Finished
        } else {
            State::Incomplete
        };
        let end = End {
            reason: reason.name().into(),
            message: message.clone(),
            downtime_ms: downtime.map(ms),
            left_stopped,
        };
        self.end(state, end.clone());
        self.print_end(&end);
        Ok(match reason {
            Reason::Converged | Reason::InputClosed => ExitCode::Success,
            Reason::MaxRounds | Reason::NotConverging => ExitCode::Command(EXIT_NOT_CONVERGED),
            Reason::Signal => ExitCode::Command(130),
            Reason::TargetExited => ExitCode::RuntimeError,
        })
    }

    /// Whether the pre-copy rounds are over before round `n`, and why.
    fn precopy_done(&self, n: u32) -> Option<Reason> {
        // Round 0 copies everything: only the rounds after it tell what is left to do.
        let precopy = &self.history[1..];
        let last = precopy.last()?;
        if last.dirty_pages <= self.threshold {
            return Some(Reason::Converged);
        }
        if n > self.args.max_rounds {
            return Some(Reason::MaxRounds);
        }
        // With --trigger, the caller paces the rounds and ends them (the end of its input):
        // a round asked for before the last one's copy time has passed, or while the target
        // is busy, says nothing of where the rounds are going.
        if self.args.trigger.is_some() {
            return None;
        }
        // Written faster than copied, twice running: the dirty set cannot shrink.
        let outrun = |r: &RoundStats| r.dirty_mib_s.is_some_and(|d| d > r.copy_mib_s);
        if precopy.len() >= 2 && precopy[precopy.len() - 2..].iter().all(outrun) {
            return Some(Reason::NotConverging);
        }
        // No new smallest dirty set for STALLED_ROUNDS rounds: it has stopped shrinking.
        if precopy.len() > STALLED_ROUNDS {
            let split = precopy.len() - STALLED_ROUNDS;
            let best_before = precopy[..split].iter().map(|r| r.dirty_pages).min()?;
            if precopy[split..]
                .iter()
                .all(|r| r.dirty_pages >= best_before)
            {
                return Some(Reason::NotConverging);
            }
        }
        None
    }

    fn message(&self, reason: Reason, downtime: Option<Duration>) -> String {
        let precopy = self
            .history
            .len()
            .saturating_sub(1 + downtime.is_some() as usize);
        let last = self
            .history
            .iter()
            .rev()
            .find(|r| r.kind == RoundKind::Precopy);
        let left = last.map_or(0, |r| r.dirty_pages);
        let threshold = self.threshold;
        match reason {
            Reason::Converged => format!(
                "converged after {precopy} pre-copy round(s): {left} pages written in the last, at most {threshold}"
            ),
            Reason::MaxRounds => format!(
                "did not converge in --max-rounds {} pre-copy rounds: {left} pages written in the last, more than {threshold}",
                self.args.max_rounds
            ),
            Reason::NotConverging => match last {
                Some(r) if r.dirty_mib_s.is_some_and(|d| d > r.copy_mib_s) => format!(
                    "not converging: the target writes {:.1} MiB/s, faster than the copy ({:.1} MiB/s), so the dirty set cannot shrink to {threshold} pages",
                    r.dirty_mib_s.unwrap_or(0.0),
                    r.copy_mib_s
                ),
                _ => format!(
                    "not converging: {STALLED_ROUNDS} pre-copy rounds without a smaller dirty set ({left} pages in the last, threshold {threshold})"
                ),
            },
            Reason::InputClosed => format!(
                "the end of the input: {precopy} pre-copy round(s), {left} pages written in the last"
            ),
            Reason::Signal => "stopped by a signal: no final round".into(),
            Reason::TargetExited => "the target exited: no final round".into(),
        }
    }

    /// Harvest, copy what it reported (and new file and shared memory whole), store the
    /// round, then name it in the manifest.
    fn round(&mut self, n: u32, kind: RoundKind) -> Result<()> {
        let result = self.take_round(n, kind);
        if result.is_err() {
            // What a round cut short wrote is never read: give the space back.
            for name in [store::pages_file(n), store::index_file(n)] {
                let _ = std::fs::remove_file(self.dir.join(name));
            }
        }
        result
    }

    fn take_round(&mut self, n: u32, kind: RoundKind) -> Result<()> {
        let started = Instant::now();
        // A round records the mappings, which must match the target's to the split.
        self.tracker.relist_mappings();
        let harvest = self.tracker.harvest()?;
        let time = SystemTime::now();
        let since = started.duration_since(self.last_harvest);
        self.last_harvest = started;
        crate::track::warn_skipped(self.tracker.pid(), harvest.skipped());
        let (reset, whole) = if kind == RoundKind::Full {
            // Round 0: a file's or shared memory's pages hold data never written here.
            let objects: SpanSet = self
                .tracker
                .attached()
                .tracked
                .iter()
                .filter(|m| backed_by_object(Some(m.kind)))
                .map(|m| m.span)
                .collect();
            let (_, whole) = catch_up(&harvest);
            (SpanSet::default(), objects.union(&whole))
        } else {
            catch_up(&harvest)
        };
        let copy = harvest
            .dirty()
            .union(&whole)
            .intersection(harvest.tracked());
        let copied_pages = copy.pages(self.page);

        let copy_started = Instant::now();
        let pages_name = store::pages_file(n);
        let index_name = store::index_file(n);
        let mut writer = RoundWriter::create(&self.dir.join(&pages_name), &copy, self.page)
            .with_context(|| format!("creating {}", self.dir.join(&pages_name).display()))?;
        let unreadable = self
            .tracker
            .read_pages(&copy, &mut writer)
            .with_context(|| format!("round {n}: copying {copied_pages} pages"))?;
        let (runs, pages_bytes, pages_crc32, data_pages, zero_pages) = writer
            .finish()
            .with_context(|| format!("writing {}", self.dir.join(&pages_name).display()))?;
        let copy_time = copy_started.elapsed();

        let index = RoundIndex {
            round: n,
            mappings: mapping_records(&self.tracker, harvest.tracked()),
            changes: change_records(&harvest),
            reset: reset.iter().map(|s| [s.start, s.end]).collect(),
            runs,
            unreadable: unreadable.iter().map(|s| [s.start, s.end]).collect(),
        };
        let index_bytes = serde_json::to_vec(&index)?;
        store::write_atomically(self.dir, &index_name, &index_bytes)
            .with_context(|| format!("writing {}", self.dir.join(&index_name).display()))?;
        let timestamp = humantime::format_rfc3339_micros(time).to_string();
        self.manifest.rounds.push(RoundEntry {
            round: n,
            kind,
            time: timestamp,
            pages_file: pages_name,
            index_file: index_name,
            pages_bytes,
            pages_crc32,
            index_crc32: crc32fast::hash(&index_bytes),
            dirty_pages: harvest.dirty_pages(),
            copied_pages,
            data_pages,
            zero_pages,
            tracked_pages: harvest.tracked().pages(self.page),
        });
        if let Err(e) = self.write_manifest() {
            self.manifest.rounds.pop();
            return Err(e);
        }

        let copied_mib = mib(copied_pages * self.page);
        let copy_mib_s = copied_mib / copy_time.as_secs_f64().max(1e-9);
        let dirty_mib_s = (kind != RoundKind::Full)
            .then(|| mib(harvest.dirty_pages() * self.page) / since.as_secs_f64().max(1e-9));
        let stats = RoundStats {
            record: "round",
            round: n,
            kind,
            time: Timestamp(time),
            dirty_pages: harvest.dirty_pages(),
            copied_pages,
            stored_bytes: pages_bytes,
            zero_pages,
            copy_ms: ms(copy_time),
            copy_mib_s,
            dirty_mib_s,
            projected_rounds: self.projection(harvest.dirty_pages(), kind),
        };
        self.print_round(&stats);
        self.history.push(stats);
        Ok(())
    }

    /// Rounds still to go to reach the threshold, as QEMU projects pre-copy: the dirty set
    /// shrinks by the ratio of the last two rounds each round.
    fn projection(&self, dirty: u64, kind: RoundKind) -> Option<u64> {
        if kind != RoundKind::Precopy {
            return None;
        }
        if dirty <= self.threshold {
            return Some(0);
        }
        let before = self
            .history
            .last()
            .filter(|r| r.kind == RoundKind::Precopy)?
            .dirty_pages;
        let ratio = dirty as f64 / before as f64;
        (ratio < 1.0 && dirty > 0).then(|| {
            ((self.threshold.max(1) as f64 / dirty as f64).ln() / ratio.ln())
                .ceil()
                .max(1.0) as u64
        })
    }

    fn write_manifest(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.manifest)?;
        store::write_atomically(self.dir, store::MANIFEST, &bytes).with_context(|| {
            format!(
                "writing {} (the rounds before stay readable)",
                self.dir.join(store::MANIFEST).display()
            )
        })
    }

    /// Record how the snapshot ended; a failure to is said, not fatal (the manifest before
    /// names every complete round).
    fn end(&mut self, state: State, end: End) {
        self.manifest.state = state;
        self.manifest.end = Some(end);
        if let Err(e) = self.write_manifest() {
            eprintln!("uffd-dirty: warning: {e:#}");
        }
    }

    fn header(&self, target: &Target) {
        let attached = self.tracker.attached();
        let tracked = attached.spans();
        if self.args.format == TableFormat::Human && !self.args.quiet {
            eprintln!(
                "uffd-dirty: snapshot of PID {} into {}: {} mappings tracked ({:.1} MiB), until a round finds at most {} pages written",
                target.pid(),
                self.dir.display(),
                attached.tracked.len(),
                mib(tracked.bytes()),
                self.threshold
            );
        }
        if self.args.format == TableFormat::Human {
            println!(
                "{:>5} {:<7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9}",
                "round",
                "kind",
                "dirty",
                "copied",
                "stored",
                "copy ms",
                "copy MiB/s",
                "dirty MiB/s",
                "projected"
            );
        }
    }

    fn print_round(&self, r: &RoundStats) {
        match self.args.format {
            TableFormat::Json => {
                println!("{}", serde_json::to_string(r).expect("serializable"));
            }
            TableFormat::Human => {
                let kind = match r.kind {
                    RoundKind::Full => "full",
                    RoundKind::Precopy => "precopy",
                    RoundKind::Final => "final",
                };
                println!(
                    "{:>5} {:<7} {:>9} {:>9} {:>7.1}Mi {:>9.1} {:>10.0} {:>11} {:>9}",
                    r.round,
                    kind,
                    r.dirty_pages,
                    r.copied_pages,
                    mib(r.stored_bytes),
                    r.copy_ms,
                    r.copy_mib_s,
                    r.dirty_mib_s.map_or("-".into(), |d| format!("{d:.1}")),
                    r.projected_rounds.map_or("-".into(), |p| p.to_string()),
                );
            }
        }
    }

    fn print_end(&self, end: &End) {
        match self.args.format {
            TableFormat::Json => {
                let record = EndRecord {
                    record: "end",
                    reason: &end.reason,
                    message: &end.message,
                    rounds: self.manifest.rounds.len(),
                    downtime_ms: end.downtime_ms,
                    left_stopped: end.left_stopped,
                    dir: self.dir.display().to_string(),
                };
                println!("{}", serde_json::to_string(&record).expect("serializable"));
            }
            TableFormat::Human => {
                if let Some(d) = end.downtime_ms {
                    println!("downtime: {d:.1} ms (the target stopped for the final round)");
                }
                println!("{}", end.message);
                if end.left_stopped {
                    println!(
                        "PID {} is left stopped: `kill -CONT {}` resumes it",
                        self.manifest.pid, self.manifest.pid
                    );
                }
            }
        }
    }
}

/// Whether the target has exited or does within half a second.
fn exits_soon(target: &Target) -> bool {
    use std::os::fd::AsFd;
    let [exited] = crate::os::poll(
        [(target.as_fd(), crate::os::PollFlags::POLLIN)],
        Duration::from_millis(500),
    );
    exited.contains(crate::os::PollFlags::POLLIN)
}

/// What a harvest's mapping changes void of the earlier rounds, and what must be copied whole.
fn catch_up(harvest: &Harvest) -> (SpanSet, SpanSet) {
    let mut gone = Vec::new();
    let mut new = Vec::new();
    let mut whole = Vec::new();
    for change in harvest.changes() {
        let span = change.span;
        if let Change::Moved { from } = change.change {
            gone.push(from);
        }
        match change.change {
            Change::Removed => gone.push(span),
            // New anonymous memory: the harvest that finds it reports every page of it that
            // holds data (written or not: see `Change`), and only those are copied (reading
            // the rest would populate it).
            Change::Added | Change::Moved { .. } | Change::Replaced
                if !backed_by_object(change.kind) =>
            {
                new.push(span)
            }
            // New file or shared memory (and any change this version does not know): its
            // pages hold data never written here.
            _ => {
                new.push(span);
                whole.push(span);
            }
        }
    }
    // A span still tracked (no longer armed but still mapped) keeps its pages.
    let gone = SpanSet::from(gone).difference(harvest.tracked());
    (gone.union(&SpanSet::from(new)), SpanSet::from(whole))
}

/// Whether memory of this kind holds data without the process having written it: a file's
/// pages, shared memory another process filled. Unknown (unmapped) counts as such.
fn backed_by_object(kind: Option<MappingKind>) -> bool {
    !matches!(
        kind,
        Some(MappingKind::Anon | MappingKind::Heap | MappingKind::Stack)
    )
}

fn mapping_records(tracker: &Tracker, tracked: &SpanSet) -> Vec<MappingRecord> {
    let mut out = Vec::new();
    for vma in tracker.mappings() {
        let whole = Span::new(vma.start, vma.end);
        for span in tracked.iter().filter_map(|t| t.intersect(&whole)) {
            out.push(MappingRecord {
                start: span.start,
                end: span.end,
                perms: format!(
                    "{}{}{}{}",
                    if vma.read { 'r' } else { '-' },
                    if vma.write { 'w' } else { '-' },
                    if vma.exec { 'x' } else { '-' },
                    if vma.shared { 's' } else { 'p' }
                ),
                offset: vma.offset + (span.start - vma.start),
                kind: vma.kind(),
                name: vma.name.clone(),
            });
        }
    }
    out
}

fn change_records(harvest: &Harvest) -> Vec<ChangeRecord> {
    harvest
        .changes()
        .iter()
        .map(|c| ChangeRecord {
            change: match c.change {
                Change::Added => "added",
                Change::Moved { .. } => "moved",
                Change::Removed => "removed",
                Change::Replaced => "replaced",
                _ => "changed",
            }
            .into(),
            start: c.span.start,
            end: c.span.end,
            from: match c.change {
                Change::Moved { from } => Some([from.start, from.end]),
                _ => None,
            },
            kind: c.kind,
            name: c.name.clone(),
        })
        .collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Wait until every thread of `pid` is stopped (state `T`), as `--leave-stopped` promises
/// on exit: the SIGSTOP is pending in each thread let go, which takes a moment to act on it
/// (a thread seen running meanwhile would make `snapshot verify` refuse the target). False
/// after `limit`, or if the threads cannot be read.
fn wait_group_stopped(pid: i32, limit: Duration) -> bool {
    let stopped = || -> Option<bool> {
        let mut any = false;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            // A thread gone meanwhile has nothing left to stop.
            let Some(stat) = task
                .ok()
                .and_then(|t| std::fs::read_to_string(t.path().join("stat")).ok())
            else {
                continue;
            };
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            if !matches!(state, 'T' | 't') {
                return Some(false);
            }
            any = true;
        }
        Some(any)
    };
    let start = Instant::now();
    loop {
        match stopped() {
            Some(true) => return true,
            None => return false,
            Some(false) if start.elapsed() >= limit => return false,
            Some(false) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}
