//! The target's userfaultfd once the tracker holds it: what the kernel offers, the async
//! write-protect handshake, and per-range registration.
//!
//! Closing the fd (dropping [`Uffd`]) is the detach: the kernel unregisters every range and
//! clears every uffd-wp bit, so the target is left exactly as it was.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};

use crate::error::unsupported;
use crate::maps::Span;
use crate::sys::pagemap::{Categories, NO_REGION, Scan};
use crate::sys::{self, abi};

/// What the running kernel offers for async write-protect tracking.
#[derive(Debug, Clone, Copy)]
pub struct KernelSupport {
    /// The `UFFDIO_API` features available (a throwaway handshake with `features = 0`).
    pub features: u64,
    /// `PAGEMAP_SCAN` exists on `/proc/PID/pagemap`.
    pub pagemap_scan: bool,
    /// The mid-2026 "written state for PMD holes" fix: PAGEMAP_SCAN reports and arms empty
    /// page-table ranges of uffd-wp VMAs, so it can do the initial protection.
    pub pmd_hole_fix: bool,
}

impl KernelSupport {
    pub fn wp_async(&self) -> bool {
        self.features & abi::UFFD_FEATURE_WP_ASYNC != 0
    }

    pub fn wp_unpopulated(&self) -> bool {
        self.features & abi::UFFD_FEATURE_WP_UNPOPULATED != 0
    }

    /// Fail with a one-line explanation unless async tracking can work.
    pub fn require_async_wp(&self) -> Result<()> {
        if !self.wp_async() || !self.wp_unpopulated() || !self.pagemap_scan {
            let missing: Vec<&str> = [
                (!self.wp_async(), "UFFD_FEATURE_WP_ASYNC"),
                (!self.wp_unpopulated(), "UFFD_FEATURE_WP_UNPOPULATED"),
                (!self.pagemap_scan, "the PAGEMAP_SCAN ioctl"),
            ]
            .into_iter()
            .filter_map(|(miss, name)| miss.then_some(name))
            .collect();
            return Err(unsupported(format!(
                "this kernel ({}) lacks {}: async write-protect tracking needs Linux 6.7 or newer",
                kernel_release(),
                missing.join(", ")
            )));
        }
        Ok(())
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| "unknown".into(),
        |u| u.release().to_string_lossy().into_owned(),
    )
}

/// Probe the kernel in the tracker's own process, before touching any target. Probed once
/// per process: what the running kernel offers does not change.
pub fn probe() -> Result<KernelSupport> {
    static PROBED: std::sync::OnceLock<KernelSupport> = std::sync::OnceLock::new();
    if let Some(s) = PROBED.get() {
        return Ok(*s);
    }
    let s = probe_now()?;
    Ok(*PROBED.get_or_init(|| s))
}

fn probe_now() -> Result<KernelSupport> {
    let fd = match sys::userfaultfd_local() {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            return Err(unsupported(
                "this kernel has no userfaultfd(2) (built without CONFIG_USERFAULTFD)",
            ));
        }
        Err(e) => return Err(e).context("creating a probe userfaultfd"),
    };
    let api =
        sys::uffdio_api(fd.as_fd(), 0).context("UFFDIO_API handshake on a probe userfaultfd")?;
    drop(fd);
    let pagemap = File::open("/proc/self/pagemap").context("opening /proc/self/pagemap")?;
    // An empty range validates every argument and walks nothing.
    let pagemap_scan = match Scan::pages().run(pagemap.as_fd(), 0..0, &mut []) {
        Ok(_) => true,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => false,
        Err(e) => return Err(e).context("probing PAGEMAP_SCAN"),
    };
    let mut support = KernelSupport {
        features: api.features,
        pagemap_scan,
        pmd_hole_fix: false,
    };
    if support.wp_async() && pagemap_scan {
        support.pmd_hole_fix = probe_pmd_hole_fix(&pagemap).unwrap_or(false);
    }
    Ok(support)
}

/// Self-test for the PMD-hole fix: register an untouched, 2 MiB-aligned stretch of our own
/// memory (no page table behind it) and see whether a harvest reports it written.
fn probe_pmd_hole_fix(pagemap: &File) -> Result<bool> {
    const HUGE: u64 = 2 << 20;
    let uffd = sys::userfaultfd_local()?;
    sys::uffdio_api(
        uffd.as_fd(),
        abi::UFFD_FEATURE_WP_ASYNC | abi::UFFD_FEATURE_WP_UNPOPULATED,
    )?;
    let map = sys::AnonMapping::new(2 * HUGE as usize, libc::MAP_NORESERVE)?;
    let start = (map.addr() + HUGE - 1) & !(HUGE - 1);
    sys::uffdio_register_wp(uffd.as_fd(), start, HUGE)?;
    let mut regions = [NO_REGION; 4];
    let harvest = Scan::pages()
        .all_of(Categories::WRITTEN)
        .report(Categories::WRITTEN)
        .write_protect()
        .run(pagemap.as_fd(), start..start + HUGE, &mut regions)?;
    let reported: u64 = harvest.regions.iter().map(|r| r.end - r.start).sum();
    Ok(reported == HUGE)
}

/// Why a range could not be registered, in words for the start record and stderr.
pub fn register_failure_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EINVAL) => {
            "cannot be registered with userfaultfd (special or droppable mapping)".into()
        }
        Some(libc::EPERM) => {
            "shared mapping of a file opened read-only: never writable (no VM_MAYWRITE)".into()
        }
        Some(libc::EBUSY) => {
            "already registered by another userfaultfd: another uffd-dirty (or other tracker) on this process, or the program's own"
                .into()
        }
        _ => format!("registration failed: {e}"),
    }
}

/// The target's userfaultfd, after the async write-protect handshake.
pub struct Uffd {
    fd: OwnedFd,
}

impl Uffd {
    /// Enable `WP_ASYNC | WP_UNPOPULATED` on a fresh userfaultfd.
    pub fn handshake(fd: OwnedFd) -> Result<Uffd> {
        sys::uffdio_api(
            fd.as_fd(),
            abi::UFFD_FEATURE_WP_ASYNC | abi::UFFD_FEATURE_WP_UNPOPULATED,
        )
        .context("UFFDIO_API with WP_ASYNC | WP_UNPOPULATED")?;
        Ok(Uffd { fd })
    }

    /// Register `span` for async write-protect tracking. All or nothing over the span.
    pub fn register(&self, span: Span) -> io::Result<()> {
        let ioctls = sys::uffdio_register_wp(self.fd.as_fd(), span.start, span.len())?;
        if ioctls & abi::UFFDIO_WRITEPROTECT_BIT == 0 {
            // Registered, but the kernel cannot write-protect it: give it back.
            let _ = sys::uffdio_unregister(self.fd.as_fd(), span.start, span.len());
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }

    /// Unregister `span`: the kernel clears the protection of its pages.
    pub fn unregister(&self, span: Span) -> io::Result<()> {
        sys::uffdio_unregister(self.fd.as_fd(), span.start, span.len())
    }

    /// Write-protect a registered span with `UFFDIO_WRITEPROTECT` (marks empty slots too).
    pub fn writeprotect(&self, span: Span) -> io::Result<()> {
        sys::uffdio_writeprotect(self.fd.as_fd(), span.start, span.len())
    }
}
