//! Harvesting: finding the pages written since the last harvest and re-arming them, one
//! module per method (`track` picks one per address space and drives it).

pub mod pagemap_read;
pub mod pagemap_scan;
pub mod soft_dirty;

use crate::maps::Span;

pub use pagemap_read::PagemapRead;
pub use pagemap_scan::PagemapScan;
pub use soft_dirty::SoftDirty;

/// Push `run` onto sorted `out`, merging it with the last run when they touch.
pub fn push_run(out: &mut Vec<Span>, run: Span) {
    match out.last_mut() {
        Some(last) if last.end == run.start => last.end = run.end,
        _ => out.push(run),
    }
}
