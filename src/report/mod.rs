//! `uffd-dirty report`: a recorded run (`track --format json`) as a self-contained heatmap of
//! time × address, with the write-rate curve and per-mapping totals; HTML or SVG.
//!
//! The trace is read twice ([`heatmap`] says why): a file directly, stdin through an unnamed
//! temporary file, so memory stays bounded by the number of cells, not the length of the run.

pub mod heatmap;
pub mod render;
pub mod trace;

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::ReportArgs;
use crate::exit::{ExitCode, usage};
use heatmap::{Heatmap, LIMITS, Layout, Survey};

/// What `-o` asks for, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Html,
    Svg,
}

impl ReportFormat {
    pub fn for_path(path: &Path) -> Result<ReportFormat> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("html" | "htm") => Ok(ReportFormat::Html),
            Some("svg") => Ok(ReportFormat::Svg),
            _ => Err(usage(format!(
                "cannot tell the report format from `{}`: name the output file .html or .svg",
                path.display()
            ))),
        }
    }
}

/// Anything the trace can be read from twice.
trait Rewindable: Read + Seek {}
impl<T: Read + Seek> Rewindable for T {}

/// Open TRACE (`-`: stdin, copied to an unnamed temporary file so it can be read twice).
fn open_trace(path: &Path) -> Result<Box<dyn Rewindable>> {
    if path.as_os_str() == "-" {
        return spool_stdin().context("reading the trace from stdin");
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
        Ok(f) => Ok(Box::new(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => wrong("does not exist"),
        Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
    }
}

fn spool_stdin() -> io::Result<Box<dyn Rewindable>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut stdin = io::stdin().lock();
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(std::env::temp_dir())
    {
        Ok(mut f) => {
            io::copy(&mut stdin, &mut f)?;
            f.seek(SeekFrom::Start(0))?;
            Ok(Box::new(f))
        }
        // A temporary directory without O_TMPFILE support: hold the trace in memory.
        Err(_) => {
            let mut buf = Vec::new();
            stdin.read_to_end(&mut buf)?;
            Ok(Box::new(io::Cursor::new(buf)))
        }
    }
}

/// Both passes over a trace: the heatmap, and a warning if its last line was cut short.
pub fn analyse(mut input: impl Read + Seek, name: &str) -> Result<(Heatmap, Option<String>)> {
    let mut survey = Survey::default();
    let warning = trace::read_records(BufReader::new(&mut input), name, |line, record| {
        survey.add(line, &record, name)
    })?;
    let header = survey.header(name)?.clone();
    let layout = Layout::new(&survey, &header, LIMITS);
    let mut heatmap = Heatmap::new(header, layout);
    input
        .seek(SeekFrom::Start(0))
        .with_context(|| format!("rewinding {name}"))?;
    trace::read_records(BufReader::new(&mut input), name, |_, record| {
        heatmap.add(&record);
        Ok(())
    })?;
    Ok((heatmap, warning))
}

pub fn run(args: &ReportArgs) -> Result<ExitCode> {
    let format = ReportFormat::for_path(&args.output)?;
    let name = if args.trace.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        args.trace.display().to_string()
    };
    let input = open_trace(&args.trace)?;
    let (heatmap, warning) = analyse(input, &name)?;
    let mut notes = Vec::new();
    if let Some(w) = warning {
        eprintln!("uffd-dirty: warning: {}", crate::maps::visible(&w));
        notes.push(w);
    }
    if heatmap.layout.deltas == 0 {
        eprintln!("uffd-dirty: warning: {name} holds no delta: the report shows an empty heatmap");
    }
    let text = match format {
        ReportFormat::Html => render::html(&heatmap, &notes),
        ReportFormat::Svg => render::svg(&heatmap),
    };
    let mut out = crate::output::open_sink(Some(&args.output))
        .with_context(|| format!("creating {}", args.output.display()))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {}", args.output.display()))?;
    Ok(ExitCode::Success)
}
