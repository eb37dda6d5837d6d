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

mod borrow;
mod exec;
mod freeze;
pub mod helper;
mod stops;
mod userfaultfd;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

use std::time::Duration;

use crate::sys::abi;

pub use borrow::yama_hint;
pub use exec::{release_after_exec, seize_for_exec, wait_exec_stop};
pub use freeze::{Frozen, is_frozen_here};
pub use userfaultfd::take_userfaultfd;

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
