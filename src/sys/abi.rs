//! Kernel ABI: every raw number and `#[repr(C)]` layout the tracker hands to Linux.
//!
//! Debian 12's headers predate `UFFD_FEATURE_WP_ASYNC` and `PAGEMAP_SCAN`, so the items are
//! defined here, once, and a unit test holds them against `linux-raw-sys` (generated from the
//! kernel's uapi headers). Nothing else in the crate spells a raw ABI number.

// Syscall numbers (x86_64; pidfd_* are the same on every architecture).
pub const SYS_CLOSE: i64 = 3;
pub const SYS_CLONE: i64 = 56;
pub const SYS_EXIT: i64 = 60;
pub const SYS_USERFAULTFD: i64 = 323;
pub const SYS_PIDFD_OPEN: i64 = 434;
pub const SYS_PIDFD_GETFD: i64 = 438;
/// Not in the libc crate's x86_64 table.
pub const SYS_IO_PGETEVENTS: i64 = 333;

/// `pidfd_open` flag for a pidfd of one thread (6.9, include/uapi/linux/pidfd.h: `O_EXCL`);
/// `pidfd_getfd` then takes from that thread's fd table.
pub const PIDFD_THREAD: u32 = libc::O_EXCL as u32;
/// clone(2) flags of a thread of the calling process with its own copy of the fd table.
pub const CLONE_THREAD_OWN_FILES: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;

// userfaultfd(2) flags.
pub const UFFD_USER_MODE_ONLY: u64 = 1;
pub const O_CLOEXEC: u64 = libc::O_CLOEXEC as u64;
pub const O_NONBLOCK: u64 = libc::O_NONBLOCK as u64;

// UFFDIO_API.
pub const UFFD_API: u64 = 0xAA;
pub const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;

// UFFDIO_REGISTER modes and the returned `ioctls` bit that says WRITEPROTECT is allowed.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
pub const UFFDIO_WRITEPROTECT_BIT: u64 = 1 << 0x06;

// ioctl request numbers (`_IOWR(0xAA, nr, size)` etc.).
pub const UFFDIO_API: u64 = 0xC018_AA3F;
pub const UFFDIO_REGISTER: u64 = 0xC020_AA00;
pub const UFFDIO_UNREGISTER: u64 = 0x8010_AA01;
pub const UFFDIO_WRITEPROTECT: u64 = 0xC018_AA06;
pub const PAGEMAP_SCAN: u64 = 0xC060_6610;
/// `/proc/PID/maps` one VMA per call, without the text (Linux 6.11).
pub const PROCMAP_QUERY: u64 = 0xC068_6611;
pub const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;
/// A pidfd's process, or its exit once reaped (Linux 6.13; exit information 6.15):
/// `_IOWR(0xFF, 11, struct pidfd_info)` with the first, 64-byte version of the struct.
pub const PIDFD_GET_INFO: u64 = 0xC040_FF0B;
pub const PIDFD_INFO_EXIT: u64 = 1 << 3;

bitflags::bitflags! {
    /// PAGEMAP_SCAN's page categories (`PAGE_IS_*`), by the uapi's names less the prefix.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Categories: u64 {
        /// In a VMA registered for userfaultfd async write-protect.
        const WPALLOWED = 1 << 0;
        /// Not uffd-write-protected: written since it was last protected.
        const WRITTEN = 1 << 1;
        /// Backed by a file (or shmem) page, not an anonymous one.
        const FILE = 1 << 2;
        /// In memory.
        const PRESENT = 1 << 3;
        /// Swapped out (a uffd-wp marker reads so too).
        const SWAPPED = 1 << 4;
        /// The shared zero page.
        const PFNZERO = 1 << 5;
        /// Part of a huge page.
        const HUGE = 1 << 6;
        /// Soft-dirty. Added after 6.7 (which rejects it): probe before use.
        const SOFT_DIRTY = 1 << 7;
        /// A guard region (`MADV_GUARD_INSTALL`, 6.15).
        const GUARD = 1 << 8;
    }
}

// PAGEMAP_SCAN flags.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
#[allow(
    dead_code,
    reason = "the ABI in full, checked against the uapi; harvests do without it"
)]
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

// /proc/PID/pagemap entry bits.
pub const PM_SOFT_DIRTY: u64 = 1 << 55;
pub const PM_UFFD_WP: u64 = 1 << 57;
pub const PM_SWAP: u64 = 1 << 62;
pub const PM_PRESENT: u64 = 1 << 63;

/// What to write to `/proc/PID/clear_refs` to clear the soft-dirty bits of the whole mm.
pub const CLEAR_REFS_SOFT_DIRTY: &[u8] = b"4";

/// The capability bit (in `CapEff` of `/proc/PID/status`) that overrides ptrace checks.
pub const CAP_SYS_PTRACE: u32 = 19;

// ptrace requests and options not (uniformly) exposed by nix.
pub const PTRACE_EVENT_STOP: i32 = 128;
pub const PTRACE_GETSIGMASK: u32 = 0x420a;
pub const PTRACE_SETSIGMASK: u32 = 0x420b;
pub const PTRACE_GET_RSEQ_CONFIGURATION: u32 = 0x420f;

/// Offsets into the rseq ABI structs (`struct rseq`, `struct rseq_cs`, uapi linux/rseq.h).
pub const RSEQ_CS_FIELD_OFFSET: u64 = 8;
pub const RSEQ_CS_START_IP_OFFSET: u64 = 8;
pub const RSEQ_CS_POST_COMMIT_OFFSET: u64 = 16;
pub const RSEQ_CS_ABORT_IP_OFFSET: u64 = 24;

/// `struct ptrace_rseq_configuration`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PtraceRseqConfiguration {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

/// x86_64 user address-space end (`TASK_SIZE_MAX` with 4-level paging): `[0, TASK_SIZE)` is
/// the whole-process harvest span.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

// Kernel-internal restart codes a thread stopped inside a syscall may hold in rax.
pub const ERESTARTSYS: i64 = 512;
pub const ERESTARTNOINTR: i64 = 513;
pub const ERESTARTNOHAND: i64 = 514;
pub const ERESTART_RESTARTBLOCK: i64 = 516;
pub const SYS_RESTART_SYSCALL: u64 = 219;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioApi {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRange {
    pub start: u64,
    pub len: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRegister {
    pub range: UffdioRange,
    pub mode: u64,
    pub ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioWriteprotect {
    pub range: UffdioRange,
    pub mode: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcmapQuery {
    pub size: u64,
    pub query_flags: u64,
    pub query_addr: u64,
    pub vma_start: u64,
    pub vma_end: u64,
    pub vma_flags: u64,
    pub vma_page_size: u64,
    pub vma_offset: u64,
    pub inode: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub vma_name_size: u32,
    pub build_id_size: u32,
    pub vma_name_addr: u64,
    pub build_id_addr: u64,
}

/// `struct pidfd_info` as first released (`PIDFD_INFO_SIZE_VER0`, include/uapi/linux/pidfd.h);
/// the kernel fills what fits in the size the request number carries.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PidfdInfo {
    pub mask: u64,
    pub cgroupid: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub ruid: u32,
    pub rgid: u32,
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    /// The wait status, as `waitpid` would have given it.
    pub exit_code: i32,
}

const _: () = assert!(size_of::<UffdioApi>() == 24);
const _: () = assert!(size_of::<PidfdInfo>() == 64);
const _: () = assert!(size_of::<UffdioRange>() == 16);
const _: () = assert!(size_of::<UffdioRegister>() == 32);
const _: () = assert!(size_of::<UffdioWriteprotect>() == 24);
const _: () = assert!(size_of::<PmScanArg>() == 96);
const _: () = assert!(size_of::<PageRegion>() == 24);
const _: () = assert!(size_of::<ProcmapQuery>() == 104);
const _: () = assert!(size_of::<PtraceRseqConfiguration>() == 24);

#[cfg(test)]
mod tests {
    //! Hold every number above against the kernel's uapi, as packaged by linux-raw-sys.
    use super::*;
    use linux_raw_sys::{general as g, ioctl as i};

    #[test]
    fn constants_match_kernel_uapi() {
        assert_eq!(UFFD_USER_MODE_ONLY, u64::from(g::UFFD_USER_MODE_ONLY));
        assert_eq!(UFFD_API, u64::from(g::UFFD_API));
        assert_eq!(
            UFFD_FEATURE_PAGEFAULT_FLAG_WP,
            u64::from(g::UFFD_FEATURE_PAGEFAULT_FLAG_WP)
        );
        assert_eq!(
            UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
            u64::from(g::UFFD_FEATURE_WP_HUGETLBFS_SHMEM)
        );
        assert_eq!(
            UFFD_FEATURE_WP_UNPOPULATED,
            u64::from(g::UFFD_FEATURE_WP_UNPOPULATED)
        );
        assert_eq!(UFFD_FEATURE_WP_ASYNC, u64::from(g::UFFD_FEATURE_WP_ASYNC));
        assert_eq!(
            UFFDIO_REGISTER_MODE_WP,
            u64::from(g::UFFDIO_REGISTER_MODE_WP)
        );
        // UFFDIO_WRITEPROTECT_MODE_WP (1 << 0) is an enum-less #define linux-raw-sys omits.
        assert_eq!(UFFDIO_WRITEPROTECT_MODE_WP, 1);
        assert_eq!(UFFDIO_WRITEPROTECT_BIT, 1u64 << g::_UFFDIO_WRITEPROTECT);
        let c = |bit: u32| Categories::from_bits_retain(u64::from(bit));
        assert_eq!(Categories::WPALLOWED, c(g::PAGE_IS_WPALLOWED));
        assert_eq!(Categories::WRITTEN, c(g::PAGE_IS_WRITTEN));
        assert_eq!(Categories::FILE, c(g::PAGE_IS_FILE));
        assert_eq!(Categories::PRESENT, c(g::PAGE_IS_PRESENT));
        assert_eq!(Categories::SWAPPED, c(g::PAGE_IS_SWAPPED));
        assert_eq!(Categories::PFNZERO, c(g::PAGE_IS_PFNZERO));
        assert_eq!(Categories::HUGE, c(g::PAGE_IS_HUGE));
        assert_eq!(Categories::SOFT_DIRTY, c(g::PAGE_IS_SOFT_DIRTY));
        assert_eq!(Categories::GUARD, c(g::PAGE_IS_GUARD));
        assert_eq!(Categories::all().bits(), (1 << 9) - 1);
        assert_eq!(CAP_SYS_PTRACE, g::CAP_SYS_PTRACE);
        assert_eq!(PM_SCAN_WP_MATCHING, u64::from(g::PM_SCAN_WP_MATCHING));
        assert_eq!(PM_SCAN_CHECK_WPASYNC, u64::from(g::PM_SCAN_CHECK_WPASYNC));
        assert_eq!(SYS_CLOSE, libc::SYS_close);
        assert_eq!(SYS_CLONE, libc::SYS_clone);
        assert_eq!(SYS_EXIT, libc::SYS_exit);
        assert_eq!(PIDFD_THREAD, g::O_EXCL);
        assert_eq!(
            CLONE_THREAD_OWN_FILES,
            u64::from(
                g::CLONE_VM | g::CLONE_FS | g::CLONE_SIGHAND | g::CLONE_THREAD | g::CLONE_SYSVSEM
            )
        );
        assert_eq!(CLONE_THREAD_OWN_FILES & u64::from(g::CLONE_FILES), 0);
        assert_eq!(SYS_USERFAULTFD, libc::SYS_userfaultfd);
        assert_eq!(SYS_PIDFD_OPEN, libc::SYS_pidfd_open);
        assert_eq!(SYS_PIDFD_GETFD, libc::SYS_pidfd_getfd);
        assert_eq!(SYS_IO_PGETEVENTS, i64::from(g::__NR_io_pgetevents));
        assert_eq!(SYS_RESTART_SYSCALL, libc::SYS_restart_syscall as u64);
        assert_eq!(PTRACE_GETSIGMASK, libc::PTRACE_GETSIGMASK);
        assert_eq!(PTRACE_SETSIGMASK, libc::PTRACE_SETSIGMASK);
        assert_eq!(PTRACE_EVENT_STOP, libc::PTRACE_EVENT_STOP);
        assert_eq!(
            PTRACE_GET_RSEQ_CONFIGURATION,
            linux_raw_sys::ptrace::PTRACE_GET_RSEQ_CONFIGURATION
        );
    }

    #[test]
    fn ioctl_numbers_match_kernel_uapi() {
        assert_eq!(UFFDIO_API, u64::from(i::UFFDIO_API));
        assert_eq!(UFFDIO_REGISTER, u64::from(i::UFFDIO_REGISTER));
        assert_eq!(UFFDIO_UNREGISTER, u64::from(i::UFFDIO_UNREGISTER));
        assert_eq!(UFFDIO_WRITEPROTECT, u64::from(i::UFFDIO_WRITEPROTECT));
        // linux-raw-sys has no PAGEMAP_SCAN opcode: rebuild _IOWR('f', 16, pm_scan_arg).
        let iowr = (3u64 << 30)
            | ((size_of::<g::pm_scan_arg>() as u64) << 16)
            | (u64::from(b'f') << 8)
            | 16;
        assert_eq!(PAGEMAP_SCAN, iowr);
        // Nor a PROCMAP_QUERY one: _IOWR('f', 17, procmap_query).
        let iowr = (3u64 << 30)
            | ((size_of::<g::procmap_query>() as u64) << 16)
            | (u64::from(b'f') << 8)
            | 17;
        assert_eq!(PROCMAP_QUERY, iowr);
        // Nor a PIDFD_GET_INFO one: _IOWR(0xFF, 11, struct pidfd_info), 64 bytes (VER0).
        let iowr = (3u64 << 30) | ((size_of::<PidfdInfo>() as u64) << 16) | (0xFF << 8) | 11;
        assert_eq!(PIDFD_GET_INFO, iowr);
        assert_eq!(
            PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
            g::procmap_query_flags::PROCMAP_QUERY_COVERING_OR_NEXT_VMA as u64
        );
    }

    #[test]
    fn layouts_match_kernel_uapi() {
        assert_eq!(size_of::<PmScanArg>(), size_of::<g::pm_scan_arg>());
        assert_eq!(size_of::<PageRegion>(), size_of::<g::page_region>());
        assert_eq!(size_of::<ProcmapQuery>(), size_of::<g::procmap_query>());
        assert_eq!(
            std::mem::offset_of!(ProcmapQuery, inode),
            std::mem::offset_of!(g::procmap_query, inode)
        );
        assert_eq!(
            std::mem::offset_of!(ProcmapQuery, build_id_addr),
            std::mem::offset_of!(g::procmap_query, build_id_addr)
        );
        assert_eq!(size_of::<UffdioApi>(), size_of::<g::uffdio_api>());
        assert_eq!(size_of::<UffdioRegister>(), size_of::<g::uffdio_register>());
        assert_eq!(
            size_of::<UffdioWriteprotect>(),
            size_of::<g::uffdio_writeprotect>()
        );
        assert_eq!(
            std::mem::offset_of!(PmScanArg, walk_end),
            std::mem::offset_of!(g::pm_scan_arg, walk_end)
        );
        assert_eq!(
            std::mem::offset_of!(PmScanArg, return_mask),
            std::mem::offset_of!(g::pm_scan_arg, return_mask)
        );
    }
}
