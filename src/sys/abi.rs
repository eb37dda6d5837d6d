//! Kernel ABI: every raw number and `#[repr(C)]` layout the tracker hands to Linux, kept once.
//!
//! The uapi structs and constants come from `linux-raw-sys` (bindings generated from the
//! kernel's uapi headers; Debian 12's C headers predate `UFFD_FEATURE_WP_ASYNC` and
//! `PAGEMAP_SCAN`), the constants widened to the `u64` the calls take. ioctl request numbers
//! are computed from the argument types, as the kernel's `_IOR`/`_IOWR` compute them. Syscall
//! numbers come from `libc`. The few items neither crate carries are defined here, each saying
//! why, and the tests hold them against what source there is: the uapi header's values and
//! layouts, or the running kernel. Nothing else in the crate spells a raw ABI number.

use linux_raw_sys::general as uapi;
use linux_raw_sys::ptrace as uapi_ptrace;

pub use linux_raw_sys::general::{
    page_region, pm_scan_arg, procmap_query, uffdio_api, uffdio_range, uffdio_register,
    uffdio_writeprotect,
};
pub use linux_raw_sys::ptrace::ptrace_rseq_configuration;

// Syscall numbers, from libc's table for the target.
pub const SYS_CLOSE: i64 = libc::SYS_close;
pub const SYS_CLONE: i64 = libc::SYS_clone;
pub const SYS_EXIT: i64 = libc::SYS_exit;
pub const SYS_USERFAULTFD: i64 = libc::SYS_userfaultfd;
pub const SYS_PIDFD_OPEN: i64 = libc::SYS_pidfd_open;
pub const SYS_PIDFD_GETFD: i64 = libc::SYS_pidfd_getfd;
pub const SYS_RESTART_SYSCALL: u64 = libc::SYS_restart_syscall as u64;
/// Not in libc's x86_64 (glibc) table: linux-raw-sys's `__NR_` table has it.
pub const SYS_IO_PGETEVENTS: i64 = uapi::__NR_io_pgetevents as i64;

/// `pidfd_open` flag for a pidfd of one thread (6.9); `pidfd_getfd` then takes from that
/// thread's fd table. Defined here: linux-raw-sys carries no linux/pidfd.h item but
/// `PIDFD_SELF_*`; the header defines it as `O_EXCL`.
pub const PIDFD_THREAD: u32 = uapi::O_EXCL;
/// clone(2) flags of a thread of the calling process with its own copy of the fd table.
pub const CLONE_THREAD_OWN_FILES: u64 = (uapi::CLONE_VM
    | uapi::CLONE_FS
    | uapi::CLONE_SIGHAND
    | uapi::CLONE_THREAD
    | uapi::CLONE_SYSVSEM) as u64;

// userfaultfd(2) flags.
pub const UFFD_USER_MODE_ONLY: u64 = uapi::UFFD_USER_MODE_ONLY as u64;
pub const O_CLOEXEC: u64 = uapi::O_CLOEXEC as u64;
pub const O_NONBLOCK: u64 = uapi::O_NONBLOCK as u64;

// UFFDIO_API.
pub const UFFD_API: u64 = uapi::UFFD_API as u64;
pub const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = uapi::UFFD_FEATURE_PAGEFAULT_FLAG_WP as u64;
pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = uapi::UFFD_FEATURE_WP_HUGETLBFS_SHMEM as u64;
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = uapi::UFFD_FEATURE_WP_UNPOPULATED as u64;
pub const UFFD_FEATURE_WP_ASYNC: u64 = uapi::UFFD_FEATURE_WP_ASYNC as u64;

// UFFDIO_REGISTER modes and the returned `ioctls` bit that says WRITEPROTECT is allowed.
pub const UFFDIO_REGISTER_MODE_WP: u64 = uapi::UFFDIO_REGISTER_MODE_WP as u64;
pub const UFFDIO_WRITEPROTECT_BIT: u64 = 1 << uapi::_UFFDIO_WRITEPROTECT;
/// `UFFDIO_WRITEPROTECT_MODE_WP` (uapi linux/userfaultfd.h: `(__u64)1<<0`). Defined here:
/// linux-raw-sys has the register and copy modes of that header, not the write-protect ones.
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

// ioctl request numbers, computed from the argument types as the kernel's `_IOC` computes them
// (include/uapi/asm-generic/ioctl.h, which x86_64 uses): direction, size, type, number.
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `_IOC(dir, type, nr, size)`. A field out of range fails the build of the constant.
const fn ioc(dir: u64, ty: u32, nr: u32, size: usize) -> u64 {
    assert!(ty < 1 << 8 && nr < 1 << 8 && size < 1 << 14);
    (dir << IOC_DIRSHIFT)
        | ((size as u64) << IOC_SIZESHIFT)
        | ((ty as u64) << IOC_TYPESHIFT)
        | ((nr as u64) << IOC_NRSHIFT)
}

/// `_IOR(type, nr, T)`: the kernel writes a `T` back.
const fn ior<T>(ty: u32, nr: u32) -> u64 {
    ioc(IOC_READ, ty, nr, size_of::<T>())
}

/// `_IOW(type, nr, T)`: the kernel reads a `T`.
#[allow(
    dead_code,
    reason = "the kernel's set in full, checked in the tests; no request here is write-only"
)]
const fn iow<T>(ty: u32, nr: u32) -> u64 {
    ioc(IOC_WRITE, ty, nr, size_of::<T>())
}

/// `_IOWR(type, nr, T)`: the kernel reads a `T` and writes it back.
const fn iowr<T>(ty: u32, nr: u32) -> u64 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size_of::<T>())
}

pub const UFFDIO_API: u64 = iowr::<uffdio_api>(uapi::UFFDIO, uapi::_UFFDIO_API);
pub const UFFDIO_REGISTER: u64 = iowr::<uffdio_register>(uapi::UFFDIO, uapi::_UFFDIO_REGISTER);
pub const UFFDIO_UNREGISTER: u64 = ior::<uffdio_range>(uapi::UFFDIO, uapi::_UFFDIO_UNREGISTER);
pub const UFFDIO_WRITEPROTECT: u64 =
    iowr::<uffdio_writeprotect>(uapi::UFFDIO, uapi::_UFFDIO_WRITEPROTECT);
/// `_IOWR(PROCFS_IOCTL_MAGIC, 16, struct pm_scan_arg)` (uapi linux/fs.h, which linux-raw-sys
/// carries without its request numbers).
pub const PAGEMAP_SCAN: u64 = iowr::<pm_scan_arg>(uapi::PROCFS_IOCTL_MAGIC as u32, 16);
/// `_IOWR(PROCFS_IOCTL_MAGIC, 17, struct procmap_query)`: `/proc/PID/maps` one VMA per call,
/// without the text (Linux 6.11).
pub const PROCMAP_QUERY: u64 = iowr::<procmap_query>(uapi::PROCFS_IOCTL_MAGIC as u32, 17);
pub const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 =
    uapi::procmap_query_flags::PROCMAP_QUERY_COVERING_OR_NEXT_VMA as u64;

/// `PIDFS_IOCTL_MAGIC` (uapi linux/pidfd.h, not in linux-raw-sys).
const PIDFS_IOCTL_MAGIC: u32 = 0xFF;
/// A pidfd's process, or its exit once reaped (Linux 6.13; exit information 6.15):
/// `_IOWR(PIDFS_IOCTL_MAGIC, 11, struct pidfd_info)` with the first, 64-byte version of the
/// struct.
pub const PIDFD_GET_INFO: u64 = iowr::<pidfd_info>(PIDFS_IOCTL_MAGIC, 11);
/// `PIDFD_INFO_EXIT` (uapi linux/pidfd.h, not in linux-raw-sys).
pub const PIDFD_INFO_EXIT: u64 = 1 << 3;

/// `struct pidfd_info` as first released (`PIDFD_INFO_SIZE_VER0`, uapi linux/pidfd.h, not in
/// linux-raw-sys); the kernel fills what fits in the size the request number carries.
#[allow(
    non_camel_case_types,
    reason = "the kernel's name, as linux-raw-sys's structs"
)]
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct pidfd_info {
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

const _: () = assert!(size_of::<pidfd_info>() == 64);

bitflags::bitflags! {
    /// PAGEMAP_SCAN's page categories (`PAGE_IS_*`), by the uapi's names less the prefix.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Categories: u64 {
        /// In a VMA registered for userfaultfd async write-protect.
        const WPALLOWED = uapi::PAGE_IS_WPALLOWED as u64;
        /// Not uffd-write-protected: written since it was last protected.
        const WRITTEN = uapi::PAGE_IS_WRITTEN as u64;
        /// Backed by a file (or shmem) page, not an anonymous one.
        const FILE = uapi::PAGE_IS_FILE as u64;
        /// In memory.
        const PRESENT = uapi::PAGE_IS_PRESENT as u64;
        /// Swapped out (a uffd-wp marker reads so too).
        const SWAPPED = uapi::PAGE_IS_SWAPPED as u64;
        /// The shared zero page.
        const PFNZERO = uapi::PAGE_IS_PFNZERO as u64;
        /// Part of a huge page.
        const HUGE = uapi::PAGE_IS_HUGE as u64;
        /// Soft-dirty. Added after 6.7 (which rejects it): probe before use.
        const SOFT_DIRTY = uapi::PAGE_IS_SOFT_DIRTY as u64;
        /// A guard region (`MADV_GUARD_INSTALL`, 6.15).
        const GUARD = uapi::PAGE_IS_GUARD as u64;
    }
}

// PAGEMAP_SCAN flags.
pub const PM_SCAN_WP_MATCHING: u64 = uapi::PM_SCAN_WP_MATCHING as u64;
#[allow(
    dead_code,
    reason = "the ABI in full, as the uapi has it; harvests do without it"
)]
pub const PM_SCAN_CHECK_WPASYNC: u64 = uapi::PM_SCAN_CHECK_WPASYNC as u64;

// /proc/PID/pagemap entry bits. Defined here: they are procfs's format
// (Documentation/admin-guide/mm/pagemap.rst, fs/proc/task_mmu.c), in no uapi header; the tests
// of scan::pagemap_read hold them against the running kernel.
pub const PM_SOFT_DIRTY: u64 = 1 << 55;
pub const PM_UFFD_WP: u64 = 1 << 57;
pub const PM_SWAP: u64 = 1 << 62;
pub const PM_PRESENT: u64 = 1 << 63;

/// What to write to `/proc/PID/clear_refs` to clear the soft-dirty bits of the whole mm
/// (procfs's format, Documentation/admin-guide/mm/soft-dirty.rst: in no uapi header).
pub const CLEAR_REFS_SOFT_DIRTY: &[u8] = b"4";

/// The capability bit (in `CapEff` of `/proc/PID/status`) that overrides ptrace checks.
pub const CAP_SYS_PTRACE: u32 = uapi::CAP_SYS_PTRACE;

// ptrace requests and events not (uniformly) exposed by nix.
pub const PTRACE_EVENT_STOP: i32 = uapi_ptrace::PTRACE_EVENT_STOP as i32;
pub const PTRACE_GETSIGMASK: u32 = uapi_ptrace::PTRACE_GETSIGMASK;
pub const PTRACE_SETSIGMASK: u32 = uapi_ptrace::PTRACE_SETSIGMASK;
pub const PTRACE_GET_RSEQ_CONFIGURATION: u32 = uapi_ptrace::PTRACE_GET_RSEQ_CONFIGURATION;

// Offsets into the rseq ABI structs: `rseq_cs` in `struct rseq`, and the fields of
// `struct rseq_cs` (uapi linux/rseq.h). Defined here: linux-raw-sys carries neither struct.
pub const RSEQ_CS_FIELD_OFFSET: u64 = 8;
pub const RSEQ_CS_START_IP_OFFSET: u64 = 8;
pub const RSEQ_CS_POST_COMMIT_OFFSET: u64 = 16;
pub const RSEQ_CS_ABORT_IP_OFFSET: u64 = 24;

/// Most iovecs one `process_vm_readv` takes (`UIO_MAXIOV`, the kernel's `IOV_MAX`).
pub const IOV_MAX: usize = libc::UIO_MAXIOV as usize;

/// x86_64 user address-space end (`TASK_SIZE_MAX` with 4-level paging): `[0, TASK_SIZE)` is
/// the whole-process harvest span. Defined here: it is the kernel's own
/// (arch/x86/include/asm/page_64_types.h: `(1 << 47) - PAGE_SIZE`), in no uapi header.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

// Restart codes a thread stopped inside a syscall may hold in rax. Defined here: they are
// kernel-internal (include/linux/errno.h), in no uapi header.
pub const ERESTARTSYS: i64 = 512;
pub const ERESTARTNOINTR: i64 = 513;
pub const ERESTARTNOHAND: i64 = 514;
pub const ERESTART_RESTARTBLOCK: i64 = 516;

#[cfg(test)]
mod tests {
    //! The derived ioctl numbers against linux-raw-sys's table and the kernel's values; what
    //! is defined by hand against the uapi headers' values and layouts. (The pagemap entry
    //! bits are held against the running kernel in scan::pagemap_read.)
    use super::*;
    use linux_raw_sys::ioctl as i;
    use std::mem::offset_of;

    #[test]
    fn ioctl_numbers_match_kernel_uapi() {
        assert_eq!(UFFDIO_API, u64::from(i::UFFDIO_API));
        assert_eq!(UFFDIO_REGISTER, u64::from(i::UFFDIO_REGISTER));
        assert_eq!(UFFDIO_UNREGISTER, u64::from(i::UFFDIO_UNREGISTER));
        assert_eq!(UFFDIO_WRITEPROTECT, u64::from(i::UFFDIO_WRITEPROTECT));
        // _IOW, unused here, against a request of linux/fs.h: _IOW('f', 2, long).
        assert_eq!(
            iow::<libc::c_long>(u32::from(b'f'), 2),
            u64::from(i::FS_IOC_SETFLAGS)
        );
        // No table has these: the numbers the kernel's headers yield.
        assert_eq!(PAGEMAP_SCAN, 0xC060_6610);
        assert_eq!(PROCMAP_QUERY, 0xC068_6611);
        assert_eq!(PIDFD_GET_INFO, 0xC040_FF0B);
    }

    #[test]
    fn hand_defined_items_match_kernel_uapi() {
        // linux/pidfd.h.
        assert_eq!(PIDFD_THREAD, 0o200, "O_EXCL");
        assert_eq!(PIDFD_INFO_EXIT, 1 << 3);
        assert_eq!(size_of::<pidfd_info>(), 64, "PIDFD_INFO_SIZE_VER0");
        assert_eq!(offset_of!(pidfd_info, pid), 16);
        assert_eq!(offset_of!(pidfd_info, exit_code), 60);
        // linux/userfaultfd.h.
        assert_eq!(UFFDIO_WRITEPROTECT_MODE_WP, 1);
    }

    #[test]
    fn composed_items() {
        // The injected thread keeps its own fd table.
        assert_eq!(CLONE_THREAD_OWN_FILES & u64::from(uapi::CLONE_FILES), 0);
        // From linux-raw-sys's table where libc's has none: arch/x86/entry/syscalls.
        assert_eq!(SYS_IO_PGETEVENTS, 333);
        assert_eq!(UFFDIO_WRITEPROTECT_BIT, 1 << 6);
    }

    #[test]
    fn rseq_offsets_match_the_uapi_layout() {
        /// `struct rseq` as linux/rseq.h first defined it (4.18).
        #[allow(dead_code, reason = "a layout only")]
        #[repr(C, align(32))]
        struct Rseq {
            cpu_id_start: u32,
            cpu_id: u32,
            rseq_cs: u64,
            flags: u32,
        }
        /// `struct rseq_cs`.
        #[allow(dead_code, reason = "a layout only")]
        #[repr(C, align(32))]
        struct RseqCs {
            version: u32,
            flags: u32,
            start_ip: u64,
            post_commit_offset: u64,
            abort_ip: u64,
        }
        assert_eq!(RSEQ_CS_FIELD_OFFSET as usize, offset_of!(Rseq, rseq_cs));
        assert_eq!(
            RSEQ_CS_START_IP_OFFSET as usize,
            offset_of!(RseqCs, start_ip)
        );
        assert_eq!(
            RSEQ_CS_POST_COMMIT_OFFSET as usize,
            offset_of!(RseqCs, post_commit_offset)
        );
        assert_eq!(
            RSEQ_CS_ABORT_IP_OFFSET as usize,
            offset_of!(RseqCs, abort_ip)
        );
        assert_eq!(size_of::<ptrace_rseq_configuration>(), 24, "linux/ptrace.h");
    }

    #[test]
    fn kernel_internal_values() {
        // arch/x86/include/asm/page_64_types.h: TASK_SIZE_MAX, 4-level paging.
        assert_eq!(TASK_SIZE, (1 << 47) - 4096);
        // include/linux/errno.h.
        assert_eq!(
            [
                ERESTARTSYS,
                ERESTARTNOINTR,
                ERESTARTNOHAND,
                ERESTART_RESTARTBLOCK
            ],
            [512, 513, 514, 516]
        );
    }

    #[test]
    fn categories_are_the_uapi_bits() {
        assert_eq!(Categories::all().bits(), (1 << 9) - 1);
        assert_eq!(
            Categories::all().iter_names().last(),
            Some(("GUARD", Categories::GUARD))
        );
    }
}
