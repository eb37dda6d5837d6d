//! `uffd-dirty snapshot`: rounds taken of live processes (the writer, the living-address-space
//! scenarios, python3, sqlite3), held against the target's memory as the test reads it itself
//! from /proc/PID/mem while the target is stopped, page for page; a round N rebuilt exactly as
//! the memory was when it was taken; and what a killed snapshotter, a full disk, a target that
//! writes too fast, triggers and bad input leave behind.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

const PAGE: u64 = 4096;

/// How long a test waits for a record, a stop or an exit before it calls the program hung.
const PATIENCE: Duration = Duration::from_secs(60);

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(pid, sig) };
}

/// Resumes (SIGCONT) a target when dropped, also on panic, so that the guard dropped after it
/// (a `Writer`, a `Proc`) can kill and reap it.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// A process the test started: resumed, killed and reaped when dropped.
struct Proc {
    child: Child,
    pid: i32,
    stdin: Option<ChildStdin>,
    lines: Option<Receiver<String>>,
}

impl Proc {
    /// Start `cmd` with piped stdin and stdout (its stdout read line by line by a thread).
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let lines = Some(read_lines(child.stdout.take().unwrap()));
        Proc {
            pid: child.id() as i32,
            child,
            stdin,
            lines,
        }
    }

    /// The next line it prints, within `timeout`; `None` on a timeout or its end.
    fn line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.as_ref().unwrap().recv_timeout(timeout).ok()
    }

    fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        signal(self.pid, libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of `from`, read by a thread, as they come.
fn read_lines(from: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `uffd-dirty snapshot --format json` running, its records read as they come.
struct Snapshotter {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    records: Vec<Value>,
}

#[derive(Debug)]
enum Next {
    Record(Value),
    /// Its stdout ended (it exited).
    Closed,
    TimedOut,
}

impl Snapshotter {
    fn spawn(pid: i32, dir: &Path, args: &[&str]) -> Snapshotter {
        Self::spawn_with(pid, dir, args, Stdio::inherit())
    }

    fn spawn_with(pid: i32, dir: &Path, args: &[&str], stderr: Stdio) -> Snapshotter {
        let mut child = uffd_dirty()
            .args([
                "snapshot",
                "--format",
                "json",
                "--pid",
                &pid.to_string(),
                "--dir",
            ])
            .arg(dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting uffd-dirty snapshot");
        let stdin = child.stdin.take();
        let lines = read_lines(child.stdout.take().unwrap());
        Snapshotter {
            child,
            stdin,
            lines,
            records: Vec::new(),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn try_next(&mut self, timeout: Duration) -> Next {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("snapshot printed {line:?}, not JSON: {e}"));
                self.records.push(v.clone());
                Next::Record(v)
            }
            Err(RecvTimeoutError::Timeout) => Next::TimedOut,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }

    fn next(&mut self) -> Value {
        match self.try_next(PATIENCE) {
            Next::Record(v) => v,
            other => panic!(
                "no record from the snapshot ({other:?}); so far: {:#?}",
                self.records
            ),
        }
    }

    /// The record of round `n`, which must be the next record.
    fn round(&mut self, n: u64) -> Value {
        let r = self.next();
        assert_eq!(
            (r["type"].as_str(), r["round"].as_u64()),
            (Some("round"), Some(n)),
            "expected the record of round {n}, got {r}"
        );
        r
    }

    /// Records up to the end record, which is returned.
    fn end(&mut self) -> Value {
        loop {
            let r = self.next();
            if r["type"] == "end" {
                return r;
            }
        }
    }

    fn trigger_line(&mut self) -> bool {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(b"round\n")
            .and_then(|()| stdin.flush())
            .is_ok()
    }

    fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// Its exit code, waiting for it.
    fn exit_code(&mut self) -> Option<i32> {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(t0.elapsed() < PATIENCE, "the snapshot does not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn rounds_of_kind(&self, kind: &str) -> usize {
        self.records
            .iter()
            .filter(|r| r["type"] == "round" && r["kind"] == kind)
            .count()
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmpfs mounted for the test, unmounted when dropped (also on panic).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `uffd-dirty snapshot ARGS` run to its end.
fn snapshot(args: &[&str]) -> Output {
    uffd_dirty().arg("snapshot").args(args).output().unwrap()
}

fn dir_arg(p: &Path) -> &str {
    p.to_str().expect("scratch paths are UTF-8")
}

fn records_of(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn manifest(dir: &Path) -> Value {
    let path = dir.join("manifest.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
    )
    .unwrap()
}

fn round_kinds(manifest: &Value) -> Vec<String> {
    manifest["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect()
}

/// The states (`R`, `S`, `T`…) of every thread of `pid`.
fn thread_states(pid: i32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.ok()?.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            rest.trim_start().chars().next()
        })
        .collect()
}

fn all_stopped(pid: i32) -> bool {
    let s = thread_states(pid);
    !s.is_empty() && s.iter().all(|c| matches!(c, 'T' | 't'))
}

fn none_stopped(pid: i32) -> bool {
    let s = thread_states(pid);
    !s.is_empty() && !s.iter().any(|c| matches!(c, 'T' | 't'))
}

/// The target runs as before: not stopped, not traced, no userfaultfd left in it.
fn assert_untouched(pid: i32) {
    assert!(
        wait_until(Duration::from_secs(3), || none_stopped(pid)
            && tracer_pid(pid) == 0
            && !has_userfaultfd(pid)),
        "PID {pid} is not left as it was: threads {:?}, TracerPid {}, userfaultfd {}",
        thread_states(pid),
        tracer_pid(pid),
        has_userfaultfd(pid)
    );
}

/// The first word of each page of the writer's region (it writes one word per page).
fn region_words(pid: i32, base: u64, pages: u64) -> Vec<u64> {
    let mem = File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut buf = vec![0u8; (pages * PAGE) as usize];
    // In 4 MiB pieces.
    for (i, chunk) in buf.chunks_mut(4 << 20).enumerate() {
        mem.read_exact_at(chunk, base + (i as u64) * (4 << 20))
            .unwrap();
    }
    buf.chunks(PAGE as usize)
        .map(|p| u64::from_ne_bytes(p[..8].try_into().unwrap()))
        .collect()
}

/// The writer writes (pages of its region change) within a few seconds.
fn assert_keeps_writing(pid: i32, base: u64, pages: u64) {
    let before = region_words(pid, base, pages);
    assert!(
        wait_until(Duration::from_secs(5), || region_words(pid, base, pages)
            != before),
        "PID {pid} wrote nothing into its region in 5 s"
    );
}

/// One mapping of a materialized image (`mappings.json`).
#[derive(Debug, Clone)]
struct ImageMapping {
    start: u64,
    end: u64,
    perms: String,
    kind: String,
    name: String,
    file: PathBuf,
}

impl ImageMapping {
    fn label(&self) -> String {
        format!(
            "{:#x}-{:#x} {} {} {:?}",
            self.start, self.end, self.perms, self.kind, self.name
        )
    }
}

/// `snapshot materialize --dir DIR [--round N] --out OUT`, checked, and the mappings it wrote.
fn materialize(dir: &Path, round: Option<u64>, out: &Path) -> Vec<ImageMapping> {
    let mut cmd = uffd_dirty();
    cmd.args(["snapshot", "materialize", "--dir", dir_arg(dir)]);
    if let Some(r) = round {
        cmd.args(["--round", &r.to_string()]);
    }
    let o = cmd.args(["--out", dir_arg(out)]).output().unwrap();
    assert!(
        o.status.success(),
        "materialize {round:?}: {:?}: {}{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    let list: Value =
        serde_json::from_slice(&std::fs::read(out.join("mappings.json")).unwrap()).unwrap();
    let mappings: Vec<ImageMapping> = list
        .as_array()
        .expect("mappings.json is an array")
        .iter()
        .map(|m| ImageMapping {
            start: m["start"].as_u64().unwrap(),
            end: m["end"].as_u64().unwrap(),
            perms: m["perms"].as_str().unwrap().into(),
            kind: m["kind"].as_str().unwrap().into(),
            name: m["name"].as_str().unwrap().into(),
            file: out.join(m["file"].as_str().unwrap()),
        })
        .collect();
    for m in &mappings {
        let len = std::fs::metadata(&m.file)
            .unwrap_or_else(|e| panic!("{}: {e}", m.file.display()))
            .len();
        assert_eq!(len, m.end - m.start, "size of the file of {}", m.label());
    }
    mappings
}

/// The memory of `start..end` as the test reads it: its bytes, and the pages it could not read.
struct Dump {
    start: u64,
    end: u64,
    bytes: Vec<u8>,
    unreadable: BTreeSet<u64>,
}

fn dump(mem: &File, start: u64, end: u64) -> Dump {
    let mut bytes = vec![0u8; (end - start) as usize];
    let mut unreadable = BTreeSet::new();
    const CHUNK: u64 = 1 << 20;
    let mut at = start;
    while at < end {
        let n = CHUNK.min(end - at);
        let buf = &mut bytes[(at - start) as usize..(at - start + n) as usize];
        if mem.read_exact_at(buf, at).is_err() {
            // Page by page, to know which.
            for (i, page) in buf.chunks_mut(PAGE as usize).enumerate() {
                let addr = at + i as u64 * PAGE;
                if mem.read_exact_at(page, addr).is_err() {
                    unreadable.insert(addr);
                    page.fill(0);
                }
            }
        }
        at += n;
    }
    Dump {
        start,
        end,
        bytes,
        unreadable,
    }
}

/// What differs between an image mapping's file and a dump of the same addresses: one line
/// per differing page.
fn page_differences(m: &ImageMapping, d: &Dump, problems: &mut Vec<String>) -> u64 {
    assert_eq!((m.start, m.end), (d.start, d.end));
    let file = File::open(&m.file).unwrap();
    let mut image = vec![0u8; (m.end - m.start) as usize];
    file.read_exact_at(&mut image, 0).unwrap();
    let mut compared = 0;
    for (i, (want, got)) in d
        .bytes
        .chunks(PAGE as usize)
        .zip(image.chunks(PAGE as usize))
        .enumerate()
    {
        let addr = m.start + i as u64 * PAGE;
        if d.unreadable.contains(&addr) {
            problems.push(format!(
                "page {addr:#x} of {}: unreadable in /proc/PID/mem",
                m.label()
            ));
            continue;
        }
        compared += 1;
        if want != got {
            let at = want.iter().zip(got).position(|(a, b)| a != b).unwrap();
            let zeros = |p: &[u8]| {
                if p.iter().all(|&b| b == 0) {
                    " (zeros)"
                } else {
                    ""
                }
            };
            problems.push(format!(
                "page {addr:#x} of {}: differs from byte {at}: memory{} vs image{}",
                m.label(),
                zeros(want),
                zeros(got)
            ));
        }
    }
    compared
}

/// The VMAs of `/proc/PID/maps`: start, end, perms, name.
fn maps(pid: i32) -> Vec<(u64, u64, String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(6, ' ').collect();
            let (s, e) = f[0].split_once('-').unwrap();
            (
                u64::from_str_radix(s, 16).unwrap(),
                u64::from_str_radix(e, 16).unwrap(),
                f[1].to_string(),
                f.get(5).map_or("", |n| n.trim()).to_string(),
            )
        })
        .collect()
}

/// Hold a materialized image against the memory of the stopped target, page for page, over
/// every mapping it lists; and every writable mapping of the target must be in it. Returns
/// the pages compared and what differs.
fn image_problems(pid: i32, image: &[ImageMapping]) -> (u64, Vec<String>) {
    assert!(all_stopped(pid), "compare only a stopped target");
    assert!(!image.is_empty(), "the image holds no mapping");
    let vmas = maps(pid);
    let mem = File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut problems = Vec::new();
    let mut compared = 0;
    for m in image {
        let Some(vma) = vmas.iter().find(|v| v.0 <= m.start && m.end <= v.1) else {
            problems.push(format!("{} is no longer mapped as one mapping", m.label()));
            continue;
        };
        if vma.2 != m.perms {
            problems.push(format!("{} is now {}", m.label(), vma.2));
        }
        compared += page_differences(m, &dump(&mem, m.start, m.end), &mut problems);
    }
    // Writable memory left out of the image would be lost by whoever restores it.
    for (s, e, perms, name) in &vmas {
        if !perms.contains('w') {
            continue;
        }
        let mut at = *s;
        for m in image.iter().filter(|m| m.end > *s && m.start < *e) {
            if m.start > at {
                break;
            }
            at = at.max(m.end);
        }
        if at < *e {
            problems.push(format!(
                "writable memory {at:#x}-{e:#x} ({perms} {name:?}) is not in the image"
            ));
        }
    }
    (compared, problems)
}

/// The first problems, one per line.
fn listed(problems: &[String]) -> String {
    let mut s = problems
        .iter()
        .take(40)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    if problems.len() > 40 {
        s.push_str(&format!("\n… and {} more", problems.len() - 40));
    }
    s
}

/// A snapshot that ended with its final round, the target left stopped: the target is
/// stopped (every thread, from the moment the snapshot exited), `snapshot verify` says
/// identical, and the test's own comparison of the last round with the memory finds no
/// difference. Both verdicts are taken before either is asserted, so a failure shows both.
fn check_exact(dir: &Path, pid: i32, work: &Path) {
    let states_at_exit = thread_states(pid);
    let stopped_at_exit = all_stopped(pid);
    assert!(
        wait_until(Duration::from_secs(2), || all_stopped(pid)),
        "the target was not left stopped: threads {:?}",
        thread_states(pid)
    );
    assert_eq!(
        read_status(&format!("/proc/{pid}/status")).unwrap().state,
        'T'
    );
    let m = manifest(dir);
    assert_eq!(m["state"], "finished", "{m:#}");
    assert_eq!(round_kinds(&m).last().map(String::as_str), Some("final"));
    let verify = snapshot(&["verify", "--dir", dir_arg(dir), "--pid", &pid.to_string()]);
    let image = materialize(dir, None, &work.join("image"));
    let (compared, problems) = image_problems(pid, &image);
    eprintln!(
        "compared {compared} pages of {} mappings with /proc/{pid}/mem: {} problem(s); verify: {:?}",
        image.len(),
        problems.len(),
        verify.status
    );
    assert!(
        problems.is_empty() && verify.status.success(),
        "the last round is not the memory of the stopped PID {pid}.\n\
         The test's comparison of `materialize` with /proc/{pid}/mem: {} problem(s) in {compared} pages:\n{}\n\
         `snapshot verify`: {:?}:\n{}{}",
        problems.len(),
        listed(&problems),
        verify.status,
        text(&verify.stdout),
        text(&verify.stderr)
    );
    assert!(
        stopped_at_exit,
        "PID {pid} was not yet stopped when the snapshot with --leave-stopped exited (its threads: {states_at_exit:?}): `snapshot verify` run right then refuses it as running"
    );
}

/// A writer that writes until stopped (`--bursts 0`; killed by the test, `--run-for` only a
/// backstop), with `args` added.
fn endless_writer(dir: &Path, args: &[&str]) -> Writer {
    let endless = ["--bursts", "0", "--run-for", "600s"];
    Writer::spawn(dir, &[&endless[..], args].concat(), None)
}

fn writer_snapshot_is_exact(threads: &str) {
    if !kernel_can_track() {
        return;
    }
    let work = scratch();
    let w = endless_writer(
        work.path(),
        &["--pages", "8192", "--gap", "2ms", "--threads", threads],
    );
    let _resume = Resume(w.pid);
    std::thread::sleep(Duration::from_millis(100));
    let dir = work.path().join("snap");
    let o = snapshot(&[
        "--pid",
        &w.pid.to_string(),
        "--dir",
        dir_arg(&dir),
        "--leave-stopped",
        "--max-rounds",
        "4",
        "--format",
        "json",
    ]);
    let records = records_of(&o);
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "snapshot: {:?}\n{}",
        o.status,
        text(&o.stderr)
    );
    let end = records.last().unwrap();
    assert_eq!(end["type"], "end", "{records:#?}");
    assert_eq!(end["left_stopped"], true, "{end}");
    check_exact(&dir, w.pid, work.path());
    // And it runs (and writes) again once continued.
    signal(w.pid, libc::SIGCONT);
    assert_untouched(w.pid);
    assert_keeps_writing(w.pid, w.base, w.pages);
}

#[test]
fn writer_one_thread_snapshot_equals_its_memory() {
    writer_snapshot_is_exact("1");
}

#[test]
fn writer_eight_threads_snapshot_equals_its_memory() {
    writer_snapshot_is_exact("8");
}

/// A scenario of `uffd-dirty scenario` snapshotted while it runs, a pre-copy round per line
/// the test sends during its steps, the final round once it is done (still alive).
fn scenario_snapshot_is_exact(name: &str, steps: u32) {
    if !kernel_can_track() {
        return;
    }
    let work = scratch();
    let mut sc = Proc::spawn(
        uffd_dirty()
            .args([
                "scenario",
                name,
                "--steps",
                &steps.to_string(),
                "--gap",
                "10ms",
            ])
            .arg("--log")
            .arg(work.path().join("scenario.log")),
    );
    let ready = sc.line(PATIENCE).expect("the scenario's ready line");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    let pid = ready["pid"].as_i64().unwrap() as i32;
    assert_eq!(pid, sc.pid);
    let dir = work.path().join("snap");
    let mut snap = Snapshotter::spawn(
        pid,
        &dir,
        &[
            "--trigger",
            "stdin",
            "--until-dirty-below",
            "0",
            "--max-rounds",
            "1000",
            "--leave-stopped",
        ],
    );
    snap.round(0);
    sc.send(b"g");
    let mut precopy = 0;
    let mut done = false;
    let mut ended_early = None;
    while precopy < 500 {
        if let Some(l) = sc.line(Duration::from_millis(20)) {
            assert!(l.contains("done"), "scenario said {l:?}");
            done = true;
            break;
        }
        let _ = snap.trigger_line();
        let r = snap.next();
        if r["type"] == "end" {
            ended_early = Some(r);
            break;
        }
        if r["kind"] == "final" {
            // Converged (a round found nothing written): the final round, then the end.
            ended_early = Some(snap.next());
            break;
        }
        assert_eq!(r["kind"], "precopy", "{r}");
        precopy += 1;
    }
    assert!(done || ended_early.is_some(), "{name} never finished");
    let end = match ended_early {
        Some(end) => {
            // A round found nothing written (the threshold is 0): converged, final round
            // taken mid-scenario. Still a stopped target to compare with.
            eprintln!("note: {name}: the snapshot converged before the scenario ended: {end}");
            assert_eq!(end["reason"], "converged", "{end}");
            end
        }
        None => {
            snap.close_stdin();
            let end = snap.end();
            assert_eq!(end["reason"], "input-closed", "{end}");
            end
        }
    };
    eprintln!("{name}: {precopy} pre-copy rounds during the scenario");
    assert!(
        precopy >= 2,
        "only {precopy} round(s) overlapped the scenario"
    );
    assert_eq!(snap.exit_code(), Some(0), "{end}");
    assert_eq!(end["left_stopped"], true, "{end}");
    assert_eq!(snap.rounds_of_kind("final"), 1);
    check_exact(&dir, pid, work.path());
    // The scenario checks itself: it must finish as if nothing happened.
    signal(pid, libc::SIGCONT);
    if !done {
        let l = sc.line(PATIENCE).expect("the scenario's done line");
        assert!(l.contains("done"), "scenario said {l:?}");
    }
    drop(sc.stdin.take());
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = sc.child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < PATIENCE, "the scenario does not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "scenario {name}: {status:?}");
}

#[test]
fn scenario_churn_snapshot_equals_its_memory() {
    scenario_snapshot_is_exact("churn", 300);
}

#[test]
fn scenario_shared_snapshot_equals_its_memory() {
    scenario_snapshot_is_exact("shared", 250);
}

#[test]
fn scenario_thp_snapshot_equals_its_memory() {
    scenario_snapshot_is_exact("thp", 250);
}

#[test]
fn scenario_mremap_snapshot_equals_its_memory() {
    scenario_snapshot_is_exact("mremap", 150);
}

#[test]
fn round_n_is_the_memory_as_it_was_then() {
    if !kernel_can_track() {
        return;
    }
    let work = scratch();
    let w = endless_writer(
        work.path(),
        &["--pages", "2048", "--threads", "2", "--gap", "2ms"],
    );
    let _resume = Resume(w.pid);
    let dir = work.path().join("snap");
    let mut snap = Snapshotter::spawn(
        w.pid,
        &dir,
        &[
            "--trigger",
            "stdin",
            "--until-dirty-below",
            "0",
            "--max-rounds",
            "100",
        ],
    );
    snap.round(0);
    let mem = File::open(format!("/proc/{}/mem", w.pid)).unwrap();
    let mut dumps = Vec::new();
    for n in 1..=3u64 {
        std::thread::sleep(Duration::from_millis(150));
        // Rounds 1 and 3 with the target stopped, round 2 with it writing.
        let stopped = n != 2;
        if stopped {
            signal(w.pid, libc::SIGSTOP);
            assert!(
                wait_until(PATIENCE, || all_stopped(w.pid)),
                "SIGSTOP did not stop the writer"
            );
        }
        assert!(snap.trigger_line());
        let r = snap.round(n);
        assert_eq!(r["kind"], "precopy", "{r}");
        if stopped {
            let index: Value = serde_json::from_slice(
                &std::fs::read(dir.join(format!("round-{n:04}.index.json"))).unwrap(),
            )
            .unwrap();
            let mapped: Vec<Dump> = index["mappings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    dump(
                        &mem,
                        m["start"].as_u64().unwrap(),
                        m["end"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert!(!mapped.is_empty(), "round {n} lists no mapping");
            dumps.push((n, mapped));
            signal(w.pid, libc::SIGCONT);
            assert!(wait_until(PATIENCE, || none_stopped(w.pid)));
        }
    }
    snap.close_stdin();
    let end = snap.end();
    assert_eq!(end["reason"], "input-closed", "{end}");
    assert_eq!(snap.exit_code(), Some(0));
    assert_untouched(w.pid);

    // The writer wrote between the two rounds: their images differ in its region.
    let region = |d: &[Dump]| {
        let m = d
            .iter()
            .find(|m| m.start <= w.base && w.base + w.pages * PAGE <= m.end)
            .expect("the writer's region is in the round's mappings");
        let off = (w.base - m.start) as usize;
        m.bytes[off..off + (w.pages * PAGE) as usize].to_vec()
    };
    assert_ne!(
        region(&dumps[0].1),
        region(&dumps[1].1),
        "the writer wrote nothing between rounds 1 and 3: the test proves nothing"
    );
    let mut failures = Vec::new();
    for (n, mapped) in &dumps {
        let image = materialize(&dir, Some(*n), &work.path().join(format!("image-{n}")));
        let mut problems = Vec::new();
        let mut compared = 0;
        assert_eq!(
            image.iter().map(|m| (m.start, m.end)).collect::<Vec<_>>(),
            mapped.iter().map(|d| (d.start, d.end)).collect::<Vec<_>>(),
            "round {n}: the image's mappings are the index's"
        );
        for (m, d) in image.iter().zip(mapped) {
            compared += page_differences(m, d, &mut problems);
        }
        eprintln!(
            "round {n}: {compared} pages compared with the test's dump: {} problem(s)",
            problems.len()
        );
        if !problems.is_empty() {
            failures.push(format!(
                "round {n}: the image is not the memory dumped when it was taken ({} problem(s) in {compared} pages):\n{}",
                problems.len(),
                listed(&problems)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A real program snapshotted with `--leave-stopped`: verify, and the test's own comparison.
fn program_snapshot_is_exact(pid: i32, work: &Path) {
    let dir = work.join("snap");
    let o = snapshot(&[
        "--pid",
        &pid.to_string(),
        "--dir",
        dir_arg(&dir),
        "--leave-stopped",
        "--max-rounds",
        "4",
        "--format",
        "json",
    ]);
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "snapshot: {:?}\n{}",
        o.status,
        text(&o.stderr)
    );
    let records = records_of(&o);
    let end = records.last().unwrap();
    assert_eq!(end["type"], "end", "{records:#?}");
    eprintln!("{end}");
    check_exact(&dir, pid, work);
    signal(pid, libc::SIGCONT);
    assert_untouched(pid);
}

fn installed(program: &str, args: &[&str]) -> bool {
    match Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => true,
        other => {
            skipped(format!("{program} is not installed ({other:?})"));
            false
        }
    }
}

#[test]
fn python3_mutating_a_dict() {
    if !kernel_can_track() || !installed("python3", &["-c", "pass"]) {
        return;
    }
    let work = scratch();
    let script = "import os, sys\n\
                  d = {}\n\
                  print(os.getpid(), flush=True)\n\
                  i = 0\n\
                  while True:\n\
                  \x20   d[i % 50000] = str(i) * (i % 7 + 1)\n\
                  \x20   if i % 100000 == 0:\n\
                  \x20       d = dict(d)\n\
                  \x20   i += 1\n";
    let mut py = Proc::spawn(Command::new("python3").args(["-c", script]));
    let pid: i32 = py
        .line(PATIENCE)
        .expect("python3 printed its PID")
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    program_snapshot_is_exact(pid, work.path());
}

/// `program_snapshot_is_exact` for the PID a program printed as its first line (not its
/// own: /usr/bin/node here is a wrapper script around the real node), after it ran 500 ms.
fn snapshot_of_printed_pid(program: &mut Proc, work: &Path) {
    let pid: i32 = program
        .line(PATIENCE)
        .expect("the program printed its PID")
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    program_snapshot_is_exact(pid, work);
}

#[test]
fn node_filling_a_map() {
    if !kernel_can_track() || !installed("node", &["-e", "0"]) {
        return;
    }
    let work = scratch();
    // Its own PID: `node` may be a wrapper that runs the real one as its child.
    let script = "console.log(process.pid);\
                  const m = new Map(); let i = 0;\
                  setInterval(() => { for (let k = 0; k < 2000; k++) {\
                  m.set(i++, { v: 'x'.repeat(i % 64) + i });\
                  if (m.size > 100000) m.delete(i - 100000); } }, 5);";
    let mut node = Proc::spawn(Command::new("node").args(["-e", script]));
    snapshot_of_printed_pid(&mut node, work.path());
}

#[test]
fn a_jvm_filling_a_hash_map() {
    if !kernel_can_track() || !installed("java", &["-version"]) {
        return;
    }
    let work = scratch();
    let source = work.path().join("Fill.java");
    std::fs::write(
        &source,
        "public class Fill { public static void main(String[] a) throws Exception {\n\
         System.out.println(ProcessHandle.current().pid());\n\
         var m = new java.util.HashMap<Integer, String>(); int i = 0;\n\
         while (true) { for (int k = 0; k < 2000; k++) { m.put(i++, \"x\" + i);\n\
         if (m.size() > 100000) m.remove(i - 100000); } Thread.sleep(5); } } }\n",
    )
    .unwrap();
    // A small heap and code cache: the JVM reserves far more address space than it uses.
    let mut jvm = Proc::spawn(Command::new("java").args([
        "-Xmx64m",
        "-XX:ReservedCodeCacheSize=32m",
        source.to_str().unwrap(),
    ]));
    snapshot_of_printed_pid(&mut jvm, work.path());
}

#[test]
fn sqlite3_inserting_rows() {
    if !kernel_can_track() || !installed("sqlite3", &["-version"]) {
        return;
    }
    let work = scratch();
    let mut db = Proc::spawn(Command::new("sqlite3").arg(work.path().join("rows.db")));
    db.send(
        b"PRAGMA journal_mode=WAL;\nCREATE TABLE t(a INTEGER, b BLOB);\nCREATE INDEX ti ON t(b);\nSELECT 'ready';\n",
    );
    let ready = db.line(PATIENCE).expect("sqlite3 answered");
    // `PRAGMA journal_mode` answers first.
    let ready = if ready.trim() == "wal" {
        db.line(PATIENCE).expect("sqlite3 answered")
    } else {
        ready
    };
    assert_eq!(ready.trim(), "ready");
    // Rows fed from a loop for as long as sqlite3 reads them (a stopped one does not: the
    // pipe fills and the feeder waits; a killed one ends the feeder).
    let mut feed = db.stdin.take().unwrap();
    std::thread::spawn(move || {
        for i in 0u64.. {
            let sql = format!(
                "BEGIN; INSERT INTO t SELECT {i}, randomblob(300) FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3); DELETE FROM t WHERE a < {}; COMMIT;\n",
                i.saturating_sub(2000)
            );
            if feed.write_all(sql.as_bytes()).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    program_snapshot_is_exact(db.pid, work.path());
}

#[test]
fn snapshotter_killed_mid_round_leaves_the_rounds_before_and_the_target_running() {
    if !kernel_can_track() {
        return;
    }
    let work = scratch();
    let w = endless_writer(
        work.path(),
        &["--pages", "100000", "--burst-pages", "1024", "--gap", "1ms"],
    );
    let _resume = Resume(w.pid);
    std::thread::sleep(Duration::from_millis(300));
    let dir = work.path().join("snap");
    let mut snap = Snapshotter::spawn(w.pid, &dir, &["--interval", "50ms"]);
    snap.round(0);
    let r1 = snap.round(1);
    std::thread::sleep(Duration::from_millis(20));
    snap.signal(libc::SIGKILL);
    assert_eq!(snap.exit_code(), None, "killed by SIGKILL");
    eprintln!("killed after {r1}");

    assert_untouched(w.pid);
    assert_keeps_writing(w.pid, w.base, w.pages);

    let o = snapshot(&["info", "--dir", dir_arg(&dir), "--format", "json"]);
    assert!(
        o.status.success(),
        "info: {:?}: {}",
        o.status,
        text(&o.stderr)
    );
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["state"], "running", "{info:#}");
    assert_eq!(info["intact"], true, "{info:#}");
    let complete = info["rounds"].as_array().unwrap().len() as u64;
    assert!(complete >= 2, "rounds 0 and 1 were complete: {info:#}");
    let last = complete - 1;
    let cut = dir.join(format!("round-{complete:04}.pages")).exists()
        || dir.join(format!("round-{complete:04}.index.json")).exists();
    let lost: Vec<u64> = info["lost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let human = snapshot(&["info", "--dir", dir_arg(&dir)]);
    assert!(human.status.success());
    let human = text(&human.stdout);
    eprintln!("{human}");
    if cut {
        assert_eq!(lost, vec![complete], "{info:#}");
        assert!(
            human.contains(&format!("round {complete} was cut short")),
            "{human}"
        );
    } else {
        eprintln!("note: killed between rounds (no files of round {complete})");
        assert!(lost.is_empty(), "{info:#}");
    }
    let image = materialize(&dir, Some(last), &work.path().join("image"));
    assert!(
        image
            .iter()
            .any(|m| m.start <= w.base && w.base + w.pages * PAGE <= m.end),
        "the writer's region is in the image"
    );
    // A round past the complete ones is refused.
    let o = snapshot(&[
        "materialize",
        "--dir",
        dir_arg(&dir),
        "--round",
        &complete.to_string(),
        "--out",
        dir_arg(&work.path().join("image-cut")),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn a_full_disk_ends_the_snapshot_with_the_rounds_before_intact() {
    if !kernel_can_track() {
        return;
    }
    if !is_root() {
        skipped("mounting a small tmpfs needs root");
        return;
    }
    let work = scratch();
    let disk = work.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&disk)
        .status();
    if !st.as_ref().is_ok_and(|s| s.success()) {
        skipped(format!("cannot mount a tmpfs here: {st:?}"));
        return;
    }
    let _mount = Mount(disk.clone());
    // 10 MiB, every page rewritten within a round or two.
    let w = endless_writer(
        work.path(),
        &["--pages", "2560", "--burst-pages", "64", "--gap", "1ms"],
    );
    let _resume = Resume(w.pid);
    std::thread::sleep(Duration::from_millis(300));
    let range = format!("{:#x}-{:#x}", w.base, w.base + w.pages * PAGE);
    let dir = disk.join("snap");
    let mut snap = Snapshotter::spawn_with(
        w.pid,
        &dir,
        &[
            "--range",
            &range,
            "--until-dirty-below",
            "0",
            "--max-rounds",
            "100",
        ],
        Stdio::piped(),
    );
    let stderr = read_lines(snap.child.stderr.take().unwrap());
    let code = snap.exit_code();
    let stderr: Vec<String> = stderr.try_iter().collect();
    while let Next::Record(_) = snap.try_next(Duration::from_millis(100)) {}
    eprintln!("records: {:#?}\nstderr: {stderr:#?}", snap.records);
    assert_eq!(code, Some(1), "stderr: {stderr:#?}");
    assert_eq!(stderr.len(), 1, "one line on stderr: {stderr:#?}");
    assert!(
        stderr[0].contains("No space left on device"),
        "{}",
        stderr[0]
    );
    assert!(
        snap.rounds_of_kind("precopy") >= 1,
        "round 0 and a pre-copy round fit in 24 MiB: {:#?}",
        snap.records
    );

    let o = snapshot(&["info", "--dir", dir_arg(&dir), "--format", "json"]);
    assert!(
        o.status.success(),
        "info: {:?}: {}",
        o.status,
        text(&o.stderr)
    );
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("{info:#}");
    assert_eq!(info["intact"], true, "{info:#}");
    let complete = info["rounds"].as_array().unwrap().len() as u64;
    assert_eq!(
        complete as usize,
        snap.records.iter().filter(|r| r["type"] == "round").count(),
        "every round printed is complete"
    );
    assert!(complete >= 2);
    let image = materialize(&dir, Some(complete - 1), &work.path().join("image"));
    assert_eq!(
        image.iter().map(|m| (m.start, m.end)).collect::<Vec<_>>(),
        vec![(w.base, w.base + w.pages * PAGE)],
        "the image is the --range"
    );
    assert_untouched(w.pid);
    assert_keeps_writing(w.pid, w.base, w.pages);
}

#[test]
fn a_writer_faster_than_the_threshold_does_not_converge() {
    if !kernel_can_track() {
        return;
    }
    let work = scratch();
    // About 1600 page writes per 200 ms over 1024 pages: some 800 pages each round, never 16.
    let w = endless_writer(work.path(), &["--pages", "1024", "--gap", "2ms"]);
    let _resume = Resume(w.pid);
    let dir = work.path().join("snap");
    let o = snapshot(&[
        "--pid",
        &w.pid.to_string(),
        "--dir",
        dir_arg(&dir),
        "--until-dirty-below",
        "16",
        "--format",
        "json",
    ]);
    let records = records_of(&o);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{records:#?}\n{}",
        text(&o.stderr)
    );
    let end = records.last().unwrap();
    assert_eq!(end["type"], "end");
    assert_eq!(end["reason"], "not-converging", "{end}");
    let rounds: Vec<&Value> = records.iter().filter(|r| r["type"] == "round").collect();
    let precopy = rounds.iter().filter(|r| r["kind"] == "precopy").count();
    assert!(
        (6..30).contains(&precopy),
        "5 rounds without a smaller dirty set after the first, before --max-rounds: {precopy}"
    );
    for r in rounds.iter().filter(|r| r["kind"] == "precopy") {
        assert!(r["dirty_pages"].as_u64().unwrap() > 16, "{r}");
    }
    assert_eq!(rounds.last().unwrap()["kind"], "final");
    let m = manifest(&dir);
    assert_eq!(m["state"], "finished", "{m:#}");
    assert_eq!(m["end"]["reason"], "not-converging");
    assert_eq!(round_kinds(&m).last().map(String::as_str), Some("final"));
    assert_eq!(round_kinds(&m).len(), rounds.len());
    assert_untouched(w.pid);
}

#[test]
fn a_precopy_round_per_line_then_the_final_round_at_the_end_of_input() {
    if !kernel_can_track() {
        return;
    }
    let work = scratch();
    let w = endless_writer(work.path(), &["--pages", "256", "--gap", "2ms"]);
    let _resume = Resume(w.pid);
    let dir = work.path().join("snap");
    let mut snap = Snapshotter::spawn(
        w.pid,
        &dir,
        &["--trigger", "stdin", "--until-dirty-below", "0"],
    );
    snap.round(0);
    // No round comes untriggered, however long.
    assert!(matches!(
        snap.try_next(Duration::from_millis(500)),
        Next::TimedOut
    ));
    const N: u64 = 4;
    for n in 1..=N {
        assert!(snap.trigger_line());
        assert_eq!(snap.round(n)["kind"], "precopy");
    }
    match snap.try_next(Duration::from_millis(300)) {
        Next::TimedOut => {}
        other => panic!("a record or an end after the last triggered round: {other:?}"),
    }
    snap.close_stdin();
    let last = snap.round(N + 1);
    assert_eq!(last["kind"], "final", "{last}");
    let end = snap.next();
    assert_eq!(end["type"], "end", "{end}");
    assert_eq!(end["reason"], "input-closed", "{end}");
    assert_eq!(end["rounds"], N + 2, "{end}");
    assert_eq!(snap.exit_code(), Some(0));
    assert_eq!(snap.rounds_of_kind("precopy"), N as usize);
    let m = manifest(&dir);
    assert_eq!(m["state"], "finished");
    let mut kinds = vec!["full".to_string()];
    kinds.extend((0..N).map(|_| "precopy".to_string()));
    kinds.push("final".into());
    assert_eq!(round_kinds(&m), kinds);
    assert_untouched(w.pid);
}

#[test]
fn a_precopy_round_per_sigusr1_and_sigint_stops_without_a_final_round() {
    if !kernel_can_track() {
        return;
    }
    let work = scratch();
    let w = endless_writer(work.path(), &["--pages", "256", "--gap", "2ms"]);
    let _resume = Resume(w.pid);
    let dir = work.path().join("snap");
    let mut snap = Snapshotter::spawn(
        w.pid,
        &dir,
        &[
            "--trigger",
            "sigusr1",
            "--until-dirty-below",
            "0",
            "--leave-stopped",
        ],
    );
    snap.round(0);
    assert!(matches!(
        snap.try_next(Duration::from_millis(500)),
        Next::TimedOut
    ));
    const K: u64 = 3;
    for n in 1..=K {
        snap.signal(libc::SIGUSR1);
        assert_eq!(snap.round(n)["kind"], "precopy");
    }
    snap.signal(libc::SIGINT);
    let end = snap.next();
    assert_eq!(end["type"], "end", "a round after SIGINT: {end}");
    assert_eq!(end["reason"], "signal", "{end}");
    assert_eq!(end["left_stopped"], false, "{end}");
    assert!(matches!(snap.try_next(PATIENCE), Next::Closed));
    assert_eq!(snap.exit_code(), Some(130));
    assert_eq!(snap.rounds_of_kind("precopy"), K as usize);
    assert_eq!(snap.rounds_of_kind("final"), 0);
    let m = manifest(&dir);
    assert_eq!(m["state"], "incomplete", "{m:#}");
    assert_eq!(m["end"]["reason"], "signal");
    assert_eq!(round_kinds(&m).len() as u64, K + 1);
    assert_untouched(w.pid);
    assert_keeps_writing(w.pid, w.base, w.pages);
}

/// A usage error: exit 2 and one line on stderr.
fn assert_usage_error(o: &Output) -> String {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn bad_input_is_a_usage_error() {
    let work = scratch();
    // No --pid.
    let o = snapshot(&["--dir", dir_arg(&work.path().join("a"))]);
    let err = assert_usage_error(&o);
    assert!(err.contains("--pid"), "{err}");

    if !kernel_can_track() {
        return;
    }
    let sleeper = Sleeper::new();
    let pid = sleeper.pid();
    // A --dir that is not empty.
    let full = work.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("something"), b"x").unwrap();
    let o = snapshot(&["--pid", &pid, "--dir", dir_arg(&full)]);
    let err = assert_usage_error(&o);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_dir(&full).unwrap().count(),
        1,
        "the directory is left as it was"
    );
    assert_untouched(sleeper.0.id() as i32);

    // verify with the target running.
    let dir = work.path().join("snap");
    let o = snapshot(&["--pid", &pid, "--dir", dir_arg(&dir), "--format", "json"]);
    assert!(o.status.success(), "{:?}: {}", o.status, text(&o.stderr));
    assert_untouched(sleeper.0.id() as i32);
    let o = snapshot(&["verify", "--dir", dir_arg(&dir), "--pid", &pid]);
    let err = assert_usage_error(&o);
    assert!(err.contains("--leave-stopped"), "{err}");

    // verify of a directory without a manifest.
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = snapshot(&["verify", "--dir", dir_arg(&empty), "--pid", &pid]);
    let err = assert_usage_error(&o);
    assert!(err.contains("manifest"), "{err}");
    // Nor info, nor materialize.
    let o = snapshot(&["info", "--dir", dir_arg(&empty)]);
    assert_usage_error(&o);
    let o = snapshot(&[
        "materialize",
        "--dir",
        dir_arg(&empty),
        "--out",
        dir_arg(&work.path().join("out")),
    ]);
    assert_usage_error(&o);
}
