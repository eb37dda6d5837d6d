//! The fast path: `PAGEMAP_SCAN` with `PM_SCAN_WP_MATCHING` and
//! `category_mask = return_mask = PAGE_IS_WRITTEN`. The kernel reports every page without the
//! uffd-wp bit and re-protects it under the same page-table lock, so a write is either in this
//! harvest or still unprotected for the next one. No `PM_SCAN_CHECK_WPASYNC`: the kernel skips
//! unregistered VMAs by itself, and a whole-span scan cannot go stale under VMA churn.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use super::push_run;
use crate::maps::{Span, Vma};
use crate::sys;
use crate::sys::abi::page_region;
use crate::sys::pagemap::{Categories, NO_REGION, Scan};

/// Output regions per ioctl at first. Regions are maximal runs, so one call usually covers a
/// harvest; a harvest that fills the buffer doubles it, up to [`VEC_LEN_MAX`], so a target
/// that scatters its writes costs few ioctls from then on, and no allocation once grown.
const VEC_LEN: usize = 2048;
/// 64 Ki regions of 24 bytes: 1.5 MiB at most.
const VEC_LEN_MAX: usize = 1 << 16;
/// The most memory one arming ioctl protects (in pieces cut at its multiples). A walk holds
/// the target's mmap lock for reading throughout, which stalls the target's mmap, munmap,
/// mprotect and brk: 64 MiB is 32 page tables, about a millisecond to protect populated,
/// where 1 GiB held it for 15 ms. An ioctl costs about 350 ns.
pub const HOLD_SPAN: u64 = 64 << 20;

/// The most pages one query finds (`max_pages`): what a harvest re-protects per hold of the
/// lock, 64 MiB worth. (A query's walk is not cut by address: it covers the whole scope,
/// holes included, which cost nothing to walk; a clean walk of 4 GiB populated takes about
/// a millisecond.)
const HOLD_PAGES: u64 = HOLD_SPAN / 4096;

/// The buffer offered to the unarmed-memory query, which usually finds nothing. The kernel
/// allocates a bounce buffer of up to 512 regions per call: 12 KiB from the page allocator,
/// where 64 regions come from a slab.
const FEW: usize = 64;

pub struct PagemapScan {
    pagemap: File,
    vec: Vec<page_region>,
    /// Scratch for the unarmed-memory query, kept between harvests.
    found: Vec<Span>,
    /// The most one ioctl walks ([`HOLD_SPAN`]; `u64::MAX`: whole spans, for comparison).
    hold_span: u64,
}

impl PagemapScan {
    pub fn new(pagemap: File) -> Self {
        PagemapScan {
            pagemap,
            vec: vec![NO_REGION; VEC_LEN],
            found: Vec::new(),
            hold_span: HOLD_SPAN,
        }
    }

    /// Walk whole spans in one ioctl each, as before the walks were bounded (for benchmarks).
    pub fn unbounded(mut self) -> Self {
        self.hold_span = u64::MAX;
        self
    }

    /// Where an ioctl from `cur` stops: the next multiple of the hold span, or `end`.
    fn piece_end(&self, cur: u64, end: u64) -> u64 {
        match (cur / self.hold_span + 1).checked_mul(self.hold_span) {
            Some(cut) => cut.min(end),
            None => end,
        }
    }

    /// Write-protect every page of the registered parts of `span`, never-touched ones
    /// included (needs the PMD-hole fix for empty page-table ranges). Reports nothing.
    pub fn protect(&mut self, span: Span) -> io::Result<()> {
        let query = Scan::pages()
            .all_of(Categories::WRITTEN)
            .report(Categories::WRITTEN)
            .write_protect();
        let mut cur = span.start;
        while cur < span.end {
            let end = self.piece_end(cur, span.end);
            let walk_end = query.run(self.pagemap.as_fd(), cur..end, &mut [])?.walk_end;
            cur = if walk_end > cur && walk_end < end {
                // Backed out at a hugetlb page the piece's end splits: it goes whole next.
                walk_end
            } else if walk_end <= cur && end < span.end {
                // A hugetlb page from `cur` on is cut by the piece's end: take the rest whole.
                query.run(self.pagemap.as_fd(), cur..span.end, &mut [])?;
                span.end
            } else {
                end
            };
        }
        Ok(())
    }

    /// Whether the address space this pagemap fd was opened on is gone (the process exec'ed
    /// or exited): reading it then yields no bytes, where a live one gives an entry even for
    /// an unmapped address. (PAGEMAP_SCAN on a dead mm just finds no VMAs and succeeds.)
    pub fn mm_is_gone(&self) -> bool {
        let mut entry = [0u8; 8];
        matches!(sys::pread_full(self.pagemap.as_fd(), &mut entry, 0), Ok(0))
    }

    /// Arm a newly registered span without hiding what was written before it was registered,
    /// appending to `populated` the pages that must be reported dirty for that reason.
    ///
    /// Only empty slots (neither present nor swapped) are protected, on the generic walk path
    /// (a vector is passed, so the no-vector fast path that protects everything is not taken).
    /// Pages populated before arming stay unprotected and the next harvest reports them. One
    /// race remains in the kernel: an empty page-table range (a PMD hole) is armed with
    /// `uffd_wp_range()` after the walk saw it empty, which also protects a page a concurrent
    /// fault populated meanwhile. So every armed range is checked again afterwards, and what
    /// is present in it now goes to `populated` (a page merely read in that instant is a
    /// false positive). Only PRESENT is checked: an armed slot reads SWAPPED (markers are swap
    /// entries), and a page written and swapped out within those microseconds is not a case
    /// reclaim produces.
    pub fn protect_unpopulated(&mut self, span: Span, populated: &mut Vec<Span>) -> io::Result<()> {
        let arm = Scan::pages()
            .none_of(Categories::PRESENT | Categories::SWAPPED)
            // Empty slots read WRITTEN in uffd-wp VMAs: this reports every range armed.
            .report(Categories::WRITTEN)
            .write_protect();
        let mut armed = Vec::new();
        self.runs_of(arm, &[span], VEC_LEN_MAX, &mut armed)?;
        self.present(&armed, populated)
    }

    /// Protect the present pages of `span` that belong to a file, not to the process (in a
    /// private file mapping: never written, since a write copies the page), reporting
    /// nothing. Page by page under the page-table lock, as every WP_MATCHING walk: a page
    /// written after it was looked at is copied, unprotected, and read written next time.
    pub fn protect_file_pages(&mut self, span: Span) -> io::Result<()> {
        let query = Scan::pages()
            .all_of(Categories::PRESENT | Categories::FILE)
            .report(Categories::PRESENT)
            .write_protect();
        // A vector is passed, so the no-vector fast path, which protects everything, is never
        // taken.
        self.walk(span, query, VEC_LEN_MAX, |_| {})
    }

    /// Append to `out` the runs of populated (present or swapped) pages in `spans`.
    pub fn populated(&mut self, spans: &[Span], out: &mut Vec<Span>) -> io::Result<()> {
        self.having(Categories::PRESENT | Categories::SWAPPED, spans, out)
    }

    /// Append to `out` the runs of present pages in `spans` (a uffd-wp marker reads as
    /// SWAPPED, so for shared memory, whose swapped pages leave the page table anyway,
    /// present is what tells a page from an armed empty slot).
    pub fn present(&mut self, spans: &[Span], out: &mut Vec<Span>) -> io::Result<()> {
        self.having(Categories::PRESENT, spans, out)
    }

    fn having(
        &mut self,
        any_of: Categories,
        spans: &[Span],
        out: &mut Vec<Span>,
    ) -> io::Result<()> {
        let query = Scan::pages().any_of(any_of).report(any_of);
        self.runs_of(query, spans, VEC_LEN_MAX, out)
    }

    /// Run `query` over every span, offering the kernel at most `cap` regions per call, and
    /// append the regions it reports to `out` as runs.
    fn runs_of(
        &mut self,
        query: Scan,
        spans: &[Span],
        cap: usize,
        out: &mut Vec<Span>,
    ) -> io::Result<()> {
        // Regions come in address order within a call; a call that ends early (`walk_end`
        // below `end`) is continued from `walk_end`, and the kernel (6.18) has been seen to
        // return regions beyond it, so the next call reports some again: those few harvests
        // are sorted and merged at the end (a page written again in between is in both).
        let mut disordered = false;
        for &span in spans {
            self.walk(span, query, cap, |regions| {
                for r in regions {
                    disordered |= out.last().is_some_and(|last| r.start < last.end);
                    push_run(out, Span::new(r.start, r.end));
                }
            })?;
        }
        if disordered {
            crate::span::union_in_place(out);
        }
        #[cfg(test)]
        if tests::FAIL_AFTER_HARVEST.with(|f| f.replace(false)) {
            return Err(io::Error::other(
                "failure injected after the harvest's calls",
            ));
        }
        Ok(())
    }

    /// The harvest for sparse memory: report and re-protect written pages that exist
    /// (present or swapped), never touching empty slots, so no page table is allocated for
    /// memory the target never used. (The fast path would arm every empty slot.)
    pub fn harvest_populated(&mut self, spans: &[Span], out: &mut Vec<Span>) -> io::Result<()> {
        let query = Scan::pages()
            .all_of(Categories::WRITTEN)
            .any_of(Categories::PRESENT | Categories::SWAPPED)
            .report(Categories::WRITTEN)
            .write_protect();
        self.runs_of(query, spans, VEC_LEN_MAX, out)
    }

    /// Append to `out` the parts of `spans` (sorted, disjoint) that are mapped but not armed
    /// with our userfaultfd. The kernel skips wp-async VMAs without walking them (the
    /// VMA-level WPALLOWED test), so only unarmed memory costs anything, page by page.
    /// Neighbouring spans go in one call when what `vmas` (the last listing) maps between
    /// them is small, and what is found there is dropped; a bigger gap (a library's text,
    /// mostly) costs a call instead of a walk.
    pub fn unarmed(&mut self, spans: &[Span], vmas: &[Vma], out: &mut Vec<Span>) -> io::Result<()> {
        // Walking a page of unarmed memory costs about 15 ns, a call about 350 ns (measured
        // here): a gap of 16 pages costs less to walk.
        const WALK_BETWEEN: u64 = 64 << 10;
        let query = Scan::pages().none_of(Categories::WPALLOWED);
        let mut found = std::mem::take(&mut self.found);
        let mut i = 0;
        while i < spans.len() {
            let mut j = i;
            while j + 1 < spans.len()
                && mapped_within(vmas, Span::new(spans[j].end, spans[j + 1].start)) <= WALK_BETWEEN
            {
                j += 1;
            }
            let cluster = &spans[i..=j];
            found.clear();
            let r = self.walk(
                Span::new(cluster[0].start, cluster[cluster.len() - 1].end),
                query,
                FEW,
                |regions| {
                    found.extend(regions.iter().map(|r| Span::new(r.start, r.end)));
                },
            );
            if let Err(e) = r {
                self.found = found;
                return Err(e);
            }
            clip(&found, cluster, out);
            i = j + 1;
        }
        self.found = found;
        Ok(())
    }

    /// Whether any of `spans` holds mapped memory now, registered or not: one call per span,
    /// stopped at the first page found, costing nothing where no VMA is.
    pub fn any_mapped(&mut self, spans: &[Span]) -> io::Result<bool> {
        let query = Scan::pages().max_pages(1);
        for span in spans {
            let got = query.run(
                self.pagemap.as_fd(),
                span.start..span.end,
                &mut self.vec[..1],
            )?;
            // Stopped short without a page: at a huge page the span's edge splits.
            if !got.regions.is_empty() || got.walk_end < span.end {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Run `query` over `span`, resuming at `walk_end` until the span is done, and hand each
    /// batch of at most `cap` output regions to `sink`.
    fn walk(
        &mut self,
        span: Span,
        query: Scan,
        cap: usize,
        mut sink: impl FnMut(&[page_region]),
    ) -> io::Result<()> {
        let mut cur = span.start;
        let bounded = if self.hold_span == u64::MAX {
            query
        } else {
            query.max_pages(HOLD_PAGES)
        };
        // Bounded, unless a call made no progress: a huge page larger than the bound (1 GiB
        // hugetlb) is backed out of whole, and then goes in one call of its own.
        let mut this = bounded;
        while cur < span.end {
            let len = cap.min(self.vec.len());
            let got = this.run(self.pagemap.as_fd(), cur..span.end, &mut self.vec[..len])?;
            let (n, walk_end) = (got.regions.len(), got.walk_end);
            sink(got.regions);
            if n == self.vec.len() && n < VEC_LEN_MAX {
                self.vec.resize(n * 2, NO_REGION);
            }
            if walk_end <= cur && this.limits_pages() {
                this = query.max_pages(0);
                continue;
            }
            this = bounded;
            if walk_end <= cur {
                // The kernel backed out without progress: a range edge splits a hugetlb page.
                return Err(io::Error::other(format!(
                    "PAGEMAP_SCAN made no progress at {cur:#x}: a tracked range edge splits a huge page"
                )));
            }
            cur = walk_end;
        }
        Ok(())
    }

    /// Append the maximal runs of pages written in `spans` since the previous harvest to `out`
    /// (sorted, merged), and re-arm them, losing no write that races with the harvest.
    pub fn harvest(&mut self, spans: &[Span], out: &mut Vec<Span>) -> io::Result<()> {
        let query = Scan::pages()
            .all_of(Categories::WRITTEN)
            .report(Categories::WRITTEN)
            .write_protect();
        self.runs_of(query, spans, VEC_LEN_MAX, out)
    }
}

/// Bytes of `vmas` (sorted) inside `gap`.
fn mapped_within(vmas: &[Vma], gap: Span) -> u64 {
    let first = vmas.partition_point(|v| v.end <= gap.start);
    vmas[first..]
        .iter()
        .take_while(|v| v.start < gap.end)
        .map(|v| v.end.min(gap.end) - v.start.max(gap.start))
        .sum()
}

/// Append to `out` the parts of `found` (sorted regions) that lie in `spans` (sorted).
fn clip(found: &[Span], spans: &[Span], out: &mut Vec<Span>) {
    let mut s = 0;
    for f in found {
        while s < spans.len() && spans[s].end <= f.start {
            s += 1;
        }
        for span in spans[s..].iter().take_while(|span| span.start < f.end) {
            if let Some(part) = span.intersect(f) {
                push_run(out, part);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    thread_local! {
        /// Fail the next harvest of this thread after its ioctls ran (they re-protected
        /// what they reported).
        pub(crate) static FAIL_AFTER_HARVEST: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    use super::*;

    fn vma(line: &str) -> Vma {
        crate::maps::parse_line(line).unwrap()
    }

    #[test]
    fn mapped_within_counts_only_the_gap() {
        let vmas = [
            vma("1000-3000 r-xp 00000000 08:01 7 /lib/a.so"),
            vma("3000-4000 rw-p 00002000 08:01 7 /lib/a.so"),
            vma("8000-a000 r--p 00000000 08:01 8 /lib/b.so"),
        ];
        assert_eq!(mapped_within(&vmas, Span::new(0x2000, 0x9000)), 0x3000);
        assert_eq!(mapped_within(&vmas, Span::new(0x4000, 0x8000)), 0, "a hole");
        assert_eq!(mapped_within(&vmas, Span::new(0xa000, 0xf000)), 0);
    }

    #[test]
    fn clip_keeps_only_what_lies_in_the_spans() {
        let spans = [Span::new(0x1000, 0x3000), Span::new(0x5000, 0x6000)];
        let found = [
            Span::new(0x0, 0x2000),
            Span::new(0x2800, 0x5800),
            Span::new(0x7000, 0x8000),
        ];
        let mut out = Vec::new();
        clip(&found, &spans, &mut out);
        assert_eq!(
            out,
            vec![
                Span::new(0x1000, 0x2000),
                Span::new(0x2800, 0x3000),
                Span::new(0x5000, 0x5800)
            ]
        );
    }
}
