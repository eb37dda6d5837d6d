//! `uffd-dirty bench`: what tracking costs, for every available method on the same workload
//! in one run, as Markdown tables (or JSON):
//!
//! - **harvest**: time per harvest (mapping refresh + get + re-arm, as one `track` interval
//!   does it) by tracked size and dirty fraction, next to the bare `PAGEMAP_SCAN` ioctl on
//!   the same memory (what our userspace adds), and what the first write to a re-protected
//!   page costs the target; every harvest is checked to report every page dirtied;
//! - **attach**: attach (register + arm) and detach time, populated and unpopulated, and the
//!   page-table memory the target gains (`VmPTE`);
//! - **slowdown**: the target's write throughput untracked vs tracked at each rate;
//! - **footprint**: the real `track` command's CPU time per second and peak RSS;
//! - **snapshot** (not run by default): `snapshot`'s copy throughput against bare
//!   `process_vm_readv`, its final round's stop time, and its rounds to converge against a
//!   writer at a fixed rate (in [`snapshot`]);
//! - **pauses** (not run by default; root): how long the tracker holds the target's mmap
//!   lock at attach, harvests and detach, from the kernel's `mmap_lock` tracepoints, with
//!   holds bounded and as they were, and the target's longest mmap+munmap (in [`pauses`]);
//! - **mappings** (not run by default): the harvest of a target with many mappings beside
//!   the bare ioctl (in [`mappings`]);
//! - **redis** (not run by default): `redis-server` under `redis-benchmark`, untracked and
//!   tracked at each rate: throughput, latency percentiles and where the cost goes (in
//!   [`redis`]).
//!
//! The target is a built-in process (`bench-target`, in [`target`]) that writes exactly the
//! pages it is told to.

mod footprint;
mod machine;
mod mappings;
mod pauses;
mod redis;
mod snapshot;
mod table;
mod tracefs;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::cli::Method;
use crate::exit::ExitCode;
use crate::fixtures::bench_target::{BenchTarget, Layout};
use crate::sys::abi::page_region;
use crate::sys::pagemap::{Categories, NO_REGION, Scan};
use crate::sys::{self, abi};
pub use footprint::FootprintRow;
pub use machine::Machine;
use uffd_dirty::{Arming, Harvest, Target, Tracker, TrackerBuilder};

/// A tracked size and the part of it that is populated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Case {
    pub size_bytes: u64,
    /// Fraction of the buffer populated, in 2 MiB chunks (1: all of it).
    pub populated: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Section {
    Harvest,
    Attach,
    Slowdown,
    Footprint,
    Snapshot,
    Pauses,
    Mappings,
    Redis,
}

/// `--rounds`: a whole number, at least 1.
fn parse_rounds(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|e| e.to_string()),
        Ok(_) => Err("give at least 1 round, e.g. 5".into()),
        Err(_) => Err("not a whole number of rounds: give 1 or more, e.g. 5".into()),
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Tracked sizes, each optionally `@` the part populated (default all), e.g.
    /// `64M,1G,16G@1%`. A sparse case is populated in 2 MiB chunks spread over it.
    #[arg(long, value_delimiter = ',', default_value = "64M,1G,4G,16G@1%", value_parser = parse_case, allow_negative_numbers = true, value_hint = clap::ValueHint::Other)]
    pub sizes: Vec<Case>,
    /// Fractions of the populated pages dirtied before each harvest.
    #[arg(long, value_delimiter = ',', default_value = "0,0.001,0.01,0.1,1", value_parser = parse_fraction, allow_negative_numbers = true, value_hint = clap::ValueHint::Other)]
    pub fractions: Vec<f64>,
    /// Harvests timed per case (the median is reported, with min and max); at least 1.
    #[arg(long, default_value_t = 5, value_parser = parse_rounds, allow_negative_numbers = true, value_hint = clap::ValueHint::Other)]
    pub rounds: usize,
    /// Buffer size of the slowdown runs (all populated).
    #[arg(long, default_value = "1G", value_parser = parse_size, allow_negative_numbers = true, value_hint = clap::ValueHint::Other)]
    pub slowdown_size: u64,
    /// Part of the slowdown buffer the target writes over and over.
    #[arg(long, default_value = "1%", value_parser = parse_fraction, allow_negative_numbers = true, value_hint = clap::ValueHint::Other)]
    pub slowdown_dirty: f64,
    /// Harvest rates (per second) of the slowdown runs, 1 to 1000 (track's shortest
    /// --interval is 1ms).
    #[arg(long, value_delimiter = ',', default_value = "10,100", value_parser = clap::value_parser!(u32).range(1..=1000), allow_negative_numbers = true, value_hint = clap::ValueHint::Other)]
    pub rates: Vec<u32>,
    /// How long each slowdown and footprint run lasts, from 1ms to 100y.
    #[arg(long, default_value = "2s", value_parser = crate::cli::parse_interval, allow_hyphen_values = true, value_hint = clap::ValueHint::Other)]
    pub run_time: Duration,
    /// Buffer of the snapshot section (all populated): its copy and final-round measurements
    /// use the whole, its convergence runs a quarter.
    #[arg(long, default_value = "1G", value_parser = parse_size, allow_negative_numbers = true, value_hint = clap::ValueHint::Other)]
    pub snapshot_size: u64,
    /// Page-writes per second of the snapshot section's convergence runs, one
    /// `uffd-dirty snapshot` each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000", value_parser = clap::value_parser!(u64).range(1..), allow_negative_numbers = true, value_hint = clap::ValueHint::Other)]
    pub snapshot_rates: Vec<u64>,
    /// Sizes of the pauses section, as --sizes.
    #[arg(long, value_delimiter = ',', default_value = "1G,4G,16G@1%", value_parser = parse_case, allow_negative_numbers = true, value_hint = clap::ValueHint::Other)]
    pub pause_sizes: Vec<Case>,
    /// Mappings of the target in the mappings section (up to the kernel's
    /// vm.max_map_count, 65530 by default).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000", value_parser = clap::value_parser!(u64).range(2..65000), value_hint = clap::ValueHint::Other)]
    pub mapping_counts: Vec<u64>,
    /// Requests of each redis-benchmark run in the redis section (SET, 256-byte values, 50
    /// clients, over 300 k keys).
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1000..), value_hint = clap::ValueHint::Other)]
    pub redis_requests: u64,
    /// Methods to measure (default: every one this kernel supports).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub methods: Vec<Method>,
    /// Which measurements to run (snapshot, pauses, mappings and redis only when asked for).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "harvest,attach,slowdown,footprint"
    )]
    pub sections: Vec<Section>,
    /// Print JSON instead of Markdown tables.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_uppercase();
    let t = t
        .strip_suffix("IB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('G') => (&t[..t.len() - 1], 1u64 << 30),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('K') => (&t[..t.len() - 1], 1 << 10),
        _ => (t, 1),
    };
    let bytes = num
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a size (examples: 64M, 1G)"))?;
    if bytes < 1 << 20 {
        return Err(format!(
            "`{s}` is below the smallest bench size: give at least 1M"
        ));
    }
    if bytes > abi::TASK_SIZE {
        return Err(format!(
            "`{s}` does not fit in the user address space (128 TiB): give a smaller size, e.g. 16G"
        ));
    }
    Ok(bytes)
}

/// `0.01` or `1%`, between 0 and 1.
fn parse_fraction(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let value = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.parse::<f64>(),
    };
    value
        .ok()
        .filter(|v| (0.0..=1.0).contains(v))
        .ok_or_else(|| format!("`{s}` is not a fraction between 0 and 1 (examples: 0.01, 1%)"))
}

fn parse_case(s: &str) -> Result<Case, String> {
    let (size, populated) = match s.split_once('@') {
        Some((size, p)) => (size, parse_fraction(p)?),
        None => (s, 1.0),
    };
    Ok(Case {
        size_bytes: parse_size(size)?,
        populated,
    })
}

impl Case {
    fn layout(&self, page: u64) -> Layout {
        let every = if self.populated <= 0.0 {
            0
        } else {
            (1.0 / self.populated).round().max(1.0) as u64
        };
        Layout {
            pages: self.size_bytes / page,
            every,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HarvestRow {
    pub case: Case,
    pub method: String,
    pub populated_pages: u64,
    pub dirty_fraction: f64,
    pub dirty_pages: u64,
    pub harvest_ms_median: f64,
    pub harvest_ms_min: f64,
    pub harvest_ms_max: f64,
    pub ms_per_gib: f64,
    pub us_per_dirty_page: Option<f64>,
    /// The bare PAGEMAP_SCAN get + re-protect ioctl over the same memory (pagemap-scan only).
    pub bare_ioctl_ms_median: Option<f64>,
    /// The part of a harvest that watches the mappings (userfaultfd methods), and the
    /// harvest without it.
    pub watch_us_median: Option<f64>,
    pub without_watch_ms_median: Option<f64>,
    /// What the target's first write to a page after re-protection costs beyond a rewrite.
    pub first_write_extra_us: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttachRow {
    pub case: Case,
    pub method: String,
    pub populated_pages: u64,
    pub attach_ms: f64,
    pub detach_ms: f64,
    pub vmpte_before_kib: u64,
    pub vmpte_growth_kib: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlowdownRow {
    pub size_bytes: u64,
    pub rewritten_pages: u64,
    /// `untracked`, or a method.
    pub method: String,
    pub rate_hz: Option<u32>,
    /// Median over the rounds, with the spread.
    pub page_writes_per_s: f64,
    pub page_writes_per_s_min: f64,
    pub page_writes_per_s_max: f64,
    /// Median throughput relative to the untracked median.
    pub vs_untracked: f64,
    pub harvests: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub command: String,
    pub machine: Option<Machine>,
    pub rounds: usize,
    pub harvest: Vec<HarvestRow>,
    pub attach: Vec<AttachRow>,
    pub slowdown: Vec<SlowdownRow>,
    pub footprint: Vec<FootprintRow>,
    pub snapshot: snapshot::SnapshotRows,
    pub pauses: Vec<pauses::PauseRow>,
    pub mappings: Vec<mappings::MappingsRow>,
    pub redis: Vec<redis::RedisRow>,
    /// The load average when the bench ended.
    pub load_at_end: Option<[f64; 3]>,
    /// Why these numbers may not be the machine's own: it was busy (see [`busy`]).
    pub warnings: Vec<String>,
}

/// A harvest whose slowest round took this many times its fastest was disturbed.
const SPREAD_BUSY: f64 = 4.0;

/// What says the machine was busy while `r` was measured: a load average of half its CPUs or
/// more at the start, or at the end more than the bench and its target make (one each), or
/// harvests spread far wider than an idle machine's (whose
/// slowest round is within 1.5-2x of its fastest), or ours more than twice the bare ioctl
/// measured beside it (an idle machine gives 0.9-1.3).
fn busy(r: &Results) -> Vec<String> {
    let mut warnings = Vec::new();
    let cpus = r.machine.as_ref().map_or(1, |m| m.cpus.max(1)) as f64;
    let loads = [
        (
            "start",
            r.machine.as_ref().map(|m| m.load_at_start),
            cpus / 2.0,
        ),
        ("end", r.load_at_end, cpus / 2.0 + 2.0),
    ];
    for (when, load, busy) in loads {
        if let Some([one, ..]) = load
            && one >= busy
        {
            warnings.push(format!(
                "the load average was {one:.2} at the {when} (on {cpus} CPUs): something else was running"
            ));
        }
    }
    let spread: Vec<String> = r
        .harvest
        .iter()
        .filter(|h| r.rounds >= 3 && h.harvest_ms_max > SPREAD_BUSY * h.harvest_ms_min.max(1e-6))
        .map(|h| {
            format!(
                "{} {} {}: {:.2}-{:.2} ms",
                table::size(h.case.size_bytes),
                h.method,
                table::percent(h.dirty_fraction),
                h.harvest_ms_min,
                h.harvest_ms_max
            )
        })
        .collect();
    if !spread.is_empty() {
        warnings.push(format!(
            "harvests spread over more than {SPREAD_BUSY}x between rounds ({})",
            spread.join("; ")
        ));
    }
    let lopsided: Vec<String> = r
        .harvest
        .iter()
        .filter_map(|h| {
            let ratio = h.harvest_ms_median / h.bare_ioctl_ms_median?;
            (!(0.5..=2.0).contains(&ratio)).then(|| {
                format!(
                    "{} {}: {ratio:.2}",
                    table::size(h.case.size_bytes),
                    table::percent(h.dirty_fraction)
                )
            })
        })
        .collect();
    if !lopsided.is_empty() {
        warnings.push(format!(
            "the harvest and the bare ioctl beside it disagree (ours / bare outside 0.5-2: {})",
            lopsided.join("; ")
        ));
    }
    warnings
}

fn vm_pte_kib(pid: i32) -> u64 {
    crate::os::proc_kib(&format!("/proc/{pid}/status"), "VmPTE").unwrap_or(0)
}

/// The methods this kernel supports, or those asked for (checked in `run`).
fn methods(asked: &[Method]) -> Vec<Method> {
    if !asked.is_empty() {
        return asked.to_vec();
    }
    let mut m = vec![Method::PagemapScan, Method::PagemapRead];
    if uffd_dirty::probe::require(Method::SoftDirty).is_ok() {
        m.push(Method::SoftDirty);
    }
    m
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A bench target and the tracker's attachment to it.
struct Tracked {
    proc: BenchTarget,
    target: Target,
    tracker: Tracker,
    method: Method,
    harvest: Harvest,
}

impl Tracked {
    fn attach(proc: BenchTarget, method: Method, arming: Arming) -> Result<Tracked> {
        let target = Target::open(proc.pid())?;
        let tracker = attach_whole(&target, method, arming)?;
        Ok(Tracked {
            proc,
            target,
            tracker,
            method,
            harvest: Harvest::new(),
        })
    }

    /// One harvest, as `track` does it; the dirty pages it reported.
    fn harvest(&mut self) -> Result<u64> {
        match self.tracker.harvest_into(&mut self.harvest) {
            Ok(()) => Ok(self.harvest.dirty_pages()),
            Err(uffd_dirty::Error::Gone { .. }) => bail!("the bench target went away"),
            Err(e) => Err(e.into()),
        }
    }

    fn name(&self) -> String {
        self.method.to_string()
    }
}

/// Attach to the whole of `target` as `track` does.
fn attach_whole(target: &Target, method: Method, arming: Arming) -> Result<Tracker> {
    Ok(TrackerBuilder::new()
        .method(method)
        .arming(arming)
        .attach(target)?)
}

/// Attaches (and detaches) timed per case: the median of three, on one target.
const ATTACH_ROUNDS: usize = 3;

/// The kernel's own cost: `PAGEMAP_SCAN` get + re-protect over the whole address space, as
/// the fast-path harvest issues it, into a buffer allocated once, counting pages only.
struct BareScan {
    pagemap: File,
    vec: Vec<page_region>,
}

impl BareScan {
    fn open(pid: i32) -> Result<BareScan> {
        Ok(BareScan {
            pagemap: File::open(format!("/proc/{pid}/pagemap"))
                .with_context(|| format!("opening /proc/{pid}/pagemap"))?,
            // Large enough that one call covers any harvest here: the kernel at its best.
            vec: vec![NO_REGION; 1 << 16],
        })
    }

    fn harvest(&mut self, page: u64) -> Result<u64> {
        let harvest = Scan::pages()
            .all_of(Categories::WRITTEN)
            .report(Categories::WRITTEN)
            .write_protect();
        let (mut cur, mut pages) = (0, 0);
        while cur < abi::TASK_SIZE {
            let got = harvest.run(self.pagemap.as_fd(), cur..abi::TASK_SIZE, &mut self.vec)?;
            pages += got
                .regions
                .iter()
                .map(|r| (r.end - r.start) / page)
                .sum::<u64>();
            if got.walk_end <= cur {
                bail!("PAGEMAP_SCAN made no progress at {cur:#x}");
            }
            cur = got.walk_end;
        }
        Ok(pages)
    }
}

struct Bench<'a> {
    args: &'a BenchArgs,
    arming: Arming,
    page: u64,
    results: Results,
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if args.sections.contains(&Section::Footprint) && args.run_time < Duration::from_secs(1) {
        return Err(crate::exit::usage(
            "--run-time below 1s leaves the footprint run no steady window to measure: give at least 1s",
        ));
    }
    let support = uffd_dirty::probe::require(Method::PagemapScan)?;
    if args.methods.contains(&Method::SoftDirty)
        && uffd_dirty::probe::require(Method::SoftDirty).is_err()
    {
        return Err(crate::exit::unsupported(format!(
            "this kernel ({}) has no working soft-dirty tracking: leave soft-dirty out of --methods (vm/bench.sh measures it in a VM)",
            uffd_dirty::probe::kernel_release()
        )));
    }
    let mut bench = Bench {
        args,
        arming: if support.pmd_hole_fix {
            Arming::PagemapScan
        } else {
            Arming::Writeprotect
        },
        page: sys::page_size(),
        results: Results {
            // As typed, but the program by its name rather than its path.
            command: std::env::args()
                .enumerate()
                .map(|(i, a)| match i {
                    0 => "uffd-dirty".to_string(),
                    _ => a,
                })
                .collect::<Vec<_>>()
                .join(" "),
            machine: Some(Machine::read()),
            rounds: args.rounds.max(1),
            ..Default::default()
        },
    };
    for section in [
        Section::Harvest,
        Section::Attach,
        Section::Slowdown,
        Section::Footprint,
        Section::Snapshot,
        Section::Pauses,
        Section::Mappings,
        Section::Redis,
    ] {
        if !args.sections.contains(&section) {
            continue;
        }
        match section {
            Section::Harvest => bench.harvest()?,
            Section::Attach => bench.attach()?,
            Section::Slowdown => bench.slowdown()?,
            Section::Footprint => bench.footprint()?,
            Section::Pauses => bench.results.pauses = pauses::measure(&args.pause_sizes)?,
            Section::Mappings => {
                bench.results.mappings =
                    mappings::measure(&args.mapping_counts, bench.results.rounds, bench.page)?
            }
            Section::Redis => {
                bench.results.redis = redis::measure(
                    &methods(&args.methods),
                    &args.rates,
                    args.redis_requests,
                    bench.results.rounds,
                )?
            }
            Section::Snapshot => {
                bench.results.snapshot = snapshot::measure(
                    args.snapshot_size,
                    &args.snapshot_rates,
                    bench.results.rounds,
                    bench.page,
                )?
            }
        }
    }
    bench.results.load_at_end = Some(machine::load_average());
    bench.results.warnings = busy(&bench.results);
    for w in &bench.results.warnings {
        eprintln!("uffd-dirty: warning: {w}; run again on an idle machine");
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &bench.results)?;
        writeln!(out)?;
    } else {
        table::print(&mut out, &bench.results)?;
    }
    Ok(ExitCode::Success)
}

impl Bench<'_> {
    fn harvest(&mut self) -> Result<()> {
        let rounds = self.results.rounds;
        for &case in &self.args.sizes {
            let layout = case.layout(self.page);
            for method in methods(&self.args.methods) {
                let mut t = Tracked::attach(BenchTarget::spawn(layout)?, method, self.arming)?;
                let populated = t.proc.populated;
                // Settle: the first harvest after attach reports the tracker's own startup
                // writes in the target.
                t.harvest()?;
                // The bare ioctl arms empty slots too (it is the dense fast path): on sparse
                // memory it would allocate the page tables the sparse path avoids.
                let mut bare = (method == Method::PagemapScan && populated == layout.pages)
                    .then(|| BareScan::open(t.target.pid()))
                    .transpose()?;
                for &fraction in &self.args.fractions {
                    let n = (populated as f64 * fraction).round() as u64;
                    let (mut times, mut bare_times, mut extra) = (vec![], vec![], vec![]);
                    let (mut watches, mut without_watch) = (vec![], vec![]);
                    for _ in 0..rounds {
                        let first = t.proc.dirty(n)?;
                        let again = t.proc.dirty(n)?;
                        let t0 = Instant::now();
                        let reported = t.harvest()?;
                        let took = t0.elapsed();
                        times.push(ms(took));
                        if let Some(watch) = t.harvest.watch_cost() {
                            watches.push(watch.as_secs_f64() * 1e6);
                            without_watch.push(ms(took.saturating_sub(watch)));
                        }
                        if reported < n {
                            bail!(
                                "{}: only {reported} of {n} dirtied pages were reported",
                                t.name()
                            );
                        }
                        if n > 0 {
                            extra
                                .push((first.as_secs_f64() - again.as_secs_f64()) * 1e6 / n as f64);
                        }
                        if let Some(bare) = bare.as_mut() {
                            // The same writes as before the harvest, so both scans find the
                            // target's memory and TLB in the same state.
                            t.proc.dirty(n)?;
                            t.proc.dirty(n)?;
                            let t0 = Instant::now();
                            let reported = bare.harvest(self.page)?;
                            bare_times.push(ms(t0.elapsed()));
                            if reported < n {
                                bail!(
                                    "bare ioctl: only {reported} of {n} dirtied pages were reported"
                                );
                            }
                        }
                    }
                    let med = median(&mut times);
                    self.results.harvest.push(HarvestRow {
                        case,
                        method: t.name(),
                        populated_pages: populated,
                        dirty_fraction: fraction,
                        dirty_pages: n,
                        harvest_ms_median: med,
                        harvest_ms_min: times[0],
                        harvest_ms_max: times[times.len() - 1],
                        ms_per_gib: med / (case.size_bytes as f64 / (1u64 << 30) as f64),
                        us_per_dirty_page: (n > 0).then(|| med * 1000.0 / n as f64),
                        bare_ioctl_ms_median: (!bare_times.is_empty())
                            .then(|| median(&mut bare_times)),
                        watch_us_median: (!watches.is_empty()).then(|| median(&mut watches)),
                        without_watch_ms_median: (!without_watch.is_empty())
                            .then(|| median(&mut without_watch)),
                        first_write_extra_us: (!extra.is_empty()).then(|| median(&mut extra)),
                    });
                }
            }
        }
        Ok(())
    }

    fn attach(&mut self) -> Result<()> {
        for &case in &self.args.sizes {
            let unpopulated = Case {
                populated: 0.0,
                ..case
            };
            for case in [case, unpopulated] {
                for method in methods(&self.args.methods) {
                    let proc = BenchTarget::spawn(case.layout(self.page))?;
                    let target = Target::open(proc.pid())?;
                    let vmpte_before_kib = vm_pte_kib(target.pid());
                    let mut vmpte_growth_kib = 0;
                    let (mut attach, mut detach) = (Vec::new(), Vec::new());
                    // Detaching drops every protection, so each attach arms the same memory
                    // afresh (page tables that arming allocated stay: counted once).
                    for round in 0..ATTACH_ROUNDS {
                        let t0 = Instant::now();
                        let source = attach_whole(&target, method, self.arming)?;
                        attach.push(ms(t0.elapsed()));
                        if round == 0 {
                            vmpte_growth_kib =
                                vm_pte_kib(target.pid()) as i64 - vmpte_before_kib as i64;
                        }
                        let t0 = Instant::now();
                        drop(source);
                        detach.push(ms(t0.elapsed()));
                    }
                    self.results.attach.push(AttachRow {
                        case,
                        method: method.to_string(),
                        populated_pages: proc.populated,
                        attach_ms: median(&mut attach),
                        detach_ms: median(&mut detach),
                        vmpte_before_kib,
                        vmpte_growth_kib,
                    });
                }
            }
        }
        Ok(())
    }

    /// Every configuration (untracked, then each method at each rate) once per round, in
    /// turn, so that a drift of the machine spreads over all of them rather than biasing one.
    fn slowdown(&mut self) -> Result<()> {
        let layout = Case {
            size_bytes: self.args.slowdown_size,
            populated: 1.0,
        }
        .layout(self.page);
        let k = ((layout.populated() as f64 * self.args.slowdown_dirty).round() as u64).max(1);
        let mut configs: Vec<Option<(Method, u32)>> = vec![None];
        for method in methods(&self.args.methods) {
            configs.extend(self.args.rates.iter().map(|&rate| Some((method, rate))));
        }
        let mut runs: Vec<Vec<(f64, u64)>> = vec![Vec::new(); configs.len()];
        for _ in 0..self.results.rounds {
            for (config, runs) in configs.iter().zip(&mut runs) {
                runs.push(self.throughput(layout, k, *config)?);
            }
        }
        let mut base = 0.0;
        for (config, mut runs) in configs.into_iter().zip(runs) {
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (median, harvests) = runs[runs.len() / 2];
            if config.is_none() {
                base = median;
            }
            self.results.slowdown.push(SlowdownRow {
                size_bytes: self.args.slowdown_size,
                rewritten_pages: k,
                method: config.map_or("untracked".to_string(), |(m, _)| m.to_string()),
                rate_hz: config.map(|(_, rate)| rate),
                page_writes_per_s: median,
                page_writes_per_s_min: runs[0].0,
                page_writes_per_s_max: runs[runs.len() - 1].0,
                vs_untracked: median / base,
                harvests,
            });
        }
        Ok(())
    }

    /// Page-writes per second of a fresh target rewriting `k` pages for `--run-time`, and the
    /// harvests done meanwhile, untracked (`None`) or tracked by a method at a rate.
    fn throughput(
        &self,
        layout: Layout,
        k: u64,
        config: Option<(Method, u32)>,
    ) -> Result<(f64, u64)> {
        let run_time = self.args.run_time;
        let per_s = |writes: u64| writes as f64 / run_time.as_secs_f64();
        let Some((method, rate)) = config else {
            let mut proc = BenchTarget::spawn(layout)?;
            proc.start_rewriting(run_time, k)?;
            return Ok((per_s(proc.writes()?), 0));
        };
        let interval = Duration::from_secs(1) / rate.max(1);
        let mut t = Tracked::attach(BenchTarget::spawn(layout)?, method, self.arming)?;
        t.harvest()?;
        let start = Instant::now();
        t.proc.start_rewriting(run_time, k)?;
        let mut harvests = 0;
        let mut next = start + interval;
        while next < start + run_time {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            t.harvest()?;
            harvests += 1;
            next = (next + interval).max(Instant::now());
        }
        Ok((per_s(t.proc.writes()?), harvests))
    }

    fn footprint(&mut self) -> Result<()> {
        for &case in &self.args.sizes {
            for method in methods(&self.args.methods) {
                let mut proc = BenchTarget::spawn(case.layout(self.page))?;
                let run = footprint::measure(&mut proc, method, self.args.run_time)?;
                self.results.footprint.push(run.row(case));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_sizes_and_fractions_parse() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("0").is_err() && parse_size("lots").is_err());
        assert_eq!(parse_fraction("1%"), Ok(0.01));
        assert_eq!(parse_fraction("0.5"), Ok(0.5));
        assert!(parse_fraction("150%").is_err());
        assert_eq!(
            parse_case("16G@1%"),
            Ok(Case {
                size_bytes: 16 << 30,
                populated: 0.01
            })
        );
        let l = parse_case("16G@1%").unwrap().layout(4096);
        assert_eq!((l.pages, l.every), (4 << 20, 100));
        assert_eq!(parse_case("1G").unwrap().layout(4096).every, 1);
        assert_eq!(parse_case("1G@0").unwrap().layout(4096).every, 0);
    }

    /// A quiet run is not warned about; load, a wide spread and ours far from the bare ioctl
    /// each are, by name.
    #[test]
    fn a_busy_machine_is_warned_about() {
        let row = |min: f64, max: f64, ours: f64, bare: f64| HarvestRow {
            case: Case {
                size_bytes: 1 << 30,
                populated: 1.0,
            },
            method: "pagemap-scan".into(),
            populated_pages: 1 << 18,
            dirty_fraction: 0.01,
            dirty_pages: 2621,
            harvest_ms_median: ours,
            harvest_ms_min: min,
            harvest_ms_max: max,
            ms_per_gib: ours,
            us_per_dirty_page: None,
            bare_ioctl_ms_median: Some(bare),
            watch_us_median: None,
            without_watch_ms_median: None,
            first_write_extra_us: None,
        };
        let mut machine = Machine::read();
        machine.cpus = 2;
        machine.load_at_start = [0.3, 0.5, 0.5];
        let mut r = Results {
            machine: Some(machine),
            rounds: 5,
            harvest: vec![row(0.5, 0.8, 0.6, 0.55)],
            load_at_end: Some([0.4, 0.5, 0.5]),
            ..Default::default()
        };
        assert_eq!(busy(&r), Vec::<String>::new());
        // The bench and its target alone make 2 (not a warning); 3.2 is someone else.
        r.load_at_end = Some([2.0, 0.5, 0.5]);
        assert_eq!(busy(&r), Vec::<String>::new());
        r.load_at_end = Some([3.2, 0.5, 0.5]);
        r.harvest.push(row(0.5, 2.5, 0.6, 0.55));
        r.harvest.push(row(0.5, 0.8, 0.6, 2.2));
        let w = busy(&r);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("3.20 at the end"), "{w:?}");
        assert!(w[1].contains("0.50-2.50 ms"), "{w:?}");
        assert!(w[2].contains("0.27"), "{w:?}");
    }
}
