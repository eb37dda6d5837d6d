//! Command-line definitions. The doc comments here are the single source for `--help` and
//! the man page.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum, ValueHint};

use uffd_dirty::{MappingKind, Selector, Span};

#[derive(Debug, Parser)]
#[command(
    name = "uffd-dirty",
    version,
    about = "Track which pages of a process's memory are written, and when",
    long_about = "Track which pages of a running process's memory are written, and when.\n\n\
uffd-dirty attaches to a process it does not control (or launches one), arms its writable memory \
with userfaultfd asynchronous write-protection, and every interval harvests the pages written \
since the previous harvest with the PAGEMAP_SCAN ioctl, re-protecting them atomically. The target \
is not recompiled, preloaded or restarted. Needs Linux 6.7 or newer."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Track the dirty pages of a running process (--pid) or of a command it launches.
    Track(TrackArgs),
    /// Copy a running process's memory in rounds, as a live migration's pre-copy does, into
    /// a snapshot directory; then verify, materialize or describe it.
    ///
    /// Round 0 copies every tracked page that holds data (memory never touched is recorded as
    /// such, not read). Each later round copies the pages written since the round before, read
    /// right after the harvest that found them, until a round finds at most
    /// --until-dirty-below pages (or --max-rounds, or the dirty set stops shrinking). The final
    /// round stops every thread of the target, harvests and copies once more and lets it go
    /// (or leaves it stopped): the snapshot then holds exactly the target's memory at that
    /// instant, and the time it was stopped is printed as the downtime. The directory format
    /// is docs/snapshot-format.md. Exit status: 0 converged (or the end of --trigger stdin's
    /// input), 3 did not converge (the final round was still taken), 130 stopped by a signal
    /// (no final round; the rounds taken stay readable), 1 other errors.
    Snapshot(SnapshotArgs),
    /// Run uffd-wp and soft-dirty tracking on the same target at once, and compare them.
    Compare(CompareArgs),
    /// Measure the harvest cost of every available method on the same workload (Markdown table).
    Bench(crate::bench::BenchArgs),
    /// The benchmark's target process (used by `bench`).
    #[command(hide = true)]
    BenchTarget(crate::fixtures::bench_target::BenchTargetArgs),
    /// The pauses benchmark's target process (used by `bench --sections pauses`).
    #[command(hide = true)]
    PauseTarget(crate::fixtures::pause_target::PauseTargetArgs),
    /// Launch a small built-in writer and track it live: see what the tool does in seconds.
    Demo(DemoArgs),
    /// Report what this machine's kernel offers for dirty-page tracking, and what to fix.
    Check(CheckArgs),
    /// Render a recorded run (the output of `track --format json`) as a self-contained
    /// heatmap of time × address, with the write-rate curve and per-mapping totals.
    ///
    /// One column per delta (or per group of deltas on long runs: at most 1000 columns), one
    /// row per group of pages (at most 400 rows), over the tracked ranges only: stacked by
    /// address, low addresses at the top, with the gaps between them removed, one band per
    /// mapping labelled with its name. A cell's shade is the share of its pages written per
    /// delta (white: none, darkest: all; averaged over a column's deltas); hatched grey cells
    /// were not tracked then (a mapping not yet added, or already removed). Below, the write
    /// rate in MiB/s on the same time axis. The HTML report adds the table per mapping (size,
    /// pages written, page-writes, peak MiB/s) and a hover tooltip.
    ///
    /// The report needs no network: no external fonts, scripts or styles, and the picture needs
    /// no JavaScript. The trace is read twice (stdin through an unnamed temporary file), so
    /// memory stays bounded however long the run was.
    Report(ReportArgs),
    /// A workload that writes pages in bursts and logs exactly which (used by the tests).
    #[command(hide = true)]
    Writer(crate::fixtures::writer::WriterArgs),
    /// Ground-truth scenarios of a changing address space (used by the tests).
    #[command(hide = true)]
    Scenario(crate::fixtures::scenario::ScenarioArgs),
    /// The attach helper (started by `track` itself: it borrows the target's thread).
    #[command(hide = true)]
    AttachHelper(HelperArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line per delta for people.
    Human,
    /// NDJSON: one JSON object per line, for scripts.
    Json,
    /// `SEQ START END HEX` per tracked range per delta: the dirty-page bitmap, bit i = page
    /// START + i*page_size, least significant bit first in each byte.
    Bitmap,
}

/// The formats of the commands that print a table or a report, not deltas (`check`,
/// `compare`): `bitmap` is a per-delta format, so it is not offered there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    /// Aligned text for people.
    Human,
    /// NDJSON: one JSON object per line, for scripts.
    Json,
}

/// When to colour (and embolden) output for people; NDJSON and bitmaps are never coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    #[default]
    Auto,
    /// Always, even into a pipe or a file, and whatever NO_COLOR says.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour output that goes to a terminal when `to_terminal` (`auto`).
    pub fn enabled(self, to_terminal: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => to_terminal && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

/// How chatty and how colourful the output for people is: shared by every command that
/// prints for people.
#[derive(Debug, Clone, Copy, Args)]
pub struct Look {
    /// Print less for people: no per-mapping table at the end of `track`, no list of skipped
    /// mappings, no closing note under `compare`'s total row, and no notes on stderr (a forked
    /// child, a terminated command, the demo's introduction, `check`'s verdict). Errors, and
    /// warnings about writes that go unreported, are always printed.
    #[arg(short, long)]
    pub quiet: bool,

    /// When to colour output for people: auto (on a terminal, unless NO_COLOR is set),
    /// always (even into a pipe), never.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

pub use uffd_dirty::{Arming, Method};

/// What makes a harvest, with `--trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Trigger {
    /// A line read on stdin.
    Stdin,
    /// A SIGUSR1.
    Sigusr1,
}

#[derive(Debug, Clone, Args)]
pub struct Output {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Write the output to FILE instead of stdout. A new file is created 0600; an existing
    /// one is truncated (and, if yours, made private: group and other permissions removed). As
    /// the kernel's fs.protected_* rules do, whatever the sysctls say: in a sticky directory
    /// others can write (/tmp), a file owned neither by you nor by the directory's owner is
    /// refused, and a symbolic link there is not followed unless it is yours or the
    /// directory owner's; FILE itself is never a symbolic link. A FIFO waits for its reader
    /// (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and
    /// /proc/self/fd/N write to that fd of ours.
    #[arg(short, long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub look: Look,
}

/// `--format`, `--output` and the look of `check` and `compare`: as [`Output`], without the
/// per-delta `bitmap` format.
#[derive(Debug, Clone, Args)]
pub struct TableOutput {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = TableFormat::Human)]
    pub format: TableFormat,

    /// Write the output to FILE instead of stdout, by the rules of `track --output`.
    #[arg(short, long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub look: Look,
}

/// What to follow and for how long: shared by `track` and `compare`.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Process to attach to. It is never signalled, and it is left exactly as it was on exit.
    #[arg(
        short,
        long,
        value_name = "PID",
        value_hint = ValueHint::Other,
        allow_negative_numbers = true,
        required_unless_present = "command",
        conflicts_with = "command"
    )]
    pub pid: Option<i32>,

    /// Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y.
    #[arg(short, long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval, allow_hyphen_values = true, value_hint = ValueHint::Other)]
    pub interval: Duration,

    /// Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned).
    /// Repeatable. Default: every mapping that can ever be written (see the README, "What is
    /// tracked").
    #[arg(short, long = "range", value_name = "START-END", value_parser = parse_range, value_hint = ValueHint::Other)]
    pub ranges: Vec<Span>,

    /// Follow only mappings this picks: a name as /proc/PID/maps shows it ([heap],
    /// /usr/lib/libc.so.6), a glob over the name or its last component (libfoo*, /dev/shm/*;
    /// the wildcards are * and ?), or kind:KIND (anon, heap, stack, file, shmem, hugetlb, or
    /// shared: any MAP_SHARED mapping, files mapped shared included).
    /// Repeatable: a mapping any of them picks is followed (within --range, if given).
    #[arg(long = "mapping", value_name = "SELECTOR", value_parser = parse_selector, value_hint = ValueHint::Other)]
    pub mappings: Vec<Selector>,

    /// Stop after N intervals (at least 1).
    #[arg(short = 'n', long, value_name = "N", value_parser = parse_count, allow_hyphen_values = true, value_hint = ValueHint::Other)]
    pub count: Option<u64>,

    /// Stop after this long (e.g. 10s). Longer than 100 years: until stopped.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_run_time, allow_hyphen_values = true, value_hint = ValueHint::Other)]
    pub duration: Option<Duration>,

    /// Command to launch and follow from its first instruction (after `--`).
    #[arg(last = true, value_name = "CMD", value_hint = ValueHint::CommandWithArguments)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct TrackArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// How dirty pages are found.
    #[arg(short, long, value_enum, default_value_t = Method::PagemapScan)]
    pub method: Method,

    #[command(flatten)]
    pub output: Output,

    /// Add each delta's dirty-page bitmap per tracked range to the JSON delta (`"bitmap"`).
    #[arg(long)]
    pub json_bitmap: bool,

    /// Show a live picture of the tracked memory on the terminal instead of a stream. Each
    /// mapping (name and size in the left margin) is a block of rows of cells; every cell
    /// covers the same number of pages (in the header), so a mapping's rows are proportional
    /// to its size, with at least one row per mapping (a huge sparse reservation takes most
    /// of the screen: zoom into the others). A cell is brightest when written in the newest
    /// delta, then fades over 16 deltas (colours, or ░▒▓█ with NO_COLOR). Keys: j/k or arrows
    /// select a mapping, Enter/z zooms into it, Esc/u zooms out, ? explains, q or Ctrl-C stops
    /// (as SIGINT does). With --output FILE the records also go to FILE, as NDJSON (or
    /// --format bitmap). Needs a terminal on stdout.
    #[arg(long)]
    pub view: bool,

    /// Harvest when told instead of every --interval: stdin (one harvest per line read;
    /// tracking ends, reason input-closed, at the end of the input), or sigusr1 (one harvest
    /// per SIGUSR1). For a migration loop that harvests when it has sent the last round.
    #[arg(long, value_enum, value_name = "WHEN", conflicts_with = "view")]
    pub trigger: Option<Trigger>,

    /// The end record also carries `written`: every page written since the attach, as ranges
    /// (the union of all deltas: "dirty since the checkpoint"). With --format bitmap, last
    /// lines `written START END HEX` mark those pages over every range tracked at some delta.
    #[arg(long)]
    pub summary: bool,

    /// With --method soft-dirty, do not stop the target while its bits are read and cleared:
    /// no pause for it, but a write between the read and the clear is lost.
    #[arg(long)]
    pub no_freeze: bool,

    /// End tracking (reason `exec`) when the target calls execve, instead of attaching to the
    /// new program and going on.
    #[arg(long)]
    pub no_follow_exec: bool,

    /// How to apply the initial write-protection (auto: PAGEMAP_SCAN where the kernel has the
    /// PMD-hole fix, else UFFDIO_WRITEPROTECT). For testing both paths on one kernel.
    #[arg(long, value_enum, default_value_t = Arming::Auto, hide = true)]
    pub arm: Arming,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: Option<SnapshotCommand>,

    #[command(flatten)]
    pub take: SnapshotTakeArgs,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Compare the last round with the memory of the target, which must be stopped (take the
    /// snapshot with --leave-stopped): every page, with the address and mapping of any that
    /// differs. Exit status 1 if one does.
    Verify {
        /// The snapshot directory.
        #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
        dir: PathBuf,
        /// The target, stopped.
        #[arg(short, long, value_name = "PID", value_hint = ValueHint::Other)]
        pid: i32,
    },
    /// Write the memory as of a round to a directory: a file per mapping (its exact size,
    /// pages never written as holes, in mem/START-END.bin) and mappings.json listing them
    /// with their addresses, permissions, offsets, kinds and names.
    Materialize {
        /// The snapshot directory.
        #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
        dir: PathBuf,
        /// The round (default: the last complete one).
        #[arg(long, value_name = "N")]
        round: Option<u32>,
        /// A new or empty directory to write to.
        #[arg(long, value_name = "IMAGE_DIR", value_hint = ValueHint::DirPath)]
        out: PathBuf,
    },
    /// Describe a snapshot: its rounds, their sizes, how it ended, rounds cut short, and
    /// whether every file matches its checksum (exit status 1 if not).
    Info {
        /// The snapshot directory.
        #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
        dir: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = TableFormat::Human)]
        format: TableFormat,
    },
}

/// What the final round does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FinalRound {
    /// Stop every thread of the target, harvest and copy once more, let it go.
    Stop,
    /// No final round: the snapshot ends with its last pre-copy round, taken while the target
    /// ran (not a consistent image).
    None,
}

/// A dirty-set size: pages, or bytes with a unit (4MiB, 512K).
#[derive(Debug, Clone, Copy)]
pub enum DirtySize {
    Pages(u64),
    Bytes(u64),
}

impl DirtySize {
    /// In pages of `page_size` bytes (a size in bytes rounded down).
    pub fn pages(self, page_size: u64) -> u64 {
        match self {
            DirtySize::Pages(p) => p,
            DirtySize::Bytes(b) => b / page_size,
        }
    }
}

#[derive(Debug, Args)]
pub struct SnapshotTakeArgs {
    /// The process to copy. Left running as it was (unless --leave-stopped).
    #[arg(short, long, value_name = "PID", value_hint = ValueHint::Other)]
    pub pid: Option<i32>,

    /// A new or empty directory for the snapshot (created 0700: it holds the target's memory).
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub dir: Option<PathBuf>,

    /// Time from one pre-copy round's harvest to the next (a round that copies for longer is
    /// followed at once).
    #[arg(short, long, value_name = "DURATION", default_value = "200ms", value_parser = parse_interval, value_hint = ValueHint::Other)]
    pub interval: Duration,

    /// Take a pre-copy round when told instead of every --interval: stdin (a round per line
    /// read; the end of the input goes on to the final round), or sigusr1 (a round per
    /// SIGUSR1). The caller then judges whether the rounds converge: they end at the
    /// threshold, --max-rounds or the end of the input, never as not converging.
    #[arg(long, value_enum, value_name = "WHEN")]
    pub trigger: Option<Trigger>,

    /// Converged when a pre-copy round finds at most this many pages written: a count of
    /// pages, or a size (512K, 4MiB, 1G).
    #[arg(long, value_name = "PAGES|SIZE", default_value = "256", value_parser = parse_dirty_size)]
    pub until_dirty_below: DirtySize,

    /// At most this many pre-copy rounds after round 0 (then the final round, exit 3).
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rounds: u32,

    /// What the final round does.
    #[arg(long = "final", value_enum, value_name = "WHAT", default_value_t = FinalRound::Stop)]
    pub r#final: FinalRound,

    /// Leave the target stopped (SIGSTOP) at the end, for `snapshot verify` or a migrator
    /// that kills it once the copy is safe. `kill -CONT PID` resumes it.
    #[arg(long)]
    pub leave_stopped: bool,

    /// Copy only START-END (as track --range). Repeatable.
    #[arg(short, long = "range", value_name = "START-END", value_parser = parse_range, value_hint = ValueHint::Other)]
    pub ranges: Vec<Span>,

    /// Copy only the mappings this picks (as track --mapping). Repeatable.
    #[arg(long = "mapping", value_name = "SELECTOR", value_parser = parse_selector, value_hint = ValueHint::Other)]
    pub mappings: Vec<Selector>,

    /// Output format of the per-round lines: a table, or NDJSON (`round` records, then `end`).
    #[arg(short, long, value_enum, default_value_t = TableFormat::Human)]
    pub format: TableFormat,

    /// No introduction on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_dirty_size(s: &str) -> Result<DirtySize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n.parse().map_err(|_| {
        format!("{s:?} is not a size: give a page count (256) or a size (512K, 4MiB, 1G)")
    })?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" => return Ok(DirtySize::Pages(n)),
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit in {s:?}: give a page count (256) or a size in K, M or G (4MiB)"
            ));
        }
    };
    n.checked_mul(scale)
        .map(DirtySize::Bytes)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub output: TableOutput,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Time between harvests, from 1ms to 100y.
    #[arg(short, long, value_name = "DURATION", default_value = "250ms", value_parser = parse_interval, allow_hyphen_values = true, value_hint = ValueHint::Other)]
    pub interval: Duration,

    /// How long the demo runs. Longer than 100 years: until stopped.
    #[arg(short, long, value_name = "DURATION", default_value = "5s", value_parser = parse_run_time, allow_hyphen_values = true, value_hint = ValueHint::Other)]
    pub duration: Duration,

    /// Also keep the writer's exact log of written pages here.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub output: TableOutput,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The trace: a file written by `uffd-dirty track --format json`, or - for stdin (copied to
    /// a temporary file to be read twice: at most 1 GiB). A last line cut short (the tracker
    /// was killed) is ignored with a warning; a line longer than 64 MiB is an error.
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,

    /// Where to write the report, by the rules of `track --output` (a new file is created
    /// 0600; - or /dev/stdout: stdout). The extension picks the format: .html (the picture,
    /// the per-mapping table and a hover tooltip) or .svg (the picture alone); HTML on stdout.
    #[arg(short, long, value_name = "FILE", default_value = "report.html")]
    pub output: PathBuf,

    /// The report's format, whatever -o's name says.
    #[arg(short, long, value_enum, value_name = "FORMAT")]
    pub format: Option<ReportFormat>,
}

/// What `report` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// The picture, the per-mapping table and a hover tooltip.
    Html,
    /// The picture alone.
    Svg,
}

/// The longest time any option takes: a century (humantime's `100y`). Deadlines are
/// `Instant + Duration`, which panics past the monotonic clock's range (values such as
/// `584542046090y` parse, since humantime only needs them to fit a u64 of seconds), and
/// `interval_ms` stays far below 2^53, exact in every JSON reader.
pub const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// Parse a time between 1ms and [`MAX_DURATION`], such as `100ms` or `1s`: intervals, and
/// every other duration that is waited for as given.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_positive(s)? {
        Some(d) if d <= MAX_DURATION => Ok(d),
        _ => Err("longer than 100 years: give at most 100y (examples: 100ms, 1s, 2m)".into()),
    }
}

/// Parse how long to run (`--duration`): as [`parse_interval`], except that anything longer
/// than [`MAX_DURATION`] means "until stopped" and is saturated to it, not refused.
pub fn parse_run_time(s: &str) -> Result<Duration, String> {
    Ok(parse_positive(s)?.map_or(MAX_DURATION, |d| d.min(MAX_DURATION)))
}

/// A duration of at least 1ms; `None` when it is too large for humantime (beyond u64 seconds).
fn parse_positive(s: &str) -> Result<Option<Duration>, String> {
    if s.trim_start().starts_with('-') {
        return Err("a duration cannot be negative: give at least 1ms".into());
    }
    let d = match humantime::parse_duration(s) {
        Ok(d) => d,
        Err(humantime::DurationError::NumberOverflow) => return Ok(None),
        Err(e) => return Err(format!("{e} (examples: 100ms, 1s, 2m)")),
    };
    if d < Duration::from_millis(1) {
        return Err("shorter than 1ms: give at least 1ms".into());
    }
    Ok(Some(d))
}

/// The one line `main` prints for a bad option value (`uffd-dirty: invalid value 'X' for
/// '--interval <DURATION>': …`), in place of clap's three-line error and usage hint: the
/// parsers' messages already name the problem and the fix. `None` for every other kind of
/// error (help, version, missing or unknown arguments), which clap prints itself.
pub fn one_line_error(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if err.kind() == ErrorKind::UnknownArgument {
        // `-5` where no option takes it: clap's tip ("to pass '-5' as a value, use '-- -5'")
        // would launch a command named `-5`.
        if let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) {
            let digits = arg.strip_prefix('-').unwrap_or(arg);
            if digits.starts_with(|c: char| c.is_ascii_digit()) {
                return Some(format!(
                    "unexpected argument '{arg}': no option takes a negative number (give a positive value, e.g. 5)"
                ));
            }
        }
        return None;
    }
    if err.kind() != ErrorKind::ValueValidation {
        return None;
    }
    let text = err.render().to_string();
    let first = text.lines().next()?;
    Some(first.strip_prefix("error: ").unwrap_or(first).to_string())
}

/// A count of intervals: at least 1.
pub fn parse_count(s: &str) -> Result<u64, String> {
    if s.trim_start().starts_with('-') {
        return Err("a count cannot be negative: give 1 or more, e.g. 10".into());
    }
    match s.trim().parse::<u64>() {
        Ok(0) => Err("0 intervals would end before the first harvest: give at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a whole number of intervals: give 1 or more, e.g. 10".into()),
    }
}

fn parse_addr(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("`{s}` is not an address (hex with 0x, or decimal)"))
}

/// Parse a `--mapping` selector: `kind:KIND`, else a name or glob.
fn parse_selector(s: &str) -> Result<Selector, String> {
    if s.is_empty() {
        return Err(
            "empty: give a mapping name such as [heap], a glob such as libfoo*, or kind:anon"
                .into(),
        );
    }
    let Some(kind) = s.strip_prefix("kind:") else {
        return Ok(Selector::name(s));
    };
    if kind == "shared" {
        return Ok(Selector::Shared);
    }
    let kinds = [
        MappingKind::Anon,
        MappingKind::Heap,
        MappingKind::Stack,
        MappingKind::File,
        MappingKind::Shmem,
        MappingKind::Hugetlb,
    ];
    kinds
        .into_iter()
        .find(|k| k.to_string() == kind)
        .map(Selector::Kind)
        .ok_or_else(|| {
            let names: Vec<String> = kinds.iter().map(ToString::to_string).collect();
            format!("unknown kind `{kind}`: one of {}, shared", names.join(", "))
        })
}

/// Parse `START-END`: END exclusive, both page-aligned, START < END.
pub fn parse_range(s: &str) -> Result<Span, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| "expected START-END, e.g. 0x7f00a0000000-0x7f00b0000000".to_string())?;
    let (start, end) = (parse_addr(a)?, parse_addr(b)?);
    let page = crate::os::page_size();
    for (name, v) in [("START", start), ("END", end)] {
        if v % page != 0 {
            return Err(format!(
                "{name} {v:#x} is not page-aligned (multiple of {page:#x})"
            ));
        }
    }
    if start >= end {
        return Err(format!(
            "START {start:#x} must be below END {end:#x} (END is exclusive)"
        ));
    }
    if end > Span::USER_ADDRESS_SPACE.end {
        return Err(format!("END {end:#x} is beyond the user address space"));
    }
    Ok(Span::new(start, end))
}

#[cfg(test)]
/// Extra man page sections (title, plain text; paragraphs separated by blank lines, lines
/// starting with two spaces kept verbatim). Rendered into `man/` by the generated-files test.
pub const MAN_SECTIONS: &[(&str, &str)] = &[
    (
        "EXAMPLES",
        "Follow a running process every 100 ms and pretty-print the NDJSON stream:

  uffd-dirty track --pid 4242 --interval 100ms --format json | jq .

Track one address range for 50 intervals:

  uffd-dirty track --pid 4242 --range 0x7f00a0000000-0x7f00b0000000 --count 50

Launch a program and track it from its first instruction:

  uffd-dirty track --interval 1s -- ./my-program --its-args

Pages written per delta, one number per line:

  uffd-dirty track --pid 4242 -f json | jq 'select(.type==\"delta\") | .dirty_pages'

Record a run, then render it as a heatmap to open in a browser (or -o run.svg for the picture alone):

  uffd-dirty track --pid 4242 --interval 100ms --duration 1m --format json --output run.ndjson

  uffd-dirty report run.ndjson -o run.html

Check what this machine's kernel offers, and what to fix:

  uffd-dirty check

Copy a running process's memory in pre-copy rounds, then once more with it stopped, and leave it stopped to check the copy:

  uffd-dirty snapshot --pid 4242 --dir snap --leave-stopped

  uffd-dirty snapshot verify --dir snap --pid 4242

Compare uffd-wp with soft-dirty on the same process, ten intervals:

  uffd-dirty compare --pid 4242 --count 10

See it work in five seconds:

  uffd-dirty demo",
    ),
    (
        "OUTPUT FORMAT",
        "With --format json, stdout carries NDJSON, one object per line, and nothing else. \
Every record has a \"type\": \"start\" (once: version, pid, page_size, method, interval_ms, the tracked \
ranges with their mapping name and kind, the skipped ranges with a reason, blind: signs of writes \
no tracker can see, attach timings), \"delta\" \
(once per interval, also when nothing was written: seq, time, elapsed_ms, dirty_pages, ranges, \
scan_us), \"mapping\" (a tracked range appeared, moved or went away: event added, moved with \
from, or removed), \"exec\" (the target exec'ed and the tracker attached to the new program), \
\"blind\" (a sign of unseen writes found while tracking: kind io_uring, rdma, vfio or pinned, fd, \
detail, ranges) and \
\"end\" (reason: signal, count, duration, target-exited, exec or error; deltas, \
dirty_pages_total, and the command's exit_status in launch mode).

Addresses are 0x-prefixed lowercase hex strings; end addresses are exclusive; ranges are maximal \
runs of dirty pages, sorted. A delta holds the pages written since the previous delta (the first: \
since attach); its time is the instant its harvest began and scan_us how long the harvest took: a \
write during a harvest is in that delta or the next. Pages written before attach are not reported. \
A page whose write raced with a harvest can appear in two adjacent deltas. Memory mapped after \
attach is reported with its populated pages dirty in the next delta, as they may have been \
written before it was armed; moved and replaced memory is reported dirty whole; zapped pages \
(MADV_DONTNEED) are reported, since their content became zero. Writable reservations of 1 GiB \
or more that are less than 1/8 populated are armed page by page as they fill, so that their page \
tables are not allocated in full.

Not seen by any page-table tracker: the kernel or a device writing through a long-term pin \
(io_uring fixed buffers, RDMA, VFIO), other processes writing shared memory or a file through \
their own mappings, and write(2) to the file behind a MAP_SHARED mapping. What can be detected \
(an io_uring with registered buffers, an RDMA or VFIO device, VmPin) is warned about once per \
kind on stderr and listed in blind.",
    ),
    (
        "EXIT STATUS",
        "0: success, including a stop by SIGINT or SIGTERM, --count, --duration, the target's exit in \
--pid mode, and a reader closing the pipe.

1: runtime error (for report: a trace that cannot be read, with the line at fault).

2: usage error: a bad option value, a range that holds no trackable mapping, a PID that cannot be \
a target, a report TRACE file that does not exist or an output name that is neither .html nor .svg.

69: the kernel lacks a required feature (EX_UNAVAILABLE).

77: no permission to attach to the target (EX_NOPERM).

130: a second SIGINT stopped the tracker at once; for snapshot, a SIGINT or SIGTERM ended it \
before its final round (the rounds taken stay readable).

snapshot: 3 when the pre-copy did not converge (--max-rounds reached, or the dirty set stopped \
shrinking, or the target wrote faster than the copy): the final round was still taken. \
snapshot verify: 1 when a page differs.

In launch mode (-- CMD), when the command exits first, the exit status is the command's own (128+N \
when a signal N killed it), as with time(1) and strace(1). A command that cannot be started is a runtime error (1).",
    ),
    (
        "PERMISSIONS",
        "Tracking needs what ptrace needs: the same user as a dumpable target, or CAP_SYS_PTRACE. \
No other privilege is needed: the userfaultfd is created with UFFD_USER_MODE_ONLY, which \
vm.unprivileged_userfaultfd does not restrict. Under Yama (kernel.yama.ptrace_scope=1) only \
descendants may be traced without CAP_SYS_PTRACE, so use launch mode or set the sysctl to 0. \
A target under seccomp (a filter, as in containers, sandboxes and systemd services, or strict \
mode) is tracked with CAP_SYS_ADMIN (as root): its filter is suspended for the injected calls \
only (PTRACE_O_SUSPEND_SECCOMP, needs CONFIG_CHECKPOINT_RESTORE; uffd-dirty check says). \
Without it such a target is refused with exit status 77, since the filter could refuse or kill \
it for calling userfaultfd(2); --method soft-dirty needs no injection.",
    ),
    (
        "METHODS",
        "pagemap-scan (default): one PAGEMAP_SCAN pass per interval reports written pages and \
re-protects them atomically. pagemap-read: the same arming, harvested by reading \
/proc/PID/pagemap (bit 57 clear = written) and re-protecting what was read as written with \
UFFDIO_WRITEPROTECT. soft-dirty: clear_refs and bit 55, no userfaultfd; every thread of the \
target is stopped while its bits are read and cleared, unless --no-freeze (then a write in \
that window can be lost). uffd-dirty check reports which methods this kernel supports.",
    ),
    (
        "KERNEL",
        "Linux 6.7 or newer with UFFD_FEATURE_WP_ASYNC, UFFD_FEATURE_WP_UNPOPULATED and the PAGEMAP_SCAN \
ioctl. The target is never written to: the tracker borrows one thread for two system calls \
(userfaultfd and close) run through an existing syscall instruction of the target, and restores its \
registers exactly. Detaching closes the tracker's userfaultfd, which removes every protection; if \
the tracker is killed, the kernel does the same.",
    ),
    ("SEE ALSO", "ptrace(2), userfaultfd(2), ioctl_userfaultfd(2), proc_pid_pagemap(5), strace(1)"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    /// The first error of `args`, as `main` prints it, or the parse result's debug form.
    fn error_line(args: &[&str]) -> String {
        match Cli::try_parse_from(args) {
            Ok(cli) => panic!("{args:?} parsed: {cli:?}"),
            Err(e) => one_line_error(&e).unwrap_or_else(|| panic!("not one line: {e}")),
        }
    }

    #[test]
    fn absurd_durations_and_counts_are_one_line_usage_errors() {
        let huge = "584542046090y";
        for (args, expect) in [
            (
                vec!["track", "--pid", "1", "--interval", huge],
                "at most 100y",
            ),
            (
                vec!["track", "--pid", "1", "--interval", "101y"],
                "at most 100y",
            ),
            (
                vec![
                    "track",
                    "--pid",
                    "1",
                    "--interval",
                    "99999999999999999999999y",
                ],
                "at most 100y",
            ),
            (
                vec!["track", "--pid", "1", "--interval", "0ms"],
                "at least 1ms",
            ),
            (
                vec!["track", "--pid", "1", "--interval", "500us"],
                "at least 1ms",
            ),
            (
                vec!["track", "--pid", "1", "--interval", "-1s"],
                "cannot be negative",
            ),
            (
                vec!["track", "--pid", "1", "--duration", "0s"],
                "at least 1ms",
            ),
            (
                vec!["track", "--pid", "1", "--duration", "-5s"],
                "cannot be negative",
            ),
            (
                vec!["track", "--pid", "1", "--duration", "10"],
                "time unit needed",
            ),
            (vec!["track", "--pid", "1", "--count", "0"], "at least 1"),
            (
                vec!["track", "--pid", "1", "--count", "-1"],
                "cannot be negative",
            ),
            (
                vec!["track", "--pid", "1", "--count=-5"],
                "cannot be negative",
            ),
            (
                vec!["track", "--pid", "1", "--interval=-5"],
                "cannot be negative",
            ),
            (
                vec!["track", "--pid", "1", "-i", "-5"],
                "cannot be negative",
            ),
            (vec!["track", "--pid", "1", "--count", "x"], "whole number"),
            (
                vec!["compare", "--pid", "1", "--interval", huge],
                "at most 100y",
            ),
            (vec!["demo", "--interval", huge], "at most 100y"),
            (vec!["demo", "--duration", "0ms"], "at least 1ms"),
            (vec!["bench", "--run-time", huge], "at most 100y"),
            (vec!["bench", "--run-time", "0s"], "at least 1ms"),
            (vec!["bench", "--rounds", "0"], "at least 1 round"),
            (vec!["bench", "--rounds", "-5"], "at least 1 round"),
            (vec!["bench", "--run-time", "-5"], "cannot be negative"),
            (vec!["bench", "--rates", "10,0"], "not in 1..=1000"),
            (vec!["bench", "--rates", "5000"], "not in 1..=1000"),
            (vec!["bench", "--sizes", "1G,200000G"], "user address space"),
            (vec!["writer", "--gap", huge], "at most 100y"),
        ] {
            let mut argv = vec!["uffd-dirty"];
            argv.extend(&args);
            let line = error_line(&argv);
            assert!(line.contains(expect), "{args:?}: {line}");
            assert!(line.starts_with("invalid value '"), "{args:?}: {line}");
            assert!(!line.contains('\n'), "{args:?}: {line}");
        }
    }

    #[test]
    fn a_duration_past_a_century_means_until_stopped() {
        for (value, expect) in [
            ("10s", Duration::from_secs(10)),
            ("100y", MAX_DURATION),
            ("101y", MAX_DURATION),
            ("584542046090y", MAX_DURATION),
            ("99999999999999999999999y", MAX_DURATION),
        ] {
            let cli =
                Cli::try_parse_from(["uffd-dirty", "track", "--pid", "1", "--duration", value])
                    .unwrap();
            let Command::Track(t) = cli.command else {
                panic!()
            };
            assert_eq!(t.target.duration, Some(expect), "{value}");
            let cli = Cli::try_parse_from(["uffd-dirty", "demo", "--duration", value]).unwrap();
            let Command::Demo(d) = cli.command else {
                panic!()
            };
            assert_eq!(d.duration, expect, "{value}");
        }
        // Every deadline the tracker computes from the longest values is representable.
        let now = std::time::Instant::now();
        let _ = now + MAX_DURATION * 3;
        assert!(MAX_DURATION.as_millis() < 1 << 53);
    }

    #[test]
    fn ranges_parse_and_reject() {
        assert_eq!(parse_range("0x1000-0x3000"), Ok(Span::new(0x1000, 0x3000)));
        assert_eq!(parse_range("4096-8192"), Ok(Span::new(4096, 8192)));
        assert!(
            parse_range("0x1001-0x3000")
                .unwrap_err()
                .contains("not page-aligned")
        );
        assert!(
            parse_range("0x3000-0x1000")
                .unwrap_err()
                .contains("must be below")
        );
        assert!(parse_range("0x1000").unwrap_err().contains("START-END"));
        assert!(
            parse_range("zz-0x1000")
                .unwrap_err()
                .contains("not an address")
        );
    }

    #[test]
    fn report_writes_report_html_by_default() {
        let cli = Cli::try_parse_from(["uffd-dirty", "report", "-"]).unwrap();
        let Command::Report(r) = cli.command else {
            panic!()
        };
        assert_eq!((r.trace, r.output), ("-".into(), "report.html".into()));
        assert!(Cli::try_parse_from(["uffd-dirty", "report"]).is_err());
    }

    #[test]
    fn track_needs_exactly_one_target() {
        assert!(Cli::try_parse_from(["uffd-dirty", "track"]).is_err());
        assert!(Cli::try_parse_from(["uffd-dirty", "track", "--pid", "1", "--", "true"]).is_err());
        let cli = Cli::try_parse_from([
            "uffd-dirty",
            "track",
            "--interval",
            "100ms",
            "--",
            "ls",
            "-l",
        ])
        .unwrap();
        let Command::Track(t) = cli.command else {
            panic!()
        };
        assert_eq!(
            (t.target.interval, t.target.command.len()),
            (Duration::from_millis(100), 2)
        );
        assert!(
            Cli::try_parse_from(["uffd-dirty", "track", "--pid", "1", "--interval", "0ms"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["uffd-dirty", "track", "--pid", "1", "--count", "0"]).is_err()
        );
    }
}

/// `uffd-dirty attach-helper`: started by the tracker, never by hand.
#[derive(Debug, Args)]
pub struct HelperArgs {
    /// The target (its pidfd is fd 4).
    #[arg(long)]
    pub pid: i32,
    /// The target is a launched command waiting to exec: seize it first (on order).
    #[arg(long)]
    pub launched: bool,
}
