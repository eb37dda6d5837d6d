//! The `snapshot` section: what `uffd-dirty snapshot` costs, each number against a baseline
//! measured in the same run:
//!
//! - **copy**: `Tracker::read_pages` (as a snapshot round calls it, into a sink that discards
//!   the bytes, so that only the copy is timed) against a bare `process_vm_readv` loop over
//!   the same pages, batching up to `IOV_MAX` pieces per call, by dirty fraction, the pages
//!   scattered at random or contiguous;
//! - **stop**: the final round's stop time, from `Target::freeze` to its drop around one
//!   harvest and the copy into a pages file (written as the snapshot's round writer does:
//!   zero pages counted, the others checksummed, buffered and synced), with its parts;
//! - **converge**: the real `uffd-dirty snapshot` against a target writing random pages at a
//!   fixed rate: the rounds it takes, why it ends, and the downtime it reports.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{BenchTarget, Case, median, ms};
use crate::fixtures::writer::Rng;
use crate::sys::{self, abi};
use uffd_dirty::{Arming, Harvest, Span, SpanSet, Target, Tracker, TrackerBuilder};

/// Dirty fractions of the copy measurement (1 is every page: scattered and contiguous alike).
const COPY_FRACTIONS: [f64; 3] = [0.01, 0.1, 1.0];

/// Fractions of the pages written before the final round of the stop measurement.
const STOP_FRACTIONS: [f64; 2] = [0.01, 0.1];

/// The bare loop's buffer: the most bytes one `process_vm_readv` reads (1 MiB: it stays in
/// cache; 4 MiB was slower here on contiguous pages, and no faster on scattered ones).
const BARE_BUFFER: usize = 1 << 20;

/// Copies timed per round and way are as many as make this many bytes (up to
/// [`MAX_REPEATS`]): a copy of 1% of 1 GiB takes a few milliseconds, less than the hiccups
/// of a virtual machine, so it is timed many times and the median taken.
const BYTES_PER_ROUND: u64 = 128 << 20;
const MAX_REPEATS: u64 = 10;

/// The snapshot's own threshold (`--until-dirty-below`, its default).
const THRESHOLD_PAGES: u64 = 256;

/// The pre-copy intervals of the converge runs: the snapshot's default, and a tenth of it.
const INTERVALS: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(20)];

/// Longest a converge run may take before it counts as hung.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(120);

#[derive(Debug, Default, Serialize)]
pub struct SnapshotRows {
    pub copy: Vec<CopyRow>,
    pub stop: Vec<StopRow>,
    pub converge: Vec<ConvergeRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyRow {
    pub size_bytes: u64,
    /// `scattered` (pages picked at random), `contiguous` (one run), or `all`.
    pub pattern: &'static str,
    pub fraction: f64,
    pub pages: u64,
    /// Runs of adjacent pages in the set.
    pub spans: u64,
    /// Copies timed each way.
    pub copies: usize,
    /// `read_pages` into a sink that discards: median over the rounds, with the spread.
    pub ours_mib_s: f64,
    pub ours_mib_s_min: f64,
    pub ours_mib_s_max: f64,
    /// The bare `process_vm_readv` loop.
    pub bare_mib_s: f64,
    pub bare_mib_s_min: f64,
    pub bare_mib_s_max: f64,
    /// Median of ours ÷ median of bare.
    pub ours_vs_bare: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StopRow {
    pub size_bytes: u64,
    pub fraction: f64,
    /// Pages written before each final round, and the most any of its harvests reported.
    pub written_pages: u64,
    pub reported_pages: u64,
    /// From freeze to thaw: median over the rounds, with the spread.
    pub stop_ms_median: f64,
    pub stop_ms_min: f64,
    pub stop_ms_max: f64,
    /// Its parts (medians): stopping every thread, the harvest, `read_pages` into the pages
    /// file's buffer, flush + fsync, letting the threads go.
    pub freeze_ms: f64,
    pub harvest_ms: f64,
    pub copy_ms: f64,
    pub sync_ms: f64,
    pub thaw_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConvergeRow {
    pub buffer_bytes: u64,
    pub rate_pages_s: u64,
    pub interval_ms: u64,
    /// Rounds stored, round 0 and the final round included.
    pub rounds: u64,
    pub precopy_rounds: u64,
    /// The end record's reason, and the command's exit status.
    pub reason: String,
    pub exit_code: i32,
    /// Pages written in the last pre-copy round, and in the final round.
    pub last_precopy_dirty: u64,
    pub final_dirty: u64,
    pub downtime_ms: Option<f64>,
    /// Wall time of the whole command.
    pub total_s: f64,
}

/// The whole section: copy and stop on one target of `size` bytes, all populated; converge
/// on a fresh target of a quarter of it per run.
pub(super) fn measure(size: u64, rates: &[u64], rounds: usize, page: u64) -> Result<SnapshotRows> {
    let dir = super::footprint::tempfile_dir()?;
    let result = (|| {
        let layout = Case {
            size_bytes: size,
            populated: 1.0,
        }
        .layout(page);
        let mut proc = BenchTarget::spawn(layout)?;
        let target = Target::open(proc.pid())?;
        // As the snapshot attaches (its first harvest reports every page holding data).
        let mut tracker = TrackerBuilder::new()
            .follow_exec(false)
            .arming(Arming::ReportPopulated)
            .attach(&target)?;
        let mut harvest = Harvest::new();
        tracker.harvest_into(&mut harvest)?;
        let mut rows = SnapshotRows {
            copy: copy(&proc, &tracker, size, rounds, page)?,
            ..Default::default()
        };
        for fraction in STOP_FRACTIONS {
            rows.stop.push(stop(
                &mut proc,
                &target,
                &mut tracker,
                &mut harvest,
                &dir,
                (size, fraction, rounds, page),
            )?);
        }
        drop(tracker);
        drop(proc);
        for &interval in &INTERVALS {
            for &rate in rates {
                rows.converge
                    .push(converge(size / 4, rate, interval, &dir, page)?);
            }
        }
        Ok(rows)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// `n` pages of the `pages` at `addr`, picked at random (the same ones each run).
fn scattered(addr: u64, pages: u64, n: u64, page: u64) -> SpanSet {
    let mut picked = vec![false; pages as usize];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut left = n.min(pages);
    while left > 0 {
        let p = (rng.next() % pages) as usize;
        if !picked[p] {
            picked[p] = true;
            left -= 1;
        }
    }
    picked
        .iter()
        .enumerate()
        .filter(|&(_, &p)| p)
        .map(|(i, _)| {
            let at = addr + i as u64 * page;
            Span::new(at, at + page)
        })
        .collect()
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1u64 << 20) as f64 / d.as_secs_f64().max(1e-9)
}

/// Median, min and max.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    let med = median(&mut v);
    (med, v[0], v[v.len() - 1])
}

fn copy(
    proc: &BenchTarget,
    tracker: &Tracker,
    size: u64,
    rounds: usize,
    page: u64,
) -> Result<Vec<CopyRow>> {
    let pages = proc.populated;
    let mut sets = Vec::new();
    for fraction in COPY_FRACTIONS {
        let n = ((pages as f64 * fraction).round() as u64).clamp(1, pages);
        if n == pages {
            let all = SpanSet::from(vec![Span::new(proc.addr, proc.addr + n * page)]);
            sets.push(("all", fraction, all));
            continue;
        }
        sets.push(("scattered", fraction, scattered(proc.addr, pages, n, page)));
        let run = Span::new(proc.addr, proc.addr + n * page);
        sets.push(("contiguous", fraction, SpanSet::from(vec![run])));
    }
    let mut bare = BareCopy::new(proc.pid());
    let mut rows = Vec::new();
    for (pattern, fraction, set) in sets {
        let bytes = set.bytes();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let repeats = BYTES_PER_ROUND.div_ceil(bytes).clamp(1, MAX_REPEATS) as usize;
        for round in 0..rounds * repeats {
            // Each first every other round: neither always finds the caches as the other
            // left them.
            for ours_now in [round % 2 == 0, round % 2 != 0] {
                let t0 = Instant::now();
                if ours_now {
                    let unreadable = tracker.read_pages(&set, &mut io::sink())?;
                    let took = t0.elapsed();
                    if !unreadable.is_empty() {
                        bail!("read_pages could not read {unreadable:?} of the bench target");
                    }
                    ours.push(mib_s(bytes, took));
                } else {
                    let read = bare.copy(&set)?;
                    let took = t0.elapsed();
                    if read != bytes {
                        bail!("the bare process_vm_readv loop read {read} of {bytes} bytes");
                    }
                    theirs.push(mib_s(bytes, took));
                }
            }
        }
        let copies = ours.len();
        let (ours_mib_s, ours_mib_s_min, ours_mib_s_max) = spread(ours);
        let (bare_mib_s, bare_mib_s_min, bare_mib_s_max) = spread(theirs);
        rows.push(CopyRow {
            size_bytes: size,
            pattern,
            fraction,
            pages: set.pages(page),
            spans: set.len() as u64,
            copies,
            ours_mib_s,
            ours_mib_s_min,
            ours_mib_s_max,
            bare_mib_s,
            bare_mib_s_min,
            bare_mib_s_max,
            ours_vs_bare: ours_mib_s / bare_mib_s.max(1e-9),
        });
    }
    Ok(rows)
}

/// The baseline: `process_vm_readv` alone, each call taking as many pieces of the set as fit
/// (up to `IOV_MAX`, up to [`BARE_BUFFER`] bytes), the bytes discarded.
struct BareCopy {
    pid: i32,
    buf: Vec<u8>,
    iov: Vec<libc::iovec>,
}

impl BareCopy {
    fn new(pid: i32) -> BareCopy {
        BareCopy {
            pid,
            buf: vec![0u8; BARE_BUFFER],
            iov: Vec::with_capacity(abi::IOV_MAX),
        }
    }

    /// Bytes read (all of the set's unless a page could not be read).
    fn copy(&mut self, set: &SpanSet) -> Result<u64> {
        let spans = set.as_slice();
        let (mut i, mut at) = (0, spans.first().map_or(0, |s| s.start));
        let mut read = 0;
        while i < spans.len() {
            self.iov.clear();
            let mut want = 0;
            while i < spans.len() && self.iov.len() < abi::IOV_MAX && want < self.buf.len() {
                let len = ((spans[i].end - at) as usize).min(self.buf.len() - want);
                self.iov.push(sys::remote_iovec(at, len));
                want += len;
                at += len as u64;
                if at == spans[i].end {
                    i += 1;
                    at = spans.get(i).map_or(0, |s| s.start);
                }
            }
            let got = sys::read_remote_vectored(self.pid, &self.iov, &mut self.buf[..want])
                .with_context(|| format!("process_vm_readv of PID {}", self.pid))?;
            read += got as u64;
            if got < want {
                break;
            }
        }
        Ok(read)
    }
}

/// What a snapshot round does with the pages `read_pages` delivers, as its round writer
/// does: each page gathered, a page all zeros counted, any other checksummed and written to
/// the pages file through a 1 MiB buffer; [`PagesFile::finish`] flushes and syncs it.
struct PagesFile {
    file: BufWriter<File>,
    page: Vec<u8>,
    page_size: usize,
    crc: crc32fast::Hasher,
    data_pages: u64,
}

impl PagesFile {
    fn create(path: &Path, page_size: u64) -> io::Result<PagesFile> {
        Ok(PagesFile {
            file: BufWriter::with_capacity(1 << 20, File::create(path)?),
            page: Vec::with_capacity(page_size as usize),
            page_size: page_size as usize,
            crc: crc32fast::Hasher::new(),
            data_pages: 0,
        })
    }

    fn finish(mut self) -> io::Result<u64> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        std::hint::black_box(self.crc.finalize());
        Ok(self.data_pages)
    }
}

impl Write for PagesFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let n = (self.page_size - self.page.len()).min(buf.len() - done);
            self.page.extend_from_slice(&buf[done..done + n]);
            done += n;
            if self.page.len() == self.page_size {
                if self.page.iter().any(|&b| b != 0) {
                    self.data_pages += 1;
                    self.file.write_all(&self.page)?;
                    self.crc.update(&self.page);
                }
                self.page.clear();
            }
        }
        Ok(done)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The final round, `rounds` times: the target writes a fraction of its pages, then is
/// frozen, harvested, copied into a pages file (synced) and let go.
fn stop(
    proc: &mut BenchTarget,
    target: &Target,
    tracker: &mut Tracker,
    harvest: &mut Harvest,
    dir: &Path,
    (size, fraction, rounds, page): (u64, f64, usize, u64),
) -> Result<StopRow> {
    let n = ((proc.populated as f64 * fraction).round() as u64).max(1);
    let path = dir.join("final.pages");
    let mut parts: [Vec<f64>; 6] = Default::default();
    let mut reported = 0;
    for _ in 0..rounds {
        proc.dirty(n)?;
        let t0 = Instant::now();
        let frozen = target.freeze()?;
        let t1 = Instant::now();
        tracker.harvest_into(harvest)?;
        let t2 = Instant::now();
        let mut file = PagesFile::create(&path, page)
            .with_context(|| format!("creating {}", path.display()))?;
        let unreadable = tracker.read_pages(harvest.dirty(), &mut file)?;
        let t3 = Instant::now();
        let data_pages = file
            .finish()
            .with_context(|| format!("writing {}", path.display()))?;
        let t4 = Instant::now();
        drop(frozen);
        let t5 = Instant::now();
        let dirty = harvest.dirty_pages();
        if dirty < n || data_pages < n || !unreadable.is_empty() {
            bail!(
                "final round: {n} pages written, {dirty} reported, {data_pages} stored, {} unreadable",
                unreadable.pages(page)
            );
        }
        reported = reported.max(dirty);
        for (v, d) in parts
            .iter_mut()
            .zip([t5 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4])
        {
            v.push(ms(d));
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let [total, freeze, harvested, copied, synced, thawed] = parts;
    let (stop_ms_median, stop_ms_min, stop_ms_max) = spread(total);
    Ok(StopRow {
        size_bytes: size,
        fraction,
        written_pages: n,
        reported_pages: reported,
        stop_ms_median,
        stop_ms_min,
        stop_ms_max,
        freeze_ms: spread(freeze).0,
        harvest_ms: spread(harvested).0,
        copy_ms: spread(copied).0,
        sync_ms: spread(synced).0,
        thaw_ms: spread(thawed).0,
    })
}

/// The real `uffd-dirty snapshot` of a fresh target of `size` bytes (all populated) that
/// writes `rate` random pages a second.
fn converge(
    size: u64,
    rate: u64,
    interval: Duration,
    dir: &Path,
    page: u64,
) -> Result<ConvergeRow> {
    let layout = Case {
        size_bytes: size,
        populated: 1.0,
    }
    .layout(page);
    let mut proc = BenchTarget::spawn(layout)?;
    // Longer than any run: the target is killed once the snapshot is done.
    proc.start_writing_at(rate, SNAPSHOT_PATIENCE * 2)?;
    let snap: PathBuf = dir.join(format!("snap-{rate}-{}ms", interval.as_millis()));
    let started = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["snapshot", "--pid", &proc.pid().to_string(), "--dir"])
        .arg(&snap)
        .args(["--until-dirty-below", &THRESHOLD_PAGES.to_string()])
        .args(["--interval", &format!("{}ms", interval.as_millis())])
        .args(["--format", "json", "--quiet"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting uffd-dirty snapshot")?;
    let mut stdout = child.stdout.take().expect("piped");
    // Read on a thread, so that a hung run is killed rather than waited for.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > SNAPSHOT_PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "uffd-dirty snapshot at {rate} pages/s took over {} s",
                SNAPSHOT_PATIENCE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let total = started.elapsed();
    let text = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reading uffd-dirty snapshot's output panicked"))??;
    drop(proc);
    let _ = std::fs::remove_dir_all(&snap);
    let code = status.code().unwrap_or(-1);
    // 3: the pre-copy did not converge (the final round was still taken).
    if code != 0 && code != 3 {
        bail!("uffd-dirty snapshot failed ({status}); its stderr is above");
    }
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("reading uffd-dirty snapshot's NDJSON")?;
    let of_kind = |kind: &'static str| {
        records
            .iter()
            .filter(move |r| r["type"] == "round" && r["kind"] == kind)
    };
    let end = records
        .iter()
        .find(|r| r["type"] == "end")
        .with_context(|| format!("uffd-dirty snapshot wrote no end record:\n{text}"))?;
    let dirty = |r: Option<&serde_json::Value>| r.and_then(|r| r["dirty_pages"].as_u64());
    Ok(ConvergeRow {
        buffer_bytes: size,
        rate_pages_s: rate,
        interval_ms: interval.as_millis() as u64,
        rounds: end["rounds"].as_u64().unwrap_or(0),
        precopy_rounds: of_kind("precopy").count() as u64,
        reason: end["reason"].as_str().unwrap_or("?").to_string(),
        exit_code: code,
        last_precopy_dirty: dirty(of_kind("precopy").next_back()).unwrap_or(0),
        final_dirty: dirty(of_kind("final").next_back()).unwrap_or(0),
        downtime_ms: end["downtime_ms"].as_f64(),
        total_s: total.as_secs_f64(),
    })
}

pub(super) fn print(out: &mut impl Write, r: &SnapshotRows, rounds: usize) -> io::Result<()> {
    use super::table::{percent, size};
    if r.copy.is_empty() && r.stop.is_empty() && r.converge.is_empty() {
        return Ok(());
    }
    writeln!(out, "\n## Snapshot\n")?;
    if let Some(first) = r.copy.first() {
        writeln!(
            out,
            "Copy: `Tracker::read_pages` (what a snapshot round copies with) into a sink that discards the bytes, against a bare `process_vm_readv` loop over the same pages of a populated {} target, up to {} pieces and {} MiB per call. Median of {rounds} to {} copies each (as many as make {} MiB a round, min–max), ours and bare in turn; *ours ÷ bare*: of the medians.\n",
            size(first.size_bytes),
            abi::IOV_MAX,
            BARE_BUFFER >> 20,
            rounds as u64 * MAX_REPEATS,
            BYTES_PER_ROUND >> 20
        )?;
        writeln!(
            out,
            "| pages | dirty | spans | ours MiB/s (min–max) | bare MiB/s (min–max) | ours ÷ bare |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|")?;
        for c in &r.copy {
            writeln!(
                out,
                "| {} | {} ({} p) | {} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.2} |",
                c.pattern,
                percent(c.fraction),
                c.pages,
                c.spans,
                c.ours_mib_s,
                c.ours_mib_s_min,
                c.ours_mib_s_max,
                c.bare_mib_s,
                c.bare_mib_s_min,
                c.bare_mib_s_max,
                c.ours_vs_bare
            )?;
        }
    }
    if let Some(first) = r.stop.first() {
        writeln!(
            out,
            "\nFinal-round stop: the target ({} populated) writes the pages spread evenly over its buffer, then is frozen (`Target::freeze`), harvested, copied by `read_pages` into a pages file in a temporary directory (zero pages counted, the others checksummed and written through a 1 MiB buffer, then fsync) and let go. Median of {rounds} final rounds (min–max); the parts are medians.\n",
            size(first.size_bytes)
        )?;
        writeln!(
            out,
            "| dirty | reported | stop ms (min–max) | freeze | harvest | copy | fsync | thaw |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|---|---|")?;
        for s in &r.stop {
            writeln!(
                out,
                "| {} ({} p) | {} | {:.1} ({:.1}–{:.1}) | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                percent(s.fraction),
                s.written_pages,
                s.reported_pages,
                s.stop_ms_median,
                s.stop_ms_min,
                s.stop_ms_max,
                s.freeze_ms,
                s.harvest_ms,
                s.copy_ms,
                s.sync_ms,
                s.thaw_ms
            )?;
        }
    }
    if let Some(first) = r.converge.first() {
        writeln!(
            out,
            "\nConvergence: the real `uffd-dirty snapshot --until-dirty-below {THRESHOLD_PAGES}` of a target writing random pages of a populated {} buffer at a fixed rate, once per rate and pre-copy interval. *Rounds*: stored, round 0 and the final round included; *last pre-copy*, *final*: pages written in those rounds; *downtime*: as the end record says it.\n",
            size(first.buffer_bytes)
        )?;
        writeln!(
            out,
            "| rate pages/s | interval | rounds | pre-copy rounds | end reason (exit) | last pre-copy dirty | final dirty | downtime ms | total s |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
        for c in &r.converge {
            writeln!(
                out,
                "| {} | {} ms | {} | {} | {} ({}) | {} | {} | {} | {:.1} |",
                c.rate_pages_s,
                c.interval_ms,
                c.rounds,
                c.precopy_rounds,
                c.reason,
                c.exit_code,
                c.last_precopy_dirty,
                c.final_dirty,
                c.downtime_ms.map_or("–".into(), |d| format!("{d:.1}")),
                c.total_s
            )?;
        }
    }
    Ok(())
}
