//! The written working set of a process over sliding time windows, with the public
//! `uffd_dirty` API: how many distinct pages it wrote in the last 1 s, 10 s and 60 s.
//!
//! Like Brendan Gregg's `wss` tools, but for writes only, and exact: nothing is sampled or
//! estimated from reference bits. The tracker is harvested every `--interval` (100 ms); each
//! harvest is the set of pages written since the one before. A window's working set is the
//! union of the harvests that cover it (to within half an interval), so a page written many
//! times counts once. Only the harvests within the longest window are kept, so memory stays
//! bounded however long it runs.
//!
//! One line per shortest window:
//!
//! ```text
//! t=3.0s  wss(1s)=1003 pages (3.9 MiB)  wss(10s)=4112 pages (16.1 MiB) partial  ...
//! ```
//!
//! `partial` marks a window longer than the time tracked so far. With `--json`, one object per
//! line instead: `{"t_s":3.0,"wss":[{"window_ms":1000,"pages":1003,"bytes":4108288,"full":true},...]}`.
//!
//! ```text
//! cargo build && cargo build --example wss
//! sudo target/debug/examples/wss --pid PID [--windows 1s,10s,60s] [--interval 100ms] [--duration 30s] [--json]
//! sudo target/debug/examples/wss [OPTIONS] -- CMD ARGS...
//! ```
//!
//! It runs until `--duration` is up, the target exits, or it is interrupted. A target that
//! runs a new program is followed, and the new program's memory counts as written. The attach
//! helper is the `uffd-dirty` binary, found one directory up from the example
//! (`target/debug/uffd-dirty`); `UFFD_DIRTY_ATTACH_HELPER` names another.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use uffd_dirty::{Error, Harvest, SpanSet, Target, TrackerBuilder};

const USAGE: &str = "usage: wss (--pid PID | -- CMD ARGS...) [--windows 1s,10s,60s] [--interval 100ms] [--duration D] [--json]";

struct Options {
    pid: Option<i32>,
    command: Vec<String>,
    /// Sorted, shortest first.
    windows: Vec<Duration>,
    interval: Duration,
    duration: Option<Duration>,
    json: bool,
}

/// The pages written between two harvests.
struct Slice {
    /// The previous harvest (or the attach): the writes in `dirty` came after it.
    start: Instant,
    dirty: SpanSet,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        pid: None,
        command: Vec::new(),
        windows: ["1s", "10s", "60s"].map(|w| duration(w).unwrap()).to_vec(),
        interval: Duration::from_millis(100),
        duration: None,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--pid" => {
                let v = value()?;
                opts.pid = Some(v.parse().map_err(|_| format!("bad PID {v:?}"))?);
            }
            "--windows" => {
                opts.windows = value()?
                    .split(',')
                    .map(duration)
                    .collect::<Result<_, _>>()?;
                opts.windows.sort();
            }
            "--interval" => opts.interval = duration(&value()?)?,
            "--duration" => opts.duration = Some(duration(&value()?)?),
            "--json" => opts.json = true,
            "--" => opts.command = args.by_ref().collect(),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let one_target = opts.pid.is_some() == opts.command.is_empty();
    if !one_target {
        return Err("give either --pid PID or -- CMD".into());
    }
    if opts.windows.is_empty() || opts.interval.is_zero() || opts.windows[0] < opts.interval {
        return Err("every window must be at least one --interval long".into());
    }
    Ok(opts)
}

/// `250ms`, `1s`, `1.5s`.
fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {text:?}: give a number and ms or s");
    let (number, unit) = match text.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (text.strip_suffix('s').ok_or_else(bad)?, 1.0),
    };
    let seconds = number.parse::<f64>().map_err(|_| bad())? * unit;
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("wss: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wss: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> Result<(), Error> {
    let target = match opts.pid {
        Some(pid) => Target::open(pid)?,
        None => Target::launch(&opts.command)?,
    };
    let mut tracker = TrackerBuilder::new().attach(&target)?;
    let page = tracker.page_size();
    let (shortest, longest) = (opts.windows[0], opts.windows[opts.windows.len() - 1]);
    let slack = opts.interval / 2;

    let attached = Instant::now();
    let mut slices: VecDeque<Slice> = VecDeque::new();
    let mut harvest = Harvest::new();
    let mut last = attached;
    let (mut tick, mut reports) = (1, 1);
    loop {
        // Harvest on a fixed beat: a late harvest does not delay the ones after it.
        let due = attached + opts.interval * tick;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        tick = tick.max(attached.elapsed().div_duration_f64(opts.interval) as u32 + 1);
        // The harvest reports every write before it began.
        let now = Instant::now();
        match tracker.harvest_into(&mut harvest) {
            Err(gone @ Error::Gone { .. }) => {
                eprintln!("wss: {gone}");
                return Ok(());
            }
            r => r?,
        }
        slices.push_back(Slice {
            start: last,
            dirty: harvest.dirty().clone(),
        });
        last = now;
        // Keep only what the longest window needs.
        while slices
            .front()
            .is_some_and(|s| now - s.start > longest + slack)
        {
            slices.pop_front();
        }
        let t = now - attached;
        if t >= shortest * reports {
            reports = (t.div_duration_f64(shortest) as u32) + 1;
            let sizes: Vec<(Duration, u64, bool)> = opts
                .windows
                .iter()
                .map(|&w| {
                    let within = slices.iter().filter(|s| now - s.start <= w + slack);
                    let written: SpanSet = within.flat_map(|s| s.dirty.iter().copied()).collect();
                    (w, written.pages(page), t + slack >= w)
                })
                .collect();
            report(t, &sizes, page, opts.json);
        }
        if opts.duration.is_some_and(|d| t >= d) {
            // A launched command is terminated when `target` is dropped.
            return Ok(());
        }
    }
}

/// One line: the working set of every window, in pages.
fn report(t: Duration, sizes: &[(Duration, u64, bool)], page: u64, json: bool) {
    if json {
        let windows: Vec<String> = sizes
            .iter()
            .map(|&(w, pages, full)| {
                format!(
                    r#"{{"window_ms":{},"pages":{pages},"bytes":{},"full":{full}}}"#,
                    w.as_millis(),
                    pages * page
                )
            })
            .collect();
        println!(
            r#"{{"t_s":{:.3},"wss":[{}]}}"#,
            t.as_secs_f64(),
            windows.join(",")
        );
    } else {
        let mut line = format!("t={:.1}s", t.as_secs_f64());
        for &(w, pages, full) in sizes {
            line += &format!(
                "  wss({w:?})={pages} pages ({:.1} MiB){}",
                (pages * page) as f64 / (1 << 20) as f64,
                if full { "" } else { " partial" }
            );
        }
        println!("{line}");
    }
}
