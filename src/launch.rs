//! `track -- CMD ARGS`: start the command as our child, seized before its `execve`, so the
//! tracker attaches after the exec and before the new image runs its first instruction.
//!
//! Hand-rolled fork/exec because `std::process::Command::spawn` waits for the exec, and our
//! child must wait for the seize first.

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use nix::unistd::{ForkResult, Pid, fork, pipe2};

use crate::attach;
use crate::target::Target;

/// How long a command gets after SIGTERM before SIGKILL, when tracking ends first.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// A launched command, seized and stopped at its exec.
pub struct Launched {
    pub target: Target,
    pub command: String,
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

pub fn spawn(argv: &[OsString]) -> Result<Launched> {
    let command = argv
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| {
            CString::new(a.as_bytes()).map_err(|_| anyhow!("argument {a:?} contains a NUL byte"))
        })
        .collect::<Result<_>>()?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (go_r, go_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

    // SAFETY: the child only calls async-signal-safe functions (read, signal, execvp, write,
    // _exit) on memory prepared before the fork.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => unsafe {
            use std::os::fd::AsRawFd;
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
            drop(go_r);
            drop(err_w);
            let pid = child.as_raw();
            let seized = attach::seize_for_exec(pid);
            // Release the child whatever happened: on failure it simply runs untracked
            // until we kill it below.
            let _ = nix::unistd::write(&go_w, b"g");
            drop(go_w);
            if let Err(e) = seized {
                kill_and_reap(pid);
                return Err(e);
            }
            if !attach::wait_exec_stop(pid)? {
                let mut buf = [0u8; 4];
                let n = nix::unistd::read(&err_r, &mut buf).unwrap_or(0);
                let err = if n == 4 {
                    io::Error::from_raw_os_error(i32::from_ne_bytes(buf))
                } else {
                    io::Error::other("it exited")
                };
                return Err(anyhow!("cannot run `{}`: {err}", argv[0].to_string_lossy()));
            }
            let target = match Target::open(pid) {
                Ok(t) => t,
                Err(e) => {
                    kill_and_reap(pid);
                    return Err(e);
                }
            };
            Ok(Launched { target, command })
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
