//! Per-mapping totals over a run: size, pages written at least once, total page-writes and
//! peak rate. One computation for the end-of-run table of human output and for the table of
//! `uffd-dirty report`, so the two always agree.
//!
//! The pages written are kept as address ranges, not pages: a mapping written all over is one
//! range, so memory grows with how scattered the writes are, not with how much was written, and
//! a delta costs time linear in its runs and the ranges so far, not in its pages.

use std::collections::BTreeMap;

use uffd_dirty::{Span, SpanSet};

/// What one mapping (by name) took over the run.
#[derive(Default)]
struct MappingStats {
    size_pages: u64,
    /// The pages written in finished deltas: sorted, disjoint, not touching.
    written: Vec<Span>,
    /// The pages written in the delta being fed, merged into `written` when it finishes.
    pending: Vec<Span>,
    page_writes: u64,
    peak_pages_per_s: f64,
}

impl MappingStats {
    /// Merge the pending spans into `written`. A delta that only wrote pages written before
    /// (the usual steady state) costs a binary search per run and nothing else.
    fn merge_pending(&mut self) {
        if self.pending.iter().all(|&p| covers(&self.written, p)) {
            self.pending.clear();
            return;
        }
        // `written` is one sorted run followed by a few short ones: the stable sort in `union`
        // merges them rather than sorting afresh, so this is linear.
        let mut all = std::mem::take(&mut self.written);
        all.append(&mut self.pending);
        self.written = SpanSet::from(all).into_vec();
    }

    /// Pages written, the unfinished delta's included.
    fn pages_written(&self, page_size: u64) -> u64 {
        let all: Vec<Span> = self.written.iter().chain(&self.pending).copied().collect();
        SpanSet::from(all).pages(page_size)
    }
}

/// Whether `span` lies within one span of the sorted, disjoint `union`.
fn covers(union: &[Span], span: Span) -> bool {
    let i = union.partition_point(|s| s.end < span.end);
    union.get(i).is_some_and(|s| s.start <= span.start)
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

    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }

    /// Count the pages of `pages` as written in this delta, in the mapping `name` whose size is
    /// `size_pages` (the largest size seen under a name is kept).
    pub fn add_pages(&mut self, name: &str, size_pages: u64, pages: Span) {
        let count = pages.len() / self.page_size;
        let st = self.stats.entry(name.to_string()).or_default();
        st.size_pages = st.size_pages.max(size_pages);
        st.pending.push(pages);
        st.page_writes = st.page_writes.saturating_add(count);
        let this_delta = self.this_delta.entry(name.to_string()).or_default();
        *this_delta = this_delta.saturating_add(count);
    }

    /// Close the delta that covered `seconds`: update the peak rates, and return the pages
    /// each mapping took in it.
    pub fn finish_delta(&mut self, seconds: f64) -> BTreeMap<String, u64> {
        let per_mapping = std::mem::take(&mut self.this_delta);
        for (name, pages) in &per_mapping {
            let st = self.stats.entry(name.clone()).or_default();
            st.peak_pages_per_s = st.peak_pages_per_s.max(*pages as f64 / seconds);
            st.merge_pending();
        }
        per_mapping
    }

    /// The table, the mappings with most page-writes first (pages of an unfinished delta
    /// included).
    pub fn rows(&self) -> Vec<TotalsRow> {
        let mut rows: Vec<TotalsRow> = self
            .stats
            .iter()
            .map(|(name, s)| TotalsRow {
                mapping: name.clone(),
                size_mib: mib(s.size_pages, self.page_size),
                pages_written: s.pages_written(self.page_size),
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

/// `pages` of `page_size` bytes in MiB; in f64, since the product of two numbers read from a
/// trace can overflow u64.
pub fn mib(pages: u64, page_size: u64) -> f64 {
    pages as f64 * page_size as f64 / (1024.0 * 1024.0)
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

    #[test]
    fn pages_written_are_a_merged_union_of_ranges() {
        let mut t = MappingTotals::new(4096);
        // Out of order, overlapping and touching, within and across deltas.
        t.add_pages("a", 0, Span::new(0x9000, 0xb000));
        t.add_pages("a", 0, Span::new(0x1000, 0x3000));
        t.add_pages("a", 0, Span::new(0x2000, 0x4000));
        t.finish_delta(1.0);
        t.add_pages("a", 0, Span::new(0x4000, 0x5000));
        t.add_pages("a", 0, Span::new(0x7000, 0x8000));
        // Counted before its delta finishes too.
        assert_eq!(t.rows()[0].pages_written, 7);
        t.finish_delta(1.0);
        // Only pages written before: the union stays as it was.
        t.add_pages("a", 0, Span::new(0x2000, 0x5000));
        t.add_pages("a", 0, Span::new(0xa000, 0xb000));
        t.finish_delta(1.0);
        let st = &t.stats["a"];
        assert_eq!(
            st.written,
            [
                Span::new(0x1000, 0x5000),
                Span::new(0x7000, 0x8000),
                Span::new(0x9000, 0xb000)
            ]
        );
        assert_eq!(
            (t.rows()[0].pages_written, t.rows()[0].page_writes),
            (7, 12)
        );
    }

    #[test]
    fn a_huge_run_costs_one_range_not_its_pages() {
        // 2^52 pages: a per-page set would never finish.
        let mut t = MappingTotals::new(4096);
        t.add_pages("a", u64::MAX, Span::new(0, 0xffff_ffff_ffff_f000));
        t.finish_delta(0.001);
        t.add_pages("a", u64::MAX, Span::new(0, 0xffff_ffff_ffff_f000));
        t.finish_delta(0.001);
        let row = &t.rows()[0];
        assert_eq!(row.pages_written, (1 << 52) - 1);
        assert_eq!(row.page_writes, 2 * ((1 << 52) - 1));
        assert_eq!(t.stats["a"].written.len(), 1);
        assert!(
            row.size_mib.is_finite() && row.size_mib > 1e13,
            "{}",
            row.size_mib
        );
    }

    #[test]
    fn mib_does_not_overflow() {
        assert_eq!(mib(u64::MAX, 4096), u64::MAX as f64 * 4096.0 / 1048576.0);
        assert_eq!(mib(256, 4096), 1.0);
    }
}
