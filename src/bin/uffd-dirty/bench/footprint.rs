//! The tracker's own cost: the real `uffd-dirty track --pid` against a bench target that
//! rewrites 1% of its pages, measured from outside over a window of steady tracking (attach
//! before it and detach after it excluded): CPU time per second, the share of it spent in
//! harvests (the deltas' `scan_us`), and peak RSS.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{BenchTarget, Case, ms};
use crate::cli::Method;

/// Harvests per second.
const RATE: u32 = 10;

#[derive(Debug, Clone, Serialize)]
pub struct FootprintRow {
    pub case: Case,
    pub method: String,
    pub rate_hz: u32,
    /// Deltas in the measured window.
    pub deltas: u64,
    /// The tracker's CPU time (user + system) per second of steady tracking.
    pub cpu_ms_per_s: f64,
    /// Wall time in harvests (mapping refresh + get + re-arm) per second.
    pub harvest_ms_per_s: f64,
    /// CPU time over harvest time: what waiting, output and bookkeeping add.
    pub cpu_vs_harvest: f64,
    /// CPU time until the start record (attach).
    pub attach_cpu_ms: f64,
    pub peak_rss_mib: f64,
}

pub(super) struct Run {
    method: Method,
    attach_cpu: Duration,
    window: Duration,
    window_cpu: Duration,
    window_deltas: u64,
    window_harvest: Duration,
    peak_rss_kib: u64,
}

impl Run {
    pub(super) fn row(&self, case: Case) -> FootprintRow {
        let per_s = |d: Duration| ms(d) / self.window.as_secs_f64();
        FootprintRow {
            case,
            method: self.method.to_string(),
            rate_hz: RATE,
            deltas: self.window_deltas,
            cpu_ms_per_s: per_s(self.window_cpu),
            harvest_ms_per_s: per_s(self.window_harvest),
            cpu_vs_harvest: ms(self.window_cpu) / ms(self.window_harvest).max(1e-6),
            attach_cpu_ms: ms(self.attach_cpu),
            peak_rss_mib: self.peak_rss_kib as f64 / 1024.0,
        }
    }
}

/// CPU time of a single-threaded process so far, exact (`/proc/PID/schedstat`, ns).
pub(super) fn cpu_so_far(pid: i32) -> Result<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .context("reading the tracker's schedstat")?;
    s.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .map(Duration::from_nanos)
        .context("parsing the tracker's schedstat")
}

/// Deltas written so far, and their summed harvest time (complete lines only).
pub(super) fn deltas_so_far(records: &Path) -> (u64, Duration) {
    let text = std::fs::read_to_string(records).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "delta")
        .fold((0, Duration::ZERO), |(n, t), v| {
            (
                n + 1,
                t + Duration::from_micros(v["scan_us"].as_u64().unwrap_or(0)),
            )
        })
}

/// Track `proc` for `time` while it rewrites 1% of its populated pages.
pub(super) fn measure(proc: &mut BenchTarget, method: Method, time: Duration) -> Result<Run> {
    let interval = Duration::from_secs(1) / RATE;
    let dir = tempfile_dir()?;
    let records = dir.join("footprint.ndjson");
    let k = ((proc.populated as f64 * 0.01).round() as u64).max(1);
    proc.start_rewriting(time + Duration::from_secs(1), k)?;
    // The tracker runs until stopped after the window (its --duration only bounds a run whose
    // stop went astray), so it is alive whenever it is sampled, however slow the machine.
    let mut tracker = start_track(proc.pid(), method, interval, time * 4, &records)?;
    let pid = tracker.id() as i32;
    let attached = Instant::now();
    let attach_cpu = cpu_so_far(pid)?;
    // The window: from the first delta to `time` after attach (the last harvest and the
    // detach come after it).
    std::thread::sleep(interval + interval / 2);
    let (cpu0, t0, (n0, h0)) = (cpu_so_far(pid)?, Instant::now(), deltas_so_far(&records));
    std::thread::sleep((attached + time).saturating_duration_since(Instant::now()));
    let (cpu1, t1, (n1, h1)) = (cpu_so_far(pid)?, Instant::now(), deltas_so_far(&records));
    // The peak of the tracker's own address space (getrusage's maxrss would count this
    // process's memory too: a child starts as a copy of it).
    let peak_rss_kib = crate::os::proc_kib(&format!("/proc/{pid}/status"), "VmHWM")
        .context("reading the tracker's status")?;
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = tracker.wait()?;
    proc.writes()?;
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        bail!("uffd-dirty track failed ({status}); its stderr is above");
    }
    if n1 <= n0 {
        bail!("no delta in the measured window: give --run-time of at least 1s");
    }
    Ok(Run {
        method,
        attach_cpu,
        window: t1 - t0,
        window_cpu: cpu1 - cpu0,
        window_deltas: n1 - n0,
        window_harvest: h1 - h0,
        peak_rss_kib,
    })
}

/// The real `uffd-dirty track --pid PID` at `interval`, its JSON records into `records`,
/// returned once attached (its start record written). It runs for `limit` at most; stop it
/// with SIGINT.
pub(super) fn start_track(
    pid: i32,
    method: Method,
    interval: Duration,
    limit: Duration,
    records: &Path,
) -> Result<std::process::Child> {
    let mut tracker = std::process::Command::new(std::env::current_exe()?)
        .args(["track", "--pid", &pid.to_string()])
        .args(["--method", &method.to_string()])
        .args(["--interval", &format!("{}us", interval.as_micros())])
        .args(["--duration", &format!("{}ms", limit.as_millis())])
        .args(["--format", "json", "--output"])
        .arg(records)
        .spawn()
        .context("starting uffd-dirty track")?;
    let waiting = Instant::now();
    while std::fs::metadata(records).map_or(true, |m| m.len() == 0) {
        if let Some(status) = tracker.try_wait()? {
            bail!("uffd-dirty track ended before attaching ({status}); its stderr is above");
        }
        if waiting.elapsed() > Duration::from_secs(120) {
            let _ = tracker.kill();
            let _ = tracker.wait();
            bail!("uffd-dirty track wrote no start record in 120 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(tracker)
}

/// A fresh private directory (mkdtemp: not a guessable name another user could plant).
pub(super) fn tempfile_dir() -> Result<std::path::PathBuf> {
    let template = std::env::temp_dir().join("uffd-dirty-bench.XXXXXX");
    nix::unistd::mkdtemp(&template)
        .with_context(|| format!("creating a directory like {}", template.display()))
}
