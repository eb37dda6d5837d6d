//! `--format bitmap`: per delta, one line per tracked range, `SEQ START END HEX`, all-zero
//! ranges included and nothing else on stdout. Bit i is the page at `START + i * page_size`,
//! least significant bit first within each byte; bytes in address order, two lowercase hex
//! digits each. Example: pages 0, 1 and 9 of a 16-page range dirty → bytes 0x03 0x02 → `0302`.

use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use super::{Addr, Emitter, Record};
use uffd_dirty::{Mapping, Span};

/// One tracked range's bitmap, as the `"bitmap"` field of a JSON delta carries it.
#[derive(Debug, Clone, Serialize)]
pub struct RangeBitmap {
    pub start: Addr,
    pub end: Addr,
    pub bits: String,
}

/// The hex bitmap of `span`, with the pages of `dirty` (sorted runs) set.
pub fn encode(span: Span, dirty: &[Span], page_size: u64) -> String {
    let pages = span.len() / page_size;
    let mut bytes = vec![0u8; pages.div_ceil(8) as usize];
    let first = dirty.partition_point(|r| r.end <= span.start);
    for run in dirty[first..].iter().take_while(|r| r.start < span.end) {
        if let Some(part) = run.intersect(&span) {
            for page in (part.start - span.start) / page_size..(part.end - span.start) / page_size {
                bytes[(page / 8) as usize] |= 1 << (page % 8);
            }
        }
    }
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Bitmaps of every tracked range of a delta.
pub fn bitmaps(tracked: &[Span], dirty: &[Span], page_size: u64) -> Vec<RangeBitmap> {
    tracked
        .iter()
        .map(|&s| RangeBitmap {
            start: Addr(s.start),
            end: Addr(s.end),
            bits: encode(s, dirty, page_size),
        })
        .collect()
}

pub struct Bitmap<W: Write> {
    out: W,
    page_size: u64,
    /// Every range tracked at some delta, for `--summary`'s last lines.
    ever_tracked: uffd_dirty::SpanSet,
}

impl<W: Write> Bitmap<W> {
    pub fn new(out: W) -> Self {
        Bitmap {
            out,
            page_size: crate::os::page_size(),
            ever_tracked: uffd_dirty::SpanSet::default(),
        }
    }
}

impl<W: Write> Emitter for Bitmap<W> {
    fn emit(&mut self, record: &Record, _vmas: &[Mapping]) -> io::Result<()> {
        let d = match record {
            Record::Delta(d) => d,
            // `--summary`: every page written since the attach, as `written START END HEX`
            // lines over every range tracked at some delta.
            Record::End(end) => {
                let Some(written) = &end.written else {
                    return Ok(());
                };
                let written: Vec<Span> = written
                    .iter()
                    .map(|r| Span::new(r.start.0, r.end.0))
                    .collect();
                for &span in self.ever_tracked.iter() {
                    writeln!(
                        self.out,
                        "written {:#x} {:#x} {}",
                        span.start,
                        span.end,
                        encode(span, &written, self.page_size)
                    )?;
                }
                return self.out.flush();
            }
            _ => return Ok(()),
        };
        let dirty: Vec<Span> = d
            .ranges
            .iter()
            .map(|r| Span::new(r.start.0, r.end.0))
            .collect();
        self.ever_tracked
            .extend_from(&d.tracked.iter().copied().collect::<uffd_dirty::SpanSet>());
        for &span in &d.tracked {
            writeln!(
                self.out,
                "{} {:#x} {:#x} {}",
                d.seq,
                span.start,
                span.end,
                encode(span, &dirty, self.page_size)
            )?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode a bitmap back into the dirty runs of `span` (the inverse of [`encode`]).
    fn decode(span: Span, hex: &str, page_size: u64) -> Vec<Span> {
        let mut out: Vec<Span> = Vec::new();
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let byte = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
            for bit in (0..8).filter(|bit| byte & (1 << bit) != 0) {
                let start = span.start + (i as u64 * 8 + bit) * page_size;
                out.push(Span::new(start, start + page_size));
            }
        }
        uffd_dirty::SpanSet::from(out).into_vec()
    }

    #[test]
    fn encodes_least_significant_bit_first() {
        let span = Span::new(0x10000, 0x10000 + 16 * 4096);
        let dirty = [
            Span::new(0x10000, 0x12000),
            Span::new(0x10000 + 9 * 4096, 0x10000 + 10 * 4096),
        ];
        assert_eq!(encode(span, &dirty, 4096), "0302");
        assert_eq!(decode(span, "0302", 4096), dirty.to_vec());
        // A partial last byte, and runs outside the span ignored.
        let span = Span::new(0x20000, 0x20000 + 3 * 4096);
        assert_eq!(
            encode(
                span,
                &[Span::new(0x0, 0x21000), Span::new(0x22000, 0x30000)],
                4096
            ),
            "05"
        );
        assert_eq!(encode(span, &[], 4096), "00");
    }
}
