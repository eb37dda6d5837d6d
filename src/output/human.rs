//! The default for people: a header, one line per delta (time, dirty pages, MiB, MiB/s, the
//! mappings that took most writes), and at the end a table per mapping: its size, pages
//! written at least once, total page-writes and peak rate. Bold headers only on a terminal
//! with NO_COLOR unset.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, IsTerminal, Write};

use super::{Emitter, Record};
use crate::maps::Vma;

const TOP_MAPPINGS: usize = 3;

/// What one mapping (by name) took over the run.
#[derive(Default)]
struct MappingStats {
    size_pages: u64,
    pages_written: HashSet<u64>,
    page_writes: u64,
    peak_pages_per_s: f64,
}

pub struct Human<W: Write> {
    out: W,
    page_size: u64,
    interval_s: f64,
    styled: bool,
    stats: BTreeMap<String, MappingStats>,
    last_elapsed_ms: u64,
}

impl<W: Write> Human<W> {
    /// `to_terminal`: whether `out` is the user's terminal (then styling is allowed).
    pub fn new(out: W, to_terminal: bool) -> Self {
        let styled =
            to_terminal && io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Human {
            out,
            page_size: 4096,
            interval_s: 1.0,
            styled,
            stats: BTreeMap::new(),
            last_elapsed_ms: 0,
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
        if self.stats.is_empty() {
            return Ok(());
        }
        let header = format!(
            "{:<32} {:>10} {:>14} {:>12} {:>12}",
            "mapping", "size MiB", "pages written", "page-writes", "peak MiB/s"
        );
        writeln!(self.out, "{}", self.bold(&header))?;
        let mut rows: Vec<_> = self.stats.iter().collect();
        rows.sort_by(|a, b| b.1.page_writes.cmp(&a.1.page_writes).then(a.0.cmp(b.0)));
        for (name, s) in rows {
            writeln!(
                self.out,
                "{:<32} {:>10.2} {:>14} {:>12} {:>12.2}",
                truncate(name, 32),
                mib(s.size_pages, self.page_size),
                s.pages_written.len(),
                s.page_writes,
                s.peak_pages_per_s * self.page_size as f64 / (1024.0 * 1024.0)
            )?;
        }
        Ok(())
    }
}

/// `stopped (signal) after 12 deltas: 3400 page writes (13.28 MiB)`, and the error if any.
pub(crate) fn end_line(e: &super::End, page_size: u64) -> String {
    let reason = serde_json::to_value(e.reason)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    format!(
        "stopped ({reason}) after {} deltas: {} page writes ({:.2} MiB){}",
        e.deltas,
        e.dirty_pages_total,
        mib(e.dirty_pages_total, page_size),
        e.error
            .as_ref()
            .map(|m| format!("; error: {m}"))
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
fn vma_of(vmas: &[Vma], addr: u64) -> Option<&Vma> {
    crate::maps::vma_at(vmas, addr)
}

pub(crate) fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn clock(t: std::time::SystemTime) -> String {
    let s = humantime::format_rfc3339_millis(t).to_string();
    s.get(11..23).unwrap_or(&s).to_string()
}

pub(crate) fn mib(pages: u64, page_size: u64) -> f64 {
    (pages * page_size) as f64 / (1024.0 * 1024.0)
}

impl<W: Write> Emitter for Human<W> {
    fn emit(&mut self, record: &Record, vmas: &[Vma]) -> io::Result<()> {
        match record {
            Record::Start(s) => {
                self.page_size = s.page_size;
                self.interval_s = (s.interval_ms as f64 / 1000.0).max(0.001);
                let pages: u64 = s.ranges.iter().map(|r| r.pages).sum();
                let line = format!(
                    "tracking PID {} with {}: {} ranges, {} pages ({:.1} MiB), every {} ms; attach took {:.1} ms",
                    s.pid,
                    s.method,
                    s.ranges.len(),
                    pages,
                    mib(pages, s.page_size),
                    s.interval_ms,
                    s.attach_us as f64 / 1000.0
                );
                writeln!(self.out, "{}", self.bold(&line))?;
                for k in &s.skipped {
                    writeln!(
                        self.out,
                        "  skipped {:#x}-{:#x} {}: {}",
                        k.start.0, k.end.0, k.mapping, k.reason
                    )?;
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
                    m.kind
                )?;
            }
            Record::Delta(d) => {
                let seconds = ((d.elapsed_ms.saturating_sub(self.last_elapsed_ms)) as f64 / 1000.0)
                    .max(0.001);
                self.last_elapsed_ms = d.elapsed_ms;
                let mut per_mapping: BTreeMap<String, u64> = BTreeMap::new();
                for r in &d.ranges {
                    for page in (r.start.0..r.end.0).step_by(self.page_size as usize) {
                        let (name, size) = match vma_of(vmas, page) {
                            Some(v) => (
                                short_name(v.display_name()).to_string(),
                                v.len() / self.page_size,
                            ),
                            None => ("[unmapped]".to_string(), 0),
                        };
                        *per_mapping.entry(name.clone()).or_default() += 1;
                        let st = self.stats.entry(name).or_default();
                        st.size_pages = st.size_pages.max(size);
                        st.pages_written.insert(page);
                        st.page_writes += 1;
                    }
                }
                for (name, pages) in &per_mapping {
                    let st = self.stats.entry(name.clone()).or_default();
                    st.peak_pages_per_s = st.peak_pages_per_s.max(*pages as f64 / seconds);
                }
                let mut top: Vec<_> = per_mapping.into_iter().collect();
                top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let top: Vec<String> = top
                    .iter()
                    .take(TOP_MAPPINGS)
                    .map(|(n, p)| format!("{n} {p}"))
                    .collect();
                writeln!(
                    self.out,
                    "{}  #{:<5} {:>8} pages {:>9.2} MiB {:>9.2} MiB/s  {}",
                    clock(d.time.0),
                    d.seq,
                    d.dirty_pages,
                    mib(d.dirty_pages, self.page_size),
                    mib(d.dirty_pages, self.page_size) / seconds,
                    top.join(", ")
                )?;
            }
            Record::Exec(x) => {
                let pages: u64 = x.ranges.iter().map(|r| r.pages).sum();
                writeln!(
                    self.out,
                    "{}  exec {}: re-attached in {:.1} ms, {} ranges, {} pages",
                    clock(x.time.0),
                    x.exe,
                    x.attach_us as f64 / 1000.0,
                    x.ranges.len(),
                    pages
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
