//! Containers and namespaces (issue 16): a target in its own user, PID and mount namespaces,
//! tracked from the host by its host PID; and the tracker itself inside such namespaces, as
//! the container's unprivileged root, tracking a command of its own. Each held page for page
//! against the writer's ground truth.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::common::*;

/// `unshare` with a user namespace mapping us to root, a PID namespace and a /proc of its
/// own, or None (said) where this machine cannot make them.
fn unshare() -> Option<Command> {
    let probe = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--mount-proc",
            "true",
        ])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => {
            skipped(format!(
                "cannot make user and PID namespaces here: {other:?}"
            ));
            return None;
        }
    }
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--mount-proc",
        "--",
    ]);
    Some(cmd)
}

/// The first child of process `pid` (unshare --fork's command), waiting for it to appear.
fn first_child(pid: u32) -> i32 {
    let mut found = None;
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        found = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        found.is_some()
    }));
    found.unwrap()
}

#[test]
fn a_target_in_its_own_namespaces_is_tracked_from_the_host() {
    if !kernel_can_track() {
        return;
    }
    let Some(mut cmd) = unshare() else {
        return;
    };
    let Some(exe) = c_build("seccomp_writer", &[]) else {
        return;
    };
    let dir = scratch();
    let log = dir.path().join("ns.log");
    let mut ns = cmd
        .arg(&exe)
        .args(["none", log.to_str().unwrap(), "256", "60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(ns.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let host_pid = first_child(ns.id());
    let mut tracker = Tracker::spawn(&["--pid", &host_pid.to_string(), "--interval=20ms"], None);
    let start = tracker.start().clone();
    tracker.wait_deltas(1);
    ns.stdin.take().unwrap().write_all(b"g").unwrap();
    assert!(
        ns.wait().unwrap().success(),
        "the writer in the namespaces failed"
    );
    let (status, records) = tracker.finish();
    assert!(status.success(), "tracker: {status:?}");
    // The PID the user gave, and where the target sees itself: init of its namespace.
    assert_eq!(start["pid"], host_pid, "{start}");
    assert_eq!(start["pid_in_namespace"], 1, "{start}");
    let ours = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(start["pid_namespace"], ours.to_str().unwrap(), "{start}");
    // Mapping names as the target sees them: the same root here, so its program's path.
    assert!(
        start["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["mapping"] == exe.to_str().unwrap()),
        "{start}"
    );
    let truth = truth_from_log(&log);
    let base = hex(&truth.wait["base"]);
    let (start_ns, deltas) = deltas_in(&records, base, truth.wait["pages"].as_u64().unwrap());
    let v = compare(&truth, start_ns, &deltas);
    assert!(v.writes >= 400);
    assert!(v.lost.is_empty(), "LOST {:?}", v.lost);
    assert!(v.unexplained.is_empty(), "unexplained {:?}", v.unexplained);
}

#[test]
fn the_tracker_inside_a_container_tracks_its_own_command() {
    if !kernel_can_track() {
        return;
    }
    let Some(mut cmd) = unshare() else {
        return;
    };
    let dir = scratch();
    let log = dir.path().join("inside.log");
    let log_arg = log.display().to_string();
    let out = cmd
        .args([
            BIN,
            "track",
            "--format=json",
            "--interval=20ms",
            "--",
            BIN,
            "writer",
        ])
        .args([
            "--quiet",
            "--pages=256",
            "--bursts=40",
            "--burst-pages=8",
            "--gap=3ms",
        ])
        .args(["--linger=100ms", "--log", &log_arg])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "inside: {stderr}");
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Inside, the writer is a low PID of the container's own namespace.
    assert_eq!(
        records[0]["pid"], records[0]["pid_in_namespace"],
        "{}",
        records[0]
    );
    assert_eq!(records.last().unwrap()["reason"], "target-exited");
    let truth = truth_from_log(&log);
    let base = hex(&truth.wait["base"]);
    let (start_ns, deltas) = deltas_in(&records, base, truth.wait["pages"].as_u64().unwrap());
    let v = compare(&truth, start_ns, &deltas);
    assert!(v.writes >= 200);
    assert!(v.lost.is_empty(), "LOST {:?}", v.lost);
    assert!(v.unexplained.is_empty(), "unexplained {:?}", v.unexplained);
}

/// A target in a chroot: its mappings are named as the host sees them (paths under the
/// chroot directory), which a tracker outside can open; tracked exactly.
#[test]
fn a_chrooted_target_has_its_mappings_named_from_the_host() {
    if !kernel_can_track() {
        return;
    }
    if !is_root() {
        skipped("chroot needs root");
        return;
    }
    let dir = scratch();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let exe = root.join("writer");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/seccomp_writer.c");
    let built = Command::new("cc")
        .args(["-O1", "-static", "-o"])
        .arg(&exe)
        .arg(&src)
        .status();
    if !matches!(built, Ok(s) if s.success()) {
        skipped(format!(
            "cannot build a static C program (libc.a): {built:?}"
        ));
        return;
    }
    let mut child = Command::new("chroot")
        .arg(&root)
        .args(["/writer", "none", "/log", "256", "60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let pid = child.id().to_string();
    let mut tracker = Tracker::spawn(&["--pid", &pid, "--interval=20ms"], None);
    let start = tracker.start().clone();
    tracker.wait_deltas(1);
    child.stdin.take().unwrap().write_all(b"g").unwrap();
    assert!(child.wait().unwrap().success());
    let (status, records) = tracker.finish();
    assert!(status.success());
    let host_path = exe.canonicalize().unwrap();
    assert!(
        start["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["mapping"] == host_path.to_str().unwrap()),
        "the program's mapping named {}: {start}",
        host_path.display()
    );
    let truth = truth_from_log(&root.join("log"));
    let base = hex(&truth.wait["base"]);
    let (start_ns, deltas) = deltas_in(&records, base, truth.wait["pages"].as_u64().unwrap());
    let v = compare(&truth, start_ns, &deltas);
    assert!(v.writes >= 400);
    assert!(v.lost.is_empty(), "LOST {:?}", v.lost);
    assert!(v.unexplained.is_empty(), "unexplained {:?}", v.unexplained);
}

/// The tracker inside a container (user and PID namespaces, mapped root), attaching by PID to
/// another process of the same container.
#[test]
fn the_tracker_inside_a_container_attaches_to_a_sibling() {
    if !kernel_can_track() {
        return;
    }
    let Some(mut cmd) = unshare() else {
        return;
    };
    let dir = scratch();
    let log = dir.path().join("sibling.log");
    let fifo = dir.path().join("go");
    let script = format!(
        "mkfifo {fifo}; {BIN} writer --quiet --wait=stdin --pages=256 --bursts=40 --burst-pages=8 --gap=3ms --linger=100ms --log {log} < {fifo} & \
         W=$!; exec 3>{fifo}; \
         {BIN} track --pid $W --format=json --interval=20ms & T=$!; \
         sleep 0.5; echo g >&3; wait $T",
        fifo = fifo.display(),
        log = log.display(),
    );
    let out = cmd.args(["sh", "-c", &script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "inside: {stderr}");
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        records.last().unwrap()["reason"],
        "target-exited",
        "{stderr}"
    );
    let truth = truth_from_log(&log);
    let base = hex(&truth.wait["base"]);
    let (start_ns, deltas) = deltas_in(&records, base, truth.wait["pages"].as_u64().unwrap());
    let v = compare(&truth, start_ns, &deltas);
    assert!(v.writes >= 200);
    assert!(v.lost.is_empty(), "LOST {:?}", v.lost);
    assert!(v.unexplained.is_empty(), "unexplained {:?}", v.unexplained);
}
