//! Obtaining a userfaultfd that lives in the *target's* mm.
//!
//! `userfaultfd()` binds the new fd to the calling process's mm, so it must run inside the
//! target. One thread is borrowed with ptrace: seized, interrupted, pointed at an existing
//! `syscall` instruction of its own (the vDSO's, found by reading, never writing, its memory),
//! made to call `userfaultfd()`, then `close()` on its copy once `pidfd_getfd` has pulled a
//! duplicate out. Other threads never stop. The borrowing is done by an [`helper`] process,
//! never by the tracker, so that the tracker's death cannot strand the thread mid-way. Between injected calls the thread is
//! *parked* on registers it could safely resume from if the tracker died, and the exact
//! original registers go back only at a stop inside `get_signal()`, so the kernel itself applies
//! the restart rules of whatever blocking call the thread was interrupted in.

pub mod helper;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

use crate::error::{permission, unsupported};
use crate::process::{Process, read_status};
use crate::sys::{self, abi};

/// How long a thread may take to reach its ptrace stop before we give up on it.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Syscalls that return `-EINTR` as soon as their thread is ptrace-stopped (signal(7)), so a
/// thread inside one is borrowed only when no other is available, and its call is rewound.
const EINTR_ON_STOP: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_io_getevents,
    abi::SYS_IO_PGETEVENTS,
    libc::SYS_io_uring_enter,
];

/// ptrace options of a borrowed thread, and of a launched command seized before its exec.
const SEIZE_OPTIONS: i32 = libc::PTRACE_O_TRACESYSGOOD;
const EXEC_SEIZE_OPTIONS: i32 = libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACEEXEC;

/// After this long waiting for a borrowed thread, say so on stderr (it may be frozen).
const SLOW_STOP_WARNING: Duration = Duration::from_secs(3);

/// What a successful injection produced: the caller's result from the userfaultfd.
pub struct Injection<T> {
    /// What the caller made of the tracker's duplicate of the target's userfaultfd.
    pub value: T,
    /// The thread that ran the calls.
    pub tid: i32,
    /// How long that thread was stopped.
    pub stopped: Duration,
}

/// A ptrace stop (or the end of the thread), decoded from a raw wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
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

fn decode(status: i32) -> Stop {
    if !libc::WIFSTOPPED(status) {
        return Stop::Exited;
    }
    let sig = libc::WSTOPSIG(status);
    match status >> 16 {
        abi::PTRACE_EVENT_STOP if sig == libc::SIGTRAP => Stop::Interrupt,
        abi::PTRACE_EVENT_STOP => Stop::Group,
        0 if sig == libc::SIGTRAP | 0x80 => Stop::Syscall,
        0 => Stop::Signal(sig),
        event => Stop::Event(event),
    }
}

fn ptrace(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<()> {
    // SAFETY: only requests whose `data` is an integer (a signal, an option set) or a pointer
    // to a live buffer of the size the request implies are passed through here.
    let r = unsafe { libc::ptrace(req, tid, addr, data) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn resume(req: libc::c_uint, tid: i32, sig: i32) -> Result<()> {
    ptrace(req, tid, 0, sig as usize).with_context(|| format!("resuming thread {tid}"))
}

/// Wait for the next stop of `tid`; with a deadline, give up when it passes. Without one,
/// wait as long as it takes (a borrowed thread must get its registers back), saying so on
/// stderr if the thread seems frozen.
fn wait_stop(tid: i32, deadline: Option<Instant>) -> Result<Stop> {
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
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(io::stderr(), "{line}");
}

fn get_sigmask(tid: i32) -> Result<u64> {
    let mut mask = 0u64;
    ptrace(
        abi::PTRACE_GETSIGMASK,
        tid,
        size_of::<u64>(),
        &mut mask as *mut u64 as usize,
    )
    .with_context(|| format!("reading the signal mask of thread {tid}"))?;
    Ok(mask)
}

fn set_sigmask(tid: i32, mask: u64) -> Result<()> {
    ptrace(
        abi::PTRACE_SETSIGMASK,
        tid,
        size_of::<u64>(),
        &mask as *const u64 as usize,
    )
    .with_context(|| format!("setting the signal mask of thread {tid}"))
}

/// Blocks every catchable signal of the tracker while a target thread is borrowed, so a
/// Ctrl-C cannot cut the hijack short; pending signals arrive when it drops.
struct SignalsBlocked(SigSet);

impl SignalsBlocked {
    fn new() -> Result<Self> {
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

/// Find a `syscall` instruction in the target's executable memory by reading it:
/// the vDSO first, then any other executable mapping (never `[vsyscall]`).
fn find_syscall_site(target: &Process) -> Result<u64> {
    let vmas = crate::maps::read_maps(target.pid).context("reading the target's mappings")?;
    let mem = target.open_proc("mem")?;
    let mut candidates: Vec<_> = vmas
        .iter()
        .filter(|v| v.exec && v.read && v.name != "[vsyscall]")
        .collect();
    candidates.sort_by_key(|v| v.name != "[vdso]");
    let mut buf = Vec::new();
    for vma in candidates {
        let len = vma.len().min(16 << 20) as usize;
        buf.resize(len, 0);
        let Ok(n) = sys::pread_full(mem.as_fd(), &mut buf, vma.start) else {
            continue;
        };
        if let Some(pos) = buf[..n].windows(2).position(|w| w == arch::SYSCALL_INSN) {
            return Ok(vma.start + pos as u64);
        }
    }
    bail!(
        "no `syscall` instruction found in the executable memory of PID {}",
        target.pid
    )
}

/// Rank a thread for borrowing: lower is better. Running in user space beats blocked outside
/// a syscall, which beats a restartable syscall; calls that turn a stop into EINTR come last.
fn thread_rank(pid: i32, tid: i32) -> u8 {
    let Ok(st) = read_status(&format!("/proc/{pid}/task/{tid}/status")) else {
        return 9;
    };
    match st.state {
        'Z' | 'X' => return 9,
        'D' => return 5,
        _ => {}
    }
    let Ok(sc) = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) else {
        return 2;
    };
    let first = sc.split_whitespace().next().unwrap_or("");
    match first {
        "running" => 0,
        "-1" => 1,
        nr => match nr.parse::<i64>() {
            Ok(nr) if EINTR_ON_STOP.contains(&nr) => 4,
            _ => 2,
        },
    }
}

/// Run `nr(args)` in the ptrace-stopped thread `tid` at the `syscall` instruction at `site`,
/// starting from the registers `park` (safe to resume from), and put `park` back after it, or
/// after a fault of the injected state; `on_event` hears each `PTRACE_EVENT_*` stop. Returns
/// the raw result (`-errno` on failure).
fn run_syscall(
    tid: i32,
    park: &arch::Regs,
    site: u64,
    nr: i64,
    args: [u64; 6],
    on_event: &mut dyn FnMut(i32, i32),
) -> Result<i64> {
    arch::set_regs(tid, &arch::syscall_regs(park, site, nr, args))?;
    for _ in ["entry", "exit"] {
        resume(libc::PTRACE_SYSCALL, tid, 0)?;
        loop {
            match wait_stop(tid, None)? {
                Stop::Syscall => break,
                // Stop signals get through the all-blocked mask: let them take effect; the
                // group stop they cause is resumed by our next request.
                Stop::Signal(sig) if is_stop_signal(sig) => resume(libc::PTRACE_SYSCALL, tid, sig)?,
                // Anything else is a fault of the injected state (SIGSEGV, SIGILL, SIGSYS...):
                // it is ours, never the target's. Drop it and give up.
                Stop::Signal(sig) => {
                    arch::set_regs(tid, park)?;
                    bail!(
                        "the injected system call raised signal {sig} in thread {tid}; nothing was changed"
                    )
                }
                Stop::Event(event) => {
                    on_event(event, tid);
                    resume(libc::PTRACE_SYSCALL, tid, 0)?
                }
                Stop::Group | Stop::Interrupt => resume(libc::PTRACE_SYSCALL, tid, 0)?,
                Stop::Exited => bail!("the target thread {tid} exited during attach"),
            }
        }
    }
    let ret = arch::return_value(&arch::get_regs(tid)?);
    arch::set_regs(tid, park)?;
    Ok(ret)
}

/// A thread in a ptrace stop whose registers are on loan.
struct Borrowed {
    tid: i32,
    pid: i32,
    /// The registers as the thread stopped.
    saved: arch::Regs,
    /// The registers handed back at the end (the original ones, or a rewound call).
    restore: arch::Regs,
    /// Registers safe to resume from between injected calls.
    parked: arch::Regs,
    mask: u64,
    site: u64,
    /// The ptrace options it was seized with.
    options: i32,
    started: Instant,
}

impl Borrowed {
    /// `tid` must be in a ptrace stop; its current registers are the ones to give back.
    fn take(tid: i32, pid: i32, site: u64, options: i32, started: Instant) -> Result<Self> {
        let saved = arch::get_regs(tid)
            .with_context(|| format!("reading the registers of thread {tid}"))?;
        if !arch::is_64bit(&saved) {
            bail!("thread {tid} of PID {pid} runs 32-bit code: only 64-bit targets can be tracked");
        }
        let mut restore = saved;
        match arch::interrupted_syscall(&saved) {
            Some(_) if eintr_only_because_stopped(pid, &saved) => {
                restore = arch::rewound_regs(&saved);
            }
            Some(_) => {}
            // Stopped in user space, perhaps inside an rseq critical section: running it
            // elsewhere makes the kernel drop the section, so resume at its abort handler,
            // as the kernel itself would after a preemption.
            None => {
                if let Some(abort_ip) = rseq_abort_ip(tid, pid, arch::ip(&saved)) {
                    arch::set_ip(&mut restore, abort_ip);
                }
            }
        }
        let parked = arch::parked_regs(&restore);
        let mask = get_sigmask(tid)?;
        Ok(Borrowed {
            tid,
            pid,
            saved,
            restore,
            parked,
            mask,
            site,
            options,
            started,
        })
    }

    /// Run one syscall in the thread and return its raw result (`-errno` on failure).
    fn syscall(&self, nr: i64, args: [u64; 6]) -> Result<i64> {
        self.syscall_seeing(nr, args, &mut |_, _| {})
    }

    /// [`Self::syscall`], telling `on_event` of each `PTRACE_EVENT_*` stop on the way.
    fn syscall_seeing(
        &self,
        nr: i64,
        args: [u64; 6],
        on_event: &mut dyn FnMut(i32, i32),
    ) -> Result<i64> {
        set_sigmask(self.tid, !0)?;
        let ret = run_syscall(self.tid, &self.parked, self.site, nr, args, on_event);
        set_sigmask(self.tid, self.mask)?;
        ret
    }

    /// Hand the thread back: stop it once more inside `get_signal()`, put the original
    /// registers and mask back there, and detach. The kernel then restarts (or not) the
    /// interrupted call exactly as it would after any signal.
    fn give_back(self) -> Result<Duration> {
        let tid = self.tid;
        ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0)
            .with_context(|| format!("interrupting thread {tid}"))?;
        resume(libc::PTRACE_CONT, tid, 0)?;
        loop {
            let stop = wait_stop(tid, None)?;
            let deliver = match stop {
                Stop::Interrupt | Stop::Group => 0,
                // A signal that became deliverable once its mask came back: deliver it with
                // the original registers in place, so its handler sees the true state.
                Stop::Signal(sig) => sig,
                Stop::Syscall | Stop::Event(_) => {
                    resume(libc::PTRACE_CONT, tid, 0)?;
                    continue;
                }
                Stop::Exited => bail!("the target thread {tid} exited during attach"),
            };
            // A rewound call must still return EINTR if a signal is about to be handled: the
            // program may be waiting for exactly that to stop its loop.
            let signal_coming = deliver != 0 || unblocked_signal_pending(self.pid, tid, self.mask);
            let regs = if signal_coming {
                &self.saved
            } else {
                &self.restore
            };
            arch::set_regs(tid, regs)?;
            set_sigmask(tid, self.mask)?;
            ptrace(libc::PTRACE_DETACH, tid, 0, deliver as usize)
                .with_context(|| format!("detaching from thread {tid}"))?;
            return Ok(self.started.elapsed());
        }
    }
}

/// A call that returned -EINTR only because its thread was ptrace-stopped (epoll_wait & co.)
/// and waits forever: running it again from its `syscall` instruction changes nothing. A
/// timed one keeps its EINTR (restarting it would lengthen the wait).
fn eintr_only_because_stopped(pid: i32, regs: &arch::Regs) -> bool {
    arch::interrupted_syscall(regs).is_some_and(|nr| {
        arch::return_value(regs) == -i64::from(libc::EINTR)
            && EINTR_ON_STOP.contains(&(nr as i64))
            && arch::waits_forever(regs, nr as i64)
            && syscall_insn_before(pid, arch::ip(regs))
    })
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

/// Whether a signal not blocked by `mask` is pending for the thread or its process.
fn unblocked_signal_pending(pid: i32, tid: i32, mask: u64) -> bool {
    let Ok(text) = crate::process::read_proc(format!("/proc/{pid}/task/{tid}/status")) else {
        return false;
    };
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .filter_map(|v| u64::from_str_radix(v.trim(), 16).ok())
        .any(|pending| pending & !mask != 0)
}

fn read_u64(mem: &fs::File, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    matches!(sys::pread_full(mem.as_fd(), &mut b, addr), Ok(8)).then(|| u64::from_ne_bytes(b))
}

/// The abort handler to resume at, if the thread stopped inside an rseq critical section.
fn rseq_abort_ip(tid: i32, pid: i32, ip: u64) -> Option<u64> {
    let mut conf = abi::ptrace_rseq_configuration {
        rseq_abi_pointer: 0,
        rseq_abi_size: 0,
        signature: 0,
        flags: 0,
        pad: 0,
    };
    let size = size_of::<abi::ptrace_rseq_configuration>();
    ptrace(
        abi::PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        size,
        &mut conf as *mut _ as usize,
    )
    .ok()?;
    if conf.rseq_abi_pointer == 0 {
        return None;
    }
    let mem = fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let cs = read_u64(&mem, conf.rseq_abi_pointer + abi::RSEQ_CS_FIELD_OFFSET)?;
    if cs == 0 {
        return None;
    }
    let start = read_u64(&mem, cs + abi::RSEQ_CS_START_IP_OFFSET)?;
    let len = read_u64(&mem, cs + abi::RSEQ_CS_POST_COMMIT_OFFSET)?;
    let abort = read_u64(&mem, cs + abi::RSEQ_CS_ABORT_IP_OFFSET)?;
    (ip >= start && ip - start < len).then_some(abort)
}

/// Whether the two bytes before `ip` in the target are a `syscall` instruction.
fn syscall_insn_before(pid: i32, ip: u64) -> bool {
    let Ok(mem) = fs::File::open(format!("/proc/{pid}/mem")) else {
        return false;
    };
    let mut b = [0u8; 2];
    matches!(
        sys::pread_full(mem.as_fd(), &mut b, ip.wrapping_sub(2)),
        Ok(2)
    ) && b == arch::SYSCALL_INSN
}

fn seize_error(target: &Process, tid: i32, e: io::Error) -> anyhow::Error {
    // An exiting thread cannot be seized (EPERM): that is an exit, not a permission problem.
    if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ESRCH))
        && (target.check_alive().is_err() || thread_is_dead(target.pid, tid))
    {
        return anyhow!("PID {} exited while being attached to", target.pid);
    }
    if e.raw_os_error() == Some(libc::EPERM) {
        if let Ok(Some((t, tracer))) = target.traced_thread() {
            return anyhow!(
                "thread {t} of PID {} is already traced by PID {tracer}: detach that debugger or tracer first",
                target.pid
            );
        }
        return permission(format!(
            "not permitted to ptrace PID {}: run as the same user as the target (and the target must be dumpable), or grant CAP_SYS_PTRACE{}",
            target.pid,
            yama_hint()
        ));
    }
    anyhow!("PTRACE_SEIZE of thread {tid} of PID {}: {e}", target.pid)
}

/// What Yama adds to a permission error, if it is active.
pub fn yama_hint() -> String {
    match fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").map(|s| s.trim().to_string()) {
        Ok(s) if s == "1" => "; Yama ptrace_scope=1 also allows only descendants: use `uffd-dirty track -- CMD`, or set kernel.yama.ptrace_scope=0".into(),
        Ok(s) if s == "2" => "; Yama ptrace_scope=2 requires CAP_SYS_PTRACE".into(),
        Ok(s) if s == "3" => "; Yama ptrace_scope=3 forbids ptrace entirely until reboot".into(),
        _ => String::new(),
    }
}

fn refuse_seccomp(target: &Process, tid: i32) -> Result<()> {
    let st = read_status(&format!("/proc/{}/task/{tid}/status", target.pid)).unwrap_or_default();
    match st.seccomp {
        0 => Ok(()),
        1 => bail!(
            "PID {} runs in seccomp strict mode: calling userfaultfd() would kill it, so it cannot be tracked",
            target.pid
        ),
        _ => bail!(
            "PID {} runs under a seccomp filter that might kill it for calling userfaultfd(); refusing to risk the target (run it without the filter, or allow userfaultfd in its profile)",
            target.pid
        ),
    }
}

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
fn create_and_take(b: &Borrowed, target: &Process) -> Result<OwnedFd> {
    if thread_pidfds_work() {
        create_in_own_thread(b, target)
    } else {
        create_in_shared_table(b, target)
    }
}

/// Whether `pidfd_open(PIDFD_THREAD)` works here (Linux 6.9+), tried on ourselves.
fn thread_pidfds_work() -> bool {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    sys::pidfd_open_thread(me).is_ok()
}

/// The flags `userfaultfd()` is called with inside the target.
const UFFD_FLAGS: u64 = abi::O_CLOEXEC | abi::O_NONBLOCK | abi::UFFD_USER_MODE_ONLY;

fn userfaultfd_error(ret: i64, target: &Process) -> anyhow::Error {
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

fn getfd_error(e: io::Error, fd: i32, target: &Process) -> anyhow::Error {
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
fn is_userfaultfd(fd: OwnedFd, fd_in_target: i32, target: &Process) -> Result<OwnedFd> {
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
fn create_in_own_thread(b: &Borrowed, target: &Process) -> Result<OwnedFd> {
    // The borrowed thread's clone is attached to us at once, stopped before its first
    // instruction; the option is dropped again right after.
    ptrace(
        libc::PTRACE_SETOPTIONS,
        b.tid,
        0,
        (b.options | libc::PTRACE_O_TRACECLONE) as usize,
    )
    .with_context(|| format!("setting ptrace options of thread {}", b.tid))?;
    let mut spawned_tid = None;
    let cloned = b.syscall_seeing(
        abi::SYS_CLONE,
        [abi::CLONE_THREAD_OWN_FILES, 0, 0, 0, 0, 0],
        &mut |event, tid| {
            // Its TID as we see it (the one clone returns is the target's PID namespace's).
            if event == libc::PTRACE_EVENT_CLONE {
                spawned_tid = event_message(tid).ok().map(|t| t as i32);
            }
        },
    );
    let _ = ptrace(libc::PTRACE_SETOPTIONS, b.tid, 0, b.options as usize);
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

/// `PTRACE_GETEVENTMSG`: what the last `PTRACE_EVENT_*` stop of `tid` carries.
fn event_message(tid: i32) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    ptrace(
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut msg as *mut libc::c_ulong as usize,
    )?;
    Ok(msg)
}

/// The transient thread of [`create_in_own_thread`]: its mask is every signal blocked (its
/// parent's while borrowed), and between calls it is parked on `exit(0)`, so that whatever
/// becomes of us it leaves without running a single instruction of the target's.
struct Spawned {
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
            Stop::Exited => bail!("the transient thread {tid} ended before it ran"),
            Stop::Signal(sig) if is_stop_signal(sig) => sig,
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
        resume(libc::PTRACE_CONT, self.tid, sig)?;
        match wait_stop(self.tid, None)? {
            Stop::Exited => bail!("the transient thread {} was killed", self.tid),
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
        resume(libc::PTRACE_CONT, self.tid, 0)?;
        loop {
            match wait_stop(self.tid, None)? {
                Stop::Exited => return Ok(()),
                Stop::Signal(sig) if is_stop_signal(sig) => {
                    resume(libc::PTRACE_CONT, self.tid, sig)?
                }
                _ => resume(libc::PTRACE_CONT, self.tid, 0)?,
            }
        }
    }
}

/// Before Linux 6.9: create the userfaultfd in the target's own fd table, take a copy and
/// close it there (another thread may pass it on by forking meanwhile).
fn create_in_shared_table(b: &Borrowed, target: &Process) -> Result<OwnedFd> {
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
    helper::Helper::start(target.pid, target.pidfd.as_fd(), false)?.take()
}

/// The threads of the target in the order to try them for borrowing, each ranked once
/// (ranks read from /proc change under a running program: never compare them twice).
fn threads_by_rank(target: &Process) -> Result<Vec<i32>> {
    let mut ranked: Vec<(u8, i32)> = target
        .threads()?
        .into_iter()
        .map(|t| (thread_rank(target.pid, t), t))
        .collect();
    ranked.sort_unstable();
    Ok(ranked.into_iter().map(|(_, t)| t).collect())
}

/// In the helper: borrow the best-placed thread, create and take the userfaultfd, give the
/// thread back.
fn take_userfaultfd_here(target: &Process) -> Result<Injection<OwnedFd>> {
    if let Some((tid, tracer)) = target.traced_thread()? {
        bail!(
            "thread {tid} of PID {} is already traced by PID {tracer}: detach that debugger or tracer first",
            target.pid
        );
    }
    let tid = *threads_by_rank(target)?
        .first()
        .ok_or_else(|| anyhow!("PID {} has no threads", target.pid))?;
    refuse_seccomp(target, tid)?;

    let started = Instant::now();
    ptrace(libc::PTRACE_SEIZE, tid, 0, SEIZE_OPTIONS as usize)
        .map_err(|e| seize_error(target, tid, e))?;
    interrupt_and_wait(tid, target)?;
    // Looked for only now that the thread is stopped: a target that execs meanwhile has its
    // vDSO elsewhere, and the old address would fault.
    let site = match find_syscall_site(target) {
        Ok(site) => site,
        Err(e) => {
            let _ = ptrace(libc::PTRACE_DETACH, tid, 0, 0);
            return Err(e);
        }
    };
    borrow_and_inject(tid, target, site, SEIZE_OPTIONS, started, Ok)
}

/// Stop a seized thread with `PTRACE_INTERRUPT`. A signal on its way in is let through, and
/// the interrupt asked for again: the signal's delivery stop may have used it up (under a
/// flood of signals the thread would otherwise run on from stop to stop).
fn interrupt_and_wait(tid: i32, target: &Process) -> Result<()> {
    ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0)
        .with_context(|| format!("interrupting thread {tid}"))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match wait_stop(tid, Some(deadline)) {
            Ok(Stop::Interrupt | Stop::Group) => return Ok(()),
            Ok(Stop::Signal(sig)) => {
                resume(libc::PTRACE_CONT, tid, sig)?;
                ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0)
                    .with_context(|| format!("interrupting thread {tid}"))?;
            }
            Ok(Stop::Syscall | Stop::Event(_)) => resume(libc::PTRACE_CONT, tid, 0)?,
            Ok(Stop::Exited) => bail!("PID {} exited while being attached to", target.pid),
            Err(e) => {
                // Not stopped: detach (allowed on a running tracee only once it stops, so
                // this may fail; the helper's exit then detaches it, registers untouched).
                let _ = ptrace(libc::PTRACE_DETACH, tid, 0, 0);
                return Err(e);
            }
        }
    }
}

/// Inject, then run `while_stopped` on the userfaultfd before the thread is given back.
fn borrow_and_inject<T>(
    tid: i32,
    target: &Process,
    site: u64,
    options: i32,
    started: Instant,
    while_stopped: impl FnOnce(OwnedFd) -> Result<T>,
) -> Result<Injection<T>> {
    let borrowed = match Borrowed::take(tid, target.pid, site, options, started) {
        Ok(b) => b,
        Err(e) => {
            // Nothing was changed yet: let the thread go as it was.
            let _ = ptrace(libc::PTRACE_DETACH, tid, 0, 0);
            return Err(e);
        }
    };
    let value = create_and_take(&borrowed, target).and_then(while_stopped);
    let stopped = borrowed.give_back()?;
    Ok(Injection {
        value: value?,
        tid,
        stopped,
    })
}

/// In the helper, launch mode: `target` is a child seized with `PTRACE_O_TRACEEXEC` and now
/// in its exec event stop. Step it to the exit of `execve` (before the new image runs any
/// instruction), inject, and run `arm` on the userfaultfd while the command, single-threaded
/// after exec, is still stopped: it starts running only once fully tracked.
fn take_userfaultfd_after_exec_here<T>(
    target: &Process,
    arm: impl FnOnce(OwnedFd) -> Result<T>,
) -> Result<Injection<T>> {
    let tid = target.pid;
    let started = Instant::now();
    resume(libc::PTRACE_SYSCALL, tid, 0)?;
    loop {
        match wait_stop(tid, None)? {
            Stop::Syscall => break,
            Stop::Signal(sig) => resume(libc::PTRACE_SYSCALL, tid, sig)?,
            Stop::Interrupt | Stop::Group | Stop::Event(_) => resume(libc::PTRACE_SYSCALL, tid, 0)?,
            Stop::Exited => bail!("the command exited before it could be attached to"),
        }
    }
    refuse_seccomp(target, tid)?;
    let site = find_syscall_site(target)?;
    borrow_and_inject(tid, target, site, EXEC_SEIZE_OPTIONS, started, arm)
}

/// Launch-mode helpers for `track -- CMD`: seize the child before it execs.
pub fn seize_for_exec(pid: i32) -> Result<()> {
    ptrace(libc::PTRACE_SEIZE, pid, 0, EXEC_SEIZE_OPTIONS as usize)
        .with_context(|| format!("PTRACE_SEIZE of the launched command (PID {pid})"))
}

/// Wait for the seized child's exec event stop. `Ok(false)`: the child exited instead.
pub fn wait_exec_stop(pid: i32) -> Result<bool> {
    loop {
        match wait_stop(pid, None)? {
            Stop::Event(libc::PTRACE_EVENT_EXEC) => return Ok(true),
            Stop::Exited => return Ok(false),
            Stop::Signal(sig) => resume(libc::PTRACE_CONT, pid, sig)?,
            _ => resume(libc::PTRACE_CONT, pid, 0)?,
        }
    }
}

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
                return Ok(frozen);
            }
            for tid in fresh {
                match ptrace(libc::PTRACE_SEIZE, tid, 0, 0) {
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
                ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0)
                    .with_context(|| format!("interrupting thread {tid}"))?;
                // No deadline: a seized thread must reach its stop before it can be detached,
                // or it would stay traced by us (wait_stop says so if it takes long).
                loop {
                    match wait_stop(tid, None)? {
                        Stop::Interrupt => {
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
                        Stop::Group => break,
                        Stop::Signal(sig) => resume(libc::PTRACE_CONT, tid, sig)?,
                        Stop::Syscall | Stop::Event(_) => resume(libc::PTRACE_CONT, tid, 0)?,
                        Stop::Exited => {
                            frozen.tids.retain(|&t| t != tid);
                            break;
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for (tid, regs, mask) in &self.rewound {
            if unblocked_signal_pending(self.pid, *tid, *mask) {
                let _ = arch::set_regs(*tid, regs);
            }
        }
        for &tid in &self.tids {
            let _ = ptrace(libc::PTRACE_DETACH, tid, 0, 0);
        }
    }
}

/// Whether a thread is gone or a zombie (an exited thread of a live process).
fn thread_is_dead(pid: i32, tid: i32) -> bool {
    read_status(&format!("/proc/{pid}/task/{tid}/status"))
        .map_or(true, |st| matches!(st.state, 'Z' | 'X'))
}

/// Launch mode without injection (soft-dirty): let a command held at its exec event stop run.
pub fn release_after_exec(pid: i32) -> Result<()> {
    ptrace(libc::PTRACE_DETACH, pid, 0, 0)
        .with_context(|| format!("releasing the command (PID {pid})"))
}
