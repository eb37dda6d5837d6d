//! Memory written while it was writable for a moment: what ld.so does to every library it loads
//! (relocate, then `mprotect(PROT_READ)` the RELRO part), by real `dlopen()` and at program start.
//!
//! The oracle is the target's memory itself, read from `/proc/PID/mem` while it sits blocked in
//! `read(2)`: a page that differs from what it was before (or, for a mapping that appeared
//! meanwhile, from its file, or from zero for anonymous memory) was written, and must be in a
//! delta. Pages reported without such a difference are counted as false positives.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use uffd_dirty::{Mapping as Vma, MappingKind, Target, mapping_at};

use crate::common::*;

const PAGE: u64 = 4096;

/// Skip (printing why) unless a C compiler is installed; `.ci/run` installs one.
fn cc_available() -> bool {
    let ok = Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skipped("no C compiler (cc) to build the dlopen() test programs");
    }
    ok
}

fn cc(args: &[&str]) {
    let out = Command::new("cc").args(args).output().expect("running cc");
    assert!(
        out.status.success(),
        "cc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The driver: blocks reading one byte from stdin, dlopen()s every argument (RTLD_NOW, so
/// every relocation is done before the RELRO part is made read-only), says `done N` on
/// stderr, then blocks reading stdin until EOF.
const DRIVER: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char c;
    if (read(0, &c, 1) != 1) return 2;
    for (int i = 1; i < argc; i++) {
        if (!dlopen(argv[i], RTLD_NOW | RTLD_LOCAL)) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            return 3;
        }
    }
    fprintf(stderr, "done %d\n", argc - 1);
    while (read(0, &c, 1) > 0) {}
    return 0;
}
"#;

/// A library whose RELRO part is a table of `n` pointers (each one a relocation), plus some
/// writable data.
fn library_source(variant: usize, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("static const char s{i}[] = \"v{variant}-{i}\";\n"));
    }
    s.push_str(&format!("const char *const table_{variant}[] = {{\n"));
    for i in 0..n {
        s.push_str(&format!("    s{i},\n"));
    }
    s.push_str("};\n");
    s.push_str(&format!(
        "int data_{variant}[2048] = {{ {variant} }};\nconst char *get_{variant}(int i) {{ return table_{variant}[i]; }}\n"
    ));
    s
}

/// Build the driver and `count` libraries (a few variants, each copied under several names:
/// every copy is a distinct file, so dlopen() loads each one).
fn build(dir: &Path, count: usize) -> (PathBuf, Vec<PathBuf>) {
    let driver_c = dir.join("driver.c");
    std::fs::write(&driver_c, DRIVER).unwrap();
    let driver = dir.join("driver");
    cc(&[
        "-O1",
        "-o",
        driver.to_str().unwrap(),
        driver_c.to_str().unwrap(),
        "-ldl",
    ]);
    const VARIANTS: usize = 4;
    let mut built = Vec::new();
    for v in 0..VARIANTS {
        let c = dir.join(format!("lib{v}.c"));
        std::fs::write(&c, library_source(v, 300 + v * 700)).unwrap();
        let so = dir.join(format!("libv{v}.so"));
        cc(&[
            "-shared",
            "-fPIC",
            "-O1",
            "-Wl,-z,relro,-z,now",
            "-o",
            so.to_str().unwrap(),
            c.to_str().unwrap(),
        ]);
        built.push(so);
    }
    let libs = (0..count)
        .map(|i| {
            let to = dir.join(format!("libcopy{i}.so"));
            std::fs::copy(&built[i % VARIANTS], &to).unwrap();
            to
        })
        .collect();
    (driver, libs)
}

/// Every readable page of the target now, by address (special mappings left out).
fn snapshot(pid: i32) -> (Vec<Vma>, BTreeMap<u64, Vec<u8>>) {
    let vmas = Target::open(pid).unwrap().mappings().unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut pages = BTreeMap::new();
    for v in vmas.iter().filter(|v| v.kind() != MappingKind::Special) {
        for a in (v.start..v.end).step_by(PAGE as usize) {
            let mut buf = vec![0u8; PAGE as usize];
            if mem.read_exact_at(&mut buf, a).is_ok() {
                pages.insert(a, buf);
            }
        }
    }
    (vmas, pages)
}

/// A page of a file as a private mapping shows it: zero past the end of the file.
fn file_page(path: &str, offset: u64) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; PAGE as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return None,
        }
    }
    Some(buf)
}

/// What a page held before: its content then, or for a mapping that appeared since, its
/// file's content (file mappings) or zero (anonymous memory). `None`: unknown, not judged.
fn baseline(v: &Vma, addr: u64, before: &BTreeMap<u64, Vec<u8>>, new: bool) -> Option<Vec<u8>> {
    if !new {
        return before.get(&addr).cloned();
    }
    if v.inode != 0 && v.name.starts_with('/') && !v.name.ends_with(" (deleted)") {
        file_page(&v.name, v.offset + (addr - v.start))
    } else if v.inode == 0 {
        Some(vec![0u8; PAGE as usize])
    } else {
        None
    }
}

/// Every page reported by any delta.
fn reported(records: &[Value]) -> BTreeSet<u64> {
    let mut pages = BTreeSet::new();
    for r in records.iter().filter(|r| r["type"] == "delta") {
        for run in r["ranges"].as_array().unwrap() {
            pages.extend((hex(&run["start"])..hex(&run["end"])).step_by(PAGE as usize));
        }
    }
    pages
}

struct Judged {
    changed: BTreeSet<u64>,
    lost: Vec<u64>,
    false_positives: usize,
}

/// Hold the reports against the pages that differ from their baseline, in the mappings
/// `judge` picks.
fn judge(
    after: &(Vec<Vma>, BTreeMap<u64, Vec<u8>>),
    before: &BTreeMap<u64, Vec<u8>>,
    new: impl Fn(&Vma) -> bool,
    judge: impl Fn(&Vma) -> bool,
    reports: &BTreeSet<u64>,
) -> Judged {
    let mut j = Judged {
        changed: BTreeSet::new(),
        lost: Vec::new(),
        false_positives: 0,
    };
    for v in after.0.iter().filter(|v| judge(v)) {
        for (&a, content) in after.1.range(v.start..v.end) {
            let Some(base) = baseline(v, a, before, new(v)) else {
                continue;
            };
            if *content != base {
                j.changed.insert(a);
                if !reports.contains(&a) {
                    j.lost.push(a);
                }
            } else if reports.contains(&a) {
                j.false_positives += 1;
            }
        }
    }
    j
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

/// dlopen() of 40 libraries between two harvests: ld.so writes every relocation of their
/// RELRO parts and makes them read-only before the tracker first sees them.
#[test]
fn real_dlopen_of_many_libraries_loses_nothing() {
    if !kernel_can_track() || !cc_available() {
        return;
    }
    let dir = scratch();
    let (driver, libs) = build(dir.path(), 40);
    let mut child = Command::new(&driver)
        .args(&libs)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // Snapshots are taken while the driver is blocked in read(2) on stdin (fd 0).
    let in_read = || {
        std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .is_ok_and(|s| s.starts_with("0 0x0 "))
    };
    assert!(wait_until(std::time::Duration::from_secs(5), in_read));
    let pid_arg = pid.to_string();
    let tracker = Tracker::spawn(&["--pid", &pid_arg, "--interval", "50ms"], None);
    let before = snapshot(pid);
    stdin.write_all(b"g").unwrap();
    let done = read_line(&mut stderr);
    assert_eq!(done.trim(), "done 40", "the driver said {done:?}");
    assert!(wait_until(std::time::Duration::from_secs(5), in_read));
    let after = snapshot(pid);
    tracker.signal(libc::SIGINT);
    let (status, records) = tracker.finish();
    assert!(status.success(), "tracker: {status:?}");
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let known: BTreeSet<(u64, u64, u64)> =
        before.0.iter().map(|v| (v.start, v.end, v.inode)).collect();
    let is_new = |v: &Vma| !known.contains(&(v.start, v.end, v.inode));
    let ours = |v: &Vma| v.name.contains("/libcopy");
    let reports = reported(&records);
    let all = judge(&after, &before.1, is_new, |_| true, &reports);
    let libraries = judge(&after, &before.1, is_new, ours, &reports);
    eprintln!(
        "dlopen of 40 libraries: {} pages changed ({} in the libraries), {} lost ({} in the libraries); {} false positives in the libraries (pages read, not written, before the tracker saw them)",
        all.changed.len(),
        libraries.changed.len(),
        all.lost.len(),
        libraries.lost.len(),
        libraries.false_positives
    );
    assert!(
        libraries.changed.len() >= 40,
        "the libraries' relocations changed pages"
    );
    assert!(
        all.lost.is_empty(),
        "LOST {} of {} changed pages: {:x?}",
        all.lost.len(),
        all.changed.len(),
        describe(&after.0, &all.lost)
    );
}

/// `track -- CMD`: ld.so relocates libc (and the program) after the tracker armed the new
/// image, then makes the RELRO parts read-only; those pages must be reported.
#[test]
fn launch_mode_reports_the_libraries_relro_pages() {
    if !kernel_can_track() || !cc_available() {
        return;
    }
    let dir = scratch();
    let (driver, _) = build(dir.path(), 0);
    let mut tracker = Command::new(BIN)
        .args(["track", "--format=json", "--interval=20ms", "--"])
        .arg(&driver)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(tracker.stdout.take().unwrap());
    let mut records: Vec<Value> = Vec::new();
    let mut next = |records: &mut Vec<Value>| {
        let line = read_line(&mut stdout);
        assert!(!line.is_empty(), "the tracker ended early");
        records.push(serde_json::from_str(&line).unwrap());
    };
    next(&mut records);
    assert_eq!(records[0]["type"], "start");
    let pid = records[0]["pid"].as_i64().unwrap() as i32;
    // ld.so is done long before the third delta: the driver sits in read(2).
    while records.iter().filter(|r| r["type"] == "delta").count() < 3 {
        next(&mut records);
    }
    let after = snapshot(pid);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(tracker.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    records.extend(
        rest.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()),
    );
    drop(tracker.stdin.take());
    assert!(tracker.wait().unwrap().success());
    assert_eq!(records.last().unwrap()["type"], "end");
    // Libraries ld.so mapped after the exec: every page that differs from its file was
    // written after the tracker armed the new image. (The program's own image and ld.so were
    // mapped, and their bss edges zeroed, by the kernel before it: not judged.)
    let exe = driver.to_str().unwrap();
    let loaded = |v: &Vma| {
        v.inode != 0 && v.name.starts_with('/') && v.name != exe && !v.name.contains("/ld-linux")
    };
    let reports = reported(&records);
    let j = judge(&after, &BTreeMap::new(), |_| true, loaded, &reports);
    let libc_changed = j
        .changed
        .iter()
        .filter(|&&a| mapping_at(&after.0, a).is_some_and(|v| v.name.contains("/libc.so")))
        .count();
    eprintln!(
        "launch: {} pages of loaded libraries differ from their files ({libc_changed} of libc), {} lost, {} false positives",
        j.changed.len(),
        j.lost.len(),
        j.false_positives
    );
    assert!(libc_changed > 0, "ld.so relocated libc");
    assert!(
        j.lost.is_empty(),
        "LOST {} of {} changed pages: {:x?}",
        j.lost.len(),
        j.changed.len(),
        describe(&after.0, &j.lost)
    );
}

/// The lost pages with the mapping each lies in.
fn describe(vmas: &[Vma], pages: &[u64]) -> Vec<String> {
    pages
        .iter()
        .take(20)
        .map(|&a| {
            mapping_at(vmas, a).map_or(format!("{a:#x}"), |v| {
                format!(
                    "{a:#x} {}{}{}{} {}",
                    if v.read { 'r' } else { '-' },
                    if v.write { 'w' } else { '-' },
                    if v.exec { 'x' } else { '-' },
                    if v.shared { 's' } else { 'p' },
                    v.display_name()
                )
            })
        })
        .collect()
}
