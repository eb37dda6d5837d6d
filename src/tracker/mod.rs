//! The engine: [`TrackerBuilder`] attaches a [`Tracker`] to a [`Target`], and every
//! [`Tracker::harvest`] returns what was written since the last one.
//!
//! Submodules: `uffd_space` (one address space under userfaultfd tracking, and its arming), `refresh`
//! (the mapping changes every harvest picks up), `harvest` (the harvest strategies),
//! `registry` (what is registered with our userfaultfd), `soft` (soft-dirty).

mod harvest;
mod refresh;
mod registry;
mod soft;
mod uffd_space;
mod watch;

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};

use crate::attach;
use crate::blind::{self, Blind};
use crate::error::{Error, Gone, Result, lift, unsupported, usage};
use crate::maps::{self, MappingKind, Vma};
use crate::process::Process;
use crate::scope::{Scope, Selected, Selector, select};
use crate::span::{Span, SpanSet};
use crate::sys;
use crate::target::{Launched, Target};
use crate::uffd;

use registry::Skip;
use soft::{SoftDirtySpace, SoftStart, attach_soft};
use uffd_space::{Arm, UffdSpace, attach_uffd};

/// How a tracker finds the written pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum Method {
    /// userfaultfd async write-protect, harvested by PAGEMAP_SCAN with atomic re-protect.
    #[default]
    PagemapScan,
    /// The same arming, harvested by plain reads of /proc/PID/pagemap (bit 57 clear = written)
    /// and re-protected with UFFDIO_WRITEPROTECT.
    PagemapRead,
    /// clear_refs soft-dirty (pagemap bit 55), no userfaultfd; the target is frozen while its
    /// bits are read and cleared (see --no-freeze). Needs CONFIG_MEM_SOFT_DIRTY.
    SoftDirty,
}

display_as_serialized!(Method, Arming, ArmedBy);

/// How a userfaultfd tracker write-protects memory when it attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum Arming {
    /// PAGEMAP_SCAN where the kernel has the 2026 fix for empty page-table ranges (about 7x
    /// faster), else UFFDIO_WRITEPROTECT.
    #[default]
    Auto,
    /// PAGEMAP_SCAN with its write-protect flag.
    PagemapScan,
    /// UFFDIO_WRITEPROTECT (marks empty page-table ranges on every kernel).
    Writeprotect,
    /// Protect only the empty slots, so that the first harvest reports every page that holds
    /// the process's data: populated anonymous and shared memory, swapped-out pages, and
    /// file pages written through the mapping (a file's own pages, never written here, are
    /// not reported). What a first copy of the target's memory needs (a pre-copy's round 0,
    /// a checkpoint's first dump), without reading memory the target never touched.
    ReportPopulated,
}

/// How an attach write-protected what it tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ArmedBy {
    /// PAGEMAP_SCAN, everything.
    PagemapScan,
    /// UFFDIO_WRITEPROTECT, everything.
    Writeprotect,
    /// Only the empty slots: what was populated is reported by the next harvest (a new
    /// program after exec, whose memory may have been written before the tracker armed it).
    Unpopulated,
    /// Soft-dirty bits cleared through `/proc/PID/clear_refs`.
    ClearRefs,
}

/// A piece of a mapping a tracker covers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackedMapping {
    /// The addresses covered.
    pub span: Span,
    /// The mapping's name as `/proc/PID/maps` shows it, written printably (`[anon]` for
    /// nameless memory): bytes that are not printable UTF-8 appear as `\xNN`, a backslash as
    /// `\\`.
    pub name: String,
    /// What the mapping is.
    pub kind: MappingKind,
}

/// A piece of a mapping in scope that the kernel refused to track.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedMapping {
    /// The addresses refused.
    pub span: Span,
    /// The mapping's name (as in [`TrackedMapping::name`]).
    pub name: String,
    /// Why, in words: another userfaultfd owns it, the kernel does not support its kind, ...
    pub reason: String,
    /// The kernel refused it as never writable (EPERM: a shared mapping of a file opened
    /// read-only): no write can be missed there.
    pub never_writable: bool,
}

/// What an attach did: to the target when it began tracking, and to a new program after an
/// exec when the tracker follows it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Attached {
    /// The program the target runs, as `/proc/PID/exe` names it (written printably, as
    /// mapping names are); empty if unreadable.
    pub exe: String,
    /// The target's PID namespace, as `/proc/PID/ns/pid` names it (`pid:[4026531836]`);
    /// empty if unreadable.
    pub pid_namespace: String,
    /// The target's PID inside its own PID namespace (a container's init is 1): the last of
    /// `NSpid` in `/proc/PID/status`; its PID as the tracker sees it when they share one.
    pub pid_in_namespace: i32,
    /// What is tracked, in address order (see [`Attached::spans`]).
    pub tracked: Vec<TrackedMapping>,
    /// What the kernel refused to track.
    pub skipped: Vec<SkippedMapping>,
    /// How it was write-protected.
    pub armed_by: ArmedBy,
    /// How long the attach took, from the start to armed.
    pub duration: Duration,
    /// When the arming finished (a launched command had not yet run): every write begun
    /// after it is reported.
    pub armed_at: SystemTime,
    /// How long a thread of the target was stopped (userfaultfd: the thread borrowed for the
    /// injected calls; soft-dirty: the whole target, while its bits were cleared).
    pub thread_stopped: Duration,
}

impl Attached {
    /// The addresses tracked, as a set.
    pub fn spans(&self) -> SpanSet {
        self.tracked.iter().map(|t| t.span).collect()
    }
}

/// How a mapping changed between two harvests.
///
/// A copier of the target's memory treats an added, moved or replaced span as new contents.
/// Of private anonymous memory, the harvest that finds it reports every page holding data
/// (of replaced memory, every present page, whatever its write-protect bit says: `mremap`
/// may carry one along). Of file and shared
/// memory it reports the pages written before it was armed, but not those still as they
/// were mapped (a file's pages, never written through this mapping), so a copier copies
/// those whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// New memory in scope, now tracked.
    Added,
    /// Memory moved here by `mremap` (same size, same contents) from `from`, which is gone:
    /// no [`Change::Removed`] is reported for it.
    Moved {
        /// Where it was.
        from: Span,
    },
    /// Memory no longer tracked: unmapped, or no longer in scope (a selector stopped picking
    /// it). Memory made read-only stays tracked while mapped: it may have been written first.
    Removed,
    /// Tracked memory that a new mapping took the place of (`mmap(MAP_FIXED)` over it, or
    /// unmapped and mapped again between two harvests): still tracked, with new contents that
    /// need not have been written (another file's pages, zeros).
    Replaced,
}

/// A mapping that appeared, moved or went since the last harvest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MappingChange {
    /// What happened.
    pub change: Change,
    /// The addresses it concerns (for [`Change::Moved`], where the memory is now).
    pub span: Span,
    /// The mapping's name (as in [`TrackedMapping::name`]); empty if it is unmapped.
    pub name: String,
    /// What the mapping is; `None` if it is unmapped.
    pub kind: Option<MappingKind>,
}

/// What one [`Tracker::harvest`] found: the pages written since the previous harvest (or the
/// attach), in the memory the tracker covers.
///
/// A harvest never misses a write made before it began. A write racing with it is reported
/// by it or by the next one, and may be reported by both (a documented double report).
///
/// ```no_run
/// # let target = uffd_dirty::Target::open(1234)?;
/// # let mut tracker = uffd_dirty::TrackerBuilder::new().attach(&target)?;
/// let mut harvest = uffd_dirty::Harvest::new();
/// tracker.harvest_into(&mut harvest)?;
/// let page = harvest.page_size();
/// for addr in harvest.dirty().page_addresses(page) {
///     println!("{addr:#x} written");
/// }
/// println!("{} of {} pages written, in {:?}", harvest.dirty_pages(),
///     harvest.tracked().pages(page), harvest.cost());
/// # Ok::<(), uffd_dirty::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Harvest {
    pub(crate) seq: u64,
    pub(crate) dirty: SpanSet,
    pub(crate) tracked: SpanSet,
    pub(crate) changes: Vec<MappingChange>,
    pub(crate) skipped: Vec<SkippedMapping>,
    pub(crate) time: Option<SystemTime>,
    pub(crate) cost: Duration,
    pub(crate) watch: Option<Duration>,
    pub(crate) clear: Option<Duration>,
    pub(crate) page_size: u64,
    pub(crate) after_exec: bool,
    pub(crate) instant: Option<Instant>,
}

impl Harvest {
    /// An empty harvest to fill with [`Tracker::harvest_into`].
    pub fn new() -> Harvest {
        Harvest::default()
    }

    /// Its number: 1 for the first harvest after attach.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The pages written, as whole-page spans.
    pub fn dirty(&self) -> &SpanSet {
        &self.dirty
    }

    /// How many pages were written.
    pub fn dirty_pages(&self) -> u64 {
        self.dirty.pages(self.page_size.max(1))
    }

    /// The memory this harvest covered: what is armed, plus memory that stopped being
    /// tracked (made read-only) while it stays mapped, whose writes are still reported.
    pub fn tracked(&self) -> &SpanSet {
        &self.tracked
    }

    /// Mappings that appeared, moved or went since the last harvest (new ones are tracked
    /// from this harvest on).
    pub fn changes(&self) -> &[MappingChange] {
        &self.changes
    }

    /// New mappings in scope that the kernel refused to track.
    pub fn skipped(&self) -> &[SkippedMapping] {
        &self.skipped
    }

    /// The instant it stands for: every write before it is in this harvest or an earlier one
    /// (the Unix epoch for a harvest not filled: new, or failed).
    pub fn time(&self) -> SystemTime {
        self.time.unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// [`time`](Harvest::time) on the monotonic clock, for measuring intervals.
    pub fn instant(&self) -> Instant {
        self.instant.unwrap_or_else(Instant::now)
    }

    /// How long it took (the mapping refresh and the harvest proper).
    pub fn cost(&self) -> Duration {
        self.cost
    }

    /// The part of [`cost`](Harvest::cost) spent watching the mappings for changes
    /// (userfaultfd methods).
    pub fn watch_cost(&self) -> Option<Duration> {
        self.watch
    }

    /// The part of [`cost`](Harvest::cost) spent clearing soft-dirty bits (`clear_refs`,
    /// which holds the target's mmap write lock all that time).
    pub fn clear_refs_cost(&self) -> Option<Duration> {
        self.clear
    }

    /// Whether the target ran a new program since the last harvest and the tracker attached
    /// to it ([`TrackerBuilder::follow_exec`]): the dirty pages are then the new program's
    /// populated memory, and [`Tracker::attached`] describes the new attach.
    pub fn after_exec(&self) -> bool {
        self.after_exec
    }

    /// The page size its counts are in.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Empty, its memory kept: what a failed harvest leaves too.
    fn reset(&mut self) {
        self.seq = 0;
        self.dirty.clear();
        self.tracked.clear();
        self.changes.clear();
        self.skipped.clear();
        self.time = None;
        self.instant = None;
        self.cost = Duration::ZERO;
        self.after_exec = false;
        self.watch = None;
        self.clear = None;
    }
}

/// Configures and attaches a [`Tracker`].
///
/// ```no_run
/// use uffd_dirty::{MappingKind, Method, Selector, Target, TrackerBuilder};
/// let target = Target::open(1234)?;
/// let mut tracker = TrackerBuilder::new()
///     .method(Method::PagemapScan)
///     .select(Selector::name("[heap]"))
///     .select(Selector::Kind(MappingKind::Anon))
///     .attach(&target)?;
/// let harvest = tracker.harvest()?;
/// println!("{} pages written", harvest.dirty_pages());
/// # Ok::<(), uffd_dirty::Error>(())
/// ```
pub struct TrackerBuilder<'p> {
    method: Method,
    ranges: Vec<Span>,
    selectors: Vec<Selector>,
    follow_exec: bool,
    arming: Arming,
    freeze: bool,
    bounded_holds: bool,
    progress: Option<Box<dyn FnMut(u64, u64) + 'p>>,
}

impl Default for TrackerBuilder<'_> {
    fn default() -> Self {
        TrackerBuilder::new()
    }
}

impl<'p> TrackerBuilder<'p> {
    /// PAGEMAP_SCAN, the whole address space, following exec, arming chosen for the kernel.
    pub fn new() -> Self {
        TrackerBuilder {
            method: Method::PagemapScan,
            ranges: Vec::new(),
            selectors: Vec::new(),
            follow_exec: true,
            arming: Arming::Auto,
            freeze: true,
            bounded_holds: true,
            progress: None,
        }
    }

    /// How written pages are found.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Track only this address range (with other ranges given, their union). Each must hold
    /// a trackable mapping when the tracker attaches.
    pub fn range(mut self, span: Span) -> Self {
        self.ranges.push(span);
        self
    }

    /// Track only mappings `selector` picks (with other selectors given, those any picks).
    pub fn select(mut self, selector: Selector) -> Self {
        self.selectors.push(selector);
        self
    }

    /// After the target runs a new program (`execve`), attach to it and go on (the
    /// default), or end with [`Error::Gone`] and [`Gone::Exec`].
    pub fn follow_exec(mut self, follow: bool) -> Self {
        self.follow_exec = follow;
        self
    }

    /// How a userfaultfd tracker write-protects memory when it attaches.
    pub fn arming(mut self, arming: Arming) -> Self {
        self.arming = arming;
        self
    }

    /// Soft-dirty: stop the target while its bits are read and cleared (the default). Off,
    /// a write between the read and the clear is lost; off is for callers that stop the
    /// target themselves ([`Target::freeze`]).
    pub fn freeze(mut self, freeze: bool) -> Self {
        self.freeze = freeze;
        self
    }

    /// Hold the target's mmap lock as long as each whole walk, arming piece and release
    /// takes, as before the holds were bounded: for benchmarks that measure the difference.
    #[doc(hidden)]
    pub fn unbounded_lock_holds(mut self) -> Self {
        self.bounded_holds = false;
        self
    }

    /// Called as arming goes, with the bytes armed and the bytes to arm.
    pub fn on_progress(mut self, progress: impl FnMut(u64, u64) + 'p) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Attach to `target`: make sure the kernel can track it, check the ranges against its
    /// mappings, then arm everything in scope. A launched target is let run once armed.
    ///
    /// Fails with [`Error::Unsupported`] when the kernel lacks what the method needs,
    /// [`Error::BadInput`] when a range holds no trackable mapping, [`Error::NotPermitted`]
    /// when the caller may not trace the target, and leaves the target as it was.
    pub fn attach(self, target: &Target) -> Result<Tracker> {
        self.attach_inner(target).map_err(lift)
    }

    fn attach_inner(mut self, target: &Target) -> anyhow::Result<Tracker> {
        let support = uffd::probe()?;
        if self.method == Method::SoftDirty {
            if !crate::scan::soft_dirty::works().context("probing soft-dirty")? {
                return Err(unsupported(format!(
                    "this kernel ({}) has no working soft-dirty tracking (built without CONFIG_MEM_SOFT_DIRTY, or not x86_64/ppc64le/s390x): use the pagemap-scan method",
                    uffd::kernel_release()
                )));
            }
        } else {
            support.require_async_wp()?;
        }
        let mut scope = Scope {
            spans: SpanSet::from(std::mem::take(&mut self.ranges))
                .as_slice()
                .to_vec(),
            selectors: std::mem::take(&mut self.selectors),
        };
        if scope.spans.is_empty() {
            scope.spans = Scope::default().spans;
        }
        let process = &target.process;
        let mut launched = target.launched();
        // A launched command execs now, held at its exec stop until it is armed.
        let held = match launched.as_deref_mut() {
            Some(state @ Launched::Pending(_)) => {
                let Launched::Pending(pending) = std::mem::replace(state, Launched::Gone) else {
                    unreachable!("matched as pending")
                };
                let helper = pending.exec_held(self.method != Method::SoftDirty)?;
                *state = Launched::Running(crate::launch::Child::new(process.pid, helper));
                true
            }
            Some(Launched::Gone) => {
                return Err(anyhow!(
                    "the command (PID {}) could not be started",
                    process.pid
                ));
            }
            _ => false,
        };
        let vmas = maps::read_maps(process.pid).context("reading the target's mappings")?;
        check_scope(process, &scope, &vmas, held)?;
        let mut progress = self.progress.take();
        let mut report = |done, total| {
            if let Some(p) = progress.as_mut() {
                p(done, total)
            }
        };
        let attachment = match self.method {
            Method::SoftDirty => {
                // Launched: the command is held at its exec stop; its bits are cleared there,
                // before it runs, and then it is let go.
                let start = SoftStart {
                    freeze: self.freeze && !held,
                    clear: true,
                };
                let mut a = attach_soft(process, &scope, start)?;
                if held {
                    attach::release_after_exec(process.pid)?;
                    if let Source::Soft(s) = &mut a.mm {
                        s.freeze = self.freeze;
                    }
                }
                a
            }
            method => {
                let at_exec = match launched.as_deref_mut() {
                    Some(Launched::Running(child)) if held => child.helper.as_mut(),
                    _ => None,
                };
                attach_uffd(
                    process,
                    &scope,
                    at_exec,
                    Arm::choose(self.arming, &support),
                    method,
                    self.bounded_holds,
                    &mut report,
                )?
            }
        };
        if let Some(Launched::Running(child)) = launched.as_deref_mut() {
            child.traced = false;
            child.helper = None;
        }
        drop(launched);
        let page_size = sys::page_size();
        let (blind, blind_found) = blind::Watch::start(process.pid, page_size);
        Ok(Tracker {
            process: process.try_clone()?,
            attached: attachment.describe(process.pid),
            source: attachment.mm,
            scope,
            method: self.method,
            follow_exec: self.follow_exec,
            freeze: self.freeze,
            bounded_holds: self.bounded_holds,
            pmd_hole_fix: support.pmd_hole_fix,
            page_size,
            seq: 0,
            blind,
            blind_found,
        })
    }
}

/// Tracks which pages of one process are written. Made by [`TrackerBuilder::attach`].
///
/// Dropping it (or [`detach`](Tracker::detach)) closes its userfaultfd: the kernel drops
/// every protection, and the target is left exactly as it was.
///
/// ```no_run
/// use uffd_dirty::{Change, Target, TrackerBuilder};
/// let target = Target::launch(["redis-server", "--port", "7777"])?;
/// let mut tracker = TrackerBuilder::new().attach(&target)?;
/// println!("tracking {} mappings of PID {}", tracker.attached().tracked.len(), tracker.pid());
/// for blind in tracker.blind_spots() {
///     eprintln!("not seen: {}", blind.detail);
/// }
/// let harvest = tracker.harvest()?;
/// for change in harvest.changes() {
///     if let Change::Moved { from } = change.change {
///         println!("{} moved from {from} to {}", change.name, change.span);
///     }
/// }
/// # Ok::<(), uffd_dirty::Error>(())
/// ```
pub struct Tracker {
    process: Process,
    source: Source,
    attached: Attached,
    scope: Scope,
    method: Method,
    follow_exec: bool,
    freeze: bool,
    bounded_holds: bool,
    pmd_hole_fix: bool,
    page_size: u64,
    seq: u64,
    blind: blind::Watch,
    blind_found: Vec<Blind>,
}

impl Tracker {
    /// The target's PID.
    pub fn pid(&self) -> i32 {
        self.process.pid
    }

    /// How it finds written pages.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The page size its spans are made of.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// What the last attach did (the first one, or the one after the last followed exec).
    pub fn attached(&self) -> &Attached {
        &self.attached
    }

    /// The target's mappings as of the last harvest (or the attach), in address order.
    ///
    /// Every change to what is tracked (memory mapped, unmapped, moved, resized in place or
    /// replaced) shows at the next harvest. A change of permissions alone (mprotect, which
    /// splits and merges mappings and registers nothing) may show up to 10 seconds late with
    /// the userfaultfd methods: they list the mappings whole that often, and in between
    /// watch them by cheaper means that see everything tracking needs (see
    /// [`relist_mappings`](Tracker::relist_mappings) where permissions must be exact).
    pub fn mappings(&self) -> &[Vma] {
        self.source.vmas()
    }

    /// Have the next harvest list the target's mappings whole, so that
    /// [`mappings`](Tracker::mappings) after it is exact to the permission and the split:
    /// for a checkpoint's rounds, whose records must match the target mapping for mapping.
    /// That harvest costs about a microsecond more per mapping.
    pub fn relist_mappings(&mut self) {
        if let Source::Uffd(mm) = &mut self.source {
            mm.watch.relist();
        }
    }

    /// Whether a harvest sees pages zapped whole by the kernel (a 2 MiB `MADV_DONTNEED`,
    /// page-table reclaim) on this kernel: false before the 2026 PAGEMAP_SCAN fix, where
    /// those zeroed pages are not reported (userfaultfd methods).
    pub fn sees_zapped_page_tables(&self) -> bool {
        self.method == Method::SoftDirty || self.pmd_hole_fix
    }

    /// Sources of writes no tracker can see, found when it attached.
    pub fn blind_spots(&self) -> &[Blind] {
        &self.blind_found
    }

    /// Sources of unseen writes that appeared since the last look (one status read, and the
    /// fd list only when the pinned counts moved).
    pub fn check_blind_spots(&mut self) -> Vec<Blind> {
        self.blind.check()
    }

    /// The pages written since the last harvest. See [`harvest_into`](Tracker::harvest_into),
    /// which reuses a [`Harvest`]'s memory.
    pub fn harvest(&mut self) -> Result<Harvest> {
        let mut harvest = Harvest::new();
        self.harvest_into(&mut harvest)?;
        Ok(harvest)
    }

    /// The pages written since the last harvest, into `harvest` (its contents replaced). In
    /// the steady state (no mapping changed) a harvest into a reused `Harvest` allocates
    /// nothing.
    ///
    /// Fails with [`Error::Gone`] once the target exited, or ran a new program that the
    /// tracker does not follow; with [`Error::AfterExec`] when following it failed.
    pub fn harvest_into(&mut self, harvest: &mut Harvest) -> Result<()> {
        harvest.reset();
        harvest.page_size = self.page_size;
        match self.source.harvest(&self.process, &self.scope, harvest) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return self.gone(why, harvest),
            Err(e) => {
                harvest.reset();
                return Err(lift(e));
            }
        }
        debug_assert!(harvest.dirty.is_sorted_union(), "{:?}", harvest.dirty);
        debug_assert!(harvest.tracked.is_sorted_union(), "{:?}", harvest.tracked);
        self.seq += 1;
        harvest.seq = self.seq;
        Ok(())
    }

    /// The target's memory is gone: an exit ends tracking; an exec too, unless it is
    /// followed: then the new program is attached to and harvested at once.
    fn gone(&mut self, why: Gone, harvest: &mut Harvest) -> Result<()> {
        let pid = self.process.pid;
        if why == Gone::Exited || !self.follow_exec {
            return Err(Error::Gone { pid, why });
        }
        // Everything of the new image is new memory: what it populated before we armed it
        // is reported by this harvest.
        let again = match self.method {
            Method::SoftDirty => {
                let start = SoftStart {
                    freeze: self.freeze,
                    clear: false,
                };
                attach_soft(&self.process, &self.scope, start)
            }
            m => attach_uffd(
                &self.process,
                &self.scope,
                None,
                Arm::Unpopulated,
                m,
                self.bounded_holds,
                &mut |_, _| {},
            ),
        };
        match again {
            Ok(a) => {
                self.attached = a.describe(pid);
                self.source = a.mm;
                self.harvest_into(harvest)?;
                harvest.after_exec = true;
                Ok(())
            }
            // The new image exited, or was killed, while we attached.
            Err(_) if exits_within(&self.process, SETTLE) => Err(Error::Gone {
                pid,
                why: Gone::Exited,
            }),
            Err(e) => Err(Error::AfterExec(Box::new(lift(e)))),
        }
    }

    /// Copy the contents of the pages in `spans` from the target's memory to `out`, in
    /// address order (by `process_vm_readv`; the target is not stopped, so a page written
    /// meanwhile may be copied in either state: the next harvest reports it again). Pages the
    /// target cannot read itself (PROT_NONE) are read all the same; pages that cannot be read
    /// at all (unmapped since) are written as zeros to keep `out` aligned with `spans`, and
    /// returned. `spans` must be whole pages
    /// ([`Error::BadInput`] otherwise), as a harvest's are.
    ///
    /// For pre-copy: copy what a harvest reported, repeat until little is written, then
    /// stop the target ([`Target::freeze`]), harvest and copy one last time.
    ///
    /// ```no_run
    /// # let target = uffd_dirty::Target::open(1234)?;
    /// # let mut tracker = uffd_dirty::TrackerBuilder::new().attach(&target)?;
    /// let mut image = Vec::new();
    /// let harvest = tracker.harvest()?;
    /// let unreadable = tracker.read_pages(harvest.dirty(), &mut image)?;
    /// assert_eq!(image.len() as u64, harvest.dirty().bytes());
    /// // The last round: nothing runs in the target while it is harvested and copied.
    /// let frozen = target.freeze()?;
    /// let last = tracker.harvest()?;
    /// tracker.read_pages(last.dirty(), &mut image)?;
    /// drop(frozen);
    /// # let _ = unreadable;
    /// # Ok::<(), uffd_dirty::Error>(())
    /// ```
    pub fn read_pages(&self, spans: &SpanSet, out: &mut impl Write) -> Result<SpanSet> {
        self.read_pages_inner(spans, out).map_err(|e| {
            if self.process.has_exited() {
                return Error::Gone {
                    pid: self.process.pid,
                    why: Gone::Exited,
                };
            }
            lift(e)
        })
    }

    fn read_pages_inner(&self, spans: &SpanSet, out: &mut dyn Write) -> anyhow::Result<SpanSet> {
        // Bytes per process_vm_readv: few calls, and a buffer that stays in cache from the
        // kernel's copy into it to `out`'s reading of it.
        const CHUNK: usize = 1 << 20;
        let page = self.page_size as usize;
        if let Some(odd) = spans
            .iter()
            .find(|s| s.start % self.page_size != 0 || s.end % self.page_size != 0)
        {
            return Err(usage(format!(
                "{odd} is not whole pages: read_pages copies pages ({} bytes, aligned)",
                self.page_size
            )));
        }
        let spans = spans.as_slice();
        let mut buf = vec![0u8; CHUNK.min(spans.iter().map(|s| s.len() as usize).sum())];
        // Scattered pages are many spans: one call reads as many of them as it can take
        // (IOV_MAX pieces, CHUNK bytes), not one each (a syscall and a page-table walk per
        // page took twice the time of the copy itself).
        let mut pieces = Vec::with_capacity(sys::abi::IOV_MAX);
        let mut unreadable = Vec::new();
        let mut mem: Option<std::fs::File> = None;
        let mut next = Cursor::new(spans);
        while let Some(at) = next.at() {
            pieces.clear();
            let mut end = next;
            let mut want = 0;
            while pieces.len() < sys::abi::IOV_MAX && want < buf.len() {
                let Some((start, len)) = end.take(buf.len() - want) else {
                    break;
                };
                pieces.push(sys::remote_iovec(start, len));
                want += len;
            }
            let got = match sys::read_remote_vectored(self.process.pid, &pieces, &mut buf[..want]) {
                Ok(n) => n,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EFAULT | libc::EIO)) => 0,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "reading {want} bytes in {} pieces from {at:#x} of PID {}",
                            pieces.len(),
                            self.process.pid
                        )
                    });
                }
            };
            // A short read stops at the first page that cannot be read, whichever piece it
            // is in: that page is zeros, and the reading goes on after it.
            let got = got - got % page;
            out.write_all(&buf[..got])
                .context("writing page contents")?;
            next.skip(got);
            if got < want {
                // process_vm_readv honours the target's protections: a page made PROT_NONE
                // after it was written (a GC's, a guard's) is read through /proc/PID/mem,
                // which does not. What that cannot read either (unmapped since) is zeros.
                let hole = next.at().expect("a page was left unread");
                let mem = match &mut mem {
                    Some(f) => Some(&*f),
                    None => {
                        mem = self.process.open_proc("mem").ok();
                        mem.as_ref()
                    }
                };
                let read = mem.is_some_and(|f| {
                    matches!(sys::pread_full(f.as_fd(), &mut buf[..page], hole), Ok(n) if n == page)
                });
                if !read {
                    buf[..page].fill(0);
                    unreadable.push(Span::new(hole, hole + page as u64));
                }
                out.write_all(&buf[..page])
                    .context("writing page contents")?;
                next.skip(page);
            }
        }
        // Read by PID: the pidfd says whether it was still the target's all along (a PID is
        // reused only after the target is reaped, and the pidfd holds it).
        self.process.check_alive()?;
        Ok(SpanSet::from(unreadable))
    }

    /// Stop tracking: the kernel drops every protection (as dropping the tracker does).
    pub fn detach(self) {}
}

/// A place in a list of spans (whole pages, in address order), as [`Tracker::read_pages`]
/// goes through it.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    spans: &'a [Span],
    /// The span the next byte is in, and where in it.
    index: usize,
    at: u64,
}

impl<'a> Cursor<'a> {
    fn new(spans: &'a [Span]) -> Cursor<'a> {
        let mut c = Cursor {
            spans,
            index: 0,
            at: 0,
        };
        c.enter(0);
        c
    }

    /// Go to the start of span `index`, or of the first non-empty one after it.
    fn enter(&mut self, index: usize) {
        self.index = index;
        while self.spans.get(self.index).is_some_and(|s| s.is_empty()) {
            self.index += 1;
        }
        self.at = self.spans.get(self.index).map_or(0, |s| s.start);
    }

    /// The next address to read, if any is left.
    fn at(&self) -> Option<u64> {
        (self.index < self.spans.len()).then_some(self.at)
    }

    /// The next piece, at most `max` bytes and within one span, and move past it.
    fn take(&mut self, max: usize) -> Option<(u64, usize)> {
        let start = self.at()?;
        let len = ((self.spans[self.index].end - start) as usize).min(max);
        self.skip(len);
        (len > 0).then_some((start, len))
    }

    /// Move `n` bytes on, across spans.
    fn skip(&mut self, mut n: usize) {
        while n > 0 && self.index < self.spans.len() {
            let left = (self.spans[self.index].end - self.at) as usize;
            if n < left {
                self.at += n as u64;
                return;
            }
            n -= left;
            self.enter(self.index + 1);
        }
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("pid", &self.process.pid)
            .field("method", &self.method)
            .field("harvests", &self.seq)
            .finish()
    }
}

impl Target {
    /// Stop every thread of the target until the returned guard is dropped (by ptrace, so
    /// its signal state and registers are left exactly as they were): for a last harvest
    /// and copy that nothing can race with.
    pub fn freeze(&self) -> Result<Frozen> {
        match attach::Frozen::new(&self.process) {
            Ok(f) => Ok(Frozen {
                _frozen: f,
                _thread_bound: std::marker::PhantomData,
            }),
            // Stopping an exiting target fails before its memory is gone.
            Err(_) if exits_within(&self.process, SETTLE) => Err(Error::Gone {
                pid: self.process.pid,
                why: Gone::Exited,
            }),
            Err(e) => Err(lift(e)),
        }
    }
}

/// The target stopped by [`Target::freeze`]; it runs again when this is dropped.
///
/// It belongs to the thread that made it, which must also drop it: the target's threads are
/// held by ptrace, and only the tracing thread may let them go (so it is neither `Send` nor
/// `Sync`). That thread has every catchable signal blocked meanwhile (a Ctrl-C must not cut a
/// ptrace hold short); they are delivered when it drops. A soft-dirty tracker harvests a
/// target frozen so without freezing it again.
pub struct Frozen {
    _frozen: attach::Frozen,
    /// Not `Send`: dropped on another thread, it could not let the target go.
    _thread_bound: std::marker::PhantomData<*const ()>,
}

/// How long a target is given to show that it is exiting when that is in doubt: its /proc
/// entry is unreadable, or re-attaching to it failed (ptrace refuses a task that has begun to
/// exit, a moment before the task drops its memory).
pub(crate) const SETTLE: Duration = Duration::from_millis(500);

/// Why the address space our fds are bound to is gone (no task uses it any more). That alone
/// tells nothing: an exiting process drops its memory (`exit_mm`) before its pidfd turns
/// readable, just as an exec'ing one drops the old image's. The process tells: an exec
/// installs the new address space before it lets go of the old one, so a process that has one
/// exec'ed, and one that has none is exiting (its new image too, if it exec'ed first).
pub(crate) fn why_gone(target: &Process) -> Gone {
    if target.has_exited() {
        return Gone::Exited;
    }
    match target.has_mm() {
        // The pidfd asked again: a PID reused after a reap would have memory too.
        Ok(true) if !target.has_exited() => Gone::Exec,
        Ok(_) => Gone::Exited,
        Err(_) if exits_within(target, SETTLE) => Gone::Exited,
        // /proc unreadable but the process lives on: the re-attach decides.
        Err(_) => Gone::Exec,
    }
}

/// Whether the target has exited or is exiting (its memory gone), waiting up to `patience`
/// for it to be.
pub(crate) fn exits_within(target: &Process, patience: Duration) -> bool {
    const STEP: Duration = Duration::from_millis(2);
    let deadline = Instant::now() + patience;
    loop {
        if target.has_exited() || matches!(target.has_mm(), Ok(false)) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Wakes at once when the pidfd turns readable; the memory is looked at every STEP.
        let _ = sys::readable([target.pidfd.as_fd()], STEP.min(deadline - now));
    }
}

/// Where harvests come from: the target's userfaultfd (pagemap-scan, pagemap-read), or its
/// soft-dirty bits.
pub(crate) enum Source {
    Uffd(Box<UffdSpace>),
    Soft(SoftDirtySpace),
}

impl Source {
    fn vmas(&self) -> &[Vma] {
        match self {
            Source::Uffd(mm) => &mm.vmas,
            Source::Soft(s) => &s.vmas,
        }
    }

    fn harvest(
        &mut self,
        target: &Process,
        scope: &Scope,
        into: &mut Harvest,
    ) -> anyhow::Result<std::result::Result<(), Gone>> {
        match self {
            Source::Uffd(mm) => mm.harvest(target, scope, into),
            Source::Soft(s) => s.harvest(target, scope, into),
        }
    }
}

/// A fresh attachment to the target's current address space.
pub(crate) struct Attachment {
    pub(crate) mm: Source,
    /// What is tracked.
    pub(crate) pieces: Vec<Selected>,
    pub(crate) armed_by: ArmedBy,
    pub(crate) skipped: Vec<Skip>,
    pub(crate) duration: Duration,
    pub(crate) armed_at: SystemTime,
    pub(crate) thread_stopped: Duration,
}

impl Attachment {
    fn describe(&self, pid: i32) -> Attached {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_or_else(
            |_| String::new(),
            |p| {
                use std::os::unix::ffi::OsStrExt;
                maps::name_text(p.as_os_str().as_bytes())
            },
        );
        let pid_namespace = std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .map_or_else(|_| String::new(), |p| p.to_string_lossy().into_owned());
        let pid_in_namespace = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                let ns = s.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
                ns.split_whitespace().last()?.parse().ok()
            })
            .unwrap_or(pid);
        Attached {
            exe,
            pid_namespace,
            pid_in_namespace,
            tracked: self
                .pieces
                .iter()
                .map(|p| TrackedMapping {
                    span: p.span,
                    name: p.vma.display_name().to_string(),
                    kind: p.vma.kind(),
                })
                .collect(),
            skipped: skipped_mappings(&self.skipped),
            armed_by: self.armed_by,
            duration: self.duration,
            armed_at: self.armed_at,
            thread_stopped: self.thread_stopped,
        }
    }
}

pub(crate) fn skipped_mappings(skips: &[Skip]) -> Vec<SkippedMapping> {
    skips
        .iter()
        .map(|s| SkippedMapping {
            span: s.piece.span,
            name: s.piece.vma.display_name().to_string(),
            reason: s.reason.clone(),
            never_writable: s.never_writable,
        })
        .collect()
}

/// Check the scope against the target's mappings before anything touches it. `at_exec`: a
/// launched command at its exec, whose libraries are not mapped yet, so selectors may pick
/// nothing so far.
fn check_scope(target: &Process, scope: &Scope, vmas: &[Vma], at_exec: bool) -> anyhow::Result<()> {
    // An exiting process loses its mappings: that is an exit, not a bad range.
    let exiting = || vmas.is_empty() || exits_within(target, SETTLE);
    let exited = || anyhow!("PID {} exited while being attached to", target.pid);
    let whole = Scope::default();
    if scope.spans != whole.spans {
        for &r in &scope.spans {
            if select(vmas, &whole.within(r)).is_empty() {
                if exiting() {
                    return Err(exited());
                }
                return Err(usage(format!(
                    "range {r} holds no trackable mapping of PID {}: pick a range from /proc/{}/maps",
                    target.pid, target.pid
                )));
            }
        }
    }
    if select(vmas, &whole).is_empty() {
        if exiting() {
            return Err(exited());
        }
        return Err(usage(format!(
            "PID {} has no trackable mappings",
            target.pid
        )));
    }
    if !at_exec && select(vmas, scope).is_empty() {
        return Err(usage(format!(
            "the mapping selectors pick no trackable mapping of PID {} (within the ranges given): pick from /proc/{}/maps",
            target.pid, target.pid
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrackerBuilder;
    use crate::testing::Reap;

    #[test]
    fn a_cursor_walks_pieces_across_spans() {
        let spans = [
            Span::new(0x1000, 0x3000),
            Span::new(0x5000, 0x5000),
            Span::new(0x8000, 0x9000),
        ];
        let mut c = Cursor::new(&spans);
        assert_eq!(c.take(0x1000), Some((0x1000, 0x1000)));
        assert_eq!(c.take(0x8000), Some((0x2000, 0x1000)));
        // The empty span is passed over.
        assert_eq!(c.at(), Some(0x8000));
        let mut d = Cursor::new(&spans);
        d.skip(0x2800);
        assert_eq!(d.at(), Some(0x8800));
        assert_eq!(d.take(0x8000), Some((0x8800, 0x800)));
        assert_eq!((d.at(), d.take(1)), (None, None));
        assert_eq!(Cursor::new(&[]).at(), None);
    }

    /// Pages that cannot be read come as zeros, in their place, and are returned, wherever
    /// they fall among the pieces of one read: more spans than one call takes, a span longer
    /// than its buffer, holes at the start, in both, and at the end. PROT_NONE pages are read.
    #[test]
    fn read_pages_keeps_every_page_in_place_around_holes() {
        if let Err(e) = crate::probe::Support::detect().require(crate::Method::PagemapScan) {
            crate::testing::skipped(format!("this kernel cannot track: {e}"));
            return;
        }
        const PAGES: usize = 4096;
        // Every other page below 3000 (1500 spans), then 3000.. whole (over 4 MiB).
        const HOLES: [usize; 7] = [0, 4, 6, 2000, 3500, 3501, PAGES - 1];
        // Made PROT_NONE after they were written: read all the same, in their place.
        const PROTECTED: [usize; 4] = [2, 1998, 3502, PAGES - 2];
        let page = sys::page_size() as usize;
        let region = sys::AnonMapping::new(PAGES * page, 0).unwrap();
        let tag = |i: usize| 0x5a5a_0000_0000_0000u64 | i as u64;
        for i in 0..PAGES {
            region.write(i * page, tag(i));
            region.write((i + 1) * page - 8, tag(i));
        }
        let mut done = [0i32; 2];
        // SAFETY: a two-int array for pipe(2).
        unsafe { assert_eq!(libc::pipe(done.as_mut_ptr()), 0) };
        // SAFETY: the child only unmaps, writes a pipe and pauses: no allocation or lock, so
        // forking from this multi-threaded test binary is sound.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: async-signal-safe calls on memory and fds made before the fork.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                for h in HOLES {
                    libc::munmap((region.addr() as usize + h * page) as *mut _, page);
                }
                for p in PROTECTED {
                    let at = (region.addr() as usize + p * page) as *mut _;
                    libc::mprotect(at, page, libc::PROT_NONE);
                }
                libc::write(done[1], [1u8].as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        let _child = Reap(pid);
        let mut b = 0u8;
        // SAFETY: one byte over the pipe made above.
        unsafe { libc::read(done[0], (&mut b as *mut u8).cast(), 1) };
        let target = Target::open(pid).unwrap();
        let tracker = TrackerBuilder::new().attach(&target).unwrap();
        let addr = |i: usize| region.addr() + (i * page) as u64;
        let wanted: Vec<usize> = (0..3000).step_by(2).chain(3000..PAGES).collect();
        let set: SpanSet = wanted
            .iter()
            .map(|&i| Span::new(addr(i), addr(i + 1)))
            .collect();
        let mut out = Vec::new();
        let unreadable = tracker.read_pages(&set, &mut out).unwrap();
        assert_eq!(out.len(), wanted.len() * page);
        let holes: SpanSet = HOLES
            .iter()
            .map(|&h| Span::new(addr(h), addr(h + 1)))
            .collect();
        assert_eq!(unreadable, holes);
        for (k, &i) in wanted.iter().enumerate() {
            let got = &out[k * page..(k + 1) * page];
            let word = |at: usize| u64::from_ne_bytes(got[at..at + 8].try_into().unwrap());
            if HOLES.contains(&i) {
                assert!(got.iter().all(|&b| b == 0), "hole {i} is not zeros");
            } else {
                assert_eq!((word(0), word(page - 8)), (tag(i), tag(i)), "page {i}");
                assert!(got[8..page - 8].iter().all(|&b| b == 0), "page {i}");
            }
        }
    }
}
