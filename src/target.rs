//! [`Target`]: the process a tracker follows, opened by PID or launched as a command.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Result, lift};
use crate::launch::{self, Child, Pending};
use crate::process::Process;

/// A process to track, held by pidfd: a recycled PID is never mistaken for it.
///
/// [`Target::open`] takes a running process; [`Target::launch`] starts a command that waits
/// before its `execve` until a tracker attaches, so that every write of the new program is
/// seen from its first instruction. A launched command belongs to its `Target`: dropping the
/// `Target` terminates a command still running (SIGTERM, then SIGKILL after 2 s), and kills
/// one never attached to before it runs.
///
/// ```no_run
/// use uffd_dirty::Target;
/// let running = Target::open(1234)?;
/// let launched = Target::launch(["python3", "-c", "print(1)"])?;
/// assert!(launched.is_launched() && !running.is_launched());
/// # Ok::<(), uffd_dirty::Error>(())
/// ```
pub struct Target {
    pub(crate) process: Process,
    launched: Option<Mutex<Launched>>,
}

/// A launched command: waiting for its exec until the first attach, then running.
pub(crate) enum Launched {
    Pending(Pending),
    Running(Child),
    /// Between the two, or after a failed exec (the command was killed).
    Gone,
}

impl Target {
    /// The running process `pid`. Refuses, with [`Error::BadInput`](crate::Error::BadInput),
    /// what cannot be a target (no such process, a thread ID, a kernel thread, a zombie, the
    /// caller itself), and with [`Error::NotPermitted`](crate::Error::NotPermitted) a process
    /// the caller may not trace.
    pub fn open(pid: i32) -> Result<Target> {
        Ok(Target {
            process: Process::open(pid).map_err(lift)?,
            launched: None,
        })
    }

    /// Start `argv` (program, then arguments; the program is looked up in `PATH`) as a child
    /// of the caller. It waits before its `execve` until a tracker attaches
    /// ([`TrackerBuilder::attach`](crate::TrackerBuilder::attach)); a program that cannot be
    /// run is reported by that attach.
    pub fn launch<I, S>(argv: I) -> Result<Target>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let pending = launch::fork_pending(&argv).map_err(lift)?;
        let pidfd = match crate::sys::pidfd_open(pending.pid()) {
            Ok(fd) => fd,
            Err(e) => {
                return Err(lift(
                    anyhow::Error::new(e).context("pidfd_open of the launched command"),
                ));
            }
        };
        Ok(Target {
            process: Process {
                pid: pending.pid(),
                pidfd,
            },
            launched: Some(Mutex::new(Launched::Pending(pending))),
        })
    }

    /// Its process ID.
    pub fn pid(&self) -> i32 {
        self.process.pid
    }

    /// Its mappings now, in address order (`/proc/PID/maps`).
    pub fn mappings(&self) -> Result<Vec<crate::Mapping>> {
        let vmas = crate::maps::read_maps(self.process.pid)
            .map_err(|e| lift(anyhow::Error::new(e).context("reading the target's mappings")))?;
        // The listing is the pidfd's process's, not a later one's that reused the PID.
        self.process.check_alive().map_err(lift)?;
        Ok(vmas)
    }

    /// Whether it was started by [`Target::launch`].
    pub fn is_launched(&self) -> bool {
        self.launched.is_some()
    }

    /// Whether it has exited (zombie or reaped). Its pidfd ([`AsFd`]) polls readable then.
    pub fn has_exited(&self) -> bool {
        self.process.has_exited()
    }

    /// A launched command's exit status (128+N for death by signal N), reaping it if it has
    /// exited; `None` while it runs, and for a target opened by PID (not the caller's child).
    pub fn exit_status(&self) -> Option<i32> {
        match &mut *self.launched()? {
            Launched::Running(child) => child.reap(),
            _ => None,
        }
    }

    /// Wait for a launched command to exit and return its exit status; `None` for a target
    /// opened by PID, or a command that was never let run.
    pub fn wait(&self) -> Option<i32> {
        match &mut *self.launched()? {
            Launched::Running(child) => child.wait_exit(self.process.pidfd.as_fd()),
            _ => None,
        }
    }

    /// Terminate a launched command that still runs: SIGTERM, then SIGKILL after 2 s. Its
    /// exit status if it was terminated; `None` if it had exited already, or for a target
    /// opened by PID (never signalled).
    pub fn terminate(&self) -> Option<i32> {
        match &mut *self.launched()? {
            Launched::Running(child) => child.terminate(),
            _ => None,
        }
    }

    /// The launched command's state, for the attach.
    pub(crate) fn launched(&self) -> Option<MutexGuard<'_, Launched>> {
        self.launched
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

impl AsFd for Target {
    /// The pidfd: polls readable once the process has exited.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.process.pidfd.as_fd()
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("pid", &self.process.pid)
            .field("launched", &self.launched.is_some())
            .finish()
    }
}
