//! `track -- CMD ARGS`: start the command as our child, seized before its `execve`, so the
//! tracker attaches after the exec and before the new image runs its first instruction.
//! For userfaultfd tracking the seize is the attach helper's ([`attach::helper`]), so that
//! the tracker's death can never strand the command on borrowed registers; soft-dirty
//! borrows nothing and seizes the command itself.
//!
//! Hand-rolled fork/exec because `std::process::Command::spawn` waits for the exec, and our
//! child must wait for the seize first.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use nix::unistd::{ForkResult, Pid, fork, pipe2};

use crate::attach::{
    self,
    helper::{ExitedBeforeExec, Helper, HelperFor},
};
use crate::error::usage;
use crate::sys;

/// How long a command gets after SIGTERM before SIGKILL, when tracking ends first.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// A command forked and waiting, before its exec, to be told who will seize it. Dropped
/// unused, it is killed: it never runs.
pub(crate) struct Pending {
    pid: i32,
    program: OsString,
    go: OwnedFd,
    ready: OwnedFd,
    err: OwnedFd,
    /// Exec'd (or killed) already: dropping it closes the pipes and nothing more.
    disarmed: bool,
}

/// The exit status to report for a child's raw wait status (128+N for death by signal N).
pub fn exit_status(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// Fork `argv` as our child, waiting before its exec for [`Pending::exec_held`].
pub(crate) fn fork_pending(argv: &[OsString]) -> Result<Pending> {
    let Some(program) = argv.first() else {
        return Err(usage(
            "no command to launch: give the program and its arguments",
        ));
    };
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| {
            CString::new(a.as_bytes()).map_err(|_| anyhow!("argument {a:?} contains a NUL byte"))
        })
        .collect::<Result<_>>()?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (go_r, go_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ready_r, ready_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

    // SAFETY: the child only calls async-signal-safe functions (read, prctl, write, signal,
    // execvp, _exit) on memory prepared before the fork.
    match unsafe { fork() }.context("fork")? {
        // SAFETY: as above: between fork and exec, only async-signal-safe calls on fds and
        // buffers made before the fork.
        ForkResult::Child => unsafe {
            use std::os::fd::AsRawFd;
            // Only the tracker may hold these ends: a tracker that dies must leave the child
            // reading end-of-file, not waiting on itself.
            libc::close(go_w.as_raw_fd());
            libc::close(ready_r.as_raw_fd());
            libc::close(err_r.as_raw_fd());
            // First the PID of the process that will seize us: under Yama ptrace_scope=1 only
            // an ancestor may, unless named here. Then wait for the seize. A tracker that died
            // meanwhile closes the pipe: run untracked.
            let mut tracer = [0u8; 4];
            if libc::read(go_r.as_raw_fd(), tracer.as_mut_ptr().cast(), 4) == 4 {
                let tracer = i32::from_ne_bytes(tracer);
                if tracer > 0 {
                    libc::prctl(libc::PR_SET_PTRACER, tracer as libc::c_ulong, 0, 0, 0);
                }
            }
            libc::write(ready_w.as_raw_fd(), b"r".as_ptr().cast(), 1);
            let mut b = [0u8; 1];
            libc::read(go_r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            // Rust ignores SIGPIPE; the command must get the default back, as with Command.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execvp(ptrs[0], ptrs.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(err_w.as_raw_fd(), (&errno as *const i32).cast(), 4);
            libc::_exit(127);
        },
        ForkResult::Parent { child } => {
            drop((go_r, ready_w, err_w));
            Ok(Pending {
                pid: child.as_raw(),
                program: program.clone(),
                go: go_w,
                ready: ready_r,
                err: err_r,
                disarmed: false,
            })
        }
    }
}

impl Pending {
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Let the command exec, held at its exec stop: seized by a new attach helper
    /// (`via_helper`, which it returns), or by the tracker itself. On an error the command
    /// is killed before it runs.
    pub(crate) fn exec_held(mut self, via_helper: bool) -> Result<Option<Helper>> {
        let pid = self.pid;
        let held = self.hold_and_exec(via_helper);
        if held.is_err() {
            kill_and_reap(pid);
        }
        // Done with: its pipes close, and the command is no longer this one's to kill.
        self.disarmed = true;
        held
    }

    fn hold_and_exec(&self, via_helper: bool) -> Result<Option<Helper>> {
        let pid = self.pid;
        let mut helper = hold_at_exec(pid, via_helper, &self.go, &self.ready)?;
        let _ = nix::unistd::write(&self.go, b"g");
        let at_exec = match helper.as_mut() {
            Some(h) => match h.wait_exec() {
                Ok(()) => true,
                Err(e) if e.is::<ExitedBeforeExec>() => false,
                Err(e) => return Err(e),
            },
            None => attach::wait_exec_stop(pid)?,
        };
        if !at_exec {
            let mut buf = [0u8; 4];
            let n = nix::unistd::read(&self.err, &mut buf).unwrap_or(0);
            let err = if n == 4 {
                io::Error::from_raw_os_error(i32::from_ne_bytes(buf))
            } else {
                io::Error::other("it exited")
            };
            return Err(anyhow::Error::new(err)
                .context(format!("cannot run `{}`", self.program.to_string_lossy())));
        }
        Ok(helper)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Killed while it still waits for the go: the command never runs.
        if !self.disarmed {
            kill_and_reap(self.pid);
        }
    }
}

/// Have the forked child seized before it may exec: by a new attach helper, or by us.
fn hold_at_exec(
    pid: i32,
    via_helper: bool,
    go: &impl std::os::fd::AsFd,
    ready: &impl std::os::fd::AsFd,
) -> Result<Option<Helper>> {
    use std::os::fd::AsFd;
    let helper = if via_helper {
        let pidfd = sys::pidfd_open(pid).context("pidfd_open of the launched command")?;
        Some(Helper::start(pid, pidfd.as_fd(), HelperFor::Launched)?)
    } else {
        None
    };
    let tracer = helper.as_ref().map_or(0, Helper::pid);
    nix::unistd::write(go.as_fd(), &tracer.to_ne_bytes())?;
    let mut b = [0u8; 1];
    nix::unistd::read(ready.as_fd(), &mut b)?;
    match helper {
        Some(mut h) => {
            h.seize()?;
            Ok(Some(h))
        }
        None => {
            attach::seize_for_exec(pid)?;
            Ok(None)
        }
    }
}

/// SIGKILL and reap a child we gave up on.
pub fn kill_and_reap(pid: i32) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
}

/// Reap the child if it has exited; its exit status then. An error (ECHILD) when it is no
/// longer ours to reap: someone reaped it already.
pub fn try_reap(pid: i32) -> io::Result<Option<i32>> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r == pid).then(|| exit_status(status)))
}

/// Wait for the child to exit and reap it; its exit status. An error (ECHILD) when it is no
/// longer ours to reap.
pub fn wait(pid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(exit_status(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Terminate a child that outlived tracking: SIGTERM, then SIGKILL after the grace period.
/// Returns its exit status.
pub fn terminate(pid: i32) -> i32 {
    if let Ok(Some(s)) = try_reap(pid) {
        return s;
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + TERMINATE_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = try_reap(pid) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    exit_status(status)
}

/// A launched command once it exec'd: reaped with its status kept, and terminated if it
/// outlives the [`Target`](crate::Target) that launched it.
pub(crate) struct Child {
    pid: i32,
    status: Option<i32>,
    /// Reaped, but not by `reap` or `wait_exit`: a command that exits while we attach to it
    /// (after an exec) is reaped by ptrace's wait for its next stop.
    reaped_elsewhere: bool,
    /// Stopped under ptrace (ours or the helper's): SIGTERM would wait for nothing, so it is
    /// killed outright.
    pub(crate) traced: bool,
    /// The attach helper holding it at its exec, for userfaultfd tracking.
    pub(crate) helper: Option<Helper>,
}

impl Child {
    pub(crate) fn new(pid: i32, helper: Option<Helper>) -> Child {
        Child {
            pid,
            status: None,
            reaped_elsewhere: false,
            traced: true,
            helper,
        }
    }

    /// Its exit status, if it has exited (reaped now, without waiting).
    pub(crate) fn reap(&mut self) -> Option<i32> {
        if self.status.is_none() && !self.reaped_elsewhere {
            match try_reap(self.pid) {
                Ok(status) => self.status = status,
                Err(_) => self.reaped_elsewhere = true,
            }
        }
        self.status
    }

    /// Its exit status, waiting for the end of an exit under way. If it was reaped
    /// elsewhere, the pidfd still has its status (Linux 6.15).
    pub(crate) fn wait_exit(&mut self, pidfd: std::os::fd::BorrowedFd<'_>) -> Option<i32> {
        if self.status.is_none() && !self.reaped_elsewhere {
            match wait(self.pid) {
                Ok(status) => self.status = Some(status),
                Err(_) => self.reaped_elsewhere = true,
            }
        }
        if self.status.is_none() && self.reaped_elsewhere {
            self.status = sys::pidfd_exit_code(pidfd).map(exit_status);
        }
        self.status
    }

    /// Terminate it if it still runs (SIGTERM, SIGKILL after [`TERMINATE_GRACE`]): its
    /// exit status then, `None` if it had exited already (or was reaped elsewhere: its PID
    /// may be another process's by now).
    pub(crate) fn terminate(&mut self) -> Option<i32> {
        if self.traced || self.reap().is_some() || self.reaped_elsewhere {
            return None;
        }
        let status = terminate(self.pid);
        self.status = Some(status);
        Some(status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.traced {
            // Killed first, so it never runs; then its tracer, the helper, is let go (it
            // detaches the dead command, which only then can be reaped here).
            let _ =
                nix::sys::signal::kill(Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
            drop(self.helper.take());
            kill_and_reap(self.pid);
            return;
        }
        self.terminate();
    }
}
