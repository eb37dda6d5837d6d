//! The examples, run as a user would run them, against C children whose memory is known:
//! `examples/precopy.rs` must end with a copy identical to the target's memory (read back
//! through /proc/PID/mem while the target is frozen), and must be caught when it skips its
//! final round; `examples/wss.rs` must report exactly the pages a child writes over and over,
//! and nothing once it stops.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::common::*;

/// The example program `name` (`target/debug/examples/NAME`), current. `cargo test` builds
/// the examples, but not when given a test name (`cargo test examples`), so the first test
/// that needs one runs `cargo build --examples` (a no-op when they are fresh; cargo holds no
/// lock while tests run).
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = Path::new(BIN).with_file_name("examples");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--examples", "--locked", "--quiet"]);
        if dir.parent().and_then(Path::file_name) == Some("release".as_ref()) {
            build.arg("--release");
        }
        let out = build.current_dir(root).output().unwrap();
        assert!(
            out.status.success(),
            "cargo build --examples: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let path = dir.join(name);
    let built = std::fs::metadata(&path).and_then(|m| m.modified());
    let built = built.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Its own source: the library's are cargo's to track (a file compiled only under a
    // feature, src/capi.rs, changes no example).
    let newest = newest_change(&root.join(format!("examples/{name}.rs")));
    assert!(
        built >= newest,
        "{} is older than its sources (built into another target directory?)",
        path.display()
    );
    path
}

/// When the newest file under `path` was last modified.
fn newest_change(path: &Path) -> SystemTime {
    let meta = std::fs::metadata(path).unwrap();
    if !meta.is_dir() {
        return meta.modified().unwrap();
    }
    // The binary's sources (src/bin/) are not the examples': only the library's count.
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("src/bin"))
        .map(|p| newest_change(&p))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A running example, killed if the test ends before it does.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run an example to its end, with stdin an open pipe (a launched command shares it), and
/// kill it after `limit`: its status, stdout and stderr.
fn run_example(name: &str, args: &[&str], limit: Duration) -> (ExitStatus, String, String) {
    let mut run = Running(
        Command::new(example(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + limit;
    let slurp = |mut from: Box<dyn Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            from.read_to_string(&mut text).unwrap();
            let _ = tx.send(text);
        });
        rx
    };
    let stdout = slurp(Box::new(run.0.stdout.take().unwrap()));
    let stderr = slurp(Box::new(run.0.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {args:?} still runs after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // A command it launched and left running would hold the pipes open.
    let rest = |rx: std::sync::mpsc::Receiver<String>| {
        let wait = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(wait.max(Duration::from_secs(5)))
            .unwrap_or_else(|_| panic!("{name} {args:?} exited, but its output is still open"))
    };
    (status, rest(stdout), rest(stderr))
}

// ---- precopy ----

/// The pre-copy target: 64 MiB, a hot set of 512 pages rewritten every pass (100 us apart),
/// 5000 cold pages a second anywhere, and new mappings (anonymous, and of a file) replacing
/// old ones every 20 ms.
const PRECOPY_TARGET: [&str; 4] = ["64", "512", "5000", "1"];
const BUFFER_PAGES: u64 = 64 << 8;
const HOT_PAGES: u64 = 512;

/// One row of the round table: its name (`0`, `1`, ..., `final`), the harvest's dirty pages
/// (none for round 0), and the pages copied.
#[derive(Debug)]
struct Round {
    name: String,
    dirty: Option<u64>,
    copied: u64,
}

fn rounds(stdout: &str) -> Vec<Round> {
    stdout
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let is_row = f.len() == 6
                && f[5] == "ms"
                && (f[0] == "final" || f[0].bytes().all(|b| b.is_ascii_digit()));
            is_row.then(|| Round {
                name: f[0].to_string(),
                dirty: f[1].parse().ok(),
                copied: f[2].parse().unwrap(),
            })
        })
        .collect()
}

/// The `verify:` summary: pages compared, pages that differ, copied pages no longer mapped.
fn verified(stdout: &str) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("verify:") && l.contains("compared"))
        .unwrap_or_else(|| panic!("no verify summary in:\n{stdout}"));
    let before = |word: &str| -> u64 {
        let at = line.find(word).unwrap();
        let number = line[..at].split_whitespace().last().unwrap();
        number.parse().unwrap()
    };
    (
        before(" pages compared"),
        before(" differ"),
        before(" copied pages no longer mapped"),
    )
}

/// What a run must show whatever else it shows: round 0 copied everything (at least the
/// 64 MiB buffer), and the table is well formed.
fn check_rounds(stdout: &str) -> Vec<Round> {
    let rounds = rounds(stdout);
    assert!(rounds.len() >= 2, "round table:\n{stdout}");
    assert_eq!(rounds[0].name, "0", "{stdout}");
    assert!(
        rounds[0].copied >= BUFFER_PAGES,
        "round 0 must copy everything tracked:\n{stdout}"
    );
    assert!(rounds[1..].iter().all(|r| r.dirty.is_some()), "{stdout}");
    rounds
}

fn precopy_target() -> Option<CProgram> {
    if !kernel_can_track() {
        return None;
    }
    let exe = c_build("precopy_target", &[])?;
    Some(CProgram::spawn(&exe, &PRECOPY_TARGET))
}

/// Pre-copy converges on a target that keeps writing, and after the frozen final round the
/// copy is the target's memory, page for page (read back through /proc/PID/mem, not through
/// the tracker). A lost write, a page copied before its last write, memory that appeared and
/// was not copied whole (the file mapping's pages are never reported written), or memory
/// that went and was kept, fails the comparison.
#[test]
fn precopy_ends_with_an_exact_copy() {
    let Some(mut target) = precopy_target() else {
        return;
    };
    let pid = target.pid.to_string();
    let (threshold, max_rounds) = (1024, 20);
    let (status, stdout, stderr) = run_example(
        "precopy",
        &[
            "--pid",
            &pid,
            "--threshold",
            &threshold.to_string(),
            "--max-rounds",
            &max_rounds.to_string(),
            "--verify",
        ],
        Duration::from_secs(60),
    );
    eprintln!("{stdout}{stderr}");
    assert!(status.success(), "precopy {status}:\n{stdout}{stderr}");
    let rounds = check_rounds(&stdout);
    let (last, precopy) = rounds[1..].split_last().unwrap();
    assert_eq!(last.name, "final", "{stdout}");
    assert!(!precopy.is_empty(), "no pre-copy round:\n{stdout}");
    // The hot set was rewritten while round 0 copied 64 MiB: the first harvest has it all.
    assert!(
        precopy[0].dirty.unwrap() >= HOT_PAGES,
        "round 1 missed hot pages:\n{stdout}"
    );
    let converged = precopy.last().unwrap().dirty.unwrap() <= threshold;
    assert!(
        converged || precopy.len() == max_rounds,
        "pre-copy stopped early:\n{stdout}"
    );
    let (compared, differ, stale) = verified(&stdout);
    assert!(
        compared >= BUFFER_PAGES,
        "only {compared} pages compared:\n{stdout}"
    );
    assert_eq!((differ, stale), (0, 0), "{stdout}");
    // Let go: the target runs on, traced by no one.
    assert!(
        target.child.try_wait().unwrap().is_none(),
        "the target died"
    );
    assert!(
        wait_until(Duration::from_secs(2), || tracer_pid(target.pid) == 0
            && !stat_state(target.pid).is_some_and(|s| s == 't' || s == 'T')),
        "the target was not let go"
    );
}

/// The state letter in /proc/PID/stat.
fn stat_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// The check can fail: without the final round, the pages the target wrote after the last
/// pre-copy round differ from the copy, and `--verify` must say so and exit 1.
#[test]
fn precopy_verify_catches_a_skipped_final_round() {
    let Some(target) = precopy_target() else {
        return;
    };
    let pid = target.pid.to_string();
    let (status, stdout, stderr) = run_example(
        "precopy",
        &[
            "--pid",
            &pid,
            "--threshold",
            "1024",
            "--verify",
            "--skip-final-round",
        ],
        Duration::from_secs(60),
    );
    eprintln!("{stdout}{stderr}");
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    let rounds = check_rounds(&stdout);
    assert!(rounds.iter().all(|r| r.name != "final"), "{stdout}");
    let (compared, differ, _) = verified(&stdout);
    assert!(compared >= BUFFER_PAGES, "{stdout}");
    // The hot set alone is rewritten every 100 us, and the target ran 100 ms unfrozen.
    assert!(
        differ > 0 && stdout.contains("differs from the copy"),
        "a stale copy passed verification:\n{stdout}"
    );
}

/// `precopy -- CMD`: the command is attached to before its exec, pre-copied as it starts
/// (ld.so and libc appear while it is copied), and terminated once the copy is done.
#[test]
fn precopy_of_a_launched_command() {
    if !kernel_can_track() {
        return;
    }
    let Some(exe) = c_build("precopy_target", &[]) else {
        return;
    };
    // Threshold 0: pre-copy goes on while the command writes (its startup, then its loop).
    let mut args = vec!["--threshold", "0", "--max-rounds", "30", "--verify", "--"];
    args.extend([exe.to_str().unwrap(), "16", "128", "2000", "1"]);
    let (status, stdout, stderr) = run_example("precopy", &args, Duration::from_secs(60));
    eprintln!("{stdout}{stderr}");
    assert!(status.success(), "precopy {status}:\n{stdout}{stderr}");
    let rounds = rounds(&stdout);
    assert!(rounds.len() >= 3, "{stdout}");
    assert_eq!(rounds.last().unwrap().name, "final", "{stdout}");
    let (compared, differ, stale) = verified(&stdout);
    assert!(compared > 0, "{stdout}");
    assert_eq!((differ, stale), (0, 0), "{stdout}");
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("precopy: PID ")?.split(',').next())
        .unwrap_or_else(|| panic!("no PID in:\n{stdout}"));
    let gone = || !Path::new(&format!("/proc/{pid}")).exists();
    assert!(
        wait_until(Duration::from_secs(5), gone),
        "the launched command outlived precopy"
    );
}

// ---- wss ----

/// The wss target writes the same 1500 of its 6000 pages every 10 ms, and nothing else.
const WSS_PAGES: u64 = 6000;
const WSS_SET: u64 = 1500;
/// Pages besides the set a steady wss target may write in a window: its stack, where poll(2)
/// is called from (2 pages here).
const WSS_SLACK: u64 = 16;

/// One wss report: its time, and each window's (pages, full).
#[derive(Debug)]
struct Report {
    t: f64,
    windows: Vec<(u64, bool)>,
}

fn report(line: &str) -> Report {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
    Report {
        t: v["t_s"].as_f64().unwrap(),
        windows: v["wss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w["pages"].as_u64().unwrap(), w["full"].as_bool().unwrap()))
            .collect(),
    }
}

/// `wss -- CMD` on a child that writes a fixed set of pages and nothing else: from the
/// second window on, the 1 s working set is that set, to a few stack pages. A lost write
/// makes it smaller, a page counted twice or reported unwritten makes it larger.
#[test]
fn wss_counts_exactly_the_pages_written() {
    if !kernel_can_track() {
        return;
    }
    let Some(exe) = c_build("wss_target", &[]) else {
        return;
    };
    let (pages, set) = (WSS_PAGES.to_string(), WSS_SET.to_string());
    let (status, stdout, stderr) = run_example(
        "wss",
        &[
            "--windows",
            "1s,2s",
            "--interval",
            "100ms",
            "--duration",
            "4.5s",
            "--json",
            "--",
            exe.to_str().unwrap(),
            &pages,
            &set,
            "quiet",
        ],
        Duration::from_secs(30),
    );
    eprintln!("{stdout}{stderr}");
    assert!(status.success(), "wss {status}:\n{stdout}{stderr}");
    let reports: Vec<Report> = stdout.lines().map(report).collect();
    assert!(reports.len() >= 4, "{stdout}");
    // The first report's 2 s window reaches back to the command's start, when it filled all
    // its pages (its 1 s window may just miss it, if the report came late).
    assert!(reports[0].windows[1].0 >= WSS_PAGES, "{stdout}");
    assert_eq!(
        (reports[0].windows[0].1, reports[0].windows[1].1),
        (true, false),
        "which windows are full at 1 s:\n{stdout}"
    );
    for r in reports.iter().filter(|r| r.t >= 1.9) {
        let (pages, full) = r.windows[0];
        assert!(
            (WSS_SET..=WSS_SET + WSS_SLACK).contains(&pages) && full,
            "wss(1s) at {:.1}s is {pages}, not {WSS_SET} (+{WSS_SLACK}):\n{stdout}",
            r.t
        );
        assert!(r.windows[1].0 >= WSS_SET, "{stdout}");
    }
}

/// `wss --pid` on a child that stops writing after about 2 s: the working set of a window
/// that began after the stop is zero, and a window that reaches back before it still holds
/// the whole set.
#[test]
fn wss_falls_to_zero_when_writing_stops() {
    if !kernel_can_track() {
        return;
    }
    let Some(exe) = c_build("wss_target", &[]) else {
        return;
    };
    let (pages, set) = (WSS_PAGES.to_string(), WSS_SET.to_string());
    let mut target = CProgram::spawn(&exe, &[&pages, &set]);
    let mut wss = Running(
        Command::new(example("wss"))
            .args(["--pid", &target.pid.to_string()])
            .args(["--windows", "1s,3s", "--duration", "7.5s", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(wss.0.stdout.take().unwrap()).lines();
    let mut reports = Vec::new();
    let mut stopped_after = None;
    for line in lines.by_ref() {
        let r = report(&line.unwrap());
        if stopped_after.is_none() && r.t >= 2.0 {
            // Stop the writer: one byte on its stdin.
            let stdin = target.child.stdin.as_mut().unwrap();
            stdin.write_all(b"s").unwrap();
            stdin.flush().unwrap();
            stopped_after = Some(r.t);
        }
        reports.push(r);
    }
    let status = wss.0.wait().unwrap();
    let all = format!("{reports:?}");
    eprintln!("{all}");
    assert!(status.success(), "wss {status}");
    let stop = stopped_after.expect("wss never reached 2 s");
    let before: Vec<&Report> = reports.iter().filter(|r| r.t <= stop).collect();
    assert!(!before.is_empty());
    for r in before {
        assert!(
            (WSS_SET..=WSS_SET + WSS_SLACK).contains(&r.windows[0].0),
            "while writing, at {:.1}s: {all}",
            r.t
        );
    }
    // A full second of margin past each window for the byte to reach the writer.
    let idle_1s: Vec<&Report> = reports.iter().filter(|r| r.t >= stop + 2.0).collect();
    let idle_3s: Vec<&Report> = reports.iter().filter(|r| r.t >= stop + 4.0).collect();
    let still_3s: Vec<&Report> = reports
        .iter()
        .filter(|r| r.t > stop + 0.9 && r.t <= stop + 2.0)
        .collect();
    assert!(
        !idle_1s.is_empty() && !idle_3s.is_empty() && !still_3s.is_empty(),
        "{all}"
    );
    assert!(idle_1s.iter().all(|r| r.windows[0].0 == 0), "{all}");
    assert!(idle_3s.iter().all(|r| r.windows[1].0 == 0), "{all}");
    // The 3 s window still reaches back to when it wrote.
    assert!(still_3s.iter().all(|r| r.windows[1].0 >= WSS_SET), "{all}");
}
