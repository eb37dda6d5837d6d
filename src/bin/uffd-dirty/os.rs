//! Operating-system calls only the command line makes: duplicating an inherited fd, the
//! terminal's size, the user ID. (The kernel ABI and the calls the engine makes are
//! `sys`, shared with the library.)

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Our effective user ID.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A `kB` field of a `/proc` file such as `/proc/PID/status` or `/proc/meminfo`
/// (`VmHWM:    1234 kB`).
pub fn proc_kib(path: &str, field: &str) -> io::Result<u64> {
    let text = String::from_utf8_lossy(&std::fs::read(path)?).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {field} in {path}")))
}

/// A close-on-exec duplicate of the fd numbered `fd`, which need not be ours to own: `-o
/// /dev/stderr` or `/proc/self/fd/N` names an fd the caller opened for us.
pub fn dup_raw(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC reads no memory; an fd that is not open is EBADF.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The size of the terminal behind `fd`, as (columns, rows).
pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((ws.ws_col, ws.ws_row))
}
