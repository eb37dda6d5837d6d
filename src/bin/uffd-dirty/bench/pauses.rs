//! What the target feels (issue 18): how long the tracker holds the target's mmap lock at a
//! time — during which the target's mmap, munmap, mprotect and brk, and its page faults that
//! need the lock, wait — at attach, at harvests 1, 10 and 100 % dirty, and at detach,
//! measured with the kernel's `mmap_lock` tracepoints. The engine as it is (holds bounded:
//! walks, arming and the release in pieces) runs beside the engine as it was (each whole
//! walk, arming piece and the release under one hold), and an untracked baseline gives the
//! target's own longest mmap+munmap without any tracker: the machine's noise.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::Case;
use super::tracefs::{Holds, LockTrace};
use uffd_dirty::{Target, TrackerBuilder};

/// The dirty fractions harvested, as the phases' names.
const FRACTIONS: [(f64, &str); 3] = [
    (0.01, "harvest-1%"),
    (0.1, "harvest-10%"),
    (1.0, "harvest-100%"),
];
const PHASES: [&str; 6] = [
    "attach",
    "harvest-steady",
    "harvest-1%",
    "harvest-10%",
    "harvest-100%",
    "detach",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Engine {
    Untracked,
    /// Holds as long as each whole walk, arming piece and the release took.
    Unbounded,
    /// Holds bounded (the engine as it is).
    Bounded,
}

/// One phase of one case: the tracker's holds of the target's mmap lock, and the target's
/// longest mmap+munmap, per engine.
#[derive(Debug, Clone, Serialize)]
pub struct PauseRow {
    pub case: Case,
    pub phase: &'static str,
    pub unbounded_longest_ms: f64,
    pub unbounded_total_ms: f64,
    pub bounded_longest_ms: f64,
    pub bounded_total_ms: f64,
    pub bounded_holds: u64,
    /// The target's longest mmap+munmap pair in the phase.
    pub stall_untracked_ms: f64,
    pub stall_unbounded_ms: f64,
    pub stall_bounded_ms: f64,
}

struct PauseTarget {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    populated: u64,
}

impl PauseTarget {
    fn spawn(case: Case) -> Result<PauseTarget> {
        let page = crate::os::page_size();
        let pages = case.size_bytes / page;
        let every = if case.populated >= 1.0 {
            1
        } else {
            (1.0 / case.populated).round().max(1.0) as u64
        };
        let layout = crate::fixtures::bench_target::Layout { pages, every };
        let mut child = Command::new(std::env::current_exe()?)
            .args(["pause-target", "--pages", &pages.to_string()])
            .args(["--populate-every", &every.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the pause target")?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut target = PauseTarget {
            child,
            stdin,
            stdout,
            populated: layout.populated(),
        };
        let ready = target.line()?;
        if ready != "ready" {
            bail!("the pause target said {ready:?}");
        }
        Ok(target)
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the pause target exited");
        }
        Ok(line.trim_end().to_string())
    }

    fn order(&mut self, order: &str) -> Result<String> {
        writeln!(self.stdin, "{order}")?;
        self.stdin.flush()?;
        self.line()
    }

    /// Start phase `name`; the longest mmap+munmap pair of the phase that ended, in ms.
    fn phase(&mut self, name: &str) -> Result<f64> {
        let answer = self.order(&format!("P {name}"))?;
        let us: u64 = answer
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.parse().ok())
            .with_context(|| format!("the pause target said {answer:?}"))?;
        Ok(us as f64 / 1e3)
    }

    fn dirty(&mut self, fraction: f64) -> Result<()> {
        let n = ((self.populated as f64 * fraction).round() as u64).max(1);
        self.order(&format!("D {n}"))?;
        Ok(())
    }

    fn tids(&self) -> BTreeSet<i32> {
        tids_of(self.child.id() as i32)
    }
}

/// The threads of process `pid`.
fn tids_of(pid: i32) -> BTreeSet<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for PauseTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One engine's run over all phases: the holds, and the target's stall per phase.
struct EngineRun {
    holds: Holds,
    stalls: Vec<(String, f64)>,
}

fn run_engine(case: Case, engine: Engine) -> Result<EngineRun> {
    let mut target = PauseTarget::spawn(case)?;
    // Ours (and the helper we start), and the target's.
    let mut pids = tids_of(std::process::id() as i32);
    pids.extend(target.tids());
    let mut trace = LockTrace::start(&pids.into_iter().collect::<Vec<_>>())?;
    let mut stalls = Vec::new();
    let mut phase = |target: &mut PauseTarget, trace: &mut LockTrace, name: &str| -> Result<()> {
        // The target's answer closes its phase; the marker opens the tracker's.
        let ended = target.phase(name)?;
        stalls.push((name.to_string(), ended));
        trace.phase(name)
    };
    phase(&mut target, &mut trace, "attach")?;
    let handle = Target::open(target.child.id() as i32)?;
    let mut tracker = match engine {
        Engine::Untracked => None,
        Engine::Unbounded => Some(
            TrackerBuilder::new()
                .unbounded_lock_holds()
                .attach(&handle)?,
        ),
        Engine::Bounded => Some(TrackerBuilder::new().attach(&handle)?),
    };
    phase(&mut target, &mut trace, "harvest-steady")?;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(t) = tracker.as_mut() {
            t.harvest()?;
        }
    }
    for (fraction, name) in FRACTIONS {
        // The writes come before the phase: their faults are not the harvest's.
        target.dirty(fraction)?;
        phase(&mut target, &mut trace, name)?;
        if let Some(t) = tracker.as_mut() {
            t.harvest()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    phase(&mut target, &mut trace, "detach")?;
    drop(tracker);
    std::thread::sleep(Duration::from_millis(20));
    phase(&mut target, &mut trace, "end")?;
    let tids = target.tids();
    let holds = trace.finish(&tids)?;
    // Each answer closes the phase before it: shift names by one.
    let names: Vec<String> = stalls.iter().map(|(n, _)| n.clone()).collect();
    let stalls = names
        .iter()
        .zip(stalls.iter().skip(1))
        .map(|(name, (_, ms))| (name.clone(), *ms))
        .collect();
    Ok(EngineRun { holds, stalls })
}

/// Measure every case with the three engines; `Err` says why it cannot run here.
pub fn measure(cases: &[Case]) -> Result<Vec<PauseRow>> {
    if crate::os::euid() != 0 {
        bail!("needs root: the mmap_lock tracepoints are read through tracefs");
    }
    let mut rows = Vec::new();
    for &case in cases {
        let untracked = run_engine(case, Engine::Untracked)?;
        let unbounded = run_engine(case, Engine::Unbounded)?;
        let bounded = run_engine(case, Engine::Bounded)?;
        for run in [&unbounded, &bounded] {
            if run.holds.lost {
                eprintln!(
                    "uffd-dirty bench: warning: the trace buffer overflowed: some holds were not seen"
                );
            }
            if run.holds.events == 0 {
                bail!("the trace saw no lock of the target's address space");
            }
        }
        let stall = |run: &EngineRun, phase: &str| {
            run.stalls
                .iter()
                .find(|(p, _)| p == phase)
                .map_or(0.0, |(_, ms)| *ms)
        };
        for phase in PHASES {
            let hold = |run: &EngineRun| run.holds.get(phase).cloned().unwrap_or_default();
            let (u, b) = (hold(&unbounded), hold(&bounded));
            rows.push(PauseRow {
                case,
                phase,
                unbounded_longest_ms: u.longest_us() as f64 / 1e3,
                unbounded_total_ms: u.total_us as f64 / 1e3,
                bounded_longest_ms: b.longest_us() as f64 / 1e3,
                bounded_total_ms: b.total_us as f64 / 1e3,
                bounded_holds: b.count,
                stall_untracked_ms: stall(&untracked, phase),
                stall_unbounded_ms: stall(&unbounded, phase),
                stall_bounded_ms: stall(&bounded, phase),
            });
        }
    }
    Ok(rows)
}

/// The Markdown table.
pub fn table(rows: &[PauseRow]) -> String {
    let mut out = String::from(
        "| size | phase | longest hold, whole walks (ms) | longest hold, bounded (ms) | holds, bounded: sum (ms) / count | target's longest mmap+munmap: untracked / whole / bounded (ms) |\n|---|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out += &format!(
            "| {}{} | {} | {:.2} | {:.2} | {:.1} / {} | {:.2} / {:.2} / {:.2} |\n",
            super::table::size(r.case.size_bytes),
            if r.case.populated < 1.0 {
                format!(" ({:.0} % populated)", r.case.populated * 100.0)
            } else {
                String::new()
            },
            r.phase,
            r.unbounded_longest_ms,
            r.bounded_longest_ms,
            r.bounded_total_ms,
            r.bounded_holds,
            r.stall_untracked_ms,
            r.stall_unbounded_ms,
            r.stall_bounded_ms,
        );
    }
    out
}
