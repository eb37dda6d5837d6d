//! The userfaultfd made inside the target: by a transient thread with a fd table of its own
//! (6.9+), or in the shared table and closed at once; then pulled out with `pidfd_getfd`.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};

use super::borrow::{
    Borrowed, borrow_and_inject, find_syscall_site, interrupt_and_wait, is_stop_signal,
    run_syscall, seccomp_plan, seize_error, threads_by_rank, yama_hint,
};
use super::stops::{PtraceStop, Resume, resume, say, wait_stop};
use super::{EXEC_SEIZE_OPTIONS, Injection, SEIZE_OPTIONS, arch};
use crate::error::{permission, unsupported};
use crate::process::Process;
use crate::sys::{self, abi, ptrace};

/// Create the target's userfaultfd and take a copy of it, never leaving one in the target.
///
/// A userfaultfd created in the target's own fd table is there, however briefly, for any of
/// its other threads to pass on: a `fork()` then gives the child a copy that keeps the
/// target's memory registered once the tracker is gone (and a later tracker or the program's
/// own userfaultfd gets EBUSY). So the borrowed thread clones a transient thread of the target
/// that has its own copy of the fd table (no `CLONE_FILES`), which creates the userfaultfd
/// there, is emptied by `pidfd_getfd` on a pidfd of that thread (`PIDFD_THREAD`, 6.9), and
/// exits, its table with it. The target's own table is never touched. Before 6.9 the old way
/// stays: create in the target's table, take, close ([`create_in_shared_table`]).
pub(super) fn create_and_take(b: &Borrowed, target: &Process) -> Result<OwnedFd> {
    if thread_pidfds_work() {
        create_in_own_thread(b, target)
    } else {
        create_in_shared_table(b, target)
    }
}

/// Whether `pidfd_open(PIDFD_THREAD)` works here (Linux 6.9+), tried on ourselves.
pub(super) fn thread_pidfds_work() -> bool {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    sys::pidfd_open_thread(me).is_ok()
}

/// The flags `userfaultfd()` is called with inside the target.
pub(super) const UFFD_FLAGS: u64 = abi::O_CLOEXEC | abi::O_NONBLOCK | abi::UFFD_USER_MODE_ONLY;

pub(super) fn userfaultfd_error(ret: i64, target: &Process) -> anyhow::Error {
    let err = io::Error::from_raw_os_error(-ret as i32);
    match -ret as i32 {
        libc::ENOSYS => {
            unsupported("the kernel has no userfaultfd(2) (built without CONFIG_USERFAULTFD)")
        }
        libc::EPERM => permission(format!(
            "PID {} may not create a userfaultfd ({err}): an LSM or seccomp policy denies userfaultfd(2) to it",
            target.pid
        )),
        libc::EINVAL => unsupported(
            "userfaultfd(UFFD_USER_MODE_ONLY) is not supported: Linux 5.11 or newer is needed",
        ),
        _ => anyhow!("userfaultfd() inside PID {} failed: {err}", target.pid),
    }
}

pub(super) fn getfd_error(e: io::Error, fd: i32, target: &Process) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::EPERM) {
        permission(format!(
            "pidfd_getfd on PID {} was denied: CAP_SYS_PTRACE or the same user is needed{}",
            target.pid,
            yama_hint()
        ))
    } else {
        anyhow!("pidfd_getfd({fd}) from PID {}: {e}", target.pid)
    }
}

/// Check that a taken fd is a userfaultfd.
pub(super) fn is_userfaultfd(fd: OwnedFd, fd_in_target: i32, target: &Process) -> Result<OwnedFd> {
    let ours = fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))?;
    if ours.to_str() != Some("anon_inode:[userfaultfd]") {
        bail!(
            "fd {fd_in_target} taken from PID {} is {}, not a userfaultfd",
            target.pid,
            ours.display()
        );
    }
    Ok(fd)
}

/// See [`create_and_take`]: the userfaultfd is created by a transient thread of the target
/// with a fd table of its own.
pub(super) fn create_in_own_thread(b: &Borrowed, target: &Process) -> Result<OwnedFd> {
    // The borrowed thread's clone is attached to us at once, stopped before its first
    // instruction; the option is dropped again right after.
    ptrace::set_options(b.tid, b.options | libc::PTRACE_O_TRACECLONE)
        .with_context(|| format!("setting ptrace options of thread {}", b.tid))?;
    let mut spawned_tid = None;
    let cloned = b.syscall_seeing(
        abi::SYS_CLONE,
        [abi::CLONE_THREAD_OWN_FILES, 0, 0, 0, 0, 0],
        &mut |event, tid| {
            // Its TID as we see it (the one clone returns is the target's PID namespace's).
            if event == libc::PTRACE_EVENT_CLONE {
                spawned_tid = ptrace::event_message(tid).ok().map(|t| t as i32);
            }
        },
    );
    let _ = ptrace::set_options(b.tid, b.options);
    // A thread that was made is parked and ended whatever else went wrong: released
    // un-parked, it would run the target's code on the borrowed thread's stack.
    let spawned = spawned_tid.map(|t| Spawned::adopt(t, b.site)).transpose()?;
    let ret = match cloned {
        Ok(ret) => ret,
        Err(e) => {
            if let Some(s) = spawned {
                let _ = s.exit();
            }
            return Err(e);
        }
    };
    let Some(spawned) = spawned else {
        let err = io::Error::from_raw_os_error((-ret).max(0) as i32);
        bail!(
            "thread {} of PID {} could not start a thread to create the userfaultfd in: {err}",
            b.tid,
            target.pid
        );
    };
    let taken = spawned.create_and_take(target);
    spawned.exit()?;
    taken
}

/// The transient thread of [`create_in_own_thread`]: its mask is every signal blocked (its
/// parent's while borrowed), and between calls it is parked on `exit(0)`, so that whatever
/// becomes of us it leaves without running a single instruction of the target's.
pub(super) struct Spawned {
    tid: i32,
    exit_regs: arch::Regs,
    site: u64,
}

impl Spawned {
    fn adopt(tid: i32, site: u64) -> Result<Spawned> {
        // No deadline: it must be stopped before its registers can be set, and it stops
        // before its first instruction. Any ptrace stop will do to set them (a SIGSTOP for
        // the whole process may come first: the group stop it starts is left to happen).
        let pending = match wait_stop(tid, None)? {
            PtraceStop::Exited => bail!("the transient thread {tid} ended before it ran"),
            PtraceStop::Signal(sig) if is_stop_signal(sig) => sig,
            _ => 0,
        };
        // Get and set may fail only if it is gone (killed with the whole process).
        let regs = arch::get_regs(tid)
            .with_context(|| format!("reading the registers of thread {tid}"))?;
        let exit_regs = arch::syscall_regs(&regs, site, abi::SYS_EXIT, [0; 6]);
        arch::set_regs(tid, &exit_regs).with_context(|| format!("parking thread {tid} on exit"))?;
        let spawned = Spawned {
            tid,
            exit_regs,
            site,
        };
        if pending != 0 {
            spawned.pass_stop_signal(pending)?;
        }
        Ok(spawned)
    }

    /// Deliver a stop signal it caught (it blocks every other): the process stops as it was
    /// told to; ptrace lets our thread go on from its group stop.
    fn pass_stop_signal(&self, sig: i32) -> Result<()> {
        resume(Resume::Run, self.tid, sig)?;
        match wait_stop(self.tid, None)? {
            PtraceStop::Exited => bail!("the transient thread {} was killed", self.tid),
            _ => Ok(()),
        }
    }

    fn syscall(&self, nr: i64, args: [u64; 6]) -> Result<i64> {
        run_syscall(
            self.tid,
            &self.exit_regs,
            self.site,
            nr,
            args,
            &mut |_, _| {},
        )
    }

    fn create_and_take(&self, target: &Process) -> Result<OwnedFd> {
        let ret = self.syscall(abi::SYS_USERFAULTFD, [UFFD_FLAGS, 0, 0, 0, 0, 0])?;
        if ret < 0 {
            return Err(userfaultfd_error(ret, target));
        }
        let fd_in_thread = ret as i32;
        let pidfd = sys::pidfd_open_thread(self.tid)
            .with_context(|| format!("pidfd_open of thread {}", self.tid))?;
        let fd = sys::pidfd_getfd(pidfd.as_fd(), fd_in_thread)
            .map_err(|e| getfd_error(e, fd_in_thread, target))?;
        is_userfaultfd(fd, fd_in_thread, target)
    }

    /// Let it run its `exit(0)`, and see it gone.
    fn exit(self) -> Result<()> {
        arch::set_regs(self.tid, &self.exit_regs)?;
        resume(Resume::Run, self.tid, 0)?;
        loop {
            match wait_stop(self.tid, None)? {
                PtraceStop::Exited => return Ok(()),
                PtraceStop::Signal(sig) if is_stop_signal(sig) => {
                    resume(Resume::Run, self.tid, sig)?
                }
                _ => resume(Resume::Run, self.tid, 0)?,
            }
        }
    }
}

/// Before Linux 6.9: create the userfaultfd in the target's own fd table, take a copy and
/// close it there (another thread may pass it on by forking meanwhile).
pub(super) fn create_in_shared_table(b: &Borrowed, target: &Process) -> Result<OwnedFd> {
    let ret = b.syscall(abi::SYS_USERFAULTFD, [UFFD_FLAGS, 0, 0, 0, 0, 0])?;
    if ret < 0 {
        return Err(userfaultfd_error(ret, target));
    }
    let fd_in_target = ret as i32;
    let taken = sys::pidfd_getfd(target.pidfd.as_fd(), fd_in_target);
    // Close the target's copy only if that slot still holds a userfaultfd: another thread
    // may have closed and reused the number meanwhile.
    let link = fs::read_link(format!("/proc/{}/fd/{fd_in_target}", target.pid)).ok();
    if link.as_deref().and_then(|p| p.to_str()) == Some("anon_inode:[userfaultfd]") {
        let c = b.syscall(abi::SYS_CLOSE, [fd_in_target as u64, 0, 0, 0, 0, 0])?;
        if c != 0 {
            say(format_args!(
                "uffd-dirty: warning: close({fd_in_target}) in PID {} returned {c}",
                target.pid
            ));
        }
    }
    let fd = taken.map_err(|e| getfd_error(e, fd_in_target, target))?;
    is_userfaultfd(fd, fd_in_target, target)
}

/// Attach to a running process: a helper borrows its best-placed thread to create a
/// userfaultfd, gives the thread back, and hands the fd over.
pub fn take_userfaultfd(target: &Process) -> Result<Injection<OwnedFd>> {
    super::helper::Helper::start(
        target.pid,
        target.pidfd.as_fd(),
        super::helper::HelperFor::Running,
    )?
    .take()
}

/// In the helper: borrow the best-placed thread, create and take the userfaultfd, give the
/// thread back.
pub(super) fn take_userfaultfd_here(target: &Process) -> Result<Injection<OwnedFd>> {
    if let Some((tid, tracer)) = target.traced_thread()? {
        bail!(
            "thread {tid} of PID {} is already traced by PID {tracer}: detach that debugger or tracer first",
            target.pid
        );
    }
    let tid = *threads_by_rank(target)?
        .first()
        .ok_or_else(|| anyhow!("PID {} has no threads", target.pid))?;
    let seccomp = seccomp_plan(target, tid)?;

    let started = Instant::now();
    ptrace::seize(tid, SEIZE_OPTIONS).map_err(|e| seize_error(target, tid, e))?;
    interrupt_and_wait(tid, target)?;
    // Looked for only now that the thread is stopped: a target that execs meanwhile has its
    // vDSO elsewhere, and the old address would fault.
    let site = match find_syscall_site(target) {
        Ok(site) => site,
        Err(e) => {
            let _ = ptrace::detach(tid, 0);
            return Err(e);
        }
    };
    borrow_and_inject(tid, target, site, SEIZE_OPTIONS, seccomp, started, Ok)
}

/// In the helper, launch mode: `target` is a child seized with `PTRACE_O_TRACEEXEC` and now
/// in its exec event stop. Step it to the exit of `execve` (before the new image runs any
/// instruction), inject, and run `arm` on the userfaultfd while the command, single-threaded
/// after exec, is still stopped: it starts running only once fully tracked.
pub(super) fn take_userfaultfd_after_exec_here<T>(
    target: &Process,
    arm: impl FnOnce(OwnedFd) -> Result<T>,
) -> Result<Injection<T>> {
    let tid = target.pid;
    let started = Instant::now();
    resume(Resume::ToSyscall, tid, 0)?;
    loop {
        match wait_stop(tid, None)? {
            PtraceStop::Syscall => break,
            PtraceStop::Signal(sig) => resume(Resume::ToSyscall, tid, sig)?,
            PtraceStop::Interrupt | PtraceStop::Group | PtraceStop::Event(_) => {
                resume(Resume::ToSyscall, tid, 0)?
            }
            PtraceStop::Exited => bail!("the command exited before it could be attached to"),
        }
    }
    let seccomp = seccomp_plan(target, tid)?;
    let site = find_syscall_site(target)?;
    borrow_and_inject(tid, target, site, EXEC_SEIZE_OPTIONS, seccomp, started, arm)
}
