//! The operating-system calls the commands make themselves: waiting on fds, the page size,
//! duplicating an inherited fd, the terminal's size, the user ID. (The engine's are the
//! library's; only the fixtures and the benchmark's bare-ioctl baseline use `sys`.)

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub use nix::poll::PollFlags;
use nix::poll::{PollFd, PollTimeout};

/// `poll(2)` on `fds` with their events, for up to `timeout` (rounded up to whole
/// milliseconds, so a wait never ends just short of a deadline); the events seen on each.
/// An interrupted wait sees nothing.
pub fn poll<const N: usize>(
    fds: [(BorrowedFd<'_>, PollFlags); N],
    timeout: Duration,
) -> [PollFlags; N] {
    let mut pfds = fds.map(|(fd, events)| PollFd::new(fd, events));
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    let ready = nix::poll::poll(
        &mut pfds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    );
    pfds.map(|p| match ready {
        Ok(n) if n > 0 => p.revents().unwrap_or(PollFlags::empty()),
        _ => PollFlags::empty(),
    })
}

/// Whether each of `fds` is readable, waiting up to `timeout` for one to be.
pub fn readable<const N: usize>(fds: [BorrowedFd<'_>; N], timeout: Duration) -> [bool; N] {
    poll(fds.map(|fd| (fd, PollFlags::POLLIN)), timeout).map(|r| r.contains(PollFlags::POLLIN))
}

/// The system page size.
pub fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

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
