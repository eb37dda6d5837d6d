//! The kernel's `mmap_lock` tracepoints, read through a tracefs instance of our own: how long
//! each task other than the target held the target's mmap lock, and for what.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

const TRACEFS: &str = "/sys/kernel/tracing";

/// A tracefs instance with the `mmap_lock` events on; removed when dropped.
pub struct LockTrace {
    dir: PathBuf,
    /// Closed before the instance is removed (an open file keeps it busy).
    marker: Option<fs::File>,
}

impl LockTrace {
    /// Mount tracefs if it is not (needs root), and start an instance of our own that
    /// records the tasks of `pids` and what they start (the attach helper): the rest of the
    /// machine takes the mmap lock hundreds of thousands of times a second.
    pub fn start(pids: &[i32]) -> Result<LockTrace> {
        let root = Path::new(TRACEFS);
        if !root.join("instances").exists() {
            let status = std::process::Command::new("mount")
                .args(["-t", "tracefs", "nodev", TRACEFS])
                .status()
                .context("running mount")?;
            if !status.success() || !root.join("instances").exists() {
                bail!("tracefs is not mounted at {TRACEFS} and could not be (needs root)");
            }
        }
        if !root.join("events/mmap_lock").exists() {
            bail!("this kernel has no mmap_lock tracepoints");
        }
        let dir = root.join(format!("instances/uffd-dirty-bench-{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let trace = LockTrace {
            marker: Some(
                fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("trace_marker"))
                    .context("opening trace_marker")?,
            ),
            dir,
        };
        trace.set("buffer_size_kb", "16384")?;
        trace.set("options/event-fork", "1")?;
        let list: Vec<String> = pids.iter().map(i32::to_string).collect();
        trace.set("set_event_pid", &list.join(" "))?;
        for event in ["mmap_lock_acquire_returned", "mmap_lock_released"] {
            trace.set(&format!("events/mmap_lock/{event}/enable"), "1")?;
        }
        trace.set("tracing_on", "1")?;
        Ok(trace)
    }

    fn set(&self, file: &str, value: &str) -> Result<()> {
        fs::write(self.dir.join(file), value)
            .with_context(|| format!("writing {value} to {}", self.dir.join(file).display()))
    }

    /// Mark the start of a phase in the trace.
    pub fn phase(&mut self, name: &str) -> Result<()> {
        self.marker
            .as_mut()
            .expect("open until dropped")
            .write_all(format!("uffd-dirty-phase {name}").as_bytes())
            .context("writing to trace_marker")
    }

    /// Stop tracing and read what was recorded: the holds of `target`'s mmap lock by tasks
    /// other than `target`'s threads (`target_tids`), by phase.
    pub fn finish(self, target_tids: &BTreeSet<i32>) -> Result<Holds> {
        self.set("tracing_on", "0")?;
        // Events lost to a full buffer would hide holds: the numbers are not worth printing.
        let lost: u64 = fs::read_dir(self.dir.join("per_cpu"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|cpu| fs::read_to_string(cpu.path().join("stats")).ok())
            .flat_map(|stats| {
                stats
                    .lines()
                    .filter_map(|l| l.strip_prefix("overrun: ")?.trim().parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum();
        if lost > 0 {
            bail!(
                "the mmap_lock trace lost {lost} events (its buffer overran): run the pauses section again on a quieter machine"
            );
        }
        let text = fs::read_to_string(self.dir.join("trace")).context("reading the trace")?;
        Ok(Holds::parse(&text, target_tids))
    }
}

impl Drop for LockTrace {
    fn drop(&mut self) {
        self.marker = None;
        let _ = fs::write(self.dir.join("tracing_on"), "0");
        for event in ["mmap_lock_acquire_returned", "mmap_lock_released"] {
            let _ = fs::write(
                self.dir.join(format!("events/mmap_lock/{event}/enable")),
                "0",
            );
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// One phase's holds of the target's mmap lock by others.
#[derive(Debug, Default, Clone)]
pub struct PhaseHolds {
    pub longest_read_us: u64,
    pub longest_write_us: u64,
    pub total_us: u64,
    pub count: u64,
}

impl PhaseHolds {
    pub fn longest_us(&self) -> u64 {
        self.longest_read_us.max(self.longest_write_us)
    }
}

/// Holds by phase name, in the order the phases came.
#[derive(Debug, Default)]
pub struct Holds {
    pub phases: Vec<(String, PhaseHolds)>,
    /// Events seen on the target's mm (none: the trace saw nothing of it).
    pub events: u64,
    /// The trace buffer overflowed (some events lost).
    pub lost: bool,
}

impl Holds {
    pub fn get(&self, phase: &str) -> Option<&PhaseHolds> {
        self.phases.iter().find(|(p, _)| p == phase).map(|(_, h)| h)
    }

    /// Parse a trace: `TASK-PID [CPU] FLAGS SECS.USECS: EVENT: FIELDS` lines.
    fn parse(text: &str, target_tids: &BTreeSet<i32>) -> Holds {
        struct Line<'a> {
            pid: i32,
            us: u64,
            event: &'a str,
            fields: &'a str,
        }
        let lines: Vec<Line> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (head, rest) = l.split_once(": ")?;
                let (event, fields) = rest.split_once(": ").unwrap_or((rest, ""));
                let mut words = head.split_whitespace();
                let task = words.next()?;
                let pid = task.rsplit_once('-')?.1.parse().ok()?;
                let stamp = words.last()?;
                let (secs, frac) = stamp.split_once('.')?;
                let us = secs.parse::<u64>().ok()? * 1_000_000 + frac.parse::<u64>().ok()?;
                Some(Line {
                    pid,
                    us,
                    event,
                    fields,
                })
            })
            .collect();
        let field = |fields: &str, name: &str| -> Option<String> {
            fields
                .split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
        };
        // The target's mm: the one its own threads lock.
        let target_mm = lines
            .iter()
            .filter(|l| target_tids.contains(&l.pid) && l.event.starts_with("mmap_lock"))
            .find_map(|l| field(l.fields, "mm"));
        let mut holds = Holds {
            lost: text.contains("LOST EVENTS"),
            ..Holds::default()
        };
        let Some(target_mm) = target_mm else {
            return holds;
        };
        let mut phase = String::from("before");
        let mut open: HashMap<i32, (u64, bool)> = HashMap::new();
        let mut current = PhaseHolds::default();
        for l in &lines {
            if l.event == "tracing_mark_write" {
                if let Some(name) = l.fields.trim().strip_prefix("uffd-dirty-phase ") {
                    holds
                        .phases
                        .push((std::mem::replace(&mut phase, name.to_string()), current));
                    current = PhaseHolds::default();
                }
                continue;
            }
            if field(l.fields, "mm").as_deref() != Some(target_mm.as_str()) {
                continue;
            }
            holds.events += 1;
            if target_tids.contains(&l.pid) {
                continue;
            }
            let write = field(l.fields, "write").as_deref() == Some("true");
            match l.event {
                "mmap_lock_acquire_returned"
                    if field(l.fields, "success").as_deref() == Some("true") =>
                {
                    open.insert(l.pid, (l.us, write));
                }
                "mmap_lock_released" => {
                    if let Some((from, w)) = open.remove(&l.pid) {
                        let us = l.us.saturating_sub(from);
                        current.count += 1;
                        current.total_us += us;
                        if w {
                            current.longest_write_us = current.longest_write_us.max(us);
                        } else {
                            current.longest_read_us = current.longest_read_us.max(us);
                        }
                    }
                }
                _ => {}
            }
        }
        holds.phases.push((phase, current));
        holds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_paired_per_task_on_the_target_mm_only() {
        let trace = "\
# tracer: nop
 target-100 [000] ..... 10.000100: mmap_lock_acquire_returned: mm=aaaa memcg_id=1 write=true success=true
 target-100 [000] ..... 10.000110: mmap_lock_released: mm=aaaa memcg_id=1 write=true
 bench-7 [001] ..... 10.000200: tracing_mark_write: uffd-dirty-phase attach
 bench-7 [001] ..... 10.001000: mmap_lock_acquire_returned: mm=aaaa memcg_id=1 write=false success=true
 bench-7 [001] ..... 10.004000: mmap_lock_released: mm=aaaa memcg_id=1 write=false
 bench-7 [001] ..... 10.004100: mmap_lock_acquire_returned: mm=bbbb memcg_id=1 write=true success=true
 bench-7 [001] ..... 10.019100: mmap_lock_released: mm=bbbb memcg_id=1 write=true
 bench-7 [001] ..... 10.020000: tracing_mark_write: uffd-dirty-phase detach
 kworker-u8:1-9 [001] ..... 10.021000: mmap_lock_acquire_returned: mm=aaaa memcg_id=1 write=true success=true
 kworker-u8:1-9 [001] ..... 10.023500: mmap_lock_released: mm=aaaa memcg_id=1 write=true
";
        let holds = Holds::parse(trace, &BTreeSet::from([100]));
        let attach = holds.get("attach").unwrap();
        assert_eq!((attach.count, attach.longest_read_us), (1, 3000));
        assert_eq!(
            attach.longest_write_us, 0,
            "another mm's hold is not counted"
        );
        let detach = holds.get("detach").unwrap();
        assert_eq!((detach.count, detach.longest_write_us), (1, 2500));
        assert_eq!(holds.get("before").unwrap().count, 0, "the target's own");
    }
}
