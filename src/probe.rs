//! What this machine's kernel offers for dirty-page tracking, and what to fix, in the manner
//! of `criu check`: [`Support::detect`], which `uffd-dirty check` prints.
//!
//! Every item is probed in the checking process itself, never inferred from the kernel version:
//! distributions configure and backport freely, and two facts can only be learned by a round
//! trip (clear_refs "4" succeeds on kernels without soft-dirty; the PMD-hole fix has no flag).
//! Nothing here touches another process.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use anyhow::Result;
use serde::Serialize;

use crate::sys::pagemap::{Categories, Scan};
use crate::sys::{self, abi};
use crate::uffd;
use crate::{Error, Method};

/// How an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// Present and working.
    Ok,
    /// Absent or broken: `meaning` says what that costs, `fix` what to do.
    Missing,
    /// Informational: worth knowing, not a defect.
    Note,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Item {
    /// What was probed (`WP_ASYNC`, `pagemap-scan`, `soft-dirty`, ...).
    pub name: &'static str,
    /// How it stands.
    pub status: Status,
    /// What the probe found, in words.
    pub found: String,
    /// What a status other than `ok` means for tracking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meaning: Option<String>,
    /// What to do about it, when there is something to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Item {
    fn ok(name: &'static str, found: impl Into<String>) -> Item {
        Item {
            name,
            status: Status::Ok,
            found: found.into(),
            meaning: None,
            fix: None,
        }
    }

    fn missing(name: &'static str, found: impl Into<String>, meaning: &str, fix: &str) -> Item {
        Item {
            name,
            status: Status::Missing,
            found: found.into(),
            meaning: Some(meaning.into()),
            fix: Some(fix.into()),
        }
    }

    fn note(
        name: &'static str,
        found: impl Into<String>,
        meaning: &str,
        fix: Option<&str>,
    ) -> Item {
        Item {
            name,
            status: Status::Note,
            found: found.into(),
            meaning: Some(meaning.into()),
            fix: fix.map(Into::into),
        }
    }
}

/// What the kernel offers, item by item, as `uffd-dirty check --format json` prints it.
///
/// ```
/// let support = uffd_dirty::probe::Support::detect();
/// println!("{}: track {}", support.kernel, if support.track_possible { "works" } else { "cannot work" });
/// for item in &support.items {
///     println!("{:?} {} {}", item.status, item.name, item.found);
/// }
/// ```
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Support {
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// `track` can work here: WP_ASYNC, WP_UNPOPULATED and PAGEMAP_SCAN are all present.
    pub track_possible: bool,
    /// Soft-dirty really works (clear_refs round trip), so the soft-dirty method can.
    pub soft_dirty: bool,
    /// PAGEMAP_SCAN reports and arms empty page-table ranges (the 2026 fix "written state
    /// for PMD holes"): without it, a page table freed whole reads as not written.
    pub pmd_hole_fix: bool,
    /// Every item probed, in the order `check` prints them.
    pub items: Vec<Item>,
    /// Why userfaultfd tracking cannot work, when it cannot.
    #[serde(skip)]
    why_not: Option<String>,
}

impl Support {
    /// Fail with [`Error::Unsupported`] unless `method` can work on this kernel.
    pub fn require(&self, method: Method) -> Result<(), Error> {
        if method == Method::SoftDirty {
            if !self.soft_dirty {
                return Err(Error::Unsupported(format!(
                    "this kernel ({}) has no working soft-dirty tracking (built without CONFIG_MEM_SOFT_DIRTY, or not x86_64/ppc64le/s390x): use the pagemap-scan method",
                    self.kernel
                )));
            }
            return Ok(());
        }
        match &self.why_not {
            Some(why) => Err(Error::Unsupported(why.clone())),
            None => Ok(()),
        }
    }
}

/// What tracking with `method` needs of this kernel, probed once per process and cheaply (no
/// child, nothing of [`Support::detect`]'s report): `Err` with [`Error::Unsupported`] when
/// it lacks something, else whether it has the 2026 PAGEMAP_SCAN fix for empty page-table
/// ranges (without it, pages of a page table freed whole read as not written).
pub fn require(method: Method) -> Result<Tracking, Error> {
    if method == Method::SoftDirty {
        return match crate::scan::soft_dirty::works() {
            Ok(true) => Ok(Tracking { pmd_hole_fix: true }),
            Ok(false) => Err(Error::Unsupported(format!(
                "this kernel ({}) has no working soft-dirty tracking (built without CONFIG_MEM_SOFT_DIRTY, or not x86_64/ppc64le/s390x): use the pagemap-scan method",
                kernel_release()
            ))),
            Err(e) => Err(crate::error::lift(
                anyhow::Error::new(e).context("probing soft-dirty"),
            )),
        };
    }
    let support = uffd::probe().map_err(crate::error::lift)?;
    support.require_async_wp().map_err(crate::error::lift)?;
    Ok(Tracking {
        pmd_hole_fix: support.pmd_hole_fix,
    })
}

/// What [`require`] found.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Tracking {
    /// PAGEMAP_SCAN reports and arms empty page-table ranges (always true for soft-dirty,
    /// which has no such gap).
    pub pmd_hole_fix: bool,
}

/// The running kernel's release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    uffd::kernel_release()
}

impl Support {
    /// Probe everything, in the calling process (never another one).
    pub fn detect() -> Support {
        detect()
    }
}

fn detect() -> Support {
    let kernel = uffd::kernel_release();
    let mut items = vec![Item::note(
        "kernel",
        kernel.clone(),
        "async tracking needs Linux 6.7 or newer; the items below are probed, not inferred from the version",
        None,
    )];

    let syscall = sys::userfaultfd_local().map(drop);
    items.push(userfaultfd_item(&syscall));
    items.push(dev_userfaultfd_item());
    items.push(unprivileged_item());

    // The throwaway `features = 0` handshake and the PMD-hole self-test, as `track` does them.
    let support = match &syscall {
        Ok(()) => uffd::probe().map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("no userfaultfd: {e}")),
    };
    let feature = |bit: u64| {
        support
            .as_ref()
            .map(|s| s.features & bit != 0)
            .map_err(String::as_str)
    };
    let wp_async = feature(abi::UFFD_FEATURE_WP_ASYNC);
    let wp_unpopulated = feature(abi::UFFD_FEATURE_WP_UNPOPULATED);
    items.push(feature_item(
        "WP_ASYNC",
        wp_async,
        15,
        "no asynchronous write-protect: track cannot work",
        "use Linux 6.7 or newer built with CONFIG_PTE_MARKER_UFFD_WP",
    ));
    items.push(feature_item(
        "WP_UNPOPULATED",
        wp_unpopulated,
        13,
        "never-touched pages cannot be armed: track cannot work",
        "use Linux 6.7 or newer built with CONFIG_PTE_MARKER_UFFD_WP",
    ));
    items.push(feature_item(
        "WP_HUGETLBFS_SHMEM",
        feature(abi::UFFD_FEATURE_WP_HUGETLBFS_SHMEM),
        12,
        "hugetlbfs and shmem mappings cannot be write-protected: track skips them as untrackable",
        "use a kernel built with CONFIG_PTE_MARKER_UFFD_WP (5.19 or newer)",
    ));
    items.push(feature_item(
        "PAGEFAULT_FLAG_WP",
        feature(abi::UFFD_FEATURE_PAGEFAULT_FLAG_WP),
        0,
        "no userfaultfd write-protect on this architecture or build: track cannot work",
        "use x86_64 Linux 5.7+ or arm64 Linux 6.10+ with CONFIG_HAVE_ARCH_USERFAULTFD_WP",
    ));

    let scan = probe_pagemap_scan();
    let pagemap_scan = matches!(scan, Ok(Some(_)));
    items.push(pagemap_scan_item(&scan));
    items.push(categories_item(&scan));
    items.push(pmd_hole_item(&support));

    let soft_dirty = soft_dirty_round_trip();
    items.push(soft_dirty_item(&soft_dirty));

    let (pidfd_open, pidfd_getfd) = probe_pidfd();
    items.push(pidfd_open_item(&pidfd_open));
    items.push(pidfd_getfd_item(&pidfd_getfd));

    let creds = ptrace_creds();
    items.push(ptrace_item(&creds));
    items.push(yama_item(matches!(creds, Ok((_, true)))));
    items.push(suspend_seccomp_item(&probe_suspend_seccomp()));
    items.push(thp_item());
    items.push(hugetlb_item());

    let why_not = match (&syscall, uffd::probe()) {
        (Err(e), _) if e.raw_os_error() == Some(libc::ENOSYS) => {
            Some("this kernel has no userfaultfd(2) (built without CONFIG_USERFAULTFD)".into())
        }
        (_, Ok(s)) => s.require_async_wp().err().map(|e| format!("{e:#}")),
        (_, Err(e)) => Some(format!("{e:#}")),
    };
    Support {
        kernel,
        track_possible: wp_async == Ok(true) && wp_unpopulated == Ok(true) && pagemap_scan,
        soft_dirty: matches!(soft_dirty, Ok(true)),
        pmd_hole_fix: matches!(&support, Ok(s) if s.pmd_hole_fix),
        items,
        why_not,
    }
}

fn errno_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::ENOSYS) => "ENOSYS",
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOTTY) => "ENOTTY",
        _ => return e.to_string(),
    };
    format!("{name} ({e})")
}

fn userfaultfd_item(syscall: &io::Result<()>) -> Item {
    const NAME: &str = "userfaultfd";
    match syscall {
        Ok(()) => Item::ok(NAME, "userfaultfd(2) works (UFFD_USER_MODE_ONLY)"),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Item::missing(
            NAME,
            errno_name(e),
            "the kernel is built without CONFIG_USERFAULTFD, or a seccomp filter hides the call: nothing can be tracked",
            "use a kernel with CONFIG_USERFAULTFD=y, outside any sandbox that blocks userfaultfd(2)",
        ),
        Err(e) => Item::missing(
            NAME,
            errno_name(e),
            "a seccomp filter or security module denies userfaultfd(2) to this process",
            "run outside the restricting sandbox, or allow userfaultfd in its seccomp profile",
        ),
    }
}

/// `crw-------`-style rendering of a file mode.
fn mode_string(meta: &fs::Metadata) -> String {
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        'c'
    } else if ft.is_dir() {
        'd'
    } else {
        '-'
    };
    let mode = meta.mode();
    let mut s = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn dev_userfaultfd_item() -> Item {
    const NAME: &str = "/dev/userfaultfd";
    match fs::metadata(NAME) {
        Ok(meta) => Item::ok(
            NAME,
            format!(
                "present, {} ({:04o}), owner {}:{}",
                mode_string(&meta),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ),
        ),
        Err(e) => Item::note(
            NAME,
            format!("absent ({e})"),
            "not needed: uffd-dirty calls userfaultfd(2) in the target; the node exists from Linux 6.1",
            None,
        ),
    }
}

fn unprivileged_item() -> Item {
    const NAME: &str = "vm.unprivileged_userfaultfd";
    let found = match fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd") {
        Ok(v) => v.trim().to_string(),
        Err(e) => format!("absent ({e})"),
    };
    Item::note(
        NAME,
        found,
        "does not restrict uffd-dirty, whose userfaultfd is created with UFFD_USER_MODE_ONLY",
        None,
    )
}

fn feature_item(
    name: &'static str,
    available: Result<bool, &str>,
    bit: u32,
    meaning: &str,
    fix: &str,
) -> Item {
    match available {
        Ok(true) => Item::ok(name, format!("available (UFFD_FEATURE_{name}, bit {bit})")),
        Ok(false) => Item::missing(name, "not offered by UFFDIO_API", meaning, fix),
        Err(e) => Item::missing(name, format!("unknown: {e}"), meaning, fix),
    }
}

/// The categories every PAGEMAP_SCAN kernel (6.7) accepts: WPALLOWED..HUGE.
const BASE_CATEGORIES: Categories = Categories::WPALLOWED
    .union(Categories::WRITTEN)
    .union(Categories::FILE)
    .union(Categories::PRESENT)
    .union(Categories::SWAPPED)
    .union(Categories::PFNZERO)
    .union(Categories::HUGE);

/// `Some(accepted categories)` when PAGEMAP_SCAN exists, `None` when it does not.
fn probe_pagemap_scan() -> io::Result<Option<Categories>> {
    let pagemap = File::open("/proc/self/pagemap")?;
    // An empty range validates every argument and walks nothing.
    match Scan::pages().run(pagemap.as_fd(), 0..0, &mut []) {
        Ok(_) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => return Ok(None),
        Err(e) => return Err(e),
    }
    // One bit at a time: any bit outside the kernel's PM_SCAN_CATEGORIES is EINVAL.
    let mut accepted = Categories::empty();
    for category in Categories::all().iter() {
        match Scan::pages()
            .report(category)
            .run(pagemap.as_fd(), 0..0, &mut [])
        {
            Ok(_) => accepted |= category,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(accepted))
}

fn pagemap_scan_item(scan: &io::Result<Option<Categories>>) -> Item {
    const NAME: &str = "PAGEMAP_SCAN";
    const MEANING: &str = "no way to harvest and re-protect written pages: track cannot work";
    const FIX: &str = "use Linux 6.7 or newer";
    match scan {
        Ok(Some(_)) => Item::ok(NAME, "the ioctl works on /proc/self/pagemap"),
        Ok(None) => Item::missing(NAME, "ENOTTY: the ioctl is unknown", MEANING, FIX),
        Err(e) => Item::missing(
            NAME,
            format!("probe failed: {}", errno_name(e)),
            MEANING,
            FIX,
        ),
    }
}

fn category_names(categories: Categories) -> String {
    categories
        .iter_names()
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join(" ")
}

fn categories_item(scan: &io::Result<Option<Categories>>) -> Item {
    const NAME: &str = "PAGE_IS_*";
    let accepted = match scan {
        Ok(Some(mask)) => *mask,
        Ok(None) | Err(_) => {
            return Item::missing(
                NAME,
                "none: no PAGEMAP_SCAN",
                "PAGEMAP_SCAN categories cannot be used",
                "use Linux 6.7 or newer",
            );
        }
    };
    let all = Categories::all();
    let mut found = format!("{:#x}: {}", accepted.bits(), category_names(accepted));
    if accepted != all {
        found += &format!("; rejected: {}", category_names(all - accepted));
    }
    if !accepted.contains(BASE_CATEGORIES) {
        Item::missing(
            NAME,
            found,
            "PAGEMAP_SCAN rejects categories every 6.7 kernel accepts: track cannot rely on it",
            "use a mainline Linux 6.7 or newer",
        )
    } else if accepted != all {
        Item::note(
            NAME,
            found,
            "track needs only WRITTEN; SOFT_DIRTY came after 6.7 and GUARD in 6.15",
            None,
        )
    } else {
        Item::ok(NAME, found)
    }
}

fn pmd_hole_item(support: &Result<uffd::KernelSupport, String>) -> Item {
    const NAME: &str = "pmd-hole-fix";
    const MEANING: &str = "a whole THP zapped by MADV_DONTNEED, or a reclaimed page table, reads clean, so a page that became zero can be missed; track arms with UFFDIO_WRITEPROTECT instead";
    const FIX: &str = "use a kernel with the 2026 fix \"written state for PMD holes\" (in stable)";
    match support {
        Ok(s) if s.pmd_hole_fix => Item::ok(
            NAME,
            "present: PAGEMAP_SCAN reports and arms an untouched 2 MiB (self-test)",
        ),
        Ok(s) if s.wp_async() && s.pagemap_scan => Item::missing(
            NAME,
            "absent: an untouched 2 MiB read clean (self-test)",
            MEANING,
            FIX,
        ),
        Ok(_) => Item::missing(
            NAME,
            "not probed: needs WP_ASYNC and PAGEMAP_SCAN",
            MEANING,
            FIX,
        ),
        Err(e) => Item::missing(NAME, format!("not probed: {e}"), MEANING, FIX),
    }
}

/// Whether soft-dirty really works in this kernel, by round trip on a page: writing "4" to
/// `clear_refs` succeeds silently on kernels built without `CONFIG_MEM_SOFT_DIRTY`, so only
/// seeing bit 55 go from 0 (after clearing) to 1 (after a write) proves it.
///
/// Done in a child made for it: clearing soft-dirty bits is process-wide, and the calling
/// program may use them itself (a garbage collector's write barrier, a checkpointer).
pub(crate) fn soft_dirty_round_trip() -> io::Result<bool> {
    const WORKS: i32 = 0;
    const ABSENT: i32 = 1;
    const FAILED: i32 = 2;
    let page = sys::AnonMapping::new(sys::page_size() as usize, 0)?;
    let page_size = sys::page_size();
    // SAFETY: the child makes only async-signal-safe calls (open, write, pread, _exit) on
    // memory that exists before the fork, and allocates nothing.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let verdict = (|| -> io::Result<bool> {
            // SAFETY: NUL-terminated literals; the fds are the child's own, closed by _exit.
            let (pagemap, clear_refs) = unsafe {
                (
                    libc::open(c"/proc/self/pagemap".as_ptr(), libc::O_RDONLY),
                    libc::open(c"/proc/self/clear_refs".as_ptr(), libc::O_WRONLY),
                )
            };
            if pagemap < 0 || clear_refs < 0 {
                return Err(io::Error::last_os_error());
            }
            let entry = || -> io::Result<u64> {
                let mut buf = [0u8; 8];
                // SAFETY: `pagemap` is an open fd of this process, not owned by anything else.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(pagemap) };
                match sys::pread_full(fd, &mut buf, page.addr() / page_size * 8)? {
                    8 => Ok(u64::from_ne_bytes(buf)),
                    _ => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                }
            };
            page.write(0, 1u8);
            // Another thread's mmap could merge a new VM_SOFTDIRTY VMA with ours between the
            // clear and the read: a page still dirty after clearing earns a few retries.
            for _ in 0..3 {
                let clear = abi::CLEAR_REFS_SOFT_DIRTY;
                // SAFETY: writes `clear`, a live byte string, to the child's own fd.
                if unsafe { libc::write(clear_refs, clear.as_ptr().cast(), clear.len()) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                if entry()? & abi::PM_SOFT_DIRTY == 0 {
                    page.write(0, 2u8);
                    return Ok(entry()? & abi::PM_SOFT_DIRTY != 0);
                }
            }
            Ok(false)
        })();
        let code = match verdict {
            Ok(true) => WORKS,
            Ok(false) => ABSENT,
            Err(_) => FAILED,
        };
        // SAFETY: ends the child at once, running nothing of the parent's (no atexit, no
        // destructors).
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(WORKS) => Ok(true),
        Some(ABSENT) => Ok(false),
        _ => Err(io::Error::other(
            "the soft-dirty probe (a child of ours) could not read its own pagemap",
        )),
    }
}

fn soft_dirty_item(round_trip: &io::Result<bool>) -> Item {
    const NAME: &str = "soft-dirty";
    const MEANING: &str = "the kernel is built without CONFIG_MEM_SOFT_DIRTY: the soft-dirty comparison method cannot work (track is unaffected)";
    const FIX: &str =
        "use a kernel with CONFIG_MEM_SOFT_DIRTY=y (x86_64, ppc64le, s390x; arm64 has none)";
    match round_trip {
        Ok(true) => Item::ok(
            NAME,
            "works: bit 55 cleared by clear_refs \"4\" and set again by a write",
        ),
        Ok(false) => Item::missing(
            NAME,
            "clear_refs \"4\" is accepted, but a written page never shows bit 55",
            MEANING,
            FIX,
        ),
        Err(e) => Item::missing(NAME, format!("round trip failed: {e}"), MEANING, FIX),
    }
}

/// `pidfd_open` on ourselves, then `pidfd_getfd` of that very pidfd through itself.
fn probe_pidfd() -> (io::Result<()>, io::Result<()>) {
    match sys::pidfd_open(std::process::id() as i32) {
        Ok(pidfd) => {
            let getfd = sys::pidfd_getfd(pidfd.as_fd(), pidfd.as_raw_fd()).map(drop);
            (Ok(()), getfd)
        }
        Err(e) => {
            let not_probed = io::Error::other(format!("not probed: pidfd_open failed ({e})"));
            (Err(e), Err(not_probed))
        }
    }
}

fn pidfd_open_item(r: &io::Result<()>) -> Item {
    match r {
        Ok(()) => Item::ok("pidfd_open", "works"),
        Err(e) => Item::missing(
            "pidfd_open",
            errno_name(e),
            "track holds its target by pidfd, so it cannot start",
            "use Linux 5.3 or newer, outside any seccomp filter that blocks pidfd_open",
        ),
    }
}

fn pidfd_getfd_item(r: &io::Result<()>) -> Item {
    match r {
        Ok(()) => Item::ok("pidfd_getfd", "works"),
        Err(e) => Item::missing(
            "pidfd_getfd",
            errno_name(e),
            "track cannot take the userfaultfd it creates in the target",
            "use Linux 5.6 or newer, outside any seccomp filter that blocks pidfd_getfd",
        ),
    }
}

/// The effective uid and whether `CapEff` holds `CAP_SYS_PTRACE`, from `/proc/self/status`.
fn ptrace_creds() -> io::Result<(u32, bool)> {
    let status = fs::read_to_string("/proc/self/status")?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .ok_or_else(|| io::Error::other(format!("no {key} line in /proc/self/status")))
    };
    // `Uid:` lists real, effective, saved and filesystem uids.
    let euid = field("Uid")?
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("bad Uid line in /proc/self/status"))?;
    let cap_eff = u64::from_str_radix(field("CapEff")?.trim(), 16)
        .map_err(|_| io::Error::other("bad CapEff line in /proc/self/status"))?;
    Ok((euid, cap_eff & (1 << abi::CAP_SYS_PTRACE) != 0))
}

fn ptrace_item(creds: &io::Result<(u32, bool)>) -> Item {
    const NAME: &str = "ptrace";
    let who = |euid: u32| {
        if euid == 0 {
            "root".to_string()
        } else {
            format!("uid {euid}")
        }
    };
    match creds {
        Ok((euid, true)) => Item::ok(NAME, format!("{}, CAP_SYS_PTRACE effective", who(*euid))),
        Ok((euid, false)) => Item::note(
            NAME,
            format!("{}, no CAP_SYS_PTRACE", who(*euid)),
            "only your own dumpable processes can be tracked (launch mode always works)",
            Some("run as root or with CAP_SYS_PTRACE to track other users' processes"),
        ),
        Err(e) => Item::note(
            NAME,
            format!("credentials unknown ({e})"),
            "without CAP_SYS_PTRACE only your own dumpable processes can be tracked",
            None,
        ),
    }
}

/// Whether this process may suspend a tracee's seccomp filter: seize a child of ours (which
/// only waits) with `PTRACE_O_SUSPEND_SECCOMP`. EINVAL: the kernel lacks
/// CONFIG_CHECKPOINT_RESTORE; EPERM: we lack CAP_SYS_ADMIN.
fn probe_suspend_seccomp() -> io::Result<()> {
    // SAFETY: the child only calls pause(2), and dies with us or by our SIGKILL below.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    if pid == 0 {
        // SAFETY: async-signal-safe calls only, in the child of a fork.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // A parent that died before the prctl sends no signal: never outlive it.
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            loop {
                libc::pause();
            }
        }
    }
    let seized = sys::ptrace::seize(pid, libc::PTRACE_O_SUSPEND_SECCOMP);
    if seized.is_ok() {
        let _ = sys::ptrace::detach(pid, 0);
    }
    // SAFETY: our own child, killed and reaped.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    seized
}

fn suspend_seccomp_item(suspend: &io::Result<()>) -> Item {
    const NAME: &str = "suspend-seccomp";
    match suspend {
        Ok(()) => Item::ok(
            NAME,
            "PTRACE_O_SUSPEND_SECCOMP works: targets under seccomp are tracked, their filter suspended for the injected calls only",
        ),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Item::note(
            NAME,
            "not permitted (needs CAP_SYS_ADMIN)",
            "targets under a seccomp filter or in strict mode are refused (exit 77)",
            Some("run as root to track them, or use --method soft-dirty where the kernel has it"),
        ),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Item::missing(
            NAME,
            "absent: the kernel is built without CONFIG_CHECKPOINT_RESTORE",
            "targets under a seccomp filter or in strict mode cannot be tracked",
            "use a kernel with CONFIG_CHECKPOINT_RESTORE=y, or --method soft-dirty",
        ),
        Err(e) => Item::note(
            NAME,
            format!("not probed ({})", errno_name(e)),
            "targets under seccomp may be refused",
            None,
        ),
    }
}

fn yama_item(cap_sys_ptrace: bool) -> Item {
    const NAME: &str = "yama";
    let scope = match fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Item::ok(NAME, "not active (no kernel.yama.ptrace_scope)");
        }
        Err(e) => {
            return Item::note(
                NAME,
                format!("unknown ({e})"),
                "the Yama scope could not be read",
                None,
            );
        }
    };
    let found = format!("ptrace_scope={scope}");
    match scope.as_str() {
        "0" => Item::ok(NAME, found),
        "1" | "2" if cap_sys_ptrace => Item::ok(NAME, found + " (CAP_SYS_PTRACE overrides it)"),
        "1" => Item::note(
            NAME,
            found,
            "without CAP_SYS_PTRACE only descendants can be traced: --pid fails on other processes",
            Some("use `uffd-dirty track -- CMD`, or set kernel.yama.ptrace_scope=0"),
        ),
        "2" => Item::missing(
            NAME,
            found,
            "only CAP_SYS_PTRACE may trace: track cannot attach",
            "run with CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope to 0 or 1",
        ),
        "3" => Item::missing(
            NAME,
            found,
            "ptrace is disabled until reboot: track cannot attach to anything",
            "reboot with kernel.yama.ptrace_scope below 3",
        ),
        _ => Item::note(NAME, found, "unknown Yama scope", None),
    }
}

fn thp_item() -> Item {
    const NAME: &str = "thp";
    const MEANING: &str = "an anon THP is split into 4 KiB pages on its first write after protection, so tracking stays exact at 4 KiB";
    match fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled") {
        Ok(s) => {
            let mode = s
                .split_whitespace()
                .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
                .unwrap_or("unknown");
            Item::note(NAME, mode, MEANING, None)
        }
        Err(_) => Item::note(
            NAME,
            "absent (no CONFIG_TRANSPARENT_HUGEPAGE)",
            "no transparent huge pages: nothing to split",
            None,
        ),
    }
}

fn hugetlb_item() -> Item {
    const NAME: &str = "hugetlb";
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match (field("HugePages_Total"), field("HugePages_Free")) {
        (Some(total), Some(free)) => Item::note(
            NAME,
            format!("{total} total, {free} free"),
            "a write to a hugetlb page dirties the whole huge page; tracking hugetlb needs WP_HUGETLBFS_SHMEM",
            None,
        ),
        _ => Item::note(
            NAME,
            "absent (no CONFIG_HUGETLB_PAGE)",
            "no hugetlb pages on this machine",
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_categories_are_wpallowed_to_huge() {
        assert_eq!(BASE_CATEGORIES.bits(), 0x7f);
        assert_eq!(
            category_names(Categories::from_bits_retain(0x3)),
            "WPALLOWED WRITTEN"
        );
    }

    /// The per-bit probe means something only if the kernel rejects a bit it does not know.
    #[test]
    fn pagemap_scan_rejects_an_unknown_category() {
        if !matches!(probe_pagemap_scan(), Ok(Some(_))) {
            crate::testing::skipped("no PAGEMAP_SCAN on this kernel");
            return;
        }
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let e = Scan::pages()
            .report(Categories::from_bits_retain(1 << 63))
            .run(pagemap.as_fd(), 0..0, &mut [])
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn ok_items_serialize_without_meaning_or_fix() {
        let v = serde_json::to_value(Item::ok("x", "y")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "x", "status": "ok", "found": "y"})
        );
        let v = serde_json::to_value(Item::missing("x", "y", "m", "f")).unwrap();
        assert_eq!(v["status"], "missing");
        assert_eq!(v["fix"], "f");
    }
}
