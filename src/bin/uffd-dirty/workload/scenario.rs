//! Ground-truth scenarios for a living address space: memory that is mapped, unmapped,
//! moved, zapped, shared, grown and forked while it is written.
//!
//! Each scenario logs, with absolute page addresses, every page whose content it changed
//! (a write, or a zap to zero) and every span it owns exclusively ("watch"), so a test can
//! demand that each change is reported and judge the reports inside owned memory.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::{Rng, now_ns};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// mmap, write, munmap, mprotect and map-over-in-place, at random.
    Churn,
    /// Move a written region with mremap, then write after the move.
    Mremap,
    /// MADV_DONTNEED over written and never-written pages, and MADV_FREE.
    Dontneed,
    /// MADV_HUGEPAGE memory written before and after attach, and a whole huge page zapped.
    Thp,
    /// memfd (with MADV_REMOVE hole punches) and MAP_SHARED|MAP_ANONYMOUS memory.
    Shared,
    /// MAP_PRIVATE and MAP_SHARED mappings of a regular file.
    Filemap,
    /// Grow and shrink the heap with brk.
    Brk,
    /// fork: the child writes its copy (untracked), the parent writes its own.
    Fork,
    /// MAP_HUGETLB memory (needs vm.nr_hugepages).
    Hugetlb,
    /// A 1 TiB MAP_NORESERVE reservation, sparsely written, zapped and read.
    Sparse,
    /// Write, then make read-only before any harvest can see it, then writable again.
    Mprotect,
    /// The program tracks its own writes with an async userfaultfd of its own (as Wine's
    /// GetWriteWatch does); it fails if it ever misses one of them.
    OwnUffd,
    /// A read-only private file mapping made writable for a moment, written and made
    /// read-only again between two harvests.
    RoFile,
    /// Read-only shared mappings of a memfd and of a file opened read-write, made writable,
    /// written and made read-only again between two harvests (and one of a file opened
    /// read-only, which can never be written).
    RoShared,
    /// What dlopen() does: map a file privately, read (text) and write (relocate) some pages,
    /// make it read-only, all between two harvests.
    DlopenLike,
}

#[derive(Debug, Clone, Args)]
pub struct ScenarioArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Rounds of the scenario after the go byte.
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Pause between rounds.
    #[arg(long, default_value = "1ms", value_parser = crate::cli::parse_interval)]
    pub gap: Duration,
    /// Write the ground-truth log (NDJSON) here.
    #[arg(long)]
    pub log: PathBuf,
}

const PAGE: usize = 4096;
const HUGE: usize = 2 << 20;

/// The scenario's log, kept in memory (so logging never maps or writes watched memory
/// during the run) and written at the end.
struct Log {
    lines: Vec<Value>,
}

impl Log {
    fn watch(&mut self, start: usize, len: usize) {
        self.lines
            .push(json!({"type": "watch", "start": start, "end": start + len, "t": now_ns()}));
    }
    fn unwatch(&mut self, start: usize, len: usize) {
        self.lines
            .push(json!({"type": "unwatch", "start": start, "end": start + len, "t": now_ns()}));
    }
    /// Pages whose content changed between `t0` and now.
    fn changed(&mut self, t0: u64, pages: Vec<usize>) {
        if !pages.is_empty() {
            self.lines
                .push(json!({"type": "write", "t0": t0, "t1": now_ns(), "pages": pages}));
        }
    }
    /// Pages whose content became zero between `t0` and now (zapped, or mapped over).
    fn zeroed(&mut self, t0: u64, pages: Vec<usize>) {
        if !pages.is_empty() {
            self.lines.push(
                json!({"type": "write", "zero": true, "t0": t0, "t1": now_ns(), "pages": pages}),
            );
        }
    }
    /// Pages holding data before attach (not changes the tracker must report).
    fn before_attach(&mut self, pages: &[usize]) {
        self.lines
            .push(json!({"type": "write", "pre": true, "t0": 0, "t1": 0, "pages": pages}));
    }
}

fn map(len: usize, prot: i32, flags: i32, fd: i32) -> io::Result<usize> {
    // SAFETY: a new mapping at a kernel-chosen address aliases nothing of ours.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p as usize)
    }
}

fn anon(len: usize) -> io::Result<usize> {
    map(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )
}

fn check(r: libc::c_int, what: &str) -> Result<()> {
    if r != 0 {
        bail!("{what}: {}", io::Error::last_os_error());
    }
    Ok(())
}

/// Write one byte to each page; returns them.
fn write_pages(pages: &[usize], value: u8) -> Vec<usize> {
    for &p in pages {
        // SAFETY: every address passed here is a page of a live read-write mapping owned by
        // the scenario.
        unsafe { std::ptr::write_volatile(p as *mut u8, value) };
    }
    pages.to_vec()
}

fn some_pages(rng: &mut Rng, start: usize, npages: usize, count: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..count)
        .map(|_| start + (rng.next() as usize % npages) * PAGE)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

struct Region {
    start: usize,
    pages: usize,
    /// Pages that hold data (written and not zapped since).
    populated: Vec<usize>,
}

fn churn(args: &ScenarioArgs, rng: &mut Rng, log: &mut Log) -> Result<()> {
    let mut live: Vec<Region> = Vec::new();
    for step in 0..args.steps {
        let t0 = now_ns();
        match rng.next() % 6 {
            0 | 1 if live.len() < 24 => {
                let pages = 1 + rng.next() as usize % 32;
                let start = anon(pages * PAGE)?;
                log.watch(start, pages * PAGE);
                let w = write_pages(&some_pages(rng, start, pages, 1 + pages / 3), step as u8);
                log.changed(t0, w.clone());
                live.push(Region {
                    start,
                    pages,
                    populated: w,
                });
            }
            2 if !live.is_empty() => {
                let r = live.swap_remove(rng.next() as usize % live.len());
                log.unwatch(r.start, r.pages * PAGE);
                check(
                    // SAFETY: unmapping a region the scenario mapped and no longer uses.
                    unsafe { libc::munmap(r.start as *mut _, r.pages * PAGE) },
                    "munmap",
                )?;
            }
            3 if !live.is_empty() => {
                // Split the VMA for a while: read-only middle, then read-write again.
                let r = &live[rng.next() as usize % live.len()];
                if r.pages >= 3 {
                    let mid = r.start + PAGE;
                    check(
                        // SAFETY: mprotect of pages inside a live mapping of ours.
                        unsafe { libc::mprotect(mid as *mut _, PAGE, libc::PROT_READ) },
                        "mprotect",
                    )?;
                    check(
                        // SAFETY: as above.
                        unsafe {
                            libc::mprotect(mid as *mut _, PAGE, libc::PROT_READ | libc::PROT_WRITE)
                        },
                        "mprotect",
                    )?;
                }
            }
            4 if !live.is_empty() => {
                // Map over in place: the same range, a new (unregistered) VMA, zero content.
                let i = rng.next() as usize % live.len();
                let (start, pages) = (live[i].start, live[i].pages);
                // SAFETY: MAP_FIXED over a mapping of ours that nothing references.
                let p = unsafe {
                    libc::mmap(
                        start as *mut _,
                        pages * PAGE,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    bail!("mmap MAP_FIXED: {}", io::Error::last_os_error());
                }
                // The old data is gone: its pages changed (to zero).
                let zapped = std::mem::take(&mut live[i].populated);
                log.zeroed(t0, zapped);
                let t0 = now_ns();
                let w = write_pages(&some_pages(rng, start, pages, 2), step as u8);
                log.changed(t0, w.clone());
                live[i].populated = w;
            }
            _ => {
                for r in &mut live {
                    let w = write_pages(&some_pages(rng, r.start, r.pages, 2), step as u8);
                    r.populated.extend_from_slice(&w);
                    log.changed(t0, w);
                }
            }
        }
        std::thread::sleep(args.gap);
    }
    Ok(())
}

fn mremap_scenario(args: &ScenarioArgs, rng: &mut Rng, log: &mut Log) -> Result<()> {
    const PAGES: usize = 64;
    // Two reservations: the region moves back and forth between them.
    let mut at = [anon(PAGES * PAGE)?, anon(PAGES * PAGE)?];
    log.watch(at[0], PAGES * PAGE);
    log.watch(at[1], PAGES * PAGE);
    let t0 = now_ns();
    let mut populated = write_pages(&some_pages(rng, at[0], PAGES, 20), 1);
    log.changed(t0, populated.clone());
    for step in 0..args.steps {
        let t0 = now_ns();
        // SAFETY: moving our own mapping onto our own other reservation.
        let p = unsafe {
            libc::mremap(
                at[0] as *mut _,
                PAGES * PAGE,
                PAGES * PAGE,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                at[1] as *mut libc::c_void,
            )
        };
        if p == libc::MAP_FAILED {
            bail!("mremap: {}", io::Error::last_os_error());
        }
        // Data appeared at the new place; the old place is unmapped: map it again.
        let moved: Vec<usize> = populated.iter().map(|&a| a - at[0] + at[1]).collect();
        let old = std::mem::take(&mut populated);
        // SAFETY: MAP_FIXED_NOREPLACE at the address the move just vacated: it fails rather
        // than replace anything.
        let p = unsafe {
            libc::mmap(
                at[0] as *mut libc::c_void,
                PAGES * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        let fresh = (p != libc::MAP_FAILED && p as usize == at[0]).then_some(at[0]);
        at.swap(0, 1);
        if fresh.is_none() {
            // The old range could not be reclaimed at the same address: use a new one.
            at[1] = anon(PAGES * PAGE)?;
            log.watch(at[1], PAGES * PAGE);
        }
        let w = write_pages(&some_pages(rng, at[0], PAGES, 4), step as u8);
        populated = moved.clone();
        populated.extend_from_slice(&w);
        populated.sort_unstable();
        populated.dedup();
        // The data left its old place, which now reads zero (mapped afresh).
        log.zeroed(t0, old);
        let mut changed = moved;
        changed.extend(w);
        log.changed(t0, changed);
        std::thread::sleep(args.gap * 5);
    }
    Ok(())
}

fn dontneed(args: &ScenarioArgs, rng: &mut Rng, log: &mut Log) -> Result<()> {
    const PAGES: usize = 256;
    let start = anon(PAGES * PAGE)?;
    log.watch(start, PAGES * PAGE);
    let mut populated = vec![false; PAGES];
    for step in 0..args.steps {
        let t0 = now_ns();
        let w = write_pages(&some_pages(rng, start, PAGES, 8), step as u8);
        for &a in &w {
            populated[(a - start) / PAGE] = true;
        }
        log.changed(t0, w);
        if step % 3 == 2 {
            // Zap a run that holds written and never-written pages: only the written ones
            // change (to zero).
            let first = rng.next() as usize % (PAGES - 32);
            let t0 = now_ns();
            check(
                // SAFETY: madvise on pages of our own mapping.
                unsafe {
                    libc::madvise(
                        (start + first * PAGE) as *mut _,
                        32 * PAGE,
                        libc::MADV_DONTNEED,
                    )
                },
                "madvise",
            )?;
            let zapped: Vec<usize> = (first..first + 32)
                .filter(|&i| populated[i])
                .map(|i| start + i * PAGE)
                .collect();
            populated[first..first + 32].fill(false);
            log.zeroed(t0, zapped);
        }
        if step % 3 == 1 {
            // MADV_FREE: the content goes only if reclaimed (never here, without memory
            // pressure); later writes to those pages must still be reported.
            let first = rng.next() as usize % (PAGES - 32);
            check(
                // SAFETY: madvise on pages of our own mapping.
                unsafe {
                    libc::madvise((start + first * PAGE) as *mut _, 32 * PAGE, libc::MADV_FREE)
                },
                "madvise(MADV_FREE)",
            )?;
        }
        std::thread::sleep(args.gap);
    }
    Ok(())
}

/// A 2 MiB-aligned `len` of anonymous memory.
fn aligned_anon(len: usize) -> Result<usize> {
    let raw = anon(len + HUGE)?;
    let start = (raw + HUGE - 1) & !(HUGE - 1);
    // SAFETY: trimming the unaligned head and tail of our own fresh mapping.
    unsafe {
        if start > raw {
            libc::munmap(raw as *mut _, start - raw);
        }
        libc::munmap((start + len) as *mut _, raw + HUGE - start);
    }
    Ok(start)
}

fn thp_setup(rng: &mut Rng) -> Result<(usize, usize, Vec<usize>)> {
    let len = 4 * HUGE;
    let start = aligned_anon(len)?;
    check(
        // SAFETY: madvise on our own mapping.
        unsafe { libc::madvise(start as *mut _, len, libc::MADV_HUGEPAGE) },
        "madvise(MADV_HUGEPAGE)",
    )?;
    // Before attach: populate the first three huge pages (not logged: before attach).
    let mut written = Vec::new();
    for h in 0..3 {
        written.extend(write_pages(&some_pages(rng, start + h * HUGE, 512, 1), 1));
    }
    Ok((start, len, written))
}

fn thp(
    args: &ScenarioArgs,
    rng: &mut Rng,
    log: &mut Log,
    (start, len, mut written): (usize, usize, Vec<usize>),
) -> Result<()> {
    log.watch(start, len);
    log.before_attach(&written);
    let pages = len / PAGE;
    for step in 0..args.steps {
        let t0 = now_ns();
        let w = write_pages(&some_pages(rng, start, pages, 4), step as u8);
        written.extend_from_slice(&w);
        log.changed(t0, w);
        if step == args.steps / 2 {
            // Zap the whole first huge page: its page table may go, leaving a PMD hole.
            let t0 = now_ns();
            check(
                // SAFETY: madvise on our own mapping.
                unsafe { libc::madvise(start as *mut _, HUGE, libc::MADV_DONTNEED) },
                "madvise",
            )?;
            // The pages that held data there are zero now: changed.
            let (zapped, kept): (Vec<usize>, Vec<usize>) =
                written.iter().partition(|&&a| a < start + HUGE);
            written = kept;
            log.zeroed(t0, zapped);
        }
        std::thread::sleep(args.gap);
    }
    Ok(())
}

fn shared(args: &ScenarioArgs, rng: &mut Rng, log: &mut Log) -> Result<()> {
    const PAGES: usize = 64;
    let name = c"uffd-dirty-scenario";
    // SAFETY: creating a memfd; the name is a valid C string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        bail!("memfd_create: {}", io::Error::last_os_error());
    }
    check(
        // SAFETY: sizing our own memfd.
        unsafe { libc::ftruncate(fd, (PAGES * PAGE) as libc::off_t) },
        "ftruncate",
    )?;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let memfd = map(PAGES * PAGE, rw, libc::MAP_SHARED, fd)?;
    let shanon = map(PAGES * PAGE, rw, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1)?;
    log.watch(memfd, PAGES * PAGE);
    log.watch(shanon, PAGES * PAGE);
    let mut written = std::collections::BTreeSet::new();
    for step in 0..args.steps {
        let t0 = now_ns();
        let mut w = write_pages(&some_pages(rng, memfd, PAGES, 3), step as u8);
        w.extend(write_pages(&some_pages(rng, shanon, PAGES, 3), step as u8));
        written.extend(w.iter().copied());
        log.changed(t0, w);
        if step % 5 == 4 {
            // MADV_REMOVE punches a hole in the memfd: those pages read zero from now on.
            let first = memfd + (rng.next() as usize % (PAGES - 8)) * PAGE;
            let t0 = now_ns();
            check(
                // SAFETY: madvise on our own shared mapping.
                unsafe { libc::madvise(first as *mut _, 8 * PAGE, libc::MADV_REMOVE) },
                "madvise(MADV_REMOVE)",
            )?;
            let gone: Vec<usize> = (0..8)
                .map(|i| first + i * PAGE)
                .filter(|a| written.remove(a))
                .collect();
            log.zeroed(t0, gone);
        }
        std::thread::sleep(args.gap);
    }
    Ok(())
}

/// Private and shared mappings of a regular file: private writes are copies (COW), shared
/// writes go to the file's page cache.
fn filemap(args: &ScenarioArgs, rng: &mut Rng, log: &mut Log) -> Result<()> {
    const PAGES: usize = 64;
    let path = args.log.with_extension("data");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    file.set_len((PAGES * PAGE) as u64)?;
    use std::os::fd::AsRawFd;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let private = map(PAGES * PAGE, rw, libc::MAP_PRIVATE, file.as_raw_fd())?;
    let shared = map(PAGES * PAGE, rw, libc::MAP_SHARED, file.as_raw_fd())?;
    log.watch(private, PAGES * PAGE);
    log.watch(shared, PAGES * PAGE);
    for step in 0..args.steps {
        let t0 = now_ns();
        let mut w = write_pages(&some_pages(rng, private, PAGES, 3), step as u8);
        w.extend(write_pages(&some_pages(rng, shared, PAGES, 3), step as u8));
        log.changed(t0, w);
        std::thread::sleep(args.gap);
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

fn brk(args: &ScenarioArgs, rng: &mut Rng, log: &mut Log) -> Result<()> {
    const GROW: usize = 16;
    // Grow only: the allocator may use brk too, and copes with a break moved up by someone
    // else, but not with one pulled from under it.
    let mut grown: Vec<(usize, usize)> = Vec::new();
    for step in 0..args.steps {
        if step % 10 == 0 {
            // SAFETY: sbrk extends the heap by memory nothing else uses yet.
            let p = unsafe { libc::sbrk((GROW * PAGE) as libc::intptr_t) } as usize;
            if p == usize::MAX {
                bail!("sbrk: {}", io::Error::last_os_error());
            }
            // Whole pages of the extension only (the old break may be mid-page).
            let first = (p + PAGE - 1) & !(PAGE - 1);
            let pages = (p + GROW * PAGE - first) / PAGE;
            log.watch(first, pages * PAGE);
            grown.push((first, pages));
        }
        let t0 = now_ns();
        for &(start, pages) in &grown {
            log.changed(
                t0,
                write_pages(&some_pages(rng, start, pages, 2), step as u8),
            );
        }
        std::thread::sleep(args.gap);
    }
    Ok(())
}

fn fork_scenario(args: &ScenarioArgs, rng: &mut Rng, log: &mut Log) -> Result<()> {
    const PAGES: usize = 128;
    let start = anon(PAGES * PAGE)?;
    log.watch(start, PAGES * PAGE);
    let t0 = now_ns();
    log.changed(t0, write_pages(&some_pages(rng, start, PAGES, 32), 1));
    // SAFETY: the child only writes to memory and calls _exit.
    let child = unsafe { libc::fork() };
    if child < 0 {
        bail!("fork: {}", io::Error::last_os_error());
    }
    if child == 0 {
        for i in 0..PAGES {
            // SAFETY: the child's own copy of the region.
            unsafe { std::ptr::write_volatile((start + i * PAGE) as *mut u8, 0xcc) };
        }
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    for step in 0..args.steps {
        let t0 = now_ns();
        log.changed(
            t0,
            write_pages(&some_pages(rng, start, PAGES, 3), step as u8),
        );
        std::thread::sleep(args.gap);
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    Ok(())
}

fn hugetlb(args: &ScenarioArgs, rng: &mut Rng, log: &mut Log) -> Result<()> {
    let len = 2 * HUGE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB;
    let start = map(len, libc::PROT_READ | libc::PROT_WRITE, flags, -1)
        .context("mmap(MAP_HUGETLB) of 4 MiB: set vm.nr_hugepages to at least 2")?;
    log.watch(start, len);
    for step in 0..args.steps {
        let t0 = now_ns();
        log.changed(
            t0,
            write_pages(&some_pages(rng, start, len / PAGE, 2), step as u8),
        );
        std::thread::sleep(args.gap);
    }
    Ok(())
}

/// The process's page-table memory, in KiB (`VmPTE` in /proc/self/status).
fn vm_pte_kib() -> u64 {
    crate::os::proc_kib("/proc/self/status", "VmPTE").unwrap_or(0)
}

const SPARSE_LEN: usize = 1 << 40;

fn sparse_setup(rng: &mut Rng) -> Result<(usize, Vec<usize>)> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let start = map(SPARSE_LEN, libc::PROT_READ | libc::PROT_WRITE, flags, -1)
        .context("mmap of a 1 TiB reservation")?;
    let pre = write_pages(&some_pages(rng, start, SPARSE_LEN / PAGE, 64), 1);
    Ok((start, pre))
}

fn sparse(
    args: &ScenarioArgs,
    rng: &mut Rng,
    log: &mut Log,
    (start, pre): (usize, Vec<usize>),
    pte_before: u64,
) -> Result<()> {
    log.watch(start, SPARSE_LEN);
    log.before_attach(&pre);
    let mut written = pre;
    for step in 0..args.steps {
        let t0 = now_ns();
        // New pages far apart, and pages written before.
        let mut w = some_pages(rng, start, SPARSE_LEN / PAGE, 2);
        w.push(written[rng.next() as usize % written.len()]);
        let w = write_pages(&w, step as u8);
        written.extend_from_slice(&w);
        log.changed(t0, w);
        if step % 5 == 4 {
            let victim = written.swap_remove(rng.next() as usize % written.len());
            let t0 = now_ns();
            check(
                // SAFETY: madvise on a page of our own reservation.
                unsafe { libc::madvise(victim as *mut _, PAGE, libc::MADV_DONTNEED) },
                "madvise",
            )?;
            written.retain(|&a| a != victim);
            log.zeroed(t0, vec![victim]);
            // A read of a never-written page maps the zero page: no change.
            let r = some_pages(rng, start, SPARSE_LEN / PAGE, 1)[0];
            // SAFETY: reading a page of our own reservation.
            std::hint::black_box(unsafe { std::ptr::read_volatile(r as *const u8) });
        }
        std::thread::sleep(args.gap);
    }
    log.lines
        .push(json!({"type": "vmpte", "before_kib": pte_before, "after_kib": vm_pte_kib()}));
    Ok(())
}

/// The program's own write tracking, set up before any tracker attaches.
struct OwnTracking {
    _uffd: std::os::fd::OwnedFd,
    pagemap: File,
    start: usize,
    pages: usize,
}

fn own_uffd_setup() -> Result<OwnTracking> {
    use crate::sys::abi;
    use std::os::fd::AsFd;
    const PAGES: usize = 64;
    let uffd = crate::sys::userfaultfd_local().context("userfaultfd")?;
    crate::sys::uffdio_api(
        uffd.as_fd(),
        abi::UFFD_FEATURE_WP_ASYNC | abi::UFFD_FEATURE_WP_UNPOPULATED,
    )?;
    let start = anon(PAGES * PAGE)?;
    crate::sys::uffdio_register_wp(uffd.as_fd(), start as u64, (PAGES * PAGE) as u64)?;
    let pagemap = File::open("/proc/self/pagemap")?;
    let mut own = OwnTracking {
        _uffd: uffd,
        pagemap,
        start,
        pages: PAGES,
    };
    own.harvest()?;
    Ok(own)
}

impl OwnTracking {
    /// The program's own harvest: written pages since the last one, re-protected.
    fn harvest(&mut self) -> Result<Vec<usize>> {
        use crate::sys::pagemap::{Categories, NO_REGION, Scan};
        use std::os::fd::AsFd;
        let mut regions = vec![NO_REGION; self.pages];
        let written = Scan::pages()
            .all_of(Categories::WRITTEN)
            .report(Categories::WRITTEN)
            .write_protect()
            .run(
                self.pagemap.as_fd(),
                self.start as u64..(self.start + self.pages * PAGE) as u64,
                &mut regions,
            )?;
        Ok(written
            .regions
            .iter()
            .flat_map(|r| (r.start..r.end).step_by(PAGE))
            .map(|a| a as usize)
            .collect())
    }
}

fn mprotect_scenario(args: &ScenarioArgs, rng: &mut Rng, log: &mut Log) -> Result<()> {
    const PAGES: usize = 32;
    let start = anon(PAGES * PAGE)?;
    log.watch(start, PAGES * PAGE);
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    for step in 0..args.steps {
        let t0 = now_ns();
        log.changed(
            t0,
            write_pages(&some_pages(rng, start, PAGES, 3), step as u8),
        );
        check(
            // SAFETY: mprotect of our own mapping.
            unsafe { libc::mprotect(start as *mut _, PAGES * PAGE, libc::PROT_READ) },
            "mprotect",
        )?;
        std::thread::sleep(args.gap * 30);
        check(
            // SAFETY: as above.
            unsafe { libc::mprotect(start as *mut _, PAGES * PAGE, rw) },
            "mprotect",
        )?;
    }
    Ok(())
}

/// A data file of `pages` pages beside the log, each page holding its index (so a page read
/// from it is not the zero page), open read-write.
fn data_file(args: &ScenarioArgs, name: &str, pages: usize) -> Result<(File, PathBuf)> {
    let path = args.log.with_extension(name);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    for i in 0..pages {
        file.write_all(&[i as u8 | 0x80; PAGE])?;
    }
    Ok((file, path))
}

fn mprotect(start: usize, len: usize, prot: i32) -> Result<()> {
    // SAFETY: every caller passes pages of a live mapping the scenario owns.
    check(
        unsafe { libc::mprotect(start as *mut _, len, prot) },
        "mprotect",
    )
}

/// Read one byte of each page (a file page is faulted in; nothing changes).
fn read_pages(pages: &[usize]) {
    for &p in pages {
        // SAFETY: every address passed here is a page of a live readable mapping of ours.
        std::hint::black_box(unsafe { std::ptr::read_volatile(p as *const u8) });
    }
}

/// Pages of `(start, pages)` mappings made writable for a moment, written and made read-only
/// again, with a few pages only read: the writable window is far shorter than an interval.
fn brief_windows(
    args: &ScenarioArgs,
    rng: &mut Rng,
    log: &mut Log,
    mappings: &[(usize, usize)],
) -> Result<()> {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    for step in 0..args.steps {
        for &(start, pages) in mappings {
            // A window of 1-8 pages somewhere in the mapping (it splits the VMA).
            let len = 1 + rng.next() as usize % 8;
            let first = start + (rng.next() as usize % (pages - len + 1)) * PAGE;
            let t0 = now_ns();
            mprotect(first, len * PAGE, rw)?;
            let w = write_pages(&some_pages(rng, first, len, 2), step as u8);
            mprotect(first, len * PAGE, libc::PROT_READ)?;
            log.changed(t0, w);
            read_pages(&some_pages(rng, start, pages, 1));
        }
        std::thread::sleep(args.gap);
    }
    Ok(())
}

const RO_FILE_PAGES: usize = 64;

/// Mapped before attach, some pages read: a read-only private file mapping the tracker finds.
fn ro_file_setup(args: &ScenarioArgs, rng: &mut Rng) -> Result<(usize, PathBuf)> {
    use std::os::fd::AsRawFd;
    let (file, path) = data_file(args, "data", RO_FILE_PAGES)?;
    let private = map(
        RO_FILE_PAGES * PAGE,
        libc::PROT_READ,
        libc::MAP_PRIVATE,
        file.as_raw_fd(),
    )?;
    read_pages(&some_pages(rng, private, RO_FILE_PAGES, 16));
    Ok((private, path))
}

fn ro_file(
    args: &ScenarioArgs,
    rng: &mut Rng,
    log: &mut Log,
    (private, path): (usize, PathBuf),
) -> Result<()> {
    log.watch(private, RO_FILE_PAGES * PAGE);
    let r = brief_windows(args, rng, log, &[(private, RO_FILE_PAGES)]);
    let _ = std::fs::remove_file(&path);
    r
}

fn ro_shared(args: &ScenarioArgs, rng: &mut Rng, log: &mut Log) -> Result<()> {
    const PAGES: usize = 64;
    use std::os::fd::AsRawFd;
    let name = c"uffd-dirty-ro-shared";
    // SAFETY: creating a memfd; the name is a valid C string.
    let memfd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if memfd < 0 {
        bail!("memfd_create: {}", io::Error::last_os_error());
    }
    check(
        // SAFETY: sizing our own memfd.
        unsafe { libc::ftruncate(memfd, (PAGES * PAGE) as libc::off_t) },
        "ftruncate",
    )?;
    let (file, path) = data_file(args, "data", PAGES)?;
    let (_, ro_path) = data_file(args, "ro", PAGES)?;
    let read_only = File::open(&ro_path)?;
    let shared = libc::MAP_SHARED;
    let of_memfd = map(PAGES * PAGE, libc::PROT_READ, shared, memfd)?;
    let of_file = map(PAGES * PAGE, libc::PROT_READ, shared, file.as_raw_fd())?;
    // Never writable (no VM_MAYWRITE): the tracker cannot register it, and needs not.
    let never = map(PAGES * PAGE, libc::PROT_READ, shared, read_only.as_raw_fd())?;
    read_pages(&some_pages(rng, never, PAGES, 8));
    log.watch(of_memfd, PAGES * PAGE);
    log.watch(of_file, PAGES * PAGE);
    log.watch(never, PAGES * PAGE);
    let r = brief_windows(args, rng, log, &[(of_memfd, PAGES), (of_file, PAGES)]);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&ro_path);
    r
}

/// Like ld.so's dlopen(): a fresh private mapping of a file, some pages read (text), some
/// written (relocations), then made read-only (RELRO), within one interval. All stay mapped
/// (a mapping made where an unmapped one was, with the same file and permissions, looks
/// unchanged and is reported whole: the churn scenario covers that).
fn dlopen_like(args: &ScenarioArgs, rng: &mut Rng, log: &mut Log) -> Result<()> {
    const PAGES: usize = 32;
    use std::os::fd::AsRawFd;
    let (file, path) = data_file(args, "data", PAGES)?;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    for step in 0..args.steps {
        let t0 = now_ns();
        let start = map(PAGES * PAGE, rw, libc::MAP_PRIVATE, file.as_raw_fd())?;
        log.watch(start, PAGES * PAGE);
        read_pages(&some_pages(rng, start, PAGES, 4));
        let w = write_pages(&some_pages(rng, start, PAGES, 6), step as u8);
        mprotect(start, PAGES * PAGE, libc::PROT_READ)?;
        log.changed(t0, w);
        std::thread::sleep(args.gap * 3);
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

fn own_uffd(args: &ScenarioArgs, rng: &mut Rng, own: &mut OwnTracking) -> Result<()> {
    for step in 0..args.steps {
        let mut w = write_pages(&some_pages(rng, own.start, own.pages, 3), step as u8);
        w.sort_unstable();
        w.dedup();
        std::thread::sleep(args.gap * 5);
        let seen = own.harvest()?;
        let missed: Vec<_> = w.iter().filter(|a| !seen.contains(a)).collect();
        if !missed.is_empty() {
            bail!(
                "the program's own write tracking missed {} of {} writes in round {step}",
                missed.len(),
                w.len()
            );
        }
    }
    Ok(())
}

pub fn run_scenario(args: &ScenarioArgs) -> Result<i32> {
    let mut rng = Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut log = Log {
        lines: Vec::with_capacity(4096),
    };
    let thp_region = if args.scenario == Scenario::Thp {
        Some(thp_setup(&mut rng)?)
    } else {
        None
    };
    let sparse_region = if args.scenario == Scenario::Sparse {
        Some(sparse_setup(&mut rng)?)
    } else {
        None
    };
    let ro_file_region = if args.scenario == Scenario::RoFile {
        Some(ro_file_setup(args, &mut rng)?)
    } else {
        None
    };
    let pte_before = vm_pte_kib();
    let mut own = if args.scenario == Scenario::OwnUffd {
        Some(own_uffd_setup()?)
    } else {
        None
    };
    let mut stdout = io::stdout().lock();
    writeln!(
        stdout,
        "{}",
        json!({"type": "ready", "pid": std::process::id()})
    )?;
    stdout.flush()?;
    let mut go = [0u8; 1];
    io::stdin()
        .read_exact(&mut go)
        .context("waiting for the go byte on stdin")?;
    match args.scenario {
        Scenario::Churn => churn(args, &mut rng, &mut log)?,
        Scenario::Mremap => mremap_scenario(args, &mut rng, &mut log)?,
        Scenario::Dontneed => dontneed(args, &mut rng, &mut log)?,
        Scenario::Thp => thp(args, &mut rng, &mut log, thp_region.expect("set up above"))?,
        Scenario::Shared => shared(args, &mut rng, &mut log)?,
        Scenario::Filemap => filemap(args, &mut rng, &mut log)?,
        Scenario::Brk => brk(args, &mut rng, &mut log)?,
        Scenario::Fork => fork_scenario(args, &mut rng, &mut log)?,
        Scenario::Hugetlb => hugetlb(args, &mut rng, &mut log)?,
        Scenario::Mprotect => mprotect_scenario(args, &mut rng, &mut log)?,
        Scenario::OwnUffd => own_uffd(args, &mut rng, own.as_mut().expect("set up above"))?,
        Scenario::RoFile => ro_file(
            args,
            &mut rng,
            &mut log,
            ro_file_region.expect("set up above"),
        )?,
        Scenario::RoShared => ro_shared(args, &mut rng, &mut log)?,
        Scenario::DlopenLike => dlopen_like(args, &mut rng, &mut log)?,
        Scenario::Sparse => sparse(
            args,
            &mut rng,
            &mut log,
            sparse_region.expect("set up above"),
            pte_before,
        )?,
    }
    writeln!(stdout, "{}", json!({"type": "done"}))?;
    stdout.flush()?;
    let mut rest = Vec::new();
    let _ = io::stdin().read_to_end(&mut rest);
    let mut out = BufWriter::new(
        File::create(&args.log).with_context(|| format!("creating {}", args.log.display()))?,
    );
    for line in &log.lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(0)
}
