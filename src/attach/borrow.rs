//! Borrowing one thread of the target: choosing it, seizing and stopping it, parking it on
//! safe registers between injected calls, and giving it back exactly as it was.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::freeze::thread_is_dead;
use super::stops::{PtraceStop, Resume, get_sigmask, resume, set_sigmask, wait_stop};
use super::userfaultfd::create_and_take;
use super::{EINTR_ON_STOP, Injection, STOP_TIMEOUT, arch};
use crate::error::permission;
use crate::process::{Process, read_status};
use crate::sys::{self, abi, ptrace};

/// Find a `syscall` instruction in the target's executable memory by reading it:
/// the vDSO first, then any other executable mapping (never `[vsyscall]`).
pub(super) fn find_syscall_site(target: &Process) -> Result<u64> {
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
pub(super) fn thread_rank(pid: i32, tid: i32) -> u8 {
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
pub(super) fn run_syscall(
    tid: i32,
    park: &arch::Regs,
    site: u64,
    nr: i64,
    args: [u64; 6],
    on_event: &mut dyn FnMut(i32, i32),
) -> Result<i64> {
    arch::set_regs(tid, &arch::syscall_regs(park, site, nr, args))?;
    for _ in ["entry", "exit"] {
        resume(Resume::ToSyscall, tid, 0)?;
        loop {
            match wait_stop(tid, None)? {
                PtraceStop::Syscall => break,
                // Stop signals get through the all-blocked mask: let them take effect; the
                // group stop they cause is resumed by our next request.
                PtraceStop::Signal(sig) if is_stop_signal(sig) => {
                    resume(Resume::ToSyscall, tid, sig)?
                }
                // Anything else is a fault of the injected state (SIGSEGV, SIGILL, SIGSYS...):
                // it is ours, never the target's. Drop it and give up.
                PtraceStop::Signal(sig) => {
                    arch::set_regs(tid, park)?;
                    bail!(
                        "the injected system call raised signal {sig} in thread {tid}; nothing was changed"
                    )
                }
                PtraceStop::Event(event) => {
                    on_event(event, tid);
                    resume(Resume::ToSyscall, tid, 0)?
                }
                PtraceStop::Group | PtraceStop::Interrupt => resume(Resume::ToSyscall, tid, 0)?,
                PtraceStop::Exited => bail!("the target thread {tid} exited during attach"),
            }
        }
    }
    let ret = arch::return_value(&arch::get_regs(tid)?);
    arch::set_regs(tid, park)?;
    Ok(ret)
}

/// A thread in a ptrace stop whose registers are on loan.
pub(super) struct Borrowed {
    pub(super) tid: i32,
    pub(super) pid: i32,
    /// The registers as the thread stopped.
    pub(super) saved: arch::Regs,
    /// The registers handed back at the end (the original ones, or a rewound call).
    pub(super) restore: arch::Regs,
    /// Registers safe to resume from between injected calls.
    pub(super) parked: arch::Regs,
    pub(super) mask: u64,
    pub(super) site: u64,
    /// The ptrace options it was seized with.
    pub(super) options: i32,
    pub(super) started: Instant,
}

impl Borrowed {
    /// `tid` must be in a ptrace stop; its current registers are the ones to give back.
    pub(super) fn take(
        tid: i32,
        pid: i32,
        site: u64,
        options: i32,
        seccomp: Seccomp,
        started: Instant,
    ) -> Result<Self> {
        // Stopped now: from here to the give-back it runs only injected calls, which its
        // filter must not see.
        // A filter that came since the look (a sibling's TSYNC), where it cannot be suspended.
        let filtered_now =
            || read_status(&format!("/proc/{pid}/task/{tid}/status")).map_or(2, |st| st.seccomp);
        let options = match seccomp {
            Seccomp::None => match filtered_now() {
                0 => options,
                mode => {
                    refusal(pid, mode)?;
                    options
                }
            },
            Seccomp::SuspendIfAny => {
                let suspended = options | libc::PTRACE_O_SUSPEND_SECCOMP;
                match ptrace::set_options(tid, suspended) {
                    Ok(()) => suspended,
                    Err(_) => match filtered_now() {
                        0 => options,
                        mode => {
                            refusal(pid, mode)?;
                            options
                        }
                    },
                }
            }
            Seccomp::Suspend => {
                let suspended = options | libc::PTRACE_O_SUSPEND_SECCOMP;
                ptrace::set_options(tid, suspended).map_err(|e| {
                    let why = match e.raw_os_error() {
                        Some(libc::EINVAL) => "this kernel has no CONFIG_CHECKPOINT_RESTORE",
                        Some(libc::EPERM) => "it needs CAP_SYS_ADMIN in the initial user namespace",
                        _ => "the kernel refused",
                    };
                    permission(format!(
                        "PID {pid} runs under seccomp, and its filter cannot be suspended for the injected calls ({why}: {e}): use --method soft-dirty where the kernel has it"
                    ))
                })?;
                suspended
            }
        };
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
    pub(super) fn syscall(&self, nr: i64, args: [u64; 6]) -> Result<i64> {
        self.syscall_seeing(nr, args, &mut |_, _| {})
    }

    /// [`Self::syscall`], telling `on_event` of each `PTRACE_EVENT_*` stop on the way.
    pub(super) fn syscall_seeing(
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
    pub(super) fn give_back(self) -> Result<Duration> {
        let tid = self.tid;
        // Its filter applies again before it runs a single instruction of its own.
        if self.options & libc::PTRACE_O_SUSPEND_SECCOMP != 0 {
            ptrace::set_options(tid, self.options & !libc::PTRACE_O_SUSPEND_SECCOMP)
                .with_context(|| format!("restoring the seccomp filter of thread {tid}"))?;
        }
        ptrace::interrupt(tid).with_context(|| format!("interrupting thread {tid}"))?;
        resume(Resume::Run, tid, 0)?;
        loop {
            let stop = wait_stop(tid, None)?;
            let deliver = match stop {
                PtraceStop::Interrupt | PtraceStop::Group => 0,
                // A signal that became deliverable once its mask came back: deliver it with
                // the original registers in place, so its handler sees the true state.
                PtraceStop::Signal(sig) => sig,
                PtraceStop::Syscall | PtraceStop::Event(_) => {
                    resume(Resume::Run, tid, 0)?;
                    continue;
                }
                PtraceStop::Exited => bail!("the target thread {tid} exited during attach"),
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
            ptrace::detach(tid, deliver).with_context(|| format!("detaching from thread {tid}"))?;
            return Ok(self.started.elapsed());
        }
    }
}

/// A call that returned -EINTR only because its thread was ptrace-stopped (epoll_wait & co.)
/// and waits forever: running it again from its `syscall` instruction changes nothing. A
/// timed one keeps its EINTR (restarting it would lengthen the wait).
pub(super) fn eintr_only_because_stopped(pid: i32, regs: &arch::Regs) -> bool {
    arch::interrupted_syscall(regs).is_some_and(|nr| {
        arch::return_value(regs) == -i64::from(libc::EINTR)
            && EINTR_ON_STOP.contains(&(nr as i64))
            && arch::waits_forever(regs, nr as i64)
            && syscall_insn_before(pid, arch::ip(regs))
    })
}

pub(super) fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

/// Whether a signal not blocked by `mask` is pending for the thread or its process.
pub(super) fn unblocked_signal_pending(pid: i32, tid: i32, mask: u64) -> bool {
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

pub(super) fn read_u64(mem: &fs::File, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    matches!(sys::pread_full(mem.as_fd(), &mut b, addr), Ok(8)).then(|| u64::from_ne_bytes(b))
}

/// The abort handler to resume at, if the thread stopped inside an rseq critical section.
pub(super) fn rseq_abort_ip(tid: i32, pid: i32, ip: u64) -> Option<u64> {
    let conf = ptrace::rseq_configuration(tid).ok()?;
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
pub(super) fn syscall_insn_before(pid: i32, ip: u64) -> bool {
    let Ok(mem) = fs::File::open(format!("/proc/{pid}/mem")) else {
        return false;
    };
    let mut b = [0u8; 2];
    matches!(
        sys::pread_full(mem.as_fd(), &mut b, ip.wrapping_sub(2)),
        Ok(2)
    ) && b == arch::SYSCALL_INSN
}

pub(super) fn seize_error(target: &Process, tid: i32, e: io::Error) -> anyhow::Error {
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

/// How the injected calls get past the thread's seccomp filter, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seccomp {
    /// No filter: nothing to do.
    None,
    /// Suspended while the thread is borrowed (`PTRACE_O_SUSPEND_SECCOMP`, as CRIU does for
    /// its parasite), and only then: set once it is stopped, cleared before it runs its own
    /// code again, so only the injected calls escape the filter.
    Suspend,
    /// No filter seen, but one may come between the look and the stop (a program that
    /// installs it at startup, a sibling thread's TSYNC): suspended too where the kernel
    /// allows, and if it does not, the filter is looked for again once the thread is stopped.
    SuspendIfAny,
}

/// Whether thread `tid` runs under seccomp, and whether this process may suspend the filter
/// for the injected calls (CAP_SYS_ADMIN, and a kernel with CONFIG_CHECKPOINT_RESTORE, which
/// the seize tells). Without it, an injected `userfaultfd()` could be refused or kill the
/// target: refused, saying what would work.
pub(super) fn seccomp_plan(target: &Process, tid: i32) -> Result<Seccomp> {
    // Unreadable counts as filtered: never assume no filter.
    let mode =
        read_status(&format!("/proc/{}/task/{tid}/status", target.pid)).map_or(2, |st| st.seccomp);
    if has_cap_sys_admin() {
        return Ok(if mode == 0 {
            Seccomp::SuspendIfAny
        } else {
            Seccomp::Suspend
        });
    }
    if mode == 0 {
        return Ok(Seccomp::None);
    }
    refusal(target.pid, mode)
}

/// The refusal of a filtered target this process cannot suspend the filter of.
fn refusal(pid: i32, mode: u32) -> Result<Seccomp> {
    let mode = if mode == 1 {
        "in seccomp strict mode"
    } else {
        "under a seccomp filter"
    };
    Err(permission(format!(
        "PID {pid} runs {mode}, which an injected userfaultfd() could not pass: tracking it needs CAP_SYS_ADMIN (run uffd-dirty as root), which suspends the filter for the injected calls only; or use --method soft-dirty where the kernel has it"
    )))
}

/// Whether this process holds CAP_SYS_ADMIN (bit 21 of `CapEff`).
fn has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// The threads of the target in the order to try them for borrowing, each ranked once
/// (ranks read from /proc change under a running program: never compare them twice).
pub(super) fn threads_by_rank(target: &Process) -> Result<Vec<i32>> {
    let mut ranked: Vec<(u8, i32)> = target
        .threads()?
        .into_iter()
        .map(|t| (thread_rank(target.pid, t), t))
        .collect();
    ranked.sort_unstable();
    Ok(ranked.into_iter().map(|(_, t)| t).collect())
}

/// Stop a seized thread with `PTRACE_INTERRUPT`. A signal on its way in is let through, and
/// the interrupt asked for again: the signal's delivery stop may have used it up (under a
/// flood of signals the thread would otherwise run on from stop to stop).
pub(super) fn interrupt_and_wait(tid: i32, target: &Process) -> Result<()> {
    ptrace::interrupt(tid).with_context(|| format!("interrupting thread {tid}"))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match wait_stop(tid, Some(deadline)) {
            Ok(PtraceStop::Interrupt | PtraceStop::Group) => return Ok(()),
            Ok(PtraceStop::Signal(sig)) => {
                resume(Resume::Run, tid, sig)?;
                ptrace::interrupt(tid).with_context(|| format!("interrupting thread {tid}"))?;
            }
            Ok(PtraceStop::Syscall | PtraceStop::Event(_)) => resume(Resume::Run, tid, 0)?,
            Ok(PtraceStop::Exited) => bail!("PID {} exited while being attached to", target.pid),
            Err(e) => {
                // Not stopped: detach (allowed on a running tracee only once it stops, so
                // this may fail; the helper's exit then detaches it, registers untouched).
                let _ = ptrace::detach(tid, 0);
                return Err(e);
            }
        }
    }
}

/// Inject, then run `while_stopped` on the userfaultfd before the thread is given back.
pub(super) fn borrow_and_inject<T>(
    tid: i32,
    target: &Process,
    site: u64,
    options: i32,
    seccomp: Seccomp,
    started: Instant,
    while_stopped: impl FnOnce(OwnedFd) -> Result<T>,
) -> Result<Injection<T>> {
    let borrowed = match Borrowed::take(tid, target.pid, site, options, seccomp, started) {
        Ok(b) => b,
        Err(e) => {
            // Nothing was changed yet: let the thread go as it was.
            let _ = ptrace::detach(tid, 0);
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
