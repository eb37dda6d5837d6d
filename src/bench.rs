//! `uffd-dirty bench`: harvest cost of every available method on the same workload, in one
//! run, as a Markdown table (or JSON). A built-in target maps and populates a buffer, then on
//! command dirties an exact number of pages spread over it; for each size and method the
//! tracker attaches, and per dirty fraction times `rounds` harvests (mapping refresh included,
//! as in `track`), checking each time that every dirtied page was reported.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use crate::cli::Method;
use crate::exit::ExitCode;
use crate::maps::Span;
use crate::sys::{self, abi};
use crate::target::Target;
use crate::track::{self, Arming};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Tracked sizes (populated buffers), e.g. 64M,1G.
    #[arg(long, value_delimiter = ',', default_value = "64M,1G,4G", value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// Fractions of the buffer dirtied before each harvest.
    #[arg(long, value_delimiter = ',', default_value = "0,0.001,0.01,0.1,1")]
    pub fractions: Vec<f64>,
    /// Harvests timed per case (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Print JSON instead of the Markdown table.
    #[arg(long)]
    pub json: bool,
}

/// The built-in target (hidden subcommand `bench-target`).
#[derive(Debug, Args)]
pub struct BenchTargetArgs {
    #[arg(long)]
    pub pages: u64,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.trim().to_ascii_uppercase() {
        t if t.ends_with('G') => (t[..t.len() - 1].to_string(), 1u64 << 30),
        t if t.ends_with('M') => (t[..t.len() - 1].to_string(), 1 << 20),
        t if t.ends_with('K') => (t[..t.len() - 1].to_string(), 1 << 10),
        t => (t, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("`{s}` is not a size (examples: 64M, 1G)"))
}

/// Map and populate `pages`, then obey `D <count>` (dirty that many pages, evenly spread)
/// and `Q` on stdin, answering `ok`.
pub fn run_target(args: &BenchTargetArgs) -> Result<ExitCode> {
    let page = sys::page_size() as usize;
    let buffer =
        sys::AnonMapping::new(args.pages as usize * page, 0).context("mapping the bench buffer")?;
    let write = |i: usize, v: u8| buffer.write(i * page, v);
    for i in 0..args.pages as usize {
        write(i, 1);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {:#x}", buffer.addr())?;
    out.flush()?;
    let mut round = 2u8;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["D", n] => {
                let n: usize = n.parse()?;
                if let Some(stride) = (args.pages as usize).checked_div(n) {
                    for k in 0..n.min(args.pages as usize) {
                        write(k * stride.max(1), round);
                    }
                }
                round = round.wrapping_add(1);
                writeln!(out, "ok")?;
                out.flush()?;
            }
            _ => break,
        }
    }
    Ok(ExitCode::Success)
}

struct BenchTarget {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl BenchTarget {
    fn spawn(pages: u64) -> Result<BenchTarget> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["bench-target", "--pages", &pages.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the bench target")?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if !line.starts_with("ready") {
            bail!("the bench target said {line:?}");
        }
        Ok(BenchTarget {
            child,
            stdin,
            stdout,
        })
    }

    fn dirty(&mut self, n: u64) -> Result<()> {
        writeln!(self.stdin, "D {n}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.trim() != "ok" {
            bail!("the bench target said {line:?}");
        }
        Ok(())
    }
}

impl Drop for BenchTarget {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "Q");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub size_bytes: u64,
    pub method: &'static str,
    pub attach_ms: f64,
    pub vmpte_growth_kib: i64,
    pub dirty_fraction: f64,
    pub dirty_pages: u64,
    pub harvest_ms_median: f64,
    pub harvest_ms_min: f64,
    pub harvest_ms_max: f64,
    pub ms_per_gib: f64,
    pub us_per_dirty_page: Option<f64>,
}

fn vm_pte_kib(pid: i32) -> i64 {
    crate::target::read_status(&format!("/proc/{pid}/status")).map_or(0, |s| s.vm_pte_kib as i64)
}

fn methods() -> Vec<Method> {
    let mut m = vec![Method::PagemapScan, Method::PagemapRead];
    if crate::scan::soft_dirty::works().unwrap_or(false) {
        m.push(Method::SoftDirty);
    }
    m
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let support = crate::uffd::probe()?;
    support.require_async_wp()?;
    let page = sys::page_size();
    let arming = if support.pmd_hole_fix {
        Arming::Scan
    } else {
        Arming::Writeprotect
    };
    let scope = [Span::new(0, abi::TASK_SIZE)];
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let pages = size / page;
        for method in methods() {
            let mut target_proc = BenchTarget::spawn(pages)?;
            let target = Target::open(target_proc.child.id() as i32)?;
            let pte_before = vm_pte_kib(target.pid);
            let t = Instant::now();
            let mut source = match method {
                Method::SoftDirty => track::attach_soft(&target, &scope, true, true)?.mm,
                m => track::attach_mm(&target, &scope, false, arming, m, &mut |_, _| {})?.mm,
            };
            let attach_ms = t.elapsed().as_secs_f64() * 1000.0;
            let vmpte_growth_kib = vm_pte_kib(target.pid) - pte_before;
            let since = Instant::now();
            // One harvest to settle (the first one after attach reports the tracker's own
            // startup writes in the target, none in the buffer).
            let _ = source.harvest(&target, &scope, 0, since, page)?;
            for &fraction in &args.fractions {
                let n = (pages as f64 * fraction).round() as u64;
                let mut times = Vec::with_capacity(args.rounds);
                for round in 0..args.rounds {
                    target_proc.dirty(n)?;
                    let t0 = Instant::now();
                    let delta =
                        match source.harvest(&target, &scope, round as u64 + 1, since, page)? {
                            Ok((_, d)) => d,
                            Err(_) => bail!("the bench target went away"),
                        };
                    times.push(t0.elapsed());
                    if delta.dirty_pages < n {
                        bail!(
                            "{}: only {} of {n} dirtied pages were reported",
                            track::method_name(method),
                            delta.dirty_pages
                        );
                    }
                }
                times.sort();
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                let median = ms(times[times.len() / 2]);
                rows.push(Row {
                    size_bytes: size,
                    method: track::method_name(method),
                    attach_ms,
                    vmpte_growth_kib,
                    dirty_fraction: fraction,
                    dirty_pages: n,
                    harvest_ms_median: median,
                    harvest_ms_min: ms(times[0]),
                    harvest_ms_max: ms(times[times.len() - 1]),
                    ms_per_gib: median / (size as f64 / (1u64 << 30) as f64),
                    us_per_dirty_page: (n > 0).then(|| median * 1000.0 / n as f64),
                });
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        print_markdown(&mut out, &rows, args)?;
    }
    Ok(ExitCode::Success)
}

fn human_size(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b >> 20)
    }
}

fn print_markdown(out: &mut impl Write, rows: &[Row], args: &BenchArgs) -> std::io::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(
        out,
        "Machine: {cpus} CPUs, kernel {}; median of {} harvests per case; harvest = mapping refresh + get + re-arm.\n",
        crate::uffd::kernel_release(),
        args.rounds
    )?;
    writeln!(
        out,
        "| size | method | attach ms | VmPTE +KiB | dirty | harvest ms (min–max) | ms per GiB | µs per dirty page |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for r in rows {
        writeln!(
            out,
            "| {} | {} | {:.1} | {} | {}% ({} p) | {:.2} ({:.2}–{:.2}) | {:.2} | {} |",
            human_size(r.size_bytes),
            r.method,
            r.attach_ms,
            r.vmpte_growth_kib,
            r.dirty_fraction * 100.0,
            r.dirty_pages,
            r.harvest_ms_median,
            r.harvest_ms_min,
            r.harvest_ms_max,
            r.ms_per_gib,
            r.us_per_dirty_page
                .map_or("–".into(), |v| format!("{v:.3}"))
        )?;
    }
    writeln!(out, "\n| size | dirty | pagemap-read ÷ pagemap-scan |")?;
    writeln!(out, "|---|---|---|")?;
    for scan in rows.iter().filter(|r| r.method == "pagemap-scan") {
        if let Some(read) = rows.iter().find(|r| {
            r.method == "pagemap-read"
                && r.size_bytes == scan.size_bytes
                && r.dirty_fraction == scan.dirty_fraction
        }) {
            writeln!(
                out,
                "| {} | {}% | {:.1}× |",
                human_size(scan.size_bytes),
                scan.dirty_fraction * 100.0,
                read.harvest_ms_median / scan.harvest_ms_median.max(1e-6)
            )?;
        }
    }
    Ok(())
}
