//! `--mapping` (the library's `Selector`): only the mappings picked are tracked, and within
//! them no write is lost; a selector that picks nothing, or a kind that does not exist, is a
//! usage error that leaves the target alone.

use crate::common::*;

/// Track the writer launched under `selectors`; the records, its log's ground truth, stderr.
fn writer_under(selectors: &[&str]) -> (Vec<serde_json::Value>, Truth, String) {
    let dir = scratch();
    let log = dir.path().join("writer.log");
    let log_arg = log.display().to_string();
    let mut args = vec!["--format=json", "--interval=20ms"];
    for s in selectors {
        args.extend(["--mapping", s]);
    }
    args.extend([
        "--",
        BIN,
        "writer",
        "--pages=256",
        "--bursts=30",
        "--burst-pages=8",
        "--gap=3ms",
        "--linger=100ms",
        "--log",
        &log_arg,
    ]);
    let (status, records, stderr) = track_records(&args);
    assert!(status.success(), "exit {status:?}: {stderr}");
    (records, truth_from_log(&log), stderr)
}

/// The kinds of everything a run tracked: at the start, and added as it went (a launched
/// program has little at its exec: its heap and libraries come after).
fn tracked_kinds(records: &[serde_json::Value]) -> Vec<String> {
    let kind = |r: &serde_json::Value| r["kind"].as_str().unwrap().to_string();
    let mut kinds: Vec<String> = records[0]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(kind)
        .collect();
    kinds.extend(
        records
            .iter()
            .filter(|r| r["type"] == "mapping" && r["event"] == "added")
            .map(kind),
    );
    kinds
}

#[test]
fn a_kind_selector_tracks_that_kind_only_and_loses_nothing_in_it() {
    if !kernel_can_track() {
        return;
    }
    // The writer's region is nameless anonymous memory: kind anon.
    let (records, truth, _) = writer_under(&["kind:anon"]);
    let kinds = tracked_kinds(&records);
    assert!(!kinds.is_empty(), "nothing tracked");
    assert!(
        kinds.iter().all(|k| k == "anon"),
        "only anon tracked: {kinds:?}"
    );
    let base = hex(&truth.wait["base"]);
    let (start_ns, deltas) = deltas_in(&records, base, truth.wait["pages"].as_u64().unwrap());
    let v = compare(&truth, start_ns, &deltas);
    assert!(v.writes > 100, "the writer wrote ({} writes)", v.writes);
    assert!(
        v.lost.is_empty(),
        "LOST under --mapping kind:anon: {:?}",
        v.lost
    );
    assert!(v.unexplained.is_empty(), "unexplained: {:?}", v.unexplained);
}

#[test]
fn memory_no_selector_picks_is_not_tracked() {
    if !kernel_can_track() {
        return;
    }
    // Program text and libraries only: the writer's anonymous region is left out.
    let (records, truth, _) = writer_under(&["kind:file"]);
    let kinds = tracked_kinds(&records);
    assert!(
        kinds.iter().all(|k| k == "file"),
        "only file tracked: {kinds:?}"
    );
    let base = hex(&truth.wait["base"]);
    let (_, deltas) = deltas_in(&records, base, truth.wait["pages"].as_u64().unwrap());
    let reported: usize = deltas.iter().map(|d| d.pages.len()).sum();
    assert!(!deltas.is_empty());
    assert_eq!(
        reported, 0,
        "pages of the writer's region reported though not selected"
    );
}

#[test]
fn a_name_glob_picks_by_the_last_path_component() {
    if !kernel_can_track() {
        return;
    }
    // Launched: at its exec the program has no libc yet (ld.so maps it), so it is armed as it
    // appears, and the start record tracks nothing of it.
    let (records, _, _) = writer_under(&["libc.so*"]);
    let named = |r: &serde_json::Value| r["mapping"].as_str().unwrap().to_string();
    let mut names: Vec<String> = records[0]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(named)
        .collect();
    names.extend(
        records
            .iter()
            .filter(|r| r["type"] == "mapping" && r["event"] == "added")
            .map(named),
    );
    assert!(!names.is_empty(), "libc was never tracked");
    assert!(
        names
            .iter()
            .all(|n| n.rsplit('/').next().unwrap().starts_with("libc.so")),
        "{names:?}"
    );
}

#[test]
fn selectors_that_pick_nothing_are_usage_errors() {
    let sleeper = Sleeper::new();
    let pid = sleeper.pid();
    for (selector, says) in [
        ("kind:nope", "unknown kind `nope`"),
        ("", "empty"),
        ("/no/such/mapping*", "pick no trackable mapping"),
    ] {
        let out = uffd_dirty()
            .args(["track", "--pid", &pid, "-n", "1", "--mapping", selector])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{selector}: {stderr}");
        assert!(stderr.contains(says), "{selector}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    assert!(!has_userfaultfd(sleeper.0.id() as i32));
    assert_eq!(tracer_pid(sleeper.0.id() as i32), 0);
}
