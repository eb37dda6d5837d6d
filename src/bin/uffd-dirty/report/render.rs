//! Drawing: the heatmap, the write-rate curve and the header as one SVG, and an HTML page that
//! wraps it with the per-mapping table.
//!
//! Self-contained by construction: generic font families, no external resource, and nothing
//! the picture needs from JavaScript (the HTML's small script only adds a hover tooltip). The
//! geometry is written into `data-` attributes (`#heatmap`, `.band`) so that tests and tools
//! can find cells without guessing pixel positions.

use std::fmt::Write as _;
use std::time::Duration;

use super::heatmap::{Band, Cell, Header, Heatmap, Layout};
use crate::output::totals::{mib, short_name};

/// Shades from light (a few pages written) to dark (all): level 1 to [`LEVELS`]. White is none.
const LEVELS: usize = 16;
const LIGHTEST: [f64; 3] = [253.0, 219.0, 164.0];
const DARKEST: [f64; 3] = [58.0, 12.0, 82.0];

const LEFT: f64 = 210.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 78.0;
const HEAT_W: f64 = 960.0;
const HEAT_H: f64 = 400.0;
const AXIS_H: f64 = 34.0;
const RATE_H: f64 = 110.0;
const LEGEND_H: f64 = 46.0;
const WIDTH: f64 = LEFT + HEAT_W + RIGHT;
const RATE_Y: f64 = TOP + HEAT_H + AXIS_H;
const HEIGHT: f64 = RATE_Y + RATE_H + AXIS_H + LEGEND_H;

fn shade(level: usize) -> String {
    let t = (level - 1) as f64 / (LEVELS - 1) as f64;
    let c: Vec<u8> = (0..3)
        .map(|i| (LIGHTEST[i] + (DARKEST[i] - LIGHTEST[i]) * t).round() as u8)
        .collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// 0 for no writes; any write shows, all pages written is the darkest.
fn level(fraction: f64) -> usize {
    if fraction <= 0.0 {
        0
    } else {
        ((fraction * LEVELS as f64).ceil() as usize).clamp(1, LEVELS)
    }
}

/// Escape text for XML and HTML content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    // A trace is any file: what would act on a terminal, or is not a character at all in
    // XML 1.0 (most C0 controls, even as `&#27;`), is written visibly first.
    for c in uffd_dirty::printable(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn seconds(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}:{:02} min", ms / 60_000, (ms / 1000) % 60)
    }
}

/// Lines of the header: what ran, how, when, how long, how much, how it ended.
pub fn header_lines(h: &Header) -> [String; 2] {
    let duration = h
        .last_time
        .duration_since(h.start_time)
        .unwrap_or(Duration::ZERO);
    let ended = match &h.end {
        Some((reason, Some(error))) => format!("ended: {reason} ({error})"),
        Some((reason, None)) => format!("ended: {reason}"),
        None => "no end record (the tracker was killed, or is still running)".to_string(),
    };
    [
        format!(
            "PID {} · {} every {} · started {} UTC",
            h.pid,
            h.method,
            crate::output::words::millis(h.interval_ms),
            humantime::format_rfc3339_millis(h.start_time)
                .to_string()
                .replace('T', " ")
                .trim_end_matches('Z')
        ),
        format!(
            "duration {} · {} · {} ({:.2} MiB) · {ended}",
            seconds(duration.as_millis() as u64),
            crate::output::words::count(h.deltas, "delta"),
            crate::output::words::count(h.dirty_pages, "dirty page"),
            mib(h.dirty_pages, h.page_size)
        ),
    ]
}

/// A round number at or above `v` (1, 2, 5 × 10^n).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&n| n >= v)
        .unwrap_or(10.0 * p)
}

/// The standalone picture: header, heatmap with its band labels and time axis, rate curve,
/// legend.
pub fn svg(h: &Heatmap) -> String {
    let layout = &h.layout;
    let cell_w = HEAT_W / layout.columns.max(1) as f64;
    let row_h = HEAT_H / layout.rows.max(1) as f64;
    let mut s = String::new();
    title(&mut s, &h.header);
    let _ = write!(
        s,
        r##"<g id="heatmap" transform="translate({LEFT},{TOP})" data-x="{LEFT}" data-y="{TOP}" data-width="{HEAT_W}" data-height="{HEAT_H}" data-columns="{}" data-rows="{}" data-deltas="{}" data-deltas-per-column="{}" data-pages-per-row="{}" data-page-size="{}" data-total-pages="{}">
<rect width="{HEAT_W}" height="{HEAT_H}" fill="#fff"/>
"##,
        layout.columns,
        layout.rows,
        layout.deltas,
        layout.deltas_per_column,
        layout.pages_per_row,
        layout.page_size,
        layout.total_pages
    );
    cell_paths(&mut s, h, cell_w, row_h);
    bands(&mut s, layout);
    frame(&mut s, layout);
    s.push_str("</g>\n");
    time_axis(&mut s, h, TOP + HEAT_H, cell_w);
    rate_curve(&mut s, h, cell_w);
    time_axis(&mut s, h, RATE_Y + RATE_H, cell_w);
    legend(&mut s);
    s.push_str("</svg>\n");
    s
}

/// The `<svg>` element with the hatch pattern, and the header lines above the heatmap.
fn title(s: &mut String, header: &Header) {
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" id="report-svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<defs><pattern id="untracked" patternUnits="userSpaceOnUse" width="6" height="6"><rect width="6" height="6" fill="#e4e4e4"/><path d="M-1 1l2-2M0 6l6-6M5 7l2-2" stroke="#a8a8a8" stroke-width="1"/></pattern></defs>
<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>
"##
    );
    let [line1, line2] = header_lines(header);
    let _ = write!(
        s,
        r##"<text x="12" y="24" font-size="17" font-weight="bold">uffd-dirty report · {}</text>
<text x="12" y="46">{}</text>
<text x="12" y="64" fill="#555">address (tracked ranges only, gaps removed; low addresses at the top) × time; shade: share of the cell's pages written per delta</text>
"##,
        escape(&line1),
        escape(&line2)
    );
}

/// What a cell is drawn as: hatched (`None`) or a shade level (0: white, drawn as nothing).
fn cell_kind(cell: Cell) -> Option<usize> {
    match cell {
        Cell::Untracked => None,
        Cell::Written(f) => Some(level(f)),
    }
}

/// The cells: in cell units under one scale, so each run of equal cells in a row is a short
/// path segment; one path per shade keeps the file small. Untracked runs are hatched, in
/// pixels (a pattern under a scale would stretch).
fn cell_paths(s: &mut String, h: &Heatmap, cell_w: f64, row_h: f64) {
    let (columns, rows) = (h.layout.columns, h.layout.rows);
    let mut paths = vec![String::new(); LEVELS + 1];
    let mut untracked = String::new();
    for row in 0..rows {
        let mut column = 0;
        while column < columns {
            let kind = cell_kind(h.cell(column, row));
            let mut end = column + 1;
            while end < columns && cell_kind(h.cell(end, row)) == kind {
                end += 1;
            }
            let len = end - column;
            match kind {
                None => {
                    let _ = write!(
                        untracked,
                        "M{:.2} {:.2}h{:.2}v{:.2}h-{:.2}z",
                        column as f64 * cell_w,
                        row as f64 * row_h,
                        len as f64 * cell_w,
                        row_h,
                        len as f64 * cell_w
                    );
                }
                Some(0) => {}
                Some(l) => {
                    let _ = write!(paths[l], "M{column} {row}h{len}v1h-{len}z");
                }
            }
            column = end;
        }
    }
    if !untracked.is_empty() {
        let _ = writeln!(
            s,
            r#"<path class="untracked" fill="url(#untracked)" d="{untracked}"/>"#
        );
    }
    let _ = writeln!(
        s,
        r#"<g transform="scale({cell_w:.6},{row_h:.6})" shape-rendering="crispEdges">"#
    );
    for (l, d) in paths.iter().enumerate().filter(|(_, d)| !d.is_empty()) {
        let _ = writeln!(s, r#"<path fill="{}" d="{d}"/>"#, shade(l));
    }
    s.push_str("</g>\n");
}

/// Bands: separators across the heatmap, names (and start addresses, where there is room) in
/// the left margin.
fn bands(s: &mut String, layout: &Layout) {
    let pixels_per_page = HEAT_H / layout.total_pages.max(1) as f64;
    let mut label_free_from = f64::MIN;
    for band in &layout.bands {
        let pages = band.span.len() / layout.page_size;
        let name = escape(&band.name);
        let y0 = band.first_page as f64 * pixels_per_page;
        let y1 = (band.first_page + pages) as f64 * pixels_per_page;
        let _ = write!(
            s,
            r##"<g class="band" data-name="{name}" data-start="{:#x}" data-end="{:#x}" data-first-page="{}" data-pages="{pages}" data-y0="{y0:.3}" data-y1="{y1:.3}"><title>{name} {} ({:.2} MiB)</title>"##,
            band.span.start,
            band.span.end,
            band.first_page,
            band.span,
            mib(pages, layout.page_size)
        );
        if band.first_page > 0 {
            let _ = write!(
                s,
                r##"<line x1="-6" x2="{HEAT_W}" y1="{y0:.2}" y2="{y0:.2}" stroke="#3b6ea5" stroke-width="0.8"/>"##
            );
        }
        band_label(s, band, y0, y1, &mut label_free_from);
        s.push_str("</g>\n");
    }
}

/// A band's name in the margin, at the band's middle or just below the previous label if the
/// band is too thin; a label that would leave its band's reach is dropped (the title stays).
/// `free_from`: the first y a label may take, moved past this one.
fn band_label(s: &mut String, band: &Band, y0: f64, y1: f64, free_from: &mut f64) {
    let label_y = ((y0 + y1) / 2.0 + 4.0).max(*free_from);
    if label_y > y1 + 12.0 || label_y > HEAT_H + 4.0 {
        return;
    }
    let name = short_name(&band.name);
    let name = if name.chars().count() > 26 {
        format!("{}…", name.chars().take(25).collect::<String>())
    } else {
        name.to_string()
    };
    let _ = write!(
        s,
        r#"<text x="-10" y="{label_y:.2}" text-anchor="end">{}</text>"#,
        escape(&name)
    );
    if y1 - y0 >= 30.0 {
        let _ = write!(
            s,
            r##"<text x="-10" y="{:.2}" text-anchor="end" font-family="monospace" font-size="10" fill="#666">{:#x}</text>"##,
            label_y + 13.0,
            band.span.start
        );
        *free_from = label_y + 26.0;
    } else {
        *free_from = label_y + 13.0;
    }
}

/// The heatmap's border, and a note across it when there is nothing to show.
fn frame(s: &mut String, layout: &Layout) {
    let _ = writeln!(
        s,
        r##"<rect width="{HEAT_W}" height="{HEAT_H}" fill="none" stroke="#555"/>"##
    );
    if layout.deltas == 0 || layout.total_pages == 0 {
        let why = if layout.deltas == 0 {
            "no deltas recorded: the run ended before its first interval"
        } else {
            "no memory was tracked"
        };
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" font-size="16" fill="#555">{why}</text>"##,
            HEAT_W / 2.0,
            HEAT_H / 2.0
        );
    }
}

/// Ticks at column boundaries, labelled with the time since attach.
fn time_axis(s: &mut String, h: &Heatmap, y: f64, cell_w: f64) {
    let columns = h.layout.columns;
    let _ = write!(s, r##"<g transform="translate({LEFT},{y})" fill="#333">"##);
    if columns > 0 {
        let step = columns.div_ceil(10).max(1);
        let mut column = 0;
        while column <= columns {
            let x = column as f64 * cell_w;
            let ms = match column {
                0 => 0,
                c => h.columns[c as usize - 1].end_ms,
            };
            let _ = write!(
                s,
                r##"<line x1="{x:.2}" x2="{x:.2}" y1="0" y2="5" stroke="#555"/><text x="{x:.2}" y="18" text-anchor="middle" font-size="11">{}</text>"##,
                seconds(ms)
            );
            column += step;
        }
    }
    s.push_str("</g>\n");
}

/// MiB/s per column, as steps under the heatmap's columns.
fn rate_curve(s: &mut String, h: &Heatmap, cell_w: f64) {
    let page_size = h.layout.page_size;
    let rates: Vec<f64> = h
        .columns
        .iter()
        .map(|c| mib(c.dirty_pages, page_size) / (c.covered_ms.max(1) as f64 / 1000.0))
        .collect();
    let top = nice_ceiling(rates.iter().copied().fold(0.0, f64::max));
    let _ = write!(
        s,
        r##"<g id="rate" transform="translate({LEFT},{RATE_Y})" data-max-mib-per-s="{top}">
<rect width="{HEAT_W}" height="{RATE_H}" fill="#fafafa" stroke="#555"/>
<text x="-10" y="10" text-anchor="end">{top} MiB/s</text><text x="-10" y="{RATE_H}" text-anchor="end">0</text>
<text x="-10" y="{}" text-anchor="end" fill="#555">write rate</text>
"##,
        RATE_H / 2.0 + 4.0
    );
    if !rates.is_empty() {
        let y = |r: f64| RATE_H - r / top * RATE_H;
        let mut d = format!("M0 {RATE_H}");
        for (i, &r) in rates.iter().enumerate() {
            let _ = write!(d, "V{:.2}H{:.2}", y(r), (i + 1) as f64 * cell_w);
        }
        let _ = write!(d, "V{RATE_H}z");
        let _ = writeln!(
            s,
            r##"<path d="{d}" fill="#c9a0dc" stroke="#5b2a86" stroke-width="1"/>"##
        );
    }
    s.push_str("</g>\n");
}

fn legend(s: &mut String) {
    let y = RATE_Y + RATE_H + AXIS_H + 8.0;
    let _ = write!(
        s,
        r##"<g transform="translate({LEFT},{y})" font-size="11"><text x="0" y="12">pages written per delta:</text><rect x="150" y="2" width="14" height="14" fill="#fff" stroke="#999"/><text x="168" y="13">none</text>"##
    );
    for l in 1..=LEVELS {
        let _ = write!(
            s,
            r#"<rect x="{}" y="2" width="12" height="14" fill="{}"/>"#,
            200 + (l - 1) * 12,
            shade(l)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="13">all</text><rect x="440" y="2" width="14" height="14" fill="url(#untracked)" stroke="#999"/><text x="460" y="13">not tracked at that time</text><text x="0" y="34" fill="#555">time since attach →</text></g>"##,
        200 + LEVELS * 12 + 6
    );
}

/// The HTML page: the SVG, then the per-mapping table, then a tooltip script.
pub fn html(h: &Heatmap, notes: &[String]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>uffd-dirty report: PID {}</title>
<style>
body {{ margin: 0; font-family: sans-serif; font-size: 14px; color: #222; }}
svg {{ display: block; }}
main {{ margin: 0 12px 24px 12px; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: 3px 10px; border-bottom: 1px solid #ddd; }}
th {{ text-align: left; background: #f2f2f2; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
#tip {{ position: fixed; pointer-events: none; background: #fff; border: 1px solid #888; padding: 4px 6px; font-size: 12px; display: none; }}
</style></head>
<body>
"#,
        h.header.pid
    );
    // The tests read the heatmap's geometry assuming the SVG starts at the page's top left.
    s.push_str(&svg(h));
    s.push_str("<main>\n");
    for note in notes {
        let _ = writeln!(s, "<p><strong>Note:</strong> {}</p>", escape(note));
    }
    s.push_str("<h2>Per mapping</h2>\n<table id=\"totals\">\n<tr><th>mapping</th><th>size MiB</th><th>pages written</th><th>page-writes</th><th>peak MiB/s</th></tr>\n");
    for row in h.totals.rows() {
        let _ = writeln!(
            s,
            r#"<tr><td>{}</td><td class="n">{:.2}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{:.2}</td></tr>"#,
            escape(&row.mapping),
            row.size_mib,
            row.pages_written,
            row.page_writes,
            row.peak_mib_per_s
        );
    }
    s.push_str("</table>\n<p>Pages written: distinct pages written at least once. Page-writes: pages summed over all deltas. Peak: the highest rate over one delta.</p>\n</main>\n");
    s.push_str(TOOLTIP_SCRIPT);
    s.push_str("</body></html>\n");
    s
}

/// Hover tooltip: the time and address under the pointer, from the data- attributes.
const TOOLTIP_SCRIPT: &str = r#"<div id="tip"></div>
<script>
(function () {
  var g = document.getElementById('heatmap'), tip = document.getElementById('tip');
  var d = function (k) { return Number(g.getAttribute('data-' + k)); };
  var bands = Array.prototype.slice.call(g.querySelectorAll('.band'));
  g.addEventListener('mousemove', function (e) {
    var r = g.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
    if (x < 0 || y < 0 || x >= d('width') || y >= d('height') || !d('columns')) { tip.style.display = 'none'; return; }
    var col = Math.floor(x / d('width') * d('columns'));
    var page = Math.floor(y / d('height') * d('total-pages'));
    var band = bands.filter(function (b) { var f = Number(b.dataset.firstPage); return page >= f && page < f + Number(b.dataset.pages); })[0];
    var text = 'deltas ' + (col * d('deltas-per-column') + 1) + '–' + Math.min(d('deltas'), (col + 1) * d('deltas-per-column'));
    if (band) {
      var addr = BigInt(band.dataset.start) + BigInt(page - Number(band.dataset.firstPage)) * BigInt(d('page-size'));
      text += ' · ' + band.dataset.name + ' · 0x' + addr.toString(16);
    }
    tip.textContent = text;
    tip.style.left = (e.clientX + 12) + 'px'; tip.style.top = (e.clientY + 12) + 'px'; tip.style.display = 'block';
  });
  g.addEventListener('mouseleave', function () { tip.style.display = 'none'; });
})();
</script>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_show_any_write_and_darken_with_more() {
        assert_eq!(level(0.0), 0);
        assert_eq!(level(0.001), 1);
        assert_eq!(level(0.5), LEVELS / 2);
        assert_eq!(level(1.0), LEVELS);
        assert_eq!(shade(1), "#fddba4");
        assert_eq!(shade(LEVELS), "#3a0c52");
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(2.06), 2.5);
        assert_eq!(nice_ceiling(47.0), 50.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }
}
