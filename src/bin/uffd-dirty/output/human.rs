//! The default for people: a header, one line per delta (time, dirty pages, MiB, MiB/s, the
//! mappings that took most writes), and at the end a table per mapping: its size, pages
//! written at least once, total page-writes and peak rate. Bold headers as `--color` says
//! (auto: on a terminal with NO_COLOR unset); `--quiet` leaves out the table and the list of
//! skipped mappings, never what is not seen.

use std::io::{self, Write};

use super::totals::{MappingTotals, mib, short_name};
use super::words::{count, millis};
use super::{DeltaClock, Emitter, Record};
use uffd_dirty::{Mapping, Span};

const TOP_MAPPINGS: usize = 3;

pub struct Human<W: Write> {
    out: W,
    page_size: u64,
    styled: bool,
    quiet: bool,
    totals: MappingTotals,
    clock: DeltaClock,
}

impl<W: Write> Human<W> {
    /// `styled`: whether to embolden (see [`crate::cli::ColorChoice`]); `quiet`: no table at
    /// the end and no list of skipped mappings.
    pub fn new(out: W, styled: bool, quiet: bool) -> Self {
        Human {
            out,
            page_size: 4096,
            styled,
            quiet,
            totals: MappingTotals::new(4096),
            clock: DeltaClock::default(),
        }
    }

    fn bold(&self, s: &str) -> String {
        if self.styled {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn summary(&mut self) -> io::Result<()> {
        if self.totals.is_empty() || self.quiet {
            return Ok(());
        }
        let header = format!(
            "{:<32} {:>10} {:>14} {:>12} {:>12}",
            "mapping", "size MiB", "pages written", "page-writes", "peak MiB/s"
        );
        writeln!(self.out, "{}", self.bold(&header))?;
        for row in self.totals.rows() {
            writeln!(
                self.out,
                "{:<32} {:>10.2} {:>14} {:>12} {:>12.2}",
                truncate(&row.mapping, 32),
                row.size_mib,
                row.pages_written,
                row.page_writes,
                row.peak_mib_per_s
            )?;
        }
        Ok(())
    }
}

/// `stopped (signal) after 12 deltas: 3400 page writes (13.28 MiB)`, and the error if any.
/// Also the end line of the live view.
pub(crate) fn end_line(e: &super::End, page_size: u64) -> String {
    let reason = serde_json::to_value(e.reason)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    format!(
        "stopped ({reason}) after {}: {} ({:.2} MiB){}",
        count(e.deltas, "delta"),
        count(e.dirty_pages_total, "page write"),
        mib(e.dirty_pages_total, page_size),
        e.error
            .as_ref()
            .map(|m| format!("; error: {}", uffd_dirty::printable(m)))
            .unwrap_or_default()
    )
}

pub(crate) fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The VMA containing `addr`; `vmas` is sorted by start.
fn vma_of(vmas: &[Mapping], addr: u64) -> Option<&Mapping> {
    uffd_dirty::mapping_at(vmas, addr)
}

fn clock(t: std::time::SystemTime) -> String {
    let s = humantime::format_rfc3339_millis(t).to_string();
    s.get(11..23).unwrap_or(&s).to_string()
}

impl<W: Write> Emitter for Human<W> {
    fn emit(&mut self, record: &Record, vmas: &[Mapping]) -> io::Result<()> {
        match record {
            Record::Start(s) => {
                self.page_size = s.page_size;
                self.totals.set_page_size(s.page_size);
                let pages: u64 = s.ranges.iter().map(|r| r.pages).sum();
                let line = format!(
                    "tracking PID {} with {}: {}, {} ({:.1} MiB), every {}; attach took {:.1} ms",
                    s.pid,
                    s.method,
                    count(s.ranges.len() as u64, "range"),
                    count(pages, "page"),
                    mib(pages, s.page_size),
                    millis(s.interval_ms),
                    s.attach_us as f64 / 1000.0
                );
                writeln!(self.out, "{}", self.bold(&line))?;
                for k in s.skipped.iter().filter(|_| !self.quiet) {
                    writeln!(
                        self.out,
                        "  skipped {:#x}-{:#x} {}: {}",
                        k.start.0, k.end.0, k.mapping, k.reason
                    )?;
                }
                for b in &s.blind {
                    writeln!(self.out, "  not seen: {}", b.detail)?;
                }
            }
            Record::Mapping(m) => {
                let from = m
                    .from
                    .map(|f| format!(" from {:#x}", f.0))
                    .unwrap_or_default();
                writeln!(
                    self.out,
                    "{}  mapping {} {:#x}-{:#x}{from} {} ({})",
                    clock(m.time.0),
                    m.event,
                    m.start.0,
                    m.end.0,
                    m.mapping,
                    m.kind_name()
                )?;
            }
            Record::Delta(d) => {
                let seconds = self.clock.advance(d.elapsed_ms).seconds;
                for r in &d.ranges {
                    // One piece per VMA the run crosses.
                    let mut at = r.start.0;
                    while at < r.end.0 {
                        let (name, size, end) = match vma_of(vmas, at) {
                            Some(v) => (
                                short_name(v.display_name()),
                                v.len() / self.page_size,
                                v.end.min(r.end.0),
                            ),
                            None => ("[unmapped]", 0, at + self.page_size),
                        };
                        self.totals.add_pages(name, size, Span::new(at, end));
                        at = end;
                    }
                }
                let per_mapping = self.totals.finish_delta(seconds);
                let mut top: Vec<_> = per_mapping.into_iter().collect();
                top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let top: Vec<String> = top
                    .iter()
                    .take(TOP_MAPPINGS)
                    .map(|(n, p)| format!("{n} {p}"))
                    .collect();
                writeln!(
                    self.out,
                    "{}  #{:<5} {:>8} {:<5} {:>9.2} MiB {:>9.2} MiB/s  {}",
                    clock(d.time.0),
                    d.seq,
                    d.dirty_pages,
                    if d.dirty_pages == 1 { "page" } else { "pages" },
                    mib(d.dirty_pages, self.page_size),
                    mib(d.dirty_pages, self.page_size) / seconds,
                    top.join(", ")
                )?;
            }
            Record::Exec(x) => {
                let pages: u64 = x.ranges.iter().map(|r| r.pages).sum();
                writeln!(
                    self.out,
                    "{}  exec {}: re-attached in {:.1} ms, {}, {}",
                    clock(x.time.0),
                    x.exe,
                    x.attach_us as f64 / 1000.0,
                    count(x.ranges.len() as u64, "range"),
                    count(pages, "page")
                )?;
            }
            Record::Blind(b) => {
                writeln!(
                    self.out,
                    "{}  not seen from now on: {}",
                    clock(b.time.0),
                    b.blind.detail
                )?;
            }
            Record::End(e) => {
                self.summary()?;
                let line = end_line(e, self.page_size);
                writeln!(self.out, "{}", self.bold(&line))?;
            }
        }
        self.out.flush()
    }
}
