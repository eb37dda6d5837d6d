//! x86_64 register handling for syscall injection: the only architecture-specific code.
//!
//! `orig_rax` is the kernel's "which syscall was this thread in" slot: `-1` means none, and the
//! signal path applies syscall-restart rules only when it is `>= 0`. Every borrowed register set
//! therefore carries `orig_rax = -1`, and the real value is handed back only at a stop inside
//! `get_signal()`, where the kernel then restarts the interrupted call itself.

use crate::sys::abi::{
    self, ERESTART_RESTARTBLOCK, ERESTARTNOHAND, ERESTARTNOINTR, ERESTARTSYS, SYS_RESTART_SYSCALL,
};

pub type Regs = libc::user_regs_struct;

/// Length of the `syscall` instruction (`0f 05`).
pub const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];

const EFLAGS_TF: u64 = 1 << 8;
const EFLAGS_DF: u64 = 1 << 10;

pub use crate::sys::ptrace::{regs as get_regs, set_regs};

/// The syscall a stopped thread was inside (`orig_rax >= 0`), if any.
pub fn interrupted_syscall(regs: &Regs) -> Option<u64> {
    ((regs.orig_rax as i64) >= 0).then_some(regs.orig_rax)
}

/// The raw return value register, as a signed value (`-4095..=-1` is `-errno`).
pub fn return_value(regs: &Regs) -> i64 {
    regs.rax as i64
}

/// Registers that execute syscall `nr(args)` at the `syscall` instruction at `site`.
pub fn syscall_regs(base: &Regs, site: u64, nr: i64, args: [u64; 6]) -> Regs {
    let mut r = *base;
    r.rip = site;
    r.rax = nr as u64;
    r.orig_rax = u64::MAX; // -1: no restart handling of the borrowed state.
    r.rdi = args[0];
    r.rsi = args[1];
    r.rdx = args[2];
    r.r10 = args[3];
    r.r8 = args[4];
    r.r9 = args[5];
    r.eflags &= !(EFLAGS_TF | EFLAGS_DF);
    r
}

/// Registers safe to resume from if the tracker dies while the thread is borrowed: the
/// interrupted syscall's restart applied in place, as the kernel's signal path would do it.
pub fn parked_regs(saved: &Regs) -> Regs {
    let mut r = *saved;
    if interrupted_syscall(saved).is_some() {
        match return_value(saved) {
            e if e == -ERESTARTSYS || e == -ERESTARTNOINTR || e == -ERESTARTNOHAND => {
                r.rax = saved.orig_rax;
                r.rip -= SYSCALL_INSN.len() as u64;
            }
            e if e == -ERESTART_RESTARTBLOCK => {
                r.rax = SYS_RESTART_SYSCALL;
                r.rip -= SYSCALL_INSN.len() as u64;
            }
            _ => {}
        }
    }
    r.orig_rax = u64::MAX;
    r
}

/// Rewind a syscall that returned `-EINTR` only because its thread was ptrace-stopped
/// (epoll_wait & co.): run it again from its `syscall` instruction.
pub fn rewound_regs(saved: &Regs) -> Regs {
    let mut r = *saved;
    r.rax = saved.orig_rax;
    r.rip -= SYSCALL_INSN.len() as u64;
    r
}

/// Whether the thread runs 64-bit code (`cs` of the 64-bit user segment). A compat-mode
/// thread's `syscall` would run the i386 call with our number, so it is never borrowed.
pub fn is_64bit(regs: &Regs) -> bool {
    regs.cs == 0x33
}

/// For a call that returns `-EINTR` when its thread is ptrace-stopped: whether it waits with
/// no timeout, so that running it again from the start changes nothing.
pub fn waits_forever(regs: &Regs, nr: i64) -> bool {
    match nr {
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait => (regs.r10 as i32) < 0,
        libc::SYS_epoll_pwait2 | libc::SYS_semtimedop => regs.r10 == 0,
        libc::SYS_semop => true,
        libc::SYS_rt_sigtimedwait => regs.rdx == 0,
        libc::SYS_io_getevents | abi::SYS_IO_PGETEVENTS => regs.r8 == 0,
        _ => false,
    }
}

/// Point the thread at `ip` (an rseq abort handler).
pub fn set_ip(regs: &mut Regs, ip: u64) {
    regs.rip = ip;
}

/// The instruction pointer, where a `syscall` instruction would be at `rip - 2`.
pub fn ip(regs: &Regs) -> u64 {
    regs.rip
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_syscall(nr: u64, ret: i64) -> Regs {
        // SAFETY: plain integers.
        let mut r: Regs = unsafe { std::mem::zeroed() };
        r.orig_rax = nr;
        r.rax = ret as u64;
        r.rip = 0x1002;
        r
    }

    #[test]
    fn parked_applies_restart_like_the_kernel() {
        let p = parked_regs(&in_syscall(0, -ERESTARTSYS));
        assert_eq!((p.rax, p.rip, p.orig_rax), (0, 0x1000, u64::MAX));
        let p = parked_regs(&in_syscall(35, -ERESTART_RESTARTBLOCK));
        assert_eq!((p.rax, p.rip), (SYS_RESTART_SYSCALL, 0x1000));
        let p = parked_regs(&in_syscall(1, 5));
        assert_eq!((p.rax, p.rip, p.orig_rax), (5, 0x1002, u64::MAX));
    }

    #[test]
    fn injected_state_never_restarts() {
        let s = syscall_regs(
            &in_syscall(35, -ERESTART_RESTARTBLOCK),
            0x5000,
            323,
            [1, 2, 3, 4, 5, 6],
        );
        assert_eq!(
            (s.rip, s.rax, s.orig_rax, s.rdi, s.r10, s.r9),
            (0x5000, 323, u64::MAX, 1, 4, 6)
        );
    }
}
