//! `uffd-dirty compare`: uffd-wp async tracking and soft-dirty on the same target at the same
//! time (they are independent kernel mechanisms). Every interval the target is frozen once,
//! both are harvested in that window, so both see exactly the same writes, and the pages
//! each one reported are split into "both", "only uffd-wp" and "only soft-dirty", with what
//! each harvest cost.

use std::io::{self, Write};
use std::time::{Instant, SystemTime};

use anyhow::Result;
use serde::Serialize;

use crate::cli::{CompareArgs, TableFormat as Format};
use crate::exit::{ExitCode, unsupported};
use crate::output::{DirtyRun, Timestamp, dirty_runs};
use crate::stop::Stop;
use crate::track::{self, Cadence, Wake};
use uffd_dirty::Span;
use uffd_dirty::{Error, Gone, Harvest, Method, TrackerBuilder};

#[derive(Debug, Default, Clone, Serialize)]
pub struct Costs {
    /// Wall time of the uffd-wp harvest (PAGEMAP_SCAN get + re-protect).
    pub uffd_us: u64,
    /// Wall time of the soft-dirty harvest (pagemap reads + clear_refs).
    pub soft_dirty_us: u64,
    /// Of which clear_refs, which holds the target's mmap write lock.
    pub clear_refs_us: u64,
    /// How long the target was stopped for both.
    pub stopped_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    pub seq: u64,
    pub time: Timestamp,
    pub both: u64,
    pub only_uffd: u64,
    pub only_soft_dirty: u64,
    #[serde(flatten)]
    pub costs: Costs,
    pub only_uffd_ranges: Vec<DirtyRun>,
    pub only_soft_dirty_ranges: Vec<DirtyRun>,
    pub both_ranges: Vec<DirtyRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Total {
    pub pid: i32,
    pub intervals: u64,
    pub both: u64,
    pub only_uffd: u64,
    pub only_soft_dirty: u64,
    #[serde(flatten)]
    pub costs: Costs,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Begin {
    pub pid: i32,
    pub page_size: u64,
    pub interval_ms: u64,
    pub time: Timestamp,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Record<'a> {
    CompareStart(&'a Begin),
    Compare(&'a Interval),
    CompareTotal(&'a Total),
}

fn pages(runs: &[Span], page_size: u64) -> u64 {
    runs.iter().map(|r| r.len()).sum::<u64>() / page_size
}

fn print_row(
    out: &mut impl Write,
    label: &str,
    both: u64,
    ou: u64,
    os: u64,
    c: &Costs,
) -> io::Result<()> {
    writeln!(
        out,
        "{label:>8} {both:>10} {ou:>10} {os:>12} {:>10.2} {:>12.2} {:>10.2} {:>10.2}",
        c.uffd_us as f64 / 1000.0,
        c.soft_dirty_us as f64 / 1000.0,
        c.clear_refs_us as f64 / 1000.0,
        c.stopped_us as f64 / 1000.0
    )
}

/// The first line of human output; the interval in the words `track` uses.
fn header(pid: i32, interval: std::time::Duration) -> String {
    format!(
        "comparing uffd-wp (pagemap-scan) with soft-dirty on PID {pid}, every {}; pages, then ms",
        crate::output::words::duration(interval)
    )
}

pub fn run(args: &CompareArgs, stop: &Stop) -> Result<ExitCode> {
    uffd_dirty::probe::require(Method::PagemapScan)?;
    if let Err(uffd_dirty::Error::Unsupported(_)) = uffd_dirty::probe::require(Method::SoftDirty) {
        return Err(unsupported(format!(
            "this kernel ({}) has no working soft-dirty tracking (built without CONFIG_MEM_SOFT_DIRTY): nothing to compare with; `uffd-dirty check` tells what the kernel has",
            uffd_dirty::probe::kernel_release()
        )));
    }
    let target = track::open_target(&args.target)?;
    let with_ranges = |b| track::scoped(&args.target, b);
    let mut uffd_side =
        with_ranges(TrackerBuilder::new().method(Method::PagemapScan)).attach(&target)?;
    // The command (if launched) runs from here on: soft-dirty needs no injection. Both are
    // harvested under one freeze, taken here.
    let mut soft_side = with_ranges(
        TrackerBuilder::new()
            .method(Method::SoftDirty)
            .freeze(false),
    )
    .attach(&target)?;
    let page_size = uffd_side.page_size();
    // One frozen harvest of both, thrown away: both baselines then start at the same instant
    // (arming the userfaultfd and clearing the soft-dirty bits happened at different times).
    let (mut a, mut b) = (Harvest::new(), Harvest::new());
    {
        let _frozen = target.freeze()?;
        uffd_side.harvest_into(&mut a)?;
        soft_side.harvest_into(&mut b)?;
    }
    // Both mechanisms share these blind spots: said on stderr (at attach only; `track` also
    // records them).
    track::warn_blind(target.pid(), uffd_side.blind_spots());
    let mut out = crate::output::sink_for(args.output.output.as_deref(), Some(stop))?.writer;
    let begin = Begin {
        pid: target.pid(),
        page_size,
        interval_ms: args.target.interval.as_millis() as u64,
        time: Timestamp(SystemTime::now()),
    };
    if args.output.format == Format::Json {
        serde_json::to_writer(&mut out, &Record::CompareStart(&begin))?;
        writeln!(out)?;
        out.flush()?;
    }
    if args.output.format == Format::Human {
        writeln!(out, "{}", header(target.pid(), args.target.interval))?;
        writeln!(
            out,
            "{:>8} {:>10} {:>10} {:>12} {:>10} {:>12} {:>10} {:>10}",
            "interval",
            "both",
            "only-uffd",
            "only-softdty",
            "uffd-ms",
            "softdirty-ms",
            "clear-ms",
            "stopped-ms"
        )?;
        out.flush()?;
    }
    let since = Instant::now();
    let mut cadence = Cadence::start(&args.target, since);
    let mut total = Total {
        pid: target.pid(),
        intervals: 0,
        both: 0,
        only_uffd: 0,
        only_soft_dirty: 0,
        costs: Costs::default(),
        reason: "signal",
    };
    let reason = loop {
        let wake = track::wait_until(cadence.deadline(), &target, stop, None, None);
        if let Wake::TargetExited = wake {
            break "target-exited";
        }
        let time = SystemTime::now();
        let t0 = Instant::now();
        let frozen = match target.freeze() {
            Ok(f) => f,
            // Stopping an exiting target fails before its memory is gone.
            Err(Error::Gone { .. }) => break "target-exited",
            Err(e) => return Err(e.into()),
        };
        let seq = total.intervals + 1;
        let ta = Instant::now();
        let got_a = uffd_side.harvest_into(&mut a);
        let uffd_us = ta.elapsed().as_micros() as u64;
        let tb = Instant::now();
        let got_b = soft_side.harvest_into(&mut b);
        let soft_dirty_us = tb.elapsed().as_micros() as u64;
        drop(frozen);
        let stopped_us = t0.elapsed().as_micros() as u64;
        match (got_a, got_b) {
            (Ok(()), Ok(())) => {}
            (
                Err(Error::Gone {
                    why: Gone::Exec, ..
                }),
                _,
            )
            | (
                _,
                Err(Error::Gone {
                    why: Gone::Exec, ..
                }),
            ) => break "exec",
            (Err(Error::Gone { .. }), _) | (_, Err(Error::Gone { .. })) => break "target-exited",
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        }
        let clear_refs_us = b.clear_refs_cost().unwrap_or_default().as_micros() as u64;
        // Only memory both sides track is compared: read-only memory still registered with
        // the userfaultfd, or memory another userfaultfd owns, would differ by coverage alone.
        let common = a.tracked().intersection(b.tracked());
        let (a, b) = (
            a.dirty().intersection(&common),
            b.dirty().intersection(&common),
        );
        let both = a.intersection(&b).into_vec();
        let only_uffd = a.difference(&b).into_vec();
        let only_soft = b.difference(&a).into_vec();
        let interval = Interval {
            seq,
            time: Timestamp(time),
            both: pages(&both, page_size),
            only_uffd: pages(&only_uffd, page_size),
            only_soft_dirty: pages(&only_soft, page_size),
            costs: Costs {
                uffd_us,
                soft_dirty_us,
                clear_refs_us,
                stopped_us,
            },
            only_uffd_ranges: dirty_runs(&only_uffd, page_size),
            only_soft_dirty_ranges: dirty_runs(&only_soft, page_size),
            both_ranges: dirty_runs(&both, page_size),
        };
        total.intervals = seq;
        total.both += interval.both;
        total.only_uffd += interval.only_uffd;
        total.only_soft_dirty += interval.only_soft_dirty;
        total.costs.uffd_us += uffd_us;
        total.costs.soft_dirty_us += soft_dirty_us;
        total.costs.clear_refs_us += clear_refs_us;
        total.costs.stopped_us += stopped_us;
        let written = match args.output.format {
            Format::Json => serde_json::to_writer(&mut out, &Record::Compare(&interval))
                .map_err(io::Error::from)
                .and_then(|()| writeln!(out)),
            Format::Human => print_row(
                &mut out,
                &seq.to_string(),
                interval.both,
                interval.only_uffd,
                interval.only_soft_dirty,
                &interval.costs,
            ),
        };
        match written.and_then(|()| out.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::Success),
            r => r?,
        }
        if let Wake::Stop = wake {
            break "signal";
        }
        if args.target.count.is_some_and(|n| seq >= n) {
            break "count";
        }
        if cadence.over() {
            break "duration";
        }
        cadence.advance();
    };
    total.reason = reason;
    let r = match args.output.format {
        Format::Json => serde_json::to_writer(&mut out, &Record::CompareTotal(&total))
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out)),
        Format::Human => {
            let mean = |v: u64| v.checked_div(total.intervals).unwrap_or(0);
            let c = Costs {
                uffd_us: mean(total.costs.uffd_us),
                soft_dirty_us: mean(total.costs.soft_dirty_us),
                clear_refs_us: mean(total.costs.clear_refs_us),
                stopped_us: mean(total.costs.stopped_us),
            };
            print_row(
                &mut out,
                "total",
                total.both,
                total.only_uffd,
                total.only_soft_dirty,
                &c,
            )
            .and_then(|()| {
                if args.output.look.quiet {
                    return Ok(());
                }
                writeln!(
                    out,
                    "(costs in the total row are means per interval; ended: {reason})"
                )
            })
        }
    };
    match r.and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        r => r?,
    }
    drop(uffd_side);
    let status = match reason {
        "target-exited" => target.wait(),
        _ => target.exit_status(),
    };
    Ok(match status {
        Some(s) if reason == "target-exited" => ExitCode::Command(s.clamp(0, 255) as u8),
        _ => ExitCode::Success,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_interval_reads_as_in_track() {
        // `{:?}` made it "200ms" here and "200 ms" in track's header.
        let line = super::header(42, Duration::from_millis(200));
        assert!(line.contains(", every 200 ms;"), "{line}");
        let line = super::header(42, Duration::from_millis(1500));
        assert!(line.contains(", every 1.5 s;"), "{line}");
    }
}
