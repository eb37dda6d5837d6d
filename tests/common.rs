//! Shared test machinery: the binary, the ground-truth writer, the tracker, and the page-for-page
//! comparison between what the writer wrote and what the tracker reported.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_uffd-dirty");

/// Slack for comparing the writer's and the tracker's clocks (same host, CLOCK_REALTIME).
const CLOCK_SLACK_NS: u64 = 1_000_000;

pub fn uffd_dirty() -> Command {
    Command::new(BIN)
}

#[path = "../src/testing.rs"]
mod testing;
pub use testing::{Reap, skipped};

/// Skip (with a printed reason) unless this kernel can track: returns false to skip.
pub fn kernel_can_track() -> bool {
    match uffd_dirty::probe::require(uffd_dirty::Method::PagemapScan) {
        Ok(_) => true,
        Err(e) => {
            skipped(format!(
                "this kernel cannot run async write-protect tracking: {e:#}"
            ));
            false
        }
    }
}

/// Whether soft-dirty works on this kernel (a round trip on a page of the test's own).
pub fn soft_dirty_works() -> bool {
    uffd_dirty::probe::require(uffd_dirty::Method::SoftDirty).is_ok()
}

/// The fields of `/proc/PID/status` (or of a thread's) the tests look at.
#[derive(Debug)]
pub struct Status {
    pub name: String,
    pub state: char,
    pub tracer_pid: i32,
}

/// Read a `status` file of `/proc`.
pub fn read_status(path: &str) -> std::io::Result<Status> {
    let text = String::from_utf8_lossy(&std::fs::read(path)?).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .ok_or_else(|| std::io::Error::other(format!("no {name} in {path}")))
    };
    Ok(Status {
        name: field("Name")?.to_string(),
        state: field("State")?.chars().next().unwrap_or('?'),
        tracer_pid: field("TracerPid")?.parse().map_err(std::io::Error::other)?,
    })
}

/// Skip unless we are root (for tests that switch users).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A scratch directory every user can write to (the unprivileged tests need that).
pub fn scratch() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("uffd-dirty-test")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

pub fn as_user(cmd: Command, user: Option<&str>) -> Command {
    match user {
        None => cmd,
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                "--regid=nogroup",
                "--clear-groups",
                "--",
            ]);
            c.arg(cmd.get_program()).args(cmd.get_args());
            c
        }
    }
}

pub fn parse_ns(t: &str) -> u64 {
    humantime::parse_rfc3339(t)
        .unwrap_or_else(|e| panic!("bad time {t}: {e}"))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub fn hex(v: &Value) -> u64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a hex string: {v}"));
    u64::from_str_radix(s.strip_prefix("0x").expect("0x prefix"), 16).unwrap()
}

pub struct Writer {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: i32,
    pub base: u64,
    pub pages: u64,
    pub log: PathBuf,
}

impl Writer {
    /// Start `uffd-dirty writer ARGS --log DIR/writer.log`, optionally as another user, and
    /// wait for its `ready` line.
    pub fn spawn(dir: &Path, args: &[&str], user: Option<&str>) -> Writer {
        let log = dir.join("writer.log");
        let mut cmd = uffd_dirty();
        cmd.arg("writer").args(args).arg("--log").arg(&log);
        let mut child = as_user(cmd, user)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning the writer");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("writer said {line:?}: {e}"));
        Writer {
            pid: ready["pid"].as_i64().unwrap() as i32,
            base: hex(&ready["base"]),
            pages: ready["pages"].as_u64().unwrap(),
            child,
            stdin,
            stdout,
            log,
        }
    }

    /// Release a writer that waits on stdin (`--wait stdin|epoll`).
    pub fn go(&mut self) {
        self.stdin.as_mut().unwrap().write_all(b"g").unwrap();
        self.stdin.as_mut().unwrap().flush().unwrap();
    }

    /// Tell a `--until-stdin` writer to stop writing (one byte on its stdin).
    pub fn stop_writing(&mut self) {
        self.go();
    }

    /// Wait for the `done` line of a `--hold` writer.
    pub fn wait_done(&mut self) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(line.contains("done"), "writer said {line:?}");
    }

    /// Let the writer exit and collect what it wrote.
    pub fn finish(mut self) -> (ExitStatus, Truth) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        let truth = truth_from_log(&self.log);
        (status, truth)
    }

    pub fn span(&self) -> (u64, u64) {
        (self.base, self.base + self.pages * 4096)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page write: page index in the writer's region, and the burst's time window.
#[derive(Debug, Clone, Copy)]
pub struct PageWrite {
    pub page: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

pub struct Truth {
    pub writes: Vec<PageWrite>,
    pub wait: Value,
}

/// Parse a writer's ground-truth log.
pub fn truth_from_log(path: &Path) -> Truth {
    truth_from_text(
        &std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
    )
}

/// Parse a writer's ground-truth log from its text.
pub fn truth_from_text(text: &str) -> Truth {
    let mut writes = Vec::new();
    let mut wait = Value::Null;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        match v["type"].as_str() {
            Some("wait") => wait = v,
            Some("burst") => {
                let (s, e) = (
                    v["start_ns"].as_u64().unwrap(),
                    v["end_ns"].as_u64().unwrap(),
                );
                for p in v["pages"].as_array().unwrap() {
                    writes.push(PageWrite {
                        page: p.as_u64().unwrap(),
                        start_ns: s,
                        end_ns: e,
                    });
                }
            }
            _ => panic!("unexpected log line {line}"),
        }
    }
    Truth { writes, wait }
}

pub struct Tracker {
    pub child: Child,
    stdout: BufReader<ChildStdout>,
    pub records: Vec<Value>,
}

impl Tracker {
    /// Start `uffd-dirty track ARGS --format json` (optionally as another user) and wait for
    /// its start record.
    pub fn spawn(args: &[&str], user: Option<&str>) -> Tracker {
        let mut cmd = uffd_dirty();
        cmd.arg("track").arg("--format=json").args(args);
        let mut child = as_user(cmd, user)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning the tracker");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut t = Tracker {
            child,
            stdout,
            records: Vec::new(),
        };
        let start = t
            .next_record()
            .expect("the tracker ended without a start record");
        assert_eq!(start["type"], "start", "first record: {start}");
        t
    }

    pub fn next_record(&mut self) -> Option<Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line).unwrap() == 0 {
            return None;
        }
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
        self.records.push(v.clone());
        Some(v)
    }

    pub fn start(&self) -> &Value {
        &self.records[0]
    }

    /// Wait until at least `n` deltas have been seen.
    pub fn wait_deltas(&mut self, n: usize) {
        while self.records.iter().filter(|r| r["type"] == "delta").count() < n {
            self.next_record().expect("tracker ended early");
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Read the rest of the stream and the exit status.
    pub fn finish(mut self) -> (ExitStatus, Vec<Value>) {
        while self.next_record().is_some() {}
        let status = self.child.wait().unwrap();
        (status, std::mem::take(&mut self.records))
    }
}

/// One delta as the comparison needs it.
pub struct DeltaPages {
    pub t_ns: u64,
    pub scan_ns: u64,
    /// Page indices inside the writer's region.
    pub pages: BTreeSet<u64>,
    /// Pages reported outside the writer's region.
    pub outside: u64,
}

pub fn deltas_in(records: &[Value], base: u64, pages: u64) -> (u64, Vec<DeltaPages>) {
    let start_ns = parse_ns(records[0]["time"].as_str().unwrap());
    let end = base + pages * 4096;
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r["type"] == "delta") {
        let mut d = DeltaPages {
            t_ns: parse_ns(r["time"].as_str().unwrap()),
            scan_ns: r["scan_us"].as_u64().unwrap() * 1000,
            pages: BTreeSet::new(),
            outside: 0,
        };
        let mut sum = 0;
        for run in r["ranges"].as_array().unwrap() {
            let (s, e) = (hex(&run["start"]), hex(&run["end"]));
            assert_eq!(
                run["pages"].as_u64().unwrap(),
                (e - s) / 4096,
                "run page count: {run}"
            );
            sum += (e - s) / 4096;
            for a in (s..e).step_by(4096) {
                if a >= base && a < end {
                    d.pages.insert((a - base) / 4096);
                } else {
                    d.outside += 1;
                }
            }
        }
        assert_eq!(
            r["dirty_pages"].as_u64().unwrap(),
            sum,
            "dirty_pages matches ranges: {r}"
        );
        out.push(d);
    }
    (start_ns, out)
}

#[derive(Debug, Default)]
pub struct Verdict {
    pub writes: usize,
    pub reports: usize,
    /// Writes no delta reported (must always be zero).
    pub lost: Vec<PageWrite>,
    /// Reports no write explains.
    pub unexplained: Vec<(usize, u64)>,
    /// Reports explained only by a write that raced with the previous harvest (the page is
    /// reported in two adjacent deltas for one write: the store completed after the harvest).
    pub repeated: usize,
}

/// Hold deltas against the writer's ground truth, page for page.
pub fn compare(truth: &Truth, start_ns: u64, deltas: &[DeltaPages]) -> Verdict {
    let mut v = Verdict {
        writes: truth.writes.len(),
        ..Default::default()
    };
    let harvest_end = |d: &DeltaPages| d.t_ns + d.scan_ns + CLOCK_SLACK_NS;
    for w in &truth.writes {
        assert!(
            w.start_ns + CLOCK_SLACK_NS >= start_ns,
            "a write at {} precedes the start record {start_ns}",
            w.start_ns
        );
        // The write must be in a harvest that ended after it began, no later than the first
        // harvest that began after it ended.
        let last = deltas
            .iter()
            .position(|d| d.t_ns > w.end_ns + CLOCK_SLACK_NS)
            .unwrap_or(deltas.len().saturating_sub(1));
        let found = deltas
            .iter()
            .enumerate()
            .any(|(j, d)| j <= last && harvest_end(d) >= w.start_ns && d.pages.contains(&w.page));
        if !found {
            v.lost.push(*w);
        }
    }
    let mut by_page: BTreeMap<u64, Vec<PageWrite>> = BTreeMap::new();
    for w in &truth.writes {
        by_page.entry(w.page).or_default().push(*w);
    }
    for (k, d) in deltas.iter().enumerate() {
        let prev_t = if k == 0 { start_ns } else { deltas[k - 1].t_ns };
        for &p in &d.pages {
            v.reports += 1;
            let explaining: Vec<&PageWrite> = by_page
                .get(&p)
                .map(|ws| {
                    ws.iter()
                        .filter(|w| {
                            w.start_ns <= harvest_end(d) && w.end_ns + CLOCK_SLACK_NS >= prev_t
                        })
                        .collect()
                })
                .unwrap_or_default();
            if explaining.is_empty() {
                v.unexplained.push((k, p));
            } else if k > 0
                && deltas[k - 1].pages.contains(&p)
                && explaining
                    .iter()
                    .all(|w| w.start_ns <= harvest_end(&deltas[k - 1]))
            {
                v.repeated += 1;
            }
        }
    }
    v
}

/// Whether `pid` holds a userfaultfd, and its TracerPid: what an untouched target shows.
pub fn has_userfaultfd(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .any(|l| l.to_str() == Some("anon_inode:[userfaultfd]"))
        })
        .unwrap_or(false)
}

pub fn tracer_pid(pid: i32) -> i32 {
    read_status(&format!("/proc/{pid}/status"))
        .unwrap()
        .tracer_pid
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Validate one NDJSON record against docs/ndjson.schema.json, panicking with the errors.
pub fn assert_schema(record: &Value) {
    let errors = schema_errors(record);
    assert!(
        errors.is_empty(),
        "record does not match docs/ndjson.schema.json: {errors:?}\n{record}"
    );
}

/// What docs/ndjson.schema.json finds wrong with `record`.
pub fn schema_errors(record: &Value) -> Vec<String> {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = SCHEMA.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/ndjson.schema.json"
        ))
        .unwrap();
        jsonschema::validator_for(&serde_json::from_str(&text).unwrap())
            .expect("docs/ndjson.schema.json is a valid schema")
    });
    validator
        .iter_errors(record)
        .map(|e| e.to_string())
        .collect()
}

/// Run `uffd-dirty track ARGS` to completion: its status, its records (without a launched
/// writer's own `ready` line, which shares our stdout), and its stderr.
pub fn track_records(args: &[&str]) -> (ExitStatus, Vec<Value>, String) {
    let out = uffd_dirty().arg("track").args(args).output().unwrap();
    let records = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))
        })
        .filter(|r| r["type"] != "ready")
        .collect();
    (
        out.status,
        records,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A C program (or, with `-shared -fPIC` in `flags`, a library) from `tests/c/NAME.c`,
/// compiled once per test run; `None`, with the reason printed, where there is no compiler.
pub fn c_build(name: &str, flags: &[&str]) -> Option<PathBuf> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<HashMap<String, Option<PathBuf>>>> = OnceLock::new();
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("uffd-dirty-c")
            .tempdir()
            .unwrap()
            .keep()
    });
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    built
        .entry(name.to_string())
        .or_insert_with(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
            let out = dir.join(if flags.contains(&"-shared") {
                format!("{name}.so")
            } else {
                name.to_string()
            });
            let status = Command::new("cc")
                .args(["-O1", "-o"])
                .arg(&out)
                .arg(&src)
                .args(flags)
                .status();
            match status {
                Ok(s) if s.success() => Some(out),
                other => {
                    skipped(format!(
                        "cannot compile {} with cc: {other:?}",
                        src.display()
                    ));
                    None
                }
            }
        })
        .clone()
}

/// A C test program from `tests/c/`, started with piped stdin and stdout, once it printed
/// `ready PID`.
pub struct CProgram {
    pub child: Child,
    pub pid: i32,
    pub stdout: BufReader<ChildStdout>,
}

impl CProgram {
    pub fn spawn(path: &Path, args: &[&str]) -> CProgram {
        let mut child = Command::new(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let pid = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{} said {line:?}", path.display()));
        CProgram { child, pid, stdout }
    }
}

impl Drop for CProgram {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sleeping process to point `--pid` at, killed on drop.
pub struct Sleeper(pub Child);

impl Sleeper {
    pub fn new() -> Sleeper {
        Sleeper(Command::new("sleep").arg("30").spawn().unwrap())
    }
    pub fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
