//! Reading a recorded run: the NDJSON records of `track --format json`, one line at a time.
//!
//! Only what a report needs is parsed. JSON objects whose `type` the tracker does not write
//! (record types added later, a launched program's own JSON lines) are skipped. Any other line
//! that is not a record stops the report with an error naming it, plain text included: a
//! command launched with `track -- CMD` that prints to stdout mixes its lines into the trace, so
//! such runs are recorded with `track --output FILE`. A last line cut short (the tracker was
//! killed mid-write) is tolerated. Address ranges are checked as they are read (start not
//! after end, on the page grid, a move that fits the address space), so that nothing after
//! this module does arithmetic on nonsense.

use std::io::{BufRead, Read};
use std::time::SystemTime;

use anyhow::{Result, anyhow};
use serde::{Deserialize, Deserializer};

use crate::output::Envelope;
use uffd_dirty::Span;

/// An address as the contract writes it: a `0x`-prefixed hex string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HexAddr(pub u64);

impl<'de> Deserialize<'de> for HexAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.strip_prefix("0x")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .map(HexAddr)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a 0x-hex address")))
    }
}

/// An RFC 3339 time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub SystemTime);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s)
            .map(Time)
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time: {e}")))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub start: HexAddr,
    pub end: HexAddr,
}

impl Run {
    pub fn span(&self) -> Span {
        Span::new(self.start.0, self.end.0)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TrackedRange {
    pub start: HexAddr,
    pub end: HexAddr,
    pub mapping: String,
}

impl TrackedRange {
    pub fn span(&self) -> Span {
        Span::new(self.start.0, self.end.0)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Start {
    pub version: u64,
    pub pid: i64,
    pub page_size: u64,
    pub method: String,
    pub interval_ms: u64,
    pub ranges: Vec<TrackedRange>,
    pub time: Time,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Mapping {
    pub event: String,
    pub start: HexAddr,
    pub end: HexAddr,
    pub from: Option<HexAddr>,
    pub mapping: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Delta {
    pub elapsed_ms: u64,
    pub dirty_pages: u64,
    pub ranges: Vec<Run>,
    pub time: Time,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Exec {
    pub ranges: Vec<TrackedRange>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct End {
    pub reason: String,
    pub dirty_pages_total: u64,
    pub error: Option<String>,
    pub time: Time,
}

/// A record as the report reads it.
pub type Record = Envelope<Start, Mapping, Delta, Exec, End, serde::de::IgnoredAny>;

/// Whether `line` is a JSON object of a record type the tracker does not write (a launched
/// program's own output sharing stdout, a type added later): those are skipped. The known
/// types are the envelope's own, so this list cannot drift from it.
fn is_foreign(line: &[u8]) -> bool {
    use serde::de::IgnoredAny;
    #[derive(Deserialize)]
    struct Tagged {
        #[serde(rename = "type")]
        _type: String,
    }
    type Known = Envelope<IgnoredAny, IgnoredAny, IgnoredAny, IgnoredAny, IgnoredAny, IgnoredAny>;
    serde_json::from_slice::<Tagged>(line).is_ok() && serde_json::from_slice::<Known>(line).is_err()
}

/// The contract version this reader understands.
pub const SUPPORTED_VERSION: u64 = crate::output::FORMAT_VERSION as u64;

/// What is wrong with the address ranges of `record`, if anything. `page_size`: the run's (the
/// start record's own for itself; `None` before it, when only the order is checked).
fn check_ranges(record: &Record, page_size: Option<u64>) -> Result<(), String> {
    let page_size = match record {
        Record::Start(s) => Some(s.page_size),
        _ => page_size,
    }
    .filter(|p| p.is_power_of_two()); // else the start record is refused for it
    let check = |start: HexAddr, end: HexAddr| {
        if start.0 > end.0 {
            return Err(format!(
                "range {:#x}-{:#x} ends before it starts",
                start.0, end.0
            ));
        }
        match page_size {
            Some(p) if !start.0.is_multiple_of(p) || !end.0.is_multiple_of(p) => Err(format!(
                "range {:#x}-{:#x} is not on the page grid (page_size {p})",
                start.0, end.0
            )),
            _ => Ok(()),
        }
    };
    match record {
        Record::Start(Start { ranges, .. }) | Record::Exec(Exec { ranges }) => {
            ranges.iter().try_for_each(|r| check(r.start, r.end))
        }
        Record::Delta(d) => d.ranges.iter().try_for_each(|r| check(r.start, r.end)),
        Record::Mapping(m) => {
            check(m.start, m.end)?;
            match m.from {
                Some(from) => {
                    let end = from.0.checked_add(m.end.0 - m.start.0).ok_or_else(|| {
                        format!(
                            "a mapping of {:#x} bytes moved from {:#x} would end past the top of the address space",
                            m.end.0 - m.start.0,
                            from.0
                        )
                    })?;
                    check(from, HexAddr(end))
                }
                None => Ok(()),
            }
        }
        Record::End(_) | Record::Blind(_) => Ok(()),
    }
}

/// The longest line read. A record's line grows with its dirty runs (about 60 bytes each):
/// 64 MiB is a million runs in one delta, every other page of 8 GiB. Without a bound, a file
/// with no newline (`report /dev/zero`) is read into memory until the allocator aborts.
pub const MAX_LINE: usize = 64 << 20;

/// What a line that is not JSON looks like, when it is the output of another `--format`.
fn looks_like(line: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let hex = |s: &str, prefixed: bool| {
        let digits = if prefixed {
            s.strip_prefix("0x")
        } else {
            Some(s)
        };
        digits.is_some_and(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let fields: Vec<&str> = text.split(' ').collect();
    if let [seq, start, end, bits] = fields[..]
        && seq.parse::<u64>().is_ok()
        && hex(start, true)
        && hex(end, true)
        && hex(bits, false)
    {
        return Some("a line of `track --format bitmap` output");
    }
    let human = text.starts_with("tracking PID ")
        || text.starts_with("stopped (")
        || (text.len() > 13
            && text.as_bytes()[2] == b':'
            && text.as_bytes()[12..].starts_with(b"  #"));
    human.then_some("a line of `track --format human` output")
}

/// Why `line` is not a record, for the error that names it.
fn not_a_record(line: &[u8], e: &serde_json::Error) -> String {
    const FIX: &str = "give the output of `uffd-dirty track --format json` (with `-- CMD`, record with `--output FILE` so the command's own output stays out)";
    if let Some(what) = looks_like(line) {
        return format!(
            "not JSON but {what}: a report is made from NDJSON records; record the run with `uffd-dirty track --format json`"
        );
    }
    match serde_json::from_slice::<serde_json::Value>(line) {
        Err(_) => format!("not JSON ({e}): {FIX}"),
        Ok(serde_json::Value::Object(o)) if !o.contains_key("type") => {
            format!("a JSON object without a \"type\", not a uffd-dirty record: {FIX}")
        }
        Ok(serde_json::Value::Object(o)) => {
            format!("not a valid uffd-dirty {} record ({e}): {FIX}", o["type"])
        }
        Ok(v) => {
            let kind = match v {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            };
            format!("JSON {kind}, not a uffd-dirty record (an object with a \"type\"): {FIX}")
        }
    }
}

/// Feed every record of `input` to `each`, with its line number. `name` names the input in
/// errors (`TRACE line 17: …`). Returns a warning when the last line was cut short.
pub fn read_records(
    input: impl BufRead,
    name: &str,
    each: impl FnMut(usize, Record) -> Result<()>,
) -> Result<Option<String>> {
    read_records_within(input, name, MAX_LINE, each)
}

/// [`read_records`] with lines of at most `max_line` bytes.
fn read_records_within(
    mut input: impl BufRead,
    name: &str,
    max_line: usize,
    mut each: impl FnMut(usize, Record) -> Result<()>,
) -> Result<Option<String>> {
    let mut line = Vec::new();
    let mut number = 0;
    let mut page_size = None;
    loop {
        line.clear();
        let n = (&mut input)
            .take(max_line as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| anyhow!("reading {name}: {e}"))?;
        if n == 0 {
            return Ok(None);
        }
        number += 1;
        if line.len() > max_line {
            return Err(anyhow!(
                "{name} line {number} is longer than {} MiB, the most a record of `uffd-dirty track --format json` can be: give a trace it wrote",
                max_line >> 20
            ));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(record) => {
                check_ranges(&record, page_size).map_err(|e| {
                    anyhow!(
                        "{name} line {number}: {e}: give the output of `uffd-dirty track --format json`"
                    )
                })?;
                if let Record::Start(s) = &record {
                    page_size = Some(s.page_size);
                }
                each(number, record)?
            }
            Err(_) if is_foreign(&line) => {}
            // A tracker killed mid-write leaves its last line without its newline.
            Err(e) if e.is_eof() && line.last() != Some(&b'\n') => {
                return Ok(Some(format!(
                    "{name} line {number} is cut short (was the tracker killed?); the report ends at line {}",
                    number - 1
                )));
            }
            Err(e) => return Err(anyhow!("{name} line {number}: {}", not_a_record(&line, &e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(text: &str) -> Result<(Vec<String>, Option<String>)> {
        let mut seen = Vec::new();
        let warning = read_records(text.as_bytes(), "T", |n, r| {
            seen.push(format!(
                "{n}:{}",
                format!("{r:?}").split('(').next().unwrap()
            ));
            Ok(())
        })?;
        Ok((seen, warning))
    }

    #[test]
    fn skips_foreign_lines_and_tolerates_a_cut_last_line() {
        let (seen, warning) = types(
            "{\"type\":\"ready\",\"pid\":1}\n\n{\"type\":\"end\",\"reason\":\"count\",\"deltas\":0,\"dirty_pages_total\":0,\"time\":\"2026-01-01T00:00:00Z\"}\n{\"type\":\"delta\",\"seq\"",
        )
        .unwrap();
        assert_eq!(seen, ["3:End"]);
        assert!(warning.unwrap().contains("T line 4 is cut short"));
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = types("{\"type\":\"ready\"}\nhello\n{}\n").unwrap_err();
        assert!(err.to_string().starts_with("T line 2: not JSON"), "{err}");
        let err = types("{\"type\":\"delta\",\"seq\":1}\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("T line 1: not a valid uffd-dirty \"delta\" record (missing field"),
            "{err}"
        );
        // Cut short but followed by more: not the last line, so an error.
        let err = types("{\"type\":\"delta\"\n{}\n").unwrap_err();
        assert!(err.to_string().starts_with("T line 1: not JSON"), "{err}");
    }

    #[test]
    fn other_formats_and_other_json_say_what_was_expected() {
        let cases = [
            (
                "7 0x10000 0x20000 0302\n",
                "T line 1: not JSON but a line of `track --format bitmap` output",
            ),
            (
                "tracking PID 8487 with pagemap-scan: 4 ranges\n",
                "T line 1: not JSON but a line of `track --format human` output",
            ),
            (
                "13:56:19.650  #1         1431 pages      5.59 MiB  [anon] 1332\n",
                "T line 1: not JSON but a line of `track --format human` output",
            ),
            ("7\n", "T line 1: JSON a number, not a uffd-dirty record"),
            ("[1]\n", "T line 1: JSON an array, not a uffd-dirty record"),
            ("{\"a\":1}\n", "T line 1: a JSON object without a \"type\""),
            ("é€ 12:3\n", "T line 1: not JSON"),
        ];
        for (text, says) in cases {
            let err = types(text).unwrap_err().to_string();
            assert!(err.starts_with(says), "expected {says:?}: {err}");
            assert!(!err.contains("Envelope"), "serde internals: {err}");
        }
    }

    #[test]
    fn a_line_past_the_bound_is_an_error_naming_it() {
        let big = format!("{{\"type\":\"ready\"}}\n{}\n", " ".repeat(3 << 20));
        let err = read_records_within(big.as_bytes(), "T", 2 << 20, |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("T line 2 is longer than 2 MiB, the most a record"),
            "{err}"
        );
        // At the bound itself: read.
        let edge = format!("{}\n", " ".repeat((2 << 20) - 1));
        assert!(read_records_within(edge.as_bytes(), "T", 2 << 20, |_, _| Ok(())).is_ok());
    }

    /// A start record with `ranges`, then `rest`.
    fn run(ranges: &str, rest: &str) -> String {
        format!(
            "{{\"type\":\"start\",\"version\":1,\"pid\":7,\"page_size\":4096,\"method\":\"m\",\"interval_ms\":100,\"ranges\":[{ranges}],\"time\":\"2026-01-01T00:00:00Z\"}}\n{rest}\n"
        )
    }

    fn delta(runs: &str) -> String {
        format!(
            "{{\"type\":\"delta\",\"elapsed_ms\":100,\"dirty_pages\":1,\"ranges\":[{runs}],\"time\":\"2026-01-01T00:00:00Z\"}}"
        )
    }

    fn moved(start: &str, end: &str, from: &str) -> String {
        format!(
            "{{\"type\":\"mapping\",\"event\":\"moved\",\"start\":\"{start}\",\"end\":\"{end}\",\"from\":\"{from}\",\"mapping\":\"m\"}}"
        )
    }

    #[test]
    fn nonsense_addresses_are_errors_naming_the_line() {
        let range =
            |s: &str, e: &str| format!("{{\"start\":\"{s}\",\"end\":\"{e}\",\"mapping\":\"m\"}}");
        let run_of = |s: &str, e: &str| format!("{{\"start\":\"{s}\",\"end\":\"{e}\"}}");
        let top = "0xfffffffffffff000";
        let cases = [
            (
                run(&range("0x2000", "0x1000"), ""),
                "T line 1: range 0x2000-0x1000 ends before it starts",
            ),
            (
                run("", &delta(&run_of("0x1000", "0xffffffffffffffff"))),
                "T line 2: range 0x1000-0xffffffffffffffff is not on the page grid (page_size 4096)",
            ),
            (
                run("", &delta(&run_of("0xffffffffffffffff", "0x0"))),
                "T line 2: range 0xffffffffffffffff-0x0 ends before it starts",
            ),
            (
                run("", &moved("0x0", "0x2000", top)),
                "T line 2: a mapping of 0x2000 bytes moved from 0xfffffffffffff000 would end past the top",
            ),
            (
                run("", &moved("0x3000", "0x1000", "0x0")),
                "T line 2: range 0x3000-0x1000 ends before it starts",
            ),
        ];
        for (text, says) in cases {
            let err = types(&text).unwrap_err().to_string();
            assert!(err.starts_with(says), "expected {says:?}: {err}");
        }
        // The top of the address space itself is fine.
        let ok = run(
            &range("0x0", top),
            &format!(
                "{}\n{}",
                delta(&run_of("0x0", top)),
                moved("0x0", "0x1000", "0xffffffffffffe000")
            ),
        );
        assert_eq!(types(&ok).unwrap().0, ["1:Start", "2:Delta", "3:Mapping"]);
    }
}
