//! Per-mapping totals over a run: size, pages written at least once, total page-writes and
//! peak rate. One computation for the end-of-run table of human output and for the table of
//! `uffd-dirty report`, so the two always agree.

use std::collections::{BTreeMap, HashSet};

use crate::maps::Span;

/// What one mapping (by name) took over the run.
#[derive(Default)]
struct MappingStats {
    size_pages: u64,
    pages_written: HashSet<u64>,
    page_writes: u64,
    peak_pages_per_s: f64,
}

/// One row of the totals table.
#[derive(Debug, Clone, PartialEq)]
pub struct TotalsRow {
    pub mapping: String,
    pub size_mib: f64,
    pub pages_written: u64,
    pub page_writes: u64,
    pub peak_mib_per_s: f64,
}

/// Totals per mapping name, fed one delta at a time.
pub struct MappingTotals {
    page_size: u64,
    stats: BTreeMap<String, MappingStats>,
    /// Pages per mapping in the delta being fed (for peak rates).
    this_delta: BTreeMap<String, u64>,
}

impl MappingTotals {
    pub fn new(page_size: u64) -> Self {
        MappingTotals {
            page_size,
            stats: BTreeMap::new(),
            this_delta: BTreeMap::new(),
        }
    }

    pub fn set_page_size(&mut self, page_size: u64) {
        self.page_size = page_size;
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }

    /// Count the pages of `pages` as written in this delta, in the mapping `name` whose size is
    /// `size_pages` (the largest size seen under a name is kept).
    pub fn add_pages(&mut self, name: &str, size_pages: u64, pages: Span) {
        let count = pages.len() / self.page_size;
        let st = self.stats.entry(name.to_string()).or_default();
        st.size_pages = st.size_pages.max(size_pages);
        st.pages_written
            .extend((pages.start..pages.end).step_by(self.page_size as usize));
        st.page_writes += count;
        *self.this_delta.entry(name.to_string()).or_default() += count;
    }

    /// Close the delta that covered `seconds`: update the peak rates, and return the pages
    /// each mapping took in it.
    pub fn finish_delta(&mut self, seconds: f64) -> BTreeMap<String, u64> {
        let per_mapping = std::mem::take(&mut self.this_delta);
        for (name, pages) in &per_mapping {
            let st = self.stats.entry(name.clone()).or_default();
            st.peak_pages_per_s = st.peak_pages_per_s.max(*pages as f64 / seconds);
        }
        per_mapping
    }

    /// The table, the mappings with most page-writes first.
    pub fn rows(&self) -> Vec<TotalsRow> {
        let mut rows: Vec<TotalsRow> = self
            .stats
            .iter()
            .map(|(name, s)| TotalsRow {
                mapping: name.clone(),
                size_mib: mib(s.size_pages, self.page_size),
                pages_written: s.pages_written.len() as u64,
                page_writes: s.page_writes,
                peak_mib_per_s: mib(1, self.page_size) * s.peak_pages_per_s,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.page_writes
                .cmp(&a.page_writes)
                .then(a.mapping.cmp(&b.mapping))
        });
        rows
    }
}

/// The last path component: `libc.so.6` for `/usr/lib/x86_64-linux-gnu/libc.so.6`.
pub fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

pub fn mib(pages: u64, page_size: u64) -> f64 {
    (pages * page_size) as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_distinct_pages_writes_and_peak() {
        let mut t = MappingTotals::new(4096);
        t.add_pages("[heap]", 8, Span::new(0x1000, 0x4000));
        t.add_pages("libc.so.6", 2, Span::new(0x9000, 0xa000));
        assert_eq!(t.finish_delta(0.5).get("[heap]"), Some(&3));
        t.add_pages("[heap]", 8, Span::new(0x2000, 0x3000));
        t.finish_delta(1.0);
        let rows = t.rows();
        assert_eq!(rows[0].mapping, "[heap]");
        assert_eq!((rows[0].pages_written, rows[0].page_writes), (3, 4));
        assert_eq!(rows[0].size_mib, 8.0 * 4096.0 / 1048576.0);
        assert_eq!(rows[0].peak_mib_per_s, 6.0 * 4096.0 / 1048576.0);
        assert_eq!(rows[1].mapping, "libc.so.6");
    }
}
