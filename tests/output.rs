use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use serde_json::Value;
use uffd_dirty::{Span, SpanSet};

use crate::common::*;

#[test]
fn every_record_matches_the_published_schema() {
    if !kernel_can_track() {
        return;
    }
    // The new image lives half a second after its writes: on a loaded machine the tracker
    // must get to run between the exec and the exit to see the exec at all.
    let script =
        format!("sleep 0.1; exec {BIN} writer --pages=256 --bursts=20 --gap=3ms --linger=500ms");
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
            let span = Span::new(hex(&b["start"]), hex(&b["end"]));
            let bits = b["bits"].as_str().unwrap();
            assert_eq!(
                bits.len() as u64,
                (span.len() / page).div_ceil(8) * 2,
                "bitmap length of {b}"
            );
            let start = b["start"].as_str().unwrap();
            decoded.extend(
                bitmap_pages(start, bits)
                    .into_iter()
                    .map(|at| Span::new(at, at + page)),
            );
        }
        let decoded = SpanSet::from(decoded);
        let ranges: Vec<_> = d["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| Span::new(hex(&r["start"]), hex(&r["end"])))
            .collect();
        assert_eq!(decoded, SpanSet::from(ranges), "delta {}", d["seq"]);
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

#[test]
fn names_of_our_own_fds_are_accepted() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let target = Sleeper::new();
    for (name, fd) in [
        ("-", 1),
        ("/dev/stdout", 1),
        ("/proc/self/fd/1", 1),
        ("/dev/stderr", 2),
        ("/dev/fd/2", 2),
    ] {
        // Stdout and stderr are a file opened for appending: written through, not reopened
        // and truncated.
        let log = dir.path().join("log");
        std::fs::write(&log, "before\n").unwrap();
        let append = || std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let mut cmd = uffd_dirty();
        cmd.args([
            "track",
            "-f",
            "json",
            "-n",
            "1",
            "--interval=10ms",
            "-o",
            name,
        ])
        .args(["--pid", &target.pid()]);
        let status = if fd == 1 {
            cmd.stdout(append()).stderr(Stdio::null()).status()
        } else {
            cmd.stderr(append()).stdout(Stdio::null()).status()
        }
        .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(status.success(), "-o {name}: {text}");
        assert!(
            text.starts_with("before\n")
                && text.contains("\n{\"type\":\"start\"")
                && text.contains("\n{\"type\":\"end\""),
            "-o {name}: {text}"
        );
    }
    // An fd that is not open is a one-line error.
    let out = uffd_dirty()
        .args([
            "track",
            "-n",
            "1",
            "-o",
            "/proc/self/fd/57",
            "--pid",
            &target.pid(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("fd 57 is not open"), "{err}");
}

#[test]
fn a_fifo_waits_for_its_reader_and_a_signal_ends_the_wait() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let fifo = dir.path().join("records.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let target = Sleeper::new();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut tracker = uffd_dirty()
            .args(["track", "-f", "json", "-n", "1", "-o"])
            .arg(&fifo)
            .args(["--pid", &target.pid()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(tracker.try_wait().unwrap().is_none(), "did not wait");
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(tracker.id() as i32, sig) };
        let ended = wait_until(std::time::Duration::from_secs(5), || {
            tracker.try_wait().unwrap().is_some()
        });
        if !ended {
            let _ = tracker.kill();
        }
        let out = tracker.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(ended, "signal {sig} did not end the wait for a reader");
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains("waiting for a reader of the FIFO")
                && err.contains("stopped while waiting for a reader")
                && err.contains("nothing was tracked"),
            "{err}"
        );
        assert_eq!(tracer_pid(target.0.id() as i32), 0);
    }
    // With a reader, the records go through it.
    let reader = std::process::Command::new("cat")
        .arg(&fifo)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = uffd_dirty()
        .args(["track", "-f", "json", "-n", "1", "--interval=10ms", "-o"])
        .arg(&fifo)
        .args(["--pid", &target.pid()])
        .status()
        .unwrap();
    let out = reader.wait_with_output().unwrap();
    assert!(status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("{\"type\":\"start\""));
}

#[test]
fn sticky_shared_directories_follow_the_protected_rules() {
    if !is_root() {
        skipped("needs root to make files of user nobody");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = scratch();
    let sticky = dir.path().join("tmp");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let nobody = 65534;
    // `check` writes through the same --output as `track`, without a target.
    let check_to = |path: &std::path::Path| {
        uffd_dirty()
            .args(["check", "-f", "json", "-o"])
            .arg(path)
            .output()
            .unwrap()
    };
    let refused = |path: &std::path::Path, says: &str| {
        let out = check_to(path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{}: {err}", path.display());
    };
    let written = |path: &std::path::Path| {
        let out = check_to(path);
        assert!(
            matches!(out.status.code(), Some(0 | 69)),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // Another user's file there (planted 0666): neither written nor reopened.
    let planted = sticky.join("planted.json");
    std::fs::write(&planted, "theirs\n").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(&planted, Some(nobody), None).unwrap();
    refused(&planted, "belongs to user 65534 in a sticky directory");
    assert_eq!(std::fs::read_to_string(&planted).unwrap(), "theirs\n");
    // The same FIFO: refused too, at once.
    let fifo = sticky.join("planted.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    std::os::unix::fs::chown(&fifo, Some(nobody), None).unwrap();
    refused(&fifo, "belongs to user 65534 in a sticky directory");

    // Our own file there, left 0666: written, and made private.
    let own = sticky.join("own.json");
    std::fs::write(&own, "old\n").unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o666)).unwrap();
    written(&own);
    let meta = std::fs::metadata(&own).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&own).unwrap().starts_with('{'));

    // A directory symlink planted there by another user is not followed...
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let link = sticky.join("sub");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(nobody), None).unwrap();
    refused(
        &link.join("out.json"),
        "not followed (as fs.protected_symlinks does)",
    );
    assert!(
        !elsewhere.join("out.json").exists(),
        "the symlink was followed"
    );
    // ...ours is, and so is one outside sticky directories, anyone's.
    let ours = sticky.join("ours");
    std::os::unix::fs::symlink(&elsewhere, &ours).unwrap();
    written(&ours.join("a.json"));
    assert!(elsewhere.join("a.json").exists());
    let plain = dir.path().join("plain");
    std::os::unix::fs::symlink(&elsewhere, &plain).unwrap();
    std::os::unix::fs::lchown(&plain, Some(nobody), None).unwrap();
    written(&plain.join("b.json"));
    assert!(elsewhere.join("b.json").exists());
}

#[test]
fn a_closed_pipe_ends_tracking_at_once() {
    if !kernel_can_track() {
        return;
    }
    let target = Sleeper::new();
    let t0 = std::time::Instant::now();
    // `head` exits after the first line; the next harvest is 10 s away.
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            &format!(
                "{BIN} track --interval 10s --pid {} | head -n 1; echo status=${{PIPESTATUS[0]}}",
                target.pid()
            ),
        ])
        .output()
        .unwrap();
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("tracking PID") && text.contains("status=0"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert_eq!(tracer_pid(target.0.id() as i32), 0);
}

/// `--summary`: the end record's `written` is the union of every delta's ranges, and holds
/// every page the writer wrote.
#[test]
fn the_summary_is_every_page_written_since_attach() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let log = dir.path().join("writer.log");
    let log_arg = log.display().to_string();
    let (status, records, stderr) = track_records(&[
        "--format=json",
        "--interval=20ms",
        "--summary",
        "--",
        BIN,
        "writer",
        "--quiet",
        "--pages=300",
        "--bursts=30",
        "--gap=3ms",
        "--linger=60ms",
        "--log",
        &log_arg,
    ]);
    assert!(status.success(), "{stderr}");
    for r in &records {
        assert_schema(r);
    }
    let span = |r: &Value| Span::new(hex(&r["start"]), hex(&r["end"]));
    let union = SpanSet::from(
        records
            .iter()
            .filter(|r| r["type"] == "delta")
            .flat_map(|d| d["ranges"].as_array().unwrap().iter().map(span))
            .collect::<Vec<_>>(),
    );
    let end = records.last().unwrap();
    let written: SpanSet = end["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(span)
        .collect();
    assert_eq!(written, union, "{end}");
    assert_eq!(end["written_pages"], union.pages(4096), "{end}");
    let truth = truth_from_log(&log);
    let base = hex(&truth.wait["base"]);
    for w in &truth.writes {
        assert!(
            written.contains(base + w.page * 4096),
            "page {} not in the summary",
            w.page
        );
    }
}

/// The pages a bitmap (`START`, `HEX`) marks, by the documented rule: bit i of byte j is the
/// page at START + (8j + i) pages.
fn bitmap_pages(start: &str, hex_bits: &str) -> Vec<u64> {
    let start = u64::from_str_radix(start.trim_start_matches("0x"), 16).unwrap();
    let mut pages = Vec::new();
    for (i, pair) in hex_bits.as_bytes().chunks(2).enumerate() {
        let byte = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
        for bit in (0..8).filter(|b| byte & (1 << b) != 0) {
            pages.push(start + (i as u64 * 8 + bit) * 4096);
        }
    }
    pages
}

/// `--format bitmap --summary`: after the deltas' lines, `written START END HEX` lines over
/// every range tracked at some delta mark exactly the union of the deltas, which holds every
/// page the writer wrote.
#[test]
fn the_bitmap_summary_is_the_union_of_the_deltas() {
    if !kernel_can_track() {
        return;
    }
    let dir = scratch();
    let log = dir.path().join("writer.log");
    let out = uffd_dirty()
        .args([
            "track",
            "--format=bitmap",
            "--interval=20ms",
            "--summary",
            "--",
        ])
        .args([
            BIN,
            "writer",
            "--quiet",
            "--pages=300",
            "--bursts=30",
            "--gap=3ms",
        ])
        .args(["--linger=60ms", "--log"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (mut deltas, mut written) = (BTreeSet::new(), BTreeSet::new());
    let mut summary_lines = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 4, "{line:?}");
        if f[0] == "written" {
            summary_lines += 1;
            written.extend(bitmap_pages(f[1], f[3]));
        } else {
            assert_eq!(summary_lines, 0, "a delta line after the summary: {line:?}");
            f[0].parse::<u64>().unwrap();
            deltas.extend(bitmap_pages(f[1], f[3]));
        }
    }
    assert!(summary_lines > 0, "no summary lines in:\n{text}");
    assert_eq!(written, deltas);
    let truth = truth_from_log(&log);
    let base = hex(&truth.wait["base"]);
    for w in &truth.writes {
        assert!(
            written.contains(&(base + w.page * 4096)),
            "page {} not in the summary",
            w.page
        );
    }
}
