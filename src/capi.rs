//! The C ABI (cargo feature `capi`): `libuffd_dirty.so` and its header `include/uffd_dirty.h`,
//! generated from this file by cbindgen (`cbindgen --config cbindgen.toml --output
//! include/uffd_dirty.h src/capi.rs`; `tests/capi.rs` fails when the committed header is stale).
//!
//! A thin layer over the public Rust API ([`Target`], [`TrackerBuilder`], [`Tracker`],
//! [`Harvest`], [`Span`], [`SpanSet`], [`Error`]) and nothing else. Conventions, as the header
//! states them to C:
//!
//! - Opaque handles, each with its own free function: `struct uffd_dirty_target`,
//!   `struct uffd_dirty_tracker` (freed by `uffd_dirty_detach`), `struct uffd_dirty_harvest`,
//!   `struct uffd_dirty_frozen` (freed by `uffd_dirty_thaw`, on the thread that made it).
//! - Calls that make a handle return it, or NULL on failure. Calls that return `int` return 0
//!   (or a count) on success and a negated `enum uffd_dirty_error` on failure. Either way a
//!   failure sets this thread's last error: `uffd_dirty_last_error()` (one line of text),
//!   `uffd_dirty_last_error_kind()`, `uffd_dirty_last_errno()`. Success leaves it as it was,
//!   as errno does.
//! - NULL where a handle or buffer is required is a `UFFD_DIRTY_ERROR_BAD_INPUT` failure, never a
//!   crash; free functions accept NULL. A panic never crosses into C: it is caught and turned
//!   into `UFFD_DIRTY_ERROR_OTHER`.
//! - A handle may be used by one thread at a time; different handles on different threads are
//!   independent. A frozen handle is the exception: it belongs to the thread that froze the
//!   target (its ptrace tracer), and `uffd_dirty_thaw` refuses it on any other.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, OsStr, c_char, c_int, c_void};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::UNIX_EPOCH;

use crate::{
    Arming, Change, Error, Frozen, Gone, Harvest, MappingKind, Method, Selector, Span, SpanSet,
    Target, Tracker, TrackerBuilder,
};

/// A process to track: opened by PID (`uffd_dirty_target_open()`) or launched as a command
/// (`uffd_dirty_target_launch()`). Freed by `uffd_dirty_target_free()`.
pub struct UffdDirtyTarget(Target);

/// Tracks which pages of one process are written. Made by `uffd_dirty_attach()`; freed (which
/// detaches: the kernel drops every protection) by `uffd_dirty_detach()`.
pub struct UffdDirtyTracker(Tracker);

/// What one harvest found. Made by `uffd_dirty_harvest_new()`, filled (its contents replaced)
/// by every `uffd_dirty_harvest()` into it, freed by `uffd_dirty_harvest_free()`. Reusing one
/// keeps harvests from allocating in the steady state.
pub struct UffdDirtyHarvest {
    harvest: Harvest,
    /// The names of the harvest's mapping changes as C strings, each NUL-terminated, one
    /// after the other: rebuilt by every harvest into the handle (cleared, keeping its memory,
    /// when nothing changed), so that `uffd_dirty_harvest_change()` hands them out in place.
    names: Vec<u8>,
    /// Where the name of each change starts in `names`.
    name_at: Vec<usize>,
}

impl UffdDirtyHarvest {
    /// Rebuild `names` from the harvest's changes (no allocation when there are none, or
    /// when the buffers already have the room).
    fn index_names(&mut self) {
        self.names.clear();
        self.name_at.clear();
        for change in self.harvest.changes() {
            self.name_at.push(self.names.len());
            // A NUL inside a name (never, for a path) would end it early in C: kept visible.
            for &b in change.name.as_bytes() {
                match b {
                    0 => self.names.extend_from_slice(b"\\0"),
                    b => self.names.push(b),
                }
            }
            self.names.push(0);
        }
    }
}

/// The target stopped by `uffd_dirty_target_freeze()`, and the thread that stopped it (its
/// ptrace tracer, the only one that can let it go). Freed, which lets the target run on, by
/// `uffd_dirty_thaw()` on that thread.
pub struct UffdDirtyFrozen {
    frozen: Frozen,
    /// The process and thread (`gettid`) that froze the target.
    pid: libc::pid_t,
    tid: libc::pid_t,
}

// A handle is used by one thread at a time, but not always the same one: what it holds must
// be Send.
const _: () = {
    const fn send<T: Send>() {}
    send::<UffdDirtyTarget>();
    send::<UffdDirtyTracker>();
    send::<UffdDirtyHarvest>();
};

/// A half-open address range `[start, end)` of the target's address space. Spans from a
/// harvest are page-aligned, sorted, and neither overlap nor touch.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UffdDirtySpan {
    /// The first address in the range.
    pub start: u64,
    /// The first address past the range.
    pub end: u64,
}

// A harvest's spans are handed to C in place, as `struct uffd_dirty_span`: the Rust `Span`
// must have the same layout. Checked here, at compile time, for the compiler in use.
const _: () = {
    assert!(size_of::<Span>() == size_of::<UffdDirtySpan>());
    assert!(align_of::<Span>() == align_of::<UffdDirtySpan>());
    assert!(std::mem::offset_of!(Span, start) == std::mem::offset_of!(UffdDirtySpan, start));
    assert!(std::mem::offset_of!(Span, end) == std::mem::offset_of!(UffdDirtySpan, end));
};

/// What kind of failure a call had. `int`-returning calls return it negated
/// (`-UFFD_DIRTY_ERROR_GONE_EXITED`); `uffd_dirty_last_error_kind()` returns it as is.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UffdDirtyError {
    /// No failure.
    Ok = 0,
    /// The caller may not trace the target (ptrace access mode, Yama, capabilities).
    NotPermitted = 1,
    /// The running kernel lacks a feature the request needs (userfaultfd's async
    /// write-protect, PAGEMAP_SCAN, soft-dirty): another method or kernel may do.
    Unsupported = 2,
    /// Bad input: a PID that cannot be a target, a range or selector that picks nothing, a
    /// command that cannot run, a NULL or malformed argument.
    BadInput = 3,
    /// The target exited: tracking is over (a harvest, or reading its pages).
    GoneExited = 4,
    /// The target ran a new program (execve) and the tracker does not follow it
    /// (`UFFD_DIRTY_ATTACH_NO_FOLLOW_EXEC`), or following it failed (the text says why):
    /// tracking is over.
    GoneExec = 5,
    /// Anything else (an I/O error, the kernel refusing a call): the text carries the context,
    /// `uffd_dirty_last_errno()` the errno.
    Other = 6,
}

/// How a tracker finds the written pages (`struct uffd_dirty_attach_opts.method`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UffdDirtyMethod {
    /// userfaultfd async write-protect, harvested by PAGEMAP_SCAN with atomic re-protect (the
    /// default: 0).
    PagemapScan = 0,
    /// The same arming, harvested by reads of /proc/PID/pagemap and re-protected with
    /// UFFDIO_WRITEPROTECT.
    PagemapRead = 1,
    /// clear_refs soft-dirty, no userfaultfd; the target is stopped while its bits are read and
    /// cleared (unless `UFFD_DIRTY_ATTACH_NO_FREEZE`). Needs CONFIG_MEM_SOFT_DIRTY.
    SoftDirty = 2,
}

/// Kinds of mapping, as bits of `struct uffd_dirty_attach_opts.kinds`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UffdDirtyKind {
    /// Private anonymous memory (malloc's arenas, `mmap(MAP_ANONYMOUS)`), named or not.
    Anon = 1,
    /// The brk heap, `[heap]`.
    Heap = 2,
    /// The main thread's stack, `[stack]`.
    Stack = 4,
    /// A file mapping (program text and data, libraries, mmap of a file).
    File = 8,
    /// Shared memory: memfd, /dev/shm, SysV, shared anonymous memory.
    Shmem = 16,
    /// hugetlbfs memory.
    Hugetlb = 32,
}

const KINDS: [(UffdDirtyKind, MappingKind); 6] = [
    (UffdDirtyKind::Anon, MappingKind::Anon),
    (UffdDirtyKind::Heap, MappingKind::Heap),
    (UffdDirtyKind::Stack, MappingKind::Stack),
    (UffdDirtyKind::File, MappingKind::File),
    (UffdDirtyKind::Shmem, MappingKind::Shmem),
    (UffdDirtyKind::Hugetlb, MappingKind::Hugetlb),
];

/// How a mapping changed between two harvests (`struct uffd_dirty_change.kind`). A newer
/// library may report a kind this header does not name: treat it as `ADDED` (copy the span
/// whole).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UffdDirtyChangeKind {
    /// New memory in scope, tracked from this harvest on. Its pages that are still as they
    /// were mapped (a file's pages, never written through the mapping) are not reported
    /// written: a copier copies the whole span.
    Added = 1,
    /// Memory moved by `mremap` (same size, same contents) from `from` to `span`. `from` is
    /// gone: no `REMOVED` is reported for it. A copier drops what it holds of `from` and
    /// copies the whole of `span`, as for `ADDED`.
    Moved = 2,
    /// Memory no longer tracked: unmapped, or no longer in scope. Memory made read-only stays
    /// tracked while it is mapped (it may have been written first).
    Removed = 3,
    /// Tracked memory that a new mapping took the place of (`mmap(MAP_FIXED)` over it, or
    /// unmapped and mapped again between two harvests): its contents are new without all
    /// being reported written (a file's pages, zeros). A copier copies the whole span.
    Replaced = 4,
}

/// What a mapping is (`struct uffd_dirty_change.mapping_kind`), as `/proc/PID/maps` shows it.
/// A newer library may report a kind this header does not name.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UffdDirtyMappingKind {
    /// No mapping could be described (the memory was not in the listing).
    Unmapped = 0,
    /// Private anonymous memory, named or not.
    Anon = 1,
    /// The brk heap, `[heap]`.
    Heap = 2,
    /// The main thread's stack, `[stack]`.
    Stack = 3,
    /// A file mapping.
    File = 4,
    /// Shared memory: memfd, /dev/shm, SysV, shared anonymous memory.
    Shmem = 5,
    /// hugetlbfs memory.
    Hugetlb = 6,
    /// A kernel special mapping (`[vdso]`, `[vvar]`, driver mappings), never tracked.
    Special = 7,
}

impl From<Option<MappingKind>> for UffdDirtyMappingKind {
    fn from(kind: Option<MappingKind>) -> Self {
        // Every kind named: a kind added to the library must be given a C value here.
        match kind {
            None => UffdDirtyMappingKind::Unmapped,
            Some(MappingKind::Anon) => UffdDirtyMappingKind::Anon,
            Some(MappingKind::Heap) => UffdDirtyMappingKind::Heap,
            Some(MappingKind::Stack) => UffdDirtyMappingKind::Stack,
            Some(MappingKind::File) => UffdDirtyMappingKind::File,
            Some(MappingKind::Shmem) => UffdDirtyMappingKind::Shmem,
            Some(MappingKind::Hugetlb) => UffdDirtyMappingKind::Hugetlb,
            Some(MappingKind::Special) => UffdDirtyMappingKind::Special,
        }
    }
}

/// One mapping change of a harvest, filled by `uffd_dirty_harvest_change()`. Set `sz` to
/// `sizeof(struct uffd_dirty_change)` first (`UFFD_DIRTY_CHANGE(c)` declares one so): a newer
/// library fills only that much, an older one zeroes the fields it does not know.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct UffdDirtyChange {
    /// `sizeof(struct uffd_dirty_change)`, as the caller was compiled with (set by the caller).
    pub sz: usize,
    /// An `enum uffd_dirty_change_kind`.
    pub kind: c_int,
    /// An `enum uffd_dirty_mapping_kind`: what the mapping is (for `REMOVED`, what it was).
    pub mapping_kind: c_int,
    /// The addresses concerned: page-aligned, not empty. For `MOVED`, where the memory is
    /// now. Adjacent new mappings may make one span: its `name` and `mapping_kind` are those
    /// of the mapping at its start.
    pub span: UffdDirtySpan,
    /// `MOVED` only: where the memory was (now gone). `{0, 0}` for other kinds.
    pub from: UffdDirtySpan,
    /// The mapping's name as /proc/PID/maps shows it (a file's path, `[heap]`, a named anonymous
    /// mapping's `[anon:NAME]`), `[anon]` for nameless memory, or "" if no mapping could be
    /// described; never NULL. It belongs to the harvest: valid until the next harvest into it,
    /// or its free.
    pub name: *const c_char,
}

/// `struct uffd_dirty_attach_opts.flags`: after the target runs a new program (execve), end
/// tracking (harvests fail with `UFFD_DIRTY_ERROR_GONE_EXEC`) instead of attaching to the new
/// program and going on.
pub const UFFD_DIRTY_ATTACH_NO_FOLLOW_EXEC: u32 = 1;
/// `struct uffd_dirty_attach_opts.flags`: soft-dirty only: do not stop the target while its
/// bits are read and cleared (a write in between is lost); for callers that stop it
/// themselves.
pub const UFFD_DIRTY_ATTACH_NO_FREEZE: u32 = 2;
/// Userfaultfd methods: protect only the empty slots at attach, so that the first harvest
/// reports every page holding the process's data (populated anonymous and shared memory, file
/// pages written through the mapping): a first copy without reading memory never touched.
pub const UFFD_DIRTY_ATTACH_REPORT_POPULATED: u32 = 4;

const KNOWN_FLAGS: u32 = UFFD_DIRTY_ATTACH_NO_FOLLOW_EXEC
    | UFFD_DIRTY_ATTACH_NO_FREEZE
    | UFFD_DIRTY_ATTACH_REPORT_POPULATED;

/// How to attach. Zero means the default for every field, so declare it with
/// `UFFD_DIRTY_ATTACH_OPTS(opts, .method = ..., ...)`, which zeroes the rest and sets `sz`, or
/// pass NULL for all defaults: PAGEMAP_SCAN, the whole address space, following exec.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct UffdDirtyAttachOpts {
    /// `sizeof(struct uffd_dirty_attach_opts)`, as the caller was compiled with: a library
    /// newer than the caller's header reads only that much (the fields past it take their
    /// defaults); an older one refuses bytes it does not know unless they are zero.
    pub sz: usize,
    /// An `enum uffd_dirty_method`.
    pub method: c_int,
    /// `UFFD_DIRTY_ATTACH_*` bits, or 0.
    pub flags: u32,
    /// Track only these address ranges (their union), or, with `nr_ranges` 0, the whole
    /// address space. Each must hold a trackable mapping when the tracker attaches.
    pub ranges: *const UffdDirtySpan,
    /// How many `ranges` there are.
    pub nr_ranges: usize,
    /// Track only mappings named so (or matching these globs: `*` any run of characters, `?`
    /// any one; over the whole name as /proc/PID/maps shows it, or its last path component),
    /// or of the `kinds`; with neither, every mapping in the ranges.
    pub names: *const *const c_char,
    /// How many `names` there are.
    pub nr_names: usize,
    /// `UFFD_DIRTY_KIND_*` bits: track only mappings of these kinds (with `names`, mappings
    /// either picks).
    pub kinds: u32,
}

/// One line of text from a NUL-free string (a NUL byte would end it early in C).
fn c_text(s: impl Into<String>) -> CString {
    let s: String = s.into();
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

struct LastError {
    kind: UffdDirtyError,
    errno: c_int,
    message: CString,
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = RefCell::new(LastError {
        kind: UffdDirtyError::Ok,
        errno: 0,
        message: CString::default(),
    });
}

/// The C kind of a library error.
fn kind_of(e: &Error) -> UffdDirtyError {
    match e {
        Error::NotPermitted(_) => UffdDirtyError::NotPermitted,
        Error::Unsupported(_) => UffdDirtyError::Unsupported,
        Error::BadInput(_) => UffdDirtyError::BadInput,
        Error::Gone {
            why: Gone::Exited, ..
        } => UffdDirtyError::GoneExited,
        Error::Gone {
            why: Gone::Exec, ..
        } => UffdDirtyError::GoneExec,
        // The new program could not be attached to: the memory tracked is gone as for an
        // exec not followed, and the text says why the new one is not tracked.
        Error::AfterExec(_) => UffdDirtyError::GoneExec,
        _ => UffdDirtyError::Other,
    }
}

/// Record `e` as this thread's last error; its negated kind, for `int` returns.
fn fail(e: &Error) -> c_int {
    set_last(kind_of(e), e.raw_os_error().unwrap_or(0), e.to_string())
}

fn set_last(kind: UffdDirtyError, errno: c_int, message: String) -> c_int {
    // A thread being torn down has no last error to set: nothing to tell then.
    let _ = LAST_ERROR.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = LastError {
                kind,
                errno,
                message: c_text(message),
            };
        }
    });
    -(kind as c_int)
}

fn bad_input(message: impl Into<String>) -> Error {
    Error::BadInput(message.into())
}

/// Run `f` with panics caught: a panic is recorded as `UFFD_DIRTY_ERROR_OTHER` and gives
/// `on_panic`.
fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            set_last(
                UffdDirtyError::Other,
                0,
                format!("internal error in libuffd_dirty (please report): {what}"),
            );
            on_panic
        }
    }
}

/// An `int`-returning call: 0 (or the count `f` gives) or the negated kind.
fn int_call(f: impl FnOnce() -> Result<c_int, Error>) -> c_int {
    guard(-(UffdDirtyError::Other as c_int), || match f() {
        Ok(v) => v,
        Err(e) => fail(&e),
    })
}

/// A handle-making call: the new handle, or NULL.
fn new_handle<T>(f: impl FnOnce() -> Result<T, Error>) -> *mut T {
    guard(std::ptr::null_mut(), || match f() {
        Ok(v) => Box::into_raw(Box::new(v)),
        Err(e) => {
            fail(&e);
            std::ptr::null_mut()
        }
    })
}

/// Free a handle made by [`new_handle`] (NULL: nothing), panics in its drop caught.
///
/// # Safety
/// `p` is NULL or came from `new_handle::<T>` and is not used again.
unsafe fn free_handle<T>(p: *mut T) {
    if p.is_null() {
        return;
    }
    // SAFETY: the caller passes a pointer from Box::into_raw (new_handle), freed once.
    let boxed = unsafe { Box::from_raw(p) };
    guard((), move || drop(boxed));
}

/// The handle behind `p`, or a bad-input error naming the argument.
///
/// # Safety
/// `p` is NULL or points to a live `T` not mutated elsewhere for the returned lifetime.
unsafe fn arg<'a, T>(p: *const T, name: &str) -> Result<&'a T, Error> {
    // SAFETY: the caller's contract: NULL or a valid, live handle.
    unsafe { p.as_ref() }.ok_or_else(|| bad_input(format!("{name} is NULL")))
}

/// The handle behind `p`, mutably, or a bad-input error naming the argument.
///
/// # Safety
/// `p` is NULL or points to a live `T` not used elsewhere for the returned lifetime.
unsafe fn arg_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Error> {
    // SAFETY: the caller's contract: NULL or a valid, live handle used by this thread alone.
    unsafe { p.as_mut() }.ok_or_else(|| bad_input(format!("{name} is NULL")))
}

/// `n` elements at `p` as a slice (`p` may be NULL when `n` is 0).
///
/// # Safety
/// With `n` > 0, `p` is NULL or points to `n` valid, initialized `T`s that outlive `'a`.
unsafe fn array<'a, T>(p: *const T, n: usize, name: &str) -> Result<&'a [T], Error> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(bad_input(format!("{name} is NULL but its count is {n}")));
    }
    // SAFETY: p is non-null and, by the caller's contract, points to n valid elements.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// The spans of `set` as C sees them, with their count stored through `count` (if not NULL).
fn spans_out(set: &SpanSet, count: *mut usize) -> *const UffdDirtySpan {
    let spans = set.as_slice();
    if !count.is_null() {
        // SAFETY: the caller passes NULL or a pointer to a writable size_t.
        unsafe { count.write(spans.len()) };
    }
    // Same layout (checked at compile time above): the spans are handed over in place.
    spans.as_ptr().cast()
}

/// No spans: a count of 0 stored through `count` (if not NULL), and NULL.
fn no_spans(count: *mut usize) -> *const UffdDirtySpan {
    if !count.is_null() {
        // SAFETY: the caller passes NULL or a pointer to a writable size_t.
        unsafe { count.write(0) };
    }
    std::ptr::null()
}

/// The library's version, as `"0.1.0"`.
///
/// # Safety
/// None: the string is static.
#[unsafe(no_mangle)]
pub extern "C" fn uffd_dirty_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"",
        };
    VERSION.as_ptr()
}

/// The text of this thread's last failure: one line naming the problem and, where there is
/// one, the fix. Empty if no call on this thread has failed. Valid until the next failing call
/// on this thread.
///
/// # Safety
/// None: the string belongs to the calling thread; do not free it, or use it after a later
/// failing call on this thread, or after the thread exits.
#[unsafe(no_mangle)]
pub extern "C" fn uffd_dirty_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|last| last.borrow().message.as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// The kind (`enum uffd_dirty_error`, positive) of this thread's last failure;
/// `UFFD_DIRTY_ERROR_OK` if none.
///
/// # Safety
/// None.
#[unsafe(no_mangle)]
pub extern "C" fn uffd_dirty_last_error_kind() -> c_int {
    LAST_ERROR
        .try_with(|last| last.borrow().kind as c_int)
        .unwrap_or(0)
}

/// The errno at the root of this thread's last failure, or 0 if it had none (most failures
/// other than `UFFD_DIRTY_ERROR_OTHER` have none: the kind says what is wrong).
///
/// # Safety
/// None.
#[unsafe(no_mangle)]
pub extern "C" fn uffd_dirty_last_errno() -> c_int {
    LAST_ERROR.try_with(|last| last.borrow().errno).unwrap_or(0)
}

/// A short name for an error kind, given as is or negated (as `int` calls return it):
/// `"not permitted"`, `"unsupported"`, `"bad input"`, `"gone: exited"`, `"gone: exec"`,
/// `"other"`, `"ok"` for 0, `"unknown"` for anything else.
///
/// # Safety
/// None: the string is static.
#[unsafe(no_mangle)]
pub extern "C" fn uffd_dirty_strerror(kind: c_int) -> *const c_char {
    let name = match kind.unsigned_abs() {
        0 => c"ok",
        1 => c"not permitted",
        2 => c"unsupported",
        3 => c"bad input",
        4 => c"gone: exited",
        5 => c"gone: exec",
        6 => c"other",
        _ => c"unknown",
    };
    name.as_ptr()
}

/// Open the running process `pid` as a target. NULL on failure: `UFFD_DIRTY_ERROR_BAD_INPUT` for
/// what cannot be a target (no such process, a thread ID, a kernel thread, a zombie, the
/// caller itself), `UFFD_DIRTY_ERROR_NOT_PERMITTED` for a process the caller may not trace.
///
/// # Safety
/// None.
#[unsafe(no_mangle)]
pub extern "C" fn uffd_dirty_target_open(pid: libc::pid_t) -> *mut UffdDirtyTarget {
    new_handle(|| Target::open(pid).map(UffdDirtyTarget))
}

/// Start a command as a child of the caller: `argv` is the program (looked up in PATH) and its
/// arguments, ending with NULL, as for execvp. The child waits before its exec until a tracker
/// attaches (`uffd_dirty_attach()`), so every write of the new program is seen; a program that
/// cannot run is reported by that attach. Freeing the target terminates a command still
/// running (SIGTERM, then SIGKILL after 2 s), and kills one never attached to. NULL on failure.
///
/// The child is reaped by the library (`uffd_dirty_target_wait()`): do not `waitpid` it.
///
/// # Safety
/// `argv` is NULL or a NULL-terminated array of NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_target_launch(
    argv: *const *const c_char,
) -> *mut UffdDirtyTarget {
    new_handle(|| {
        if argv.is_null() {
            return Err(bad_input("argv is NULL"));
        }
        let mut args: Vec<&OsStr> = Vec::new();
        for i in 0.. {
            // SAFETY: argv is a NULL-terminated array (the caller's contract): every index up
            // to and including the terminator is in bounds.
            let p = unsafe { *argv.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: each element before the terminator is a NUL-terminated string.
            args.push(OsStr::from_bytes(unsafe { CStr::from_ptr(p) }.to_bytes()));
        }
        Target::launch(args).map(UffdDirtyTarget)
    })
}

/// The target's process ID; `-UFFD_DIRTY_ERROR_BAD_INPUT` if `target` is NULL.
///
/// # Safety
/// `target` is NULL or a live target.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_target_pid(target: *const UffdDirtyTarget) -> libc::pid_t {
    // SAFETY: the caller's contract.
    int_call(|| Ok(unsafe { arg(target, "target") }?.0.pid()))
}

/// The target's pidfd, for poll/epoll: it turns readable when the process exits. It stays the
/// target's: do not close it; it is valid until the target is freed.
///
/// # Safety
/// `target` is NULL or a live target.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_target_fd(target: *const UffdDirtyTarget) -> c_int {
    // SAFETY: the caller's contract.
    int_call(|| Ok(unsafe { arg(target, "target") }?.0.as_fd().as_raw_fd()))
}

/// 1 if the target has exited, 0 if it runs, or a negated error kind.
///
/// # Safety
/// `target` is NULL or a live target.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_target_has_exited(target: *const UffdDirtyTarget) -> c_int {
    int_call(|| {
        // SAFETY: the caller's contract.
        let target = unsafe { arg(target, "target") }?;
        Ok(c_int::from(target.0.has_exited()))
    })
}

/// Wait for a launched command to exit and return its exit status (0-255; 128+N for death by
/// signal N). `-UFFD_DIRTY_ERROR_BAD_INPUT` for a target opened by PID (not the caller's to reap)
/// or a command that was never let run (no tracker attached).
///
/// # Safety
/// `target` is NULL or a live target.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_target_wait(target: *const UffdDirtyTarget) -> c_int {
    int_call(|| {
        // SAFETY: the caller's contract.
        let target = unsafe { arg(target, "target") }?;
        target.0.wait().ok_or_else(|| {
            bad_input(if target.0.is_launched() {
                format!(
                    "the command (PID {}) never ran: no tracker attached to it",
                    target.0.pid()
                )
            } else {
                format!(
                    "PID {} was opened, not launched: only its parent can wait for it",
                    target.0.pid()
                )
            })
        })
    })
}

/// Free a target (NULL: nothing). A launched command still running is terminated (SIGTERM,
/// then SIGKILL after 2 s); one never attached to is killed. A tracker attached to it goes on
/// until its harvests report the process gone.
///
/// # Safety
/// `target` is NULL or a target from this library, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_target_free(target: *mut UffdDirtyTarget) {
    // SAFETY: the caller's contract: a pointer from new_handle, freed once.
    unsafe { free_handle(target) }
}

/// The options of a NULL `opts`: every field zero, the defaults.
const UFFD_DIRTY_DEFAULTS: UffdDirtyAttachOpts = UffdDirtyAttachOpts {
    sz: size_of::<UffdDirtyAttachOpts>(),
    method: UffdDirtyMethod::PagemapScan as c_int,
    flags: 0,
    ranges: std::ptr::null(),
    nr_ranges: 0,
    names: std::ptr::null(),
    nr_names: 0,
    kinds: 0,
};

/// Read the caller's options: `sz` first, then as much of the struct as both sides know.
///
/// # Safety
/// `opts` is NULL or points to `opts->sz` readable bytes, starting with a `size_t`.
unsafe fn read_opts(opts: *const UffdDirtyAttachOpts) -> Result<UffdDirtyAttachOpts, Error> {
    let mut ours = UFFD_DIRTY_DEFAULTS;
    if opts.is_null() {
        return Ok(ours);
    }
    // SAFETY: opts points to at least the leading size_t (the caller's contract).
    let sz = unsafe { std::ptr::addr_of!((*opts).sz).read() };
    // The sizes of the struct a caller may have been built with: each release that adds
    // fields adds its size here. Any other size is a caller that did not set `sz`.
    const RELEASED: [usize; 1] = [size_of::<UffdDirtyAttachOpts>()];
    if !RELEASED.contains(&sz) && sz <= size_of::<UffdDirtyAttachOpts>() {
        return Err(bad_input(format!(
            "opts->sz is {sz}: set it to sizeof(struct uffd_dirty_attach_opts) (UFFD_DIRTY_ATTACH_OPTS does)"
        )));
    }
    let bytes = opts.cast::<u8>();
    let known = size_of::<UffdDirtyAttachOpts>();
    for at in known..sz {
        // SAFETY: the caller's struct holds sz bytes.
        if unsafe { bytes.add(at).read() } != 0 {
            return Err(bad_input(format!(
                "opts sets fields this libuffd_dirty does not know (byte {at} of {sz}): it is older than the header the caller was built with"
            )));
        }
    }
    // SAFETY: min(sz, known) bytes are readable at opts and writable at ours; the struct is
    // plain integers and pointers, for which every byte pattern is valid.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes,
            (&mut ours as *mut UffdDirtyAttachOpts).cast::<u8>(),
            sz.min(known),
        )
    };
    ours.sz = sz;
    Ok(ours)
}

/// Attach a tracker to `target` as `opts` say (NULL: the defaults): make sure the kernel can
/// track it, check the ranges against its mappings, then write-protect everything in scope.
/// A launched target is let run (its exec) once armed. NULL on failure, leaving the target as
/// it was: `UFFD_DIRTY_ERROR_UNSUPPORTED` when the kernel lacks what the method needs,
/// `UFFD_DIRTY_ERROR_BAD_INPUT` for options that select nothing (a range without a trackable
/// mapping, selectors that pick nothing) or are malformed, `UFFD_DIRTY_ERROR_NOT_PERMITTED` when the
/// caller may not trace the target.
///
/// The library runs the `uffd-dirty` program as its attach helper: it is found through
/// `$UFFD_DIRTY_ATTACH_HELPER`, beside the running program or one directory up, or in PATH.
///
/// The tracker does not borrow the target: either may be freed first.
///
/// # Safety
/// `target` is NULL or a live target; `opts` is NULL or a valid options struct whose arrays
/// hold as many valid elements as their counts say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_attach(
    target: *mut UffdDirtyTarget,
    opts: *const UffdDirtyAttachOpts,
) -> *mut UffdDirtyTracker {
    new_handle(|| {
        // SAFETY: the caller's contract.
        let target = unsafe { arg(target, "target") }?;
        // SAFETY: the caller's contract.
        let opts = unsafe { read_opts(opts) }?;
        let method = match opts.method {
            m if m == UffdDirtyMethod::PagemapScan as c_int => Method::PagemapScan,
            m if m == UffdDirtyMethod::PagemapRead as c_int => Method::PagemapRead,
            m if m == UffdDirtyMethod::SoftDirty as c_int => Method::SoftDirty,
            m => {
                return Err(bad_input(format!(
                    "opts->method is {m}: not an enum uffd_dirty_method"
                )));
            }
        };
        if opts.flags & !KNOWN_FLAGS != 0 {
            return Err(bad_input(format!(
                "opts->flags has unknown bits {:#x}",
                opts.flags & !KNOWN_FLAGS
            )));
        }
        let mut builder = TrackerBuilder::new()
            .method(method)
            .follow_exec(opts.flags & UFFD_DIRTY_ATTACH_NO_FOLLOW_EXEC == 0)
            .freeze(opts.flags & UFFD_DIRTY_ATTACH_NO_FREEZE == 0);
        if opts.flags & UFFD_DIRTY_ATTACH_REPORT_POPULATED != 0 {
            builder = builder.arming(Arming::ReportPopulated);
        }
        // SAFETY: the caller's contract: nr_ranges valid spans.
        for r in unsafe { array(opts.ranges, opts.nr_ranges, "opts->ranges") }? {
            if r.start >= r.end {
                return Err(bad_input(format!(
                    "opts->ranges holds an empty range {:#x}-{:#x}: its end must be past its start",
                    r.start, r.end
                )));
            }
            builder = builder.range(Span::new(r.start, r.end));
        }
        // SAFETY: the caller's contract: nr_names string pointers.
        for (i, &name) in unsafe { array(opts.names, opts.nr_names, "opts->names") }?
            .iter()
            .enumerate()
        {
            if name.is_null() {
                return Err(bad_input(format!("opts->names[{i}] is NULL")));
            }
            // SAFETY: a non-null element is a NUL-terminated string (the caller's contract).
            let name = unsafe { CStr::from_ptr(name) };
            let Ok(name) = name.to_str() else {
                return Err(bad_input(format!(
                    "opts->names[{i}] is not UTF-8: mapping names are matched as /proc/PID/maps shows them, with other bytes written \\xNN"
                )));
            };
            builder = builder.select(Selector::name(name));
        }
        let all_kinds = KINDS.iter().fold(0, |m, (bit, _)| m | *bit as u32);
        if opts.kinds & !all_kinds != 0 {
            return Err(bad_input(format!(
                "opts->kinds has unknown bits {:#x}",
                opts.kinds & !all_kinds
            )));
        }
        for (bit, kind) in KINDS {
            if opts.kinds & bit as u32 != 0 {
                builder = builder.select(Selector::Kind(kind));
            }
        }
        builder.attach(&target.0).map(UffdDirtyTracker)
    })
}

/// The tracked process's ID, or `-UFFD_DIRTY_ERROR_BAD_INPUT` if `tracker` is NULL.
///
/// # Safety
/// `tracker` is NULL or a live tracker.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_tracker_pid(tracker: *const UffdDirtyTracker) -> libc::pid_t {
    // SAFETY: the caller's contract.
    int_call(|| Ok(unsafe { arg(tracker, "tracker") }?.0.pid()))
}

/// The page size the tracker's spans are made of, in bytes; 0 if `tracker` is NULL.
///
/// # Safety
/// `tracker` is NULL or a live tracker.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_tracker_page_size(tracker: *const UffdDirtyTracker) -> u64 {
    guard(0, || {
        // SAFETY: the caller's contract.
        unsafe { tracker.as_ref() }.map_or(0, |t| t.0.page_size())
    })
}

/// Have the next `uffd_dirty_harvest()` list the target's mappings whole. Without it a
/// harvest lists them whole once in 10 seconds and watches them by cheaper means in between,
/// which see at once every change to what is tracked (memory mapped, unmapped, moved, grown,
/// shrunk or replaced) but not a change of permissions alone. Call it before a checkpoint's
/// final harvest, so that the mappings it records are the target's to the permission.
/// 0, or `-UFFD_DIRTY_ERROR_BAD_INPUT` if `tracker` is NULL.
///
/// # Safety
/// `tracker` is NULL or a live tracker, used by no other thread meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_relist_mappings(tracker: *mut UffdDirtyTracker) -> c_int {
    int_call(|| {
        // SAFETY: the caller's contract.
        unsafe { arg_mut(tracker, "tracker") }?.0.relist_mappings();
        Ok(0)
    })
}

/// Detach and free a tracker (NULL: nothing): its userfaultfd is closed, the kernel drops every
/// protection, and the target is left exactly as it was.
///
/// # Safety
/// `tracker` is NULL or a tracker from this library, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_detach(tracker: *mut UffdDirtyTracker) {
    // SAFETY: the caller's contract: a pointer from new_handle, freed once.
    unsafe { free_handle(tracker) }
}

/// A new, empty harvest to fill with `uffd_dirty_harvest()`; NULL only if memory ran out.
///
/// # Safety
/// None.
#[unsafe(no_mangle)]
pub extern "C" fn uffd_dirty_harvest_new() -> *mut UffdDirtyHarvest {
    new_handle(|| {
        Ok(UffdDirtyHarvest {
            harvest: Harvest::new(),
            names: Vec::new(),
            name_at: Vec::new(),
        })
    })
}

/// Free a harvest (NULL: nothing). Span pointers taken from it become invalid.
///
/// # Safety
/// `harvest` is NULL or a harvest from this library, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_harvest_free(harvest: *mut UffdDirtyHarvest) {
    // SAFETY: the caller's contract: a pointer from new_handle, freed once.
    unsafe { free_handle(harvest) }
}

/// Harvest the pages written since the previous harvest (or the attach) into `harvest`, its
/// contents replaced. 0, or a negated error kind: `UFFD_DIRTY_ERROR_GONE_EXITED` once the target
/// exited, `UFFD_DIRTY_ERROR_GONE_EXEC` once it ran a new program the tracker does not follow (or
/// could not attach to). No write made before the call began is missed; a write racing with it
/// is reported by it or by the next one, and may be by both.
///
/// In the steady state (no mapping changed) a harvest into a reused `harvest` allocates
/// nothing. After a failure the harvest holds no spans.
///
/// # Safety
/// `tracker` and `harvest` are NULL or live handles, used by no other thread meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_harvest(
    tracker: *mut UffdDirtyTracker,
    harvest: *mut UffdDirtyHarvest,
) -> c_int {
    int_call(|| {
        // SAFETY: the caller's contract.
        let tracker = unsafe { arg_mut(tracker, "tracker") }?;
        // SAFETY: the caller's contract.
        let harvest = unsafe { arg_mut(harvest, "harvest") }?;
        let done = tracker.0.harvest_into(&mut harvest.harvest);
        // After a failure too: the harvest then holds no changes, and no names.
        harvest.index_names();
        done.map(|()| 0)
    })
}

/// The written pages of the last harvest into `harvest`, as page-aligned spans in address
/// order; their number is stored in `*count` (if `count` is not NULL). The array stays valid
/// until the next harvest into `harvest`, or its free. With a count of 0 the pointer must not
/// be dereferenced. NULL (count 0) if `harvest` is NULL.
///
/// # Safety
/// `harvest` is NULL or a live harvest; `count` is NULL or points to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_harvest_spans(
    harvest: *const UffdDirtyHarvest,
    count: *mut usize,
) -> *const UffdDirtySpan {
    guard(std::ptr::null(), || {
        // SAFETY: the caller's contract.
        match unsafe { harvest.as_ref() } {
            Some(h) => spans_out(h.harvest.dirty(), count),
            None => no_spans(count),
        }
    })
}

/// How many pages the last harvest into `harvest` found written; 0 if `harvest` is NULL.
///
/// # Safety
/// `harvest` is NULL or a live harvest.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_harvest_dirty_pages(harvest: *const UffdDirtyHarvest) -> u64 {
    guard(0, || {
        // SAFETY: the caller's contract.
        unsafe { harvest.as_ref() }.map_or(0, |h| h.harvest.dirty_pages())
    })
}

/// The memory the last harvest into `harvest` covered (what is armed, plus memory made
/// read-only while it stays mapped, whose writes are still reported), as spans in address
/// order, with their number stored in `*count`; valid as `uffd_dirty_harvest_spans()`'s.
///
/// # Safety
/// `harvest` is NULL or a live harvest; `count` is NULL or points to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_harvest_tracked(
    harvest: *const UffdDirtyHarvest,
    count: *mut usize,
) -> *const UffdDirtySpan {
    guard(std::ptr::null(), || {
        // SAFETY: the caller's contract.
        match unsafe { harvest.as_ref() } {
            Some(h) => spans_out(h.harvest.tracked(), count),
            None => no_spans(count),
        }
    })
}

/// The harvest's number: 1 for the first harvest after attach (0 before any, or if `harvest`
/// is NULL).
///
/// # Safety
/// `harvest` is NULL or a live harvest.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_harvest_seq(harvest: *const UffdDirtyHarvest) -> u64 {
    guard(0, || {
        // SAFETY: the caller's contract.
        unsafe { harvest.as_ref() }.map_or(0, |h| h.harvest.seq())
    })
}

/// Whether the target ran a new program since the previous harvest and the tracker attached to
/// it: the spans are then the new program's populated memory.
///
/// # Safety
/// `harvest` is NULL or a live harvest.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_harvest_after_exec(harvest: *const UffdDirtyHarvest) -> bool {
    guard(false, || {
        // SAFETY: the caller's contract.
        unsafe { harvest.as_ref() }.is_some_and(|h| h.harvest.after_exec())
    })
}

/// The instant the harvest stands for, in nanoseconds since the Unix epoch (CLOCK_REALTIME):
/// every write before it is in this harvest or an earlier one. 0 before any harvest.
///
/// # Safety
/// `harvest` is NULL or a live harvest.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_harvest_time_ns(harvest: *const UffdDirtyHarvest) -> u64 {
    guard(0, || {
        // SAFETY: the caller's contract.
        unsafe { harvest.as_ref() }.map_or(0, |h| {
            h.harvest
                .time()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
    })
}

/// How long the harvest took, in nanoseconds (the mapping refresh and the harvest proper).
///
/// # Safety
/// `harvest` is NULL or a live harvest.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_harvest_cost_ns(harvest: *const UffdDirtyHarvest) -> u64 {
    guard(0, || {
        // SAFETY: the caller's contract.
        unsafe { harvest.as_ref() }.map_or(0, |h| h.harvest.cost().as_nanos() as u64)
    })
}

/// How many mapping changes the last harvest into `harvest` found (mappings that appeared,
/// moved or went since the harvest before it); 0 if `harvest` is NULL. Read each with
/// `uffd_dirty_harvest_change()`.
///
/// # Safety
/// `harvest` is NULL or a live harvest.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_harvest_nr_changes(harvest: *const UffdDirtyHarvest) -> usize {
    guard(0, || {
        // SAFETY: the caller's contract.
        unsafe { harvest.as_ref() }.map_or(0, |h| h.harvest.changes().len())
    })
}

/// The sizes of `struct uffd_dirty_change` a caller may have been built with: each release
/// that adds fields adds its size here.
const CHANGE_SIZES: [usize; 1] = [size_of::<UffdDirtyChange>()];

/// Fill `*out` with mapping change `index` (from 0, below `uffd_dirty_harvest_nr_changes()`) of
/// the last harvest into `harvest`. Set `out->sz` first (`UFFD_DIRTY_CHANGE(c)`). 0, or
/// `-UFFD_DIRTY_ERROR_BAD_INPUT` for a NULL argument, an index past the end, or an `out->sz`
/// that is not a size of the struct. `out->name` points into the harvest: valid until the next
/// harvest into it, or its free. No call allocates.
///
/// A copier of the target's memory copies every `ADDED` and `MOVED` span whole: the harvest
/// does not report the pages of new memory that are still as they were mapped (a file's pages,
/// never written through the mapping), only those written. `MOVED`'s `from` is gone, with no
/// `REMOVED` for it. New memory is tracked from the harvest that reports it on.
///
/// # Safety
/// `harvest` is NULL or a live harvest; `out` is NULL or points to `out->sz` writable bytes
/// that start with a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_harvest_change(
    harvest: *const UffdDirtyHarvest,
    index: usize,
    out: *mut UffdDirtyChange,
) -> c_int {
    int_call(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { arg(harvest, "harvest") }?;
        if out.is_null() {
            return Err(bad_input("out is NULL"));
        }
        // SAFETY: out points to at least the leading size_t (the caller's contract).
        let sz = unsafe { std::ptr::addr_of!((*out).sz).read() };
        let known = size_of::<UffdDirtyChange>();
        if !CHANGE_SIZES.contains(&sz) && sz <= known {
            return Err(bad_input(format!(
                "out->sz is {sz}: set it to sizeof(struct uffd_dirty_change) (UFFD_DIRTY_CHANGE does)"
            )));
        }
        let changes = h.harvest.changes();
        let Some(c) = changes.get(index) else {
            return Err(bad_input(format!(
                "index {index} is past the harvest's {} mapping changes",
                changes.len()
            )));
        };
        let span = |s: Span| UffdDirtySpan {
            start: s.start,
            end: s.end,
        };
        // Every kind named: a change added to the library must be given a C kind here.
        let (kind, from) = match c.change {
            Change::Added => (
                UffdDirtyChangeKind::Added,
                UffdDirtySpan { start: 0, end: 0 },
            ),
            Change::Moved { from } => (UffdDirtyChangeKind::Moved, span(from)),
            Change::Removed => (
                UffdDirtyChangeKind::Removed,
                UffdDirtySpan { start: 0, end: 0 },
            ),
            Change::Replaced => (
                UffdDirtyChangeKind::Replaced,
                UffdDirtySpan { start: 0, end: 0 },
            ),
        };
        // index_names ran after the harvest that made these changes: one name each.
        let name = h.names[h.name_at[index]..].as_ptr().cast::<c_char>();
        let ours = UffdDirtyChange {
            sz,
            kind: kind as c_int,
            mapping_kind: UffdDirtyMappingKind::from(c.kind) as c_int,
            span: span(c.span),
            from,
            name,
        };
        let bytes = out.cast::<u8>();
        // SAFETY: out has sz writable bytes (the caller's contract): min(sz, known) of ours are
        // copied there, and any the caller's newer struct has past them are zeroed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&ours as *const UffdDirtyChange).cast::<u8>(),
                bytes,
                sz.min(known),
            );
            if sz > known {
                std::ptr::write_bytes(bytes.add(known), 0, sz - known);
            }
        }
        Ok(0)
    })
}

/// Copy the contents of the pages in `spans` (`nr_spans` of them, page-aligned, in address
/// order, not overlapping: as a harvest gives them) from the target's memory into `buf`, one
/// after the other. `buf_len` must hold them all. The target is not stopped: a page written
/// meanwhile may be copied in either state (the next harvest reports it again).
///
/// Pages that cannot be read (unmapped since, or never readable) are filled with zeros. Their
/// spans are stored in `unreadable` (up to `*nr_unreadable` of them, the capacity on entry), and
/// their number in `*nr_unreadable` (which may then exceed the capacity); pass NULL for both to
/// ignore them. Returns 0, or a negated error kind (`UFFD_DIRTY_ERROR_GONE_EXITED` once the target
/// exited).
///
/// # Safety
/// `tracker` is NULL or a live tracker; `spans` holds `nr_spans` spans; `buf` has `buf_len`
/// writable bytes; `unreadable` has room for `*nr_unreadable` spans, and `nr_unreadable` is NULL
/// or a readable and writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_read_pages(
    tracker: *const UffdDirtyTracker,
    spans: *const UffdDirtySpan,
    nr_spans: usize,
    buf: *mut c_void,
    buf_len: usize,
    unreadable: *mut UffdDirtySpan,
    nr_unreadable: *mut usize,
) -> c_int {
    int_call(|| {
        // SAFETY: the caller's contract.
        let tracker = unsafe { arg(tracker, "tracker") }?;
        // SAFETY: the caller's contract: nr_spans valid spans.
        let spans = unsafe { array(spans, nr_spans, "spans") }?;
        let page = tracker.0.page_size();
        let mut total: u64 = 0;
        let mut prev_end = 0;
        for (i, s) in spans.iter().enumerate() {
            if s.start >= s.end || s.start % page != 0 || s.end % page != 0 {
                return Err(bad_input(format!(
                    "spans[{i}] {:#x}-{:#x} is not a non-empty run of whole pages ({page} bytes)",
                    s.start, s.end
                )));
            }
            if s.start < prev_end {
                return Err(bad_input(format!(
                    "spans[{i}] {:#x}-{:#x} overlaps or precedes the span before it: give spans in address order",
                    s.start, s.end
                )));
            }
            prev_end = s.end;
            total += s.end - s.start;
        }
        if total > buf_len as u64 {
            return Err(bad_input(format!(
                "buf_len is {buf_len} bytes: the spans hold {total}"
            )));
        }
        let mut out: &mut [u8] = if total == 0 {
            &mut []
        } else if buf.is_null() {
            return Err(bad_input("buf is NULL"));
        } else {
            // SAFETY: buf has buf_len >= total writable bytes (the caller's contract).
            unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), total as usize) }
        };
        let set = SpanSet::from(
            spans
                .iter()
                .map(|s| Span::new(s.start, s.end))
                .collect::<Vec<_>>(),
        );
        let missed = tracker.0.read_pages(&set, &mut out)?;
        if !nr_unreadable.is_null() {
            let cap = if unreadable.is_null() {
                0
            } else {
                // SAFETY: nr_unreadable is a readable size_t (the caller's contract).
                unsafe { nr_unreadable.read() }
            };
            for (i, s) in missed.iter().take(cap).enumerate() {
                // SAFETY: unreadable has room for cap spans (the caller's contract).
                unsafe {
                    unreadable.add(i).write(UffdDirtySpan {
                        start: s.start,
                        end: s.end,
                    })
                };
            }
            // SAFETY: nr_unreadable is a writable size_t (the caller's contract).
            unsafe { nr_unreadable.write(missed.len()) };
        }
        Ok(0)
    })
}

/// Stop every thread of the target until `uffd_dirty_thaw()` (by ptrace, so its signal state
/// and registers are left exactly as they were): for a last harvest and copy that nothing can
/// race with. NULL on failure: `UFFD_DIRTY_ERROR_GONE_EXITED` for a target that exited,
/// `UFFD_DIRTY_ERROR_NOT_PERMITTED` for one the caller may not trace; freezing a target that is
/// already frozen (or traced by a debugger) fails.
///
/// The calling thread becomes the target's tracer: only it can thaw the target, so call
/// `uffd_dirty_thaw()` on the same thread. Until then every signal is blocked on that thread.
/// Should the thread exit first, the kernel lets the target run, and `uffd_dirty_thaw()` on
/// another thread of the process then just frees the handle.
///
/// With `UFFD_DIRTY_METHOD_SOFT_DIRTY`, a harvest stops the target itself and so fails while
/// it is frozen, unless the tracker was attached with `UFFD_DIRTY_ATTACH_NO_FREEZE`.
///
/// The frozen handle does not borrow the target: freeing the target does not thaw it.
///
/// # Safety
/// `target` is NULL or a live target.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_target_freeze(
    target: *mut UffdDirtyTarget,
) -> *mut UffdDirtyFrozen {
    new_handle(|| {
        // SAFETY: the caller's contract.
        let target = unsafe { arg(target, "target") }?;
        let frozen = target.0.freeze()?;
        Ok(UffdDirtyFrozen {
            frozen,
            // SAFETY: getpid and gettid cannot fail.
            pid: unsafe { libc::getpid() },
            // SAFETY: as above.
            tid: unsafe { libc::gettid() },
        })
    })
}

/// Whether thread `tid` of process `pid` still exists (a signal 0 reaches it).
fn thread_exists(pid: libc::pid_t, tid: libc::pid_t) -> bool {
    // SAFETY: tgkill with signal 0 sends nothing: it only checks that the thread exists.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Let a target stopped by `uffd_dirty_target_freeze()` run on, and free the handle (NULL:
/// nothing, 0). 0 on success.
///
/// Only the thread that froze the target can thaw it. On any other thread this refuses with
/// `-UFFD_DIRTY_ERROR_BAD_INPUT`, and the target stays frozen and the handle valid: thaw it
/// on its thread. Should that thread have exited (the kernel let the target run then), the
/// handle is freed and the call returns 0 (unless a new thread of the process got its ID
/// meanwhile: then the call refuses, as for a live thread).
///
/// # Safety
/// `frozen` is NULL or a frozen handle from this library, not used again after it is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn uffd_dirty_thaw(frozen: *mut UffdDirtyFrozen) -> c_int {
    int_call(|| {
        if frozen.is_null() {
            return Ok(0);
        }
        // SAFETY: the caller's contract: a live handle from new_handle.
        let (pid, tid) = unsafe { ((*frozen).pid, (*frozen).tid) };
        // SAFETY: getpid and gettid cannot fail.
        let (my_pid, my_tid) = unsafe { (libc::getpid(), libc::gettid()) };
        if pid == my_pid && tid == my_tid {
            // SAFETY: a pointer from new_handle, freed once: dropping it thaws the target.
            drop(unsafe { Box::from_raw(frozen) });
            return Ok(0);
        }
        if pid == my_pid && !thread_exists(pid, tid) {
            // The tracer thread exited, and the kernel detached it from the target. The
            // thaw proper would restore this thread's signal mask to the exited one's:
            // the handle is freed without it.
            // SAFETY: as above.
            let UffdDirtyFrozen { frozen, .. } = *unsafe { Box::from_raw(frozen) };
            std::mem::forget(frozen);
            return Ok(0);
        }
        Err(bad_input(if pid != my_pid {
            format!(
                "the target was frozen by process {pid}, not this one ({my_pid}): only the thread that froze it can thaw it"
            )
        } else {
            format!(
                "the target was frozen by thread {tid}, not this one ({my_tid}): only that thread (its ptrace tracer) can thaw it; the target stays frozen and the handle valid"
            )
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MappingChange;

    fn last_error() -> String {
        // SAFETY: the last error is a NUL-terminated string of this thread.
        unsafe { CStr::from_ptr(uffd_dirty_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_is_an_error_in_c_not_an_unwind() {
        assert_eq!(
            int_call(|| panic!("boom")),
            -(UffdDirtyError::Other as c_int)
        );
        assert_eq!(uffd_dirty_last_error_kind(), UffdDirtyError::Other as c_int);
        assert!(last_error().contains("boom"), "{}", last_error());
        let p: *mut UffdDirtyHarvest = new_handle(|| panic!("{}", String::from("bang")));
        assert!(p.is_null());
        assert!(last_error().contains("bang"), "{}", last_error());
    }

    #[test]
    fn every_error_has_its_c_kind() {
        let gone = |why| Error::Gone { pid: 1, why };
        for (e, kind) in [
            (
                Error::NotPermitted("n".into()),
                UffdDirtyError::NotPermitted,
            ),
            (Error::Unsupported("u".into()), UffdDirtyError::Unsupported),
            (Error::BadInput("b".into()), UffdDirtyError::BadInput),
            (gone(Gone::Exited), UffdDirtyError::GoneExited),
            (gone(Gone::Exec), UffdDirtyError::GoneExec),
            (
                Error::AfterExec(Box::new(Error::NotPermitted("setuid".into()))),
                UffdDirtyError::GoneExec,
            ),
            (
                Error::Failed {
                    message: "f\0x".into(),
                    errno: Some(libc::EIO),
                },
                UffdDirtyError::Other,
            ),
        ] {
            assert_eq!(fail(&e), -(kind as c_int), "{e:?}");
            assert_eq!(uffd_dirty_last_error_kind(), kind as c_int);
        }
        // The errno, and a NUL in a message kept visible rather than cutting it short.
        assert_eq!(uffd_dirty_last_errno(), libc::EIO);
        assert_eq!(last_error(), "f\\0x");
    }

    #[test]
    fn options_are_read_by_their_size() {
        fn read<T>(opts: &T) -> Result<UffdDirtyAttachOpts, Error> {
            // SAFETY: `opts` is a live struct that starts with the options, o.sz bytes long
            // at most (every caller below), and the pointer covers all of it.
            unsafe { read_opts((opts as *const T).cast()) }
        }
        let mut o = UFFD_DIRTY_DEFAULTS;
        assert!(matches!(read(&o), Ok(r) if r.method == 0 && r.nr_ranges == 0));
        o.sz = 0;
        assert!(matches!(read(&o), Err(Error::BadInput(_))));
        o.sz = 12;
        assert!(matches!(read(&o), Err(Error::BadInput(_))));
        #[repr(C)]
        struct Newer {
            o: UffdDirtyAttachOpts,
            future: u64,
        }
        let mut newer = Newer {
            o: UffdDirtyAttachOpts {
                sz: size_of::<Newer>(),
                flags: UFFD_DIRTY_ATTACH_NO_FOLLOW_EXEC,
                ..UFFD_DIRTY_DEFAULTS
            },
            future: 0,
        };
        let r = read(&newer);
        assert!(matches!(r, Ok(r) if r.flags == UFFD_DIRTY_ATTACH_NO_FOLLOW_EXEC));
        newer.future = 7;
        assert!(matches!(read(&newer), Err(Error::BadInput(_))));
        // SAFETY: NULL is valid: the defaults.
        let r = unsafe { read_opts(std::ptr::null()) };
        assert!(matches!(r, Ok(r) if r.sz == size_of::<UffdDirtyAttachOpts>()));
    }

    fn harvest_with(changes: Vec<MappingChange>) -> UffdDirtyHarvest {
        let mut h = UffdDirtyHarvest {
            harvest: Harvest::new(),
            names: Vec::new(),
            name_at: Vec::new(),
        };
        h.harvest.changes = changes;
        h.index_names();
        h
    }

    fn change(h: &UffdDirtyHarvest, i: usize) -> Result<(UffdDirtyChange, String), c_int> {
        let mut c = UffdDirtyChange {
            sz: size_of::<UffdDirtyChange>(),
            kind: -1,
            mapping_kind: -1,
            span: UffdDirtySpan { start: 1, end: 1 },
            from: UffdDirtySpan { start: 1, end: 1 },
            name: std::ptr::null(),
        };
        // SAFETY: a live harvest and a struct of the size it says.
        match unsafe { uffd_dirty_harvest_change(h, i, &mut c) } {
            0 => {
                // SAFETY: a change's name is a NUL-terminated string of the harvest.
                let name = unsafe { CStr::from_ptr(c.name) }
                    .to_string_lossy()
                    .into_owned();
                Ok((c, name))
            }
            e => Err(e),
        }
    }

    #[test]
    fn changes_are_handed_out_with_their_names() {
        let h = harvest_with(vec![
            MappingChange {
                change: Change::Added,
                span: Span::new(0x1000, 0x3000),
                name: "/lib/a\0b.so".into(),
                kind: Some(MappingKind::File),
            },
            MappingChange {
                change: Change::Moved {
                    from: Span::new(0x8000, 0x9000),
                },
                span: Span::new(0x5000, 0x6000),
                name: "[anon]".into(),
                kind: Some(MappingKind::Anon),
            },
            MappingChange {
                change: Change::Removed,
                span: Span::new(0xa000, 0xb000),
                name: String::new(),
                kind: None,
            },
        ]);
        // SAFETY: a live harvest.
        assert_eq!(unsafe { uffd_dirty_harvest_nr_changes(&h) }, 3);
        let (c, name) = change(&h, 0).unwrap();
        assert_eq!(c.kind, UffdDirtyChangeKind::Added as c_int);
        assert_eq!(c.mapping_kind, UffdDirtyMappingKind::File as c_int);
        assert_eq!((c.span.start, c.span.end), (0x1000, 0x3000));
        assert_eq!((c.from.start, c.from.end), (0, 0));
        // A NUL in a name is kept visible rather than cutting it short.
        assert_eq!(name, "/lib/a\\0b.so");
        let (c, name) = change(&h, 1).unwrap();
        assert_eq!(c.kind, UffdDirtyChangeKind::Moved as c_int);
        assert_eq!((c.from.start, c.from.end), (0x8000, 0x9000));
        assert_eq!(name, "[anon]");
        let (c, name) = change(&h, 2).unwrap();
        assert_eq!(c.kind, UffdDirtyChangeKind::Removed as c_int);
        assert_eq!(c.mapping_kind, UffdDirtyMappingKind::Unmapped as c_int);
        assert_eq!(name, "");
        assert_eq!(
            change(&h, 3).unwrap_err(),
            -(UffdDirtyError::BadInput as c_int)
        );

        // A caller built with a newer, longer struct: what this library does not know is 0.
        #[repr(C)]
        struct Newer {
            c: UffdDirtyChange,
            future: u64,
        }
        let mut newer = Newer {
            c: UffdDirtyChange {
                sz: size_of::<Newer>(),
                ..change(&h, 0).unwrap().0
            },
            future: u64::MAX,
        };
        // SAFETY: a live harvest and a struct of the size it says.
        assert_eq!(unsafe { uffd_dirty_harvest_change(&h, 1, &mut newer.c) }, 0);
        assert_eq!((newer.future, newer.c.sz), (0, size_of::<Newer>()));
        assert_eq!(newer.c.kind, UffdDirtyChangeKind::Moved as c_int);
        // A size that is no release's: the caller did not set it.
        newer.c.sz = 8;
        // SAFETY: as above (8 bytes are writable).
        let r = unsafe { uffd_dirty_harvest_change(&h, 0, &mut newer.c) };
        assert_eq!(r, -(UffdDirtyError::BadInput as c_int));
        assert!(last_error().contains("out->sz is 8"), "{}", last_error());

        // No changes: no names, the buffers kept.
        let mut h = h;
        let cap = h.names.capacity();
        h.harvest.changes.clear();
        h.index_names();
        assert!(h.names.is_empty() && h.name_at.is_empty() && h.names.capacity() == cap);
        // SAFETY: NULL is a valid harvest argument.
        let none = unsafe { uffd_dirty_harvest_nr_changes(std::ptr::null()) };
        assert_eq!(none, 0);
    }

    #[test]
    fn freeze_and_thaw_refuse_null() {
        // SAFETY: NULL is a valid target argument.
        assert!(unsafe { uffd_dirty_target_freeze(std::ptr::null_mut()) }.is_null());
        assert_eq!(
            uffd_dirty_last_error_kind(),
            UffdDirtyError::BadInput as c_int
        );
        // SAFETY: as above.
        assert_eq!(unsafe { uffd_dirty_thaw(std::ptr::null_mut()) }, 0);
    }

    #[test]
    fn a_thread_that_exited_is_told_from_a_live_one() {
        // SAFETY: getpid and gettid cannot fail.
        let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
        assert!(thread_exists(pid, me));
        // SAFETY: as above.
        let other = std::thread::spawn(|| unsafe { libc::gettid() })
            .join()
            .unwrap();
        // A joined thread may still be listed for a moment (its TID is cleared for the joiner
        // before the kernel is done with it): it goes.
        let gone = (0..1000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            !thread_exists(pid, other)
        });
        assert!(
            gone,
            "thread {other} still listed a second after it was joined"
        );
        // Not a thread of this process.
        assert!(!thread_exists(pid, 1));
    }

    #[test]
    fn spans_are_handed_over_in_place() {
        let set = SpanSet::from(vec![Span::new(0x3000, 0x5000), Span::new(0x1000, 0x2000)]);
        let mut n = 0;
        let p = spans_out(&set, &mut n);
        // SAFETY: spans_out hands out the set's n spans, alive as long as the set.
        let c = unsafe { std::slice::from_raw_parts(p, n) };
        assert_eq!(
            c,
            [
                UffdDirtySpan {
                    start: 0x1000,
                    end: 0x2000
                },
                UffdDirtySpan {
                    start: 0x3000,
                    end: 0x5000
                }
            ]
        );
        n = 9;
        // SAFETY: NULL is a valid harvest argument.
        assert!(unsafe { uffd_dirty_harvest_spans(std::ptr::null(), &mut n) }.is_null());
        assert_eq!(n, 0);
    }
}
