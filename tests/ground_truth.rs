use serde_json::Value;

use crate::common::*;

pub struct Run {
    pub verdict: Verdict,
    pub records: Vec<Value>,
    pub wait: Value,
    pub outside: u64,
    /// What the writer wrote, and where its region starts.
    pub writes: Vec<PageWrite>,
    pub base: u64,
}

/// Attach to a writer waiting on stdin, release it, stop the tracker with SIGINT once the
/// writer is done, and compare. Asserts zero lost and zero unexplained pages.
pub fn run_against_writer(
    writer_args: &[&str],
    track_args: &[&str],
    user: Option<&str>,
    use_range: bool,
) -> Run {
    let dir = scratch();
    let mut args = vec!["--hold"];
    args.extend_from_slice(writer_args);
    if !args.iter().any(|a| a.starts_with("--wait")) {
        args.push("--wait=stdin");
    }
    let mut writer = Writer::spawn(dir.path(), &args, user);
    let (lo, hi) = writer.span();
    let pid = writer.pid.to_string();
    let range = format!("{lo:#x}-{hi:#x}");
    let mut targs = vec!["--pid", &pid, "--interval", "20ms"];
    if use_range {
        targs.extend(["--range", &range]);
    }
    targs.extend_from_slice(track_args);
    let mut tracker = Tracker::spawn(&targs, user);
    assert!(
        !has_userfaultfd(writer.pid),
        "the target was left holding a userfaultfd"
    );
    assert_eq!(
        tracer_pid(writer.pid),
        0,
        "the target is still traced after attach"
    );
    if args
        .iter()
        .any(|a| ["--wait=stdin", "--wait=epoll", "--wait=epoll-only"].contains(a))
    {
        writer.go();
    }
    writer.wait_done();
    tracker.wait_deltas(1);
    tracker.signal(libc::SIGINT);
    let (status, records) = tracker.finish();
    assert!(status.success(), "tracker exit: {status:?}");
    let end = records.last().unwrap();
    assert_eq!(end["type"], "end");
    assert_eq!(end["reason"], "signal");
    let (wstatus, truth) = writer.finish();
    assert!(
        wstatus.success(),
        "writer exit {wstatus:?} (3: EINTR, 4: memory changed): {}",
        truth.wait
    );
    let (start_ns, deltas) = deltas_in(&records, lo, (hi - lo) / 4096);
    let verdict = compare(&truth, start_ns, &deltas);
    let outside = deltas.iter().map(|d| d.outside).sum();
    eprintln!(
        "{} writes, {} deltas, {} page reports in the region ({} repeated across two deltas), {} outside it",
        verdict.writes,
        deltas.len(),
        verdict.reports,
        verdict.repeated,
        outside
    );
    assert!(
        verdict.lost.is_empty(),
        "LOST WRITES: {:?}",
        &verdict.lost[..verdict.lost.len().min(20)]
    );
    assert!(
        verdict.unexplained.is_empty(),
        "pages reported but never written: {:?}",
        verdict.unexplained
    );
    let end_total: u64 = records
        .iter()
        .filter(|r| r["type"] == "delta")
        .map(|r| r["dirty_pages"].as_u64().unwrap())
        .sum();
    assert_eq!(end["dirty_pages_total"].as_u64().unwrap(), end_total);
    assert_eq!(end["deltas"].as_u64().unwrap() as usize, deltas.len());
    Run {
        verdict,
        records,
        wait: truth.wait,
        outside,
        writes: truth.writes,
        base: lo,
    }
}

#[test]
fn single_thread_every_write_reported_none_invented() {
    if !kernel_can_track() {
        return;
    }
    // Pages 0..100 written and 100..200 only read before attach: never reported unless
    // written again; the rest never touched before attach.
    let run = run_against_writer(
        &[
            "--pages=1024",
            "--bursts=60",
            "--burst-pages=24",
            "--gap=3ms",
            "--pre-write=100",
            "--pre-read=100",
        ],
        &[],
        None,
        false,
    );
    assert!(run.verdict.writes > 1000);
    let start = &run.records[0];
    assert_eq!(start["version"], 1);
    assert_eq!(start["method"], "pagemap-scan");
    assert_eq!(start["page_size"], 4096);
}

#[test]
fn eight_threads_writing_concurrently() {
    if !kernel_can_track() {
        return;
    }
    run_against_writer(
        &[
            "--pages=4096",
            "--threads=8",
            "--bursts=40",
            "--burst-pages=16",
            "--gap=2ms",
        ],
        &[],
        None,
        false,
    );
}

#[test]
fn range_limits_what_is_tracked_and_reported() {
    if !kernel_can_track() {
        return;
    }
    let run = run_against_writer(
        &["--pages=512", "--bursts=30", "--burst-pages=8"],
        &[],
        None,
        true,
    );
    assert_eq!(run.outside, 0, "pages outside --range were reported");
    let ranges = run.records[0]["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 1, "one tracked range: {ranges:?}");
    assert_eq!(ranges[0]["pages"], 512);
}

#[test]
fn unprivileged_user_tracks_own_process() {
    if !kernel_can_track() {
        return;
    }
    if !is_root() {
        skipped("switching to user nobody needs root");
        return;
    }
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        skipped("setpriv (util-linux) is not installed");
        return;
    }
    let probe = std::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            BIN,
            "--version",
        ])
        .output()
        .unwrap();
    if !probe.status.success() {
        skipped(format!(
            "user nobody cannot execute {BIN} (a parent directory is not world-executable)"
        ));
        return;
    }
    run_against_writer(
        &["--pages=1024", "--bursts=40", "--burst-pages=16"],
        &[],
        Some("nobody"),
        false,
    );
}

#[test]
fn arming_with_uffdio_writeprotect_is_exact_too() {
    if !kernel_can_track() {
        return;
    }
    // The path kernels without the PMD-hole fix take.
    let run = run_against_writer(
        &[
            "--pages=1024",
            "--bursts=40",
            "--burst-pages=16",
            "--pre-write=200",
            "--pre-read=100",
        ],
        &["--arm=writeprotect"],
        None,
        false,
    );
    assert_eq!(run.records[0]["arm_method"], "writeprotect");
}

#[test]
fn pagemap_read_method_is_exact_too() {
    if !kernel_can_track() {
        return;
    }
    let run = run_against_writer(
        &[
            "--pages=1024",
            "--threads=4",
            "--bursts=40",
            "--burst-pages=16",
            "--pre-write=100",
            "--pre-read=100",
        ],
        &["--method=pagemap-read"],
        None,
        false,
    );
    assert_eq!(run.records[0]["method"], "pagemap-read");
}
