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

/// An error whose kind decides the exit code. The message is the whole one-line explanation.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad input: a flag value, a range, a PID that cannot be a target.
    #[error("{0}")]
    Usage(String),
    /// The caller may not attach (ptrace permission, Yama, capabilities).
    #[error("{0}")]
    Permission(String),
    /// The running kernel lacks something required.
    #[error("{0}")]
    Unsupported(String),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::UsageError,
            Failure::Permission(_) => ExitCode::PermissionDenied,
            Failure::Unsupported(_) => ExitCode::KernelUnsupported,
        }
    }
}

/// Shorthands that read well at the call site: `return Err(usage(format!(..)))`.
pub fn usage(msg: impl fmt::Display) -> anyhow::Error {
    Failure::Usage(msg.to_string()).into()
}

pub fn permission(msg: impl fmt::Display) -> anyhow::Error {
    Failure::Permission(msg.to_string()).into()
}

pub fn unsupported(msg: impl fmt::Display) -> anyhow::Error {
    Failure::Unsupported(msg.to_string()).into()
}

/// The exit code an error chain asks for: the first [`Failure`] found, else a runtime error.
pub fn code_for(err: &anyhow::Error) -> ExitCode {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map_or(ExitCode::RuntimeError, Failure::exit_code)
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
        let e: anyhow::Result<()> = Err(permission("nope"));
        let e = e.context("attaching to PID 1").unwrap_err();
        assert_eq!(code_for(&e), ExitCode::PermissionDenied);
        assert_eq!(code_for(&anyhow::anyhow!("plain")), ExitCode::RuntimeError);
    }
}
