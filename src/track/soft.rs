//! `--method soft-dirty`: the target's soft-dirty bits, read and cleared under a freeze.

use super::*;

/// `--method soft-dirty`: clear_refs and pagemap bit 55, no userfaultfd.
pub(crate) struct SoftMm {
    pub(crate) sd: SoftDirty,
    pub(crate) vmas: Vec<Vma>,
    pub(crate) tracked: Vec<Span>,
    /// Stop the target around read + clear (off when the caller already did).
    pub(crate) freeze: bool,
    /// How long the last clear_refs took (it holds the target's mmap write lock).
    pub(crate) last_clear_us: u64,
    /// Populated pages at the last harvest, to see zaps.
    pub(crate) populated: Vec<Span>,
}

/// Open the target's soft-dirty files and, with `clear`, clear its bits (the attach instant);
/// after an exec, `clear` is off: the new program's memory all reads dirty, as it should.
/// `freeze`: stop the target around this clear and every harvest's read + clear.
pub(crate) fn attach_soft(
    target: &Target,
    scope: &[Span],
    freeze: bool,
    clear: bool,
) -> Result<Attachment> {
    let started = Instant::now();
    let clear_refs = std::fs::OpenOptions::new()
        .write(true)
        .open(target.proc_path("clear_refs"))
        .with_context(|| format!("opening /proc/{}/clear_refs", target.pid))?;
    target.check_alive()?;
    let mut soft = SoftMm {
        sd: SoftDirty::new(target.open_proc("pagemap")?, clear_refs),
        vmas: maps::read_maps(target.pid).context("reading the target's mappings")?,
        tracked: Vec::new(),
        freeze,
        last_clear_us: 0,
        populated: Vec::new(),
    };
    let pieces = maps::select(&soft.vmas, scope);
    soft.tracked = maps::union(pieces.iter().map(|p| p.span).collect());
    let stopped = Instant::now();
    {
        let _frozen = freeze.then(|| attach::Frozen::new(target)).transpose()?;
        let (mut ignored, mut populated) = (Vec::new(), Vec::new());
        for &span in &soft.tracked {
            soft.sd.dirty(span, &mut ignored, &mut populated)?;
        }
        soft.populated = maps::union(populated);
        if clear {
            soft.sd
                .clear()
                .with_context(|| format!("clearing the soft-dirty bits of PID {}", target.pid))?;
        }
    }
    Ok(Attachment {
        mm: Source::Soft(soft),
        pieces,
        arm_method: "clear-refs",
        skipped: Vec::new(),
        attach_us: started.elapsed().as_micros() as u64,
        thread_stopped_us: if freeze {
            stopped.elapsed().as_micros() as u64
        } else {
            0
        },
    })
}

impl SoftMm {
    pub(crate) fn harvest(
        &mut self,
        target: &Target,
        scope: &[Span],
        seq: u64,
        since: Instant,
        page_size: u64,
    ) -> Result<Harvested> {
        let time = SystemTime::now();
        let t0 = Instant::now();
        // ESRCH: the pagemap fd's mm is gone (see `SoftDirty::dirty`); NotFound: so is /proc/PID.
        let gone = |e: &io::Error| {
            if target.check_alive().is_err() {
                Some(Gone::Exited)
            } else if e.raw_os_error() == Some(libc::ESRCH) || e.kind() == io::ErrorKind::NotFound {
                Some(why_gone(target))
            } else {
                None
            }
        };
        // Everything under one freeze: the listing too, or memory mapped and written between
        // listing and clearing would be cleared unread.
        let mut runs = Vec::new();
        let mut events = Vec::new();
        let result = (|| -> io::Result<()> {
            let _frozen = self
                .freeze
                .then(|| attach::Frozen::new(target))
                .transpose()
                .map_err(io::Error::other)?;
            let vmas = maps::read_maps(target.pid)?;
            // Memory read before stays read while mapped, even made read-only: a write just
            // before the mprotect is still in its bits.
            let mapped = maps::union(vmas.iter().map(|v| Span::new(v.start, v.end)).collect());
            let writable = maps::union(maps::select(&vmas, scope).iter().map(|p| p.span).collect());
            let tracked = maps::union(
                writable
                    .into_iter()
                    .chain(maps::intersect(&self.tracked, &mapped))
                    .collect(),
            );
            let added = maps::subtract(&tracked, &self.tracked);
            let removed = maps::subtract(&self.tracked, &tracked);
            events = mapping_events(&self.vmas, &vmas, added, removed, Timestamp(time));
            self.vmas = vmas;
            self.tracked = tracked;
            let mut now = Vec::new();
            for &span in &self.tracked {
                self.sd.dirty(span, &mut runs, &mut now)?;
            }
            // Soft-dirty has no bit for a zapped page (MADV_DONTNEED leaves an empty entry):
            // pages populated last time and empty now changed to zero.
            runs.extend(maps::subtract(
                &maps::intersect(&self.populated, &self.tracked),
                &now,
            ));
            self.populated = maps::union(now);
            let t = Instant::now();
            self.sd.clear()?;
            self.last_clear_us = t.elapsed().as_micros() as u64;
            Ok(())
        })();
        if let Err(e) = result {
            return gone(&e)
                .map(Err)
                .ok_or(e)
                .with_context(|| format!("reading soft-dirty bits of PID {}", target.pid));
        }
        let runs = maps::union(runs);
        let dirty_pages = runs.iter().map(|r| r.len()).sum::<u64>() / page_size;
        Ok(Ok((
            events,
            output::Delta {
                seq,
                time: Timestamp(time),
                elapsed_ms: since.elapsed().as_millis() as u64,
                dirty_pages,
                ranges: output::dirty_runs(&runs, page_size),
                scan_us: t0.elapsed().as_micros() as u64,
                bitmap: None,
                tracked: self.tracked.clone(),
            },
        )))
    }
}
