use std::process::{Command, Stdio};

use crate::common::*;

/// Run `uffd-dirty ARGS` and return (exit code, stderr), asserting a one-line error.
fn fails(args: &[&str]) -> (i32, String) {
    let out = uffd_dirty().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        out.stdout.is_empty(),
        "{args:?} wrote to stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.code().unwrap_or(-1), stderr)
}

fn one_line(stderr: &str) {
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("uffd-dirty: "), "{stderr}");
}

/// A process that stays put while a test tries to attach, checked untouched afterwards.
struct Victim(std::process::Child);

impl Victim {
    fn sleep() -> Victim {
        let v = Victim(
            Command::new("sleep")
                .arg("30")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        assert!(
            wait_until(std::time::Duration::from_secs(5), || v.state() == 'S'),
            "sleep never slept"
        );
        v
    }
    fn state(&self) -> char {
        read_status(&format!("/proc/{}/status", self.pid())).map_or('?', |s| s.state)
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    fn assert_untouched(&mut self) {
        assert!(self.0.try_wait().unwrap().is_none(), "the target died");
        assert!(
            !has_userfaultfd(self.pid()),
            "the target holds a userfaultfd"
        );
        assert_eq!(self.state(), 'S', "the target is not sleeping as before");
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn nonexistent_pid() {
    // PIDs above pid_max never exist.
    let max: i64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (code, err) = fails(&["track", "--pid", &(max + 1).to_string()]);
    one_line(&err);
    assert_eq!(code, 2);
    assert!(err.contains("no process with PID"), "{err}");
}

#[test]
fn kernel_thread() {
    if !kernel_can_track() {
        return;
    }
    let (code, err) = fails(&["track", "--pid", "2"]);
    one_line(&err);
    assert_eq!(code, 2);
    assert!(err.contains("kernel thread"), "{err}");
}

#[test]
fn zombie() {
    if !kernel_can_track() {
        return;
    }
    // The short sleep exits after its parent has exec'ed into `sleep 30`, which never reaps it.
    let mut sh = Command::new("sh")
        .args(["-c", "sleep 0.2 & echo $!; exec sleep 30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sh.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let zpid: i32 = line.trim().parse().unwrap();
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        read_status(&format!("/proc/{zpid}/status")).is_ok_and(|s| s.state == 'Z')
    }));
    let (code, err) = fails(&["track", "--pid", &zpid.to_string()]);
    one_line(&err);
    assert_eq!(code, 2);
    assert!(err.contains("zombie"), "{err}");
    let _ = sh.kill();
    let _ = sh.wait();
}

#[test]
fn own_pid() {
    let out = Command::new("sh")
        .args(["-c", &format!("exec {BIN} track --pid $$")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    one_line(&err);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("uffd-dirty itself"), "{err}");
}

#[test]
fn target_already_traced() {
    if !kernel_can_track() {
        return;
    }
    // This test thread becomes the victim's tracer.
    let mut victim = Victim::sleep();
    let pid = victim.pid();
    // SAFETY: seizing our own child; no memory is passed.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
    assert_eq!(r, 0, "PTRACE_SEIZE: {}", std::io::Error::last_os_error());
    let (code, err) = fails(&["track", "--pid", &pid.to_string()]);
    one_line(&err);
    assert_ne!(code, 0);
    assert!(err.contains("already traced by PID"), "{err}");
    assert!(!has_userfaultfd(pid));
    // SAFETY: gettid has no preconditions.
    assert_eq!(
        tracer_pid(pid),
        unsafe { libc::gettid() },
        "our own trace must be intact"
    );
    victim.assert_untouched();
}

#[test]
fn bad_ranges() {
    if !kernel_can_track() {
        return;
    }
    let mut victim = Victim::sleep();
    let pid = victim.pid().to_string();
    for (range, expect) in [
        ("0x1001-0x3000", "not page-aligned"),
        ("0x3000-0x1000", "must be below"),
        ("nonsense", "START-END"),
    ] {
        let out = uffd_dirty()
            .args(["track", "--pid", &pid, "--range", range])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{range}: {err}");
        assert!(err.contains(expect), "{range}: {err}");
    }
    let (code, err) = fails(&["track", "--pid", &pid, "--range", "0x10000-0x20000"]);
    one_line(&err);
    assert_eq!(code, 2);
    assert!(err.contains("holds no trackable mapping"), "{err}");
    victim.assert_untouched();
}

#[test]
fn soft_dirty_without_kernel_support_is_a_clear_error() {
    if soft_dirty_works() {
        skipped("this kernel has soft-dirty (the VM lane tests the method itself)");
        return;
    }
    let mut victim = Victim::sleep();
    let (code, err) = fails(&[
        "track",
        "--method=soft-dirty",
        "--pid",
        &victim.pid().to_string(),
    ]);
    one_line(&err);
    assert_eq!(code, 69);
    assert!(err.contains("CONFIG_MEM_SOFT_DIRTY"), "{err}");
    victim.assert_untouched();
}

#[test]
fn absurd_durations_are_refused_before_attaching() {
    let mut victim = Victim::sleep();
    let pid = victim.pid().to_string();
    let huge = "584542046090y";
    for args in [
        vec!["track", "--pid", &pid, "-f", "json", "--interval", huge],
        vec!["track", "--pid", &pid, "-f", "json", "--interval", "0ms"],
        vec!["track", "--pid", &pid, "-f", "json", "--interval", "-1s"],
        vec!["track", "--pid", &pid, "-f", "json", "--duration", "0s"],
        vec!["track", "--pid", &pid, "-f", "json", "--count", "0"],
        vec!["compare", "--pid", &pid, "-f", "json", "--interval", huge],
        vec!["demo", "-f", "json", "--interval", huge],
        vec!["bench", "--run-time", huge],
    ] {
        // `fails` checks that stdout is empty: no start record.
        let (code, err) = fails(&args);
        one_line(&err);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains("give at"), "{args:?}: no fix named: {err}");
    }
    victim.assert_untouched();
}

#[test]
fn a_duration_past_a_century_runs_until_stopped() {
    if !kernel_can_track() {
        return;
    }
    let out = uffd_dirty()
        .args([
            "track",
            "-f",
            "json",
            "--interval=10ms",
            "--count=2",
            "--duration=584542046090y",
            "--",
            "sleep",
            "5",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(str::to_string)
        .unwrap_or_default();
    assert!(last.contains("\"reason\":\"count\""), "{last}");
}

/// An attach helper that is missing, or is not this version's, is refused before it can
/// touch the target, in one line that says what to install.
#[test]
fn a_missing_or_foreign_attach_helper_is_refused() {
    if !kernel_can_track() {
        return;
    }
    let sleeper = Sleeper::new();
    for (helper, says) in [
        ("/nonexistent/uffd-dirty", "cannot start the attach helper"),
        ("/bin/true", "not a helper of this version"),
    ] {
        let out = uffd_dirty()
            .env("UFFD_DIRTY_ATTACH_HELPER", helper)
            .args(["track", "--pid", &sleeper.pid(), "-n", "1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        one_line(&err);
        assert_eq!(out.status.code(), Some(1), "{helper}: {err}");
        assert!(
            err.contains(says) && err.contains("install uffd-dirty"),
            "{helper}: {err}"
        );
        let pid = sleeper.0.id() as i32;
        assert!(
            !has_userfaultfd(pid) && tracer_pid(pid) == 0,
            "{helper}: target touched"
        );
    }
}

/// A second tracker on the same process: refused, naming the tracker already there and what
/// to do, in one line; the first goes on, and the target ends untouched.
#[test]
fn a_second_tracker_names_the_first() {
    if !kernel_can_track() {
        return;
    }
    let sleeper = Sleeper::new();
    let pid = sleeper.pid();
    let mut first = Tracker::spawn(&["--pid", &pid, "--interval=20ms"], None);
    first.wait_deltas(1);
    let out = uffd_dirty()
        .args(["track", "--pid", &pid, "-n", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    one_line(&err);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "uffd-dirty is already tracking PID {pid} (PID {})",
            first.child.id()
        )),
        "{err}"
    );
    first.wait_deltas(3);
    first.signal(libc::SIGINT);
    let (status, _) = first.finish();
    assert!(status.success(), "the first tracker: {status:?}");
    let p = sleeper.0.id() as i32;
    assert!(!has_userfaultfd(p) && tracer_pid(p) == 0, "target touched");
}

/// A program that makes and registers a userfaultfd of its own after the tracker attached:
/// its registration over tracked memory fails with EBUSY (the kernel allows one userfaultfd
/// per range), over memory left out of the tracker's scope it works; the tracker warns once.
#[test]
fn a_program_registering_its_own_userfaultfd_while_tracked() {
    if !kernel_can_track() {
        return;
    }
    let Some(exe) = c_build("own_userfaultfd", &[]) else {
        return;
    };
    let mut child = Command::new(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let addr = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    let (tracked, _elsewhere) = match line.split_whitespace().collect::<Vec<_>>()[..] {
        [a, b] => (addr(a), addr(b)),
        _ => panic!("{line}"),
    };
    let range = format!("{tracked:#x}-{:#x}", tracked + 2 * 4096);
    let mut cmd = uffd_dirty();
    cmd.args([
        "track",
        "--format=json",
        "--interval=20ms",
        "--range",
        &range,
    ])
    .args(["--pid", &child.id().to_string()])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let tracker = cmd.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"g").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    assert!(
        rest.contains(&format!("TRACKED {}", libc::EBUSY)),
        "its registration over tracked memory: {rest}"
    );
    assert!(
        rest.contains("ELSEWHERE 0"),
        "its registration elsewhere: {rest}"
    );
    let done = tracker.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{err}");
    assert!(
        err.contains("made a userfaultfd of its own while tracked"),
        "the tracker warns: {err}"
    );
}
