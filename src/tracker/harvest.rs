//! The harvest proper, by strategy: the dense fast path (one PAGEMAP_SCAN get-and-protect),
//! sparse memory (populated pages only, and the pages that vanished), shared memory (holes
//! punched), and plain pagemap reads (`--method pagemap-read`).

use std::io;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};

use super::registry::is_gone;
use super::uffd_space::{Coverage, Reading, Scratch, UffdSpace};
use super::{Gone, Harvest, why_gone};
use crate::maps;
use crate::process::Process;
use crate::scan::PagemapRead;
use crate::scan::pagemap_read::ArmedAs;
use crate::scope::Scope;
use crate::span::Span;

impl UffdSpace {
    /// Derive what a harvest covers, unless neither `scope` nor the registry changed since.
    fn cover(&mut self, scope: &[Span]) {
        if !self.coverage_stale && self.coverage.scope == scope {
            return;
        }
        let harvested = maps::subtract(scope, &self.registry.excluded);
        let shared = maps::union(
            self.registry
                .pieces
                .iter()
                .filter(|p| p.vma.shared)
                .map(|p| p.span)
                .collect(),
        );
        self.coverage = Coverage {
            scope: scope.to_vec(),
            dense: maps::subtract(&harvested, &self.sparse),
            sparse: maps::intersect(&self.sparse, &harvested),
            shared: maps::intersect(&shared, &harvested),
            armed: maps::intersect(&self.registry.armed, scope),
            harvested,
        };
        self.coverage_stale = false;
    }

    /// The fast path over dense memory; over sparse memory, written pages that exist plus the
    /// pages that vanished since the last harvest (zapped: their content is zero now).
    pub(crate) fn harvest_all(&mut self, scope: &[Span]) -> io::Result<()> {
        self.cover(scope);
        let coverage = std::mem::take(&mut self.coverage);
        let r = self.harvest_covered(&coverage);
        self.coverage = coverage;
        r
    }

    fn harvest_covered(&mut self, c: &Coverage) -> io::Result<()> {
        // Shared memory: punching a hole (MADV_REMOVE, fallocate) zeroes pages but the kernel
        // re-installs the uffd-wp marker over them, so they read clean. Pages present at the
        // last harvest and gone now are reported (a zap that kept the page, MADV_DONTNEED of a
        // shared mapping, is a false positive).
        let mut shared_now = std::mem::take(&mut self.scratch.shared_now);
        shared_now.clear();
        if !c.shared.is_empty() {
            self.scanner.present(&c.shared, &mut shared_now)?;
        }
        let r = self.harvest_unshared(c);
        if !c.shared.is_empty() {
            let Scratch {
                before, vanished, ..
            } = &mut self.scratch;
            before.clear();
            maps::intersect_into(&self.shared_populated, &c.shared, before);
            vanished.clear();
            maps::subtract_into(before, &shared_now, vanished);
            maps::intersect_into(&self.runs, &c.shared, &mut shared_now);
            maps::union_in_place(&mut shared_now);
            std::mem::swap(&mut self.shared_populated, &mut shared_now);
            if !vanished.is_empty() {
                self.runs.extend_from_slice(vanished);
                maps::union_in_place(&mut self.runs);
            }
        }
        self.scratch.shared_now = shared_now;
        r
    }

    fn harvest_unshared(&mut self, c: &Coverage) -> io::Result<()> {
        // Taken out for the harvest, which borrows the rest of `self`.
        let mut reading = std::mem::replace(&mut self.reading, Reading::Scan);
        let r = match &mut reading {
            Reading::Scan => self.harvest_scanned(c),
            Reading::Reads { pagemap, spans } => {
                self.harvest_by_reads(pagemap, spans, &c.harvested)
            }
        };
        self.reading = reading;
        r
    }

    /// PAGEMAP_SCAN: the fast path over dense memory; over sparse memory, the written pages
    /// that exist plus those that vanished since the last harvest.
    fn harvest_scanned(&mut self, c: &Coverage) -> io::Result<()> {
        if c.sparse.is_empty() {
            return self.scanner.harvest(&c.harvested, &mut self.runs);
        }
        self.scanner.harvest(&c.dense, &mut self.runs)?;
        let Scratch {
            now,
            written,
            before,
            ..
        } = &mut self.scratch;
        now.clear();
        self.scanner.populated(&c.sparse, now)?;
        written.clear();
        self.scanner.harvest_populated(&c.sparse, written)?;
        before.clear();
        maps::intersect_into(&self.sparse_populated, &c.sparse, before);
        maps::subtract_into(before, now, &mut self.runs);
        self.runs.extend_from_slice(written);
        maps::union_in_place(&mut self.runs);
        // A page populated after the snapshot but found written by the harvest counts as
        // populated too, or a zap of it before the next harvest would go unseen.
        now.extend_from_slice(written);
        maps::union_in_place(now);
        std::mem::swap(&mut self.sparse_populated, now);
        Ok(())
    }

    /// `--method pagemap-read`: read the entries of the armed memory, then re-protect what was
    /// read as written (see `scan::pagemap_read` for why nothing is lost).
    fn harvest_by_reads(
        &mut self,
        reader: &mut PagemapRead,
        read_spans: &mut Vec<Span>,
        scope: &[Span],
    ) -> io::Result<()> {
        // Memory that was armed stays registered while mapped, even made read-only, and a
        // write just before the mprotect is still unprotected there: keep reading it.
        let mapped = maps::union(
            self.vmas
                .iter()
                .map(|v| Span::new(v.start, v.end))
                .collect(),
        );
        let armed = maps::intersect(
            &maps::union(
                self.registry
                    .armed
                    .iter()
                    .copied()
                    .chain(maps::intersect(read_spans, &mapped))
                    .collect(),
            ),
            scope,
        );
        *read_spans = armed.clone();
        let sparse = maps::intersect(&self.sparse, &armed);
        for span in maps::subtract(&armed, &sparse) {
            reader.scan(span, ArmedAs::Whole, &mut self.runs, None)?;
        }
        let mut now = Vec::new();
        for &span in &sparse {
            reader.scan(span, ArmedAs::PopulatedOnly, &mut self.runs, Some(&mut now))?;
        }
        // Kept in `runs` whatever happens next: a protect that fails leaves the pages read as
        // written (some of them protected already) for the next harvest to report.
        maps::union_in_place(&mut self.runs);
        for &run in &self.runs {
            match self.uffd.writeprotect(run) {
                // Unmapped or replaced since it was read: nothing left to protect.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                r => r?,
            }
        }
        if !sparse.is_empty() {
            let before = maps::intersect(&self.sparse_populated, &sparse);
            self.runs.extend(maps::subtract(&before, &now));
            self.sparse_populated = now;
            self.runs = maps::union(std::mem::take(&mut self.runs));
        }
        Ok(())
    }

    /// What a delta's bitmaps cover, into `out`: the armed memory in scope, and memory that
    /// stopped being tracked (made read-only) but stays registered until unmapped, whose
    /// writes are still reported. Linear in the runs; only dirty runs outside the armed
    /// memory are sorted in.
    fn tracked_into(&mut self, out: &mut Vec<Span>) {
        out.clear();
        out.extend_from_slice(&self.coverage.armed);
        let outside = &mut self.scratch.outside;
        outside.clear();
        maps::subtract_into(&self.runs, &self.coverage.armed, outside);
        if !outside.is_empty() {
            out.extend_from_slice(outside);
            maps::union_in_place(out);
        }
    }

    /// Tell apart an exit, an exec (our mm is gone, see `why_gone`), and a real error.
    pub(crate) fn gone(&self, target: &Process, e: &io::Error) -> Option<Gone> {
        if target.check_alive().is_err() {
            return Some(Gone::Exited);
        }
        let mm_may_be_gone = is_gone(e) || e.kind() == io::ErrorKind::NotFound;
        (mm_may_be_gone && self.scanner.mm_is_gone()).then(|| why_gone(target))
    }

    /// One harvest into `into`, or why the memory is gone.
    pub(crate) fn harvest(
        &mut self,
        target: &Process,
        scope: &Scope,
        into: &mut Harvest,
    ) -> Result<std::result::Result<(), Gone>> {
        // The harvest's instant is taken before the mapping refresh: a mapping replaced after
        // this point may be seen only by the next harvest, and so may a page written after it.
        into.time = Some(SystemTime::now());
        into.instant = Some(Instant::now());
        let t0 = Instant::now();
        // An exec or an exit leaves our fds on a dead mm, where PAGEMAP_SCAN just finds nothing:
        // check, unless the refresh starts with a full PROCMAP_QUERY pass, which fails with
        // ESRCH there.
        let queries_first =
            self.maps.queries() && !self.registry.retry && self.watch.full_pass_due();
        if !queries_first && self.scanner.mm_is_gone() {
            return Ok(Err(why_gone(target)));
        }
        if let Err(e) = self.refresh_mappings(target, scope, into) {
            return match self.gone(target, &e) {
                Some(g) => Ok(Err(g)),
                None => Err(e).context("refreshing the target's mappings"),
            };
        }
        self.watch_cost = t0.elapsed();
        into.watch = Some(self.watch_cost);
        self.runs.clear();
        self.runs.append(&mut self.carried);
        if let Err(e) = self.harvest_all(&scope.spans) {
            // A harvest that failed part way re-protected what it found so far: those pages
            // are reported by the next one, or their writes would be lost.
            std::mem::swap(&mut self.carried, &mut self.runs);
            return match self.gone(target, &e) {
                Some(g) => Ok(Err(g)),
                None => {
                    Err(e).with_context(|| format!("harvesting dirty pages of PID {}", target.pid))
                }
            };
        }
        into.cost = t0.elapsed();
        if !self.populated.is_empty() {
            self.runs.append(&mut self.populated);
            maps::union_in_place(&mut self.runs);
        }
        let tracked = into.tracked.vec_mut();
        self.tracked_into(tracked);
        // The runs go to the harvest, and its old vector comes back to be filled next time.
        std::mem::swap(&mut self.runs, into.dirty.vec_mut());
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::scan::pagemap_scan::tests::FAIL_AFTER_HARVEST;
    use crate::testing::Reap;
    use crate::{Error, Harvest, Target, TrackerBuilder};

    /// A harvest that fails after its calls re-protected the pages it found loses none of
    /// them: the next harvest reports them.
    #[test]
    fn a_failed_harvest_hands_its_pages_to_the_next() {
        if let Err(e) = crate::probe::Support::detect().require(crate::Method::PagemapScan) {
            crate::testing::skipped(format!("this kernel cannot track: {e}"));
            return;
        }
        const PAGES: usize = 16;
        let page = crate::sys::page_size() as usize;
        let region = crate::sys::AnonMapping::new(PAGES * page, 0).unwrap();
        let mut go = [0i32; 2];
        let mut done = [0i32; 2];
        // SAFETY: two-int arrays for pipe(2).
        unsafe {
            assert_eq!(libc::pipe(go.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(done.as_mut_ptr()), 0);
        }
        // SAFETY: the child only reads, writes its own memory and pipes, and pauses: no
        // allocation or lock, so forking from this multi-threaded test binary is sound.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: async-signal-safe calls on fds and memory made before the fork.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let mut b = 0u8;
                libc::read(go[0], (&mut b as *mut u8).cast(), 1);
                for i in (0..PAGES).step_by(3) {
                    region.write(i * page, 0xa5u8);
                }
                libc::write(done[1], (&b as *const u8).cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        let _child = Reap(pid);
        let target = Target::open(pid).unwrap();
        let mut tracker = TrackerBuilder::new().attach(&target).unwrap();
        let mut harvest = Harvest::new();
        tracker.harvest_into(&mut harvest).unwrap();
        // SAFETY: one byte each way over the pipes made above.
        unsafe {
            libc::write(go[1], [1u8].as_ptr().cast(), 1);
            let mut b = 0u8;
            libc::read(done[0], (&mut b as *mut u8).cast(), 1);
        }
        std::thread::sleep(Duration::from_millis(5));
        FAIL_AFTER_HARVEST.with(|f| f.set(true));
        let failed = tracker.harvest_into(&mut harvest);
        assert!(
            matches!(failed, Err(Error::Failed { .. })),
            "the injected failure: {failed:?}"
        );
        assert!(harvest.dirty().is_empty(), "a failed harvest holds nothing");
        tracker.harvest_into(&mut harvest).unwrap();
        let written: Vec<u64> = (0..PAGES)
            .step_by(3)
            .map(|i| region.addr() + (i * page) as u64)
            .collect();
        let missing: Vec<u64> = written
            .iter()
            .copied()
            .filter(|&a| !harvest.dirty().contains(a))
            .collect();
        assert!(
            missing.is_empty(),
            "lost across the failed harvest: {missing:x?}"
        );
    }
}
