//! `uffd-dirty report`: a recorded run (`track --format json`) as a self-contained heatmap of
//! time × address, with the write-rate curve and per-mapping totals; HTML or SVG.
//!
//! The trace is read twice ([`heatmap`] says why): a regular file in place, anything else
//! (stdin, a FIFO) copied to an unnamed temporary file as the first pass reads it, at most
//! [`MAX_SPOOL`] bytes; no line is longer than [`trace::MAX_LINE`]. Memory stays bounded by
//! the number of cells, not the length of the run, and input that is no trace (`/dev/zero`)
//! is an error, not an abort.

pub mod heatmap;
pub mod render;
pub mod trace;

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::ReportArgs;
use crate::exit::{ExitCode, usage};
use crate::output::sink::Destination;
use heatmap::{Heatmap, LIMITS, Layout, Survey};

pub use crate::cli::ReportFormat;

impl ReportFormat {
    /// What `-o` asks for: `--format`, else its extension; HTML on stdout or another fd.
    pub fn choose(path: &Path, format: Option<ReportFormat>) -> Result<ReportFormat> {
        if let Some(f) = format {
            return Ok(f);
        }
        if !matches!(Destination::of(Some(path)), Destination::File(_)) {
            return Ok(ReportFormat::Html);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("html" | "htm") => Ok(ReportFormat::Html),
            Some("svg") => Ok(ReportFormat::Svg),
            _ => Err(usage(format!(
                "cannot tell the report format from `{}`: name the output file .html or .svg, or give --format",
                path.display()
            ))),
        }
    }
}

/// The most `report` spools of a trace it cannot read twice in place (stdin, a FIFO): a
/// trace that long is a file already (a 10-minute run at 100 ms over 4 GiB is 790 MB), and
/// the temporary directory is often memory (tmpfs).
pub const MAX_SPOOL: u64 = 1 << 30;

/// The most spooled: [`MAX_SPOOL`], or `UFFD_DIRTY_MAX_SPOOL` (bytes) for the tests, which
/// would otherwise pipe a GiB through a debug build.
fn max_spool() -> u64 {
    std::env::var("UFFD_DIRTY_MAX_SPOOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_SPOOL)
}

/// Where the trace is read from: a regular file is read twice in place; anything else
/// (stdin, a FIFO, a character device) is copied to an unnamed temporary file while the first
/// pass reads it ([`Tee`]), and the second pass reads the copy.
enum Trace {
    InPlace(File),
    Spooled(Box<dyn Read>),
}

/// Open TRACE (`-`: stdin).
fn open_trace(path: &Path) -> Result<Trace> {
    if path.as_os_str() == "-" {
        return Ok(Trace::Spooled(Box::new(io::stdin())));
    }
    let wrong = |what: &str| {
        Err(usage(format!(
            "trace file {} {what}: give the file `uffd-dirty track --format json` wrote, or - for stdin",
            path.display()
        )))
    };
    match File::open(path) {
        // A directory opens (for reading) and fails only at the first read.
        Ok(f) if f.metadata().is_ok_and(|m| m.is_dir()) => wrong("is a directory"),
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => Ok(Trace::InPlace(f)),
        Ok(f) => Ok(Trace::Spooled(Box::new(f))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => wrong("does not exist"),
        Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
    }
}

/// A temporary file for the spool: unnamed, else (a temporary directory without O_TMPFILE)
/// memory.
fn spool() -> Box<dyn Spool> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(std::env::temp_dir())
    {
        Ok(f) => Box::new(f),
        Err(_) => Box::new(io::Cursor::new(Vec::new())),
    }
}

trait Spool: Read + Write + Seek {}
impl<T: Read + Write + Seek> Spool for T {}

/// Reads `input`, writing everything read to `copy`, up to `max` bytes.
struct Tee<'a> {
    input: Box<dyn Read>,
    copy: &'a mut dyn Spool,
    copied: u64,
    max: u64,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        self.copied += n as u64;
        if self.copied > self.max {
            return Err(io::Error::other(format!(
                "more than {} MiB, the most `report` copies to a temporary file to read twice: save the trace to a file and give its name, which is read in place",
                self.max >> 20
            )));
        }
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Both passes over a trace read in place: the heatmap, and a warning if its last line was
/// cut short.
pub fn analyse(mut input: impl Read + Seek, name: &str) -> Result<(Heatmap, Option<String>)> {
    let mut survey = Survey::default();
    let warning = survey_pass(&mut survey, &mut input, name)?;
    input
        .seek(SeekFrom::Start(0))
        .with_context(|| format!("rewinding {name}"))?;
    Ok((draw_pass(&survey, input, name)?, warning))
}

fn survey_pass(survey: &mut Survey, input: impl Read, name: &str) -> Result<Option<String>> {
    trace::read_records(BufReader::new(input), name, |line, record| {
        survey.add(line, &record, name)
    })
}

fn draw_pass(survey: &Survey, input: impl Read, name: &str) -> Result<Heatmap> {
    let header = survey.header(name)?.clone();
    let layout = Layout::new(survey, &header, LIMITS);
    let mut heatmap = Heatmap::new(header, layout);
    trace::read_records(BufReader::new(input), name, |_, record| {
        heatmap.add(&record);
        Ok(())
    })?;
    Ok(heatmap)
}

/// Both passes over a trace that cannot be read twice: the first reads it while it is
/// copied, so a trace that is no trace fails at its first line, not after a full copy.
fn analyse_spooled(input: Box<dyn Read>, name: &str) -> Result<(Heatmap, Option<String>)> {
    let mut copy = spool();
    let mut survey = Survey::default();
    let warning = {
        let tee = Tee {
            input,
            copy: &mut *copy,
            copied: 0,
            max: max_spool(),
        };
        survey_pass(&mut survey, tee, name)?
    };
    copy.seek(SeekFrom::Start(0))
        .with_context(|| format!("rewinding the copy of {name}"))?;
    Ok((draw_pass(&survey, copy, name)?, warning))
}

pub fn run(args: &ReportArgs) -> Result<ExitCode> {
    let format = ReportFormat::choose(&args.output, args.format)?;
    let name = if args.trace.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        args.trace.display().to_string()
    };
    let (heatmap, warning) = match open_trace(&args.trace)? {
        Trace::InPlace(f) => analyse(f, &name)?,
        Trace::Spooled(input) => analyse_spooled(input, &name)?,
    };
    let mut notes = Vec::new();
    if let Some(w) = warning {
        eprintln!("uffd-dirty: warning: {}", uffd_dirty::printable(&w));
        notes.push(w);
    }
    if heatmap.layout.deltas == 0 {
        eprintln!("uffd-dirty: warning: {name} holds no delta: the report shows an empty heatmap");
    }
    let text = match format {
        ReportFormat::Html => render::html(&heatmap, &notes),
        ReportFormat::Svg => render::svg(&heatmap),
    };
    // No stop request to end a FIFO's wait for its reader: SIGINT kills `report` as usual.
    let mut out = crate::output::sink::open(&Destination::of(Some(&args.output)), None)
        .with_context(|| format!("creating {}", args.output.display()))?
        .writer;
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `report run.ndjson -o - | head`: the reader wanted no more.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        r => r.with_context(|| format!("writing {}", args.output.display()))?,
    }
    Ok(ExitCode::Success)
}
