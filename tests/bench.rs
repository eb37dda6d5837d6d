//! The CI smoke version of `uffd-dirty bench` (seconds long); the full run is manual and its
//! output is BENCHMARKS.md.

use crate::common::*;

fn bench(args: &[&str]) -> String {
    let out = uffd_dirty().arg("bench").args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn rows<'a>(text: &'a str, section: &str) -> Vec<&'a str> {
    let body = text
        .split("\n## ")
        .find(|s| s.starts_with(section))
        .unwrap_or_else(|| panic!("no `## {section}` in\n{text}"));
    body.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| size") && !l.starts_with("| method"))
        .collect()
}

#[test]
fn bench_smoke_prints_every_table_for_every_method() {
    if !kernel_can_track() {
        return;
    }
    // The two methods every kernel that can track has (soft-dirty comes and goes with the
    // kernel's configuration, and the row counts below are for two).
    let text = bench(&[
        "--methods",
        "pagemap-scan,pagemap-read",
        "--sizes",
        "16M,64M@25%",
        "--fractions",
        "0,0.1",
        "--rounds",
        "2",
        "--slowdown-size",
        "16M",
        "--rates",
        "10",
        "--run-time",
        "1s",
    ]);
    assert!(text.starts_with("Command: `"), "{text}");
    assert!(
        text.contains("\nMachine: ") && text.contains(" CPUs ("),
        "{text}"
    );
    assert!(text.contains("\nLoad average: "), "{text}");
    let harvest = rows(&text, "Harvest");
    // 2 sizes × 2 methods × 2 fractions, then the ratio table's 2 sizes × 2 fractions.
    assert_eq!(harvest.len(), 8 + 4, "{text}");
    for method in ["| pagemap-scan |", "| pagemap-read |"] {
        assert!(harvest.iter().any(|r| r.contains(method)), "{text}");
    }
    assert!(
        harvest.iter().any(|r| r.starts_with("| 64 MiB | 25% |")),
        "{text}"
    );
    // Populated and unpopulated, per size and method.
    assert_eq!(rows(&text, "Attach").len(), 8, "{text}");
    // Untracked, and each method at 10 Hz.
    let slowdown = rows(&text, "Target slowdown");
    assert_eq!(slowdown.len(), 3, "{text}");
    assert!(slowdown[0].starts_with("| untracked | – |"), "{text}");
    assert_eq!(rows(&text, "Tracker footprint").len(), 4, "{text}");

    let json: serde_json::Value = serde_json::from_str(&bench(&[
        "--methods",
        "pagemap-scan,pagemap-read",
        "--sizes",
        "16M",
        "--fractions",
        "0.1",
        "--rounds",
        "1",
        "--sections",
        "harvest,footprint",
        "--run-time",
        "1s",
        "--json",
    ]))
    .unwrap();
    let harvest = json["harvest"].as_array().unwrap();
    assert_eq!(harvest.len(), 2, "{json}");
    let scan = harvest
        .iter()
        .find(|r| r["method"] == "pagemap-scan")
        .unwrap();
    assert!(scan["harvest_ms_median"].as_f64().unwrap() > 0.0, "{json}");
    assert!(
        scan["bare_ioctl_ms_median"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    assert!(scan["first_write_extra_us"].is_number(), "{json}");
    assert_eq!(scan["dirty_pages"], 410, "{json}");
    // The watch is timed apart: part of the harvest, and what is left of it is the rest.
    let (whole, watch, rest) = (
        scan["harvest_ms_median"].as_f64().unwrap(),
        scan["watch_us_median"].as_f64().unwrap() / 1000.0,
        scan["without_watch_ms_median"].as_f64().unwrap(),
    );
    assert!(watch > 0.0 && watch < whole, "{json}");
    assert!((whole - watch - rest).abs() < 0.01, "{json}");
    for f in json["footprint"].as_array().unwrap() {
        assert!(f["deltas"].as_u64().unwrap() >= 1, "{json}");
        assert!(f["harvest_ms_per_s"].as_f64().unwrap() > 0.0, "{json}");
        assert!(f["peak_rss_mib"].as_f64().unwrap() > 0.0, "{json}");
        assert!(f["cpu_ms_per_s"].as_f64().unwrap() > 0.0, "{json}");
    }
    assert!(json["machine"]["cpus"].as_u64().unwrap() >= 1);
}

#[test]
fn bench_refuses_bad_sizes_in_one_line() {
    let out = uffd_dirty()
        .args(["bench", "--sizes", "16G@150%"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`150%` is not a fraction"), "{err}");
    let out = uffd_dirty()
        .args(["bench", "--sizes", "4K"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give at least 1M"), "{err}");
}

#[test]
fn bench_of_soft_dirty_without_it_is_exit_69() {
    if !kernel_can_track() || soft_dirty_works() {
        skipped("this kernel has soft-dirty (or cannot track): nothing to refuse");
        return;
    }
    let out = uffd_dirty()
        .args(["bench", "--methods", "soft-dirty", "--sizes", "16M"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no working soft-dirty"), "{err}");
}

/// The sections run only when asked for: the snapshot's copy, stop and convergence tables,
/// the pauses the target feels (from the kernel's mmap_lock tracepoints), and the harvest of
/// many mappings, at small sizes.
#[test]
fn bench_smoke_snapshot_pauses_and_mappings_sections() {
    if !kernel_can_track() {
        return;
    }
    let mut sections = "snapshot,pauses,mappings";
    // SAFETY: geteuid cannot fail and touches no memory.
    if !std::path::Path::new("/sys/kernel/tracing/events/mmap_lock").exists()
        && !std::path::Path::new("/sys/kernel/debug/tracing/events/mmap_lock").exists()
        && unsafe { libc::geteuid() } != 0
    {
        skipped("the pauses section needs tracefs with mmap_lock tracepoints (root mounts it)");
        sections = "snapshot,mappings";
    }
    let text = bench(&[
        "--sections",
        sections,
        "--snapshot-size",
        "16M",
        "--snapshot-rates",
        "2000",
        "--pause-sizes",
        "16M",
        "--mapping-counts",
        "400",
        "--rounds",
        "1",
    ]);
    // Steady and flipping: the target's 400 pages are about 400 mappings of its ~440.
    let mappings = rows(&text, "Mappings");
    let counts: Vec<u64> = mappings
        .iter()
        .filter_map(|r| r.split('|').nth(1)?.trim().parse().ok())
        .collect();
    assert_eq!(counts.len(), 2, "{text}");
    assert!(counts.iter().all(|&c| c > 400), "{text}");
    let snapshot = rows(&text, "Snapshot");
    let starting = |prefixes: &[&str]| {
        snapshot
            .iter()
            .filter(|r| prefixes.iter().any(|p| r.starts_with(p)))
            .count()
    };
    // Copy: 3 fractions, scattered and contiguous but one `all`; stop: 2 fractions;
    // convergence: 1 rate × 2 intervals.
    assert_eq!(
        starting(&["| scattered |", "| contiguous |", "| all | 100% (4096 p)"]),
        5,
        "{text}"
    );
    assert_eq!(starting(&["| 1% (", "| 10% ("]), 2, "{text}");
    assert_eq!(
        starting(&["| 2000 | 200 ms |", "| 2000 | 20 ms |"]),
        2,
        "{text}"
    );
    if sections.contains("pauses") {
        let pauses = rows(&text, "Pauses");
        let phases = [
            "attach",
            "harvest-steady",
            "harvest-1%",
            "harvest-10%",
            "harvest-100%",
            "detach",
        ];
        assert_eq!(pauses.len(), phases.len(), "{text}");
        for (row, phase) in pauses.iter().zip(phases) {
            assert!(row.starts_with(&format!("| 16 MiB | {phase} |")), "{row}");
            // Every phase held the lock at least once, bounded: "sum / count" with count > 0.
            let holds = row.split('|').nth(5).unwrap().trim();
            let count: u64 = holds.rsplit(" / ").next().unwrap().parse().unwrap();
            assert!(count > 0, "{row}");
        }
    }
}

/// The redis section: redis-server under redis-benchmark, untracked and tracked at two rates,
/// with the server's page faults showing the tracking (skipped where Debian's redis-server and
/// redis-tools are not installed; `.ci/run` installs them).
#[test]
fn bench_smoke_redis_section() {
    if !kernel_can_track() {
        return;
    }
    for program in ["redis-server", "redis-benchmark"] {
        if std::process::Command::new(program)
            .arg("--version")
            .output()
            .is_err()
        {
            skipped(format!(
                "{program} is not installed (apt-get install redis-server redis-tools)"
            ));
            return;
        }
    }
    let text = bench(&[
        "--sections",
        "redis",
        "--methods",
        "pagemap-scan",
        "--rates",
        "10,100",
        "--redis-requests",
        "20000",
        "--rounds",
        "1",
    ]);
    let redis = rows(&text, "Redis");
    let cells = |row: &str| -> Vec<String> {
        row.split('|')
            .skip(1)
            .map(|c| c.trim().to_string())
            .collect()
    };
    let modes: Vec<(String, String)> = redis
        .iter()
        .filter(|r| !r.starts_with("| mode"))
        .map(|r| {
            let c = cells(r);
            (c[0].clone(), c[1].clone())
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("untracked", "–"),
            ("pagemap-scan", "10 Hz"),
            ("pagemap-scan", "100 Hz")
        ]
        .map(|(m, r)| (m.to_string(), r.to_string())),
        "{text}"
    );
    let faults = |row: &str| -> f64 { cells(row)[11].parse().unwrap() };
    let rows: Vec<&&str> = redis.iter().filter(|r| !r.starts_with("| mode")).collect();
    let untracked = faults(rows[0]);
    for tracked in &rows[1..] {
        let rps: f64 = cells(tracked)[2]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rps > 0.0, "{tracked}");
        // Every SET overwrites a value somewhere in ~100 MB: tracked, the first write to each
        // page after it was armed or harvested is a write-protect fault.
        assert!(faults(tracked) > untracked + 0.1, "{text}");
    }
}
