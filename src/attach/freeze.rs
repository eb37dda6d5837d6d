//! Stopping every thread of the target (soft-dirty's read + clear, the final pre-copy round)
//! and letting it go exactly as it was.

use anyhow::{Context, Result};

use super::arch;
use super::borrow::{eintr_only_because_stopped, seize_error, unblocked_signal_pending};
use super::stops::{PtraceStop, Resume, SignalsBlocked, get_sigmask, resume, wait_stop};
use crate::process::{Process, read_status};
use crate::sys::ptrace;

/// Every thread of the target held in a ptrace interrupt stop, so that a read and a clear of
/// its soft-dirty bits see no write in between. Registers are never touched: on drop each
/// thread is detached at its stop inside `get_signal()` and goes on exactly as it would after
/// any signal (a call that returns EINTR on a ptrace stop, epoll_wait & co., returns EINTR).
pub struct Frozen {
    pid: i32,
    tids: Vec<i32>,
    /// Threads whose EINTR-on-stop call was rewound: their original registers and mask, put
    /// back at detach if a signal is about to be handled (then the EINTR is real).
    rewound: Vec<(i32, arch::Regs, u64)>,
    _blocked: SignalsBlocked,
}

impl Frozen {
    /// Stop every thread, listing them again until no new one appears.
    pub fn new(target: &Process) -> Result<Frozen> {
        let mut frozen = Frozen {
            pid: target.pid,
            tids: Vec::new(),
            rewound: Vec::new(),
            _blocked: SignalsBlocked::new()?,
        };
        loop {
            let fresh: Vec<i32> = target
                .threads()?
                .into_iter()
                .filter(|t| !frozen.tids.contains(t))
                .collect();
            if fresh.is_empty() {
                frozen_here().push(frozen.pid);
                return Ok(frozen);
            }
            for tid in fresh {
                match ptrace::seize(tid, 0) {
                    Ok(()) => {}
                    // The thread exited meanwhile.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                    // An exiting or zombie thread cannot be seized (EPERM) and runs no code.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EPERM)
                            && thread_is_dead(target.pid, tid) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(seize_error(target, tid, e)),
                }
                frozen.tids.push(tid);
                ptrace::interrupt(tid).with_context(|| format!("interrupting thread {tid}"))?;
                // No deadline: a seized thread must reach its stop before it can be detached,
                // or it would stay traced by us (wait_stop says so if it takes long).
                loop {
                    match wait_stop(tid, None)? {
                        PtraceStop::Interrupt => {
                            // epoll_wait & co. return EINTR on any ptrace stop: run them again.
                            if let Ok(regs) = arch::get_regs(tid)
                                && eintr_only_because_stopped(target.pid, &regs)
                            {
                                let mask = get_sigmask(tid)?;
                                arch::set_regs(tid, &arch::rewound_regs(&regs))?;
                                frozen.rewound.push((tid, regs, mask));
                            }
                            break;
                        }
                        PtraceStop::Group => break,
                        PtraceStop::Signal(sig) => resume(Resume::Run, tid, sig)?,
                        PtraceStop::Syscall | PtraceStop::Event(_) => resume(Resume::Run, tid, 0)?,
                        PtraceStop::Exited => {
                            frozen.tids.retain(|&t| t != tid);
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// The processes this process holds frozen now, by PID.
fn frozen_here() -> std::sync::MutexGuard<'static, Vec<i32>> {
    static FROZEN: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());
    FROZEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether this process holds `pid` frozen (a caller's [`Frozen`], taken for a last round):
/// a soft-dirty harvest then reads and clears without freezing it again, which ptrace
/// would refuse.
pub fn is_frozen_here(pid: i32) -> bool {
    frozen_here().contains(&pid)
}

impl Drop for Frozen {
    fn drop(&mut self) {
        frozen_here().retain(|&p| p != self.pid);
        for (tid, regs, mask) in &self.rewound {
            if unblocked_signal_pending(self.pid, *tid, *mask) {
                let _ = arch::set_regs(*tid, regs);
            }
        }
        for &tid in &self.tids {
            let _ = ptrace::detach(tid, 0);
        }
    }
}

/// Whether a thread is gone or a zombie (an exited thread of a live process).
pub(super) fn thread_is_dead(pid: i32, tid: i32) -> bool {
    read_status(&format!("/proc/{pid}/task/{tid}/status"))
        .map_or(true, |st| matches!(st.state, 'Z' | 'X'))
}
