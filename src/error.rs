//! What can go wrong, as [`Error`]: a variant per thing a caller can do something about
//! (ask for permission, use another kernel or method, fix its input, stop because the target
//! is gone), and the rest as one message. Inside the engine errors travel as `anyhow` chains
//! with a [`Failure`] marker where the kind matters; [`lift`] turns a chain into an [`Error`]
//! at the public surface.

use std::fmt;

/// Why a tracker's target memory went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Gone {
    /// The process exited (or is exiting: its memory is gone).
    Exited,
    /// The process ran a new program (`execve`): the memory tracked is gone, and the new
    /// image's is untracked (unless the tracker follows exec, see
    /// [`TrackerBuilder::follow_exec`](crate::TrackerBuilder::follow_exec)).
    Exec,
}

/// An error from the library. Every message is one line naming the problem and the fix.
///
/// ```
/// use uffd_dirty::{Error, Target};
/// match Target::open(-1) {
///     Err(Error::BadInput(message)) => assert!(message.contains("invalid PID")),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller may not trace the target (ptrace access mode, Yama, capabilities).
    #[error("{0}")]
    NotPermitted(String),
    /// The running kernel lacks a feature the request needs (userfaultfd's async
    /// write-protect, `PAGEMAP_SCAN`, soft-dirty).
    #[error("{0}")]
    Unsupported(String),
    /// Bad input: a PID that cannot be a target, a scope that selects nothing, an empty
    /// command line.
    #[error("{0}")]
    BadInput(String),
    /// The attach helper (the `uffd-dirty` program the library runs to attach) is missing,
    /// or of another version than the library.
    #[error("{0}")]
    Helper(String),
    /// The target's tracked memory is gone.
    #[error("PID {pid} {}", match why { Gone::Exited => "exited", Gone::Exec => "ran a new program (execve)" })]
    Gone {
        /// The target.
        pid: i32,
        /// How it went.
        why: Gone,
    },
    /// The target ran a new program and attaching to it failed (the tracker follows exec).
    #[error("re-attaching after exec: {0}")]
    AfterExec(Box<Error>),
    /// Anything else (an I/O error, the kernel refusing a call): the message carries the
    /// context, [`Error::raw_os_error`] the errno.
    #[error("{message}")]
    Failed {
        /// What failed, with its causes, on one line.
        message: String,
        /// The errno at the root of it, if there is one.
        errno: Option<i32>,
    },
}

impl Error {
    /// The errno at the root of the error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Failed { errno, .. } => *errno,
            Error::AfterExec(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The marker an engine error chain carries when its kind matters to the caller. The
/// message is the whole one-line explanation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Permission(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Helper(String),
}

/// Shorthands that read well at the call site: `return Err(usage(format!(..)))`.
pub(crate) fn usage(msg: impl fmt::Display) -> anyhow::Error {
    Failure::Usage(msg.to_string()).into()
}

pub(crate) fn permission(msg: impl fmt::Display) -> anyhow::Error {
    Failure::Permission(msg.to_string()).into()
}

pub(crate) fn unsupported(msg: impl fmt::Display) -> anyhow::Error {
    Failure::Unsupported(msg.to_string()).into()
}

pub(crate) fn helper_error(msg: impl fmt::Display) -> anyhow::Error {
    Failure::Helper(msg.to_string()).into()
}

/// An engine error chain as the public [`Error`]: the kind from its [`Failure`] marker, the
/// message from the whole chain.
pub(crate) fn lift(e: anyhow::Error) -> Error {
    let message = format!("{e:#}");
    match e.chain().find_map(|c| c.downcast_ref::<Failure>()) {
        Some(Failure::Usage(_)) => Error::BadInput(message),
        Some(Failure::Permission(_)) => Error::NotPermitted(message),
        Some(Failure::Unsupported(_)) => Error::Unsupported(message),
        Some(Failure::Helper(_)) => Error::Helper(message),
        None => Error::Failed {
            message,
            errno: e
                .chain()
                .find_map(|c| c.downcast_ref::<std::io::Error>()?.raw_os_error()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_kind_is_found_under_context() {
        let e: anyhow::Result<()> = Err(permission("nope"));
        let e = e.context("attaching to PID 1").unwrap_err();
        assert!(matches!(lift(e), Error::NotPermitted(m) if m == "attaching to PID 1: nope"));
        let io = std::io::Error::from_raw_os_error(libc::EIO);
        let e = lift(anyhow::Error::new(io).context("reading"));
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }
}
