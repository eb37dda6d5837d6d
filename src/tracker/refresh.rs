//! The mapping refresh of every harvest: what appeared, moved or went since the last one,
//! and the arming of what is new.

use std::io;

use super::uffd_space::UffdSpace;
use super::{Change, Harvest, MappingChange, skipped_mappings};
use crate::maps::{self, Vma};
use crate::process::Process;
use crate::scope::Scope;
use crate::span::Span;

impl UffdSpace {
    /// Pick up mappings created since the last harvest, arm them, and return the `mapping`
    /// records for what appeared or went.
    pub(crate) fn refresh_mappings(
        &mut self,
        target: &Process,
        scope: &Scope,
        into: &mut Harvest,
    ) -> io::Result<()> {
        // Read before the listing: a change in between reads as a change next time.
        let size = self.watch.size_pages(target.pid)?;
        let mut stale = Vec::new();
        let listed = if self.registry.retry {
            // After a piece was dropped as unmapped meanwhile, list afresh: it may be back,
            // and the listing that had it is stale either way.
            Some(self.maps.read()?)
        } else if !self.watch.full_pass_due() {
            // The cheap watch (see `watch`): memory where the listing had none, tracked
            // memory replaced in place, then the unregistered mappings and the size.
            let appeared = self.scanner.any_mapped(&self.watch.gaps)?;
            self.scanner
                .unarmed(&self.registry.armed, &self.vmas, &mut stale)?;
            if !appeared && stale.is_empty() && self.watch.unchanged(&self.maps, size)? {
                return Ok(());
            }
            self.maps.changed()?
        } else {
            let listed = self.maps.changed()?;
            // Memory we believe registered that is not (a VMA replaced in place): the kernel
            // skips registered VMAs without walking them, so this costs little.
            self.scanner
                .unarmed(&self.registry.armed, &self.vmas, &mut stale)?;
            listed
        };
        let vmas = match listed {
            Some(vmas) => vmas,
            // The steady state: nothing to register, nothing to report.
            None if stale.is_empty() => {
                self.watch
                    .steady(target.pid, &self.vmas, &self.registry.armed, size);
                return Ok(());
            }
            None => self.vmas.clone(),
        };
        self.coverage_stale = true;
        let old_vmas = std::mem::replace(&mut self.vmas, vmas);
        let before = std::mem::take(&mut self.registry.armed);
        let skipped = self
            .registry
            .refresh(&self.uffd, target.pid, &self.vmas, scope, &stale)?;
        into.skipped = skipped_mappings(&skipped);
        let added = maps::subtract(&self.registry.armed, &before);
        let removed = maps::subtract(&before, &self.registry.armed);
        self.sparse = maps::intersect(&self.sparse, &self.registry.armed);
        self.classify_sparse(&added)?;
        let dense = maps::subtract(&added, &self.sparse);
        self.protect_file_pages(&dense)?;
        for span in dense {
            self.scanner
                .protect_unpopulated(span, &mut self.populated)?;
        }
        let replaced =
            replaced_in_place(&old_vmas, &self.vmas, &before, &self.registry.armed, &stale);
        // Private anonymous memory replaced in place is reported dirty wherever it holds
        // data, once: a page mremap brought into memory tracked before may keep its
        // write-protect bit and not read as written (seen under load: a thread's realloc'd
        // buffer, reported `replaced` with most of its pages clean).
        let fresh: Vec<Span> = by_mapping(&self.vmas, replaced.clone())
            .into_iter()
            .filter(|s| maps::mapping_at(&self.vmas, s.start).is_some_and(Vma::is_private_anon))
            .collect();
        // Present, not populated: an armed empty slot reads as swapped (markers are swap
        // entries). (A page swapped out while it moved is not covered.)
        self.scanner.present(&fresh, &mut self.populated)?;
        into.changes = mapping_changes(&old_vmas, &self.vmas, added, removed);
        into.changes.extend(replaced.into_iter().map(|span| {
            let vma = maps::mapping_at(&self.vmas, span.start);
            MappingChange {
                change: Change::Replaced,
                span,
                name: vma.map_or_else(String::new, |v| v.display_name().to_string()),
                kind: vma.map(Vma::kind),
            }
        }));
        self.watch
            .listed(target.pid, &self.vmas, &self.registry.armed, size);
        Ok(())
    }
}

/// Tracked memory that another mapping took the place of, between two listings: found
/// unregistered where it was registered (`stale`), or mapping another file, or another
/// part of one, at the same address. Its contents are new, though no page of it need have
/// been written.
fn replaced_in_place(
    old: &[Vma],
    new: &[Vma],
    armed_before: &[Span],
    armed_now: &[Span],
    stale: &[Span],
) -> Vec<Span> {
    let source = |vmas: &[Vma], at: u64| maps::mapping_at(vmas, at).map(|v| source(v, at));
    let mut replaced = stale.to_vec();
    for v in new {
        let here = Span::new(v.start, v.end);
        for part in maps::intersect(&maps::intersect(armed_before, armed_now), &[here]) {
            // Compared VMA by VMA of the old listing, at each one's start within `part`.
            let mut at = part.start;
            while at < part.end {
                let end = maps::mapping_at(old, at).map_or(part.end, |o| o.end.min(part.end));
                let end = if end <= at { part.end } else { end };
                if source(old, at) != source(new, at) {
                    replaced.push(Span::new(at, end));
                }
                at = end;
            }
        }
    }
    maps::intersect(&maps::union(replaced), armed_now)
}

/// What `v` maps at `at`: a file and the offset in it. Private anonymous memory has no
/// offset to compare (the kernel shows 0 for each part of it, so the parts of a mapping that
/// mprotect split would all look like the start of another): the unarmed-memory query finds
/// it replaced.
pub(super) fn source(v: &Vma, at: u64) -> (u64, u64) {
    match v.inode {
        0 => (0, 0),
        inode => (inode, v.offset.wrapping_add(at - v.start)),
    }
}

/// `spans` cut where the mappings of `vmas` begin and end, so that each piece is one mapping's
/// (or lies outside every mapping): adjacent mappings armed together are still each a change
/// of their own, with their own name and kind.
fn by_mapping(vmas: &[Vma], spans: Vec<Span>) -> Vec<Span> {
    let mut pieces = Vec::with_capacity(spans.len());
    for span in spans {
        let mut at = span.start;
        while at < span.end {
            let end = match maps::mapping_at(vmas, at) {
                Some(v) => v.end,
                // Up to the next mapping's start, if one begins inside the span.
                None => vmas
                    .iter()
                    .map(|v| v.start)
                    .find(|&s| s > at)
                    .unwrap_or(span.end),
            };
            let end = end.min(span.end);
            pieces.push(Span::new(at, end));
            at = end;
        }
    }
    pieces
}

/// The changes between two listings, one per mapping. A span that went and one that appeared
/// with the same size and the same file offset (anonymous memory keeps its page offset when
/// mremap moves it) are one move.
pub(crate) fn mapping_changes(
    old: &[Vma],
    new: &[Vma],
    added: Vec<Span>,
    removed: Vec<Span>,
) -> Vec<MappingChange> {
    let added = by_mapping(new, added);
    let mut removed = by_mapping(old, removed);
    let page_offset = |vmas: &[Vma], s: &Span| {
        maps::mapping_at(vmas, s.start).map(|v| (v.inode, v.offset + (s.start - v.start), s.len()))
    };
    let described = |vmas: &[Vma], span: Span, change: Change| {
        let vma = maps::mapping_at(vmas, span.start);
        MappingChange {
            change,
            span,
            name: vma.map_or_else(String::new, |v| v.display_name().to_string()),
            kind: vma.map(Vma::kind),
        }
    };
    let mut changes = Vec::with_capacity(added.len() + removed.len());
    for a in added {
        let here = page_offset(new, &a);
        let from = removed
            .iter()
            .position(|r| here.is_some() && page_offset(old, r) == here)
            .map(|i| removed.remove(i));
        let change = match from {
            Some(from) => Change::Moved { from },
            None => Change::Added,
        };
        changes.push(described(new, a, change));
    }
    for r in removed {
        changes.push(described(old, r, Change::Removed));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::MappingKind;

    fn vma(line: &str) -> Vma {
        maps::parse_line(line).unwrap()
    }

    #[test]
    fn adjacent_mappings_are_a_change_each() {
        let new = [
            vma("10000-13000 rw-p 00000000 00:00 0"),
            vma("13000-20000 r--p 00000000 08:01 7 /usr/lib/libc.so.6"),
        ];
        let changes = mapping_changes(&[], &new, vec![Span::new(0x10000, 0x20000)], vec![]);
        let got: Vec<_> = changes
            .iter()
            .map(|c| (c.span, c.kind, c.name.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Span::new(0x10000, 0x13000),
                    Some(MappingKind::Anon),
                    "[anon]"
                ),
                (
                    Span::new(0x13000, 0x20000),
                    Some(MappingKind::File),
                    "/usr/lib/libc.so.6"
                ),
            ]
        );
    }

    #[test]
    fn a_move_is_paired_by_size_and_page_offset() {
        let old = [
            vma("10000-14000 rw-p 00010000 00:00 0"),
            vma("20000-24000 rw-p 00020000 00:00 0"),
        ];
        // mremap keeps the page offset: the first one moved to 0x50000; the second was
        // replaced by a fresh mapping elsewhere (different offset).
        let new = [
            vma("50000-54000 rw-p 00010000 00:00 0"),
            vma("60000-64000 rw-p 00060000 00:00 0"),
        ];
        let added = vec![Span::new(0x50000, 0x54000), Span::new(0x60000, 0x64000)];
        let removed = vec![Span::new(0x10000, 0x14000), Span::new(0x20000, 0x24000)];
        let changes = mapping_changes(&old, &new, added, removed);
        let summary: Vec<_> = changes.iter().map(|c| (c.change, c.span.start)).collect();
        assert_eq!(
            summary,
            vec![
                (
                    Change::Moved {
                        from: Span::new(0x10000, 0x14000)
                    },
                    0x50000
                ),
                (Change::Added, 0x60000),
                (Change::Removed, 0x20000)
            ]
        );
    }
}
