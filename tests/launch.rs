use crate::common::*;

#[test]
fn launched_command_is_tracked_from_its_first_instruction() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let log = dir.path().join("writer.log");
    let log_arg = log.display().to_string();
    let (status, records, stderr) = track_records(&[
        "--format=json",
        "--interval=20ms",
        "--",
        BIN,
        "writer",
        "--pages=512",
        "--bursts=40",
        "--burst-pages=12",
        "--gap=3ms",
        "--linger=120ms",
        "--log",
        &log_arg,
    ]);
    assert!(status.success(), "exit {status:?}: {stderr}");
    let end = records.last().unwrap();
    assert_eq!(end["reason"], "target-exited");
    assert_eq!(end["exit_status"], 0);
    let truth = truth_from_log(&log);
    let base = hex(&truth.wait["base"]);
    let (start_ns, deltas) = deltas_in(&records, base, truth.wait["pages"].as_u64().unwrap());
    let v = compare(&truth, start_ns, &deltas);
    eprintln!(
        "{} writes, {} reports, {} repeated",
        v.writes, v.reports, v.repeated
    );
    if !v.lost.is_empty() {
        let dump =
            std::env::temp_dir().join(format!("uffd-dirty-lost-{}.ndjson", std::process::id()));
        let text: String = records.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&dump, text).unwrap();
        std::fs::copy(&log, dump.with_extension("log")).unwrap();
        panic!("LOST: {:?} (records in {})", v.lost, dump.display());
    }
    assert!(v.unexplained.is_empty(), "unexplained: {:?}", v.unexplained);
}

#[test]
fn exit_status_of_the_command_is_passed_on() {
    if !kernel_can_track() {
        return;
    }
    let (status, records, stderr) = track_records(&[
        "--format=json",
        "--interval=10ms",
        "--",
        "sh",
        "-c",
        "sleep 0.1; exit 7",
    ]);
    assert_eq!(status.code(), Some(7), "stderr: {stderr}");
    let end = records.last().unwrap();
    assert_eq!(
        (end["reason"].as_str(), end["exit_status"].as_i64()),
        (Some("target-exited"), Some(7))
    );
}

#[test]
fn command_outliving_tracking_is_terminated() {
    if !kernel_can_track() {
        return;
    }
    let (status, records, stderr) = track_records(&[
        "--format=json",
        "--interval=20ms",
        "--count=3",
        "--",
        "sleep",
        "30",
    ]);
    assert!(status.success());
    assert!(
        stderr.contains("terminated the command"),
        "stderr: {stderr}"
    );
    assert_eq!(records.last().unwrap()["reason"], "count", "{records:?}");
}

#[test]
fn missing_command_is_a_clear_error() {
    let out = uffd_dirty()
        .args(["track", "--", "/nonexistent/program"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot run `/nonexistent/program`: No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn duration_ends_tracking_with_human_output() {
    if !kernel_can_track() {
        return;
    }
    let t0 = std::time::Instant::now();
    let out = uffd_dirty()
        .args([
            "track",
            "--interval=50ms",
            "--duration=300ms",
            "--",
            "sleep",
            "30",
        ])
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("tracking PID "), "{text}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("stopped (duration) after "),
        "{text}"
    );
    let deltas = lines.iter().filter(|l| l.contains(" MiB/s ")).count();
    assert!(
        (5..=6).contains(&deltas),
        "{deltas} delta lines in 300 ms at 50 ms:\n{text}"
    );
    assert!(took < std::time::Duration::from_secs(4), "took {took:?}");
}

#[test]
fn closed_stdout_ends_tracking_cleanly() {
    if !kernel_can_track() {
        return;
    }
    // `| head -n 3`: the tracker must end promptly with status 0 and terminate its command.
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("{BIN} track -f json --interval=10ms -- sleep 30 | head -n 3; echo \"status=${{PIPESTATUS:-0}}\"")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    let out = std::process::Command::new("bash")
        .args(["-c", &format!("{BIN} track -f json --interval=10ms -- sleep 30 | head -n 3 >/dev/null; echo ${{PIPESTATUS[0]}}")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exec_is_followed_into_the_new_program() {
    if !kernel_can_track() {
        return;
    }
    // Tracking starts in `sh`, which execs the writer: every write of the new image counts.
    let dir = scratch();
    let log = dir.path().join("writer.log");
    let script = format!(
        "sleep 0.1; exec {BIN} writer --pages=512 --bursts=40 --burst-pages=12 --gap=3ms --linger=120ms --log {}",
        log.display()
    );
    let (status, records, stderr) = track_records(&[
        "--format=json",
        "--interval=20ms",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(status.success(), "{status:?}: {stderr}");
    let exec = records
        .iter()
        .find(|r| r["type"] == "exec")
        .expect("an exec record");
    assert!(
        exec["exe"].as_str().unwrap().ends_with("uffd-dirty"),
        "{exec}"
    );
    assert_eq!(records.last().unwrap()["reason"], "target-exited");
    let truth = truth_from_log(&log);
    let base = hex(&truth.wait["base"]);
    let (start_ns, deltas) = deltas_in(&records, base, truth.wait["pages"].as_u64().unwrap());
    let v = compare(&truth, start_ns, &deltas);
    assert!(v.lost.is_empty(), "LOST after exec: {:?}", v.lost);
    assert!(v.unexplained.is_empty(), "unexplained: {:?}", v.unexplained);
}

#[test]
fn no_follow_exec_ends_with_reason_exec() {
    if !kernel_can_track() {
        return;
    }
    let (status, records, stderr) = track_records(&[
        "--format=json",
        "--interval=20ms",
        "--no-follow-exec",
        "--",
        "sh",
        "-c",
        "sleep 0.1; exec sleep 5",
    ]);
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(records.last().unwrap()["reason"], "exec", "{records:?}");
}

#[test]
fn a_fork_in_the_target_is_noted_once() {
    if !kernel_can_track() {
        return;
    }
    let (status, _, stderr) = track_records(&[
        "--format=json",
        "--interval=20ms",
        "--",
        "sh",
        "-c",
        "sleep 0.2 & sleep 0.2 & wait",
    ]);
    assert!(status.success());
    assert_eq!(
        stderr.matches("children are not tracked").count(),
        1,
        "{stderr}"
    );
}

/// The fds of this process, by number.
fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    fds
}

/// Launching through the library leaves no fd behind in the caller: run alone in a process of
/// its own (the other tests open fds concurrently), by the test below.
#[test]
#[ignore = "run alone, in a process of its own, by launch_leaves_no_fd_in_the_caller"]
fn launch_leaves_no_fd_in_the_caller_alone() {
    use uffd_dirty::{Target, TrackerBuilder};
    let before = open_fds();
    for argv in [&["true"][..], &["/nonexistent/program"][..]] {
        for _ in 0..3 {
            let target = Target::launch(argv).unwrap();
            match TrackerBuilder::new().attach(&target) {
                Ok(tracker) => {
                    drop(tracker);
                    assert_eq!(target.wait(), Some(0));
                }
                Err(e) => assert!(e.to_string().contains("cannot run"), "{e}"),
            }
        }
    }
    // And a launched command never attached to: killed before it runs.
    drop(Target::launch(["true"]).unwrap());
    assert_eq!(open_fds(), before, "fds before and after 7 launches");
}

#[test]
fn launch_leaves_no_fd_in_the_caller() {
    if !kernel_can_track() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "launch::launch_leaves_no_fd_in_the_caller_alone",
            "--ignored",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
