//! The request to stop tracking (SIGINT, SIGTERM, the view's `q`): a flag to test, and a
//! pipe that turns readable when it is set, so that waiting for the next harvest is one
//! sleep, woken by the request, instead of short sleeps that wake up to look.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Stop {
    flag: Arc<AtomicBool>,
    readable: OwnedFd,
    writable: OwnedFd,
}

impl Stop {
    pub fn new() -> io::Result<Stop> {
        let (readable, writable) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok(Stop {
            flag: Arc::new(AtomicBool::new(false)),
            readable,
            writable,
        })
    }

    /// Set the flag and wake the pipe on `sig` (async-signal-safe: an atomic store and a
    /// write of one byte to a non-blocking pipe).
    pub fn on_signal(&self, sig: i32) -> io::Result<()> {
        signal_hook::flag::register(sig, Arc::clone(&self.flag))?;
        signal_hook::low_level::pipe::register(sig, self.writable.try_clone()?)?;
        Ok(())
    }

    /// The flag itself, for handlers that must see it before it is set.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    pub fn request(&self) {
        self.flag.store(true, Ordering::Relaxed);
        // A full pipe is already readable: nothing is lost when the write fails.
        let _ = nix::unistd::write(&self.writable, b"s");
    }

    /// Readable once a stop was requested (never drained: a stop is final).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.readable.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(stop: &Stop) -> bool {
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&stop.fd()),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn a_request_sets_the_flag_and_wakes_the_pipe() {
        let stop = Stop::new().unwrap();
        assert!(!stop.requested() && !readable(&stop));
        stop.request();
        assert!(stop.requested() && readable(&stop));
    }
}
