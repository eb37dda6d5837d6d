//! ptrace(2), one typed function per request the tracker makes. Every other module sees
//! these, never a raw request number or a pointer passed as an integer.

use std::io;

use super::abi;

/// A raw request whose `addr` and `data` are integers, or pointers to buffers this module
/// owns for the duration of the call.
fn request(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<()> {
    // SAFETY: only the requests below come here, each with `data` an integer (a signal, an
    // option set) or a pointer to a live buffer of the size the request implies.
    let r = unsafe { libc::ptrace(req, tid, addr, data) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `PTRACE_SEIZE` with `options`: trace `tid` without stopping it.
pub fn seize(tid: i32, options: i32) -> io::Result<()> {
    request(libc::PTRACE_SEIZE, tid, 0, options as usize)
}

/// `PTRACE_INTERRUPT`: stop a seized thread (a `PTRACE_EVENT_STOP`).
pub fn interrupt(tid: i32) -> io::Result<()> {
    request(libc::PTRACE_INTERRUPT, tid, 0, 0)
}

/// `PTRACE_CONT`, delivering `signal` (0 for none).
pub fn cont(tid: i32, signal: i32) -> io::Result<()> {
    request(libc::PTRACE_CONT, tid, 0, signal as usize)
}

/// `PTRACE_SYSCALL`: resume until the next syscall entry or exit, delivering `signal`.
pub fn syscall(tid: i32, signal: i32) -> io::Result<()> {
    request(libc::PTRACE_SYSCALL, tid, 0, signal as usize)
}

/// `PTRACE_DETACH`, delivering `signal` (0 for none).
pub fn detach(tid: i32, signal: i32) -> io::Result<()> {
    request(libc::PTRACE_DETACH, tid, 0, signal as usize)
}

/// `PTRACE_SETOPTIONS`.
pub fn set_options(tid: i32, options: i32) -> io::Result<()> {
    request(libc::PTRACE_SETOPTIONS, tid, 0, options as usize)
}

/// `PTRACE_GETEVENTMSG`: what the last `PTRACE_EVENT_*` stop of `tid` carries.
pub fn event_message(tid: i32) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    request(
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut msg as *mut libc::c_ulong as usize,
    )?;
    Ok(msg)
}

/// `PTRACE_GETSIGMASK`: the thread's blocked-signal mask.
pub fn sigmask(tid: i32) -> io::Result<u64> {
    let mut mask = 0u64;
    request(
        abi::PTRACE_GETSIGMASK,
        tid,
        size_of::<u64>(),
        &mut mask as *mut u64 as usize,
    )?;
    Ok(mask)
}

/// `PTRACE_SETSIGMASK`.
pub fn set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    request(
        abi::PTRACE_SETSIGMASK,
        tid,
        size_of::<u64>(),
        &mask as *const u64 as usize,
    )
}

/// `PTRACE_GET_RSEQ_CONFIGURATION`: where the thread's rseq area is.
pub fn rseq_configuration(tid: i32) -> io::Result<abi::ptrace_rseq_configuration> {
    let mut conf = abi::ptrace_rseq_configuration {
        rseq_abi_pointer: 0,
        rseq_abi_size: 0,
        signature: 0,
        flags: 0,
        pad: 0,
    };
    request(
        abi::PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        size_of::<abi::ptrace_rseq_configuration>(),
        &mut conf as *mut _ as usize,
    )?;
    Ok(conf)
}

/// `PTRACE_GETREGS`: the general-purpose registers.
pub fn regs(tid: i32) -> io::Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain integers, so an all-zero value is valid.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    request(
        libc::PTRACE_GETREGS,
        tid,
        0,
        &mut regs as *mut libc::user_regs_struct as usize,
    )?;
    Ok(regs)
}

/// `PTRACE_SETREGS`.
pub fn set_regs(tid: i32, regs: &libc::user_regs_struct) -> io::Result<()> {
    request(
        libc::PTRACE_SETREGS,
        tid,
        0,
        regs as *const libc::user_regs_struct as usize,
    )
}
