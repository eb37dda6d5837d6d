//! A living address space: scenarios that map, unmap, move, zap, share, grow and fork memory
//! while writing it, held against their logs. No change may be lost; reports inside memory a
//! scenario owns that no change explains are counted as false positives.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use serde_json::Value;

use crate::common::*;

const SLACK_NS: u64 = 1_000_000;

struct Change {
    pages: Vec<u64>,
    t0: u64,
    t1: u64,
    /// The content became zero (a zap, or a mapping made over it).
    zero: bool,
    /// Data already there at attach: state, not a change to report.
    pre: bool,
}

/// A span unmapped for a while between `t0` and `t1`: the source of a move, which the
/// scenario maps afresh right after the mremap.
struct Hole {
    start: u64,
    end: u64,
    t0: u64,
    t1: u64,
}

struct Watch {
    start: u64,
    end: u64,
    from: u64,
    to: u64,
}

#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) changes: usize,
    pub(crate) lost: Vec<(u64, u64)>,
    pub(crate) unexplained: usize,
    pub(crate) reports: usize,
}

fn run(scenario: &str, steps: u32) -> Outcome {
    run_with(scenario, steps, &[])
}

fn run_with(scenario: &str, steps: u32, track_args: &[&str]) -> Outcome {
    let dir = scratch();
    let log = dir.path().join("scenario.log");
    let mut child = uffd_dirty()
        .args(["scenario", scenario, "--steps", &steps.to_string(), "--log"])
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let pid = ready["pid"].to_string();
    let mut args = vec!["--pid", &pid, "--interval", "20ms"];
    args.extend_from_slice(track_args);
    let mut tracker = Tracker::spawn(&args, None);
    stdin.write_all(b"g").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("done"), "scenario said {line:?}");
    tracker.wait_deltas(1);
    tracker.signal(libc::SIGINT);
    let (status, records) = tracker.finish();
    assert!(status.success(), "tracker: {status:?}");
    assert_eq!(records.last().unwrap()["reason"], "signal");
    drop(stdin);
    let st = child.wait().unwrap();
    assert!(st.success(), "scenario {scenario} failed: {st:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let outcome = judge(&text, &records);
    // A lost write is kept with its evidence, so that a rare one can be explained afterwards.
    let keep = std::env::var_os("UFFD_DIRTY_KEEP")
        .map(std::path::PathBuf::from)
        .or_else(|| (!outcome.lost.is_empty()).then(|| dir.keep()));
    if let Some(d) = keep {
        std::fs::write(d.join(format!("{scenario}.log")), &text).unwrap();
        let recs: String = records.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(d.join(format!("{scenario}.ndjson")), recs).unwrap();
        eprintln!("{scenario}: log and records kept in {}", d.display());
    }
    outcome
}

pub(crate) fn judge(log: &str, records: &[Value]) -> Outcome {
    let mut changes = Vec::new();
    let mut watches: Vec<Watch> = Vec::new();
    let mut holes: Vec<Hole> = Vec::new();
    for l in log.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        match v["type"].as_str().unwrap() {
            "write" => changes.push(Change {
                pages: v["pages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_u64().unwrap())
                    .collect(),
                t0: v["t0"].as_u64().unwrap(),
                t1: v["t1"].as_u64().unwrap(),
                zero: v["zero"] == true,
                pre: v["pre"] == true,
            }),
            "watch" => watches.push(Watch {
                start: v["start"].as_u64().unwrap(),
                end: v["end"].as_u64().unwrap(),
                from: v["t"].as_u64().unwrap(),
                to: u64::MAX,
            }),
            "unwatch" => {
                let (s, e) = (v["start"].as_u64().unwrap(), v["end"].as_u64().unwrap());
                if let Some(w) = watches
                    .iter_mut()
                    .rev()
                    .find(|w| w.start == s && w.end == e && w.to == u64::MAX)
                {
                    w.to = v["t"].as_u64().unwrap();
                }
            }
            "unmapped" => holes.push(Hole {
                start: v["start"].as_u64().unwrap(),
                end: v["end"].as_u64().unwrap(),
                t0: v["t0"].as_u64().unwrap(),
                t1: v["t1"].as_u64().unwrap(),
            }),
            "vmpte" => {
                let (before, after) = (
                    v["before_kib"].as_u64().unwrap(),
                    v["after_kib"].as_u64().unwrap(),
                );
                eprintln!(
                    "page tables of the target: {before} KiB before attach, {after} KiB at the end"
                );
                assert!(
                    after < before + 16 * 1024,
                    "arming made the target allocate {} KiB of page tables",
                    after - before
                );
            }
            t => panic!("unknown log record {t}"),
        }
    }
    let start_ns = parse_ns(records[0]["time"].as_str().unwrap());
    let added: Vec<(u64, u64, u64)> = records
        .iter()
        .filter(|r| r["type"] == "mapping" && r["event"] == "added")
        .map(|r| {
            (
                hex(&r["start"]),
                hex(&r["end"]),
                parse_ns(r["time"].as_str().unwrap()),
            )
        })
        .collect();
    // What a harvest (at its time) said of a mapping: gone (unmapped, or moved from there), or
    // with contents to take afresh (added, moved there, replaced in place).
    let mut removed: Vec<(u64, u64, u64)> = Vec::new();
    let mut reset: Vec<(u64, u64, u64)> = Vec::new();
    for r in records.iter().filter(|r| r["type"] == "mapping") {
        let (start, end) = (hex(&r["start"]), hex(&r["end"]));
        let t = parse_ns(r["time"].as_str().unwrap());
        match r["event"].as_str().unwrap() {
            "removed" => removed.push((start, end, t)),
            "moved" => {
                let from = hex(&r["from"]);
                removed.push((from, from + (end - start), t));
                reset.push((start, end, t));
            }
            _ => reset.push((start, end, t)),
        }
    }
    let said = |of: &[(u64, u64, u64)], p: u64, at: u64| {
        of.iter().any(|&(s, e, t)| p >= s && p < e && t == at)
    };
    let deltas: Vec<(u64, u64, BTreeSet<u64>)> = records
        .iter()
        .filter(|r| r["type"] == "delta")
        .map(|r| {
            let mut pages = BTreeSet::new();
            for run in r["ranges"].as_array().unwrap() {
                pages.extend((hex(&run["start"])..hex(&run["end"])).step_by(4096));
            }
            (
                parse_ns(r["time"].as_str().unwrap()),
                r["scan_us"].as_u64().unwrap() * 1000,
                pages,
            )
        })
        .collect();
    let harvest_end = |k: usize| deltas[k].0 + deltas[k].1 + SLACK_NS;
    let mut out = Outcome {
        changes: 0,
        lost: Vec::new(),
        unexplained: 0,
        reports: 0,
    };
    // Per page, its changes in time order: (t0, t1, zero, pre).
    let mut by_page: BTreeMap<u64, Vec<(u64, u64, bool, bool)>> = BTreeMap::new();
    for c in &changes {
        for &p in &c.pages {
            by_page
                .entry(p)
                .or_default()
                .push((c.t0, c.t1, c.zero, c.pre));
        }
    }
    // An unmapping is a return to zero too (a later mapping there starts empty): a state
    // change that is not itself a change to report.
    for (&p, evs) in by_page.iter_mut() {
        for w in watches
            .iter()
            .filter(|w| p >= w.start && p < w.end && w.to != u64::MAX)
        {
            evs.push((w.to, w.to, true, true));
        }
        evs.sort_unstable();
    }
    for (&p, evs) in &by_page {
        for &(t0, t1, zero, _) in evs.iter().filter(|e| !e.3) {
            out.changes += 1;
            // Reported by a harvest that ended after the change began, no later than the
            // first harvest that began after it ended.
            let last = deltas
                .iter()
                .position(|d| d.0 > t1 + SLACK_NS)
                .unwrap_or(deltas.len() - 1);
            if (0..=last).any(|k| harvest_end(k) >= t0 && deltas[k].2.contains(&p)) {
                continue;
            }
            // Excused: the memory went away before that harvest (nothing left to report)...
            let gone = watches.iter().any(|w| {
                p >= w.start
                    && p < w.end
                    && w.to != u64::MAX
                    && w.to + SLACK_NS >= t0
                    && w.to <= harvest_end(last)
            });
            // ...or its content at that harvest is what it was at the previous one: zero then
            // and zero again (written and zapped in between, or zapped while already zero).
            // (The previous harvest too may have seen any state the page held while it ran.)
            let prev = deltas.iter().rposition(|d| d.0 + SLACK_NS < t0);
            let (prev_start, prev_end) =
                prev.map_or((start_ns, start_ns), |k| (deltas[k].0, harvest_end(k)));
            let data_at = |t: u64| evs.iter().rev().find(|e| e.1 < t).is_some_and(|e| !e.2);
            let was_data = data_at(prev_start)
                && !evs
                    .iter()
                    .any(|e| e.2 && e.0 >= prev_start && e.0 <= prev_end);
            // The harvest may have seen the page in any state it held while it ran.
            let is_data = evs
                .iter()
                .rev()
                .find(|e| e.0 <= deltas[last].0)
                .is_some_and(|e| !e.2)
                && !evs
                    .iter()
                    .any(|e| e.2 && e.0 >= deltas[last].0 && e.0 <= harvest_end(last));
            // ...or the tracker first saw its mapping at that harvest (a `mapping` record says
            // "added"), with zero in it: a new mapping's empty pages are not reported.
            let prev_delta = if last == 0 {
                start_ns
            } else {
                deltas[last - 1].0
            };
            let announced = added
                .iter()
                .any(|&(s, e, t)| p >= s && p < e && t > prev_delta && t <= deltas[last].0);
            // ...or a later change of the page came while that harvest ran: the harvest may have
            // seen the page after it, and the two go together into the next delta.
            let superseded = evs
                .iter()
                .any(|e| e.0 > t0 && e.0 >= deltas[last].0 && e.0 <= harvest_end(last))
                && (deltas.get(last + 1).is_some_and(|d| d.2.contains(&p))
                    || watches.iter().any(|w| {
                        p >= w.start
                            && p < w.end
                            && w.to != u64::MAX
                            && w.to >= t0
                            && (last + 1 >= deltas.len() || w.to <= harvest_end(last + 1))
                    }));
            // ...or its memory went away after it (the source of a move: unmapped, then mapped
            // afresh, empty; the scenario logs the moment as `unmapped`), and a harvest by then
            // said so: it found the memory unmapped (`removed`) while it was, or a fresh
            // mapping there (`added`, `replaced`) after. The change was made before the memory
            // went (or is that going, to zero): nothing of it is left to report. (A harvest
            // that registers the fresh mapping may lose it to the next mremap before its scan,
            // which otherwise reports a replaced mapping whole.) The tracker's word alone
            // excuses nothing: the hole must be in the log.
            let seen_gone = (0..=last).any(|k| {
                let (begun, ended) = (deltas[k].0, harvest_end(k));
                ended >= t0
                    && holes.iter().any(|h| {
                        p >= h.start
                            && p < h.end
                            && (t1 <= h.t0 || (zero && t0 <= h.t0))
                            && ((said(&removed, p, begun) && h.t0 <= ended && h.t1 >= begun)
                                || (said(&reset, p, begun) && begun >= h.t1))
                    })
            });
            if gone || superseded || seen_gone || (!was_data && !is_data) || (announced && !is_data)
            {
                continue;
            }
            out.lost.push((p, t0));
        }
    }
    for (k, d) in deltas.iter().enumerate() {
        let prev = if k == 0 { start_ns } else { deltas[k - 1].0 };
        for &p in &d.2 {
            let watched = watches.iter().any(|w| {
                p >= w.start
                    && p < w.end
                    && w.from <= harvest_end(k)
                    && w.to.saturating_add(SLACK_NS) >= prev
            });
            if !watched {
                continue;
            }
            out.reports += 1;
            let explained = by_page.get(&p).is_some_and(|ts| {
                ts.iter()
                    .any(|&(t0, t1, _, pre)| !pre && t0 <= harvest_end(k) && t1 + SLACK_NS >= prev)
            });
            if !explained {
                out.unexplained += 1;
            }
        }
    }
    out
}

fn check(scenario: &str, steps: u32, max_false_positives: usize) {
    check_with(scenario, steps, max_false_positives, &[]);
}

fn check_with(scenario: &str, steps: u32, max_false_positives: usize, track_args: &[&str]) {
    if !kernel_can_track() {
        return;
    }
    let o = run_with(scenario, steps, track_args);
    eprintln!(
        "{scenario}: {} changes, {} reports in owned memory, {} unexplained (false positives)",
        o.changes, o.reports, o.unexplained
    );
    assert!(o.changes > 0, "the scenario changed nothing");
    assert!(
        o.lost.is_empty(),
        "{scenario}: LOST {} changes: {:x?}",
        o.lost.len(),
        &o.lost[..o.lost.len().min(10)]
    );
    assert!(
        o.unexplained <= max_false_positives,
        "{scenario}: {} false positives, more than the {max_false_positives} explained",
        o.unexplained
    );
}

#[test]
fn churn_of_mappings_loses_nothing() {
    // False positives: a mapping replaced in place (MAP_FIXED over it) is reported whole once.
    check("churn", 300, usize::MAX);
}

#[test]
fn mremap_moved_memory_is_reported_and_tracked_after() {
    // False positives: the moved range and the re-mapped source are reported whole.
    check("mremap", 20, usize::MAX);
}

#[test]
fn dontneed_zaps_are_reported() {
    // False positives: zapped pages that were never written (their content stays zero).
    check("dontneed", 60, 20 * 32);
}

#[test]
fn thp_written_before_and_after_attach() {
    // False positives: a zapped huge page is reported whole (512 pages).
    check("thp", 80, 512);
}

#[test]
fn memfd_and_shared_anonymous_memory() {
    // Includes MADV_REMOVE hole punches; false positives: punched pages never written.
    check("shared", 60, 60 / 5 * 8);
}

#[test]
fn brk_growth_is_tracked() {
    check("brk", 60, 0);
}

#[test]
fn hugetlb_pages_are_tracked_whole() {
    let free: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("HugePages_Free:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    if free < 2 {
        skipped(format!(
            "hugetlb needs 2 free huge pages (sysctl vm.nr_hugepages=16); this machine has {free}"
        ));
        return;
    }
    // A write dirties its whole huge page: up to 511 other pages per written huge page are
    // reported too, and 2 huge pages are written again every round.
    check("hugetlb", 40, 40 * 2 * 511);
}

#[test]
fn huge_sparse_reservation_costs_no_page_tables() {
    // A 1 TiB MAP_NORESERVE reservation armed in full would cost 2 GiB of page tables. False
    // positives: a read of a never-written page maps the zero page, reported once.
    check("sparse", 100, 100 / 5);
}

#[test]
fn fork_child_writes_are_not_the_parents() {
    check("fork", 60, 0);
}

#[test]
fn the_programs_own_userfaultfd_tracking_is_left_alone() {
    if !kernel_can_track() {
        return;
    }
    // The scenario fails (and `run` asserts it succeeded) if the tracker ever steals one of
    // its writes: its memory is armed by its own async userfaultfd, which the tracker cannot
    // register (EBUSY) and must not harvest either.
    let o = run("own-uffd", 30);
    assert!(o.lost.is_empty());
}

#[test]
fn write_then_mprotect_read_only_is_reported() {
    // A write just before an mprotect(PROT_READ) is in the page until the harvest.
    check("mprotect", 20, 0);
    check_with("mprotect", 20, 0, &["--method=pagemap-read"]);
}

#[test]
fn pagemap_read_reports_zaps_and_churn() {
    check_with("dontneed", 60, 20 * 32, &["--method=pagemap-read"]);
    check_with("churn", 200, usize::MAX, &["--method=pagemap-read"]);
}

#[test]
fn private_and_shared_file_mappings() {
    check("filemap", 60, 0);
}

#[test]
fn read_only_private_file_made_writable_briefly() {
    // Pages read from the file are not written: no false positive.
    check("ro-file", 60, 0);
}

#[test]
fn read_only_shared_memory_made_writable_briefly() {
    // False positives: pages of the shared mappings only read before the tracker first saw
    // them (one per mapping and round at most): in shared memory a page written and one read
    // are alike, both the file's page.
    check("ro-shared", 60, 60 * 2);
}

#[test]
fn dlopen_like_mapping_relocated_then_read_only() {
    // Pages only read (faulted in from the file) before the tracker first saw the mapping are
    // still the file's pages, so they are not reported: no false positive.
    check("dlopen-like", 60, 0);
}

/// Evidence made up for the judge's own tests, at `ms` milliseconds from an arbitrary origin.
mod evidence {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::{Value, json};

    pub(super) const A: u64 = 0x7f00_0000_0000;
    pub(super) const LEN: u64 = 64 * 4096;
    pub(super) const P: u64 = A + 0x1000;

    pub(super) fn ns(ms: f64) -> u64 {
        1_800_000_000_000_000_000 + (ms * 1e6) as u64
    }

    fn time(ms: f64) -> String {
        humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns(ms))).to_string()
    }

    pub(super) fn start() -> Value {
        json!({"type": "start", "time": time(0.0)})
    }

    /// A harvest of 100 µs that reported `pages`.
    pub(super) fn delta(ms: f64, pages: &[u64]) -> Value {
        let ranges: Vec<Value> = pages
            .iter()
            .map(|p| json!({"start": format!("{p:#x}"), "end": format!("{:#x}", p + 4096)}))
            .collect();
        json!({"type": "delta", "time": time(ms), "scan_us": 100, "ranges": ranges})
    }

    /// A `mapping` record of the harvest at `ms` about all of A.
    pub(super) fn mapping(ms: f64, event: &str) -> Value {
        json!({"type": "mapping", "event": event, "start": format!("{A:#x}"),
               "end": format!("{:#x}", A + LEN), "time": time(ms)})
    }

    pub(super) fn watch() -> String {
        json!({"type": "watch", "start": A, "end": A + LEN, "t": ns(0.0)}).to_string()
    }

    pub(super) fn write(t0: f64, t1: f64, zero: bool) -> String {
        json!({"type": "write", "zero": zero, "t0": ns(t0), "t1": ns(t1), "pages": [P]}).to_string()
    }

    pub(super) fn unmapped(t0: f64, t1: f64) -> String {
        json!({"type": "unmapped", "start": A, "end": A + LEN, "t0": ns(t0), "t1": ns(t1)})
            .to_string()
    }
}

/// The failure seen under load (a harvest between an mremap and the mmap that refills its
/// source): a page written, reported, written again, then moved away, and the harvest due to
/// report the second write found its memory unmapped and said `removed`. Its report is the
/// removal, if the memory really was unmapped then; the tracker's word alone is not enough.
#[test]
fn judge_takes_a_removal_seen_in_a_moves_hole_as_the_report() {
    use evidence::*;
    let lines = [
        watch(),
        write(1.0, 1.1, false),
        write(15.0, 15.1, false),
        // Moved away: unmapped, then mapped afresh (empty) by 20.3.
        write(20.0, 20.5, true),
        unmapped(20.0, 20.3),
    ];
    let records = [
        start(),
        delta(10.0, &[P]),
        mapping(20.1, "removed"),
        delta(20.1, &[]),
        mapping(30.0, "added"),
        delta(30.0, &[]),
    ];
    let judged = |lines: &[String], records: &[serde_json::Value]| {
        judge(&(lines.join("\n") + "\n"), records).lost
    };
    assert_eq!(judged(&lines, &records), vec![]);
    // Without the hole in the log, the removal is unfounded: the second write is lost.
    let lost = vec![(P, ns(15.0))];
    assert_eq!(judged(&lines[..4], &records), lost);
    // Without the removal, nothing reported the second write.
    let mut silent = records.to_vec();
    silent.remove(2);
    assert_eq!(judged(&lines, &silent), lost);
}

/// After the move's hole, a harvest that finds a fresh mapping there (`added`, or `replaced`
/// when the harvest registered it and an mremap took it before its scan) reports the data gone,
/// though a later harvest is the one due: the change came just before it. A harvest begun
/// before the hole closed may have seen the old mapping.
#[test]
fn judge_takes_a_fresh_mapping_after_a_moves_hole_as_the_report() {
    use evidence::*;
    let lines = [
        watch(),
        write(1.0, 1.1, false),
        // Moved away at 20.0, mapped afresh by 20.1; the writes elsewhere end at 20.5.
        write(20.0, 20.5, true),
        unmapped(20.0, 20.1),
    ];
    let records = |event: &str, at: f64| {
        vec![
            start(),
            delta(10.0, &[P]),
            mapping(at, event),
            delta(at, &[]),
            delta(30.0, &[]),
        ]
    };
    let judged = |lines: &[String], records: &[serde_json::Value]| {
        judge(&(lines.join("\n") + "\n"), records).lost
    };
    let lost = vec![(P, ns(20.0))];
    for event in ["added", "replaced"] {
        assert_eq!(judged(&lines, &records(event, 20.3)), vec![], "{event}");
        // No hole in the log: the fresh mapping is unfounded.
        assert_eq!(judged(&lines[..3], &records(event, 20.3)), lost, "{event}");
        // Begun before the hole closed: it may have seen the data still there.
        assert_eq!(judged(&lines, &records(event, 20.05)), lost, "{event}");
    }
    // Written again, after the move, and never reported: lost.
    let mut again = lines.to_vec();
    again.push(write(25.0, 25.1, false));
    assert_eq!(
        judged(&again, &records("replaced", 20.3)),
        vec![(P, ns(25.0))]
    );
}
