//! NDJSON: one record per line on stdout, the contract scripts rely on.

use std::io::{self, Write};

use super::{Emitter, Record};
use uffd_dirty::Mapping;

pub struct Ndjson<W: Write> {
    out: W,
    /// One line, built here and written whole: serde_json's many small writes are cheap
    /// into a Vec and not through a `dyn Write`. Kept between records.
    line: Vec<u8>,
}

impl<W: Write> Ndjson<W> {
    pub fn new(out: W) -> Self {
        Ndjson {
            out,
            line: Vec::new(),
        }
    }
}

impl<W: Write> Emitter for Ndjson<W> {
    fn emit(&mut self, record: &Record, _vmas: &[Mapping]) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.out.flush()
    }
}
