//! The `mappings` section: the harvest of a target with many mappings (a JVM's, a browser's)
//! against one bare `PAGEMAP_SCAN` over the same memory, in the same run. The target's pages
//! alternate writable and read-only, a mapping each; it writes 64 pages before each harvest,
//! and in the *flipped* rows also flips 1 % of its read-only pages to writable or back (each
//! flip merges three mappings into one, or splits one into three), which the harvest must
//! notice, and arm.

use std::time::Instant;

use anyhow::{Result, bail};
use serde::Serialize;

use super::{BareScan, BenchTarget, Tracked, median, ms};
use crate::fixtures::bench_target::Layout;
use uffd_dirty::{Arming, Method};

/// Pages the target writes before each harvest.
const WRITES: u64 = 64;

#[derive(Debug, Clone, Serialize)]
pub struct MappingsRow {
    /// Mappings of the target (all of its own, the buffer's as many as its pages).
    pub mappings: u64,
    /// Mappings flipped between harvests (0: steady).
    pub flipped: u64,
    pub harvest_ms_median: f64,
    pub harvest_ms_min: f64,
    pub harvest_ms_max: f64,
    /// The part of it that watches the mappings.
    pub watch_ms_median: f64,
    /// The bare `PAGEMAP_SCAN` get + re-protect over the whole address space.
    pub bare_ms_median: f64,
    /// Median harvest ÷ median bare ioctl.
    pub ours_vs_bare: f64,
    /// One harvest that lists the mappings whole, as one in every 10 s does (and each of a
    /// snapshot's rounds).
    pub full_listing_ms: f64,
    /// Ours ÷ bare over 10 s at one harvest a second (`track`'s default): nine harvests at
    /// the median, one with the full listing.
    pub amortized_1hz_vs_bare: f64,
}

fn count_mappings(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).map_or(0, |m| m.lines().count() as u64)
}

pub(super) fn measure(counts: &[u64], rounds: usize, page: u64) -> Result<Vec<MappingsRow>> {
    let mut rows = Vec::new();
    for &count in counts {
        let layout = Layout {
            pages: count,
            every: 1,
        };
        let mut proc = BenchTarget::spawn(layout)?;
        proc.split_mappings()?;
        let mut t = Tracked::attach(proc, Method::PagemapScan, Arming::Auto)?;
        let mut bare = BareScan::open(t.target.pid())?;
        t.harvest()?;
        bare.harvest(page)?;
        for flipped in [0, count / 200] {
            let (mut times, mut watches, mut bares) = (vec![], vec![], vec![]);
            for _ in 0..rounds.max(3) {
                t.proc.dirty(WRITES)?;
                if flipped > 0 {
                    t.proc.toggle_mappings(flipped)?;
                }
                let t0 = Instant::now();
                let reported = t.harvest()?;
                times.push(ms(t0.elapsed()));
                watches.push(t.harvest.watch_cost().map_or(0.0, ms));
                if reported < WRITES / 2 {
                    bail!("only {reported} pages reported after {WRITES} page writes");
                }
                t.proc.dirty(WRITES)?;
                let t0 = Instant::now();
                bare.harvest(page)?;
                bares.push(ms(t0.elapsed()));
            }
            let harvest = median(&mut times);
            let bare = median(&mut bares);
            t.proc.dirty(WRITES)?;
            if flipped > 0 {
                t.proc.toggle_mappings(flipped)?;
            }
            t.tracker.relist_mappings();
            let t0 = Instant::now();
            t.harvest()?;
            let full = ms(t0.elapsed());
            rows.push(MappingsRow {
                mappings: count_mappings(t.target.pid()),
                flipped,
                harvest_ms_median: harvest,
                harvest_ms_min: times[0],
                harvest_ms_max: times[times.len() - 1],
                watch_ms_median: median(&mut watches),
                bare_ms_median: bare,
                ours_vs_bare: harvest / bare.max(1e-9),
                full_listing_ms: full,
                amortized_1hz_vs_bare: (9.0 * harvest + full) / 10.0 / bare.max(1e-9),
            });
        }
    }
    Ok(rows)
}

pub(super) fn table(rows: &[MappingsRow]) -> String {
    let mut t = String::from(
        "| mappings | flipped per harvest | harvest ms (min–max) | of it, watching the mappings (ms) | bare ioctl ms | ours ÷ bare | with the full listing (ms) | ours ÷ bare at 1 Hz |\n|---:|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        t += &format!(
            "| {} | {} | {:.2} ({:.2}–{:.2}) | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r.mappings,
            r.flipped,
            r.harvest_ms_median,
            r.harvest_ms_min,
            r.harvest_ms_max,
            r.watch_ms_median,
            r.bare_ms_median,
            r.ours_vs_bare,
            r.full_listing_ms,
            r.amortized_1hz_vs_bare
        );
    }
    t
}
