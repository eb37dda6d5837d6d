//! `track --trigger`: a harvest per line on stdin, or per SIGUSR1, and none otherwise.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// The next record the tracker prints.
fn record(out: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    assert!(
        out.read_line(&mut line).unwrap() > 0,
        "the tracker ended early"
    );
    serde_json::from_str(&line).unwrap()
}

/// The next delta, skipping other records.
fn delta(out: &mut BufReader<ChildStdout>) -> Value {
    loop {
        let r = record(out);
        if r["type"] == "delta" {
            return r;
        }
    }
}

fn tracker(pid: &str, trigger: &str, extra: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut child = uffd_dirty()
        .args([
            "track",
            "--format=json",
            "--interval=20ms",
            "--trigger",
            trigger,
        ])
        .args(["--pid", pid])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert_eq!(record(&mut out)["type"], "start");
    (child, out)
}

/// No harvest comes without a trigger, even after many intervals.
fn quiet_for(child: &mut Child, out: &mut BufReader<ChildStdout>, wait: Duration) {
    // The stream is read only after the wait: a delta printed meanwhile is there to read.
    std::thread::sleep(wait);
    assert!(child.try_wait().unwrap().is_none(), "the tracker ended");
    let fd = std::os::fd::AsRawFd::as_raw_fd(out.get_ref());
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    assert!(
        ready == 0 && out.buffer().is_empty(),
        "a harvest came untriggered"
    );
}

#[test]
fn a_harvest_per_line_on_stdin_and_the_end_of_input_ends() {
    if !kernel_can_track() {
        return;
    }
    let sleeper = Sleeper::new();
    let (mut child, mut out) = tracker(&sleeper.pid(), "stdin", &[]);
    quiet_for(&mut child, &mut out, Duration::from_millis(300));
    let mut stdin = child.stdin.take().unwrap();
    for seq in 1..=3 {
        stdin.write_all(b"go\n").unwrap();
        assert_eq!(delta(&mut out)["seq"], seq);
        quiet_for(&mut child, &mut out, Duration::from_millis(100));
    }
    // Two lines at once: two harvests; then the end of the input ends tracking.
    stdin.write_all(b"a\nb\n").unwrap();
    assert_eq!(delta(&mut out)["seq"], 4);
    assert_eq!(delta(&mut out)["seq"], 5);
    drop(stdin);
    let t0 = Instant::now();
    let end = loop {
        let r = record(&mut out);
        if r["type"] == "end" {
            break r;
        }
        assert_ne!(r["type"], "delta", "a harvest after the input ended: {r}");
    };
    assert_eq!(end["reason"], "input-closed", "{end}");
    assert_eq!(end["deltas"], 5, "{end}");
    assert!(child.wait().unwrap().success());
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_harvest_per_sigusr1() {
    if !kernel_can_track() {
        return;
    }
    let sleeper = Sleeper::new();
    let (mut child, mut out) = tracker(&sleeper.pid(), "sigusr1", &["--count", "3"]);
    quiet_for(&mut child, &mut out, Duration::from_millis(300));
    for seq in 1..=3 {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
        assert_eq!(delta(&mut out)["seq"], seq);
        if seq < 3 {
            quiet_for(&mut child, &mut out, Duration::from_millis(100));
        }
    }
    let end = record(&mut out);
    assert_eq!(
        (end["type"].as_str(), end["reason"].as_str()),
        (Some("end"), Some("count"))
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn stdin_triggers_are_refused_for_a_launched_command() {
    let out = uffd_dirty()
        .args(["track", "--trigger", "stdin", "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--trigger sigusr1") && err.lines().count() == 1,
        "{err}"
    );
}
