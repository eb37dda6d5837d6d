//! `--method soft-dirty`: the target's soft-dirty bits, read and cleared under a freeze.

use std::io;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};

use super::refresh::mapping_changes;
use super::{ArmedBy, Attachment, Gone, Harvest, Source, why_gone};
use crate::attach;
use crate::maps::{self, Vma};
use crate::process::Process;
use crate::scan::SoftDirty;
use crate::scope::{Scope, select};
use crate::span::Span;

/// `--method soft-dirty`: clear_refs and pagemap bit 55, no userfaultfd.
pub(crate) struct SoftDirtySpace {
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

/// How a soft-dirty attach starts.
pub(crate) struct SoftStart {
    /// Stop the target around the first clear and every harvest's read + clear.
    pub(crate) freeze: bool,
    /// Clear its bits now (the attach instant). Off after an exec: the new program's memory
    /// all reads dirty, as it should.
    pub(crate) clear: bool,
}

/// Open the target's soft-dirty files and start as `start` says.
pub(crate) fn attach_soft(target: &Process, scope: &Scope, start: SoftStart) -> Result<Attachment> {
    let SoftStart { freeze, clear } = start;
    let started = Instant::now();
    let clear_refs = std::fs::OpenOptions::new()
        .write(true)
        .open(target.proc_path("clear_refs"))
        .with_context(|| format!("opening /proc/{}/clear_refs", target.pid))?;
    target.check_alive()?;
    let mut soft = SoftDirtySpace {
        sd: SoftDirty::new(target.open_proc("pagemap")?, clear_refs),
        vmas: maps::read_maps(target.pid).context("reading the target's mappings")?,
        tracked: Vec::new(),
        freeze,
        last_clear_us: 0,
        populated: Vec::new(),
    };
    let pieces = select(&soft.vmas, scope);
    soft.tracked = maps::union(pieces.iter().map(|p| p.span).collect());
    let stopped = Instant::now();
    {
        let freeze_now = freeze && !attach::is_frozen_here(target.pid);
        let _frozen = freeze_now
            .then(|| attach::Frozen::new(target))
            .transpose()?;
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
        armed_by: ArmedBy::ClearRefs,
        skipped: Vec::new(),
        duration: started.elapsed(),
        armed_at: std::time::SystemTime::now(),
        thread_stopped: if freeze {
            stopped.elapsed()
        } else {
            std::time::Duration::ZERO
        },
    })
}

impl SoftDirtySpace {
    pub(crate) fn harvest(
        &mut self,
        target: &Process,
        scope: &Scope,
        into: &mut Harvest,
    ) -> Result<std::result::Result<(), Gone>> {
        into.time = Some(SystemTime::now());
        into.instant = Some(Instant::now());
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
        let runs = into.dirty.vec_mut();
        let mut changes = Vec::new();
        let result = (|| -> io::Result<()> {
            let freeze = self.freeze && !attach::is_frozen_here(target.pid);
            let _frozen = freeze
                .then(|| attach::Frozen::new(target))
                .transpose()
                .map_err(io::Error::other)?;
            let vmas = maps::read_maps(target.pid)?;
            // Memory read before stays read while mapped, even made read-only: a write just
            // before the mprotect is still in its bits.
            let mapped = maps::union(vmas.iter().map(|v| Span::new(v.start, v.end)).collect());
            let writable = maps::union(select(&vmas, scope).iter().map(|p| p.span).collect());
            let tracked = maps::union(
                writable
                    .into_iter()
                    .chain(maps::intersect(&self.tracked, &mapped))
                    .collect(),
            );
            let added = maps::subtract(&tracked, &self.tracked);
            let removed = maps::subtract(&self.tracked, &tracked);
            changes = mapping_changes(&self.vmas, &vmas, added, removed);
            self.vmas = vmas;
            self.tracked = tracked;
            let mut now = Vec::new();
            for &span in &self.tracked {
                self.sd.dirty(span, runs, &mut now)?;
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
        maps::union_in_place(into.dirty.vec_mut());
        into.tracked.vec_mut().extend_from_slice(&self.tracked);
        into.changes = changes;
        into.clear = Some(std::time::Duration::from_micros(self.last_clear_us));
        into.cost = t0.elapsed();
        Ok(Ok(()))
    }
}
