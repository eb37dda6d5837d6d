//! The snapshot directory (docs/snapshot-format.md): one pages file and one index per round,
//! and `manifest.json`, replaced by an atomic rename after each round, that names the rounds
//! that are complete. A round whose files exist but which the manifest does not name was cut
//! short (the snapshotter killed, the disk full) and is never read.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use uffd_dirty::{Span, SpanSet};

pub const FORMAT: &str = "uffd-dirty-snapshot";
pub const VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";

/// `manifest.json`: what the snapshot is and which rounds are complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub pid: i32,
    /// The target's program, as `/proc/PID/exe` named it.
    pub exe: String,
    pub page_size: u64,
    /// When the snapshot began (RFC 3339, UTC).
    pub started: String,
    /// Complete rounds, in order.
    pub rounds: Vec<RoundEntry>,
    /// `running` while rounds are taken; then how it ended.
    pub state: State,
    /// Set once the snapshot ended.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub end: Option<End>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Rounds are being taken (or the snapshotter was killed: the last round named is whole).
    Running,
    /// Ended with its final round, or after its last pre-copy round (`--final none`).
    Finished,
    /// Ended early (a signal, an error, the target's exit): the rounds named are whole.
    Incomplete,
}

/// How a snapshot ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct End {
    /// converged, max-rounds, not-converging, input-closed, signal, target-exited, error.
    pub reason: String,
    /// Why, in words.
    pub message: String,
    /// How long the target was stopped for the final round, if there was one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub downtime_ms: Option<f64>,
    /// The target was left stopped (SIGSTOP) after the final round.
    pub left_stopped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoundKind {
    /// Round 0: every page holding data.
    Full,
    /// The pages written since the previous round, the target running.
    Precopy,
    /// The pages written since the previous round, the target stopped.
    Final,
}

/// One complete round, as the manifest names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundEntry {
    pub round: u32,
    pub kind: RoundKind,
    /// RFC 3339 time of the round's harvest.
    pub time: String,
    pub pages_file: String,
    pub index_file: String,
    /// Size of the pages file, and CRC-32 (IEEE) of its bytes and of the index's.
    pub pages_bytes: u64,
    pub pages_crc32: u32,
    pub index_crc32: u32,
    /// Pages the harvest reported written.
    pub dirty_pages: u64,
    /// Pages read from the target (the dirty ones, and new file and shared memory whole).
    pub copied_pages: u64,
    /// Of those, pages stored with their bytes, and pages all zeros (stored as a range).
    pub data_pages: u64,
    pub zero_pages: u64,
    /// Pages the target held tracked at this round.
    pub tracked_pages: u64,
}

/// A round's index: the address space at this round, what this round voids of earlier rounds,
/// and where each page it copied is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundIndex {
    pub round: u32,
    /// The tracked mappings at this round, in address order.
    pub mappings: Vec<MappingRecord>,
    /// Mappings that appeared, moved, were replaced or went since the previous round.
    pub changes: Vec<ChangeRecord>,
    /// Memory whose earlier contents no longer hold (new, moved, replaced or unmapped memory):
    /// applied before `runs`. Pages there that no later run stores were never written: zeros.
    pub reset: Vec<[u64; 2]>,
    /// The pages this round copied, in address order: `[start, end, offset]` with `offset` the
    /// place of the bytes in the pages file, or `[start, end]` for pages that are all zeros.
    pub runs: Vec<Run>,
    /// Pages of tracked memory that could not be read (they count as zeros).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub unreadable: Vec<[u64; 2]>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MappingRecord {
    pub start: u64,
    pub end: u64,
    /// `rwxp` as in /proc/PID/maps.
    pub perms: String,
    pub offset: u64,
    pub kind: uffd_dirty::MappingKind,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// added, moved, replaced, removed.
    pub change: String,
    pub start: u64,
    pub end: u64,
    /// For a move, where the memory was.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<[u64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<uffd_dirty::MappingKind>,
    pub name: String,
}

/// `[start, end, offset]` (data) or `[start, end]` (zeros): serialized as an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Run {
    Data(u64, u64, u64),
    Zero(u64, u64),
}

impl Run {
    pub fn span(&self) -> Span {
        match *self {
            Run::Data(s, e, _) | Run::Zero(s, e) => Span::new(s, e),
        }
    }
}

pub fn pages_file(round: u32) -> String {
    format!("round-{round:04}.pages")
}

pub fn index_file(round: u32) -> String {
    format!("round-{round:04}.index.json")
}

/// Create `dir` (0700: it will hold the target's memory), or take an empty one.
pub fn create_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let mut entries = fs::read_dir(dir)
        .with_context(|| format!("--dir {}: not a directory we can read", dir.display()))?;
    if entries.next().is_some() {
        bail!(crate::exit::usage(format!(
            "--dir {} is not empty: give a new or empty directory for the snapshot",
            dir.display()
        )));
    }
    Ok(())
}

/// Write `bytes` to `dir/name` whole or not at all: a temporary file, synced, renamed over.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = private_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Writes one round's pages as `read_pages` delivers them (the pages of `spans`, in address
/// order): pages all zeros become zero runs, the others go to the pages file, and adjacent
/// pages make one run.
pub struct RoundWriter {
    pages: BufWriter<File>,
    page: Vec<u8>,
    page_size: usize,
    /// Addresses of the pages still to come.
    addrs: std::vec::IntoIter<Span>,
    next: Option<(u64, u64)>,
    pub runs: Vec<Run>,
    pub offset: u64,
    pub crc: crc32fast::Hasher,
    pub data_pages: u64,
    pub zero_pages: u64,
}

impl RoundWriter {
    pub fn create(path: &Path, spans: &SpanSet, page_size: u64) -> io::Result<RoundWriter> {
        let spans: Vec<Span> = spans.iter().copied().collect();
        let mut addrs = spans.into_iter();
        let next = addrs.next().map(|s| (s.start, s.end));
        Ok(RoundWriter {
            pages: BufWriter::with_capacity(1 << 20, private_file(path)?),
            page: Vec::with_capacity(page_size as usize),
            page_size: page_size as usize,
            addrs,
            next,
            runs: Vec::new(),
            offset: 0,
            crc: crc32fast::Hasher::new(),
            data_pages: 0,
            zero_pages: 0,
        })
    }

    fn next_addr(&mut self) -> Option<u64> {
        let (at, end) = self.next?;
        let after = at + self.page_size as u64;
        self.next = if after < end {
            Some((after, end))
        } else {
            self.addrs.next().map(|s| (s.start, s.end))
        };
        Some(at)
    }

    fn store(&mut self, addr: u64) -> io::Result<()> {
        let size = self.page_size as u64;
        if self.page.iter().all(|&b| b == 0) {
            self.zero_pages += 1;
            match self.runs.last_mut() {
                Some(Run::Zero(_, e)) if *e == addr => *e += size,
                _ => self.runs.push(Run::Zero(addr, addr + size)),
            }
        } else {
            self.data_pages += 1;
            let offset = self.offset;
            match self.runs.last_mut() {
                Some(Run::Data(s, e, o)) if *e == addr && *o + (*e - *s) == offset => *e += size,
                _ => self.runs.push(Run::Data(addr, addr + size, offset)),
            }
            self.pages.write_all(&self.page)?;
            self.crc.update(&self.page);
            self.offset += size;
        }
        Ok(())
    }

    /// Flush and sync the pages file; every page asked for must have come.
    pub fn finish(mut self) -> io::Result<(Vec<Run>, u64, u32, u64, u64)> {
        if self.next.is_some() || !self.page.is_empty() {
            return Err(io::Error::other("fewer pages read than asked for"));
        }
        self.pages.flush()?;
        self.pages.get_ref().sync_all()?;
        Ok((
            self.runs,
            self.offset,
            self.crc.finalize(),
            self.data_pages,
            self.zero_pages,
        ))
    }
}

impl Write for RoundWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Whole pages straight from the buffer; a page cut by a write boundary is gathered.
        let mut done = 0;
        while done < buf.len() {
            let want = self.page_size - self.page.len();
            let n = want.min(buf.len() - done);
            self.page.extend_from_slice(&buf[done..done + n]);
            done += n;
            if self.page.len() == self.page_size {
                let addr = self
                    .next_addr()
                    .ok_or_else(|| io::Error::other("more pages read than asked for"))?;
                self.store(addr)?;
                self.page.clear();
            }
        }
        Ok(done)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.pages.flush()
    }
}

/// Where a page's contents are in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Zero,
    /// In the pages file of `round`, at `offset`.
    Data {
        round: u32,
        offset: u64,
    },
}

/// A snapshot directory opened for reading: its manifest and the indexes of its complete rounds.
pub struct Snapshot {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub indexes: Vec<RoundIndex>,
    /// Rounds whose files are there but which the manifest does not name (cut short).
    pub lost: Vec<u32>,
}

/// The memory at one round: every tracked page that holds data, and where its bytes are.
/// A tracked page not in `pages` is zeros.
pub struct Image {
    pub mappings: Vec<MappingRecord>,
    pub pages: BTreeMap<u64, Source>,
}

impl Snapshot {
    pub fn open(dir: &Path) -> Result<Snapshot> {
        let path = dir.join(MANIFEST);
        let text = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                crate::exit::usage(format!(
                    "{} holds no snapshot (no {MANIFEST}): give the --dir a snapshot wrote",
                    dir.display()
                ))
            } else {
                anyhow!(e).context(format!("reading {}", path.display()))
            }
        })?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a snapshot manifest", path.display()))?;
        if manifest.format != FORMAT || manifest.version != VERSION {
            bail!(
                "{}: format {} version {} is not one this uffd-dirty reads ({FORMAT} version {VERSION})",
                path.display(),
                manifest.format,
                manifest.version
            );
        }
        let mut indexes = Vec::with_capacity(manifest.rounds.len());
        for (n, entry) in manifest.rounds.iter().enumerate() {
            if entry.round as usize != n {
                bail!("{}: round {} out of order", path.display(), entry.round);
            }
            let index_path = dir.join(&entry.index_file);
            let bytes = fs::read(&index_path)
                .with_context(|| format!("reading round {}: {}", n, index_path.display()))?;
            if crc32fast::hash(&bytes) != entry.index_crc32 {
                bail!(
                    "round {n}: {} does not match its checksum in the manifest: the snapshot is damaged",
                    index_path.display()
                );
            }
            indexes.push(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", index_path.display()))?,
            );
        }
        let complete = manifest.rounds.len() as u32;
        let mut lost: Vec<u32> = fs::read_dir(dir)?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("round-")?.get(..4)?.parse().ok()
            })
            .filter(|&r| r >= complete)
            .collect();
        lost.sort_unstable();
        lost.dedup();
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            manifest,
            indexes,
            lost,
        })
    }

    /// The last complete round, if any.
    pub fn last_round(&self) -> Option<u32> {
        self.manifest.rounds.last().map(|r| r.round)
    }

    /// The memory as of `round`: each round's resets, then its runs, in order.
    pub fn image(&self, round: u32) -> Result<Image> {
        let index = self.indexes.get(round as usize).ok_or_else(|| {
            crate::exit::usage(format!(
                "round {round} is not in the snapshot, which has {} complete round(s){}",
                self.indexes.len(),
                self.lost_words()
            ))
        })?;
        let page = self.manifest.page_size;
        let mut pages: BTreeMap<u64, Source> = BTreeMap::new();
        for index in &self.indexes[..=round as usize] {
            for &[start, end] in &index.reset {
                let gone: Vec<u64> = pages.range(start..end).map(|(&a, _)| a).collect();
                for a in gone {
                    pages.remove(&a);
                }
            }
            for run in &index.runs {
                let span = run.span();
                for (i, addr) in (span.start..span.end).step_by(page as usize).enumerate() {
                    match *run {
                        Run::Zero(..) => pages.remove(&addr),
                        Run::Data(_, _, offset) => pages.insert(
                            addr,
                            Source::Data {
                                round: index.round,
                                offset: offset + i as u64 * page,
                            },
                        ),
                    };
                }
            }
        }
        // Only what is mapped at this round.
        let mapped: SpanSet = index
            .mappings
            .iter()
            .map(|m| Span::new(m.start, m.end))
            .collect();
        pages.retain(|&a, _| mapped.contains(a));
        Ok(Image {
            mappings: index.mappings.clone(),
            pages,
        })
    }

    pub fn lost_words(&self) -> String {
        match self.lost.as_slice() {
            [] => String::new(),
            [r] => format!("; round {r} was cut short and is not readable"),
            rs => format!(
                "; rounds {} were cut short and are not readable",
                rs.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// Check every complete round's pages file against its size and checksum.
    pub fn check_pages(&self) -> Result<()> {
        for entry in &self.manifest.rounds {
            let path = self.dir.join(&entry.pages_file);
            let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let mut crc = crc32fast::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut len = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                crc.update(&buf[..n]);
                len += n as u64;
            }
            if len != entry.pages_bytes || crc.finalize() != entry.pages_crc32 {
                bail!(
                    "round {}: {} does not match its size and checksum in the manifest: the snapshot is damaged",
                    entry.round,
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// Reads pages out of a snapshot's pages files.
pub struct PageReader<'a> {
    snapshot: &'a Snapshot,
    files: BTreeMap<u32, File>,
}

impl<'a> PageReader<'a> {
    pub fn new(snapshot: &'a Snapshot) -> PageReader<'a> {
        PageReader {
            snapshot,
            files: BTreeMap::new(),
        }
    }

    /// Fill `buf` (one page) with the page's contents.
    pub fn read(&mut self, source: Source, buf: &mut [u8]) -> Result<()> {
        match source {
            Source::Zero => buf.fill(0),
            Source::Data { round, offset } => {
                let file = match self.files.entry(round) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let entry = &self.snapshot.manifest.rounds[round as usize];
                        let path = self.snapshot.dir.join(&entry.pages_file);
                        v.insert(
                            File::open(&path)
                                .with_context(|| format!("opening {}", path.display()))?,
                        )
                    }
                };
                file.read_exact_at(buf, offset).with_context(|| {
                    format!("round {round}: reading the pages file at {offset:#x}")
                })?;
            }
        }
        Ok(())
    }
}
