//! Targets under seccomp (issue 16): as root the filter is suspended for the injected calls
//! only (PTRACE_O_SUSPEND_SECCOMP), so a filter that would kill the target for calling
//! userfaultfd(), or refuse it, does neither, and every write is still reported; without
//! CAP_SYS_ADMIN the target is refused (exit 77) and left untouched.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use crate::common::*;

/// The seccomp writer under `mode`, ready (filter installed, waiting for the go on stdin),
/// as `user` if given; its log path.
fn writer(mode: &str, dir: &std::path::Path, user: Option<&str>) -> Option<(Child, String)> {
    let exe = c_build("seccomp_writer", &[])?;
    let log = dir.join(format!("{mode}.log")).display().to_string();
    let mut cmd = Command::new(&exe);
    cmd.args([mode, &log, "256", "60"]);
    let mut child = as_user(cmd, user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n", "{mode}: the writer did not get ready");
    Some((child, log))
}

/// Track the writer under `mode` from its go to its exit; hold the deltas against its log.
fn tracked_exactly(mode: &str) {
    if !kernel_can_track() {
        return;
    }
    if !is_root() {
        skipped("suspending a seccomp filter needs CAP_SYS_ADMIN: run the tests as root");
        return;
    }
    let dir = scratch();
    let Some((mut child, log)) = writer(mode, dir.path(), None) else {
        return;
    };
    let pid = child.id().to_string();
    let mut tracker = Tracker::spawn(&["--pid", &pid, "--interval=20ms"], None);
    tracker.wait_deltas(1);
    child.stdin.take().unwrap().write_all(b"g").unwrap();
    let status = child.wait().unwrap();
    let (tracked, records) = tracker.finish();
    assert!(
        status.success(),
        "{mode}: the writer ended {status:?} (killed by its filter?)"
    );
    assert!(tracked.success(), "{mode}: the tracker ended {tracked:?}");
    assert_eq!(records.last().unwrap()["reason"], "target-exited", "{mode}");
    let truth = truth_from_log(std::path::Path::new(&log));
    let base = hex(&truth.wait["base"]);
    let (start_ns, deltas) = deltas_in(&records, base, truth.wait["pages"].as_u64().unwrap());
    assert!(truth.writes.len() >= 400, "{mode}: the writer wrote");
    if mode == "strict" {
        // No clock in strict mode: every page written must be in some delta.
        let reported: std::collections::BTreeSet<u64> = deltas
            .iter()
            .flat_map(|d| d.pages.iter().copied())
            .collect();
        let lost: Vec<u64> = truth
            .writes
            .iter()
            .map(|w| w.page)
            .filter(|p| !reported.contains(p))
            .collect();
        assert!(lost.is_empty(), "{mode}: LOST pages {lost:?}");
        return;
    }
    let v = compare(&truth, start_ns, &deltas);
    assert!(v.lost.is_empty(), "{mode}: LOST {:?}", v.lost);
    assert!(
        v.unexplained.is_empty(),
        "{mode}: unexplained {:?}",
        v.unexplained
    );
}

#[test]
fn a_filter_that_kills_for_userfaultfd_does_not_see_the_injection() {
    tracked_exactly("kill");
}

#[test]
fn a_filter_that_refuses_userfaultfd_like_dockers_does_not_see_the_injection() {
    tracked_exactly("eperm");
}

#[test]
fn an_allow_all_filter_is_tracked() {
    tracked_exactly("allow");
}

#[test]
fn a_strict_mode_target_is_tracked() {
    tracked_exactly("strict");
}

/// Without CAP_SYS_ADMIN (as user nobody, target and tracker alike): refused with exit 77, a
/// message that says what would work, and the target untouched.
#[test]
fn without_cap_sys_admin_a_filtered_target_is_refused_untouched() {
    if !kernel_can_track() {
        return;
    }
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        skipped("switching to user nobody needs root and setpriv");
        return;
    }
    let dir = scratch();
    for mode in ["kill", "eperm", "allow", "strict"] {
        let Some((mut child, _)) = writer(mode, dir.path(), Some("nobody")) else {
            return;
        };
        let pid = child.id() as i32;
        // The writer runs as nobody under setpriv, which execs it: the same PID.
        let mut cmd = uffd_dirty();
        cmd.args(["track", "--pid", &pid.to_string(), "-n", "1"]);
        let out = as_user(cmd, Some("nobody")).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(77), "{mode}: {err}");
        assert!(
            err.contains("CAP_SYS_ADMIN") && err.lines().count() == 1,
            "{mode}: {err}"
        );
        assert!(
            !has_userfaultfd(pid) && tracer_pid(pid) == 0,
            "{mode}: target touched"
        );
        // Still itself: it runs its bursts and exits 0.
        child.stdin.take().unwrap().write_all(b"g").unwrap();
        assert!(
            child.wait().unwrap().success(),
            "{mode}: the writer did not finish"
        );
    }
}

/// A non-dumpable target (as a setuid program is): tracked exactly as root (CAP_SYS_PTRACE),
/// refused with exit 77 and untouched as its own unprivileged user.
#[test]
fn a_non_dumpable_target_is_tracked_as_root() {
    tracked_exactly("nodump");
}

#[test]
fn a_non_dumpable_target_is_refused_without_cap_sys_ptrace() {
    if !kernel_can_track() {
        return;
    }
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        skipped("switching to user nobody needs root and setpriv");
        return;
    }
    let dir = scratch();
    let Some((mut child, _)) = writer("nodump", dir.path(), Some("nobody")) else {
        return;
    };
    let pid = child.id() as i32;
    let mut cmd = uffd_dirty();
    cmd.args(["track", "--pid", &pid.to_string(), "-n", "1"]);
    let out = as_user(cmd, Some("nobody")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        err.contains("dumpable") && err.lines().count() == 1,
        "{err}"
    );
    assert!(
        !has_userfaultfd(pid) && tracer_pid(pid) == 0,
        "target touched"
    );
    child.stdin.take().unwrap().write_all(b"g").unwrap();
    assert!(child.wait().unwrap().success(), "the writer did not finish");
}

/// A setuid-root program started by an unprivileged user (not dumpable, another user's
/// credentials): that user is refused with 77 and the program is untouched; root tracks it
/// exactly.
#[test]
fn a_setuid_program_is_tracked_by_root_and_refused_to_its_user() {
    if !kernel_can_track() {
        return;
    }
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        skipped("a setuid program and user nobody need root and setpriv");
        return;
    }
    let Some(exe) = c_build("seccomp_writer", &[]) else {
        return;
    };
    let dir = scratch();
    let suid = dir.path().join("suid_writer");
    std::fs::copy(&exe, &suid).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let log = dir.path().join("suid.log").display().to_string();
    let mut cmd = Command::new(&suid);
    cmd.args(["none", &log, "256", "60"]);
    let mut child = as_user(cmd, Some("nobody"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let pid = child.id() as i32;
    // Its user may not trace it.
    let mut cmd = uffd_dirty();
    cmd.args(["track", "--pid", &pid.to_string(), "-n", "1"]);
    let out = as_user(cmd, Some("nobody")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        !has_userfaultfd(pid) && tracer_pid(pid) == 0,
        "target touched"
    );
    // Root may.
    let mut tracker = Tracker::spawn(&["--pid", &pid.to_string(), "--interval=20ms"], None);
    tracker.wait_deltas(1);
    child.stdin.take().unwrap().write_all(b"g").unwrap();
    assert!(child.wait().unwrap().success());
    let (status, records) = tracker.finish();
    assert!(status.success());
    let truth = truth_from_log(std::path::Path::new(&log));
    let base = hex(&truth.wait["base"]);
    let (start_ns, deltas) = deltas_in(&records, base, truth.wait["pages"].as_u64().unwrap());
    let v = compare(&truth, start_ns, &deltas);
    assert!(v.writes >= 400);
    assert!(v.lost.is_empty(), "LOST {:?}", v.lost);
    assert!(v.unexplained.is_empty(), "unexplained {:?}", v.unexplained);
}
