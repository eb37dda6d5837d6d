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
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use nix::unistd::{ForkResult, Pid, fork, pipe2};

use crate::attach::{self, helper::ExitedBeforeExec, helper::Helper};
use crate::sys;
use crate::target::Target;

/// How long a command gets after SIGTERM before SIGKILL, when tracking ends first.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// A launched command, seized and stopped at its exec.
pub struct Launched {
    pub target: Target,
    pub command: String,
    /// The helper holding it, when it is to be injected into.
    pub helper: Option<Helper>,
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

/// Start `argv` as our child, held at its exec: seized by an attach helper (`via_helper`), or
/// by the tracker itself.
pub fn spawn(argv: &[OsString], via_helper: bool) -> Result<Launched> {
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
    let (ready_r, ready_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

    // SAFETY: the child only calls async-signal-safe functions (read, prctl, write, signal,
    // execvp, _exit) on memory prepared before the fork.
    match unsafe { fork() }.context("fork")? {
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
            let pid = child.as_raw();
            let mut helper = match hold_at_exec(pid, via_helper, &go_w, &ready_r) {
                Ok(h) => h,
                Err(e) => {
                    // Killed while it still waits for the go: the command never runs.
                    kill_and_reap(pid);
                    return Err(e);
                }
            };
            let _ = nix::unistd::write(&go_w, b"g");
            drop(go_w);
            let at_exec = match helper.as_mut() {
                Some(h) => match h.wait_exec() {
                    Ok(()) => Ok(true),
                    Err(e) if e.is::<ExitedBeforeExec>() => Ok(false),
                    Err(e) => Err(e),
                },
                None => attach::wait_exec_stop(pid),
            };
            let at_exec = match at_exec {
                Ok(a) => a,
                Err(e) => {
                    kill_and_reap(pid);
                    return Err(e);
                }
            };
            if !at_exec {
                let mut buf = [0u8; 4];
                let n = nix::unistd::read(&err_r, &mut buf).unwrap_or(0);
                let err = if n == 4 {
                    io::Error::from_raw_os_error(i32::from_ne_bytes(buf))
                } else {
                    io::Error::other("it exited")
                };
                let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
                return Err(anyhow!("cannot run `{}`: {err}", argv[0].to_string_lossy()));
            }
            let target = match Target::open(pid) {
                Ok(t) => t,
                Err(e) => {
                    kill_and_reap(pid);
                    return Err(e);
                }
            };
            Ok(Launched {
                target,
                command,
                helper,
            })
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
        Some(Helper::start(pid, pidfd.as_fd(), true)?)
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
