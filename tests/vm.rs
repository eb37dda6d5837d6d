//! The VM lane: stock Debian kernels under QEMU (vm/run.sh), for what this machine's kernel
//! cannot show: soft-dirty (built without CONFIG_MEM_SOFT_DIRTY here) and a kernel too old for
//! async write-protect. Each method is held against the writer's ground truth inside the VM.
//! Set UFFD_DIRTY_SKIP_VM=1 to skip (it then says so); UFFD_DIRTY_STATIC_BIN names a prebuilt
//! static binary, else one is built into target/vm-static.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::common::*;

fn skip() -> bool {
    if std::env::var_os("UFFD_DIRTY_SKIP_VM").is_some() {
        skipped(
            "UFFD_DIRTY_SKIP_VM is set: the VM lane (soft-dirty, Debian 6.12 and 6.1) did not run",
        );
        return true;
    }
    false
}

/// A glibc-static build of uffd-dirty, for the initramfs.
fn static_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("UFFD_DIRTY_STATIC_BIN") {
            return PathBuf::from(p);
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target_dir = root.join("target/vm-static");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "--locked",
                "--bin",
                "uffd-dirty",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(&root)
            .status()
            .expect("running cargo for the static build");
        assert!(status.success(), "static build failed");
        target_dir.join("x86_64-unknown-linux-gnu/release/uffd-dirty")
    })
    .clone()
}

struct Run {
    track_status: i32,
    writer_status: i32,
    stderr: String,
    records: Vec<Value>,
    log: String,
}

/// What one boot produced: `uffd-dirty check` (JSON and exit status) and the runs by method.
struct Boot {
    check: Value,
    check_status: i32,
    runs: BTreeMap<String, Run>,
}

/// Boot `kernel` and run vm/tests/methods.sh for `methods`; `None` (said as SKIPPED) where
/// the lane cannot run on this host at all (vm/run.sh exit 77: no root to install QEMU, no apt).
fn run_methods(kernel: &str, methods: &[&str]) -> Option<Boot> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = static_binary();
    let dir = scratch();
    let script = dir.path().join("test.sh");
    let body = std::fs::read_to_string(root.join("vm/tests/methods.sh")).unwrap();
    // The script takes the methods as arguments: bake them in.
    std::fs::write(&script, format!("set -- {}\n{body}", methods.join(" "))).unwrap();
    let out = Command::new(root.join("vm/run.sh"))
        // The limit counts QEMU's CPU seconds (a busy host only slows the run); the wall
        // clock limit is for a guest that hangs idle.
        .args([
            "--kernel",
            kernel,
            "--timeout",
            "300",
            "--max-wall",
            "1500",
            "--bin",
        ])
        .arg(&bin)
        .arg("--")
        .arg(&script)
        .output()
        .expect("running vm/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let code = out.status.code().unwrap_or(-1);
    if code == 77 {
        skipped(format!("the VM lane ({kernel}): {}", stderr.trim()));
        return None;
    }
    assert!(
        code == 0 || code == 1,
        "vm/run.sh exited {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let mut runs = BTreeMap::new();
    let mut check = Value::Null;
    let mut check_status = -1;
    let mut section = String::new();
    let mut cur: Option<(String, Run)> = None;
    for line in stdout.lines() {
        if let Some(json) = line.strip_prefix("check-json: ") {
            check =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("check said {json:?}: {e}"));
            continue;
        }
        if let Some(code) = line.strip_prefix("check-status: ") {
            check_status = code.trim().parse().unwrap();
            continue;
        }
        if let Some(rest) = line.strip_prefix("=== ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                [m, "track-status", t, "writer-status", w] => {
                    if let Some((name, run)) = cur.take() {
                        runs.insert(name, run);
                    }
                    let run = Run {
                        track_status: t.parse().unwrap(),
                        writer_status: w.parse().unwrap(),
                        stderr: String::new(),
                        records: Vec::new(),
                        log: String::new(),
                    };
                    cur = Some((m.to_string(), run));
                }
                [_, what] => section = what.to_string(),
                _ => panic!("unexpected marker {line}"),
            }
            continue;
        }
        let Some((_, run)) = cur.as_mut() else {
            continue;
        };
        match section.as_str() {
            "track-stderr" => run.stderr += &format!("{line}\n"),
            "records" => {
                let record: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
                assert_schema(&record);
                run.records.push(record);
            }
            "log" => run.log += &format!("{line}\n"),
            _ => {}
        }
    }
    if let Some((name, run)) = cur.take() {
        runs.insert(name, run);
    }
    eprintln!("{kernel}: {}", stdout.lines().next().unwrap_or(""));
    Some(Boot {
        check,
        check_status,
        runs,
    })
}

/// Hold a run against its writer's log: no lost write, ever; false positives counted.
fn judge(kernel: &str, method: &str, run: &Run) -> Verdict {
    assert_eq!(
        run.track_status, 0,
        "{kernel} {method}: track failed: {}",
        run.stderr
    );
    assert_eq!(
        run.writer_status, 0,
        "{kernel} {method}: the writer noticed something (3: EINTR, 4: memory changed)"
    );
    assert_eq!(
        run.records[0]["method"], method,
        "{kernel} {method}: {}",
        run.stderr
    );
    assert_eq!(run.records.last().unwrap()["reason"], "signal");
    let truth = truth_from_text(&run.log);
    let base = hex(&truth.wait["base"]);
    let (start_ns, deltas) = deltas_in(&run.records, base, truth.wait["pages"].as_u64().unwrap());
    let v = compare(&truth, start_ns, &deltas);
    eprintln!(
        "{kernel} {method}: {} writes, {} reports in the region, {} unexplained (false positives), {} repeated",
        v.writes,
        v.reports,
        v.unexplained.len(),
        v.repeated
    );
    assert!(
        v.lost.is_empty(),
        "{kernel} {method}: LOST {:?}",
        &v.lost[..v.lost.len().min(10)]
    );
    v
}

/// A `compare` run seen from one side: its start, and one delta per interval holding what
/// that side reported (`both` plus its own `only_*` pages).
fn compare_side(run: &Run, only: &str) -> Run {
    let mut records = vec![run.records[0].clone()];
    for r in run.records.iter().filter(|r| r["type"] == "compare") {
        let ranges: Vec<Value> = r["both_ranges"]
            .as_array()
            .unwrap()
            .iter()
            .chain(r[only].as_array().unwrap())
            .cloned()
            .collect();
        let pages: u64 = ranges.iter().map(|x| x["pages"].as_u64().unwrap()).sum();
        records.push(
            serde_json::json!({"type": "delta", "time": r["time"], "scan_us": r["stopped_us"],
            "dirty_pages": pages, "ranges": ranges}),
        );
    }
    let total = run.records.last().unwrap();
    assert_eq!(total["type"], "compare-total");
    records.push(serde_json::json!({"type": "end", "reason": total["reason"]}));
    Run {
        track_status: run.track_status,
        writer_status: run.writer_status,
        stderr: run.stderr.clone(),
        records,
        log: run.log.clone(),
    }
}

#[test]
fn debian_6_12_every_method_against_ground_truth() {
    if skip() {
        return;
    }
    let Some(boot) = run_methods(
        "6.12",
        &[
            "pagemap-scan",
            "pagemap-read",
            "soft-dirty",
            "soft-dirty-epoll",
            "compare",
            "scenario:dontneed",
            "scenario:thp",
            "scenario:churn",
        ],
    ) else {
        return;
    };
    // The soft-dirty freeze leaves a thread in epoll_wait(-1) alone (no EINTR: writer exit 0).
    let epoll = &boot.runs["soft-dirty-epoll"];
    assert_eq!(
        epoll.writer_status, 0,
        "6.12 soft-dirty froze an epoll_wait into EINTR: {}",
        epoll.stderr
    );
    assert_eq!(epoll.track_status, 0, "{}", epoll.stderr);
    // Zaps on a stock kernel: single pages (MADV_DONTNEED) and a whole huge page (a PMD hole).
    for name in ["scenario:dontneed", "scenario:thp", "scenario:churn"] {
        let run = &boot.runs[name];
        assert_eq!(
            (run.track_status, run.writer_status),
            (0, 0),
            "6.12 {name}: {}",
            run.stderr
        );
        let o = crate::living::judge(&run.log, &run.records);
        eprintln!(
            "6.12 {name}: {} changes, {} reports, {} false positives; stderr: {}",
            o.changes,
            o.reports,
            o.unexplained,
            run.stderr.trim()
        );
        assert!(
            o.lost.is_empty(),
            "6.12 {name}: LOST {:x?}",
            &o.lost[..o.lost.len().min(10)]
        );
    }
    assert_eq!(boot.check_status, 0, "check on 6.12: {}", boot.check);
    assert_eq!(
        (
            boot.check["track_possible"].as_bool(),
            boot.check["soft_dirty"].as_bool()
        ),
        (Some(true), Some(true))
    );
    let runs = boot.runs;
    // compare: both mechanisms at once, each side held against the truth.
    let cmp = &runs["compare"];
    assert_eq!(cmp.records[0]["type"], "compare-start", "{}", cmp.stderr);
    for (side, only) in [
        ("compare/uffd-wp", "only_uffd_ranges"),
        ("compare/soft-dirty", "only_soft_dirty_ranges"),
    ] {
        let run = compare_side(cmp, only);
        assert_eq!(run.track_status, 0, "{side}: {}", run.stderr);
        let truth = truth_from_text(&run.log);
        let base = hex(&truth.wait["base"]);
        let (start_ns, deltas) =
            deltas_in(&run.records, base, truth.wait["pages"].as_u64().unwrap());
        let v = compare(&truth, start_ns, &deltas);
        eprintln!(
            "6.12 {side}: {} writes, {} reports, {} unexplained",
            v.writes,
            v.reports,
            v.unexplained.len()
        );
        assert!(
            v.lost.is_empty(),
            "6.12 {side}: LOST {:?}",
            &v.lost[..v.lost.len().min(10)]
        );
    }
    for method in ["pagemap-scan", "pagemap-read"] {
        let v = judge("6.12", method, &runs[method]);
        assert!(
            v.unexplained.is_empty(),
            "6.12 {method}: pages reported but never written: {:?}",
            v.unexplained
        );
    }
    // soft-dirty: pages of a huge page written once read dirty together (THP is on by default
    // in Debian's kernels), so its false positives are counted, not forbidden.
    judge("6.12", "soft-dirty", &runs["soft-dirty"]);
}

#[test]
fn debian_6_1_lacks_async_wp_but_soft_dirty_works() {
    if skip() {
        return;
    }
    let Some(boot) = run_methods("6.1", &["pagemap-scan", "soft-dirty"]) else {
        return;
    };
    // check names exactly what is missing, and says soft-dirty works.
    assert_eq!(boot.check_status, 69, "check on 6.1: {}", boot.check);
    assert_eq!(
        (
            boot.check["track_possible"].as_bool(),
            boot.check["soft_dirty"].as_bool()
        ),
        (Some(false), Some(true))
    );
    let missing: Vec<&str> = boot.check["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "missing")
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for name in ["WP_ASYNC", "WP_UNPOPULATED", "PAGEMAP_SCAN"] {
        assert!(
            missing.contains(&name),
            "check on 6.1 does not report {name} missing: {missing:?}"
        );
    }
    let runs = boot.runs;
    let scan = &runs["pagemap-scan"];
    assert_eq!(scan.track_status, 69, "6.1 pagemap-scan: {}", scan.stderr);
    assert!(
        scan.stderr.contains("lacks UFFD_FEATURE_WP_ASYNC"),
        "{}",
        scan.stderr
    );
    assert!(
        scan.stderr.contains("needs Linux 6.7 or newer"),
        "{}",
        scan.stderr
    );
    assert!(scan.records.is_empty(), "no record on a refusal");
    judge("6.1", "soft-dirty", &runs["soft-dirty"]);
}
