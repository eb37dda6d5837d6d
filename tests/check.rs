//! `uffd-dirty check` against this machine: the JSON shape, the exit code, soft-dirty held
//! against a round trip in this process, and the PAGEMAP_SCAN categories.

use std::process::Output;

use serde_json::Value;

use crate::common::{skipped, uffd_dirty};

/// Every item `check` reports, in order.
const ITEMS: &[&str] = &[
    "kernel",
    "userfaultfd",
    "/dev/userfaultfd",
    "vm.unprivileged_userfaultfd",
    "WP_ASYNC",
    "WP_UNPOPULATED",
    "WP_HUGETLBFS_SHMEM",
    "PAGEFAULT_FLAG_WP",
    "PAGEMAP_SCAN",
    "PAGE_IS_*",
    "pmd-hole-fix",
    "soft-dirty",
    "pidfd_open",
    "pidfd_getfd",
    "ptrace",
    "yama",
    "suspend-seccomp",
    "thp",
    "hugetlb",
];

fn check(args: &[&str]) -> Output {
    uffd_dirty()
        .arg("check")
        .args(args)
        .output()
        .expect("running uffd-dirty check")
}

/// `check --format json`: the one object it prints, and its exit code.
fn check_json() -> (Value, i32) {
    let out = check(&["--format", "json"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON object on one line: {stdout}"
    );
    let v: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON: {stdout:?}: {e}"));
    (v, out.status.code().expect("exited normally"))
}

fn item<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no item {name} in {report}"))
}

#[test]
fn check_json_has_every_item() {
    let (v, _) = check_json();
    assert!(v["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{v}");
    assert!(v["track_possible"].is_boolean(), "{v}");
    assert!(v["soft_dirty"].is_boolean(), "{v}");
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ITEMS);
    for i in v["items"].as_array().unwrap() {
        assert!(i["found"].as_str().is_some_and(|f| !f.is_empty()), "{i}");
        match i["status"].as_str().unwrap() {
            "ok" => assert!(i["meaning"].is_null() && i["fix"].is_null(), "{i}"),
            "missing" => assert!(
                i["meaning"].as_str().is_some_and(|m| !m.is_empty())
                    && i["fix"].as_str().is_some_and(|f| !f.is_empty()),
                "{i}"
            ),
            "note" => assert!(i["meaning"].as_str().is_some_and(|m| !m.is_empty()), "{i}"),
            s => panic!("unknown status {s}: {i}"),
        }
    }
}

#[test]
fn check_exit_code_agrees_with_track_possible() {
    let (v, code) = check_json();
    let possible = v["track_possible"].as_bool().unwrap();
    assert_eq!(code, if possible { 0 } else { 69 }, "{v}");
    let ok = |name| item(&v, name)["status"] == "ok";
    assert_eq!(
        possible,
        ok("WP_ASYNC") && ok("WP_UNPOPULATED") && ok("PAGEMAP_SCAN"),
        "{v}"
    );
    // The same verdict `track` reaches at startup, in this process.
    let here = uffd_dirty::probe::Support::detect().require(uffd_dirty::Method::PagemapScan);
    assert_eq!(possible, here.is_ok(), "{v} / {here:?}");
}

/// The running kernel's config, when this machine exposes it.
fn kernel_config() -> Option<String> {
    if std::path::Path::new("/proc/config.gz").exists() {
        match std::process::Command::new("zcat")
            .arg("/proc/config.gz")
            .output()
        {
            Ok(out) if out.status.success() => return String::from_utf8(out.stdout).ok(),
            other => eprintln!("cannot read /proc/config.gz with zcat: {other:?}"),
        }
    }
    let boot = format!("/boot/config-{}", uffd_dirty::probe::kernel_release());
    std::fs::read_to_string(boot).ok()
}

#[test]
fn check_soft_dirty_matches_round_trip() {
    let (v, _) = check_json();
    let reported = v["soft_dirty"].as_bool().unwrap();
    let here = crate::common::soft_dirty_works();
    assert_eq!(reported, here, "{v}");
    assert_eq!(item(&v, "soft-dirty")["status"] == "ok", reported, "{v}");
    match kernel_config() {
        Some(config)
            if config
                .lines()
                .any(|l| l == "# CONFIG_MEM_SOFT_DIRTY is not set") =>
        {
            assert!(
                !reported,
                "soft-dirty reported working without CONFIG_MEM_SOFT_DIRTY: {v}"
            );
        }
        Some(_) => {}
        None => eprintln!("no kernel config on this machine: checked the round trip only"),
    }
}

#[test]
fn check_human_output_has_one_line_per_item() {
    let out = check(&[]);
    let (_, json_code) = check_json();
    assert_eq!(out.status.code(), Some(json_code));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), ITEMS.len(), "{stdout}");
    for (line, name) in lines.iter().zip(ITEMS) {
        let mut words = line.split_whitespace();
        let status = words.next().unwrap();
        assert!(["ok", "missing", "note"].contains(&status), "{line}");
        assert_eq!(words.next(), Some(*name), "{line}");
        assert!(!line.contains('\x1b'), "no colour into a pipe: {line:?}");
    }
}

#[test]
fn check_pagemap_scan_accepts_the_6_7_categories() {
    let support = uffd_dirty::probe::Support::detect();
    let scan = support
        .items
        .iter()
        .find(|i| i.name == "PAGEMAP_SCAN")
        .map(|i| i.status);
    if scan != Some(uffd_dirty::probe::Status::Ok) {
        skipped(format!("no PAGEMAP_SCAN on this kernel ({scan:?})"));
        return;
    }
    let (v, _) = check_json();
    assert_eq!(item(&v, "PAGEMAP_SCAN")["status"], "ok", "{v}");
    let categories = item(&v, "PAGE_IS_*");
    let found = categories["found"].as_str().unwrap();
    let hex = found.split(':').next().unwrap();
    let mask = u64::from_str_radix(hex.strip_prefix("0x").unwrap(), 16).unwrap();
    // WPALLOWED, WRITTEN, FILE, PRESENT, SWAPPED, PFNZERO, HUGE: PAGE_IS_* bits 0..=6.
    assert_eq!(mask & 0x7f, 0x7f, "{categories}");
    for name in [
        "WPALLOWED",
        "WRITTEN",
        "FILE",
        "PRESENT",
        "SWAPPED",
        "PFNZERO",
        "HUGE",
    ] {
        assert!(
            found
                .split(';')
                .next()
                .unwrap()
                .split_whitespace()
                .any(|w| w == name),
            "{name} not accepted: {categories}"
        );
    }
}
