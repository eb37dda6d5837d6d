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
            skipped("tmux is not installed (apt-get install tmux)");
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

    /// Wait until the pane shows something `ok` accepts, twice in a row; that capture. A
    /// frame is one write, but tmux may take it in pieces: a capture can hold the top of a
    /// new frame over the rest of the old one. The view draws at each delta and key, so the
    /// same capture a moment later is (almost surely) a whole frame.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = wait_until(Duration::from_secs(20), || {
            last = self.capture(false);
            if !ok(&last) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(30));
            let again = self.capture(false);
            let same = again == last;
            last = again;
            same
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

/// The selected mapping, as the `all … > NAME RANGE SIZE` scope line names it.
fn selection(pane: &str) -> Option<String> {
    let line = pane.lines().find(|l| l.starts_with("all "))?;
    Some(line.split_once("  > ")?.1.trim_end().to_string())
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
            // Writing until the cells have been checked, however slow this machine is: a
            // hot cell fades to clean 16 deltas after its last write.
            "--until-stdin",
            "--run-for=120s",
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
    // Each j waits for its redraw, so that a slow one cannot make the next j skip the buffer.
    let mut pane = tmux.wait_for("the selected mapping", |p| selection(p).is_some());
    for _ in 0..40 {
        if holds_buffer(&pane) {
            break;
        }
        let before = selection(&pane).unwrap();
        tmux.keys("j");
        pane = tmux.wait_for("the selection moving down", |p| {
            selection(p).is_some_and(|s| s != before)
        });
    }
    assert!(holds_buffer(&pane), "j never selected the buffer:\n{pane}");
    tmux.keys("z");
    // The whole zoomed frame: below the header, the selected mapping's rows and nothing of
    // the unzoomed frame (other mappings' rows start with a space).
    let pane = tmux.wait_for("the zoomed mapping", |p| {
        let mut lines = p.lines().skip_while(|l| !l.starts_with("zoom [anon] 0x"));
        lines.next().is_some()
            && lines.all(|l| l.starts_with('>') || l.trim().is_empty() || l.starts_with("q quit"))
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
    writer.stop_writing();
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

/// A writer of 2048 pages that writes until its stdin says stop (or two minutes pass).
fn endless_writer(dir: &std::path::Path) -> Writer {
    Writer::spawn(
        dir,
        &[
            "--pages=2048",
            "--bursts=0",
            "--gap=2ms",
            "--until-stdin",
            "--run-for=120s",
            "--hold",
        ],
        None,
    )
}

#[test]
fn killing_the_view_leaves_the_target_running() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let mut writer = endless_writer(dir.path());
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
    // Killed mid-write, the file may end in part of a record (a long one leaves the buffer in
    // pieces): only whole lines count.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let types: Vec<String> = whole
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].to_string())
        .collect();
    assert!(
        types.len() >= 3 && types[0] == "\"start\"" && types[1..].iter().all(|t| t == "\"delta\""),
        "{types:?}"
    );
    writer.stop_writing();
    writer.wait_done();
    let (status, _) = writer.finish();
    assert!(status.success(), "the writer's memory changed: {status}");
}

/// The pid of a child of `parent` (the tracker that the pane's shell runs).
fn child_of(parent: i32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid …: comm may hold spaces, so count from the last ')'.
        let ppid: i32 = stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == parent).then_some(pid)
    })
}

/// Whether `pid`'s main thread sleeps in a write to a full pipe (`anon_pipe_write`,
/// `fifo_pipe_write` or, on older kernels, `pipe_write`).
fn blocked_writing_a_pipe(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("pipe_write"))
}

/// Whether a SIGINT sent to `pid` still waits to be delivered.
fn sigint_pending(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("ShdPnd:")
                .or_else(|| l.strip_prefix("SigPnd:"))
        })
        .any(|mask| {
            u64::from_str_radix(mask.trim(), 16).unwrap_or(0) & (1 << (libc::SIGINT - 1)) != 0
        })
}

/// What sets the stop flag before the SIGINT that must exit at once.
#[derive(Clone, Copy)]
enum FirstStop {
    QuitKey,
    Sigint,
}

/// A tracker held between its stop request and its exit, then sent a SIGINT: it exits 130 at
/// once, with the terminal given back (settings, alternate screen, cursor) and the target as
/// it was. It is held there for as long as the test needs by an `--output` FIFO that nobody
/// reads: its final records cannot be written.
fn a_signal_after_stopping_gives_the_terminal_back(name: &str, first: FirstStop) {
    use std::os::unix::fs::OpenOptionsExt;

    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let mut writer = endless_writer(dir.path());
    let fifo = dir.path().join("records.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A reader that never reads: the tracker's open succeeds and its writes fill the pipe.
    let unread = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    // SAFETY: fcntl on a descriptor we own; the smallest pipe fills after a few deltas.
    unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&unread),
            libc::F_SETPIPE_SZ,
            4096,
        )
    };
    // Only the writer's region is tracked, so that the start record (one entry per tracked
    // range, every library's included otherwise) fits in the pipe and the view is drawn.
    let (lo, hi) = writer.span();
    let command = format!(
        "before=$(stty -g); NO_COLOR=1 {BIN} track --view --interval 50ms --output {} --pid {} --range {lo:#x}-{hi:#x}; echo exit=$?; if [ \"$(stty -g)\" = \"$before\" ]; then echo tty=restored; else echo tty=changed; fi; sleep 60",
        fifo.display(),
        writer.pid
    );
    let Some(tmux) = Tmux::start(name, &command) else {
        return;
    };
    // The FIFO may fill before the first delta is drawn (the start record alone can do it).
    tmux.wait_for("the view", |p| status(p).is_some());
    let shell: i32 = tmux.format("#{pane_pid}").parse().unwrap();
    let mut tracker = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            tracker = child_of(shell);
            tracker.is_some()
        }),
        "no tracker under the pane's shell"
    );
    let tracker = tracker.unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || blocked_writing_a_pipe(tracker)),
        "the tracker never blocked on the unread FIFO"
    );
    assert_eq!(tmux.format("#{alternate_on}"), "1");

    match first {
        FirstStop::QuitKey => {
            tmux.keys("q");
            // The key thread redraws after it has set the stop flag.
            tmux.wait_for("the view stopping", |p| p.contains("stopping"));
        }
        FirstStop::Sigint => {
            // SAFETY: kill(2) of the tracker the pane's shell runs for us.
            unsafe { libc::kill(tracker, libc::SIGINT) };
            assert!(
                wait_until(Duration::from_secs(20), || !sigint_pending(tracker)),
                "the first SIGINT was never delivered"
            );
            // Delivered is not yet handled: give the handler time to set the flag, so that
            // the next SIGINT is a second one and not merged with or racing the first.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Still held: only the next signal can end it.
    assert!(blocked_writing_a_pipe(tracker), "the tracker moved on");
    // SAFETY: as above.
    unsafe { libc::kill(tracker, libc::SIGINT) };
    let pane = tmux.wait_for("the exit status and the tty check", |p| p.contains("tty="));
    assert!(pane.contains("exit=130"), "{pane}");
    assert!(pane.contains("tty=restored"), "{pane}");
    assert_eq!(tmux.format("#{alternate_on}"), "0", "{pane}");
    assert_eq!(tmux.format("#{cursor_flag}"), "1", "cursor hidden");
    assert!(
        writer.child.try_wait().unwrap().is_none(),
        "the target died"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !has_userfaultfd(writer.pid)
            && tracer_pid(writer.pid) == 0),
        "the target kept our userfaultfd or tracer"
    );
    drop(unread);
    writer.stop_writing();
    writer.wait_done();
    let (status, _) = writer.finish();
    assert!(status.success(), "the writer's memory changed: {status}");
}

#[test]
fn a_sigint_after_q_gives_the_terminal_back_and_exits_130() {
    a_signal_after_stopping_gives_the_terminal_back("after-q", FirstStop::QuitKey);
}

#[test]
fn a_second_sigint_in_the_view_gives_the_terminal_back_and_exits_130() {
    a_signal_after_stopping_gives_the_terminal_back("second-sigint", FirstStop::Sigint);
}

#[test]
fn view_with_a_format_and_no_output_file_is_a_usage_error() {
    let mut victim = Command::new("sleep").arg("10").spawn().unwrap();
    let pid = victim.id().to_string();
    for format in ["json", "bitmap"] {
        let out = uffd_dirty()
            .args(["track", "--view", "--format", format, "--pid", &pid])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("--format {format}")) && err.contains("add --output FILE"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
    assert_eq!(tracer_pid(victim.id() as i32), 0);
    let _ = victim.kill();
    let _ = victim.wait();
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
fn view_without_a_controlling_terminal_says_what_to_do() {
    // stdout is the pane, but setsid leaves no controlling terminal: /dev/tty cannot open.
    let mut victim = Command::new("sleep").arg("60").spawn().unwrap();
    let command = format!(
        "setsid -w {BIN} track --view --pid {}; echo exit=$?; sleep 60",
        victim.id()
    );
    let Some(tmux) = Tmux::start("no-ctty", &command) else {
        let _ = victim.kill();
        let _ = victim.wait();
        return;
    };
    tmux.wait_for("the exit status", |p| p.contains("exit="));
    // -J: the message is one line, wrapped by the pane.
    let pane = tmux.run(&["capture-pane", "-p", "-J"]);
    assert!(pane.contains("exit=2"), "{pane}");
    let err = pane
        .lines()
        .find(|l| l.starts_with("uffd-dirty:"))
        .unwrap_or_else(|| panic!("no error line:\n{pane}"));
    assert!(
        err.contains("/dev/tty") && err.contains("drop --view"),
        "{pane}"
    );
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
    // tmux hands the bytes to `cat`, which appends them when it runs: wait for the log itself
    // to reach the exit status.
    let mut bytes = Vec::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            bytes = std::fs::read(&log).unwrap_or_default();
            String::from_utf8_lossy(&bytes).contains("exit=")
        }),
        "the pane log never reached the exit status: {:?}",
        String::from_utf8_lossy(&bytes)
    );
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

#[test]
fn q_ends_a_long_interval_at_once() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let mut writer = Writer::spawn(dir.path(), &["--wait=stdin"], None);
    // The next harvest is a minute away: q must wake the wait, not the clock.
    let command = format!(
        "{BIN} track --view --interval 60s --pid {}; echo exit=$?; sleep 60",
        writer.pid
    );
    let Some(tmux) = Tmux::start("view-long-interval", &command) else {
        return;
    };
    tmux.wait_for("the view", |p| p.contains("uffd-dirty  PID"));
    let pressed = std::time::Instant::now();
    tmux.keys("q");
    let pane = tmux.wait_for("the exit status", |p| p.contains("exit="));
    let took = pressed.elapsed();
    assert!(pane.contains("exit=0"), "{pane}");
    assert!(
        took < Duration::from_secs(5),
        "q took {took:?} to end tracking"
    );
    writer.go();
    writer.finish();
}

/// A target whose files are named `\e]0;pwned\a` (sets the window title) and `\e[2J\e[8m`
/// (clears the screen, hides what follows): the view shows the names escaped, and neither
/// reaches the terminal.
#[test]
fn escapes_in_names_reach_the_view_escaped() {
    let dir = scratch();
    let Some(target) = crate::names::odd_names(dir.path(), "escapes") else {
        return;
    };
    let command = format!(
        "NO_COLOR=1 {BIN} track --view --interval 100ms --pid {}; sleep 60",
        target.pid
    );
    let Some(tmux) = Tmux::start("names", &command) else {
        return;
    };
    let title = tmux.format("#{pane_title}");
    let pane = tmux.wait_for("three deltas", |p| status(p).is_some_and(|(s, _)| s >= 3));
    assert_ne!(tmux.format("#{pane_title}"), "pwned", "{pane}");
    assert_eq!(
        tmux.format("#{pane_title}"),
        title,
        "the title changed:\n{pane}"
    );
    let pane = tmux.wait_for("the escaped names", |p| {
        p.contains(r"\x1b]0;pw") && p.contains(r"\x1b[2J")
    });
    // SGR 8 (concealed) would hide the text after the name: none is in the pane.
    assert!(!tmux.capture(true).contains("\x1b[8m"), "{pane}");
    tmux.keys("q");
    drop(target);
}
