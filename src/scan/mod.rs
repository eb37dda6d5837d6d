//! Harvesting: finding the pages written since the last harvest and re-arming them.
//!
//! One trait, [`DirtySource`], so that other methods (plain pagemap reads, soft-dirty) can sit
//! behind the same tracking loop.

pub mod pagemap_read;
pub mod pagemap_scan;
pub mod soft_dirty;

use std::io;

use crate::maps::Span;

pub use pagemap_read::PagemapRead;
pub use pagemap_scan::PagemapScan;
pub use soft_dirty::SoftDirty;

pub trait DirtySource {
    /// The `method` name reported in the start record.
    fn method(&self) -> &'static str;

    /// Append the maximal runs of pages written in `spans` since the previous harvest to `out`
    /// (sorted, merged), and re-arm them, losing no write that races with the harvest.
    fn harvest(&mut self, spans: &[Span], out: &mut Vec<Span>) -> io::Result<()>;
}

/// Push `run` onto sorted `out`, merging it with the last run when they touch.
pub fn push_run(out: &mut Vec<Span>, run: Span) {
    match out.last_mut() {
        Some(last) if last.end == run.start => last.end = run.end,
        _ => out.push(run),
    }
}
