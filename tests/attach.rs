//! Attaching under adverse conditions: threads that keep changing state, a flood of signals,
//! a target that exits while it is being seized.

use crate::common::*;
use std::process::Stdio;

/// Attach and harvest once; the exit status and stderr.
fn attach_once(pid: i32) -> (std::process::ExitStatus, String) {
    let out = uffd_dirty()
        .args(["track", "--pid", &pid.to_string()])
        .args(["--count", "1", "--interval", "1ms", "--format", "json"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn attach_to_many_busy_threads_never_panics() {
    if !kernel_can_track() {
        return;
    }
    let Some(prog) = c_build("busy_threads", &["-pthread"]) else {
        return;
    };
    // Ranking threads by their /proc state while they change it once made the sort panic
    // ("does not correctly implement a total order") in 33 of 40 attaches.
    let target = CProgram::spawn(&prog, &["48"]);
    let mut failed = Vec::new();
    for i in 0..30 {
        let (status, stderr) = attach_once(target.pid);
        if !status.success() {
            failed.push(format!("attach {i}: {status}: {stderr}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(tracer_pid(target.pid), 0);
    assert!(!has_userfaultfd(target.pid));
}

#[test]
fn attach_under_a_signal_flood() {
    if !kernel_can_track() {
        return;
    }
    let Some(prog) = c_build("signal_flood", &[]) else {
        return;
    };
    // A signal-delivery stop clears a pending PTRACE_INTERRUPT ("any trap clears pending STOP
    // trap", kernel/signal.c): unless asked again, the thread runs on from signal to signal.
    let mut failed = Vec::new();
    for mode in ["spin", "sleep"] {
        let target = CProgram::spawn(&prog, &[mode]);
        for i in 0..10 {
            let (status, stderr) = attach_once(target.pid);
            if !status.success() {
                failed.push(format!("{mode}, attach {i}: {status}: {stderr}"));
            }
        }
        assert_eq!(tracer_pid(target.pid), 0);
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn a_target_exiting_during_attach_is_reported_as_exited() {
    if !kernel_can_track() {
        return;
    }
    // A process whose threads are all exiting cannot be seized (EPERM): that is an exit, not
    // a permission problem (exit 77). Race a short-lived target many times: every failure
    // must say it exited, and none may claim a permission problem.
    let mut exited = 0;
    for i in 0..60 {
        // spawn() returns after the exec: the only race left is with the exit.
        let mut child = std::process::Command::new("sleep")
            .arg(format!("0.0{}", i % 10))
            .spawn()
            .unwrap();
        let (status, stderr) = attach_once(child.id() as i32);
        let _ = child.wait();
        assert_ne!(
            status.code(),
            Some(77),
            "exit 77 for an exiting target: {stderr}"
        );
        assert_ne!(status.code(), Some(101), "panic: {stderr}");
        if !status.success() {
            assert!(
                stderr.contains("exited")
                    || stderr.contains("zombie")
                    || stderr.contains("no process"),
                "failure that does not say the target exited: {stderr}"
            );
            exited += 1;
        }
    }
    eprintln!("{exited} of 60 attaches met the target's exit");
}

#[test]
fn children_forked_during_attach_never_get_the_userfaultfd() {
    if !kernel_can_track() {
        return;
    }
    let Some(prog) = c_build("forker", &["-pthread"]) else {
        return;
    };
    // The userfaultfd must never sit in the target's fd table: a thread forking in between
    // would hand its child a copy, which keeps the target's memory registered (and
    // write-protected) after the tracker is gone.
    let mut target = CProgram::spawn(&prog, &[]);
    let mut failed = Vec::new();
    for i in 0..12 {
        let (status, stderr) = attach_once(target.pid);
        if !status.success() {
            failed.push(format!("attach {i}: {status}: {stderr}"));
        }
    }
    // Children live 50 ms: every one forked during an attach has looked by now.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let registered = std::fs::read_to_string(format!("/proc/{}/smaps", target.pid))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("VmFlags:") && l.split_whitespace().any(|f| f == "uw"))
        .count();
    let _ = target.child.kill();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut target.stdout, &mut rest).unwrap();
    let leaks = rest.lines().filter(|l| l.starts_with("leak")).count();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(
        leaks, 0,
        "{leaks} children of the target inherited a userfaultfd"
    );
    assert_eq!(
        registered, 0,
        "{registered} mappings of the target are still registered after the tracker exited"
    );
}
