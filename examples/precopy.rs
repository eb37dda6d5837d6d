//! Iterative pre-copy of a running process's memory, the way a live migrator (or CRIU's
//! pre-dump) does it, with the public `uffd_dirty` API.
//!
//! The tracker arms with `Arming::ReportPopulated`, so its first harvest reports every page
//! holding the process's data: round 0 copies those, and the mappings backed by a file or by
//! shared memory whole (their pages hold data without having been written here). Each later
//! round harvests the pages written since the last harvest and copies only those, until a harvest finds at most `--threshold`
//! pages (or after `--max-rounds`). The final round freezes the target, harvests and copies
//! once more, and lets it go: the time it was stopped is the migration's downtime. After the
//! final round the image holds, for every tracked page, exactly what the target's memory holds.
//!
//! Two rules make that true. Every page a harvest reports must be copied (the harvest has
//! already re-protected it: a later harvest reports it only if it is written again). And
//! memory backed by a file or shared memory that appears between harvests is copied whole,
//! not just its dirty pages: a harvest reports writes, and the pages of a newly mapped file
//! that are still the file's were never written. (New anonymous memory needs nothing more:
//! the harvest that finds it reports its populated pages.)
//!
//! The image is kept in memory, one entry per page; a page not in it is all zeros (never
//! written memory, and pages the target cannot read). With `--verify`, the target, still
//! frozen after the final round, is read through `/proc/PID/mem` (independently of the
//! tracker) and compared with the image page for page; any difference is printed and the
//! exit status is 1. With `--out DIR`, the image is written to `DIR/pages.img` (the pages in
//! address order) and `DIR/pagemap` (one `START END OFFSET` line, in hex, per run of pages).
//!
//! ```text
//! cargo build && cargo build --example precopy
//! sudo target/debug/examples/precopy --pid PID [--threshold PAGES] [--max-rounds N] [--verify] [--out DIR]
//! sudo target/debug/examples/precopy [OPTIONS] -- CMD ARGS...
//! ```
//!
//! The attach helper is the `uffd-dirty` binary, found one directory up from the example
//! (`target/debug/uffd-dirty`); `UFFD_DIRTY_ATTACH_HELPER` names another. Mappings the
//! kernel refuses to track are named on stderr and not copied. For the tests,
//! `--skip-final-round` lets the target run 100 ms past the last round, then freezes it
//! without a last harvest and copy: `--verify` must then find the pages written meanwhile.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use uffd_dirty::{
    Arming, Change, Harvest, MappingKind, SkippedMapping, SpanSet, Target, Tracker, TrackerBuilder,
};

const USAGE: &str = "usage: precopy (--pid PID | -- CMD ARGS...) [--threshold PAGES] [--max-rounds N] [--verify] [--out DIR]";

/// The copy of the target's memory: page address → contents. A page not in it is all zeros.
type Image = BTreeMap<u64, Box<[u8]>>;

struct Options {
    pid: Option<i32>,
    command: Vec<String>,
    /// Stop pre-copying once a harvest finds at most this many pages.
    threshold: u64,
    /// Stop pre-copying after this many rounds after round 0, however much is written.
    max_rounds: u32,
    verify: bool,
    out: Option<PathBuf>,
    skip_final_round: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        pid: None,
        command: Vec::new(),
        threshold: 256,
        max_rounds: 10,
        verify: false,
        out: None,
        skip_final_round: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--pid" => opts.pid = Some(value(&mut args, &arg)?),
            "--threshold" => opts.threshold = value(&mut args, &arg)?,
            "--max-rounds" => opts.max_rounds = value(&mut args, &arg)?,
            "--out" => opts.out = Some(value(&mut args, &arg)?),
            "--verify" => opts.verify = true,
            "--skip-final-round" => opts.skip_final_round = true,
            "--" => opts.command = args.by_ref().collect(),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let one_target = opts.pid.is_some() == opts.command.is_empty();
    if !one_target {
        return Err("give either --pid PID or -- CMD".into());
    }
    Ok(opts)
}

/// The value after option `name`, parsed.
fn value<T: std::str::FromStr>(
    args: &mut impl Iterator<Item = String>,
    name: &str,
) -> Result<T, String> {
    let v = args.next().ok_or(format!("{name} needs a value"))?;
    v.parse().map_err(|_| format!("{name}: bad value {v:?}"))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("precopy: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("precopy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Pre-copy, then the final round; false if `--verify` found a difference.
fn run(opts: &Options) -> Result<bool, Box<dyn std::error::Error>> {
    let target = match opts.pid {
        Some(pid) => Target::open(pid)?,
        None => Target::launch(&opts.command)?,
    };
    // A new program would be new memory through and through: a migrator starts over then,
    // and this example stops (the next harvest fails with `Error::Gone`).
    let mut tracker = TrackerBuilder::new()
        .follow_exec(false)
        .arming(Arming::ReportPopulated)
        .attach(&target)?;
    let page = tracker.page_size();
    let attached = tracker.attached();
    let everything = attached.spans();
    println!(
        "precopy: PID {}, {} mappings tracked ({:.1} MiB), armed in {:.1} ms",
        tracker.pid(),
        attached.tracked.len(),
        mib(everything.bytes()),
        ms(attached.duration)
    );
    for blind in tracker.blind_spots() {
        eprintln!("precopy: warning: writes the tracker cannot see: {blind}");
    }
    warn_untracked(&attached.skipped);

    let mut image = Image::new();
    println!(
        "{:>5} {:>8} {:>8} {:>8} {:>10}",
        "round", "dirty", "copied", "MiB", "time"
    );
    // Round 0: the mappings backed by an object, whole, then the first harvest: every page
    // holding data (memory never touched is zeros, and is not read, which would populate it).
    let t = Instant::now();
    let objects: SpanSet = attached
        .tracked
        .iter()
        .filter(|m| backed_by_object(Some(m.kind)))
        .map(|m| m.span)
        .collect();
    let mut copied = copy(&tracker, &objects, &mut image)?;
    let first = tracker.harvest()?;
    warn_untracked(first.skipped());
    copied += catch_up(&mut tracker, &first, &mut image)?;
    print_round("0", Some(first.dirty_pages()), copied, page, t.elapsed());

    let mut tracked = everything;
    for n in 1.. {
        let harvest = round(&mut tracker, &mut image, &n.to_string())?;
        tracked = harvest.tracked().clone();
        if harvest.dirty_pages() <= opts.threshold || n >= opts.max_rounds {
            break;
        }
    }

    if opts.skip_final_round {
        // Let the target run on a little, as it would past a round that was skipped.
        std::thread::sleep(Duration::from_millis(100));
    }
    // The final round: nothing runs in the target from here to the end of the copy.
    let t = Instant::now();
    let frozen = target.freeze()?;
    if !opts.skip_final_round {
        tracked = round(&mut tracker, &mut image, "final")?.tracked().clone();
    }
    let downtime = t.elapsed();
    println!(
        "downtime: {:.1} ms (frozen for the final harvest and copy)",
        ms(downtime)
    );
    let identical = !opts.verify || verify(tracker.pid(), &tracked, &image, page)?;
    drop(frozen);
    println!(
        "image: {} pages ({:.1} MiB) that are not all zeros",
        image.len(),
        mib(image.len() as u64 * page)
    );
    if let Some(dir) = &opts.out {
        save(&image, dir)?;
        println!("image written to {}", dir.display());
    }
    // A launched command is terminated when `target` is dropped; one opened by PID runs on,
    // untracked once `tracker` is dropped.
    Ok(identical)
}

/// One round after round 0: harvest, bring the image up to date, print the row.
fn round(tracker: &mut Tracker, image: &mut Image, name: &str) -> uffd_dirty::Result<Harvest> {
    let t = Instant::now();
    let harvest = tracker.harvest()?;
    warn_untracked(harvest.skipped());
    let copied = catch_up(tracker, &harvest, image)?;
    let page = tracker.page_size();
    print_round(name, Some(harvest.dirty_pages()), copied, page, t.elapsed());
    Ok(harvest)
}

/// Bring the image up to date with one harvest: forget memory that went, then copy what was
/// written, and the whole of memory that appeared. Returns the pages copied.
fn catch_up(
    tracker: &mut Tracker,
    harvest: &Harvest,
    image: &mut Image,
) -> uffd_dirty::Result<u64> {
    let mut gone = Vec::new();
    let mut new = Vec::new();
    let mut whole = Vec::new();
    for change in harvest.changes() {
        let span = change.span;
        match change.change {
            Change::Added | Change::Moved { .. } | Change::Replaced
                if backed_by_object(change.kind) =>
            {
                whole.push(span);
                new.push(span);
            }
            Change::Added | Change::Moved { .. } | Change::Replaced => new.push(span),
            Change::Removed => gone.push(span),
            // A change this example does not know: copy the span afresh, to be safe.
            _ => {
                whole.push(span);
                new.push(span);
            }
        }
        if let Change::Moved { from } = change.change {
            gone.push(from);
        }
    }
    // A span still in `tracked` (memory no longer armed but still mapped, whose writes are
    // still reported) keeps its pages.
    for span in SpanSet::from(gone).difference(harvest.tracked()).iter() {
        forget(image, *span);
    }
    // New memory: forget whatever the image held there (a mapping replaced in place). Its
    // data is in the harvest, except a file's or shared memory's, copied whole.
    for span in SpanSet::from(new).iter() {
        forget(image, *span);
    }
    copy(
        tracker,
        &harvest.dirty().union(&SpanSet::from(whole)),
        image,
    )
}

/// Whether memory of this kind holds data without the process having written it: a file's
/// pages, shared memory another process filled. Unknown (unmapped) counts as such.
fn backed_by_object(kind: Option<MappingKind>) -> bool {
    !matches!(
        kind,
        Some(MappingKind::Anon | MappingKind::Heap | MappingKind::Stack)
    )
}

/// Drop the image's pages in `span`.
fn forget(image: &mut Image, span: uffd_dirty::Span) {
    let addrs: Vec<u64> = image.range(span.start..span.end).map(|(&a, _)| a).collect();
    for addr in addrs {
        image.remove(&addr);
    }
}

fn warn_untracked(skipped: &[SkippedMapping]) {
    for s in skipped {
        eprintln!(
            "precopy: warning: {} {} is not tracked, so not copied: {}",
            s.span, s.name, s.reason
        );
    }
}

/// Copy the pages of `spans` from the target into the image; returns how many.
fn copy(tracker: &Tracker, spans: &SpanSet, image: &mut Image) -> uffd_dirty::Result<u64> {
    let page = tracker.page_size();
    let mut pages = by_page(spans, page, |addr, contents| {
        if contents.iter().all(|&b| b == 0) {
            image.remove(&addr);
        } else {
            image.insert(addr, contents.into());
        }
    });
    // Pages the target cannot read (PROT_NONE) come as zeros, and are not in the image.
    tracker.read_pages(spans, &mut pages)?;
    Ok(spans.pages(page))
}

/// Read `spans` of the frozen target through /proc/PID/mem and compare them with the image.
fn verify(pid: i32, spans: &SpanSet, image: &Image, page: u64) -> io::Result<bool> {
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    let zeros = vec![0u8; page as usize];
    let mut actual = vec![0u8; page as usize];
    let (mut compared, mut differ, mut unreadable) = (0u64, 0u64, 0u64);
    for addr in spans.page_addresses(page) {
        if mem.read_exact_at(&mut actual, addr).is_err() {
            unreadable += 1;
            continue;
        }
        compared += 1;
        let copied = image.get(&addr).map_or(&zeros[..], |c| &c[..]);
        if copied != &actual[..] {
            differ += 1;
            if differ <= 10 {
                let at = copied.iter().zip(&actual).position(|(a, b)| a != b);
                println!(
                    "verify: page {addr:#x} differs from the copy (first at byte {})",
                    at.unwrap_or(0)
                );
            }
        }
    }
    // The image must not hold pages the target no longer has.
    let stale = image.keys().filter(|&&a| !spans.contains(a)).count();
    println!(
        "verify: {compared} pages compared, {differ} differ, {stale} copied pages no longer mapped, {unreadable} unreadable"
    );
    Ok(differ == 0 && stale == 0)
}

/// Write the image to `dir`: `pages.img`, and `pagemap` with each run's place in it.
fn save(image: &Image, dir: &std::path::Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut pages = BufWriter::new(File::create(dir.join("pages.img"))?);
    let mut map = BufWriter::new(File::create(dir.join("pagemap"))?);
    let mut run: Option<(u64, u64, u64)> = None; // start, end, offset in pages.img
    let mut offset = 0;
    for (&addr, contents) in image {
        run = match run {
            Some((start, end, at)) if end == addr => {
                Some((start, addr + contents.len() as u64, at))
            }
            previous => {
                if let Some((start, end, at)) = previous {
                    writeln!(map, "{start:x} {end:x} {at:x}")?;
                }
                Some((addr, addr + contents.len() as u64, offset))
            }
        };
        pages.write_all(contents)?;
        offset += contents.len() as u64;
    }
    if let Some((start, end, at)) = run {
        writeln!(map, "{start:x} {end:x} {at:x}")?;
    }
    pages.flush()?;
    map.flush()
}

/// A `Write` that cuts what `Tracker::read_pages` writes (the pages of `spans`, in address
/// order) back into pages, and hands each to `f` with its address.
fn by_page<'a>(
    spans: &'a SpanSet,
    page_size: u64,
    f: impl FnMut(u64, &[u8]) + 'a,
) -> impl Write + 'a {
    ByPage {
        addrs: spans.page_addresses(page_size),
        page: Vec::with_capacity(page_size as usize),
        size: page_size as usize,
        f,
    }
}

struct ByPage<I, F> {
    addrs: I,
    page: Vec<u8>,
    size: usize,
    f: F,
}

impl<I: Iterator<Item = u64>, F: FnMut(u64, &[u8])> Write for ByPage<I, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.size - self.page.len());
        self.page.extend_from_slice(&buf[..n]);
        if self.page.len() == self.size {
            let addr = self.addrs.next().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "more pages than asked for")
            })?;
            (self.f)(addr, &self.page);
            self.page.clear();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn print_round(round: &str, dirty: Option<u64>, copied: u64, page: u64, took: Duration) {
    let dirty = dirty.map_or("-".into(), |d| d.to_string());
    println!(
        "{round:>5} {dirty:>8} {copied:>8} {:>8.1} {:>7.1} ms",
        mib(copied * page),
        ms(took)
    );
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
