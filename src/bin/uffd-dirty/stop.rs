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
        self.flag.load(Ordering::Acquire)
    }

    pub fn request(&self) {
        self.flag.store(true, Ordering::Release);
        // A full pipe is already readable: nothing is lost when the write fails.
        let _ = nix::unistd::write(&self.writable, b"s");
    }

    /// Readable once a stop was requested (a stop is final, so it stays readable).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.readable.as_fd()
    }

    /// Empty the pipe when it woke a wait without a request behind it: a launched command
    /// signalled between fork and exec runs our handler with its own copy of the flag but
    /// writes this very pipe. Left readable, it would make every wait return at once.
    pub fn drain_stray_wakeups(&self) {
        let mut buf = [0u8; 64];
        while !self.requested()
            && matches!(nix::unistd::read(&self.readable, &mut buf), Ok(n) if n > 0)
        {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(stop: &Stop) -> bool {
        let [readable] = crate::os::readable([stop.fd()], std::time::Duration::ZERO);
        readable
    }

    #[test]
    fn a_request_sets_the_flag_and_wakes_the_pipe() {
        let stop = Stop::new().unwrap();
        assert!(!stop.requested() && !readable(&stop));
        stop.request();
        assert!(stop.requested() && readable(&stop));
        // A real request stays readable: every later wait ends at once.
        stop.drain_stray_wakeups();
        assert!(readable(&stop));
    }

    #[test]
    fn a_wakeup_without_a_request_is_drained() {
        let stop = Stop::new().unwrap();
        nix::unistd::write(&stop.writable, b"xx").unwrap();
        assert!(readable(&stop));
        stop.drain_stray_wakeups();
        assert!(!readable(&stop) && !stop.requested());
    }
}
