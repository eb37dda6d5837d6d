//! The target's VMAs: reading `/proc/PID/maps`, naming what each mapping is, and choosing
//! which parts the tracker arms.
//!
//! Parsed by hand rather than with `procfs`: it runs every interval, and all we need is one
//! line split into six fields without allocating per field.

use std::fmt;
use std::fs;
use std::io;

pub use crate::span::{
    Span, intersect, intersect_into, subtract, subtract_into, union, union_in_place,
};

/// One mapping of the target (a line of `/proc/PID/maps`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Vma {
    /// Its first address.
    pub start: u64,
    /// The first address past it.
    pub end: u64,
    /// Readable now.
    pub read: bool,
    /// Writable now.
    pub write: bool,
    /// Executable now.
    pub exec: bool,
    /// Shared (`MAP_SHARED`) rather than private.
    pub shared: bool,
    /// The offset in its file (the page offset, for anonymous memory).
    pub offset: u64,
    /// Its file's inode, 0 for anonymous memory.
    pub inode: u64,
    /// The pathname column: a file, `[heap]`, `[stack]`, `/memfd:x (deleted)`, or empty,
    /// written printably and reversibly: the target chooses its files' names, and a name is
    /// bytes (not always UTF-8, maybe with terminal escapes in it), so a byte that is not
    /// printable UTF-8 appears as `\xNN` and a backslash as `\\`.
    pub name: String,
}

/// What a mapping is, from its name and flags in `/proc/PID/maps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MappingKind {
    /// Private anonymous memory (`malloc`'s arenas, `mmap(MAP_ANONYMOUS)`), named or not.
    Anon,
    /// The `brk` heap, `[heap]`.
    Heap,
    /// The main thread's stack, `[stack]`.
    Stack,
    /// A file mapping (program text and data, libraries, `mmap` of a file).
    File,
    /// Shared memory: memfd, `/dev/shm`, SysV, shared anonymous memory.
    Shmem,
    /// hugetlbfs memory.
    Hugetlb,
    /// A kernel special mapping (`[vdso]`, `[vvar]`, driver mappings): never tracked.
    Special,
}

display_as_serialized!(MappingKind);

impl Vma {
    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether it is empty (never, for a listed mapping).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Its name as the kernel gave it, bytes (the reverse of how [`name`](Vma::name) is
    /// written).
    pub fn name_bytes(&self) -> Vec<u8> {
        name_bytes(&self.name)
    }

    /// What it is, from its name and flags.
    pub fn kind(&self) -> MappingKind {
        let n = self.name.as_str();
        if n == "[heap]" {
            MappingKind::Heap
        } else if n == "[stack]" || n.starts_with("[stack:") {
            MappingKind::Stack
        } else if n.starts_with('[') || n.starts_with("anon_inode:") {
            // [vdso], [vvar], [vsyscall], [anon:name] handled below, driver mappings.
            if n.starts_with("[anon:") || n.starts_with("[anon_shmem:") {
                if self.shared {
                    MappingKind::Shmem
                } else {
                    MappingKind::Anon
                }
            } else {
                MappingKind::Special
            }
        } else if n.is_empty() {
            MappingKind::Anon
        } else if n.starts_with("/anon_hugepage")
            || n.contains("/hugepages")
            || n.starts_with("/dev/hugepages")
        {
            MappingKind::Hugetlb
        } else if n.starts_with("/memfd:")
            || (self.shared
                && (n.starts_with("/dev/zero")
                    || n.starts_with("/SYSV")
                    || n.starts_with("/dev/shm/")))
        {
            MappingKind::Shmem
        } else {
            MappingKind::File
        }
    }

    /// The name shown to users: the pathname, or `[anon]` for nameless memory.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            "[anon]"
        } else {
            &self.name
        }
    }

    /// A mapping the tracker follows by default: every one that can ever be written
    /// (`VM_MAYWRITE`), whatever its permissions now, never a kernel special mapping. Memory
    /// made writable, written and made read-only again between two harvests (ld.so's RELRO
    /// after every `dlopen()`, a JIT's code) must have been armed before, since a listing
    /// taken afterwards looks exactly as before. Every private mapping may be written
    /// (`mprotect` can always add `PROT_WRITE` to it; text and `PROT_NONE` included); a
    /// shared one only if its file was opened for writing, which `/proc/PID/maps` does not
    /// show: registering one that cannot fails with EPERM, and it is reported as skipped.
    pub(crate) fn is_trackable_by_default(&self) -> bool {
        self.kind() != MappingKind::Special
    }

    /// A private mapping of a regular file: its pages are the file's until written, when
    /// they are copied (anonymous), so a present page that is still the file's was never
    /// written through it.
    pub(crate) fn is_private_file(&self) -> bool {
        !self.shared && self.kind() == MappingKind::File
    }

    /// Private anonymous memory (heap, stack, anonymous mappings): what it holds the
    /// process wrote, or zeros.
    pub(crate) fn is_private_anon(&self) -> bool {
        !self.shared
            && matches!(
                self.kind(),
                MappingKind::Anon | MappingKind::Heap | MappingKind::Stack
            )
    }
}

impl std::str::FromStr for Vma {
    type Err = crate::Error;

    /// Parse a line of `/proc/PID/maps`.
    ///
    /// ```
    /// let m: uffd_dirty::Mapping = "7f00a000-7f00b000 rw-p 00000000 00:00 0 [heap]".parse()?;
    /// assert_eq!((m.start, m.len(), m.kind()), (0x7f00a000, 0x1000, uffd_dirty::MappingKind::Heap));
    /// # Ok::<(), uffd_dirty::Error>(())
    /// ```
    fn from_str(line: &str) -> Result<Vma, crate::Error> {
        parse_line(line).ok_or_else(|| {
            crate::Error::BadInput(format!(
                "`{}` is not a line of /proc/PID/maps",
                visible(line)
            ))
        })
    }
}

impl fmt::Display for Vma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x}-{:#x} {}",
            self.start,
            self.end,
            self.display_name()
        )
    }
}

/// Parse one maps line; `None` for a malformed line (never seen, but the kernel owns the format).
/// A line is bytes: the name is whatever the target named its file (see [`name_text`]).
pub fn parse_line(line: impl AsRef<[u8]>) -> Option<Vma> {
    let line = line.as_ref();
    let mut fields = line.splitn(6, |&b| b == b' ');
    // The five fields before the name are ASCII, written by the kernel.
    let mut ascii = || std::str::from_utf8(fields.next()?).ok();
    let range = ascii()?;
    let perms = ascii()?.as_bytes();
    let offset = u64::from_str_radix(ascii()?, 16).ok()?;
    let _dev = ascii()?;
    let inode = ascii()?.parse().ok()?;
    let name = fields.next().unwrap_or_default();
    let name = &name[name.iter().take_while(|&&b| b == b' ').count()..];
    let (start, end) = range.split_once('-')?;
    if perms.len() < 4 {
        return None;
    }
    Some(Vma {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        offset,
        inode,
        name: name_text(name),
    })
}

/// A name from the target (a mapping's path, an executable's, a thread's `comm`) as text that
/// is safe to print anywhere and gives the bytes back: valid UTF-8 stays as it is, except
/// that a backslash is written `\\`, and every byte of invalid UTF-8 or of a character that
/// would act on a terminal or break a document (see [`is_unsafe_char`]) is written `\xNN`,
/// two lowercase hex digits. [`name_bytes`] reverses it. The kernel has already written a
/// newline in a path as `\012` (and left a backslash alone), so those four bytes are what
/// come back for it.
pub fn name_text(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len());
    let mut utf8 = [0u8; 4];
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if is_unsafe_char(c) {
                for b in c.encode_utf8(&mut utf8).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The bytes [`name_text`] wrote `text` from. Any other backslash is kept as it is.
pub(crate) fn name_bytes(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if b.get(i + 1) == Some(&b'x')
                && let Some(byte) = b
                    .get(i + 2..i + 4)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
            {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A character that must not reach a terminal or a document as it is: the control characters
/// (C0, DEL, C1: a terminal acts on them, and XML 1.0 forbids most), the bidirectional
/// formatting characters and the line and paragraph separators (they reorder or break what
/// follows them on the line), and U+FFFE and U+FFFF (not characters in XML).
pub(crate) fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{fffe}'
                | '\u{ffff}'
        )
}

/// `text` safe to print on a terminal or in a document: every control character, and every
/// character that reorders or breaks a line (bidirectional formatting, line and paragraph
/// separators), written as its UTF-8 bytes, `\xNN` each, as mapping names already are
/// ([`Mapping::name`](crate::Mapping::name)). For text that did not go through that (an error
/// message, a record read back from a file). Backslashes are left alone.
///
/// ```
/// assert_eq!(uffd_dirty::printable("a\x1b]0;title\x07b"), "a\\x1b]0;title\\x07b");
/// assert_eq!(uffd_dirty::printable("/usr/lib/libc.so.6"), "/usr/lib/libc.so.6");
/// ```
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    use fmt::Write;
    if !text.chars().any(is_unsafe_char) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut utf8 = [0u8; 4];
    for c in text.chars() {
        if is_unsafe_char(c) {
            for b in c.encode_utf8(&mut utf8).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Read and parse `/proc/PID/maps`.
pub fn read_maps(pid: i32) -> io::Result<Vec<Vma>> {
    MapsReader::new(pid).read()
}

/// `/proc/PID/maps` read every interval, as cheaply as a steady address space allows: where
/// the kernel has `PROCMAP_QUERY` (6.11+), one ioctl per VMA on an fd kept open tells whether
/// anything changed (a pass costs about half the text's formatting); the text is read only
/// when something did, into buffers kept between reads, and parsed only when it differs from
/// the last listing.
pub struct MapsReader {
    path: String,
    /// Bytes, not `String`: a name need not be UTF-8.
    text: Vec<u8>,
    last: Vec<u8>,
    /// Kept open for `PROCMAP_QUERY` (see [`MapsReader::watching`]); `None` without it.
    query: Option<fs::File>,
    /// The last listing parsed, and what the queries see now, per VMA: range, permissions,
    /// offset and inode (all that decides what is tracked; names are for display only).
    /// Taken from the parsed text itself, not from a query pass beside it: the text is not
    /// one atomic snapshot, so whatever it missed differs from the next pass and is read
    /// again.
    shape: Vec<VmaShape>,
    shape_now: Vec<VmaShape>,
}

/// A VMA as `PROCMAP_QUERY` describes it: start, end, permission bits, offset, inode.
type VmaShape = [u64; 5];

/// The shape of a parsed VMA, in `PROCMAP_QUERY`'s terms (flags: read 1, write 2, exec 4,
/// shared 8; offset and inode 0 for anonymous memory, as in the text). `None` for the
/// `[vsyscall]` page above the user address space, which the text lists and the queries
/// never return.
fn shape_of(v: &Vma) -> Option<VmaShape> {
    let flags = u64::from(v.read)
        | u64::from(v.write) << 1
        | u64::from(v.exec) << 2
        | u64::from(v.shared) << 3;
    (v.start < crate::sys::abi::TASK_SIZE).then_some([v.start, v.end, flags, v.offset, v.inode])
}

impl MapsReader {
    /// A reader of the text alone.
    pub fn new(pid: i32) -> MapsReader {
        MapsReader {
            path: format!("/proc/{pid}/maps"),
            text: Vec::new(),
            last: Vec::new(),
            query: None,
            shape: Vec::new(),
            shape_now: Vec::new(),
        }
    }

    /// A reader for [`MapsReader::changed`] every interval, using `PROCMAP_QUERY` where the
    /// kernel has it. The fd belongs to the address space of the moment: after an exec, make
    /// a new reader.
    pub fn watching(pid: i32) -> MapsReader {
        let mut reader = MapsReader::new(pid);
        reader.query = fs::File::open(&reader.path).ok();
        // One pass now, so that `queries()` is known from the start: without PROCMAP_QUERY
        // (or on any failure) the fd is dropped and the text is read.
        if !matches!(reader.query_shape(), Ok(true)) {
            reader.query = None;
        }
        reader
    }

    /// Whether [`MapsReader::changed`] starts with a `PROCMAP_QUERY` pass (on the address
    /// space the reader was made for: after an exec it fails with ESRCH).
    pub fn queries(&self) -> bool {
        self.query.is_some()
    }

    fn read_text(&mut self) -> io::Result<()> {
        use io::Read;
        self.text.clear();
        fs::File::open(&self.path)?.read_to_end(&mut self.text)?;
        Ok(())
    }

    /// Keep what was read as the last listing, parse it, and remember its shape.
    fn take_listing(&mut self) -> Vec<Vma> {
        std::mem::swap(&mut self.text, &mut self.last);
        let vmas: Vec<Vma> = self
            .last
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(parse_line)
            .collect();
        self.shape.clear();
        self.shape.extend(vmas.iter().filter_map(shape_of));
        vmas
    }

    /// Query every VMA into `shape_now`. `Ok(false)`: the kernel has no `PROCMAP_QUERY`
    /// (and it is not asked again).
    fn query_shape(&mut self) -> io::Result<bool> {
        use std::os::fd::AsFd;
        let Some(maps) = &self.query else {
            return Ok(false);
        };
        self.shape_now.clear();
        let mut addr = 0;
        loop {
            let next = crate::sys::procmap_query(
                maps.as_fd(),
                crate::sys::abi::PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
                addr,
            );
            match next {
                Ok(q) => {
                    let vma = [q.vma_start, q.vma_end, q.vma_flags, q.vma_offset, q.inode];
                    self.shape_now.push(vma);
                    addr = q.vma_end;
                }
                // Past the last VMA.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(true),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
                    self.query = None;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether each of `vmas` (from the last listing) is still there as it was, by one
    /// `PROCMAP_QUERY` each. `Ok(false)` too without `PROCMAP_QUERY`: only a full listing
    /// can tell then.
    pub(crate) fn same(&self, vmas: &[Vma]) -> io::Result<bool> {
        use std::os::fd::AsFd;
        let Some(maps) = &self.query else {
            return Ok(false);
        };
        for v in vmas {
            let Some(shape) = shape_of(v) else { continue };
            let q = match crate::sys::procmap_query(
                maps.as_fd(),
                crate::sys::abi::PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
                v.start,
            ) {
                Ok(q) => q,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
                Err(e) => return Err(e),
            };
            if [q.vma_start, q.vma_end, q.vma_flags, q.vma_offset, q.inode] != shape {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The VMAs now.
    pub fn read(&mut self) -> io::Result<Vec<Vma>> {
        self.read_text()?;
        Ok(self.take_listing())
    }

    /// The VMAs now, or `None` when nothing changed since the last listing parsed. (A VMA
    /// replaced in place by an identical one looks the same: see `PagemapScan::unarmed`.)
    /// Every VMA is queried, whatever its permissions: memory made writable, written and
    /// made read-only again between two passes must have been armed before.
    pub fn changed(&mut self) -> io::Result<Option<Vec<Vma>>> {
        if self.query_shape()? && self.shape_now == self.shape && !self.last.is_empty() {
            return Ok(None);
        }
        self.read_text()?;
        Ok((self.text != self.last).then(|| self.take_listing()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let v = parse_line("7f00a0000000-7f00b0000000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(
            (v.start, v.end, v.write, v.shared, v.kind()),
            (
                0x7f00a0000000,
                0x7f00b0000000,
                true,
                false,
                MappingKind::Anon
            )
        );
        let v = parse_line(
            "55d0c8a1e000-55d0c8a3f000 rw-p 00000000 00:00 0                          [heap]",
        )
        .unwrap();
        assert_eq!((v.name.as_str(), v.kind()), ("[heap]", MappingKind::Heap));
        let v = parse_line("7f1c2e000000-7f1c2e100000 rw-s 00000000 00:01 1234                       /memfd:buf (deleted)").unwrap();
        assert_eq!(v.kind(), MappingKind::Shmem);
        let v = parse_line(
            "7ffd5c3f8000-7ffd5c3fc000 r--p 00000000 00:00 0                          [vvar]",
        )
        .unwrap();
        assert!(!v.is_trackable_by_default());
        let v = parse_line("7f1c2e000000-7f1c2e100000 ---p 00000000 00:00 0").unwrap();
        assert!(
            v.is_trackable_by_default(),
            "PROT_NONE anonymous memory is followed (armed page by page)"
        );
        let v = parse_line("7f1c2e000000-7f1c2e100000 r-xp 00000000 08:01 99 /usr/lib/libc.so.6")
            .unwrap();
        assert!(
            v.is_trackable_by_default() && v.is_private_file(),
            "program text may be made writable (and RELRO was)"
        );
        let v =
            parse_line("7f1c2e000000-7f1c2e100000 r--s 00000000 08:01 99 /var/cache/x").unwrap();
        assert!(
            v.is_trackable_by_default() && !v.is_private_file(),
            "a read-only shared mapping is tried: EPERM tells it can never be written"
        );
        let v = parse_line(
            "7f1c2e000000-7f1c2e100000 rw-p 00001000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(
            (v.kind(), v.offset, v.inode),
            (MappingKind::File, 0x1000, 99)
        );
        assert!(parse_line("garbage").is_none());
    }

    /// Names are the target's bytes: not UTF-8, terminal escapes, spaces, the kernel's own
    /// `\012` and ` (deleted)`. Each is parsed, written printably, and read back exactly.
    #[test]
    fn names_are_bytes_written_printably_and_reversibly() {
        let cases: [(&[u8], &str); 8] = [
            (b"/usr/lib/libc.so.6", "/usr/lib/libc.so.6"),
            (b"/tmp/a b  c (deleted)", "/tmp/a b  c (deleted)"),
            (b"/tmp/\xff\xfe-x", "/tmp/\\xff\\xfe-x"),
            (b"/tmp/\x1b]0;pwned\x07", "/tmp/\\x1b]0;pwned\\x07"),
            (b"/tmp/\x1b[2J\x1b[8m", "/tmp/\\x1b[2J\\x1b[8m"),
            (b"/tmp/a\\012b\\x41", "/tmp/a\\\\012b\\\\x41"),
            // C1 CSI and a right-to-left override, as their UTF-8 bytes; other text stays.
            (
                "/tmp/\u{9b}2J\u{202e}é✓".as_bytes(),
                "/tmp/\\xc2\\x9b2J\\xe2\\x80\\xaeé✓",
            ),
            (b"/tmp/\xc3", "/tmp/\\xc3"),
        ];
        for (bytes, text) in cases {
            let mut line = b"7f1c2e000000-7f1c2e100000 rw-p 00000000 08:01 99     ".to_vec();
            line.extend_from_slice(bytes);
            let v = parse_line(&line).unwrap();
            assert_eq!(v.name, text);
            assert_eq!(name_bytes(&v.name), bytes, "{text}");
            assert!(!v.name.chars().any(is_unsafe_char), "{text}");
            assert_eq!(v.kind(), MappingKind::File);
        }
        // A backslash not written by name_text is kept.
        assert_eq!(name_bytes("a\\q\\x4\\x+1\\"), b"a\\q\\x4\\x+1\\");
        assert_eq!(visible("ok \\x1b"), "ok \\x1b");
        assert_eq!(visible("\x1b]0;t\x07\u{85}"), "\\x1b]0;t\\x07\\xc2\\x85");
    }
}

/// The mapping holding `addr`, among `mappings` sorted by start (as
/// [`Tracker::mappings`](crate::Tracker::mappings) gives them).
///
/// ```
/// # use uffd_dirty::{Mapping, mapping_at};
/// # fn f(mappings: &[Mapping]) {
/// if let Some(m) = mapping_at(mappings, 0x7f00_0000_1000) {
///     println!("{} ({})", m.display_name(), m.kind());
/// }
/// # }
/// ```
pub fn mapping_at(vmas: &[Vma], addr: u64) -> Option<&Vma> {
    let i = vmas.partition_point(|v| v.start <= addr);
    i.checked_sub(1).map(|i| &vmas[i]).filter(|v| addr < v.end)
}

#[cfg(test)]
mod subtract_tests {
    use super::*;

    /// Read until the listing holds still (other test threads may map memory meanwhile),
    /// then map something: the change is seen, and it lists the new mapping.
    fn sees_changes(mut maps: MapsReader) {
        let first = maps.read().unwrap();
        assert!(!first.is_empty());
        let still = (0..100).any(|_| maps.changed().unwrap().is_none());
        assert!(still, "the listing never held still");
        let region = crate::sys::AnonMapping::new(7 << 12, 0).unwrap();
        let now = maps
            .changed()
            .unwrap()
            .expect("a new mapping changes the listing");
        assert!(
            now.iter()
                .any(|v| v.start <= region.addr() && region.addr() < v.end),
            "the new mapping is listed"
        );
    }

    #[test]
    fn maps_reader_parses_only_a_changed_listing() {
        sees_changes(MapsReader::new(std::process::id() as i32));
    }

    #[test]
    fn maps_reader_watching_with_procmap_query_sees_changes_too() {
        let mut maps = MapsReader::watching(std::process::id() as i32);
        if !maps.query_shape().unwrap() {
            crate::testing::skipped("this kernel has no PROCMAP_QUERY (Linux 6.11+)");
            return;
        }
        assert!(maps.shape_now.len() > 5, "{:?}", maps.shape_now);
        // The queries and the parsed text describe a steady address space alike, so a steady
        // one is seen without reading the text.
        let alike = (0..100).any(|_| {
            maps.read().unwrap();
            maps.query_shape().unwrap() && maps.shape_now == maps.shape
        });
        assert!(alike, "queries {:?}\ntext {:?}", maps.shape_now, maps.shape);
        sees_changes(maps);
    }
}
