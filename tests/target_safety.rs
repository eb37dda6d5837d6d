use std::time::{Duration, Instant};

use crate::common::*;
use crate::ground_truth::run_against_writer;

#[test]
fn target_blocked_in_read_sees_no_eintr() {
    if !kernel_can_track() {
        return;
    }
    let run = run_against_writer(&["--wait=stdin", "--bursts=10"], &[], None, false);
    assert_eq!(run.wait["eintr"], false);
}

#[test]
fn target_in_nanosleep_keeps_its_sleep() {
    if !kernel_can_track() {
        return;
    }
    let run = run_against_writer(
        &["--wait=nanosleep", "--sleep=700ms", "--bursts=10"],
        &[],
        None,
        false,
    );
    assert_eq!(run.wait["eintr"], false);
    let waited_ms = run.wait["waited_us"].as_u64().unwrap() as f64 / 1000.0;
    eprintln!("nanosleep(700ms) took {waited_ms:.2} ms with an attach in the middle");
    assert!(
        (700.0..760.0).contains(&waited_ms),
        "the sleep took {waited_ms} ms instead of 700"
    );
}

#[test]
fn epoll_thread_is_left_alone_and_free_thread_is_borrowed() {
    if !kernel_can_track() {
        return;
    }
    let run = run_against_writer(&["--wait=epoll", "--bursts=10"], &[], None, false);
    assert_eq!(run.wait["eintr"], false, "epoll_wait returned EINTR");
}

#[test]
fn lone_thread_in_untimed_epoll_wait_is_rewound_without_eintr() {
    if !kernel_can_track() {
        return;
    }
    // No other thread to borrow: epoll_wait(-1) returns EINTR at the stop, and is run again.
    let run = run_against_writer(&["--wait=epoll-only", "--bursts=10"], &[], None, false);
    assert_eq!(run.wait["eintr"], false, "epoll_wait returned EINTR");
}

#[test]
fn borrowed_thread_exiting_right_after_attach() {
    if !kernel_can_track() {
        return;
    }
    // The spinning thread is the one borrowed (it runs; the main thread sleeps in read()),
    // and it exits 300 ms later: tracking goes on through the other threads.
    run_against_writer(
        &[
            "--wait=stdin",
            "--spinner=300ms",
            "--bursts=20",
            "--threads=2",
        ],
        &[],
        None,
        false,
    );
}

#[test]
fn target_survives_tracker_sigkill() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let mut writer = Writer::spawn(
        dir.path(),
        &["--wait=stdin", "--hold", "--bursts=80", "--gap=5ms"],
        None,
    );
    let pid = writer.pid.to_string();
    let mut tracker = Tracker::spawn(&["--pid", &pid, "--interval", "20ms"], None);
    writer.go();
    tracker.wait_deltas(3);
    tracker.signal(libc::SIGKILL);
    let _ = tracker.finish();
    writer.wait_done();
    assert!(
        !has_userfaultfd(writer.pid),
        "the target holds a userfaultfd after the tracker died"
    );
    assert_eq!(tracer_pid(writer.pid), 0);
    let wpid = writer.pid;
    let (status, truth) = writer.finish();
    assert!(
        status.success(),
        "writer {wpid} exit {status:?} after the tracker was killed: {}",
        truth.wait
    );
}

#[test]
fn tracking_ends_cleanly_when_target_exits() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let mut writer = Writer::spawn(
        dir.path(),
        &["--wait=stdin", "--bursts=20", "--gap=5ms"],
        None,
    );
    let pid = writer.pid.to_string();
    let tracker = Tracker::spawn(&["--pid", &pid, "--interval", "20ms"], None);
    writer.go();
    let (status, records) = tracker.finish();
    assert!(status.success(), "tracker exit {status:?}");
    let end = records.last().unwrap();
    assert_eq!(end["type"], "end", "{end}");
    assert_eq!(end["reason"], "target-exited");
    assert!(
        !end.as_object().unwrap().contains_key("exit_status"),
        "--pid mode reports no exit status"
    );
    assert!(wait_until(Duration::from_secs(5), || writer
        .child
        .try_wait()
        .unwrap()
        .is_some()));
}

#[test]
fn sigint_ends_a_long_interval_at_once() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let mut writer = Writer::spawn(dir.path(), &["--wait=stdin"], None);
    let pid = writer.pid.to_string();
    // The first harvest is a minute away: the wait must end on the signal, not on time.
    let tracker = Tracker::spawn(&["--pid", &pid, "--interval", "60s"], None);
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    tracker.signal(libc::SIGINT);
    let (status, records) = tracker.finish();
    let took = signalled.elapsed();
    assert!(status.success(), "tracker exit {status:?}");
    assert_eq!(records.last().unwrap()["reason"], "signal");
    assert!(
        took < Duration::from_secs(5),
        "the tracker took {took:?} to stop"
    );
    writer.go();
    writer.finish();
}

#[test]
fn a_second_sigint_exits_at_once_with_130() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let mut writer = Writer::spawn(
        dir.path(),
        &["--wait=stdin", "--hold", "--pages=4096", "--bursts=5"],
        None,
    );
    // A reader that never reads: the bitmaps fill the pipe in a few hundred deltas and the
    // tracker blocks writing, so the first SIGINT cannot end it (it waits to finish the line).
    let mut tracker = uffd_dirty()
        .args(["track", "--format=json", "--json-bitmap", "--interval=2ms"])
        .args(["--pid", &writer.pid.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tpid = tracker.id() as i32;
    let in_write = || {
        std::fs::read_to_string(format!("/proc/{tpid}/syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some("1"))
    };
    // In write twice, 100 ms apart: blocked, not caught in one of its brief writes.
    let blocked_in_write = || {
        in_write() && {
            std::thread::sleep(Duration::from_millis(100));
            in_write()
        }
    };
    assert!(
        wait_until(Duration::from_secs(20), blocked_in_write),
        "the tracker never blocked writing to the full pipe"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(tpid, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        tracker.try_wait().unwrap().is_none(),
        "one SIGINT ended a tracker blocked in write"
    );
    // SAFETY: as above.
    unsafe { libc::kill(tpid, libc::SIGINT) };
    let ended = wait_until(Duration::from_secs(2), || {
        tracker.try_wait().unwrap().is_some()
    });
    assert!(ended, "the second SIGINT did not end the tracker");
    assert_eq!(tracker.wait().unwrap().code(), Some(130));
    assert!(!has_userfaultfd(writer.pid));
    assert_eq!(tracer_pid(writer.pid), 0);
    writer.go();
    writer.wait_done();
    let (status, _) = writer.finish();
    assert!(status.success(), "the writer's memory changed: {status}");
}
