//! `track --view` and the attach progress bar, driven in a real terminal (tmux) against the
//! ground-truth writer: what the pane shows, the keys, and the terminal given back.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// A tmux server of our own (its own socket) with one 120x40 session.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Start `command` (run by sh) in a fresh server; None (test skipped) without tmux.
    fn start(name: &str, command: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("SKIPPED: tmux is not installed (apt-get install tmux)");
            return None;
        }
        let t = Tmux {
            socket: format!("uffd-dirty-{name}-{}", std::process::id()),
        };
        let out = t
            .cmd(&["new-session", "-d", "-x", "120", "-y", "40", command])
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux: {out:?}");
        Some(t)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible pane, as text (`-e`: with colour escapes).
    fn capture(&self, escapes: bool) -> String {
        self.run(if escapes {
            &["capture-pane", "-p", "-e"]
        } else {
            &["capture-pane", "-p"]
        })
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", keys]);
    }

    fn format(&self, f: &str) -> String {
        self.run(&["display-message", "-p", f]).trim().to_string()
    }

    /// Wait until the pane shows something `ok` accepts; that capture.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = wait_until(Duration::from_secs(20), || {
            last = self.capture(false);
            ok(&last)
        });
        assert!(found, "the pane never showed {what}:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).output();
    }
}

/// The view's status line says `#SEQ  N pages`: (seq, dirty pages this delta).
fn status(pane: &str) -> Option<(u64, u64)> {
    let line = pane.lines().find(|l| l.starts_with("uffd-dirty  PID"))?;
    let mut words = line.split_whitespace();
    let seq = words.find(|w| w.starts_with('#'))?[1..].parse().ok()?;
    let pages = words.next()?.parse().ok()?;
    Some((seq, pages))
}

/// `0x1000-0x2000` in `line` as (start, end), and the `cell = N pages` grain.
fn zoom_header(line: &str) -> (u64, u64, u64) {
    let range = line
        .split_whitespace()
        .find(|w| w.starts_with("0x") && w.contains('-'))
        .unwrap_or_else(|| panic!("no range in {line:?}"));
    let (a, b) = range.split_once('-').unwrap();
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    let grain = line
        .split("cell = ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no grain in {line:?}"));
    (hex(a), hex(b), grain)
}

const MARGIN: usize = 24; // 120 columns / 5

#[test]
fn view_draws_written_and_clean_cells_and_quits_like_sigint() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    // 16384 pages, of which only the first quarter is ever written.
    let mut writer = Writer::spawn(
        dir.path(),
        &[
            "--pages=16384",
            "--write-first=4096",
            "--bursts=0",
            "--burst-pages=64",
            "--gap=2ms",
            "--run-for=12s",
            "--hold",
        ],
        None,
    );
    let command = format!(
        "before=$(stty -g); NO_COLOR=1 {BIN} track --view --interval 200ms --pid {}; echo exit=$?; if [ \"$(stty -g)\" = \"$before\" ]; then echo tty=restored; else echo tty=changed; fi; sleep 60",
        writer.pid
    );
    let Some(tmux) = Tmux::start("view", &command) else {
        return;
    };
    let pane = tmux.wait_for("three deltas", |p| status(p).is_some_and(|(s, _)| s >= 3));
    assert_eq!(tmux.format("#{alternate_on}"), "1", "{pane}");
    let (_, dirty) = status(&pane).unwrap();
    assert!(dirty > 0, "no dirty pages in the status line:\n{pane}");
    let rate = pane.lines().find(|l| l.starts_with("rate ")).unwrap();
    assert!(
        rate.chars().any(|c| ('▁'..='█').contains(&c)),
        "no sparkline: {rate}"
    );
    for name in ["uffd-dirty", "[stack]", "[anon]"] {
        assert!(
            pane.lines()
                .any(|l| l.get(1..).is_some_and(|m| m.starts_with(name))),
            "no {name} in the margin:\n{pane}"
        );
    }

    // Select the mapping that holds the writer's buffer, then zoom into it.
    let (base, end) = writer.span();
    let holds_buffer = |p: &str| {
        p.lines()
            .find(|l| l.starts_with("all ") || l.starts_with("zoom "))
            .map(zoom_header)
            .is_some_and(|(s, e, _)| s <= base && end <= e)
    };
    for _ in 0..40 {
        if holds_buffer(&tmux.capture(false)) {
            break;
        }
        tmux.keys("j");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        holds_buffer(&tmux.capture(false)),
        "j never selected the buffer"
    );
    tmux.keys("z");
    let pane = tmux.wait_for("the zoomed mapping", |p| {
        p.lines().any(|l| l.starts_with("zoom [anon] 0x"))
    });
    let header = pane.lines().find(|l| l.starts_with("zoom ")).unwrap();
    let (start, _, grain) = zoom_header(header);
    let cells: Vec<char> = pane
        .lines()
        .filter(|l| l.starts_with('>'))
        .flat_map(|l| l.chars().skip(MARGIN))
        .collect();
    let cell_bytes = grain * 4096;
    let hot_end = base + 4096 * 4096;
    let (mut hot, mut cold) = (0, 0);
    for (i, &c) in cells.iter().enumerate() {
        let (a, b) = (
            start + i as u64 * cell_bytes,
            start + (i as u64 + 1) * cell_bytes,
        );
        if a >= base && b <= hot_end {
            assert_ne!(c, '·', "cell {i} of the written quarter is clean:\n{pane}");
            hot += 1;
        } else if a >= hot_end && b <= end {
            assert_eq!(
                c, '·',
                "cell {i} of the untouched part is not clean:\n{pane}"
            );
            cold += 1;
        }
    }
    assert!(
        hot > 50 && cold > 150,
        "hot {hot}, cold {cold} cells:\n{pane}"
    );
    tmux.keys("u");
    tmux.wait_for("the zoom left", |p| {
        p.lines().any(|l| l.starts_with("all "))
    });

    // q ends tracking as SIGINT does: end record, exit 0, terminal and target as they were.
    tmux.keys("q");
    // The shell prints exit= then tty= a moment later: wait for the last.
    let pane = tmux.wait_for("the exit status and the tty check", |p| p.contains("tty="));
    assert!(pane.contains("exit=0"), "{pane}");
    assert!(pane.contains("stopped (signal) after"), "{pane}");
    assert!(pane.contains("tty=restored"), "{pane}");
    assert_eq!(tmux.format("#{alternate_on}"), "0");
    assert_eq!(tmux.format("#{cursor_flag}"), "1", "cursor hidden");
    assert!(
        writer.child.try_wait().unwrap().is_none(),
        "the target died"
    );
    assert!(!has_userfaultfd(writer.pid));
    assert_eq!(tracer_pid(writer.pid), 0);
    writer.wait_done();
    let (status, _) = writer.finish();
    assert!(status.success(), "the writer's memory changed: {status}");
}

#[test]
fn killing_the_view_leaves_the_target_running() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let mut writer = Writer::spawn(
        dir.path(),
        &[
            "--pages=2048",
            "--bursts=0",
            "--gap=2ms",
            "--run-for=4s",
            "--hold",
        ],
        None,
    );
    // --output FILE beside the view: the records go there as NDJSON.
    let records = dir.path().join("records.json");
    let command = format!(
        "exec {BIN} track --view --interval 100ms --output {} --pid {}",
        records.display(),
        writer.pid
    );
    let Some(tmux) = Tmux::start("kill", &command) else {
        return;
    };
    tmux.wait_for("two deltas", |p| status(p).is_some_and(|(s, _)| s >= 2));
    // Colours on a terminal (NO_COLOR unset): 256-colour cell backgrounds.
    assert!(tmux.capture(true).contains("\x1b[48;5;"));
    let tracker: i32 = tmux.format("#{pane_pid}").parse().unwrap();
    // SAFETY: kill(2) of the tracker tmux runs for us.
    unsafe { libc::kill(tracker, libc::SIGKILL) };
    assert!(
        wait_until(Duration::from_secs(5), || !has_userfaultfd(writer.pid)
            && tracer_pid(writer.pid) == 0),
        "the target kept our userfaultfd or tracer"
    );
    assert!(
        writer.child.try_wait().unwrap().is_none(),
        "the target died"
    );
    let text = std::fs::read_to_string(&records).unwrap();
    let types: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].to_string())
        .collect();
    assert!(
        types.len() >= 3 && types[0] == "\"start\"" && types[1..].iter().all(|t| t == "\"delta\""),
        "{types:?}"
    );
    writer.wait_done();
    let (status, _) = writer.finish();
    assert!(status.success(), "the writer's memory changed: {status}");
}

#[test]
fn view_without_a_terminal_is_a_usage_error() {
    let mut victim = Command::new("sleep").arg("10").spawn().unwrap();
    let pid = victim.id().to_string();
    let out = uffd_dirty()
        .args(["track", "--view", "--pid", &pid])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--view") && err.contains("terminal"), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(tracer_pid(victim.id() as i32), 0);
    let _ = victim.kill();
    let _ = victim.wait();
}

#[test]
fn attach_progress_bar_shows_on_a_terminal_and_is_erased() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    // 1 GiB populated: arming it takes ~15 ms, so the bar's threshold is lowered to zero
    // (16 GiB would be needed to pass the real 200 ms).
    let writer = Writer::spawn(
        dir.path(),
        &[
            "--pages=262144",
            "--pre-write=262144",
            "--bursts=1",
            "--wait=stdin",
        ],
        None,
    );
    let out = dir.path().join("records.json");
    let track = format!(
        "{BIN} track --pid {} --count 1 --interval 10ms --format json --output {}",
        writer.pid,
        out.display()
    );
    let log = dir.path().join("pane.log");
    let Some(tmux) = Tmux::start(
        "progress",
        &format!("read go; UFFD_DIRTY_PROGRESS_AFTER_MS=0 {track}; echo exit=$?; sleep 60"),
    ) else {
        return;
    };
    // Everything the pane is sent, bytes as written, from before the tracker starts.
    tmux.run(&["pipe-pane", "-o", &format!("cat >> {}", log.display())]);
    tmux.keys("Enter");
    let pane = tmux.wait_for("the exit status", |p| p.contains("exit="));
    assert!(pane.contains("exit=0"), "{pane}");
    assert!(
        !pane.contains("arming"),
        "the bar was left on screen:\n{pane}"
    );
    let bytes = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let drawn = text
        .rfind("\rarming [")
        .unwrap_or_else(|| panic!("no bar was drawn: {text:?}"));
    assert!(
        text[drawn..].contains("\r\x1b[K"),
        "the bar was not erased: {text:?}"
    );

    // stderr not a terminal: not one byte of it.
    let plain = uffd_dirty()
        .env("UFFD_DIRTY_PROGRESS_AFTER_MS", "0")
        .args([
            "track",
            "--count=1",
            "--interval=10ms",
            "--format=json",
            "--pid",
        ])
        .arg(writer.pid.to_string())
        .output()
        .unwrap();
    assert!(plain.status.success());
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !err.contains("arming") && !err.contains('\x1b') && !err.contains('\r'),
        "{err:?}"
    );
}
