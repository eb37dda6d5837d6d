//! The cheap watch between full listings of the mappings (src/tracker/watch.rs): what it
//! must see at the next harvest, what it may see late (and that this loses no write), and
//! `Tracker::relist_mappings`. The target is a forked child that performs one step per byte
//! written to its pipe and answers with a byte once done, so that every step lies between
//! two known harvests.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use uffd_dirty::{Change, Harvest, Span, SpanSet, Target, Tracker, TrackerBuilder};

use crate::common::*;

const PAGE: usize = 4096;

/// A forked child running `step(n)` for the n-th byte it reads, acknowledging each.
struct Stepped {
    pid: i32,
    to_child: OwnedFd,
    from_child: OwnedFd,
    _reap: Reap,
}

impl Stepped {
    /// Fork; the child runs `setup` once, then waits for steps.
    fn spawn(setup: unsafe fn(), step: unsafe fn(u8) -> u8) -> Stepped {
        let (mut down, mut up) = ([0i32; 2], [0i32; 2]);
        // SAFETY: pipe(2) fills the arrays it is given.
        assert_eq!(unsafe { libc::pipe(down.as_mut_ptr()) }, 0);
        assert_eq!(unsafe { libc::pipe(up.as_mut_ptr()) }, 0);
        // SAFETY: the child uses only async-signal-safe calls (read, write, mmap, mremap,
        // munmap, mprotect, prctl, _exit) and writes only memory it mapped itself, so forking
        // from this multi-threaded test binary is sound.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Not the test binary's other fds: a userfaultfd of a tracker in another test
                // would make this child one holding its own, watched differently.
                for fd in 3..1024 {
                    if ![down[0], up[1], RO_FD].contains(&fd) {
                        libc::close(fd);
                    }
                }
                setup();
                let mut n = 0u8;
                let mut b = 0u8;
                libc::write(up[1], (&raw const b).cast(), 1);
                while libc::read(down[0], (&raw mut b).cast(), 1) == 1 {
                    b = step(n);
                    n += 1;
                    libc::write(up[1], (&raw const b).cast(), 1);
                }
                libc::_exit(0);
            }
        }
        // SAFETY: the fds were just made by pipe(2) and are ours alone.
        let (to_child, from_child) =
            unsafe { (OwnedFd::from_raw_fd(down[1]), OwnedFd::from_raw_fd(up[0])) };
        unsafe {
            libc::close(down[0]);
            libc::close(up[1]);
        }
        let s = Stepped {
            pid,
            to_child,
            from_child,
            _reap: Reap(pid),
        };
        s.wait_ack();
        s
    }

    fn wait_ack(&self) -> u8 {
        let mut b = 0u8;
        // SAFETY: reading one byte into a local.
        let n = unsafe { libc::read(self.from_child.as_raw_fd(), (&raw mut b).cast(), 1) };
        assert_eq!(n, 1, "the child died");
        b
    }

    /// Run the child's next step and wait until it is done; what the step returned.
    fn step(&self) -> u8 {
        let b = 0u8;
        // SAFETY: writing one byte from a local.
        let n = unsafe { libc::write(self.to_child.as_raw_fd(), (&raw const b).cast(), 1) };
        assert_eq!(n, 1);
        self.wait_ack()
    }
}

/// Addresses the child's setup chose, shared with the parent by being fixed: a region of the
/// address space that nothing else of a small test binary uses.
const BASE: usize = 0x5a00_0000_0000;

unsafe fn map_fixed(addr: usize, pages: usize, prot: i32, flags: i32, fd: i32) {
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            pages * PAGE,
            prot,
            flags | libc::MAP_FIXED_NOREPLACE,
            fd,
            0,
        )
    };
    if p as usize != addr {
        unsafe { libc::_exit(90) };
    }
}

unsafe fn write_pages(addr: usize, pages: std::ops::Range<usize>) {
    for i in pages {
        unsafe { ((addr + i * PAGE) as *mut u8).write_volatile(0x5a) };
    }
}

/// A memfd of 32 pages, kept in `MEMFD` for the steps.
unsafe fn memfd(name: &std::ffi::CStr) -> i32 {
    unsafe {
        let fd = libc::memfd_create(name.as_ptr(), 0);
        if fd < 0 || libc::ftruncate(fd, (32 * PAGE) as i64) != 0 {
            libc::_exit(93);
        }
        MEMFD = fd;
        fd
    }
}

/// Unmap 8 pages at `gone`, then grow R in place from 8 pages to 16 (the address space
/// keeps its size).
unsafe fn unmap_and_grow_r(gone: usize) {
    unsafe {
        libc::munmap(gone as *mut libc::c_void, 8 * PAGE);
        if libc::mremap(R as *mut libc::c_void, 8 * PAGE, 16 * PAGE, 0) as usize != R {
            libc::_exit(91);
        }
    }
}

/// Punch holes in `MEMFD`, each `(first page, pages)`.
unsafe fn punch(holes: &[(usize, usize)]) {
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    for &(first, pages) in holes {
        let (offset, len) = ((first * PAGE) as i64, (pages * PAGE) as i64);
        if unsafe { libc::fallocate(MEMFD, punch, offset, len) } != 0 {
            unsafe { libc::_exit(94) };
        }
    }
}

/// The pages of R (by index) that `h` did not report, as addresses.
fn unreported(h: &Harvest, pages: impl IntoIterator<Item = usize>) -> Vec<String> {
    pages
        .into_iter()
        .map(|i| (R + i * PAGE) as u64)
        .filter(|&a| !h.dirty().contains(a))
        .map(|a| format!("{a:#x}"))
        .collect()
}

fn attach(pid: i32) -> (Target, Tracker) {
    let target = Target::open(pid).unwrap();
    let tracker = TrackerBuilder::new().attach(&target).unwrap();
    (target, tracker)
}

fn harvest(tracker: &mut Tracker) -> Harvest {
    let mut h = Harvest::new();
    tracker.harvest_into(&mut h).unwrap();
    h
}

/// The child's mappings at or above `BASE`, from /proc/PID/maps: (start, end, perms).
fn ours_in_maps(pid: i32) -> Vec<(u64, u64, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let (s, e) = range.split_once('-')?;
            let (s, e) = (
                u64::from_str_radix(s, 16).ok()?,
                u64::from_str_radix(e, 16).ok()?,
            );
            (s >= BASE as u64 && s < BASE as u64 + (1 << 32)).then(|| (s, e, perms.to_string()))
        })
        .collect()
}

/// The same, as the tracker last listed them.
fn ours_in_tracker(tracker: &Tracker) -> Vec<(u64, u64, String)> {
    tracker
        .mappings()
        .iter()
        .filter(|v| v.start >= BASE as u64 && v.start < BASE as u64 + (1 << 32))
        .map(|v| {
            let perms = format!(
                "{}{}{}{}",
                if v.read { 'r' } else { '-' },
                if v.write { 'w' } else { '-' },
                if v.exec { 'x' } else { '-' },
                if v.shared { 's' } else { 'p' }
            );
            (v.start, v.end, perms)
        })
        .collect()
}

// R: 8 pages at BASE with room to grow to 16; X: 8 pages at BASE + 1 GiB.
const R: usize = BASE;
const X: usize = BASE + (1 << 30);
const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const ANON: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

unsafe fn grow_setup() {
    unsafe {
        map_fixed(R, 8, RW, ANON, -1);
        map_fixed(X, 8, RW, ANON, -1);
        write_pages(R, 0..8);
        write_pages(X, 0..8);
    }
}

/// Step 0: unmap X and grow R in place by as much (the address space keeps its size, and the
/// grown part keeps R's registration), then write the grown part and R's first page.
unsafe fn grow_step(n: u8) -> u8 {
    if n == 0 {
        unsafe {
            unmap_and_grow_r(X);
            write_pages(R, 8..16);
            write_pages(R, 0..1);
        }
    } else {
        unsafe { write_pages(R, 12..13) };
    }
    0
}

/// Memory grown in place while as much goes elsewhere is seen by the next harvest (memory
/// where the listing had none): both changes reported, every write too, and the listing is
/// the kernel's again without a relisting.
#[test]
fn a_growth_in_place_balanced_by_an_unmap_is_seen_at_once() {
    if !kernel_can_track() {
        return;
    }
    let child = Stepped::spawn(grow_setup, grow_step);
    let (_target, mut tracker) = attach(child.pid);
    harvest(&mut tracker);
    harvest(&mut tracker);
    child.step();
    let h = harvest(&mut tracker);
    let page = PAGE as u64;
    let lost = unreported(&h, (8..16).chain(0..1));
    assert!(
        lost.is_empty(),
        "LOST writes at {lost:?}; reported {:?}",
        h.dirty()
    );
    let changed = |change: Change, span: Span| {
        h.changes()
            .iter()
            .any(|c| c.change == change && c.span == span)
    };
    assert!(
        changed(Change::Removed, Span::new(X as u64, X as u64 + 8 * page))
            && changed(
                Change::Added,
                Span::new(R as u64 + 8 * page, R as u64 + 16 * page)
            ),
        "{:?}",
        h.changes()
    );
    assert_eq!(ours_in_tracker(&tracker), ours_in_maps(child.pid));
    // Tracked from here on like the rest of R.
    child.step();
    let h = harvest(&mut tracker);
    assert!(h.dirty().contains(R as u64 + 12 * page), "{:?}", h.dirty());
}

static mut MEMFD: i32 = -1;

unsafe fn shared_grow_setup() {
    unsafe {
        let fd = memfd(c"grown");
        map_fixed(R, 8, RW, libc::MAP_SHARED, fd);
        map_fixed(X, 8, RW, ANON, -1);
        write_pages(R, 0..8);
        write_pages(X, 0..8);
    }
}

/// Step 0: shared memory grown in place as X goes, the grown part written. Step 1: holes
/// punched in the file under the old part and the grown part (its pages turn to zeros, and
/// the kernel re-arms them, so they read clean).
unsafe fn shared_grow_step(n: u8) -> u8 {
    unsafe {
        if n == 0 {
            unmap_and_grow_r(X);
            write_pages(R, 8..16);
            write_pages(R, 0..2);
        } else {
            punch(&[(0, 2), (8, 4)]);
        }
    }
    0
}

/// Shared memory grown in place, then punched: the zeroed pages of the grown part are
/// reported like those of the old part (found by a reviewer's attack on a first version of
/// the cheap watch, which let the growth go unseen and lost them).
#[test]
fn shared_memory_grown_in_place_then_punched_is_reported() {
    if !kernel_can_track() {
        return;
    }
    let child = Stepped::spawn(shared_grow_setup, shared_grow_step);
    let (_target, mut tracker) = attach(child.pid);
    harvest(&mut tracker);
    harvest(&mut tracker);
    child.step();
    harvest(&mut tracker);
    child.step();
    let h = harvest(&mut tracker);
    let lost = unreported(&h, (0..2).chain(8..12));
    assert!(
        lost.is_empty(),
        "LOST punched pages at {lost:?}; reported {:?}",
        h.dirty()
    );
}

unsafe fn shared_over_neighbour_setup() {
    unsafe {
        let fd = memfd(c"neighbour");
        map_fixed(R, 8, RW, libc::MAP_SHARED, fd);
        map_fixed(R + 8 * PAGE, 8, RW, ANON, -1);
        write_pages(R, 0..16);
    }
}

/// Step 0: the anonymous neighbour unmapped and the shared mapping grown in place over its
/// range (the address space keeps its size, and no gap of the listing changes), the grown
/// part written. Step 1: holes punched under both parts.
unsafe fn shared_over_neighbour_step(n: u8) -> u8 {
    unsafe {
        if n == 0 {
            unmap_and_grow_r(R + 8 * PAGE);
            write_pages(R, 8..16);
        } else {
            punch(&[(0, 2), (8, 4)]);
        }
    }
    0
}

/// Shared memory grown in place over the range its anonymous neighbour left: seen at once
/// (the neighbour's memory replaced), and the holes punched in it afterwards reported (found
/// by a reviewer's second attack on the cheap watch, which saw it only at the next full
/// listing and lost the punched pages).
#[test]
fn shared_memory_grown_over_its_neighbour_is_seen_at_once() {
    if !kernel_can_track() {
        return;
    }
    let child = Stepped::spawn(shared_over_neighbour_setup, shared_over_neighbour_step);
    let (_target, mut tracker) = attach(child.pid);
    harvest(&mut tracker);
    harvest(&mut tracker);
    child.step();
    let h = harvest(&mut tracker);
    let page = PAGE as u64;
    let grown = Span::new(R as u64 + 8 * page, R as u64 + 16 * page);
    assert!(
        h.changes()
            .iter()
            .any(|c| c.change == Change::Replaced && c.span == grown),
        "{:?}",
        h.changes()
    );
    assert_eq!(ours_in_tracker(&tracker), ours_in_maps(child.pid));
    child.step();
    let h = harvest(&mut tracker);
    let lost = unreported(&h, (0..2).chain(8..12));
    assert!(
        lost.is_empty(),
        "LOST punched pages at {lost:?}; reported {:?}",
        h.dirty()
    );
}

unsafe fn shared_over_private_setup() {
    unsafe {
        let fd = memfd(c"samefile");
        // One file, contiguous offsets: shared pages 0..8 at R, private pages 8..16 after.
        map_fixed(R, 8, RW, libc::MAP_SHARED, fd);
        let private = libc::mmap(
            (R + 8 * PAGE) as *mut libc::c_void,
            8 * PAGE,
            RW,
            libc::MAP_PRIVATE | libc::MAP_FIXED_NOREPLACE,
            fd,
            (8 * PAGE) as i64,
        );
        if private as usize != R + 8 * PAGE {
            libc::_exit(90);
        }
        write_pages(R, 0..16);
    }
}

/// Step 0: the private mapping unmapped and the shared one grown over it (the same file at
/// the same offsets: only the sharing differs). Step 1: a hole punched under the grown part.
unsafe fn shared_over_private_step(n: u8) -> u8 {
    unsafe {
        if n == 0 {
            unmap_and_grow_r(R + 8 * PAGE);
        } else {
            punch(&[(8, 4)]);
        }
    }
    0
}

/// A shared mapping grown over a private mapping of the same file at the same offsets: seen
/// at once, and a hole punched in it reported (a reviewer's third attack: the seams were
/// compared by file and offset alone).
#[test]
fn shared_memory_grown_over_a_private_mapping_of_its_file_is_seen_at_once() {
    if !kernel_can_track() {
        return;
    }
    let child = Stepped::spawn(shared_over_private_setup, shared_over_private_step);
    let (_target, mut tracker) = attach(child.pid);
    harvest(&mut tracker);
    harvest(&mut tracker);
    child.step();
    harvest(&mut tracker);
    assert_eq!(ours_in_tracker(&tracker), ours_in_maps(child.pid));
    child.step();
    let h = harvest(&mut tracker);
    let lost = unreported(&h, 8..12);
    assert!(
        lost.is_empty(),
        "LOST punched pages at {lost:?}; reported {:?}",
        h.dirty()
    );
}

unsafe fn split_setup() {
    unsafe {
        map_fixed(R, 8, RW, ANON, -1);
        write_pages(R, 0..8);
    }
}

/// Step 0: make R's middle page read-only (one mapping becomes three). Step 1: write
/// around it.
unsafe fn split_step(n: u8) -> u8 {
    unsafe {
        match n {
            0 => {
                libc::mprotect((R + 4 * PAGE) as *mut libc::c_void, PAGE, libc::PROT_READ);
            }
            _ => write_pages(R, 3..4),
        }
    }
    0
}

/// An mprotect split changes nothing tracked: the harvest after it needs no listing, and
/// `relist_mappings` brings the listing up to the split.
#[test]
fn a_split_by_mprotect_is_listed_after_relist_mappings() {
    if !kernel_can_track() {
        return;
    }
    let child = Stepped::spawn(split_setup, split_step);
    let (_target, mut tracker) = attach(child.pid);
    harvest(&mut tracker);
    child.step();
    let h = harvest(&mut tracker);
    assert!(h.changes().is_empty(), "{:?}", h.changes());
    tracker.relist_mappings();
    child.step();
    let h = harvest(&mut tracker);
    // The listing that sees the split reports no change and no page of it but the one
    // written: the parts of anonymous memory are not a replacement (they were, before).
    assert!(h.changes().is_empty(), "{:?}", h.changes());
    let ours = SpanSet::from(vec![Span::new(R as u64, R as u64 + 8 * PAGE as u64)]);
    assert_eq!(
        h.dirty().intersection(&ours).into_vec(),
        [Span::new(
            R as u64 + 3 * PAGE as u64,
            R as u64 + 4 * PAGE as u64
        )]
    );
    let listed = ours_in_tracker(&tracker);
    assert_eq!(listed, ours_in_maps(child.pid));
    assert_eq!(listed.len(), 3, "{listed:?}");
}

/// A file opened read-only here, so that the child's shared mapping of it can never be
/// written: the kernel refuses to register it (EPERM) and it stays unregistered.
fn read_only_file() -> (tempfile::TempDir, std::fs::File) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro");
    std::fs::write(&path, vec![7u8; 8 * PAGE]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    (dir, file)
}

static mut RO_FD: i32 = -1;

unsafe fn replace_setup() {
    unsafe {
        map_fixed(R, 8, libc::PROT_READ, libc::MAP_SHARED, RO_FD);
    }
}

/// Step 0: private anonymous memory of the same size over the unregistered shared mapping
/// (the address space keeps its size, and the cheap pass does not walk known-unregistered
/// mappings), written. Step 1: written again.
unsafe fn replace_step(n: u8) -> u8 {
    unsafe {
        if n == 0 {
            let p = libc::mmap(
                R as *mut libc::c_void,
                8 * PAGE,
                RW,
                ANON | libc::MAP_FIXED,
                -1,
                0,
            );
            if p as usize != R {
                libc::_exit(92);
            }
        }
        write_pages(R, 2..3);
    }
    0
}

/// A mapping left unregistered and replaced in place by trackable memory is found by the
/// next harvest, registered, and its later writes reported.
#[test]
fn an_untracked_mapping_replaced_in_place_is_tracked_at_the_next_harvest() {
    if !kernel_can_track() {
        return;
    }
    let (_dir, file) = read_only_file();
    // SAFETY: set before the fork, read only by the child.
    unsafe { RO_FD = file.as_raw_fd() };
    let child = Stepped::spawn(replace_setup, replace_step);
    let (_target, mut tracker) = attach(child.pid);
    assert!(
        !tracker
            .attached()
            .tracked
            .iter()
            .any(|m| m.span.contains(R as u64)),
        "the read-only shared mapping was not tracked"
    );
    harvest(&mut tracker);
    child.step();
    let h = harvest(&mut tracker);
    assert!(
        h.changes()
            .iter()
            .any(|c| c.span.contains(R as u64)
                && matches!(c.change, Change::Added | Change::Replaced)),
        "the new memory is reported: {:?}",
        h.changes()
    );
    child.step();
    let h = harvest(&mut tracker);
    assert!(
        h.dirty().contains(R as u64 + 2 * PAGE as u64),
        "a write to it after it was armed: {:?}",
        h.dirty()
    );
}

// The program's own write tracking, as Wine's write watches or a garbage collector do it: an
// async write-protect userfaultfd and PAGEMAP_SCAN (uapi values, checked in src/sys/abi.rs).
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;

static mut OWN_UFFD: i32 = -1;
static mut OWN_PAGEMAP: i32 = -1;

/// The program's own harvest of R[8..16): its written pages, re-protected, counted.
unsafe fn own_harvest() -> u8 {
    let mut regions = [[0u64; 3]; 16];
    // struct pm_scan_arg: size, flags (PM_SCAN_WP_MATCHING), start, end, walk_end, vec,
    // vec_len, max_pages, category_inverted, category_mask, category_anyof_mask, return_mask
    // (PAGE_IS_WRITTEN both).
    let mut arg: [u64; 12] = [
        96,
        1,
        (R + 8 * PAGE) as u64,
        (R + 16 * PAGE) as u64,
        0,
        regions.as_mut_ptr() as u64,
        16,
        0,
        0,
        1 << 1,
        0,
        1 << 1,
    ];
    let n = unsafe { libc::ioctl(OWN_PAGEMAP, PAGEMAP_SCAN, arg.as_mut_ptr()) };
    if n < 0 {
        unsafe { libc::_exit(95) };
    }
    regions[..n as usize]
        .iter()
        .map(|r| (r[1] - r[0]) / PAGE as u64)
        .sum::<u64>() as u8
}

/// Before the tracker attaches: the program's userfaultfd (WP_ASYNC | WP_UNPOPULATED), and
/// R, 16 pages, written.
unsafe fn own_setup() {
    unsafe {
        OWN_UFFD = libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) as i32;
        let mut api: [u64; 3] = [0xaa, (1 << 15) | (1 << 13), 0];
        OWN_PAGEMAP = libc::open(c"/proc/self/pagemap".as_ptr(), libc::O_RDONLY);
        if OWN_UFFD < 0
            || OWN_PAGEMAP < 0
            || libc::ioctl(OWN_UFFD, UFFDIO_API, api.as_mut_ptr()) != 0
        {
            libc::_exit(96);
        }
        map_fixed(R, 16, RW, ANON, -1);
        write_pages(R, 0..16);
    }
}

/// Step 0: fresh memory over R[8..16] in place (the address space keeps its size),
/// registered with the program's own userfaultfd, its baseline taken. Step 1: written.
/// Step 2: the program's own harvest (its count is the answer).
unsafe fn own_step(n: u8) -> u8 {
    unsafe {
        match n {
            0 => {
                let fresh = (R + 8 * PAGE) as *mut libc::c_void;
                if libc::mmap(fresh, 8 * PAGE, RW, ANON | libc::MAP_FIXED, -1, 0) != fresh {
                    libc::_exit(92);
                }
                // struct uffdio_register: start, len, mode (WP), ioctls.
                let mut reg: [u64; 4] = [fresh as u64, (8 * PAGE) as u64, 1 << 1, 0];
                if libc::ioctl(OWN_UFFD, UFFDIO_REGISTER, reg.as_mut_ptr()) != 0 {
                    return 200;
                }
                own_harvest()
            }
            1 => {
                write_pages(R, 8..12);
                0
            }
            _ => own_harvest(),
        }
    }
}

/// A program holding a userfaultfd of its own is listed whole at every harvest, as before
/// the cheap watch: tracked memory it replaces in place and registers with its own (which
/// the cheap checks cannot tell from ours) is seen, left to it, and its writes stay its own
/// (found by a reviewer's attack on a first version of the cheap watch).
#[test]
fn a_program_with_its_own_userfaultfd_keeps_its_writes() {
    if !kernel_can_track() {
        return;
    }
    let child = Stepped::spawn(own_setup, own_step);
    let (_target, mut tracker) = attach(child.pid);
    harvest(&mut tracker);
    harvest(&mut tracker);
    assert_ne!(
        child.step(),
        200,
        "the program could not register its memory"
    );
    let h = harvest(&mut tracker);
    let fresh = Span::new((R + 8 * PAGE) as u64, (R + 16 * PAGE) as u64);
    assert!(
        h.changes()
            .iter()
            .any(|c| c.change == Change::Removed && c.span == fresh),
        "the memory the program took over is no longer tracked: {:?}",
        h.changes()
    );
    child.step();
    harvest(&mut tracker);
    assert_eq!(
        child.step(),
        4,
        "the program's own harvest saw all of its 4 writes"
    );
}
