//! What the tracker tells the world: the record types of the NDJSON contract and the
//! emitters that print them (NDJSON for scripts, one line per delta for people).
//!
//! stdout carries data only; warnings go to stderr. Each emitter flushes once per record so
//! a pipe reader sees every delta as soon as it is harvested.

pub mod bitmap;
pub mod human;
pub mod ndjson;
pub mod sink;
pub mod totals;
pub mod words;

use std::io;
use std::time::SystemTime;

use serde::{Deserialize, Serialize, Serializer};

use uffd_dirty::{Mapping, Span};

/// Version of the NDJSON contract, carried by the start record.
pub const FORMAT_VERSION: u32 = 1;

/// An address, serialized as a `0x`-prefixed lowercase hex string (64-bit values do not
/// survive JSON numbers in many consumers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub u64);

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // By hand into a stack buffer: a delta has two per dirty run, and the formatting
        // machinery made them most of the cost of writing one.
        let mut buf = [0u8; 18];
        let digits = (16 - self.0.leading_zeros() as usize / 4).max(1);
        buf[..2].copy_from_slice(b"0x");
        for (i, b) in buf[2..2 + digits].iter_mut().enumerate() {
            let nibble = (self.0 >> (4 * (digits - 1 - i))) & 0xf;
            *b = b"0123456789abcdef"[nibble as usize];
        }
        s.serialize_str(std::str::from_utf8(&buf[..2 + digits]).expect("ASCII"))
    }
}

/// An RFC 3339 UTC timestamp with microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timestamp(pub SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_micros(self.0))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrackedRange {
    pub start: Addr,
    pub end: Addr,
    pub pages: u64,
    pub mapping: String,
    pub kind: uffd_dirty::MappingKind,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedRange {
    pub start: Addr,
    pub end: Addr,
    pub mapping: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DirtyRun {
    pub start: Addr,
    pub end: Addr,
    pub pages: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Start {
    pub version: u32,
    pub pid: i32,
    pub page_size: u64,
    pub method: uffd_dirty::Method,
    /// The target's PID namespace (`pid:[…]`), and its PID in it: a container's processes
    /// are tracked from the host by their host PID (`pid`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pid_namespace: String,
    pub pid_in_namespace: i32,
    pub interval_ms: u64,
    pub ranges: Vec<TrackedRange>,
    pub skipped: Vec<SkippedRange>,
    /// Signs of writes no tracker can see (memory pinned for the kernel or a device); empty
    /// when none was found. Added within version 1: older traces lack it.
    pub blind: Vec<Blind>,
    /// How the initial protection was applied (`pagemap-scan` or `writeprotect`).
    pub arm_method: uffd_dirty::ArmedBy,
    /// How long the attach took, from the first ptrace call to armed, and how long the
    /// borrowed target thread was stopped.
    pub attach_us: u64,
    pub thread_stopped_us: u64,
    pub time: Timestamp,
}

/// A source of writes the tracker cannot see (`crate::blind`): in the start record's `blind`,
/// and as a `blind` record when one appears while tracking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blind {
    /// `io_uring` (registered buffers), `rdma`, `vfio` (a DMA-capable device is open), or
    /// `pinned` (`VmPin` that no fd explains).
    pub kind: uffd_dirty::BlindKind,
    /// The target's fd it was found through (not for `pinned`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// What is not seen and why, for people.
    pub detail: String,
    /// The pages written unseen, where the kernel says (io_uring's registered buffers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<DirtyRun>,
}

impl Blind {
    /// The record of a source the tracker found.
    pub fn of(b: &uffd_dirty::Blind, page_size: u64) -> Blind {
        Blind {
            kind: b.kind,
            fd: b.fd,
            detail: b.detail.clone(),
            ranges: dirty_runs(&b.spans, page_size),
        }
    }
}

/// A [`Blind`] source found while tracking, at the harvest of `time`.
#[derive(Debug, Clone, Serialize)]
pub struct BlindFound {
    #[serde(flatten)]
    pub blind: Blind,
    pub time: Timestamp,
}

impl MappingEvent {
    /// The record of a change a harvest of `time` found.
    pub fn of(c: &uffd_dirty::MappingChange, time: Timestamp) -> MappingEvent {
        let (event, from) = match c.change {
            uffd_dirty::Change::Added => (MappingEventKind::Added, None),
            uffd_dirty::Change::Moved { from } => (MappingEventKind::Moved, Some(Addr(from.start))),
            uffd_dirty::Change::Removed => (MappingEventKind::Removed, None),
            uffd_dirty::Change::Replaced => (MappingEventKind::Replaced, None),
            // A kind of change added later: the span is tracked now, as after `added`.
            _ => (MappingEventKind::Added, None),
        };
        MappingEvent {
            event,
            start: Addr(c.span.start),
            end: Addr(c.span.end),
            from,
            mapping: c.name.clone(),
            kind: c.kind,
            time,
        }
    }
}

/// What happened to a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingEventKind {
    Added,
    Moved,
    Removed,
    Replaced,
}

impl std::fmt::Display for MappingEventKind {
    /// As the record spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => f.write_str(&name),
            _ => write!(f, "{self:?}"),
        }
    }
}

/// The `kind` of memory no mapping holds any more.
const UNMAPPED: &str = "unmapped";

/// A mapping's kind, or `unmapped`.
fn kind_or_unmapped<S: Serializer>(
    kind: &Option<uffd_dirty::MappingKind>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match kind {
        Some(k) => k.serialize(s),
        None => s.serialize_str(UNMAPPED),
    }
}

impl MappingEvent {
    /// Its `kind` as the record spells it.
    pub fn kind_name(&self) -> String {
        self.kind.map_or_else(|| UNMAPPED.into(), |k| k.to_string())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MappingEvent {
    /// `added`, `removed`, or `moved` (then `from` is where it was).
    pub event: MappingEventKind,
    pub start: Addr,
    pub end: Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Addr>,
    pub mapping: String,
    #[serde(serialize_with = "kind_or_unmapped")]
    pub kind: Option<uffd_dirty::MappingKind>,
    pub time: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    pub seq: u64,
    pub time: Timestamp,
    pub elapsed_ms: u64,
    pub dirty_pages: u64,
    pub ranges: Vec<DirtyRun>,
    /// How long the harvest took from `time`: mapping refresh and PAGEMAP_SCAN. A write in
    /// that window may be in this delta or the next.
    pub scan_us: u64,
    /// Per tracked range, its dirty-page bitmap (`--json-bitmap`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitmap: Option<Vec<bitmap::RangeBitmap>>,
    /// The tracked ranges at this harvest (for bitmaps; not part of the JSON record).
    #[serde(skip)]
    pub tracked: Vec<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    Signal,
    Count,
    Duration,
    TargetExited,
    /// The target exec'ed and `--no-follow-exec` was given, or re-attaching failed.
    Exec,
    Error,
    /// The reader closed stdout; never printed, since nothing can be.
    OutputClosed,
    /// `--trigger stdin` read the end of its input.
    InputClosed,
}

/// The target exec'ed: tracking goes on in the new image, attached afresh.
#[derive(Debug, Clone, Serialize)]
pub struct Exec {
    pub pid: i32,
    pub exe: String,
    pub ranges: Vec<TrackedRange>,
    pub skipped: Vec<SkippedRange>,
    pub attach_us: u64,
    pub thread_stopped_us: u64,
    pub time: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct End {
    pub reason: EndReason,
    pub deltas: u64,
    pub dirty_pages_total: u64,
    /// The launched command's exit status, when it exited (`-- CMD` mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `--summary`: every page written since the attach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<Vec<DirtyRun>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written_pages: Option<u64>,
    pub time: Timestamp,
}

/// The record types of the NDJSON stream, tagged with `"type"`. Generic over the payloads so
/// that the tracker writes [`Record`] and `report` reads the same envelope back into types
/// holding only what it needs (`report::trace::Record`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Envelope<S, M, D, X, E, B> {
    Start(S),
    Mapping(M),
    Delta(D),
    Exec(X),
    End(E),
    Blind(B),
}

/// All records the tracker writes.
pub type Record = Envelope<Start, MappingEvent, Delta, Exec, End, BlindFound>;

/// The time each delta covered: from the `elapsed_ms` of the delta before it (of attach, for the
/// first) to its own. One clock for every reader of deltas, so their rates agree.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeltaClock {
    last_elapsed_ms: u64,
}

/// How long one delta covered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Covered {
    /// Milliseconds since the previous delta; 0 if the time went backwards.
    pub ms: u64,
    /// The same in seconds, for rates: at least 1 ms, so a rate is never infinite.
    pub seconds: f64,
}

impl DeltaClock {
    /// Take the next delta's `elapsed_ms`: how long it covered.
    pub fn advance(&mut self, elapsed_ms: u64) -> Covered {
        let ms = elapsed_ms.saturating_sub(self.last_elapsed_ms);
        self.last_elapsed_ms = elapsed_ms;
        Covered {
            ms,
            seconds: (ms as f64 / 1000.0).max(0.001),
        }
    }
}

/// Dirty runs to records, with page counts.
pub fn dirty_runs(runs: &[Span], page_size: u64) -> Vec<DirtyRun> {
    let mut out = Vec::with_capacity(runs.len());
    dirty_runs_into(runs, page_size, &mut out);
    out
}

/// Append the records of `runs` to `out`.
pub fn dirty_runs_into(runs: &[Span], page_size: u64, out: &mut Vec<DirtyRun>) {
    out.extend(runs.iter().map(|r| DirtyRun {
        start: Addr(r.start),
        end: Addr(r.end),
        pages: r.len() / page_size,
    }));
}

/// [`sink::open`] for the `--output` of a command (`None`: stdout), with the file named in
/// the error. `stop`: what ends the wait for a FIFO's reader (see [`sink`]).
pub fn sink_for(
    output: Option<&std::path::Path>,
    stop: Option<&crate::stop::Stop>,
) -> anyhow::Result<sink::Sink> {
    use anyhow::Context;
    sink::open(&sink::Destination::of(output), stop)
        .with_context(|| format!("opening {}", output.unwrap_or("-".as_ref()).display()))
}

/// Something that prints records. `vmas` gives human output the mapping names of a delta.
pub trait Emitter {
    fn emit(&mut self, record: &Record, vmas: &[Mapping]) -> io::Result<()>;
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn addresses_serialize_as_hex_strings() {
        for v in [0, 1, 0xf, 0x10, 0x7fff_dead_b000, u64::MAX] {
            let json = serde_json::to_string(&Addr(v)).unwrap();
            assert_eq!(json, format!("\"{v:#x}\""));
        }
    }

    #[test]
    fn the_delta_clock_measures_from_the_previous_delta() {
        let mut clock = DeltaClock::default();
        let covered = |ms, seconds| Covered { ms, seconds };
        assert_eq!(clock.advance(250), covered(250, 0.25));
        assert_eq!(clock.advance(1250), covered(1000, 1.0));
        assert_eq!(
            clock.advance(1250),
            covered(0, 0.001),
            "never a zero divisor"
        );
        assert_eq!(clock.advance(100), covered(0, 0.001), "time going back");
        assert_eq!(clock.advance(600), covered(500, 0.5));
    }
}
