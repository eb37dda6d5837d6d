//! The attach helper: a process of the tracker's own that borrows the target's thread.
//!
//! When a tracer dies, the kernel detaches its tracees, which resume from whatever registers
//! and signal mask they hold at that instant: on the injected `syscall` (and then the vDSO's
//! epilogue, SIGSEGV), with every signal blocked, or with the new userfaultfd still in their
//! fd table. No sequence of ptrace calls avoids every such state, so the tracker never holds
//! the ptrace relationship itself. It starts this helper (its own executable, hidden
//! subcommand `attach-helper`) in a session and process group of its own, with every signal
//! blocked, and the helper seizes, injects, closes the target's copy and gives the thread back
//! on its own, whatever happens to the tracker meanwhile; it hands the userfaultfd over a
//! unix socket (`SCM_RIGHTS`). If the tracker is gone, the send fails and the helper's copy,
//! the last one, closes: nothing was registered, so nothing is left behind.
//!
//! A launched command (`track -- CMD`) is seized by the helper before its `execve` and held
//! at the exit of that call while the tracker arms it; the tracker's "release", or the end of
//! the socket when the tracker dies, lets it go.
//!
//! Left to chance: a SIGKILL aimed at the helper itself (or the OOM killer choosing it, which
//! it asks not to) while it holds the thread.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};

use super::Injection;
use crate::error::{Failure, helper_error, permission, unsupported, usage};
use crate::process::Process;

/// The hidden subcommand that runs the helper.
const SUBCOMMAND: &str = "attach-helper";
/// Where the helper finds its end of the socket and the target's pidfd.
const SOCKET_FD: RawFd = 3;
const PIDFD_FD: RawFd = 4;
/// Largest message either side sends (a report with a one-line error).
const MAX_MESSAGE: usize = 16 << 10;

/// Helper to tracker.
#[derive(Debug, Serialize, Deserialize)]
enum Report {
    /// The first message: the helper's version, which must be the library's (the protocol
    /// is theirs alone, and changes with them).
    Hello {
        version: String,
    },
    /// The launched command is seized: it may be let go to its exec.
    Seized,
    /// The launched command reached its exec and is held there.
    AtExec,
    /// The userfaultfd travels with this message. `given_back`: the thread already has its
    /// registers back (a running target); else it waits for `Order::Release`.
    Taken {
        tid: i32,
        stopped_us: u64,
        given_back: bool,
    },
    /// The held thread was given back.
    Released {
        stopped_us: u64,
    },
    Failed {
        kind: FailureKind,
        message: String,
    },
}

/// Tracker to helper.
#[derive(Debug, Serialize, Deserialize)]
enum Order {
    Seize,
    Release,
}

/// The exit code an error asks for, carried across the socket.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum FailureKind {
    Usage,
    Permission,
    Unsupported,
    Runtime,
    /// The launched command exited before its exec completed.
    ExitedBeforeExec,
}

fn failure(e: &anyhow::Error) -> Report {
    let kind = match e.chain().find_map(|c| c.downcast_ref::<Failure>()) {
        Some(Failure::Usage(_)) => FailureKind::Usage,
        Some(Failure::Permission(_)) => FailureKind::Permission,
        Some(Failure::Unsupported(_)) => FailureKind::Unsupported,
        // The helper does not report on itself.
        Some(Failure::Helper(_)) | None => FailureKind::Runtime,
    };
    Report::Failed {
        kind,
        message: format!("{e:#}"),
    }
}

fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fd: Option<BorrowedFd<'_>>) -> Result<()> {
    let bytes = serde_json::to_vec(msg)?;
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
    // MSG_NOSIGNAL: a peer that died is an error to handle, not a SIGPIPE.
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .context("sending to the attach helper's peer")?;
    Ok(())
}

/// The next message, with the fd it carried; `None` when the peer has closed its end.
fn recv<T: for<'de> Deserialize<'de>>(
    sock: BorrowedFd<'_>,
) -> Result<Option<(T, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let (len, fd) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fd = None;
                for cmsg in msg.cmsgs().context("reading a control message")? {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg {
                        for raw in fds {
                            // SAFETY: SCM_RIGHTS installed this fd in our table just now; we
                            // are its only owner.
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            fd.get_or_insert(owned);
                        }
                    }
                }
                break (msg.bytes, fd);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)).context("receiving from the attach helper"),
        }
    };
    if len == 0 {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[..len]).context("decoding an attach helper message")?;
    Ok(Some((msg, fd)))
}

/// This library's version, which the helper's must be.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The environment variable that tells the helper which version started it.
const VERSION_ENV: &str = "UFFD_DIRTY_HELPER_FOR";

/// The environment variable that names the executable to run as the helper (the
/// `uffd-dirty` binary).
pub const PROGRAM_ENV: &str = "UFFD_DIRTY_ATTACH_HELPER";

/// The helper to run: `$UFFD_DIRTY_ATTACH_HELPER`; else `uffd-dirty` beside the running
/// program, or one directory up (a program of cargo's `examples/` or `deps/`); else
/// `uffd-dirty` in `PATH`. The uffd-dirty binary finds itself beside itself.
fn program() -> std::ffi::OsString {
    const NAME: &str = "uffd-dirty";
    if let Some(p) = std::env::var_os(PROGRAM_ENV) {
        return p;
    }
    let exe = std::env::current_exe().ok();
    if exe
        .as_ref()
        .and_then(|e| e.file_name())
        .is_some_and(|n| n == NAME)
    {
        return "/proc/self/exe".into();
    }
    let beside = exe
        .iter()
        .flat_map(|e| e.ancestors().skip(1).take(2))
        .map(|dir| dir.join(NAME))
        .find(|p| p.is_file());
    match beside {
        Some(p) => p.into(),
        None => NAME.into(),
    }
}

/// What a helper attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperFor {
    /// A running process: borrow a thread, take the userfaultfd, give the thread back.
    Running,
    /// A launched command not yet exec'd: seize it on order, and take the userfaultfd at its
    /// exec stop, holding it until the tracker has armed it.
    Launched,
}

/// The tracker's handle on a running helper.
pub struct Helper {
    child: Child,
    sock: OwnedFd,
    pid: i32,
}

impl Helper {
    /// Start a helper for `target`.
    pub fn start(
        target_pid: i32,
        target_pidfd: BorrowedFd<'_>,
        target: HelperFor,
    ) -> Result<Helper> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("creating the attach helper's socket")?;
        let (sock_fd, pidfd) = (theirs.as_raw_fd(), target_pidfd.as_raw_fd());
        let mut cmd = Command::new(program());
        cmd.arg(SUBCOMMAND)
            .arg("--pid")
            .arg(target_pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if target == HelperFor::Launched {
            cmd.arg("--launched");
        }
        cmd.env(VERSION_ENV, VERSION);
        // SAFETY: between fork and exec only async-signal-safe calls (dup2, setsid,
        // sigprocmask) on integers prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Its own session and process group: a Ctrl-C or a hang-up aimed at the
                // tracker's terminal never reaches it; and every catchable signal blocked.
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                // Each source first out of the way (one may already sit at 3 or 4, where the
                // other's dup2 would close it); the close-on-exec copies go at exec, and dup2
                // clears close-on-exec on the ones at 3 and 4.
                for (from, to) in [(sock_fd, SOCKET_FD), (pidfd, PIDFD_FD)]
                    .map(|(from, to)| (libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 10), to))
                {
                    if from < 0 || libc::dup2(from, to) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
                Ok(())
            });
        }
        let program = cmd.get_program().to_owned();
        let child = cmd.spawn().map_err(|e| {
            helper_error(format!(
                "cannot start the attach helper {program:?} ({e}): install uffd-dirty {VERSION} in PATH, or name its binary in ${PROGRAM_ENV}"
            ))
        })?;
        drop(theirs);
        let pid = child.id() as i32;
        let mut helper = Helper {
            child,
            sock: ours,
            pid,
        };
        helper.hello(&program)?;
        Ok(helper)
    }

    /// The helper's first message: its version must be ours.
    fn hello(&mut self, program: &std::ffi::OsStr) -> Result<()> {
        let mismatch = |theirs: &str| {
            helper_error(format!(
                "the attach helper {program:?} is {theirs}, this library is uffd-dirty {VERSION}: install uffd-dirty {VERSION}, or name its binary in ${PROGRAM_ENV}"
            ))
        };
        match recv(self.sock.as_fd()) {
            Ok(Some((Report::Hello { version }, _))) if version == VERSION => Ok(()),
            Ok(Some((Report::Hello { version }, _))) => {
                // It saw our version too, and touched nothing.
                let _ = self.child.wait();
                Err(mismatch(&format!("uffd-dirty {version}")))
            }
            // Not a helper of this protocol (an older uffd-dirty), or not a helper at all.
            _ => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(mismatch("not a helper of this version"))
            }
        }
    }

    fn order(&self, order: Order) -> Result<()> {
        send(self.sock.as_fd(), &order, None)
    }

    /// The next report; a failure report or the helper's death is an error.
    fn report(&mut self) -> Result<(Report, Option<OwnedFd>)> {
        match recv(self.sock.as_fd())? {
            Some((Report::Failed { kind, message }, _)) => Err(self.failed(kind, message)),
            Some(r) => Ok(r),
            None => {
                let status = self.child.wait().ok();
                bail!(
                    "the attach helper (PID {}) ended without finishing ({}); the target may need checking",
                    self.pid,
                    status.map_or("status unknown".into(), |s| s.to_string())
                )
            }
        }
    }

    fn failed(&mut self, kind: FailureKind, message: String) -> anyhow::Error {
        let _ = self.child.wait();
        match kind {
            FailureKind::Usage => usage(message),
            FailureKind::Permission => permission(message),
            FailureKind::Unsupported => unsupported(message),
            FailureKind::Runtime => anyhow!(message),
            FailureKind::ExitedBeforeExec => anyhow::Error::new(ExitedBeforeExec),
        }
    }

    /// Running target: the userfaultfd, its thread already given back.
    pub fn take(mut self) -> Result<Injection<OwnedFd>> {
        match self.report()? {
            (
                Report::Taken {
                    tid,
                    stopped_us,
                    given_back: true,
                },
                Some(fd),
            ) => {
                let _ = self.child.wait();
                Ok(Injection {
                    value: fd,
                    tid,
                    stopped: Duration::from_micros(stopped_us),
                })
            }
            (r, _) => bail!("the attach helper said {r:?} out of turn"),
        }
    }

    /// Launched command: have it seized, and say when the tracker may let it exec.
    pub fn seize(&mut self) -> Result<()> {
        self.order(Order::Seize)?;
        match self.report()? {
            (Report::Seized, _) => Ok(()),
            (r, _) => bail!("the attach helper said {r:?} out of turn"),
        }
    }

    /// Launched command: wait until it is held at its exec. Fails with [`ExitedBeforeExec`]
    /// when it exited instead (exec failed).
    pub fn wait_exec(&mut self) -> Result<()> {
        match self.report()? {
            (Report::AtExec, _) => Ok(()),
            (r, _) => bail!("the attach helper said {r:?} out of turn"),
        }
    }

    /// Launched command held at its exec: run `arm` on its userfaultfd, then let it go.
    pub fn take_after_exec<T>(
        &mut self,
        arm: impl FnOnce(OwnedFd) -> Result<T>,
    ) -> Result<Injection<T>> {
        let (tid, fd) = match self.report()? {
            (
                Report::Taken {
                    tid,
                    given_back: false,
                    ..
                },
                Some(fd),
            ) => (tid, fd),
            (r, _) => bail!("the attach helper said {r:?} out of turn"),
        };
        let value = arm(fd);
        // Released whatever arming did: on an error the caller kills the command.
        self.order(Order::Release)?;
        let stopped = match self.report()? {
            (Report::Released { stopped_us }, _) => Duration::from_micros(stopped_us),
            (r, _) => bail!("the attach helper said {r:?} out of turn"),
        };
        let _ = self.child.wait();
        Ok(Injection {
            value: value?,
            tid,
            stopped,
        })
    }

    /// The helper's PID (a launched command names it as its permitted tracer under Yama).
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing our end tells a helper holding a command to let it go; it then exits.
        // SAFETY: shutdown(2) on a socket we own.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = self.child.wait();
    }
}

/// The launched command exited before its exec completed (the exec failed).
#[derive(Debug, thiserror::Error)]
#[error("the command exited before it could be attached to")]
pub struct ExitedBeforeExec;

/// `uffd-dirty attach-helper`: do the attach the tracker asked for, whatever becomes of it.
pub fn serve(pid: i32, launched: bool) -> Result<()> {
    // Started with every signal blocked; keep it so whoever started us.
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None);
    // Ask the OOM killer to pass us by while we hold a thread (only root may lower it).
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    let sock = inherited_socket()?;
    let hello = Report::Hello {
        version: VERSION.to_string(),
    };
    // The library that started us is gone if this fails: nothing to do.
    send(sock.as_fd(), &hello, None)?;
    // Another version's library: it refuses us on our hello; touch nothing.
    if std::env::var_os(VERSION_ENV).is_some_and(|v| v != VERSION) {
        return Ok(());
    }
    let outcome = match pidfd_pid(PIDFD_FD) {
        Some(found) if found == pid => {
            // SAFETY: fd 4 is the pidfd the tracker passed (checked just above), ours now.
            let pidfd = unsafe { OwnedFd::from_raw_fd(PIDFD_FD) };
            let target = Process { pid, pidfd };
            attach(&target, sock.as_fd(), launched)
        }
        // A pidfd whose process has been reaped names no PID.
        Some(_) => Err(anyhow!("PID {pid} exited while being attached to")),
        None => Err(usage(format!(
            "{SUBCOMMAND}: fd {PIDFD_FD} is not a pidfd of PID {}",
            pid
        ))),
    };
    // A failure is the tracker's to say. If the tracker is gone, nobody is listening: the
    // thread was given back (or never taken), so there is nothing to say either.
    if let Err(e) = &outcome {
        let _ = send(sock.as_fd(), &failure(e), None);
    }
    Ok(())
}

fn attach(target: &Process, sock: BorrowedFd<'_>, launched: bool) -> Result<()> {
    if launched {
        return serve_launched(target, sock);
    }
    let inj = super::userfaultfd::take_userfaultfd_here(target)?;
    send(
        sock,
        &Report::Taken {
            tid: inj.tid,
            stopped_us: inj.stopped.as_micros() as u64,
            given_back: true,
        },
        Some(inj.value.as_fd()),
    )
}

fn serve_launched(target: &Process, sock: BorrowedFd<'_>) -> Result<()> {
    match recv::<Order>(sock)? {
        Some((Order::Seize, _)) => {}
        // The tracker is gone or changed its mind: the command runs on untouched.
        _ => return Ok(()),
    }
    super::seize_for_exec(target.pid)?;
    send(sock, &Report::Seized, None)?;
    if !super::wait_exec_stop(target.pid)? {
        let _ = send(
            sock,
            &Report::Failed {
                kind: FailureKind::ExitedBeforeExec,
                message: String::new(),
            },
            None,
        );
        return Ok(());
    }
    // A send that fails here means the tracker died: go on, so the command is let go.
    let _ = send(sock, &Report::AtExec, None);
    let inj = super::userfaultfd::take_userfaultfd_after_exec_here(target, |fd| {
        let _ = send(
            sock,
            &Report::Taken {
                tid: target.pid,
                stopped_us: 0,
                given_back: false,
            },
            Some(fd.as_fd()),
        );
        drop(fd);
        // The tracker arms the command meanwhile; its order, or its death, ends the wait.
        let _ = recv::<Order>(sock);
        Ok(())
    })?;
    let _ = send(
        sock,
        &Report::Released {
            stopped_us: inj.stopped.as_micros() as u64,
        },
        None,
    );
    Ok(())
}

/// Fd 3, if it is the socket the tracker passes (never run by hand).
fn inherited_socket() -> Result<OwnedFd> {
    let mut kind: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_TYPE writes one int to a buffer of that size.
    let r = unsafe {
        libc::getsockopt(
            SOCKET_FD,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 || kind != libc::SOCK_SEQPACKET {
        return Err(usage(format!(
            "{SUBCOMMAND} is started by `uffd-dirty track` itself and cannot be run by hand"
        )));
    }
    // SAFETY: fd 3 is the socket our parent passed us, owned by nobody else in this process.
    Ok(unsafe { OwnedFd::from_raw_fd(SOCKET_FD) })
}

/// The PID a pidfd refers to (`Pid:` in its fdinfo); `None` for any other fd.
fn pidfd_pid(fd: RawFd) -> Option<i32> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    if link.to_str() != Some("anon_inode:[pidfd]") {
        return None;
    }
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()
}
