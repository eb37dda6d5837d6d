//! `snapshot`: incremental copies of a process's memory (`take`), and what reads them back:
//! `verify` against the stopped target, `materialize` a round as files, `info`.

mod store;
mod take;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::cli::{SnapshotArgs, SnapshotCommand, TableFormat};
use crate::exit::{self, ExitCode};
use crate::stop::Stop;
use store::{PageReader, Snapshot, Source, State};

pub fn run(args: &SnapshotArgs, stop: &Stop) -> Result<ExitCode> {
    match &args.command {
        None => take::run(&args.take, stop),
        Some(SnapshotCommand::Verify { dir, pid }) => verify(dir, *pid),
        Some(SnapshotCommand::Materialize { dir, round, out }) => materialize(dir, *round, out),
        Some(SnapshotCommand::Info { dir, format }) => info(dir, *format),
    }
}

/// Whether every thread of `pid` is stopped (a group stop or a ptrace stop).
fn is_stopped(pid: i32) -> Result<bool> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("PID {pid}: no such process"))?;
    for task in tasks {
        let stat = fs::read_to_string(task?.path().join("stat"))?;
        // The state follows the command's closing parenthesis.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if !matches!(state, Some('T' | 't')) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Compare the last round's image with the memory of the stopped target, page by page.
fn verify(dir: &Path, pid: i32) -> Result<ExitCode> {
    let snapshot = Snapshot::open(dir)?;
    let Some(round) = snapshot.last_round() else {
        bail!(exit::usage(format!(
            "{} holds no complete round{}",
            dir.display(),
            snapshot.lost_words()
        )));
    };
    if snapshot.manifest.pid != pid {
        bail!(exit::usage(format!(
            "the snapshot in {} is of PID {}, not {pid}",
            dir.display(),
            snapshot.manifest.pid
        )));
    }
    if !is_stopped(pid)? {
        bail!(exit::usage(format!(
            "PID {pid} is running: verify compares the snapshot with a stopped target, so take it with --leave-stopped (or stop the target with kill -STOP {pid})"
        )));
    }
    if snapshot.manifest.rounds[round as usize].kind != store::RoundKind::Final {
        eprintln!(
            "uffd-dirty: warning: round {round} was taken with the target running (--final none or no final round): its pages may differ"
        );
    }
    snapshot.check_pages()?;
    let image = snapshot.image(round)?;
    let page = snapshot.manifest.page_size;
    let mem = File::open(format!("/proc/{pid}/mem"))
        .with_context(|| format!("opening /proc/{pid}/mem"))?;
    let mut reader = PageReader::new(&snapshot);
    let (mut expected, mut actual) = (vec![0u8; page as usize], vec![0u8; page as usize]);
    let (mut compared, mut differ, mut unreadable, mut unmapped) = (0u64, 0u64, 0u64, 0u64);
    let maps = uffd_dirty::Target::open(pid)?.mappings()?;
    for m in &image.mappings {
        let still = maps.iter().any(|v| v.start <= m.start && m.end <= v.end);
        if !still {
            unmapped += 1;
            println!(
                "verify: {:#x}-{:#x} {} is no longer mapped as it was",
                m.start, m.end, m.name
            );
            continue;
        }
        for addr in (m.start..m.end).step_by(page as usize) {
            let source = image.pages.get(&addr).copied().unwrap_or(Source::Zero);
            if mem.read_exact_at(&mut actual, addr).is_err() {
                unreadable += 1;
                continue;
            }
            compared += 1;
            reader.read(source, &mut expected)?;
            if expected != actual {
                differ += 1;
                if differ <= 20 {
                    let at = expected.iter().zip(&actual).position(|(a, b)| a != b);
                    println!(
                        "verify: page {addr:#x} of {} ({}) differs from the snapshot, first at byte {}",
                        m.name,
                        m.kind,
                        at.unwrap_or(0)
                    );
                }
            }
        }
    }
    println!(
        "verify: round {round}: {compared} pages compared, {differ} differ, {unreadable} unreadable, {unmapped} mappings no longer as recorded"
    );
    Ok(if differ == 0 && unmapped == 0 {
        ExitCode::Success
    } else {
        ExitCode::RuntimeError
    })
}

/// One mapping of a materialized image, as `mappings.json` lists it.
#[derive(Serialize)]
struct MaterializedMapping<'a> {
    start: u64,
    end: u64,
    perms: &'a str,
    offset: u64,
    kind: uffd_dirty::MappingKind,
    name: &'a str,
    /// The file holding its contents, relative to the image directory: exactly its size,
    /// zero pages as holes.
    file: String,
}

/// Write the memory as of `round` to `out`: per mapping a file of its contents, and
/// `mappings.json` listing them.
fn materialize(dir: &Path, round: Option<u32>, out: &Path) -> Result<ExitCode> {
    let snapshot = Snapshot::open(dir)?;
    let round = match round.or(snapshot.last_round()) {
        Some(r) => r,
        None => bail!(exit::usage(format!(
            "{} holds no complete round{}",
            dir.display(),
            snapshot.lost_words()
        ))),
    };
    snapshot.check_pages()?;
    let image = snapshot.image(round)?;
    match fs::DirBuilder::new().mode(0o700).create(out) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if fs::read_dir(out)?.next().is_some() {
                bail!(exit::usage(format!(
                    "--out {} is not empty: give a new or empty directory",
                    out.display()
                )));
            }
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", out.display())),
    }
    fs::DirBuilder::new().mode(0o700).create(out.join("mem"))?;
    let page = snapshot.manifest.page_size;
    let mut reader = PageReader::new(&snapshot);
    let mut buf = vec![0u8; page as usize];
    let mut listed = Vec::new();
    for m in &image.mappings {
        let file = format!("mem/{:x}-{:x}.bin", m.start, m.end);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out.join(&file))
            .with_context(|| format!("creating {}", out.join(&file).display()))?;
        f.set_len(m.end - m.start)?;
        for (&addr, &source) in image.pages.range(m.start..m.end) {
            reader.read(source, &mut buf)?;
            f.write_all_at(&buf, addr - m.start)
                .with_context(|| format!("writing {}", out.join(&file).display()))?;
        }
        listed.push(MaterializedMapping {
            start: m.start,
            end: m.end,
            perms: &m.perms,
            offset: m.offset,
            kind: m.kind,
            name: &m.name,
            file,
        });
    }
    let mut list = File::create(out.join("mappings.json"))?;
    serde_json::to_writer_pretty(&mut list, &listed)?;
    writeln!(list)?;
    eprintln!(
        "uffd-dirty: round {round}: {} mappings, {} pages holding data, written to {}",
        listed.len(),
        image.pages.len(),
        out.display()
    );
    Ok(ExitCode::Success)
}

#[derive(Serialize)]
struct Info<'a> {
    dir: String,
    #[serde(flatten)]
    manifest: &'a store::Manifest,
    /// Rounds cut short (files present, not in the manifest).
    lost: &'a [u32],
    /// Every round's files match their checksums.
    intact: bool,
}

fn info(dir: &Path, format: TableFormat) -> Result<ExitCode> {
    let snapshot = Snapshot::open(dir)?;
    let intact = snapshot.check_pages();
    let m = &snapshot.manifest;
    match format {
        TableFormat::Json => {
            let info = Info {
                dir: dir.display().to_string(),
                manifest: m,
                lost: &snapshot.lost,
                intact: intact.is_ok(),
            };
            println!("{}", serde_json::to_string(&info)?);
        }
        TableFormat::Human => {
            println!(
                "snapshot of PID {} ({}), page size {}, begun {}",
                m.pid,
                if m.exe.is_empty() { "?" } else { &m.exe },
                m.page_size,
                m.started
            );
            println!(
                "{:>5} {:<7} {:>9} {:>9} {:>9} {:>9} {:>10}",
                "round", "kind", "dirty", "copied", "data", "zero", "stored"
            );
            for r in &m.rounds {
                let kind = serde_json::to_value(r.kind).expect("serializable");
                println!(
                    "{:>5} {:<7} {:>9} {:>9} {:>9} {:>9} {:>8.1}Mi",
                    r.round,
                    kind.as_str().unwrap_or("?"),
                    r.dirty_pages,
                    r.copied_pages,
                    r.data_pages,
                    r.zero_pages,
                    r.pages_bytes as f64 / (1u64 << 20) as f64
                );
            }
            let state = match (m.state, &m.end) {
                (_, Some(end)) => {
                    let downtime = end
                        .downtime_ms
                        .map_or(String::new(), |d| format!(", downtime {d:.1} ms"));
                    format!("ended: {}{downtime}", end.message)
                }
                (State::Running, None) => {
                    "not ended: being taken, or the snapshotter was killed".into()
                }
                (_, None) => "ended".into(),
            };
            println!("{state}{}", snapshot.lost_words());
        }
    }
    intact?;
    Ok(ExitCode::Success)
}
