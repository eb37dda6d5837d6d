//! Thin safe wrappers over the syscalls and ioctls the tracker uses, each returning
//! `io::Result` with the errno intact; `PAGEMAP_SCAN` goes through the typed queries of
//! [`pagemap`]. Raw numbers live in [`abi`].

pub mod abi;
pub mod pagemap;
pub mod ptrace;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use abi::{
    O_CLOEXEC, O_NONBLOCK, PIDFD_GET_INFO, PIDFD_INFO_EXIT, PIDFD_THREAD, PROCMAP_QUERY,
    SYS_PIDFD_GETFD, SYS_PIDFD_OPEN, SYS_USERFAULTFD, UFFD_API, UFFD_USER_MODE_ONLY, UFFDIO_API,
    UFFDIO_REGISTER, UFFDIO_REGISTER_MODE_WP, UFFDIO_UNREGISTER, UFFDIO_WRITEPROTECT,
    UFFDIO_WRITEPROTECT_MODE_WP, pidfd_info, uffdio_range, uffdio_register, uffdio_writeprotect,
};

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_ioctl(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `pidfd_open(pid, 0)`: a handle that can never refer to a recycled PID.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; on success the kernel returns a new fd we own.
    let fd = cvt(unsafe { libc::syscall(SYS_PIDFD_OPEN, pid, 0) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_open(tid, PIDFD_THREAD)`: a pidfd of one thread (Linux 6.9+; EINVAL before).
pub fn pidfd_open_thread(tid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; on success the kernel returns a new fd we own.
    let fd = cvt(unsafe { libc::syscall(SYS_PIDFD_OPEN, tid, PIDFD_THREAD) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_getfd(pidfd, target_fd, 0)`: a duplicate of another process's fd in this process.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, target_fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only; the returned fd is new and ours.
    let fd = cvt(unsafe { libc::syscall(SYS_PIDFD_GETFD, pidfd.as_raw_fd(), target_fd, 0) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(pidfd, 0)`: Ok while the process lives (signal 0 only checks).
pub fn pidfd_alive(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: signal 0 with a null siginfo sends nothing; integer arguments only.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<u8>(),
            0,
        )
    })
    .map(drop)
}

/// The wait status of a pidfd's process once it has been reaped, by whoever reaped it
/// (`PIDFD_GET_INFO` with `PIDFD_INFO_EXIT`, Linux 6.15). `None` while it is not reaped yet,
/// or on kernels without exit information.
pub fn pidfd_exit_code(pidfd: BorrowedFd<'_>) -> Option<i32> {
    let mut info = pidfd_info {
        mask: PIDFD_INFO_EXIT,
        ..Default::default()
    };
    // SAFETY: `info` is a valid, exclusively borrowed pidfd_info of the size the request
    // number carries, for the duration of the call.
    let r = unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_INFO as _,
            &mut info as *mut pidfd_info,
        )
    };
    (r == 0 && info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code)
}

/// A userfaultfd in the *calling* process's mm: only for probing what the kernel offers.
pub fn userfaultfd_local() -> io::Result<OwnedFd> {
    let flags = O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY;
    // SAFETY: integer argument only; the returned fd is new and ours.
    let fd = cvt(unsafe { libc::syscall(SYS_USERFAULTFD, flags) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `UFFDIO_API`. Returns the handshake as the kernel filled it in (features = *available* set).
pub fn uffdio_api(uffd: BorrowedFd<'_>, features: u64) -> io::Result<abi::uffdio_api> {
    let mut api = abi::uffdio_api {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: `api` is a valid, exclusively borrowed uffdio_api for the duration of the call.
    cvt_ioctl(unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API as _, &mut api) })?;
    Ok(api)
}

/// `UFFDIO_REGISTER` in write-protect mode; returns the `ioctls` the range supports.
pub fn uffdio_register_wp(uffd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<u64> {
    let mut reg = uffdio_register {
        range: uffdio_range { start, len },
        mode: UFFDIO_REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: `reg` is a valid, exclusively borrowed uffdio_register for the duration of the call.
    cvt_ioctl(unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER as _, &mut reg) })?;
    Ok(reg.ioctls)
}

/// `UFFDIO_UNREGISTER`.
pub fn uffdio_unregister(uffd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    let mut range = uffdio_range { start, len };
    // SAFETY: `range` is a valid uffdio_range for the duration of the call.
    cvt_ioctl(unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_UNREGISTER as _, &mut range) })
        .map(drop)
}

/// `UFFDIO_WRITEPROTECT`: write-protect a registered range.
pub fn uffdio_writeprotect(uffd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    let mut arg = uffdio_writeprotect {
        range: uffdio_range { start, len },
        mode: UFFDIO_WRITEPROTECT_MODE_WP,
    };
    // SAFETY: `arg` is a valid, exclusively borrowed uffdio_writeprotect for the duration of the call.
    cvt_ioctl(unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_WRITEPROTECT as _, &mut arg) })
        .map(drop)
}

/// `PROCMAP_QUERY` on a `/proc/PID/maps` fd: the VMA that `addr` and `flags`
/// (`PROCMAP_QUERY_*`) ask for, without its name or build ID. ENOENT: no such VMA; ENOTTY:
/// kernel before 6.11.
pub fn procmap_query(
    maps: BorrowedFd<'_>,
    flags: u64,
    addr: u64,
) -> io::Result<abi::procmap_query> {
    let mut q = abi::procmap_query {
        size: size_of::<abi::procmap_query>() as u64,
        query_flags: flags,
        query_addr: addr,
        vma_start: 0,
        vma_end: 0,
        vma_flags: 0,
        vma_page_size: 0,
        vma_offset: 0,
        inode: 0,
        dev_major: 0,
        dev_minor: 0,
        vma_name_size: 0,
        build_id_size: 0,
        vma_name_addr: 0,
        build_id_addr: 0,
    };
    // SAFETY: `q` is a valid, exclusively borrowed procmap_query; with both buffer sizes 0
    // the kernel writes nothing but `q`.
    cvt_ioctl(unsafe {
        libc::ioctl(
            maps.as_raw_fd(),
            PROCMAP_QUERY as _,
            &mut q as *mut abi::procmap_query,
        )
    })?;
    Ok(q)
}

/// One piece of another process's memory for [`read_remote_vectored`].
pub fn remote_iovec(addr: u64, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    }
}

/// `process_vm_readv` of the pieces `remote` (at most [`abi::IOV_MAX`], made by
/// [`remote_iovec`]) of process `pid` into `buf`, one after the other: the bytes read, fewer
/// than asked when a page cannot be read (the read stops there, whichever piece it is in).
pub fn read_remote_vectored(pid: i32, remote: &[libc::iovec], buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which we borrow mutably for the call (the kernel writes
    // at most its length); `remote` names memory of the other process, which the kernel
    // checks (it is never dereferenced here), and its length is the slice's.
    let n = unsafe {
        libc::process_vm_readv(
            pid,
            &local,
            1,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `pread` that fills `buf` completely unless EOF comes first; returns the bytes read.
pub fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer/length pair describes the unfilled tail of `buf`.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        match n {
            0 => break,
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            n => done += n as usize,
        }
    }
    Ok(done)
}

/// Which of `fds` are readable, waiting up to `timeout` (rounded up to whole milliseconds;
/// zero: just look) for one to be. A signal ends the wait with none readable.
pub fn readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout: std::time::Duration,
) -> [bool; N] {
    poll(fds.map(|fd| (fd, libc::POLLIN)), timeout).map(|r| r & libc::POLLIN != 0)
}

/// `poll(2)` of each fd for its events (POLLERR and POLLHUP are always reported, so 0 asks
/// for those alone: a pipe's write end reports POLLERR once its last reader is gone), waiting
/// up to `timeout` (rounded up to whole milliseconds). The `revents` of each; all 0 after a
/// timeout or a signal.
pub fn poll<const N: usize>(
    fds: [(BorrowedFd<'_>, libc::c_short); N],
    timeout: std::time::Duration,
) -> [libc::c_short; N] {
    let mut pfds = fds.map(|(fd, events)| libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    });
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: N valid pollfds, exclusively borrowed for the duration of the call.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, ms) };
    pfds.map(|p| if r > 0 { p.revents } else { 0 })
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

/// A private anonymous read-write mapping of the tracker's own process, unmapped on drop:
/// probe pages, the test writer's region, the benchmark's buffer.
pub struct AnonMapping {
    addr: u64,
    len: usize,
}

// SAFETY: the mapping is plain memory outside any Rust object; every access goes through
// bounds-checked volatile loads and stores, and callers that share it between threads write
// disjoint offsets.
unsafe impl Sync for AnonMapping {}
// SAFETY: as above; the mapping belongs to the process, not to a thread.
unsafe impl Send for AnonMapping {}

impl AnonMapping {
    /// Map `len` bytes; `extra_flags` adds to `MAP_PRIVATE | MAP_ANONYMOUS` (e.g. MAP_NORESERVE).
    pub fn new(len: usize, extra_flags: i32) -> io::Result<AnonMapping> {
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(AnonMapping {
            addr: p as u64,
            len,
        })
    }

    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Volatile store of `value` at `offset`, so the compiler cannot drop a store nothing
    /// reads back.
    pub fn write<T: Copy>(&self, offset: usize, value: T) {
        assert!(offset + size_of::<T>() <= self.len && offset.is_multiple_of(align_of::<T>()));
        // SAFETY: in bounds and aligned (checked), inside a live mapping owned by `self`.
        unsafe { std::ptr::write_volatile((self.addr as usize + offset) as *mut T, value) }
    }

    /// Volatile load at `offset`.
    #[allow(dead_code, reason = "the writer fixture's, in the binary")]
    pub fn read<T: Copy>(&self, offset: usize) -> T {
        assert!(offset + size_of::<T>() <= self.len && offset.is_multiple_of(align_of::<T>()));
        // SAFETY: as in `write`.
        unsafe { std::ptr::read_volatile((self.addr as usize + offset) as *const T) }
    }
}

impl Drop for AnonMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region `new` mapped; nothing borrows it past `self`.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}
