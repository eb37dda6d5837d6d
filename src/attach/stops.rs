//! Waiting for a traced thread's ptrace stops, and letting it go on; the tracker's own
//! signals held off while a thread is borrowed.

use std::io;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

use super::{SLOW_STOP_WARNING, STOP_TIMEOUT};
use crate::sys::{abi, ptrace};

/// A ptrace stop (or the end of the thread), decoded from a raw wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PtraceStop {
    /// `PTRACE_EVENT_STOP` from `PTRACE_INTERRUPT`.
    Interrupt,
    /// `PTRACE_EVENT_STOP` reporting a group stop (SIGSTOP and friends).
    Group,
    /// Syscall entry or exit (`SIGTRAP | 0x80` with `PTRACE_O_TRACESYSGOOD`).
    Syscall,
    /// Another `PTRACE_EVENT_*` (exec, ...).
    Event(i32),
    /// Signal-delivery stop: the thread is about to receive this signal.
    Signal(i32),
    Exited,
}

pub(super) fn decode(status: i32) -> PtraceStop {
    if !libc::WIFSTOPPED(status) {
        return PtraceStop::Exited;
    }
    let sig = libc::WSTOPSIG(status);
    match status >> 16 {
        abi::PTRACE_EVENT_STOP if sig == libc::SIGTRAP => PtraceStop::Interrupt,
        abi::PTRACE_EVENT_STOP => PtraceStop::Group,
        0 if sig == libc::SIGTRAP | 0x80 => PtraceStop::Syscall,
        0 => PtraceStop::Signal(sig),
        event => PtraceStop::Event(event),
    }
}

/// How a stopped thread is let go on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Resume {
    /// To run freely (`PTRACE_CONT`).
    Run,
    /// To its next syscall entry or exit (`PTRACE_SYSCALL`).
    ToSyscall,
}

pub(super) fn resume(how: Resume, tid: i32, sig: i32) -> Result<()> {
    match how {
        Resume::Run => ptrace::cont(tid, sig),
        Resume::ToSyscall => ptrace::syscall(tid, sig),
    }
    .with_context(|| format!("resuming thread {tid}"))
}

/// Wait for the next stop of `tid`; with a deadline, give up when it passes. Without one,
/// wait as long as it takes (a borrowed thread must get its registers back), saying so on
/// stderr if the thread seems frozen.
pub(super) fn wait_stop(tid: i32, deadline: Option<Instant>) -> Result<PtraceStop> {
    let started = Instant::now();
    let mut warned = false;
    for spins in 0u64.. {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).with_context(|| format!("waiting for thread {tid}"));
        }
        if r == tid {
            return Ok(decode(status));
        }
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            bail!(
                "thread {tid} did not stop within {STOP_TIMEOUT:?} (uninterruptible sleep?); try again"
            );
        }
        if deadline.is_none() && !warned && started.elapsed() > SLOW_STOP_WARNING {
            warned = true;
            say(format_args!(
                "uffd-dirty: still waiting for thread {tid}, which holds borrowed registers (is it frozen or stopped?); waiting on, so that it gets them back"
            ));
        }
        // A round trip usually takes microseconds: spin briefly before sleeping.
        if spins < 2000 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    unreachable!()
}

/// A line on stderr that cannot fail: `eprintln!` panics when stderr's reader is gone
/// (SIGPIPE is blocked in the helper), and the helper must never die holding a thread.
pub(super) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(io::stderr(), "{line}");
}

pub(super) fn get_sigmask(tid: i32) -> Result<u64> {
    ptrace::sigmask(tid).with_context(|| format!("reading the signal mask of thread {tid}"))
}

pub(super) fn set_sigmask(tid: i32, mask: u64) -> Result<()> {
    ptrace::set_sigmask(tid, mask)
        .with_context(|| format!("setting the signal mask of thread {tid}"))
}

/// Blocks every catchable signal of the tracker while a target thread is borrowed, so a
/// Ctrl-C cannot cut the hijack short; pending signals arrive when it drops.
pub(super) struct SignalsBlocked(SigSet);

impl SignalsBlocked {
    pub(super) fn new() -> Result<Self> {
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old))?;
        Ok(SignalsBlocked(old))
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}
