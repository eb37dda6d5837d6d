//! The default for people: a header, one line per delta (time, dirty pages, MiB, the mappings
//! that took most writes), and a closing line.

use std::collections::HashMap;
use std::io::{self, Write};

use super::{Emitter, Record};
use crate::maps::Vma;

const TOP_MAPPINGS: usize = 3;

pub struct Human<W: Write> {
    out: W,
    page_size: u64,
}

impl<W: Write> Human<W> {
    pub fn new(out: W) -> Self {
        Human {
            out,
            page_size: 4096,
        }
    }
}

/// The mapping name for `addr`; `vmas` is sorted by start.
fn mapping_of(vmas: &[Vma], addr: u64) -> &str {
    let i = vmas.partition_point(|v| v.start <= addr);
    match i.checked_sub(1).map(|i| &vmas[i]) {
        Some(v) if addr < v.end => short_name(v.display_name()),
        _ => "[unmapped]",
    }
}

fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn clock(t: std::time::SystemTime) -> String {
    let s = humantime::format_rfc3339_millis(t).to_string();
    s.get(11..23).unwrap_or(&s).to_string()
}

fn mib(pages: u64, page_size: u64) -> f64 {
    (pages * page_size) as f64 / (1024.0 * 1024.0)
}

impl<W: Write> Emitter for Human<W> {
    fn emit(&mut self, record: &Record, vmas: &[Vma]) -> io::Result<()> {
        match record {
            Record::Start(s) => {
                self.page_size = s.page_size;
                let pages: u64 = s.ranges.iter().map(|r| r.pages).sum();
                writeln!(
                    self.out,
                    "tracking PID {} with {}: {} ranges, {} pages ({:.1} MiB), every {} ms; attach took {:.1} ms",
                    s.pid,
                    s.method,
                    s.ranges.len(),
                    pages,
                    mib(pages, s.page_size),
                    s.interval_ms,
                    s.attach_us as f64 / 1000.0
                )?;
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
                let mut per_mapping: HashMap<&str, u64> = HashMap::new();
                for r in &d.ranges {
                    *per_mapping.entry(mapping_of(vmas, r.start.0)).or_default() += r.pages;
                }
                let mut top: Vec<_> = per_mapping.into_iter().collect();
                top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                let top: Vec<String> = top
                    .iter()
                    .take(TOP_MAPPINGS)
                    .map(|(n, p)| format!("{n} {p}"))
                    .collect();
                writeln!(
                    self.out,
                    "{}  #{:<5} {:>8} pages {:>9.2} MiB  {}",
                    clock(d.time.0),
                    d.seq,
                    d.dirty_pages,
                    mib(d.dirty_pages, self.page_size),
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
                let reason = serde_json::to_value(e.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                writeln!(
                    self.out,
                    "stopped ({reason}) after {} deltas: {} page writes ({:.2} MiB){}",
                    e.deltas,
                    e.dirty_pages_total,
                    mib(e.dirty_pages_total, self.page_size),
                    e.error
                        .as_ref()
                        .map(|m| format!("; error: {m}"))
                        .unwrap_or_default()
                )?;
            }
        }
        self.out.flush()
    }
}
