//! The numbers behind the picture, in two passes over a trace.
//!
//! The first pass ([`Survey`]) learns every address range that was ever tracked and how many
//! deltas there are; from that, [`Layout`] fixes both axes: addresses stacked band by band with
//! the gaps between tracked ranges removed, cut into rows of equal page counts, and deltas
//! grouped into columns. The second pass ([`Heatmap::add`]) counts, per cell, the page-writes
//! and the pages tracked. Holding only per-cell counts keeps memory bounded however long the
//! run was, since the rows and columns are capped ([`Limits`]).

use std::time::SystemTime;

use anyhow::{Result, anyhow};

use super::trace::{self, Record};
use crate::output::DeltaClock;
use crate::output::totals::{MappingTotals, short_name};
use uffd_dirty::{Span, SpanSet};

/// At most this many cells: more would not show on a screen and would only bloat the SVG.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub columns: u64,
    pub rows: u64,
}

pub const LIMITS: Limits = Limits {
    columns: 1000,
    rows: 400,
};

/// The set of tracked ranges, as start, exec and mapping records change it.
#[derive(Debug, Default)]
struct Tracked {
    live: SpanSet,
}

impl Tracked {
    /// Apply `record`; whether it changed what is tracked.
    fn apply(&mut self, record: &Record) -> bool {
        match record {
            Record::Start(trace::Start { ranges, .. }) | Record::Exec(trace::Exec { ranges }) => {
                self.live = ranges.iter().map(|r| r.span()).collect();
            }
            Record::Mapping(m) => {
                let span = Span::new(m.start.0, m.end.0);
                let gone = match (m.event.as_str(), m.from) {
                    // Checked when read (trace::read_records); saturating only to stay total.
                    ("moved", Some(from)) => {
                        Some(Span::new(from.0, from.0.saturating_add(span.len())))
                    }
                    ("removed", _) => Some(span),
                    _ => None,
                };
                if let Some(gone) = gone {
                    self.live.remove(gone);
                }
                if m.event != "removed" {
                    self.live.insert(span);
                }
            }
            Record::Delta(_) | Record::End(_) | Record::Blind(_) => return false,
        }
        true
    }
}

/// The facts of the run for the report's header.
#[derive(Debug, Clone)]
pub struct Header {
    pub pid: i64,
    pub method: String,
    pub interval_ms: u64,
    pub page_size: u64,
    pub start_time: SystemTime,
    /// The last record's time: the end record's, else the last delta's.
    pub last_time: SystemTime,
    pub deltas: u64,
    pub dirty_pages: u64,
    /// The end record's reason (and error), if the trace has one.
    pub end: Option<(String, Option<String>)>,
}

/// First pass: the header facts and every range ever tracked, with its mapping's name.
#[derive(Debug, Default)]
pub struct Survey {
    header: Option<Header>,
    named: Vec<(Span, String)>,
}

impl Survey {
    /// Take one record; `name` names the input in errors.
    pub fn add(&mut self, line: usize, record: &Record, name: &str) -> Result<()> {
        let before_start = || {
            anyhow!(
                "{name} line {line}: a record before the start record: give the whole output of `uffd-dirty track --format json`"
            )
        };
        match record {
            Record::Start(s) => {
                if self.header.is_some() {
                    return Err(anyhow!(
                        "{name} line {line}: a second start record: a report shows one run; split the file"
                    ));
                }
                if s.version != trace::SUPPORTED_VERSION {
                    return Err(anyhow!(
                        "{name} line {line}: trace format version {} is not supported (this uffd-dirty reads version {}): use the uffd-dirty that recorded it",
                        s.version,
                        trace::SUPPORTED_VERSION
                    ));
                }
                if !s.page_size.is_power_of_two() {
                    return Err(anyhow!(
                        "{name} line {line}: page_size {} is not a power of two",
                        s.page_size
                    ));
                }
                self.header = Some(Header {
                    pid: s.pid,
                    method: s.method.clone(),
                    interval_ms: s.interval_ms,
                    page_size: s.page_size,
                    start_time: s.time.0,
                    last_time: s.time.0,
                    deltas: 0,
                    dirty_pages: 0,
                    end: None,
                });
                self.name_ranges(&s.ranges);
            }
            Record::Exec(x) => {
                self.header.as_ref().ok_or_else(before_start)?;
                self.name_ranges(&x.ranges);
            }
            Record::Mapping(m) => {
                self.header.as_ref().ok_or_else(before_start)?;
                if m.event != "removed" {
                    self.named
                        .push((Span::new(m.start.0, m.end.0), m.mapping.clone()));
                }
            }
            Record::Delta(d) => {
                let h = self.header.as_mut().ok_or_else(before_start)?;
                h.deltas += 1;
                h.dirty_pages = h.dirty_pages.saturating_add(d.dirty_pages);
                h.last_time = d.time.0;
            }
            Record::End(e) => {
                let h = self.header.as_mut().ok_or_else(before_start)?;
                h.end = Some((e.reason.clone(), e.error.clone()));
                h.dirty_pages = h.dirty_pages.max(e.dirty_pages_total);
                h.last_time = e.time.0;
            }
            Record::Blind(_) => {}
        }
        Ok(())
    }

    fn name_ranges(&mut self, ranges: &[trace::TrackedRange]) {
        self.named
            .extend(ranges.iter().map(|r| (r.span(), r.mapping.clone())));
    }

    /// The header, or the error for a trace without a start record.
    pub fn header(&self, name: &str) -> Result<&Header> {
        self.header.as_ref().ok_or_else(|| {
            anyhow!(
                "{name} has no start record: give the output of `uffd-dirty track --format json`"
            )
        })
    }
}

/// One mapping's band of the address axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    pub span: Span,
    pub name: String,
    /// Where the band starts on the stacked axis, in pages.
    pub first_page: u64,
}

/// Both axes: bands of addresses cut into rows, deltas grouped into columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub page_size: u64,
    /// Sorted by address, disjoint.
    pub bands: Vec<Band>,
    pub total_pages: u64,
    pub pages_per_row: u64,
    pub rows: u64,
    pub deltas: u64,
    pub deltas_per_column: u64,
    pub columns: u64,
}

impl Layout {
    pub fn new(survey: &Survey, header: &Header, limits: Limits) -> Layout {
        let page_size = header.page_size;
        // Where ranges overlap (memory replaced, a range tracked again after an exec), the
        // range that starts first names the addresses.
        let mut named = survey.named.clone();
        named.sort_by_key(|(s, _)| (s.start, std::cmp::Reverse(s.end)));
        let mut bands: Vec<Band> = Vec::new();
        let mut covered = 0;
        let mut total_pages = 0;
        for (span, name) in named {
            let piece = Span::new(span.start.max(covered), span.end);
            if piece.is_empty() {
                continue;
            }
            covered = piece.end;
            total_pages += piece.len() / page_size;
            match bands.last_mut() {
                // One band for adjacent pieces of the same mapping.
                Some(last) if last.span.end == piece.start && last.name == name => {
                    last.span.end = piece.end;
                }
                _ => bands.push(Band {
                    span: piece,
                    name,
                    first_page: total_pages - piece.len() / page_size,
                }),
            }
        }
        let pages_per_row = total_pages.div_ceil(limits.rows).max(1);
        let deltas_per_column = header.deltas.div_ceil(limits.columns).max(1);
        Layout {
            page_size,
            bands,
            total_pages,
            pages_per_row,
            rows: total_pages.div_ceil(pages_per_row),
            deltas: header.deltas,
            deltas_per_column,
            columns: header.deltas.div_ceil(deltas_per_column),
        }
    }

    /// The parts of `span` inside bands: each part with its band.
    fn pieces(&self, span: Span) -> impl Iterator<Item = (&Band, Span)> {
        let first = self.bands.partition_point(|b| b.span.end <= span.start);
        self.bands[first..]
            .iter()
            .take_while(move |b| b.span.start < span.end)
            .filter_map(move |b| b.span.intersect(&span).map(|piece| (b, piece)))
    }

    /// Call `f(row, pages)` for the pages of `span` that fall in each row.
    fn per_row(&self, span: Span, mut f: impl FnMut(usize, u64)) {
        for (band, piece) in self.pieces(span) {
            let mut first = band.first_page + (piece.start - band.span.start) / self.page_size;
            let end = first + piece.len() / self.page_size;
            while first < end {
                let row = first / self.pages_per_row;
                let row_end = (row + 1).saturating_mul(self.pages_per_row).min(end);
                f(row as usize, row_end - first);
                first = row_end;
            }
        }
    }
}

/// One column of the time axis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Column {
    pub dirty_pages: u64,
    /// The time since attach at the end of the column's last delta, and how long its deltas
    /// covered.
    pub end_ms: u64,
    pub covered_ms: u64,
}

/// What a cell shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// No page of the cell was tracked during the column.
    Untracked,
    /// Page-writes over tracked pages, summed over the column's deltas: the fraction of the
    /// cell's pages written per delta, averaged over the column.
    Written(f64),
}

/// Second pass: per-cell counts, per-column rates and per-mapping totals.
pub struct Heatmap {
    pub header: Header,
    pub layout: Layout,
    /// Column-major: `[column * rows + row]`.
    written: Vec<u64>,
    tracked: Vec<u64>,
    pub columns: Vec<Column>,
    pub totals: MappingTotals,
    now_tracked: Tracked,
    /// Pages tracked per row right now; recomputed after a change, before the next delta.
    tracked_per_row: Vec<u64>,
    tracked_changed: bool,
    delta_index: u64,
    clock: DeltaClock,
}

impl Heatmap {
    pub fn new(header: Header, layout: Layout) -> Heatmap {
        let cells = (layout.columns * layout.rows) as usize;
        Heatmap {
            written: vec![0; cells],
            tracked: vec![0; cells],
            columns: vec![Column::default(); layout.columns as usize],
            totals: MappingTotals::new(layout.page_size),
            tracked_per_row: vec![0; layout.rows as usize],
            now_tracked: Tracked::default(),
            tracked_changed: false,
            delta_index: 0,
            clock: DeltaClock::default(),
            header,
            layout,
        }
    }

    pub fn add(&mut self, record: &Record) {
        if self.now_tracked.apply(record) {
            self.tracked_changed = true;
        }
        let Record::Delta(delta) = record else {
            return;
        };
        if self.delta_index >= self.layout.deltas {
            return; // a delta past the last one the survey saw: not possible on one input
        }
        let rows = self.layout.rows as usize;
        if self.tracked_changed {
            self.tracked_changed = false;
            self.tracked_per_row.fill(0);
            for &span in &self.now_tracked.live {
                self.layout
                    .per_row(span, |row, pages| self.tracked_per_row[row] += pages);
            }
        }
        let column = (self.delta_index / self.layout.deltas_per_column) as usize;
        self.delta_index += 1;
        let cells = column * rows..(column + 1) * rows;
        let runs: SpanSet = delta.ranges.iter().map(|r| r.span()).collect();
        let tracked = &mut self.tracked[cells.clone()];
        for (sum, now) in tracked.iter_mut().zip(&self.tracked_per_row) {
            *sum = sum.saturating_add(*now);
        }
        // Memory that stopped being tracked (made read-only: a `removed` record) stays
        // registered up to this harvest, which still reports the writes made before: those
        // pages were tracked for this delta, so they show, and a cell never has more pages
        // written than tracked.
        for &span in runs.difference(&self.now_tracked.live).iter() {
            self.layout.per_row(span, |row, pages| {
                tracked[row] = tracked[row].saturating_add(pages)
            });
        }
        let written = &mut self.written[cells];
        for &span in &runs {
            self.layout.per_row(span, |row, pages| {
                written[row] = written[row].saturating_add(pages)
            });
        }
        for run in &delta.ranges {
            self.add_to_totals(run.span());
        }
        let covered = self.clock.advance(delta.elapsed_ms);
        self.totals.finish_delta(covered.seconds);
        let c = &mut self.columns[column];
        c.dirty_pages = c.dirty_pages.saturating_add(delta.dirty_pages);
        c.covered_ms = c.covered_ms.saturating_add(covered.ms);
        c.end_ms = delta.elapsed_ms;
    }

    /// Per-mapping totals, split where the run crosses bands (as human output splits by VMA).
    fn add_to_totals(&mut self, span: Span) {
        let mut inside = SpanSet::new();
        for (band, piece) in self.layout.pieces(span) {
            let pages = band.span.len() / self.layout.page_size;
            self.totals.add_pages(short_name(&band.name), pages, piece);
            inside.insert(piece);
        }
        for &outside in SpanSet::from(vec![span]).difference(&inside).iter() {
            self.totals.add_pages("[unmapped]", 0, outside);
        }
    }

    pub fn cell(&self, column: u64, row: u64) -> Cell {
        let i = (column * self.layout.rows + row) as usize;
        match self.tracked[i] {
            0 => Cell::Untracked,
            tracked => Cell::Written(self.written[i] as f64 / tracked as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run with a 4-page heap and a 2-page libc at start, a 1-page anonymous mapping added
    /// before delta 2, and the heap removed before delta 3.
    const STREAM: &str = r#"{"type":"start","version":1,"pid":7,"page_size":4096,"method":"pagemap-scan","interval_ms":100,"ranges":[{"start":"0x10000","end":"0x14000","pages":4,"mapping":"[heap]","kind":"heap"},{"start":"0x20000","end":"0x22000","pages":2,"mapping":"/usr/lib/libc.so.6","kind":"file"}],"skipped":[],"arm_method":"pagemap-scan","attach_us":1,"thread_stopped_us":1,"time":"2026-01-01T00:00:00Z"}
{"type":"delta","seq":1,"time":"2026-01-01T00:00:00.100Z","elapsed_ms":100,"dirty_pages":2,"ranges":[{"start":"0x10000","end":"0x12000","pages":2}],"scan_us":5}
{"type":"mapping","event":"added","start":"0x30000","end":"0x31000","mapping":"[anon]","kind":"anon","time":"2026-01-01T00:00:00.200Z"}
{"type":"delta","seq":2,"time":"2026-01-01T00:00:00.200Z","elapsed_ms":200,"dirty_pages":2,"ranges":[{"start":"0x21000","end":"0x22000","pages":1},{"start":"0x30000","end":"0x31000","pages":1}],"scan_us":5}
{"type":"mapping","event":"removed","start":"0x10000","end":"0x14000","mapping":"[heap]","kind":"heap","time":"2026-01-01T00:00:00.400Z"}
{"type":"delta","seq":3,"time":"2026-01-01T00:00:00.400Z","elapsed_ms":400,"dirty_pages":0,"ranges":[],"scan_us":5}
{"type":"end","reason":"count","deltas":3,"dirty_pages_total":4,"time":"2026-01-01T00:00:00.401Z"}
"#;

    fn heatmap(limits: Limits) -> Heatmap {
        heatmap_of(STREAM, limits)
    }

    fn heatmap_of(text: &str, limits: Limits) -> Heatmap {
        let mut survey = Survey::default();
        trace::read_records(text.as_bytes(), "T", |n, r| survey.add(n, &r, "T")).unwrap();
        let header = survey.header("T").unwrap().clone();
        let layout = Layout::new(&survey, &header, limits);
        let mut heatmap = Heatmap::new(header, layout);
        trace::read_records(text.as_bytes(), "T", |_, r| {
            heatmap.add(&r);
            Ok(())
        })
        .unwrap();
        heatmap
    }

    /// STREAM with the heap's removal cut to `removed`, and the writes of the delta after it.
    fn removed_then_written(removed: &str, runs: &str) -> String {
        STREAM
            .replace(
                r#""event":"removed","start":"0x10000","end":"0x14000""#,
                &format!(r#""event":"removed",{removed}"#),
            )
            .replace(
                r#""dirty_pages":0,"ranges":[]"#,
                &format!(r#""dirty_pages":1,"ranges":[{runs}]"#),
            )
    }

    fn grid(h: &Heatmap) -> Vec<Vec<Option<f64>>> {
        (0..h.layout.rows)
            .map(|row| {
                (0..h.layout.columns)
                    .map(|col| match h.cell(col, row) {
                        Cell::Untracked => None,
                        Cell::Written(f) => Some(f),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn bands_stack_the_tracked_ranges_without_gaps() {
        let h = heatmap(LIMITS);
        let bands: Vec<_> = h
            .layout
            .bands
            .iter()
            .map(|b| (b.span, b.name.as_str(), b.first_page))
            .collect();
        assert_eq!(
            bands,
            [
                (Span::new(0x10000, 0x14000), "[heap]", 0),
                (Span::new(0x20000, 0x22000), "/usr/lib/libc.so.6", 4),
                (Span::new(0x30000, 0x31000), "[anon]", 6),
            ]
        );
        assert_eq!(
            (h.layout.total_pages, h.layout.rows, h.layout.columns),
            (7, 7, 3)
        );
    }

    #[test]
    fn one_cell_per_page_and_delta() {
        let (n, w) = (None, |f: f64| Some(f));
        assert_eq!(
            grid(&heatmap(LIMITS)),
            [
                // heap: written in delta 1, removed before delta 3
                [w(1.0), w(0.0), n],
                [w(1.0), w(0.0), n],
                [w(0.0), w(0.0), n],
                [w(0.0), w(0.0), n],
                // libc
                [w(0.0), w(0.0), w(0.0)],
                [w(0.0), w(1.0), w(0.0)],
                // [anon]: added before delta 2
                [n, w(1.0), w(0.0)],
            ]
        );
    }

    #[test]
    fn writes_reported_after_memory_stopped_being_tracked_show() {
        // The heap made read-only before delta 3, whose harvest still reports a write made
        // before: the cell shows it, where it would be hatched as untracked.
        let text = removed_then_written(
            r#""start":"0x10000","end":"0x14000""#,
            r#"{"start":"0x10000","end":"0x11000","pages":1}"#,
        );
        let (n, w) = (None, |f: f64| Some(f));
        assert_eq!(
            grid(&heatmap_of(&text, LIMITS))[..4],
            [
                [w(1.0), w(0.0), w(1.0)],
                [w(1.0), w(0.0), n],
                [w(0.0), w(0.0), n],
                [w(0.0), w(0.0), n],
            ]
        );
    }

    #[test]
    fn a_partly_tracked_cell_never_exceeds_all_its_pages() {
        // Rows of 2 pages; the heap's first page stops being tracked, and delta 3 reports
        // both pages of row 0: 2 written of 2 tracked, not of 1.
        let text = removed_then_written(
            r#""start":"0x10000","end":"0x11000""#,
            r#"{"start":"0x10000","end":"0x12000","pages":2}"#,
        );
        let h = heatmap_of(
            &text,
            Limits {
                columns: 3,
                rows: 4,
            },
        );
        assert_eq!(h.layout.pages_per_row, 2);
        assert_eq!(h.cell(2, 0), Cell::Written(1.0));
        assert_eq!(h.cell(2, 1), Cell::Written(0.0));
    }

    #[test]
    fn extreme_addresses_neither_overflow_nor_panic() {
        let top = "0xfffffffffffff000";
        // The whole address space, tracked and written, with 1-byte pages (the only power of
        // two where the last row's end overflows) and with 4 KiB pages.
        for (page_size, end) in [(1, "0xffffffffffffffff"), (4096, top)] {
            let text = STREAM
                .replace(
                    r#""page_size":4096"#,
                    &format!(r#""page_size":{page_size}"#),
                )
                .replace(
                    r#""start":"0x10000","end":"0x14000""#,
                    &format!(r#""start":"0x0","end":"{end}""#),
                )
                .replace(
                    r#""start":"0x10000","end":"0x12000""#,
                    &format!(r#""start":"0x0","end":"{end}""#),
                )
                .replace(
                    r#""dirty_pages":2"#,
                    r#""dirty_pages":18446744073709551615"#,
                );
            let (h, _) = crate::report::analyse(std::io::Cursor::new(text), "T").unwrap();
            assert_eq!(h.header.dirty_pages, u64::MAX, "saturated");
            assert_eq!(h.cell(0, 0), Cell::Written(1.0));
            assert!(h.totals.rows()[0].size_mib.is_finite());
            let _ = crate::report::render::html(&h, &[]);
        }
        // Nonsense: an error naming the line.
        let bad = [
            (
                r#""start":"0x10000","end":"0x12000""#,
                r#""start":"0xffffffffffffffff","end":"0x0""#,
                "T line 2: range 0xffffffffffffffff-0x0 ends before it starts",
            ),
            (
                r#""event":"removed""#,
                &format!(r#""event":"moved","from":"{top}""#),
                "T line 5: a mapping of 0x4000 bytes moved from 0xfffffffffffff000 would end past the top",
            ),
        ];
        for (from, to, says) in bad {
            let text = STREAM.replace(from, to);
            let err = crate::report::analyse(std::io::Cursor::new(text), "T")
                .err()
                .unwrap()
                .to_string();
            assert!(err.starts_with(says), "expected {says:?}: {err}");
        }
    }

    #[test]
    fn binned_cells_average_over_their_pages_and_deltas() {
        let h = heatmap(Limits {
            columns: 2,
            rows: 4,
        });
        assert_eq!(
            (h.layout.pages_per_row, h.layout.rows),
            (2, 4),
            "7 pages in rows of 2"
        );
        assert_eq!((h.layout.deltas_per_column, h.layout.columns), (2, 2));
        let w = Some;
        assert_eq!(
            grid(&h),
            [
                // 2 heap pages written once over 2 deltas of 2 tracked pages
                [w(2.0 / 4.0), None],
                [w(0.0), None],
                // libc page 2 written once: 1 of 2 pages × 2 deltas
                [w(1.0 / 4.0), w(0.0)],
                // the [anon] page, tracked in delta 2 only, written then
                [w(1.0), w(0.0)],
            ]
        );
        assert_eq!(
            h.columns,
            [
                Column {
                    dirty_pages: 4,
                    end_ms: 200,
                    covered_ms: 200
                },
                Column {
                    dirty_pages: 0,
                    end_ms: 400,
                    covered_ms: 200
                },
            ]
        );
    }

    #[test]
    fn totals_name_mappings_by_band() {
        let h = heatmap(LIMITS);
        let rows: Vec<_> = h
            .totals
            .rows()
            .into_iter()
            .map(|r| (r.mapping, r.pages_written, r.page_writes))
            .collect();
        assert_eq!(
            rows,
            [
                ("[heap]".to_string(), 2, 2),
                ("[anon]".to_string(), 1, 1),
                ("libc.so.6".to_string(), 1, 1),
            ]
        );
    }
}
