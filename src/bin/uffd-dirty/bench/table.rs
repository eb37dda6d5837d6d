//! The bench results as Markdown tables, one per measurement, with the command line and the
//! machine that produced them.

use std::io::{self, Write};

use super::{Case, Results};

pub(super) fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

pub(super) fn percent(f: f64) -> String {
    format!("{}%", (f * 1000.0).round() / 10.0)
}

fn populated(case: &Case) -> String {
    match case.populated {
        p if p >= 1.0 => "all".into(),
        p if p <= 0.0 => "none".into(),
        p => percent(p),
    }
}

pub(super) fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

pub fn print(out: &mut impl Write, r: &Results) -> io::Result<()> {
    writeln!(out, "Command: `{}`  ", r.command)?;
    if let Some(m) = &r.machine {
        writeln!(out, "Machine: {}  ", m.describe())?;
        let [one, five, fifteen] = m.load_at_start;
        write!(
            out,
            "Load average: {one:.2} {five:.2} {fifteen:.2} at the start"
        )?;
        if let Some([one, five, fifteen]) = r.load_at_end {
            write!(out, ", {one:.2} {five:.2} {fifteen:.2} at the end")?;
        }
        writeln!(out)?;
    }
    for w in &r.warnings {
        writeln!(out, "\n**Warning**: {w}; run again on an idle machine.")?;
    }
    if !r.harvest.is_empty() {
        harvest(out, r)?;
    }
    if !r.attach.is_empty() {
        attach(out, r)?;
    }
    if !r.slowdown.is_empty() {
        slowdown(out, r)?;
    }
    if !r.footprint.is_empty() {
        footprint(out, r)?;
    }
    super::snapshot::print(out, &r.snapshot, r.rounds)?;
    if !r.pauses.is_empty() {
        writeln!(
            out,
            "\n## Pauses\n\nHow long the tracker held the target's mmap lock at a time (read or write: the target's mmap, munmap, mprotect and brk, and its page faults that need the lock, wait meanwhile), from the kernel's `mmap_lock` tracepoints, per phase: attach, three harvests with nothing written, one each after 1, 10 and 100 % of the populated pages were written, and detach. *Whole walks*: the engine before issue 18 (each walk, arming piece and the release under one hold); *bounded*: as it is. The target's own thread calling mmap+munmap every 200 µs shows what it felt; *untracked* is the machine's noise (a nested VM).\n\n{}",
            super::pauses::table(&r.pauses)
        )?;
    }
    if !r.mappings.is_empty() {
        writeln!(
            out,
            "\n## Mappings\n\nA target whose pages alternate writable and read-only, a mapping each, writing 64 pages before each harvest (pagemap-scan); *flipped*: read-only pages made writable or back between harvests, one per 200 mappings (each merges three mappings into one or splits one into three: about 1.5 % of the mappings change). Beside each harvest, one bare `PAGEMAP_SCAN` get + re-protect over the whole address space. Medians of the rounds. The harvest lists the mappings whole once in 10 s (and for each snapshot round) and watches them cheaply in between: *with the full listing* is one such harvest, and *at 1 Hz* weighs it in as `track`'s default interval does (one in ten).\n\n{}",
            super::mappings::table(&r.mappings)
        )?;
    }
    if !r.redis.is_empty() {
        writeln!(
            out,
            "\n## Redis\n\n`redis-server` on loopback TCP driven by `redis-benchmark` (SET, 256-byte values, 50 clients, keys drawn from 300 k filled before the rounds), untracked and under the real `uffd-dirty track --pid` at each rate, in an order rotating every round; medians of {} rounds. *Faults/request*: the server's page faults per request, write-protect faults among them; *preempted*: how often its main thread was taken off its CPU while runnable, per 1000 requests.\n\n{}",
            r.rounds,
            super::redis::table(&r.redis)
        )?;
    }
    Ok(())
}

fn harvest(out: &mut impl Write, r: &Results) -> io::Result<()> {
    writeln!(
        out,
        "\n## Harvest\n\nMedian of {} harvests per case (min–max); a harvest is what one `track` interval does: mapping refresh + get + re-arm, checked to report every dirtied page. Dirty = part of the populated pages written before the harvest. *Bare ioctl*: `PAGEMAP_SCAN` get + re-protect alone over the same memory; *ours ÷ bare*: the whole harvest against it. *Watch*: the part of a harvest that looks for new, changed and replaced mappings (a `PROCMAP_QUERY` per VMA, a `PAGEMAP_SCAN` query of the armed memory): kernel calls whose cost follows the number of VMAs, not the tracked size. *(ours − watch) ÷ bare*: what our userspace adds to the kernel's `PAGEMAP_SCAN`. *First write*: extra cost to the target of its first write to a page after re-protection, over a rewrite.\n",
        r.rounds
    )?;
    writeln!(
        out,
        "| size | populated | method | dirty | harvest ms (min–max) | ms per GiB | µs per dirty page | bare ioctl ms | ours ÷ bare | watch µs | (ours − watch) ÷ bare | first write +µs/page |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for h in &r.harvest {
        writeln!(
            out,
            "| {} | {} | {} | {} ({} p) | {:.2} ({:.2}–{:.2}) | {:.2} | {} | {} | {} | {} | {} | {} |",
            size(h.case.size_bytes),
            populated(&h.case),
            h.method,
            percent(h.dirty_fraction),
            h.dirty_pages,
            h.harvest_ms_median,
            h.harvest_ms_min,
            h.harvest_ms_max,
            h.ms_per_gib,
            opt(h.us_per_dirty_page, 3),
            opt(h.bare_ioctl_ms_median, 2),
            opt(
                h.bare_ioctl_ms_median
                    .map(|b| h.harvest_ms_median / b.max(1e-6)),
                2
            ),
            opt(h.watch_us_median, 1),
            opt(
                h.bare_ioctl_ms_median
                    .zip(h.without_watch_ms_median)
                    .map(|(b, w)| w / b.max(1e-6)),
                2
            ),
            opt(h.first_write_extra_us, 2),
        )?;
    }
    let others: Vec<&str> = {
        let mut m: Vec<&str> = r.harvest.iter().map(|h| h.method.as_str()).collect();
        m.dedup();
        m.retain(|&x| x != "pagemap-scan");
        m.sort();
        m.dedup();
        m
    };
    if others.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nHarvest time of each method ÷ pagemap-scan's, same size and dirty fraction (higher: pagemap-scan is that many times faster).\n"
    )?;
    write!(out, "| size | populated | dirty |")?;
    for m in &others {
        write!(out, " {m} ÷ pagemap-scan |")?;
    }
    writeln!(out, "\n|---|---|---|{}", "---|".repeat(others.len()))?;
    for scan in r.harvest.iter().filter(|h| h.method == "pagemap-scan") {
        write!(
            out,
            "| {} | {} | {} |",
            size(scan.case.size_bytes),
            populated(&scan.case),
            percent(scan.dirty_fraction)
        )?;
        for m in &others {
            let other = r.harvest.iter().find(|h| {
                h.method == *m && h.case == scan.case && h.dirty_fraction == scan.dirty_fraction
            });
            write!(
                out,
                " {} |",
                opt(
                    other.map(|o| o.harvest_ms_median / scan.harvest_ms_median.max(1e-6)),
                    1
                )
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn attach(out: &mut impl Write, r: &Results) -> io::Result<()> {
    writeln!(
        out,
        "\n## Attach and detach\n\nMedian of 3 attach + detach cycles on one target. Attach: from the first ptrace call to armed (register + initial protection; soft-dirty: freeze + clear_refs). Detach: closing the userfaultfd (the kernel unregisters every range). VmPTE: the target's page-table memory before attaching, and what arming added.\n"
    )?;
    writeln!(
        out,
        "| size | populated | method | attach ms | detach ms | VmPTE KiB | VmPTE +KiB |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for a in &r.attach {
        writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.2} | {} | {} |",
            size(a.case.size_bytes),
            populated(&a.case),
            a.method,
            a.attach_ms,
            a.detach_ms,
            a.vmpte_before_kib,
            a.vmpte_growth_kib
        )?;
    }
    Ok(())
}

fn slowdown(out: &mut impl Write, r: &Results) -> io::Result<()> {
    let first = &r.slowdown[0];
    writeln!(
        out,
        "\n## Target slowdown\n\nThe target rewrites {} pages spread over a populated {} buffer, over and over; each harvest re-protects them, so every interval the first write to each is a write-protect fault. Median of {} runs per configuration (min–max), the configurations taken in turn each round; *vs untracked*: median ÷ the untracked median.\n",
        first.rewritten_pages,
        size(first.size_bytes),
        r.rounds
    )?;
    writeln!(
        out,
        "| method | rate | page-writes/s (min–max) | vs untracked | harvests |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    for s in &r.slowdown {
        writeln!(
            out,
            "| {} | {} | {:.3e} ({:.3e}–{:.3e}) | {:.3} | {} |",
            s.method,
            s.rate_hz.map_or("–".into(), |h| format!("{h} Hz")),
            s.page_writes_per_s,
            s.page_writes_per_s_min,
            s.page_writes_per_s_max,
            s.vs_untracked,
            s.harvests
        )?;
    }
    Ok(())
}

fn footprint(out: &mut impl Write, r: &Results) -> io::Result<()> {
    writeln!(
        out,
        "\n## Tracker footprint\n\nThe real `uffd-dirty track --pid` at {} Hz while the target rewrites 1% of its populated pages, measured over a window of steady tracking (attach before it, detach after it). *Harvest ms/s*: wall time in harvests per second (the deltas' `scan_us`); *CPU ÷ harvest*: what waiting, output and bookkeeping add to it. The harvests here are slower than in the harvest table: the target writes while they re-protect, so they contend for its page-table locks and flush its TLB.\n",
        r.footprint[0].rate_hz
    )?;
    writeln!(
        out,
        "| size | populated | method | deltas | CPU ms/s | harvest ms/s | CPU ÷ harvest | attach CPU ms | peak RSS MiB |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    for f in &r.footprint {
        writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} |",
            size(f.case.size_bytes),
            populated(&f.case),
            f.method,
            f.deltas,
            f.cpu_ms_per_s,
            f.harvest_ms_per_s,
            f.cpu_vs_harvest,
            f.attach_cpu_ms,
            f.peak_rss_mib,
        )?;
    }
    Ok(())
}
