//! Where records and reports go: stdout, an fd the caller opened for us, or a file opened so
//! that nobody else can redirect or read what we write.
//!
//! The rules for a file are the kernel's `fs.protected_*` sysctls at their strictest, applied
//! whatever the sysctls say (they are often 0 in containers, and root is not exempt here):
//!
//! - **New file**: created 0600 (`O_EXCL`), so it is ours and private.
//! - **Existing file** (`protected_regular=2`, `protected_fifos=2`): in a sticky directory that
//!   others can write (`/tmp`), a file owned neither by us nor by the directory's owner is
//!   refused: someone else planted it and could read or swap what we write. A regular file that
//!   is written is truncated, and when it is ours its group and other permissions are removed,
//!   so the trace is as private as a new one.
//! - **Symbolic links**: the last component is never followed (`O_NOFOLLOW`: name the file
//!   itself); one in a directory component is followed, as everywhere in Unix (`/tmp ->
//!   /private/tmp`), except where `protected_symlinks` would refuse it: in a sticky
//!   world-writable directory, owned neither by us nor by the directory's owner. The walk is
//!   done one component at a time on directory fds, so what is checked is what is opened.
//! - **FIFO**: a legitimate output (`mkfifo f; reader < f & track -o f`), but opening one waits
//!   for a reader, and a blocked `open` is restarted after our signal handlers run
//!   (`SA_RESTART`). So it is opened non-blocking, and retried until a reader comes or a stop is
//!   requested (SIGINT, SIGTERM), which ends the wait as [`Stopped`].
//!
//! `-`, `/dev/stdout`, `/dev/stderr`, `/dev/fd/N` and `/proc/self/fd/N` name fds we already
//! have (as `strace -o` and `perf -o` accept them): they are duplicated, not reopened, so an
//! append-mode stdout (`>> log`) is appended to and not truncated.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, FcntlArg, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat};

use crate::stop::Stop;

/// What `--output` (or `report -o`) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    /// An fd of ours other than stdout (`/dev/stderr`, `/proc/self/fd/N`).
    Fd(i32),
    File(PathBuf),
}

impl Destination {
    pub fn of(path: Option<&Path>) -> Destination {
        let Some(path) = path else {
            return Destination::Stdout;
        };
        let text = path.to_str().unwrap_or_default();
        let fd = match text {
            "-" | "/dev/stdout" => Some(1),
            "/dev/stderr" => Some(2),
            _ => ["/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"]
                .iter()
                .find_map(|dir| text.strip_prefix(dir))
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok()),
        };
        match fd {
            Some(1) => Destination::Stdout,
            Some(n) => Destination::Fd(n),
            None => Destination::File(path.to_path_buf()),
        }
    }

    pub fn is_stdout(&self) -> bool {
        *self == Destination::Stdout
    }
}

/// An open destination.
pub struct Sink {
    pub writer: Box<dyn Write>,
    /// A duplicate of the fd written to, to be polled for its reader going away (POLLERR on a
    /// pipe whose read end closed); `None` if there is no such fd (stdout closed).
    pub watch: Option<OwnedFd>,
}

/// A stop was requested while waiting for a FIFO's reader: nothing was written.
#[derive(Debug, thiserror::Error)]
#[error("stopped while waiting for a reader of the FIFO {0}")]
pub struct Stopped(pub String);

/// Open `dest` for writing. `stop`: a FIFO waits for its reader until a stop is requested;
/// without one (no signal handlers installed: a signal kills us), it waits in `open`.
pub fn open(dest: &Destination, stop: Option<&Stop>) -> io::Result<Sink> {
    let (writer, watch): (Box<dyn Write>, _) = match dest {
        Destination::Stdout => (
            Box::new(io::BufWriter::new(io::stdout())),
            crate::os::dup_raw(1).ok(),
        ),
        Destination::Fd(n) => {
            let fd = crate::os::dup_raw(*n)
                .map_err(|e| io::Error::new(e.kind(), format!("fd {n} is not open ({e})")))?;
            let watch = fd.try_clone().ok();
            (Box::new(io::BufWriter::new(File::from(fd))), watch)
        }
        Destination::File(path) => {
            let file = open_file(path, stop)?;
            let watch = file.try_clone().ok().map(OwnedFd::from);
            (Box::new(io::BufWriter::new(file)), watch)
        }
    };
    Ok(Sink { writer, watch })
}

fn err(errno: Errno, what: String) -> io::Error {
    io::Error::new(io::Error::from(errno).kind(), what)
}

/// Whether a directory with `dir` is sticky and writable by others than its owner: world
/// (`world_only`), or group or world.
fn shared_sticky(dir: &FileStat, world_only: bool) -> bool {
    let others = if world_only { 0o002 } else { 0o022 };
    dir.st_mode & libc::S_ISVTX != 0 && dir.st_mode & others != 0
}

fn ours(uid: u32) -> bool {
    uid == crate::os::euid()
}

/// The directory holding `path`'s last component, reached one component at a time (symbolic
/// links followed as the kernel would, except those `protected_symlinks` refuses), and that
/// last component.
fn parent_of(path: &Path) -> io::Result<(OwnedFd, OsString)> {
    const MAX_LINKS: usize = 40; // the kernel's own limit
    let open_dir = |at: &OwnedFd, name: &OsStr| {
        openat(
            at,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let root = || {
        openat(
            nix::fcntl::AT_FDCWD,
            "/",
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let components = |p: &Path| -> VecDeque<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
            })
            .collect()
    };
    let mut queue = components(path);
    let last = match (path.components().next_back(), queue.pop_back()) {
        (Some(Component::Normal(_)), Some(last)) => last,
        _ => return Err(err(Errno::EISDIR, "names a directory: name a file".into())),
    };
    let mut dir = if path.is_absolute() {
        root()?
    } else {
        openat(
            nix::fcntl::AT_FDCWD,
            ".",
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?
    };
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        let fd = open_dir(&dir, &name)?;
        let st = fstat(&fd)?;
        match SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT) {
            SFlag::S_IFDIR => dir = fd,
            SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::ELOOP.into());
                }
                let parent = fstat(&dir)?;
                if shared_sticky(&parent, true) && !ours(st.st_uid) && st.st_uid != parent.st_uid {
                    return Err(err(
                        Errno::EACCES,
                        format!(
                            "its directory component {} is a symbolic link of user {} in a sticky world-writable directory, which is not followed (as fs.protected_symlinks does): name the real directory",
                            name.to_string_lossy(),
                            st.st_uid
                        ),
                    ));
                }
                let target = PathBuf::from(readlinkat(&fd, "")?);
                if target.is_absolute() {
                    dir = root()?;
                }
                for c in components(&target).into_iter().rev() {
                    queue.push_front(c);
                }
            }
            _ => return Err(Errno::ENOTDIR.into()),
        }
    }
    Ok((dir, last))
}

/// Open the file `path` names for writing, by the rules in the module header.
fn open_file(path: &Path, stop: Option<&Stop>) -> io::Result<File> {
    let (dir, name) = parent_of(path)?;
    let dir_st = fstat(&dir)?;
    let name = name.as_os_str();
    let base = OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let mut waiting = false;
    loop {
        // A new file: ours, private.
        match openat(
            &dir,
            name,
            base | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::S_IRUSR | Mode::S_IWUSR,
        ) {
            Ok(fd) => return Ok(File::from(fd)),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let st = match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => continue, // removed since: create it
            r => r?,
        };
        let kind = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
        if kind == SFlag::S_IFLNK {
            return Err(err(
                Errno::ELOOP,
                format!(
                    "{} is a symbolic link: name the file itself",
                    path.display()
                ),
            ));
        }
        if shared_sticky(&dir_st, false) && !ours(st.st_uid) && st.st_uid != dir_st.st_uid {
            return Err(err(
                Errno::EACCES,
                format!(
                    "{} belongs to user {} in a sticky directory others can write, so it is not written (as fs.protected_regular does): remove it or name another file",
                    path.display(),
                    st.st_uid
                ),
            ));
        }
        let blocking = waiting && stop.is_none();
        let flags = if blocking {
            base
        } else {
            base | OFlag::O_NONBLOCK
        };
        let fd = match openat(&dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => continue,
            // A FIFO without a reader.
            Err(Errno::ENXIO) if kind == SFlag::S_IFIFO => {
                if !waiting {
                    eprintln!(
                        "uffd-dirty: waiting for a reader of the FIFO {}",
                        path.display()
                    );
                    waiting = true;
                }
                if let Some(stop) = stop {
                    let _ = crate::os::readable([stop.fd()], Duration::from_millis(20));
                    if stop.requested() {
                        return Err(io::Error::other(Stopped(path.display().to_string())));
                    }
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let now = fstat(&fd)?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            continue; // replaced between the look and the open: look again
        }
        if !blocking {
            nix::fcntl::fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty()))?;
        }
        if kind == SFlag::S_IFREG {
            nix::unistd::ftruncate(&fd, 0)?;
            if ours(now.st_uid) && now.st_mode & 0o077 != 0 {
                fchmod(&fd, Mode::from_bits_truncate(now.st_mode & 0o700))?;
            }
        }
        return Ok(File::from(fd));
    }
}

/// Whether `e` (from [`open`]) is the [`Stopped`] of a FIFO wait.
pub fn is_stopped(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.is::<Stopped>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.get_ref().is_some_and(|inner| inner.is::<Stopped>())
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_fds_we_have_are_not_files() {
        let of = |s: &str| Destination::of(Some(Path::new(s)));
        assert_eq!(Destination::of(None), Destination::Stdout);
        for s in ["-", "/dev/stdout", "/proc/self/fd/1", "/dev/fd/1"] {
            assert_eq!(of(s), Destination::Stdout, "{s}");
        }
        assert_eq!(of("/dev/stderr"), Destination::Fd(2));
        assert_eq!(of("/proc/self/fd/7"), Destination::Fd(7));
        assert_eq!(of("/dev/fd/12"), Destination::Fd(12));
        for s in [
            "/proc/self/fd/1x",
            "/proc/self/fd/",
            "./-",
            "out.json",
            "/dev/null",
        ] {
            assert_eq!(of(s), Destination::File(s.into()), "{s}");
        }
    }

    #[test]
    fn directory_symlinks_are_followed_and_the_last_component_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
        let through = dir.path().join("link/../link/./out");
        let mut f = open_file(&through, None).unwrap();
        f.write_all(b"x").unwrap();
        assert_eq!(std::fs::read(real.join("out")).unwrap(), b"x");
        std::os::unix::fs::symlink("out", real.join("last")).unwrap();
        let e = open_file(&real.join("last"), None).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert!(open_file(dir.path(), None).is_err());
    }
}
