//! A steady-state harvest allocates nothing: counted by this test binary's global allocator,
//! per thread, over harvests of a live target that writes dense, shared and sparse memory
//! between them, through the public API (`Tracker::harvest_into` a reused `Harvest`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use uffd_dirty::{Arming, Harvest, Target, TrackerBuilder};

use crate::common::*;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed to the system allocator unchanged; counting touches only a
// const-initialized thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn map(len: usize, flags: i32) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping of our own, unmapped at the end of the test.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

#[test]
fn a_steady_state_harvest_allocates_nothing() {
    if !kernel_can_track() {
        return;
    }
    let support = uffd_dirty::probe::Support::detect();
    if !support.pmd_hole_fix {
        skipped("this kernel lacks the PMD-hole fix the test arms with");
        return;
    }
    let page = 4096usize;
    let (dense_len, shared_len, sparse_len) = (256 * page, 64 * page, 2usize << 30);
    let dense = map(dense_len, libc::MAP_PRIVATE);
    let shared = map(shared_len, libc::MAP_SHARED);
    // Reserved, barely populated: tracked as sparse (only its populated pages protected).
    let sparse = map(sparse_len, libc::MAP_PRIVATE | libc::MAP_NORESERVE);
    // SAFETY: the child only writes memory mapped above and sleeps: no allocation, no lock,
    // so forking from this multi-threaded test binary is sound.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let nap = libc::timespec {
            tv_sec: 0,
            tv_nsec: 200_000,
        };
        // SAFETY: prctl and nanosleep are async-signal-safe; every address written lies
        // inside a live mapping of this process.
        unsafe {
            // Dies with the test binary, however that ends.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let mut i = 0usize;
            loop {
                dense.add(i * page % dense_len).write_volatile(i as u8);
                shared
                    .add(i * 7 * page % shared_len)
                    .write_volatile(i as u8);
                sparse.add((i % 16) * (64 << 20)).write_volatile(i as u8);
                libc::nanosleep(&nap, std::ptr::null_mut());
                i += 1;
            }
        }
    }
    let child = Reap(pid);
    let target = Target::open(pid).unwrap();
    let mut tracker = TrackerBuilder::new()
        .arming(Arming::PagemapScan)
        .attach(&target)
        .unwrap();
    let mut harvest = Harvest::new();
    let mut once = |tracker: &mut uffd_dirty::Tracker| {
        std::thread::sleep(Duration::from_millis(5));
        let before = ALLOCATIONS.with(Cell::get);
        tracker.harvest_into(&mut harvest).expect("harvest");
        let allocations = ALLOCATIONS.with(Cell::get) - before;
        assert!(
            harvest.changes().is_empty(),
            "the child's mappings changed: {:?}",
            harvest.changes()
        );
        (allocations, harvest.dirty_pages())
    };
    // Warm up: buffers grow to what the child's writes need.
    for _ in 0..20 {
        once(&mut tracker);
    }
    let (mut allocations, mut pages) = (0, 0);
    for i in 0..40 {
        // Every tenth harvest lists the mappings whole, as one in 10 s does.
        if i % 10 == 0 {
            tracker.relist_mappings();
        }
        let (a, p) = once(&mut tracker);
        allocations += a;
        pages += p;
    }
    drop(tracker);
    drop(child);
    // SAFETY: unmapping exactly what `map` mapped above; the child is gone.
    unsafe {
        libc::munmap(dense.cast(), dense_len);
        libc::munmap(shared.cast(), shared_len);
        libc::munmap(sparse.cast(), sparse_len);
    }
    assert!(pages > 40, "the child's writes were seen ({pages} pages)");
    assert_eq!(allocations, 0, "allocations in 40 steady-state harvests");
}
