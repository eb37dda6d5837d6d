//! The tracker killed at every step of attach: just before and just after each of its ptrace
//! calls (those of its attach helper included), and at random instants, against one-thread
//! targets blocked in each kind of call. Every target must come out untouched: alive, not
//! traced, its own signal mask, no userfaultfd in its fd table, and its blocking call
//! completing as if nothing happened (tests/c/blocker.c says "bad" otherwise).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use crate::common::*;

/// Every kind of wait a borrowed thread can be found in, and one that computes.
const MODES: &[&str] = &[
    "read",
    "nanosleep",
    "clock_nanosleep",
    "epoll",
    "futex",
    "sigsuspend",
    "poll",
    "compute",
];

struct Built {
    blocker: PathBuf,
    shim: PathBuf,
}

/// The target and the preload shim; `None` where they cannot be compiled.
fn built() -> Option<&'static Built> {
    static BUILT: OnceLock<Option<Built>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            Some(Built {
                blocker: c_build("blocker", &[])?,
                shim: c_build("ptrace_kill_shim", &["-shared", "-fPIC", "-ldl"])?,
            })
        })
        .as_ref()
}

fn can_sweep() -> Option<&'static Built> {
    if !kernel_can_track() {
        return None;
    }
    built()
}

/// When to kill the tracker.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Never: count the ptrace calls of a whole run instead.
    Never,
    /// Just before (or after) the Nth ptrace call.
    AtPtrace { call: u32, after: bool },
    /// This long after the tracker started.
    After(Duration),
}

/// One target, blocked in `mode`, answering pings.
struct Blocker {
    child: Option<Child>,
    pid: i32,
    mode: &'static str,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Blocker {
    fn from_parts(
        child: Option<Child>,
        stdin: ChildStdin,
        stdout: impl std::io::Read + Send + 'static,
        mode: &'static str,
    ) -> Result<Blocker, String> {
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| format!("{mode}: the target never said ready"))?;
        let pid = ready
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("{mode}: the target said {ready:?}"))?;
        Ok(Blocker {
            child,
            pid,
            mode,
            stdin: Some(stdin),
            lines,
        })
    }

    fn spawn(mode: &'static str) -> Blocker {
        let b = built().unwrap();
        let mut child = Command::new(&b.blocker)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let b = Blocker::from_parts(Some(child), stdin, stdout, mode).unwrap();
        // Let it reach its blocking call.
        std::thread::sleep(Duration::from_millis(20));
        b
    }

    fn ping(&mut self) {
        if self.mode == "sigsuspend" {
            // SAFETY: kill(2) on the target.
            unsafe { libc::kill(self.pid, libc::SIGUSR1) };
        } else {
            let _ = self.stdin.as_mut().unwrap().write_all(b"p");
        }
    }

    fn sigblk(&self) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:").map(|v| v.trim().to_string()))
    }

    fn alive(&self) -> bool {
        read_status(&format!("/proc/{}/status", self.pid))
            .is_ok_and(|s| !matches!(s.state, 'Z' | 'X'))
    }

    /// What is wrong with the target after the tracker died, if anything.
    fn harm(&mut self, mask_before: &str) -> Option<String> {
        if !wait_until(Duration::from_secs(20), || {
            !self.alive() || tracer_pid(self.pid) == 0
        }) {
            return Some(format!("still traced by PID {}", tracer_pid(self.pid)));
        }
        if !self.alive() {
            return Some(format!(
                "died: {:?}",
                self.lines.try_iter().collect::<Vec<_>>()
            ));
        }
        // A thread on its way back into its call may show another mask for an instant (a
        // restarted sigsuspend: its saved mask, until it enters the call again).
        if !wait_until(Duration::from_secs(2), || {
            self.sigblk().as_deref() == Some(mask_before)
        }) {
            return Some(format!(
                "signal mask {:?}, was {mask_before}",
                self.sigblk()
            ));
        }
        if has_userfaultfd(self.pid) {
            return Some("a userfaultfd is left in its fd table".into());
        }
        // Whatever it printed before the ping (e.g. "bad EINTR") counts too.
        for _ in 0..2 {
            self.ping();
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(l) if l.starts_with("ok") => {}
                Ok(l) => return Some(format!("said {l:?}")),
                Err(_) => {
                    return Some(format!(
                        "no answer to a ping (alive: {}, mask {:?})",
                        self.alive(),
                        self.sigblk()
                    ));
                }
            }
        }
        None
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // SAFETY: kill(2) on the target (in launch mode no longer our child).
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        if let Some(c) = self.child.as_mut() {
            let _ = c.wait();
        }
    }
}

fn tracker_command(kill: Kill, count_file: Option<&std::path::Path>) -> Command {
    let b = built().unwrap();
    let mut cmd = uffd_dirty();
    cmd.env("LD_PRELOAD", &b.shim)
        .env_remove("KILL_SHIM_TRACKER");
    if let Kill::AtPtrace { call, after } = kill {
        cmd.env("KILL_SHIM_AT", call.to_string())
            .env("KILL_SHIM_WHEN", if after { "after" } else { "before" });
    }
    if let Some(f) = count_file {
        cmd.env("KILL_SHIM_COUNT", f);
    }
    cmd
}

/// Wait for the tracker to end (killed, or done), SIGKILLing it at `kill`'s instant.
fn end_tracker(mut tracker: Child, kill: Kill, started: Instant) {
    match kill {
        Kill::After(d) => {
            std::thread::sleep(d.saturating_sub(started.elapsed()));
            let _ = tracker.kill();
        }
        // Counting: attach is over long before this (a launched command is terminated when
        // its tracker ends normally, so the tracker is killed instead).
        Kill::Never => {
            wait_until(Duration::from_millis(1500), || {
                tracker.try_wait().unwrap().is_some()
            });
            let _ = tracker.kill();
        }
        Kill::AtPtrace { .. } => {}
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while tracker.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = tracker.kill();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One trial against a running target (`--pid`): the harm seen, if any.
fn pid_trial(
    mode: &'static str,
    kill: Kill,
    count_file: Option<&std::path::Path>,
) -> Option<String> {
    let mut target = Blocker::spawn(mode);
    let mask = target.sigblk().unwrap();
    let started = Instant::now();
    let tracker = tracker_command(kill, count_file)
        .args(["track", "--pid", &target.pid.to_string()])
        .args(["--interval", "20ms", "--count", "2", "--format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    end_tracker(tracker, kill, started);
    target.harm(&mask)
}

/// One trial in launch mode (`track -- blocker MODE`): the command is the tracker's child and
/// shares its stdin and stdout with the test.
fn launch_trial(
    mode: &'static str,
    kill: Kill,
    count_file: Option<&std::path::Path>,
) -> Option<String> {
    let b = built().unwrap();
    // Names the command (and the tracker's child before its exec) among all processes.
    let token = format!("sweep-{}-{}", std::process::id(), next_token());
    let started = Instant::now();
    let mut tracker = tracker_command(kill, count_file)
        .args(["track", "--interval", "20ms", "--duration", "3s"])
        .args(["--output", "/dev/null", "--format", "json", "--"])
        .arg(&b.blocker)
        .arg(mode)
        .arg(&token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = tracker.stdin.take().unwrap();
    let stdout = tracker.stdout.take().unwrap();
    let reader = std::thread::spawn(move || Blocker::from_parts(None, stdin, stdout, mode));
    end_tracker(tracker, kill, started);
    let mut target = match reader.join().unwrap() {
        Ok(t) => t,
        Err(e) => {
            let stuck = processes_named(&token);
            if stuck.is_empty() {
                // The tracker died before it forked the command: nothing to harm.
                return None;
            }
            let states: Vec<String> = stuck
                .iter()
                .map(|&pid| {
                    let st = read_status(&format!("/proc/{pid}/status"));
                    // SAFETY: kill(2) on a process of this trial.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    format!(
                        "PID {pid} {:?}",
                        st.map(|s| (s.name, s.state, s.tracer_pid))
                    )
                })
                .collect();
            return Some(format!("{e}: {}", states.join(", ")));
        }
    };
    // What /proc shows: inside sigsuspend, its temporary mask (the blocker checks its own).
    target.harm("0000000000000000")
}

fn next_token() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Live processes whose command line holds `token`.
fn processes_named(token: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == token.as_bytes()))
        })
        .filter(|&pid| {
            read_status(&format!("/proc/{pid}/status")).is_ok_and(|s| !matches!(s.state, 'Z' | 'X'))
        })
        .collect()
}

type Trial = fn(&'static str, Kill, Option<&std::path::Path>) -> Option<String>;

/// How many ptrace calls a whole run of `trial` makes against `mode`.
fn ptrace_calls(trial: Trial, mode: &'static str) -> u32 {
    let dir = scratch();
    let file = dir.path().join("count");
    if let Some(harm) = trial(mode, Kill::Never, Some(&file)) {
        panic!("{mode}: an undisturbed run harmed the target: {harm}");
    }
    std::fs::read_to_string(&file)
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(0)
}

/// Kill before and after every ptrace call of a run, for every mode, two modes at a time.
fn sweep(trial: Trial, modes: &'static [&'static str]) -> Vec<String> {
    let mut harmed = Vec::new();
    let mut trials = 0;
    for pair in modes.chunks(2) {
        let handles: Vec<_> = pair
            .iter()
            .map(|&mode| {
                std::thread::spawn(move || {
                    let calls = ptrace_calls(trial, mode);
                    assert!(calls > 0, "{mode}: the run made no ptrace call");
                    let mut seen = Vec::new();
                    for call in 1..=calls {
                        for after in [false, true] {
                            let kill = Kill::AtPtrace { call, after };
                            if let Some(h) = trial(mode, kill, None) {
                                seen.push(format!("{mode}, {kill:?} of {calls}: {h}"));
                            }
                        }
                    }
                    (2 * calls, seen)
                })
            })
            .collect();
        for h in handles {
            let (n, seen) = h.join().unwrap();
            trials += n;
            harmed.extend(seen);
        }
    }
    eprintln!(
        "kill sweep: {} of {trials} trials harmed the target",
        harmed.len()
    );
    harmed
}

/// Kill at pseudo-random instants 0-60 ms after the tracker started (seeded, printed).
fn random_kills(trial: Trial, per_mode: u32) -> Vec<String> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("random kills: seed {seed}");
    let mut x = seed | 1;
    let mut harmed = Vec::new();
    for &mode in MODES {
        for _ in 0..per_mode {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let kill = Kill::After(Duration::from_micros(x % 60_000));
            if let Some(h) = trial(mode, kill, None) {
                harmed.push(format!("{mode}, {kill:?}: {h}"));
            }
        }
    }
    eprintln!(
        "random kills: {} of {} trials harmed the target",
        harmed.len(),
        per_mode as usize * MODES.len()
    );
    harmed
}

#[test]
fn tracker_killed_at_every_ptrace_call_of_attach_leaves_the_target_untouched() {
    if can_sweep().is_none() {
        return;
    }
    let harmed = sweep(pid_trial, MODES);
    assert!(harmed.is_empty(), "harmed targets:\n{}", harmed.join("\n"));
}

#[test]
fn tracker_killed_at_every_ptrace_call_of_a_launch_leaves_the_command_untouched() {
    if can_sweep().is_none() {
        return;
    }
    let harmed = sweep(launch_trial, &["read", "compute"]);
    assert!(harmed.is_empty(), "harmed commands:\n{}", harmed.join("\n"));
}

#[test]
fn tracker_killed_at_random_instants_leaves_the_target_untouched() {
    if can_sweep().is_none() {
        return;
    }
    let mut harmed = random_kills(pid_trial, 15);
    harmed.extend(random_kills(launch_trial, 4));
    assert!(harmed.is_empty(), "harmed targets:\n{}", harmed.join("\n"));
}
