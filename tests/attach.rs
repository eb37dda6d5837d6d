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

#[test]
fn a_target_in_a_child_pid_namespace_survives_attach() {
    if !kernel_can_track() {
        return;
    }
    if !is_root() {
        skipped("a PID namespace needs root (unshare --pid)");
        return;
    }
    // The transient thread's TID as clone returns it is the namespace's, not ours: used as
    // ours, the thread was never parked and ran the target's code (SIGSEGV).
    let mut ns = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
        .arg("sleep 1000 & echo ready; wait $!; echo status $?")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(ns.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    // The sleep, seen from here: a process named sleep whose parent is a descendant of ns.
    let sleep = (0..200)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            descendants(ns.id() as i32).into_iter().find(|&p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
        })
        .expect("the sleep in the namespace");
    let (status, stderr) = attach_once(sleep);
    let alive =
        read_status(&format!("/proc/{sleep}/status")).is_ok_and(|s| !matches!(s.state, 'Z' | 'X'));
    // SAFETY: kill(2) on the namespace's processes, which this test started.
    unsafe { libc::kill(sleep, libc::SIGKILL) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let _ = ns.wait();
    assert!(status.success(), "attach failed: {stderr}");
    assert!(alive, "the target died: {rest}");
    assert!(
        rest.contains("status 137"),
        "the sleep ended otherwise: {rest}"
    );
}

/// Every descendant of `pid`.
fn descendants(pid: i32) -> Vec<i32> {
    let mut all = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                all.push(c);
                todo.push(c);
            }
        }
    }
    all
}

#[test]
fn a_launch_refused_before_it_runs_ends_at_once() {
    if !kernel_can_track() {
        return;
    }
    // The command, killed while its helper still held it, was a ptrace zombie only the
    // helper could reap: the tracker waited for it forever.
    let started = std::time::Instant::now();
    let mut child = uffd_dirty()
        .args(["track", "--range", "0x1000-0x2000", "--", "sleep", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ended = wait_until(std::time::Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "the tracker hung for {:?}", started.elapsed());
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_sigstop_during_attach_is_not_lost() {
    if !kernel_can_track() {
        return;
    }
    let Some(prog) = c_build("blocker", &[]) else {
        return;
    };
    // SIGSTOP cannot be blocked: the transient thread may be the one to take it, and must
    // pass it on. A watcher stops the target the moment the thread exists.
    let mut stopped_during = 0;
    for _ in 0..10 {
        let target = CProgram::spawn(&prog, &["read"]);
        let pid = target.pid;
        let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let w = std::sync::Arc::clone(&watching);
        let watcher = std::thread::spawn(move || {
            while w.load(std::sync::atomic::Ordering::Relaxed) {
                let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
                    .map(|d| d.count())
                    .unwrap_or(0);
                if threads > 1 {
                    // SAFETY: kill(2) on the test's own target.
                    unsafe { libc::kill(pid, libc::SIGSTOP) };
                    return true;
                }
            }
            false
        });
        let (status, stderr) = attach_once(pid);
        watching.store(false, std::sync::atomic::Ordering::Relaxed);
        let sent = watcher.join().unwrap();
        if sent {
            stopped_during += 1;
            let state = wait_until(std::time::Duration::from_secs(2), || {
                read_status(&format!("/proc/{pid}/status")).is_ok_and(|s| s.state == 'T')
            });
            assert!(
                state,
                "the SIGSTOP sent during attach was lost ({status}: {stderr})"
            );
        }
        assert_eq!(tracer_pid(pid), 0);
        // SAFETY: kill(2) on the test's own target.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
    eprintln!("{stopped_during} of 10 attaches were hit by a SIGSTOP");
}
