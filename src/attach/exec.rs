//! A launched command held at its exec stop, and let go.

use anyhow::{Context, Result};

use super::EXEC_SEIZE_OPTIONS;
use super::stops::{PtraceStop, Resume, resume, wait_stop};
use crate::sys::ptrace;

/// Launch-mode helpers for `track -- CMD`: seize the child before it execs.
pub fn seize_for_exec(pid: i32) -> Result<()> {
    ptrace::seize(pid, EXEC_SEIZE_OPTIONS)
        .with_context(|| format!("PTRACE_SEIZE of the launched command (PID {pid})"))
}

/// Wait for the seized child's exec event stop. `Ok(false)`: the child exited instead.
pub fn wait_exec_stop(pid: i32) -> Result<bool> {
    loop {
        match wait_stop(pid, None)? {
            PtraceStop::Event(libc::PTRACE_EVENT_EXEC) => return Ok(true),
            PtraceStop::Exited => return Ok(false),
            PtraceStop::Signal(sig) => resume(Resume::Run, pid, sig)?,
            _ => resume(Resume::Run, pid, 0)?,
        }
    }
}

/// Launch mode without injection (soft-dirty): let a command held at its exec event stop run.
pub fn release_after_exec(pid: i32) -> Result<()> {
    ptrace::detach(pid, 0).with_context(|| format!("releasing the command (PID {pid})"))
}
