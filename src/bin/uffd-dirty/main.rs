//! `uffd-dirty`: the command line on top of the `uffd_dirty` library. `main` parses the
//! arguments, runs the command and maps the result to an exit code; each command lives in
//! its own module: `track` (with `output` formats and the live `view`), `compare`, `bench`,
//! `check`, `report`, and the hidden `fixtures` (`writer`, `scenario`, `bench-target`) that
//! tests and benchmarks run as targets.

#![deny(clippy::undocumented_unsafe_blocks)]

mod bench;
mod check;
mod cli;
mod compare;
mod exit;
#[cfg(test)]
mod generated;
mod os;
mod output;
mod progress;
mod report;
mod snapshot;
mod stop;
// The kernel ABI and raw calls, one source with the library's (compiled into each), for the
// fixtures (a program with its own userfaultfd, an anonymous region to write) and the
// benchmark's bare-ioctl baseline only: the commands go through the library's public API
// and `os`. (Of what sys
// defines and re-exports for the library, the binary uses a part.)
mod fixtures;
#[allow(dead_code, unused_imports)]
#[path = "../../sys/mod.rs"]
mod sys;
mod track;
mod view;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use cli::{Cli, Command, DemoArgs, TargetArgs, TrackArgs};
use exit::ExitCode;
use stop::Stop;
use uffd_dirty::{Arming, Method};

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => match cli::one_line_error(&err) {
            Some(line) => {
                eprintln!("uffd-dirty: {line}");
                return std::process::ExitCode::from(u8::from(ExitCode::UsageError));
            }
            None => err.exit(),
        },
    };
    match run(cli) {
        Ok(code) => std::process::ExitCode::from(u8::from(code)),
        Err(err) => {
            // Names the target chose may be in the chain: nothing in it acts on the terminal.
            eprintln!("uffd-dirty: {}", uffd_dirty::printable(&format!("{err:#}")));
            std::process::ExitCode::from(u8::from(exit::code_for(&err)))
        }
    }
}

/// The stop request, made by SIGINT/SIGTERM; a second SIGINT exits at once with 130. With
/// `view` (the terminal saved by [`view::open_terminal`]), that exit gives the terminal back
/// first: `q` makes the same request, so any signal after it takes this path.
fn stop_on_signals(view: bool) -> anyhow::Result<Arc<Stop>> {
    let stop = Arc::new(Stop::new().context("creating the stop pipe")?);
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Order matters: the conditional exit must see the flag before this signal sets it.
        if view {
            view::exit_on_second_signal(sig, stop.flag())?;
        } else {
            signal_hook::flag::register_conditional_shutdown(sig, 130, stop.flag())?;
        }
        stop.on_signal(sig)?;
    }
    Ok(stop)
}

fn track(args: &TrackArgs) -> anyhow::Result<ExitCode> {
    let to_stdout = output::sink::Destination::of(args.output.output.as_deref()).is_stdout();
    // Before anything else: a --format the view would ignore, and --view without a terminal,
    // are usage errors.
    if args.view && to_stdout && args.output.format != cli::Format::Human {
        let format = args.output.format.to_possible_value().expect("not skipped");
        return Err(exit::usage(format!(
            "--view draws on the terminal, so --format {} has nowhere to go: add --output FILE to record while viewing",
            format.get_name()
        )));
    }
    let tty = args.view.then(view::open_terminal).transpose()?;
    let stop = stop_on_signals(args.view)?;
    let look = args.output.look;
    let sink = match output::sink_for(args.output.output.as_deref(), Some(&stop)) {
        Err(e) if e.chain().any(output::sink::is_stopped) => {
            eprintln!("uffd-dirty: {e:#}: nothing was tracked");
            return Ok(ExitCode::Success);
        }
        r => r?,
    };
    let (emitter, watch): (Box<dyn output::Emitter>, _) = match tty {
        Some(tty) => {
            // The view is the human output; a file beside it gets records for scripts.
            let file = (!to_stdout).then(|| {
                let format = match args.output.format {
                    cli::Format::Human => cli::Format::Json,
                    f => f,
                };
                track::emitter_for(format, sink.writer, false, look.quiet)
            });
            // Without a file, stdout is the view's terminal, not a reader to watch.
            let watch = if file.is_some() { sink.watch } else { None };
            (
                // The view is on a terminal: auto colours it unless NO_COLOR is set.
                Box::new(view::View::new(
                    tty,
                    Arc::clone(&stop),
                    file,
                    look.color.enabled(true),
                )),
                watch,
            )
        }
        None => (
            track::emitter_for(
                args.output.format,
                sink.writer,
                look.color
                    .enabled(to_stdout && std::io::IsTerminal::is_terminal(&std::io::stdout())),
                look.quiet,
            ),
            sink.watch,
        ),
    };
    let outcome = track::run(args, &stop, emitter, watch)?;
    Ok(outcome.exit)
}

fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("locating the uffd-dirty executable")?;
    // The writer runs for the demo's duration and the tracking ends with it: its log gets
    // written, and its exit status is the demo's.
    let mut writer: Vec<std::ffi::OsString> = vec![
        exe.into(),
        "writer".into(),
        "--quiet".into(),
        "--pages=16384".into(),
        "--bursts=0".into(),
        "--burst-pages=96".into(),
        "--gap=10ms".into(),
        "--pattern=wave".into(),
        format!("--run-for={}ms", args.duration.as_millis()).into(),
    ];
    if let Some(log) = &args.log {
        writer.push("--log".into());
        writer.push(log.into());
    }
    if !args.output.look.quiet {
        eprintln!(
            "uffd-dirty demo: tracking a writer that sweeps a 64 MiB buffer, for {}",
            output::words::duration(args.duration)
        );
    }
    track(&TrackArgs {
        target: TargetArgs {
            pid: None,
            interval: args.interval,
            ranges: Vec::new(),
            mappings: Vec::new(),
            count: None,
            duration: None,
            command: writer,
        },
        method: Method::PagemapScan,
        output: args.output.clone(),
        json_bitmap: false,
        arm: Arming::Auto,
        no_follow_exec: false,
        trigger: None,
        summary: false,
        no_freeze: false,
        view: false,
    })
}

/// Run a parsed command line; `main` maps the result to the process exit code.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Track(args) => track(&args),
        Command::Demo(args) => demo(&args),
        Command::Bench(args) => bench::run(&args),
        Command::BenchTarget(args) => fixtures::bench_target::run_target(&args),
        Command::PauseTarget(args) => {
            fixtures::pause_target::run(&args)?;
            Ok(ExitCode::Success)
        }
        Command::Compare(args) => compare::run(&args, &*stop_on_signals(false)?),
        Command::Check(args) => check::run(&args.output),
        Command::Report(args) => report::run(&args),
        Command::Snapshot(args) => snapshot::run(&args, &*stop_on_signals(false)?),
        Command::AttachHelper(args) => {
            // SAFETY: `attach-helper` is the hidden command the library starts this binary
            // with, its socket on fd 3 and the target's pidfd on fd 4; nothing else here
            // owns those fds.
            unsafe { uffd_dirty::serve_attach_helper(args.pid, args.launched) }?;
            Ok(ExitCode::Success)
        }
        Command::Scenario(args) => {
            fixtures::scenario::run_scenario(&args)?;
            Ok(ExitCode::Success)
        }
        Command::Writer(args) => {
            let code = fixtures::writer::run_writer(&args)?;
            Ok(if code == 0 {
                ExitCode::Success
            } else {
                ExitCode::Command(code as u8)
            })
        }
    }
}
