//! The tracked process: held by pidfd so a recycled PID is never mistaken for it, and checked
//! up front so that refusals happen before anything touches it.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};

use crate::error::usage;
use crate::sys;

/// `PF_KTHREAD` in the flags field of `/proc/PID/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

pub struct Process {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// The fields of `/proc/PID[/task/TID]/status` the tracker looks at.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub name: String,
    pub state: char,
    pub tgid: i32,
    pub tracer_pid: i32,
    pub seccomp: u32,
    /// Page-table memory of the process, KiB (`VmPTE`).
    pub vm_pte_kib: u64,
    /// Peak resident memory of the address space, KiB (`VmHWM`).
    pub vm_hwm_kib: u64,
}

/// A `/proc` value in kB (`  1234 kB`), 0 if it is not one.
pub(crate) fn kib(value: &str) -> u64 {
    value.trim_end_matches("kB").trim().parse().unwrap_or(0)
}

/// A `/proc` file of the target's as text. Not `read_to_string`: the target names itself
/// (`comm`, in `status` and `stat`), and a name need not be UTF-8, which must neither stop
/// the tracker nor make the file unreadable; what is not UTF-8 becomes U+FFFD.
pub fn read_proc(path: impl AsRef<std::path::Path>) -> io::Result<String> {
    Ok(String::from_utf8_lossy(&fs::read(path)?).into_owned())
}

pub fn read_status(path: &str) -> io::Result<Status> {
    let bytes = fs::read(path)?;
    let mut st = Status::default();
    for line in bytes.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (key, value) = (&line[..colon], &line[colon + 1..]);
        if key == b"Name" {
            // The target's own name, bytes it chose: kept printable (`maps::name_text`).
            st.name = crate::maps::name_text(value.trim_ascii());
            continue;
        }
        let value = String::from_utf8_lossy(value);
        let value = value.trim();
        match key {
            b"State" => st.state = value.chars().next().unwrap_or('?'),
            b"Tgid" => st.tgid = value.parse().unwrap_or(0),
            b"TracerPid" => st.tracer_pid = value.parse().unwrap_or(0),
            b"Seccomp" => st.seccomp = value.parse().unwrap_or(0),
            b"VmPTE" => st.vm_pte_kib = kib(value),
            b"VmHWM" => st.vm_hwm_kib = kib(value),
            _ => {}
        }
    }
    Ok(st)
}

fn is_kernel_thread(pid: i32) -> io::Result<bool> {
    let stat = read_proc(format!("/proc/{pid}/stat"))?;
    // The comm field may hold spaces and parentheses: fields resume after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let flags: u64 = rest
        .split_whitespace()
        .nth(6)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    Ok(flags & PF_KTHREAD != 0)
}

/// This program's name, for messages about itself (`uffd-dirty`, or the program using the
/// library).
fn own_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "the tracking process".into())
}

impl Process {
    /// Open `pid` for tracking, refusing targets that cannot or must not be attached to.
    pub fn open(pid: i32) -> Result<Process> {
        if pid <= 0 {
            return Err(usage(format!(
                "invalid PID {pid}: expected a positive process ID"
            )));
        }
        if pid as u32 == std::process::id() {
            return Err(usage(format!(
                "PID {pid} is {} itself: a tracker cannot track its own memory",
                own_name()
            )));
        }
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(usage(format!(
                    "no process with PID {pid}: check the PID (ps -p {pid})"
                )));
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {
                let tgid = read_status(&format!("/proc/{pid}/status"))
                    .map(|s| s.tgid)
                    .unwrap_or(0);
                return Err(usage(format!(
                    "PID {pid} is a thread, not a process: pass its process ID{}",
                    if tgid > 0 {
                        format!(" ({tgid})")
                    } else {
                        String::new()
                    }
                )));
            }
            Err(e) => return Err(e).with_context(|| format!("pidfd_open({pid})")),
        };
        let target = Process { pid, pidfd };
        let status = read_status(&target.proc_path("status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        if is_kernel_thread(pid).unwrap_or(false) {
            return Err(usage(format!(
                "PID {pid} ({}) is a kernel thread: it has no user memory to track",
                status.name
            )));
        }
        // A zombie leader with live threads is still a process with memory.
        let live_threads = || {
            target.threads().unwrap_or_default().iter().any(|t| {
                read_status(&format!("/proc/{pid}/task/{t}/status"))
                    .is_ok_and(|s| !matches!(s.state, 'Z' | 'X'))
            })
        };
        if (status.state == 'Z' || status.state == 'X') && !live_threads() {
            return Err(usage(format!(
                "PID {pid} ({}) is a zombie: it has exited and has no memory left to track",
                status.name
            )));
        }
        // Reading its maps needs the same ptrace access as attaching: fail early and clearly.
        if let Err(e) = File::open(target.proc_path("maps"))
            && matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM))
        {
            return Err(crate::error::permission(format!(
                "not permitted to trace PID {pid} ({}): run as the same user as the target (and the target must be dumpable), or grant CAP_SYS_PTRACE{}",
                status.name,
                crate::attach::yama_hint()
            )));
        }
        target.check_alive()?;
        Ok(target)
    }

    /// Another handle on the same process (its pidfd duplicated).
    pub fn try_clone(&self) -> Result<Process> {
        Ok(Process {
            pid: self.pid,
            pidfd: self.pidfd.try_clone().context("duplicating a pidfd")?,
        })
    }

    pub fn proc_path(&self, name: &str) -> String {
        format!("/proc/{}/{name}", self.pid)
    }

    /// Fails once the process has exited. Called after opening a `/proc/PID` file, it proves
    /// the file belongs to the pidfd's process, not to a later one that reused the PID.
    /// A zombie counts as exited: its pidfd is readable, though signal 0 still reaches it.
    pub fn check_alive(&self) -> Result<()> {
        // Signal 0 needs kill permission: EPERM still proves the process exists.
        match sys::pidfd_alive(self.pidfd.as_fd()) {
            Err(e) if e.raw_os_error() != Some(libc::EPERM) => {
                return Err(e).with_context(|| format!("PID {} has exited", self.pid));
            }
            _ => {}
        }
        if self.has_exited() {
            anyhow::bail!("PID {} has exited", self.pid);
        }
        Ok(())
    }

    /// Whether the process has exited (its pidfd polls readable), zombie or reaped.
    pub fn has_exited(&self) -> bool {
        let [exited] = sys::readable([self.pidfd.as_fd()], std::time::Duration::ZERO);
        exited
    }

    /// Whether the process has an address space now. `/proc/PID/status` has `Vm*` lines only
    /// for a task whose mm is set (`task_mem` in fs/proc/array.c). An exiting task clears it
    /// (`exit_mm`) well before its pidfd turns readable, and a cleared mm never comes back; an
    /// exec installs the new mm before it lets go of the old one (`exec_mmap`). A leader that
    /// exited before its threads has none of its own, so the threads are asked then. An error
    /// when the process is gone from /proc (reaped).
    pub fn has_mm(&self) -> io::Result<bool> {
        let has =
            |path: &str| read_proc(path).map(|text| text.lines().any(|l| l.starts_with("VmSize:")));
        if has(&self.proc_path("status"))? {
            return Ok(true);
        }
        let tids = self.threads().unwrap_or_default();
        Ok(tids
            .iter()
            .filter(|&&t| t != self.pid)
            .any(|t| has(&format!("/proc/{}/task/{t}/status", self.pid)).unwrap_or(false)))
    }

    /// Open a `/proc/PID/<name>` file of this very process.
    pub fn open_proc(&self, name: &str) -> Result<File> {
        let path = self.proc_path(name);
        let f = match File::open(&path) {
            Ok(f) => f,
            // An exiting process's files fail to open (ESRCH: its memory is gone already,
            // before its pidfd says it exited): say it exited.
            Err(e)
                if e.raw_os_error() == Some(libc::ESRCH)
                    || self.check_alive().is_err()
                    || self.has_exited() =>
            {
                anyhow::bail!("PID {} has exited", self.pid)
            }
            Err(e) => return Err(e).with_context(|| format!("opening {path}")),
        };
        self.check_alive()?;
        Ok(f)
    }

    /// The thread IDs of the process, leader first.
    pub fn threads(&self) -> Result<Vec<i32>> {
        let mut tids: Vec<i32> = fs::read_dir(self.proc_path("task"))
            .with_context(|| format!("listing threads of PID {}", self.pid))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_by_key(|&t| (t != self.pid, t));
        Ok(tids)
    }

    /// A thread of the target already traced by someone else, with its tracer.
    pub fn traced_thread(&self) -> Result<Option<(i32, i32)>> {
        for tid in self.threads()? {
            if let Ok(st) = read_status(&format!("/proc/{}/task/{tid}/status", self.pid))
                && st.tracer_pid != 0
            {
                return Ok(Some((tid, st.tracer_pid)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_has_no_address_space() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let target = Process::open(child.id() as i32).unwrap();
        assert!(target.has_mm().unwrap(), "a sleeping process has memory");
        child.kill().unwrap();
        // Not reaped: a zombie, whose pidfd is readable once its exit is complete.
        let [exited] = sys::readable([target.pidfd.as_fd()], std::time::Duration::from_secs(10));
        assert!(exited);
        let has = target.has_mm();
        child.wait().unwrap();
        assert!(!has.unwrap(), "a zombie has no memory");
    }
}
