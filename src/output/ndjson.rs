//! NDJSON: one record per line on stdout, the contract scripts rely on.

use std::io::{self, Write};

use super::{Emitter, Record};
use crate::maps::Vma;

pub struct Ndjson<W: Write> {
    out: W,
}

impl<W: Write> Ndjson<W> {
    pub fn new(out: W) -> Self {
        Ndjson { out }
    }
}

impl<W: Write> Emitter for Ndjson<W> {
    fn emit(&mut self, record: &Record, _vmas: &[Vma]) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}
