//! What the live view shows, as plain data: the tracked memory cut into cells, each cell's heat
//! from the last deltas, the rate sparkline, the keys, and the lines of one frame. Nothing here
//! touches a terminal, so all of it is unit-tested.

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::output::human::truncate;
use crate::output::totals::{mib, short_name};
use crate::output::{Record, TrackedRange};
use uffd_dirty::{Mapping, Span};

/// Deltas a cell's heat remembers.
pub const HEAT_DELTAS: usize = 16;
/// Deltas the sparkline remembers (it shows as many as fit).
const RATE_DELTAS: usize = 512;
/// Weight of a write one delta older than another, for the shading of older writes.
const DECAY: f64 = 0.7;
/// Lines above the cells (status, rate, scope) and below them (keys).
const HEADER_LINES: usize = 3;
const FOOTER_LINES: usize = 1;

/// Cell shades without colour, by level: clean, then written longer ago … this delta.
const SHADES: [char; 5] = ['·', '░', '▒', '▓', '█'];
/// The same levels as 256-colour backgrounds: grey, then dark red … yellow.
const COLOURS: [u8; 5] = [236, 52, 124, 202, 226];
const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A run of tracked memory under one name (contiguous VMAs of one file or kind are one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub span: Span,
    pub name: String,
}

/// Tracked spans cut at VMA boundaries and named by their VMA; neighbours with the same name
/// (a library's .data and .bss, anonymous memory split by an mprotect) are merged.
pub fn segments(tracked: &[Span], vmas: &[Mapping]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for span in tracked {
        let mut at = span.start;
        while at < span.end {
            let (end, name) = match uffd_dirty::mapping_at(vmas, at) {
                Some(v) => (v.end.min(span.end), short_name(v.display_name())),
                None => {
                    let next = vmas.partition_point(|v| v.start <= at);
                    let end = vmas.get(next).map_or(span.end, |v| v.start.min(span.end));
                    (end, "[unmapped]")
                }
            };
            match out.last_mut() {
                Some(last) if last.span.end == at && last.name == name => last.span.end = end,
                _ => out.push(Segment {
                    span: Span::new(at, end),
                    name: name.to_string(),
                }),
            }
            at = end;
        }
    }
    out
}

/// How the cells are laid out: every cell covers `pages_per_cell` pages, and segment i takes
/// `rows[i]` rows.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub pages_per_cell: u64,
    pub rows: Vec<usize>,
}

/// The finest power-of-two grain at which segments of `pages` fit in `rows` rows of `cols`
/// cells, each segment on at least one row of its own. When there are more segments than
/// rows, the grain at which each fits one row (the view then scrolls).
pub fn layout(pages: &[u64], rows: usize, cols: usize) -> Layout {
    let cols = cols.max(1) as u64;
    let rows_at = |grain: u64| -> Vec<usize> {
        pages
            .iter()
            .map(|p| p.div_ceil(grain).div_ceil(cols).max(1) as usize)
            .collect()
    };
    let mut grain = 1u64;
    loop {
        let need = rows_at(grain);
        let one_row_each = need.iter().all(|&r| r == 1);
        if need.iter().sum::<usize>() <= rows || one_row_each || grain >= 1 << 40 {
            return Layout {
                pages_per_cell: grain,
                rows: need,
            };
        }
        grain *= 2;
    }
}

/// Per cell of `span` (cells of `pages_per_cell` pages), bit a set when the delta a deltas
/// back (0: the newest) wrote a page in it. `history` holds sorted dirty runs, newest first.
pub fn written_masks(
    span: Span,
    page_size: u64,
    pages_per_cell: u64,
    history: &VecDeque<Vec<Span>>,
) -> Vec<u32> {
    let cell_bytes = page_size * pages_per_cell;
    let mut masks = vec![0u32; span.len().div_ceil(cell_bytes) as usize];
    for (age, runs) in history.iter().enumerate().take(32) {
        let first = runs.partition_point(|r| r.end <= span.start);
        for run in runs[first..].iter().take_while(|r| r.start < span.end) {
            let Some(part) = run.intersect(&span) else {
                continue;
            };
            let from = (part.start - span.start) / cell_bytes;
            let to = (part.end - span.start).div_ceil(cell_bytes);
            for m in &mut masks[from as usize..to as usize] {
                *m |= 1 << age;
            }
        }
    }
    masks
}

/// A cell's shade from its mask: 4 when the newest delta wrote it; 3 to 1 by how recently and
/// how often the older deltas did (each delta back weighs DECAY times less); 0 when none did.
pub fn shade(mask: u32) -> usize {
    if mask & 1 != 0 {
        return 4;
    }
    let heat: f64 = (1..HEAT_DELTAS)
        .filter(|a| mask >> a & 1 != 0)
        .map(|a| DECAY.powi(a as i32))
        .sum();
    match heat {
        h if h >= 1.0 => 3,
        h if h >= 0.3 => 2,
        h if h > 0.0 => 1,
        _ => 0,
    }
}

/// One bar per value, scaled to the largest; zero is a blank.
pub fn sparkline(values: &[u64]) -> String {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|&v| match v {
            0 => ' ',
            v => SPARKS[((v as u128 * 8).div_ceil(max as u128) as usize).clamp(1, 8) - 1],
        })
        .collect()
}

/// `4K`, `132K`, `64M`, `1.5G`: a size that fits the margin.
pub fn size_text(bytes: u64) -> String {
    let units = ["B", "K", "M", "G", "T", "P"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v < 10.0 && v.fract() != 0.0 {
        format!("{v:.1}{}", units[u])
    } else {
        format!("{v:.0}{}", units[u])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Quit,
    Up,
    Down,
    ZoomIn,
    ZoomOut,
    Help,
}

/// The keys in what one read from the terminal returned. An escape alone is Esc; `ESC [ A`
/// and `ESC [ B` (and `ESC O A/B`) are the arrows; other sequences are ignored.
pub fn parse_keys(bytes: &[u8]) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let key = match bytes[i] {
            b'q' | b'Q' | 0x03 => Some(Key::Quit),
            b'j' => Some(Key::Down),
            b'k' => Some(Key::Up),
            b'\r' | b'\n' | b'z' => Some(Key::ZoomIn),
            b'u' => Some(Key::ZoomOut),
            b'?' => Some(Key::Help),
            0x1b if matches!(bytes.get(i + 1), Some(b'[' | b'O')) => {
                // A CSI or SS3 sequence: parameters, then one final byte.
                let mut end = i + 2;
                while end < bytes.len() && !(0x40..=0x7e).contains(&bytes[end]) {
                    end += 1;
                }
                let key = match bytes.get(end) {
                    Some(b'A') => Some(Key::Up),
                    Some(b'B') => Some(Key::Down),
                    _ => None,
                };
                i = end;
                key
            }
            0x1b => Some(Key::ZoomOut),
            _ => None,
        };
        keys.extend(key);
        i += 1;
    }
    keys
}

/// Everything the view knows, fed by the records and the keys.
#[derive(Default)]
pub struct Model {
    pid: i32,
    method: String,
    interval_ms: u64,
    page_size: u64,
    seq: u64,
    last_dirty: u64,
    last_mib_s: f64,
    total: u64,
    clock: crate::output::DeltaClock,
    segments: Vec<Segment>,
    /// Dirty runs of the last HEAT_DELTAS deltas, newest first.
    history: VecDeque<Vec<Span>>,
    /// Dirty pages of the last RATE_DELTAS deltas, oldest first.
    rates: VecDeque<u64>,
    selected: usize,
    zoomed: bool,
    help: bool,
    /// A quit key was pressed: the final harvest is under way.
    pub stopping: bool,
}

impl Model {
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    pub fn record(&mut self, record: &Record, vmas: &[Mapping]) {
        match record {
            Record::Start(s) => {
                self.pid = s.pid;
                self.method = s.method.to_string();
                self.interval_ms = s.interval_ms;
                self.page_size = s.page_size;
                self.set_segments(&spans_of(&s.ranges), vmas);
            }
            Record::Exec(x) => {
                // A new address space: the old heat belongs to memory that is gone.
                self.history.clear();
                self.set_segments(&spans_of(&x.ranges), vmas);
            }
            Record::Delta(d) => {
                let seconds = self.clock.advance(d.elapsed_ms).seconds;
                self.seq = d.seq;
                self.last_dirty = d.dirty_pages;
                self.last_mib_s = mib(d.dirty_pages, self.page_size) / seconds;
                self.total += d.dirty_pages;
                self.history.push_front(
                    d.ranges
                        .iter()
                        .map(|r| Span::new(r.start.0, r.end.0))
                        .collect(),
                );
                self.history.truncate(HEAT_DELTAS);
                self.rates.push_back(d.dirty_pages);
                if self.rates.len() > RATE_DELTAS {
                    self.rates.pop_front();
                }
                self.set_segments(&d.tracked, vmas);
            }
            Record::Mapping(_) | Record::End(_) | Record::Blind(_) => {}
        }
    }

    /// New segments; the selection follows the address it was on.
    fn set_segments(&mut self, tracked: &[Span], vmas: &[Mapping]) {
        let at = self.segments.get(self.selected).map(|s| s.span.start);
        let segments = segments(tracked, vmas);
        let found = at.and_then(|a| {
            segments
                .iter()
                .position(|s| s.span.start <= a && a < s.span.end)
        });
        if found.is_none() {
            self.zoomed = false;
        }
        self.selected = found.unwrap_or(self.selected.min(segments.len().saturating_sub(1)));
        self.segments = segments;
    }

    /// Apply a key; whether it asks to quit.
    pub fn key(&mut self, key: Key) -> bool {
        let last = self.segments.len().saturating_sub(1);
        match key {
            Key::Quit => {
                self.stopping = true;
                return true;
            }
            Key::Down => self.selected = (self.selected + 1).min(last),
            Key::Up => self.selected = self.selected.saturating_sub(1),
            Key::ZoomIn => self.zoomed = !self.segments.is_empty(),
            Key::ZoomOut => self.zoomed = false,
            Key::Help => self.help = !self.help,
        }
        false
    }

    /// The lines of a frame `cols` wide and `rows` high; `styled`: colours, else shading
    /// characters.
    pub fn frame(&self, cols: usize, rows: usize, styled: bool) -> Vec<String> {
        let margin = (cols / 5).clamp(14, 28);
        let cell_cols = cols.saturating_sub(margin).max(1);
        let map_rows = rows.saturating_sub(HEADER_LINES + FOOTER_LINES).max(1);
        let shown: Vec<usize> = if self.zoomed {
            vec![self.selected]
        } else {
            (0..self.segments.len()).collect()
        };
        let pages: Vec<u64> = shown
            .iter()
            .map(|&i| self.segments[i].span.len() / self.page_size.max(1))
            .collect();
        let lay = layout(&pages, map_rows, cell_cols);

        let mut lines = vec![
            fit(&self.status_line(), cols),
            fit(&self.rate_line(cols), cols),
            fit(&self.scope_line(lay.pages_per_cell), cols),
        ];
        // Every row of the cell area: (index into `shown`, row within that segment).
        let all_rows: Vec<(usize, usize)> = lay
            .rows
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| (0..n).map(move |r| (i, r)))
            .collect();
        let first_selected = all_rows
            .iter()
            .position(|&(i, _)| shown[i] == self.selected)
            .unwrap_or(0);
        let scroll = first_selected
            .saturating_sub(map_rows / 2)
            .min(all_rows.len().saturating_sub(map_rows));
        let mut masks: Option<(usize, Vec<u32>)> = None;
        for &(i, row) in all_rows.iter().skip(scroll).take(map_rows) {
            let seg = &self.segments[shown[i]];
            if masks.as_ref().is_none_or(|(at, _)| *at != i) {
                masks = Some((
                    i,
                    written_masks(
                        seg.span,
                        self.page_size.max(1),
                        lay.pages_per_cell,
                        &self.history,
                    ),
                ));
            }
            let cells = &masks.as_ref().expect("computed above").1;
            let mut line = self.margin(seg, shown[i] == self.selected, row == 0, margin, styled);
            let from = (row * cell_cols).min(cells.len());
            let to = ((row + 1) * cell_cols).min(cells.len());
            paint(&mut line, &cells[from..to], styled);
            lines.push(line);
        }
        while lines.len() < rows.saturating_sub(FOOTER_LINES) {
            lines.push(String::new());
        }
        lines.push(self.footer(cols, lay.pages_per_cell, styled));
        lines.truncate(rows);
        lines
    }

    fn status_line(&self) -> String {
        let state = if self.stopping {
            "  stopping: final harvest"
        } else {
            ""
        };
        format!(
            "uffd-dirty  PID {}  {}  every {}  #{}  {}  {:.2} MiB/s  total {:.1} MiB{state}",
            self.pid,
            self.method,
            crate::output::words::millis(self.interval_ms),
            self.seq,
            crate::output::words::count(self.last_dirty, "page"),
            self.last_mib_s,
            mib(self.total, self.page_size)
        )
    }

    fn rate_line(&self, cols: usize) -> String {
        let room = cols.saturating_sub(30).max(1);
        let recent: Vec<u64> = self
            .rates
            .iter()
            .skip(self.rates.len().saturating_sub(room))
            .copied()
            .collect();
        let peak = recent.iter().copied().max().unwrap_or(0);
        format!(
            "rate {}  peak {peak} pages/delta",
            sparkline(&recent).trim_end_matches(' ')
        )
    }

    fn scope_line(&self, pages_per_cell: u64) -> String {
        let cell = format!(
            "cell = {} ({})",
            crate::output::words::count(pages_per_cell, "page"),
            size_text(pages_per_cell * self.page_size)
        );
        let Some(sel) = self.segments.get(self.selected) else {
            return format!("nothing tracked  {cell}");
        };
        let which = format!(
            "{} {:#x}-{:#x} {}",
            sel.name,
            sel.span.start,
            sel.span.end,
            size_text(sel.span.len())
        );
        if self.zoomed {
            format!("zoom {which}  {cell}  u: back")
        } else {
            let total: u64 = self.segments.iter().map(|s| s.span.len()).sum();
            format!(
                "all {} {}  {cell}  > {which}",
                crate::output::words::count(self.segments.len() as u64, "mapping"),
                size_text(total)
            )
        }
    }

    /// `> name      size ` on a segment's first row, blank after; `>` marks the selection.
    fn margin(
        &self,
        seg: &Segment,
        selected: bool,
        first_row: bool,
        width: usize,
        styled: bool,
    ) -> String {
        let marker = if selected { '>' } else { ' ' };
        let body = if first_row {
            let size = size_text(seg.span.len());
            let room = width.saturating_sub(size.chars().count() + 3);
            format!("{:<room$} {size}", truncate(&seg.name, room), room = room)
        } else {
            String::new()
        };
        let body = format!("{body:<w$}", w = width.saturating_sub(2));
        if styled && selected {
            // Bold on blue rather than reverse video, which some renderers keep past the reset.
            format!("{marker}\x1b[1;48;5;24m{body}\x1b[0m ")
        } else {
            format!("{marker}{body} ")
        }
    }

    fn footer(&self, cols: usize, pages_per_cell: u64, styled: bool) -> String {
        if self.help {
            return fit(
                &format!(
                    "each cell: {}; brightest: written in the newest delta, then fading over {HEAT_DELTAS} deltas; rows in proportion to size, one at least per mapping; q/Ctrl-C: final harvest and stop  (?: close)",
                    crate::output::words::count(pages_per_cell, "page")
                ),
                cols,
            );
        }
        let keys = "q quit  j/k select  z zoom  u back  ? help";
        // The legend, painted like the cells; only when it fits beside the keys.
        let legend = [
            (4usize, " now "),
            (3, ""),
            (2, ""),
            (1, " older "),
            (0, " clean"),
        ];
        let legend_cols: usize = legend.iter().map(|(_, l)| 1 + l.len()).sum();
        let mut line = fit(keys, cols);
        if cols >= keys.len() + 3 + legend_cols {
            line.push_str("   ");
            for (level, label) in legend {
                paint_level(&mut line, level, styled);
                line.push_str(label);
            }
        }
        line
    }
}

fn spans_of(ranges: &[TrackedRange]) -> Vec<Span> {
    ranges
        .iter()
        .map(|r| Span::new(r.start.0, r.end.0))
        .collect()
}

/// `s` cut to `cols` characters.
fn fit(s: &str, cols: usize) -> String {
    truncate(s, cols).to_string()
}

/// Append one cell per mask.
fn paint(line: &mut String, masks: &[u32], styled: bool) {
    if !styled {
        line.extend(masks.iter().map(|&m| SHADES[shade(m)]));
        return;
    }
    let mut current = None;
    for &m in masks {
        let level = shade(m);
        if current != Some(level) {
            let _ = write!(line, "\x1b[48;5;{}m", COLOURS[level]);
            current = Some(level);
        }
        line.push(' ');
    }
    line.push_str("\x1b[0m");
}

fn paint_level(line: &mut String, level: usize, styled: bool) {
    if styled {
        let _ = write!(line, "\x1b[48;5;{}m \x1b[0m", COLOURS[level]);
    } else {
        line.push(SHADES[level]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(line: &str) -> Mapping {
        line.parse().unwrap()
    }

    #[test]
    fn segments_split_at_vmas_and_merge_same_names() {
        let vmas = [
            vma("10000-12000 rw-p 00000000 08:01 7 /usr/lib/libc.so.6"),
            vma("12000-14000 rw-p 00000000 00:00 0 /usr/lib/libc.so.6"),
            vma("14000-18000 rw-p 00000000 00:00 0"),
            vma("20000-21000 rw-p 00000000 00:00 0 [heap]"),
        ];
        let got = segments(
            &[Span::new(0x10000, 0x18000), Span::new(0x20000, 0x21000)],
            &vmas,
        );
        let names: Vec<(&str, u64, u64)> = got
            .iter()
            .map(|s| (s.name.as_str(), s.span.start, s.span.end))
            .collect();
        assert_eq!(
            names,
            vec![
                ("libc.so.6", 0x10000, 0x14000),
                ("[anon]", 0x14000, 0x18000),
                ("[heap]", 0x20000, 0x21000)
            ]
        );
    }

    #[test]
    fn layout_picks_the_finest_grain_that_fits() {
        // 1000 + 10 + 1 pages on 10 rows of 50 cells: at grain 2 they need 10 + 1 + 1 rows,
        // at grain 4 they need 5 + 1 + 1.
        let l = layout(&[1000, 10, 1], 10, 50);
        assert_eq!(
            l,
            Layout {
                pages_per_cell: 4,
                rows: vec![5, 1, 1]
            }
        );
        // Everything fits at one page per cell.
        assert_eq!(layout(&[100], 10, 50).pages_per_cell, 1);
        // More segments than rows: one row each, and the view scrolls.
        let l = layout(&[100; 20], 10, 50);
        assert_eq!((l.pages_per_cell, l.rows.len()), (2, 20));
        // A 1 TiB sparse reservation next to a small mapping: proportional, and the small one
        // keeps its row.
        let l = layout(&[1 << 28, 33], 30, 80);
        assert_eq!(l.rows[1], 1);
        assert!(l.rows[0] <= 29 && l.pages_per_cell == 1 << 17, "{l:?}");
    }

    #[test]
    fn masks_mark_cells_touched_per_delta() {
        let page = 4096;
        let span = Span::new(0x100000, 0x100000 + 16 * page);
        let mut history = VecDeque::new();
        // Newest: page 0 and pages 5..9; one delta back: page 15.
        history.push_front(vec![Span::new(0x100000 + 15 * page, 0x100000 + 16 * page)]);
        history.push_front(vec![
            Span::new(0x0, 0x100000 + page),
            Span::new(0x100000 + 5 * page, 0x100000 + 9 * page),
        ]);
        let m = written_masks(span, page, 4, &history);
        assert_eq!(m, vec![0b01, 0b01, 0b01, 0b10]);
        // A partial last cell (pages 4 and 5; page 5 was written).
        let m = written_masks(Span::new(0x100000, 0x100000 + 6 * page), page, 4, &history);
        assert_eq!(m, vec![0b01, 0b01]);
    }

    #[test]
    fn shade_is_brightest_for_this_delta_and_fades() {
        assert_eq!(shade(0), 0);
        assert_eq!(shade(1), 4);
        assert_eq!(shade(0b1111), 4);
        assert_eq!(shade(0b0110), 3, "written in the two deltas before");
        assert_eq!(shade(0b0010), 2, "one delta back");
        assert_eq!(shade(1 << 3), 2);
        assert_eq!(shade(1 << 4), 1);
        assert_eq!(shade(1 << 15), 1);
        assert_eq!(shade(1 << 16), 0, "beyond the remembered deltas");
    }

    #[test]
    fn sparkline_scales_to_the_largest() {
        assert_eq!(sparkline(&[0, 1, 4, 8]), " ▁▄█");
        assert_eq!(sparkline(&[5, 5]), "██");
        assert_eq!(sparkline(&[1, 1000]), "▁█");
        assert_eq!(sparkline(&[0, 0]), "  ");
        assert_eq!(sparkline(&[]), "");
    }

    #[test]
    fn keys_and_arrows() {
        use Key::*;
        assert_eq!(
            parse_keys(b"jkz\r\x1b[A\x1b[B\x1bOBu?q\x03"),
            vec![
                Down, Up, ZoomIn, ZoomIn, Up, Down, Down, ZoomOut, Help, Quit, Quit
            ]
        );
        assert_eq!(parse_keys(b"\x1b"), vec![ZoomOut]);
        assert_eq!(parse_keys(b"\x1b[1;5C x"), Vec::<Key>::new());
    }

    #[test]
    fn sizes_fit_the_margin() {
        assert_eq!(size_text(4096), "4K");
        assert_eq!(size_text(132 * 1024), "132K");
        assert_eq!(size_text(64 << 20), "64M");
        assert_eq!(size_text(3 << 29), "1.5G");
        assert_eq!(size_text(1 << 40), "1T");
    }
}
