use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::common::*;

#[test]
fn every_record_matches_the_published_schema() {
    if !kernel_can_track() {
        return;
    }
    let script =
        format!("sleep 0.1; exec {BIN} writer --pages=256 --bursts=20 --gap=3ms --linger=60ms");
    let (status, mut records, _) = track_records(&[
        "--format=json",
        "--json-bitmap",
        "--interval=20ms",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(status.success());
    let (_, more, _) = track_records(&[
        "--format=json",
        "--interval=20ms",
        "--no-follow-exec",
        "--",
        "sh",
        "-c",
        "sleep 0.1; exec true",
    ]);
    records.extend(more);
    let mut types = BTreeSet::new();
    for r in &records {
        assert_schema(r);
        types.insert(r["type"].as_str().unwrap().to_string());
    }
    for t in ["start", "mapping", "delta", "exec", "end"] {
        assert!(
            types.contains(t),
            "no {t} record was produced to check: {types:?}"
        );
    }
}

#[test]
fn bitmaps_decode_to_exactly_the_delta_ranges() {
    if !kernel_can_track() {
        return;
    }
    let (status, records, _) = track_records(&[
        "--format=json",
        "--json-bitmap",
        "--interval=20ms",
        "--",
        BIN,
        "writer",
        "--pages=300",
        "--bursts=30",
        "--gap=3ms",
        "--linger=60ms",
    ]);
    assert!(status.success());
    let page = 4096;
    let mut checked = 0;
    for d in records.iter().filter(|r| r["type"] == "delta") {
        let mut decoded = Vec::new();
        for b in d["bitmap"]
            .as_array()
            .expect("--json-bitmap adds \"bitmap\"")
        {
            let span = uffd_dirty::maps::Span::new(hex(&b["start"]), hex(&b["end"]));
            let bits = b["bits"].as_str().unwrap();
            assert_eq!(
                bits.len() as u64,
                (span.len() / page).div_ceil(8) * 2,
                "bitmap length of {b}"
            );
            decoded.extend(uffd_dirty::output::bitmap::decode(span, bits, page));
        }
        let decoded = uffd_dirty::maps::union(decoded);
        let ranges: Vec<_> = d["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| uffd_dirty::maps::Span::new(hex(&r["start"]), hex(&r["end"])))
            .collect();
        assert_eq!(
            decoded,
            uffd_dirty::maps::union(ranges),
            "delta {}",
            d["seq"]
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} deltas");
}

#[test]
fn bitmap_format_is_one_line_per_tracked_range_and_nothing_else() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let file = dir.path().join("out.bitmap");
    let out = uffd_dirty()
        .args([
            "track",
            "--format=bitmap",
            "--interval=20ms",
            "--count=4",
            "--output",
        ])
        .arg(&file)
        .args(["--", "sleep", "5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let mut per_seq = std::collections::BTreeMap::<u64, usize>::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 4, "{line}");
        let (start, end) = (hex(&Value::from(f[1])), hex(&Value::from(f[2])));
        assert_eq!(
            f[3].len() as u64,
            ((end - start) / 4096).div_ceil(8) * 2,
            "{line}"
        );
        assert!(
            f[3].bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{line}"
        );
        *per_seq.entry(f[0].parse().unwrap()).or_default() += 1;
    }
    assert_eq!(
        per_seq.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "one block per delta"
    );
}

#[test]
fn output_file_is_private_and_never_a_symlink() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let file = dir.path().join("out.json");
    let out = uffd_dirty()
        .args(["track", "-f", "json", "-n", "1", "--interval=10ms", "-o"])
        .arg(&file)
        .args(["--", "sleep", "2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .starts_with("{\"type\":\"start\"")
    );
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
    let out = uffd_dirty()
        .args(["track", "-f", "json", "-n", "1", "-o"])
        .arg(&link)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a symbolic link"));
    assert!(
        !dir.path().join("elsewhere").exists(),
        "the symlink was followed"
    );
}

#[test]
fn no_permission_to_attach_is_exit_77() {
    if !kernel_can_track() {
        return;
    }
    if !is_root() {
        skipped("needs root to run the tracker as another user");
        return;
    }
    let mut victim = std::process::Command::new("sleep")
        .arg("10")
        .spawn()
        .unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            BIN,
            "track",
            "--pid",
        ])
        .arg(victim.id().to_string())
        .output()
        .unwrap();
    let _ = victim.kill();
    let _ = victim.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("CAP_SYS_PTRACE"), "{err}");
}

#[test]
fn demo_output_is_only_the_trackers_and_its_log_is_written() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let log = dir.path().join("demo.log");
    let out = uffd_dirty()
        .args([
            "demo",
            "--duration",
            "1s",
            "--interval",
            "100ms",
            "--format",
            "json",
            "--log",
        ])
        .arg(&log)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo: {:?}: {stderr}", out.status);
    // The writer shares the tracker's stdout: nothing of its own may land there.
    let stdout = String::from_utf8(out.stdout).unwrap();
    for line in stdout.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_schema(&record);
    }
    let end: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(end["reason"], "target-exited", "{end}");
    assert!(
        !stderr.contains("terminated"),
        "the demo reads like an error: {stderr}"
    );
    let truth = truth_from_log(&log);
    assert!(!truth.writes.is_empty(), "the demo's log holds no write");
}
