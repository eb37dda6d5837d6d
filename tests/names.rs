//! Names the target chose (its files', its own): bytes that are not UTF-8 must not stop
//! tracking and come back exactly from the NDJSON; terminal escapes in them must reach no
//! terminal (human output, warnings) and break no document (the report's SVG and HTML).

use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::*;

/// A name's bytes, by the rule the schema and README give (written here again, not taken from
/// the crate): `\\` is a backslash, `\xNN` the byte NN, anything else itself.
fn name_bytes(text: &str) -> Vec<u8> {
    let (b, mut out, mut i) = (text.as_bytes(), Vec::new(), 0);
    while i < b.len() {
        let (byte, len) = match (b[i], b.get(i + 1)) {
            (b'\\', Some(b'\\')) => (b'\\', 2),
            (b'\\', Some(b'x')) => {
                let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                (u8::from_str_radix(hex, 16).unwrap(), 4)
            }
            (c, _) => (c, 1),
        };
        out.push(byte);
        i += len;
    }
    out
}

/// `tests/c/odd_names.c` mapping its hostile names in `dir` (`bytes` or `escapes`), once it is
/// ready; `None` (skipped, said why) without a compiler or a kernel that can track.
pub fn odd_names(dir: &Path, mode: &str) -> Option<CProgram> {
    if !kernel_can_track() {
        return None;
    }
    let exe = c_build("odd_names", &[])?;
    Some(CProgram::spawn(&exe, &[dir.to_str().unwrap(), mode]))
}

/// `dir/name` as the kernel shows it in `/proc/PID/maps`.
fn path_bytes(dir: &Path, name: &[u8]) -> Vec<u8> {
    let mut p = dir.as_os_str().as_bytes().to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// The `[start, end)` of the mapping records or ranges in `list` whose name decodes to `bytes`.
fn named<'a>(list: impl IntoIterator<Item = &'a Value>, bytes: &[u8]) -> Vec<(u64, u64)> {
    list.into_iter()
        .filter(|r| name_bytes(r["mapping"].as_str().unwrap()) == bytes)
        .map(|r| (hex(&r["start"]), hex(&r["end"])))
        .collect()
}

/// Whether some delta reported a page of `[start, end)` written.
fn written(records: &[Value], (start, end): (u64, u64)) -> bool {
    records
        .iter()
        .filter(|r| r["type"] == "delta")
        .flat_map(|d| d["ranges"].as_array().unwrap())
        .any(|r| hex(&r["start"]) < end && start < hex(&r["end"]))
}

/// A target that maps files whose names are not UTF-8 (and names itself so), before the
/// attach and while tracked: it is tracked all the same, every record is valid against the
/// schema, and each name decodes, by the documented rule, to the bytes of its path.
#[test]
fn names_that_are_not_utf8_are_tracked_and_come_back_exactly() {
    let dir = scratch();
    let Some(mut target) = odd_names(dir.path(), "bytes") else {
        return;
    };
    let pid = target.pid.to_string();
    let mut tracker = Tracker::spawn(&["--pid", &pid, "--interval=20ms"], None);
    tracker.wait_deltas(3);
    // Mapped while tracked: one more, and one already unlinked (" (deleted)").
    target
        .child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"m")
        .unwrap();
    let mut line = String::new();
    target.stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "mapped\n");
    let late = path_bytes(dir.path(), b"late\xc3\x28 after");
    let gone = [path_bytes(dir.path(), b"gone\xff"), b" (deleted)".to_vec()].concat();
    let mut n = tracker.records.len();
    while named(
        tracker.records.iter().filter(|r| r["type"] == "mapping"),
        &gone,
    )
    .is_empty()
    {
        tracker.next_record().expect("the tracker ended early");
        n += 1;
    }
    tracker.wait_deltas(
        tracker
            .records
            .iter()
            .filter(|r| r["type"] == "delta")
            .count()
            + 3,
    );
    assert!(tracker.records.len() > n);
    tracker.signal(libc::SIGINT);
    let (status, records) = tracker.finish();
    drop(target);

    assert!(status.success(), "{status}");
    for r in &records {
        assert_schema(r);
        // Printable: what jq -r prints acts on no terminal.
        let text = r.to_string();
        assert!(!text.contains("\\u00"), "a control character in {text}");
    }
    assert_eq!(records.last().unwrap()["reason"], "signal");
    // The schema holds names to the rule: a raw control, a lone backslash or a bad `\x` fail.
    for bad in ["/x\u{1b}]0;t\u{7}", r"/x\y", r"/x\xff\x4", "/x\u{202e}"] {
        let mut start = records[0].clone();
        start["ranges"][0]["mapping"] = bad.into();
        assert!(
            !schema_errors(&start).is_empty(),
            "{bad:?} passed the schema"
        );
    }
    let before = path_bytes(dir.path(), b"a\xff\xfe-before");
    let at_attach = named(records[0]["ranges"].as_array().unwrap(), &before);
    assert_eq!(
        at_attach.len(),
        1,
        "{} in {}",
        String::from_utf8_lossy(&before),
        records[0]
    );
    assert!(
        written(&records, at_attach[0]),
        "no write seen to {at_attach:?}"
    );
    let added: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "mapping" && r["event"] == "added")
        .collect();
    for name in [late, gone] {
        let found = named(added.iter().copied(), &name);
        assert_eq!(
            found.len(),
            1,
            "{} not added: {added:?}",
            String::from_utf8_lossy(&name)
        );
        assert!(written(&records, found[0]), "no write seen to {found:?}");
    }
}

/// Tracks an `escapes` target for a few deltas in `format`; (stdout, stderr).
fn track_escapes(pid: i32, format: &str) -> (Vec<u8>, Vec<u8>) {
    let out = uffd_dirty()
        .args([
            "track",
            "--pid",
            &pid.to_string(),
            "--interval=20ms",
            "--count=6",
        ])
        .arg(format!("--format={format}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (out.stdout, out.stderr)
}

fn assert_no_escapes(what: &str, bytes: &[u8]) {
    for bad in [0x1b, 0x07, 0x9b] {
        assert!(
            !bytes.contains(&bad),
            "{what} holds the byte {bad:#x}:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// Human output and the tracker's warnings show the names `\e]0;pwned\a` (sets a terminal's
/// title) and `\e[2J\e[8m` (clears it, hides text) escaped, never as the bytes.
#[test]
fn escapes_in_names_never_reach_the_terminal() {
    let dir = scratch();
    let Some(_target) = odd_names(dir.path(), "escapes") else {
        return;
    };
    let (stdout, stderr) = track_escapes(_target.pid, "human");
    assert_no_escapes("human output", &stdout);
    assert_no_escapes("stderr", &stderr);
    let (stdout, stderr) = (
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    );
    // Written to, so in the per-delta top mappings and the end table; the shared read-only
    // one cannot be armed: listed as skipped (never writable, so not warned about on stderr).
    assert!(stdout.contains(r"\x1b]0;pwned\x07"), "{stdout}");
    assert!(stdout.contains(r"\x1b[2J\x1b[8m"), "{stdout}");
    assert!(
        stdout.contains(r"skipped") && stdout.contains(r"/\x1b]0;pwned\x07: shared mapping"),
        "{stdout}\n{stderr}"
    );
}

/// Whether python3's XML parser takes `path`; None without python3.
fn xml_error(path: &Path) -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
        ])
        .arg(path)
        .stderr(Stdio::piped())
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).into_owned()),
        Err(e) => {
            skipped(format!("the XML check: no python3 ({e})"));
            None
        }
    }
}

/// Renders `trace` to SVG and HTML: both hold no raw escape byte, the SVG is well-formed XML
/// and both name `shown` (an escaped name) in text.
fn assert_reports_safe(dir: &Path, trace: &Path, shown: &str) {
    for ext in ["svg", "html"] {
        let out_path = dir.join(format!("report.{ext}"));
        let out = uffd_dirty()
            .arg("report")
            .arg(trace)
            .arg("-o")
            .arg(&out_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = std::fs::read(&out_path).unwrap();
        assert_no_escapes(ext, &text);
        assert!(
            !text.iter().any(|&b| b < 0x20 && b != b'\n'),
            "{ext} holds a control byte"
        );
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(shown), "{ext} does not name {shown}");
        if ext == "svg"
            && let Some(e) = xml_error(&out_path)
        {
            panic!("the SVG is not well-formed XML: {e}");
        }
    }
}

/// The report of a real run of the `escapes` target, and of a trace written by hand whose
/// names hold raw control characters (a trace is any file): escaped in both documents, the
/// SVG well-formed.
#[test]
fn escapes_in_names_break_no_report() {
    let dir = scratch();
    let Some(target) = odd_names(dir.path(), "escapes") else {
        return;
    };
    let (stdout, _) = track_escapes(target.pid, "json");
    drop(target);
    let trace = dir.path().join("run.ndjson");
    std::fs::write(&trace, &stdout).unwrap();
    assert_reports_safe(dir.path(), &trace, r"\x1b]0;pwned\x07");

    // Raw, as JSON allows them: ESC, BEL, a C1 CSI, U+FFFF (no XML character), a form feed.
    let start = r#"{"type":"start","version":1,"pid":7,"page_size":4096,"method":"pagemap-scan\u001b[2J","interval_ms":100,"ranges":[{"start":"0x10000","end":"0x14000","pages":4,"mapping":"/x/\u001b]0;pwned\u0007\u009b\uffff\f","kind":"file"}],"skipped":[],"arm_method":"pagemap-scan","attach_us":1,"thread_stopped_us":1,"time":"2026-01-01T00:00:00Z"}"#;
    let delta = r#"{"type":"delta","seq":1,"time":"2026-01-01T00:00:00.100Z","elapsed_ms":100,"dirty_pages":1,"ranges":[{"start":"0x10000","end":"0x11000","pages":1}],"scan_us":5}"#;
    let end = r#"{"type":"end","reason":"error","deltas":1,"dirty_pages_total":1,"error":"\u001b[8mhidden","time":"2026-01-01T00:00:00.101Z"}"#;
    std::fs::write(&trace, format!("{start}\n{delta}\n{end}\n")).unwrap();
    assert_reports_safe(
        dir.path(),
        &trace,
        r"\x1b]0;pwned\x07\xc2\x9b\xef\xbf\xbf\x0c",
    );
}
