//! `uffd-dirty check`: print [`probe::Support`](uffd_dirty::probe::Support) for this machine.

use std::io::{self, IsTerminal, Write};

use anyhow::{Context, Result};

use crate::cli::TableFormat;
use crate::exit::ExitCode;
use uffd_dirty::probe::{Status, Support};

/// Print the report for this machine; exit 0 when `track` can work, 69 when it cannot.
pub fn run(output: &crate::cli::TableOutput) -> Result<ExitCode> {
    let report = Support::detect();
    let to_stdout = crate::output::sink::Destination::of(output.output.as_deref()).is_stdout();
    let mut sink = crate::output::sink_for(output.output.as_deref(), None)?.writer;
    // Colour (auto) only for a terminal on stdout, never into a file.
    let colour = output
        .look
        .color
        .enabled(to_stdout && io::stdout().is_terminal());
    let printed = print(&report, output.format, &mut sink, colour);
    if output.format == TableFormat::Human && !output.look.quiet {
        let verdict = if report.track_possible {
            "track can work on this machine"
        } else {
            "track cannot work on this machine: see the `missing` items"
        };
        eprintln!("uffd-dirty check: {verdict}");
    }
    match printed.and_then(|()| sink.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.context("writing the report to stdout")?,
    }
    Ok(if report.track_possible {
        ExitCode::Success
    } else {
        ExitCode::KernelUnsupported
    })
}

/// The status word, and its ANSI SGR colour on a terminal.
fn status_word(status: Status) -> (&'static str, &'static str) {
    match status {
        Status::Ok => ("ok", "32"),
        Status::Missing => ("missing", "31"),
        // A status added later is shown as a note until this learns its word.
        _ => ("note", "33"),
    }
}

fn print(
    report: &Support,
    format: TableFormat,
    out: &mut dyn Write,
    colour: bool,
) -> io::Result<()> {
    match format {
        TableFormat::Json => {
            serde_json::to_writer(&mut *out, report)?;
            writeln!(out)?;
        }
        TableFormat::Human => {
            let name_width = report.items.iter().map(|i| i.name.len()).max().unwrap_or(0);
            for item in &report.items {
                let (word, sgr) = status_word(item.status);
                let status = if colour {
                    format!("\x1b[{sgr}m{word:<7}\x1b[0m")
                } else {
                    format!("{word:<7}")
                };
                write!(out, "{status}  {:<name_width$}  {}", item.name, item.found)?;
                match (&item.meaning, &item.fix) {
                    (Some(m), Some(f)) => write!(out, " — {m}; fix: {f}")?,
                    (Some(m), None) => write!(out, " — {m}")?,
                    _ => {}
                }
                writeln!(out)?;
            }
        }
    }
    out.flush()
}
