//! The `redis` section: a real service under tracking. `redis-server` (Debian's package, never
//! assumed: the section says how to install it) on loopback TCP is driven by `redis-benchmark`
//! (SET, 256-byte values, 50 clients, keys drawn from 300 k, filled once before the rounds),
//! untracked and under the real `uffd-dirty track --pid` at each `--rates` rate for each
//! method, in an order that rotates every round so that a drifting machine spreads over all of
//! them. Per mode: throughput and p50/p99/p99.9 latency (median of the rounds, with the spread),
//! each against untracked, and where the cost goes: the harvests' time and the tracker's CPU
//! per second, the server's page faults per request (a write-protect fault is one) and how
//! often it was pushed off its CPU.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::footprint::{cpu_so_far, deltas_so_far, start_track, tempfile_dir};
use super::table::opt;
use super::{median, ms};
use crate::cli::Method;

/// Keys drawn from, and filled before the rounds (`redis-benchmark -r`).
const KEYS: u64 = 300_000;
/// Value size in bytes (`-d`).
const VALUE_BYTES: u32 = 256;
/// Parallel connections (`-c`).
const CLIENTS: u32 = 50;
/// Where to get the programs, for the error that says they are missing.
const INSTALL: &str = "apt-get install redis-server redis-tools";

#[derive(Debug, Clone, Serialize)]
pub struct RedisRow {
    /// `untracked`, or a method.
    pub mode: String,
    pub rate_hz: Option<u32>,
    /// Requests per second: median over the rounds, and the spread.
    pub rps_median: f64,
    pub rps_min: f64,
    pub rps_max: f64,
    /// Median throughput ÷ the untracked median.
    pub rps_vs_untracked: f64,
    /// Latency percentiles (ms), medians over the rounds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p99_ms_min: f64,
    pub p99_ms_max: f64,
    /// redis-benchmark's first percentile at or past 99.9 (its histogram prints 99.902).
    pub p999_ms: f64,
    /// Median p99 ÷ the untracked median.
    pub p99_vs_untracked: f64,
    /// Harvests per second and the time they took per second (tracked modes).
    pub harvests_per_s: Option<f64>,
    pub harvest_ms_per_s: Option<f64>,
    /// The tracker's CPU time (user + system) per second of the run.
    pub tracker_cpu_ms_per_s: Option<f64>,
    /// The server's page faults per request (write-protect faults among them).
    pub server_faults_per_request: f64,
    /// Times per 1000 requests the server's main thread was taken off its CPU while runnable.
    pub server_preempted_per_1k_requests: f64,
}

/// One `redis-benchmark` run's results and what the server and the tracker did meanwhile.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    faults_per_request: f64,
    preempted_per_1k: f64,
    harvests_per_s: f64,
    harvest_ms_per_s: f64,
    tracker_cpu_ms_per_s: f64,
}

/// A mode of the rounds: untracked (`None`), or a method at a rate.
type Mode = Option<(Method, u32)>;

pub(super) fn measure(
    methods: &[Method],
    rates: &[u32],
    requests: u64,
    rounds: usize,
) -> Result<Vec<RedisRow>> {
    let server_bin = program("redis-server")?;
    let benchmark_bin = program("redis-benchmark")?;
    let dir = tempfile_dir()?;
    let server = Server::start(&server_bin, &dir)?;
    let bench = Benchmark {
        program: benchmark_bin,
        port: server.port,
    };
    // Fill the key space once, untracked: every round then overwrites values of a populated
    // server (as a cache in service does) rather than growing it.
    bench.run(KEYS).context("filling the server's keys")?;
    let mut modes: Vec<Mode> = vec![None];
    for &method in methods {
        modes.extend(rates.iter().map(|&r| Some((method, r))));
    }
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        for i in 0..modes.len() {
            let m = (i + round) % modes.len();
            results[m].push(run_round(&bench, &server, modes[m], requests, &dir)?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let untracked = &results[0];
    let (base_rps, base_p99) = (
        median(&mut untracked.iter().map(|r| r.rps).collect::<Vec<_>>()),
        median(&mut untracked.iter().map(|r| r.p99).collect::<Vec<_>>()),
    );
    Ok(modes
        .iter()
        .zip(&results)
        .map(|(mode, rounds)| row(*mode, rounds, base_rps, base_p99))
        .collect())
}

fn row(mode: Mode, rounds: &[Round], base_rps: f64, base_p99: f64) -> RedisRow {
    let of = |f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        let med = median(&mut v);
        (med, v[0], v[v.len() - 1])
    };
    let (rps, rps_min, rps_max) = of(|r| r.rps);
    let (p99, p99_min, p99_max) = of(|r| r.p99);
    let tracked = |f: fn(&Round) -> f64| mode.map(|_| of(f).0);
    RedisRow {
        mode: mode.map_or("untracked".into(), |(m, _)| m.to_string()),
        rate_hz: mode.map(|(_, r)| r),
        rps_median: rps,
        rps_min,
        rps_max,
        rps_vs_untracked: rps / base_rps.max(1e-9),
        p50_ms: of(|r| r.p50).0,
        p99_ms: p99,
        p99_ms_min: p99_min,
        p99_ms_max: p99_max,
        p999_ms: of(|r| r.p999).0,
        p99_vs_untracked: p99 / base_p99.max(1e-9),
        harvests_per_s: tracked(|r| r.harvests_per_s),
        harvest_ms_per_s: tracked(|r| r.harvest_ms_per_s),
        tracker_cpu_ms_per_s: tracked(|r| r.tracker_cpu_ms_per_s),
        server_faults_per_request: of(|r| r.faults_per_request).0,
        server_preempted_per_1k_requests: of(|r| r.preempted_per_1k).0,
    }
}

/// One benchmark run in `mode`: the tracker (if any) attached before the first request and
/// stopped after the last.
fn run_round(
    bench: &Benchmark,
    server: &Server,
    mode: Mode,
    requests: u64,
    dir: &Path,
) -> Result<Round> {
    let records = dir.join("track.ndjson");
    let _ = std::fs::remove_file(&records);
    let mut tracker = match mode {
        None => None,
        Some((method, rate)) => {
            let interval = Duration::from_secs(1) / rate;
            // Bounded, in case the stop below never comes; the run itself is stopped by SIGINT.
            let limit = Duration::from_secs(3600);
            Some(start_track(
                server.pid(),
                method,
                interval,
                limit,
                &records,
            )?)
        }
    };
    let tracker_pid = tracker.as_ref().map(|t| t.id() as i32);
    let before = server.counters()?;
    let cpu0 = tracker_pid.map(cpu_so_far).transpose()?;
    let (n0, h0) = deltas_so_far(&records);
    let t0 = Instant::now();
    let result = bench.run(requests);
    let took = t0.elapsed();
    let cpu1 = tracker_pid.map(cpu_so_far).transpose()?;
    let (n1, h1) = deltas_so_far(&records);
    let after = server.counters()?;
    if let Some(mut t) = tracker.take() {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(t.id() as i32, libc::SIGINT) };
        let status = t.wait()?;
        if !status.success() {
            bail!("uffd-dirty track failed ({status}); its stderr is above");
        }
    }
    let mut round = result?;
    let secs = took.as_secs_f64();
    round.faults_per_request = (after.faults - before.faults) as f64 / requests as f64;
    round.preempted_per_1k = (after.preempted - before.preempted) as f64 * 1000.0 / requests as f64;
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        round.tracker_cpu_ms_per_s = ms(c1 - c0) / secs;
        round.harvests_per_s = (n1 - n0) as f64 / secs;
        round.harvest_ms_per_s = ms(h1 - h0) / secs;
    }
    Ok(round)
}

/// `name` on PATH, or an error that says how to install it.
fn program(name: &str) -> Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("the redis section needs {name}, which is not on PATH: install it ({INSTALL})")
        })
}

/// A redis-server of our own on a free loopback port, without persistence; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's counters that say where a tracked request's time went.
struct Counters {
    /// Minor + major faults of the whole process (`/proc/PID/stat` fields 10 and 12).
    faults: u64,
    /// Involuntary context switches of its main thread (the one that serves requests).
    preempted: u64,
}

impl Server {
    fn start(program: &Path, dir: &Path) -> Result<Server> {
        // A port the kernel says is free now; redis-server binds it a moment later (it cannot
        // be handed a bound socket). Taken meanwhile, the server fails and says so.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let child = Command::new(program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--dir"])
            .arg(dir)
            .args(["--logfile", ""])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut server = Server { child, port };
        let waiting = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("redis-server ended before it listened ({status}); its log is above");
            }
            if waiting.elapsed() > Duration::from_secs(30) {
                bail!("redis-server did not listen on 127.0.0.1:{port} in 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn counters(&self) -> Result<Counters> {
        let pid = self.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .context("reading redis-server's stat")?;
        // Fields after the parenthesized name, which may hold spaces: state is field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let faults = field(10)
            .zip(field(12))
            .map(|(min, maj)| min + maj)
            .context("parsing redis-server's stat")?;
        let preempted =
            crate::os::proc_kib(&format!("/proc/{pid}/status"), "nonvoluntary_ctxt_switches")
                .context("reading redis-server's status")?;
        Ok(Counters { faults, preempted })
    }
}

/// `redis-benchmark` against the server, SET only.
struct Benchmark {
    program: std::path::PathBuf,
    port: u16,
}

impl Benchmark {
    fn run(&self, requests: u64) -> Result<Round> {
        let out = Command::new(&self.program)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-t", "set", "-n", &requests.to_string()])
            .args(["-r", &KEYS.to_string(), "-d", &VALUE_BYTES.to_string()])
            .args(["-c", &CLIENTS.to_string()])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.program.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "redis-benchmark failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse_benchmark(&text).with_context(|| {
            format!(
                "redis-benchmark printed no summary: {}",
                text.lines().last().unwrap_or("")
            )
        })
    }
}

/// Throughput, p50 and p99 from the summary, and p99.9 from the percentile distribution, of
/// `redis-benchmark`'s report (Redis 7).
fn parse_benchmark(text: &str) -> Option<Round> {
    // Progress lines end in \r, not \n.
    let lines: Vec<&str> = text.split(['\n', '\r']).map(str::trim).collect();
    let rps = lines
        .iter()
        .find_map(|l| l.strip_prefix("throughput summary:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // "avg min p50 p95 p99 max", then their values.
    let head = lines
        .iter()
        .position(|l| l.starts_with("avg") && l.contains("p99"))?;
    let names: Vec<&str> = lines[head].split_whitespace().collect();
    let values: Vec<f64> = lines
        .get(head + 1)?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let at = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i).copied())
    };
    // "99.902% <= 1.879 milliseconds (cumulative count 99904)"
    let p999 = lines
        .iter()
        .skip_while(|l| !l.starts_with("Latency by percentile distribution"))
        .filter_map(|l| {
            let (pct, rest) = l.split_once("% <= ")?;
            let ms = rest.split_whitespace().next()?.parse::<f64>().ok()?;
            Some((pct.parse::<f64>().ok()?, ms))
        })
        .find(|&(pct, _)| pct >= 99.9)?
        .1;
    Some(Round {
        rps,
        p50: at("p50")?,
        p99: at("p99")?,
        p999,
        ..Round::default()
    })
}

pub(super) fn table(rows: &[RedisRow]) -> String {
    let mut t = String::from(
        "| mode | rate | requests/s (min–max) | ÷ untracked | p50 ms | p99 ms (min–max) | ÷ untracked | p99.9 ms | harvests/s | harvest ms/s | tracker CPU ms/s | server faults/request | server preempted /1k requests |\n|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        t += &format!(
            "| {} | {} | {:.0} ({:.0}–{:.0}) | {:.2} | {:.3} | {:.3} ({:.3}–{:.3}) | {:.2} | {:.3} | {} | {} | {} | {:.3} | {:.2} |\n",
            r.mode,
            r.rate_hz.map_or("–".into(), |h| format!("{h} Hz")),
            r.rps_median,
            r.rps_min,
            r.rps_max,
            r.rps_vs_untracked,
            r.p50_ms,
            r.p99_ms,
            r.p99_ms_min,
            r.p99_ms_max,
            r.p99_vs_untracked,
            r.p999_ms,
            opt(r.harvests_per_s, 1),
            opt(r.harvest_ms_per_s, 2),
            opt(r.tracker_cpu_ms_per_s, 1),
            r.server_faults_per_request,
            r.server_preempted_per_1k_requests,
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report of Debian 12's redis-benchmark 7.0.15, progress line and all (abridged).
    const REPORT: &str = "SET: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\r====== SET ======\n  100000 requests completed in 0.93 seconds\n  50 parallel clients\n\nLatency by percentile distribution:\n0.000% <= 0.103 milliseconds (cumulative count 1)\n50.000% <= 0.247 milliseconds (cumulative count 51050)\n99.805% <= 1.543 milliseconds (cumulative count 99806)\n99.902% <= 1.879 milliseconds (cumulative count 99904)\n99.951% <= 1.983 milliseconds (cumulative count 99953)\n100.000% <= 3.583 milliseconds (cumulative count 100000)\n\nCumulative distribution of latencies:\n99.917% <= 1.903 milliseconds (cumulative count 99917)\n\nSummary:\n  throughput summary: 107526.88 requests per second\n  latency summary (msec):\n          avg       min       p50       p95       p99       max\n        0.275     0.096     0.247     0.471     0.751     3.583\n";

    #[test]
    fn the_benchmark_report_gives_throughput_and_percentiles() {
        let r = parse_benchmark(REPORT).unwrap();
        assert_eq!(
            (r.rps, r.p50, r.p99, r.p999),
            (107526.88, 0.247, 0.751, 1.879)
        );
    }

    #[test]
    fn a_report_without_a_summary_is_refused() {
        let cut = &REPORT[..REPORT.find("Summary").unwrap()];
        assert!(parse_benchmark(cut).is_none());
    }
}
