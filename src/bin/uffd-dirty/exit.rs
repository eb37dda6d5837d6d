//! Exit codes and the typed errors that select them.
//!
//! Everything else travels as `anyhow::Error`; `main` looks for a [`Failure`] in the chain to
//! pick the code. The codes are documented in the man page's EXIT STATUS section.

use std::fmt;

/// `EX_UNAVAILABLE` from sysexits.h (libc has no `EX_*` constants).
pub const EX_UNAVAILABLE: u8 = 69;
/// `EX_NOPERM` from sysexits.h.
pub const EX_NOPERM: u8 = 77;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success,
    RuntimeError,
    UsageError,
    KernelUnsupported,
    PermissionDenied,
    /// The launched command's own status (`-- CMD` mode), as `time` and `strace` report it.
    Command(u8),
}

impl From<ExitCode> for u8 {
    fn from(code: ExitCode) -> u8 {
        match code {
            ExitCode::Success => 0,
            ExitCode::RuntimeError => 1,
            ExitCode::UsageError => 2,
            ExitCode::KernelUnsupported => EX_UNAVAILABLE,
            ExitCode::PermissionDenied => EX_NOPERM,
            ExitCode::Command(c) => c,
        }
    }
}

/// A usage error, for the exit code 2: the library's [`uffd_dirty::Error::BadInput`].
pub fn usage(msg: impl fmt::Display) -> anyhow::Error {
    uffd_dirty::Error::BadInput(msg.to_string()).into()
}

/// A missing kernel feature, for the exit code 69.
pub fn unsupported(msg: impl fmt::Display) -> anyhow::Error {
    uffd_dirty::Error::Unsupported(msg.to_string()).into()
}

/// The exit code an error chain asks for: the first [`Failure`] found, else a runtime error.
pub fn code_for(err: &anyhow::Error) -> ExitCode {
    err.chain()
        .find_map(|e| match e.downcast_ref::<uffd_dirty::Error>()? {
            uffd_dirty::Error::BadInput(_) => Some(ExitCode::UsageError),
            uffd_dirty::Error::NotPermitted(_) => Some(ExitCode::PermissionDenied),
            uffd_dirty::Error::Unsupported(_) => Some(ExitCode::KernelUnsupported),
            _ => None,
        })
        .unwrap_or(ExitCode::RuntimeError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_map_to_documented_numbers() {
        assert_eq!(u8::from(ExitCode::Success), 0);
        assert_eq!(u8::from(ExitCode::RuntimeError), 1);
        assert_eq!(u8::from(ExitCode::UsageError), 2);
        assert_eq!(u8::from(ExitCode::KernelUnsupported), 69);
        assert_eq!(u8::from(ExitCode::PermissionDenied), 77);
        assert_eq!(u8::from(ExitCode::Command(3)), 3);
    }

    #[test]
    fn code_is_found_under_context() {
        let e: anyhow::Result<()> = Err(uffd_dirty::Error::NotPermitted("nope".into()).into());
        let e = e.context("attaching to PID 1").unwrap_err();
        assert_eq!(code_for(&e), ExitCode::PermissionDenied);
        assert_eq!(code_for(&anyhow::anyhow!("plain")), ExitCode::RuntimeError);
    }
}
