//! The built-in bench target (hidden subcommand `bench-target`): a buffer of a given size with
//! a given part of it populated, driven over stdin by the bench so that it writes exactly the
//! pages the bench asks for, and says how long the writes took.
//!
//! Protocol, one line each way: `D <n>` writes `n` populated pages spread evenly over them
//! and answers `ok <ns>` (the time the writes took); `R <ms> <k>` writes `k` populated pages
//! spread evenly, over and over, for `ms` milliseconds, and answers `ok <page-writes>`; `Q`
//! or end of input exits.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::exit::ExitCode;
use crate::sys;

#[derive(Debug, Args)]
pub struct BenchTargetArgs {
    /// Pages in the buffer.
    #[arg(long)]
    pub pages: u64,
    /// Every how many 2 MiB chunks one is populated (1: all; 0: none).
    #[arg(long, default_value_t = 1)]
    pub populate_every: u64,
}

/// Pages per populated chunk: 2 MiB, so sparse memory is populated the way programs that
/// reserve much and use little populate it (in clusters), not one page per page table.
const CHUNK_PAGES: u64 = 512;

/// Which pages of a buffer are populated: every `every`-th chunk of [`CHUNK_PAGES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub pages: u64,
    pub every: u64,
}

impl Layout {
    /// Populated pages in the buffer.
    pub fn populated(self) -> u64 {
        if self.every == 0 {
            return 0;
        }
        let chunks = self.pages.div_ceil(CHUNK_PAGES);
        let full = chunks.div_ceil(self.every);
        let last_chunk = (full - 1) * self.every;
        (full - 1) * CHUNK_PAGES + (self.pages - last_chunk * CHUNK_PAGES).min(CHUNK_PAGES)
    }

    /// The page index of the `k`-th populated page.
    pub fn page(self, k: u64) -> u64 {
        (k / CHUNK_PAGES) * self.every * CHUNK_PAGES + k % CHUNK_PAGES
    }

    /// The `i`-th of `n` populated pages spread evenly over all of them.
    fn spread(self, i: u64, n: u64) -> u64 {
        self.page(i * (self.populated() / n.max(1)).max(1))
    }
}

pub fn run_target(args: &BenchTargetArgs) -> Result<ExitCode> {
    let page = sys::page_size() as usize;
    let layout = Layout {
        pages: args.pages,
        every: args.populate_every,
    };
    // NORESERVE: a large sparse buffer is address space, not a commitment.
    let buffer = sys::AnonMapping::new(args.pages as usize * page, libc::MAP_NORESERVE)
        .context("mapping the bench buffer")?;
    let write = |p: u64, v: u8| buffer.write(p as usize * page, v);
    for k in 0..layout.populated() {
        write(layout.page(k), 1);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {:#x} {}", buffer.addr(), layout.populated())?;
    out.flush()?;
    let populated = layout.populated();
    let mut value = 2u8;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["D", n] => {
                let n = n.parse::<u64>()?.min(populated);
                let t = Instant::now();
                for i in 0..n {
                    write(layout.spread(i, n), value);
                }
                let ns = t.elapsed().as_nanos();
                value = value.wrapping_add(1);
                writeln!(out, "ok {ns}")?;
            }
            ["R", ms, k] => {
                let k = k.parse::<u64>()?.min(populated);
                let until = Instant::now() + Duration::from_millis(ms.parse()?);
                let mut writes = 0u64;
                while Instant::now() < until {
                    for i in 0..k {
                        write(layout.spread(i, k), value);
                    }
                    writes += k;
                    value = value.wrapping_add(1);
                }
                writeln!(out, "ok {writes}")?;
            }
            _ => break,
        }
        out.flush()?;
    }
    Ok(ExitCode::Success)
}

/// A running bench target, killed on drop.
pub struct BenchTarget {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub populated: u64,
}

impl BenchTarget {
    pub fn spawn(layout: Layout) -> Result<BenchTarget> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args([
                "bench-target",
                "--pages",
                &layout.pages.to_string(),
                "--populate-every",
                &layout.every.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the bench target")?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut target = BenchTarget {
            child,
            stdin,
            stdout,
            populated: 0,
        };
        let ready = target.answer("ready")?;
        target.populated = ready
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("the bench target said `ready {ready}`"))?;
        Ok(target)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The rest of the next line, which must start with `word`.
    fn answer(&mut self, word: &str) -> Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        match line.trim_end().strip_prefix(word) {
            Some(rest) => Ok(rest.trim().to_string()),
            None => bail!("the bench target said {line:?}"),
        }
    }

    fn number(&mut self) -> Result<u64> {
        let n = self.answer("ok")?;
        n.parse()
            .with_context(|| format!("the bench target said `ok {n}`"))
    }

    /// Write `n` populated pages; the time the writes took in the target.
    pub fn dirty(&mut self, n: u64) -> Result<Duration> {
        writeln!(self.stdin, "D {n}")?;
        self.stdin.flush()?;
        Ok(Duration::from_nanos(self.number()?))
    }

    /// Start writing `k` pages over and over for `time`; [`BenchTarget::writes`] waits for
    /// the count.
    pub fn start_rewriting(&mut self, time: Duration, k: u64) -> Result<()> {
        writeln!(self.stdin, "R {} {k}", time.as_millis())?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Page-writes done by the run [`BenchTarget::start_rewriting`] started.
    pub fn writes(&mut self) -> Result<u64> {
        self.number()
    }
}

impl Drop for BenchTarget {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "Q");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_counts_and_places_populated_pages() {
        let all = Layout {
            pages: 1000,
            every: 1,
        };
        assert_eq!(all.populated(), 1000);
        assert_eq!(all.page(999), 999);
        let none = Layout {
            pages: 1000,
            every: 0,
        };
        assert_eq!(none.populated(), 0);
        // 4 chunks of 512 (the last one short: 2048 - 100), every other one populated: the
        // first and the third, both whole.
        let half = Layout {
            pages: 1948,
            every: 2,
        };
        assert_eq!(half.populated(), 1024);
        assert_eq!(half.page(511), 511);
        assert_eq!(half.page(512), 1024);
        let last = half.page(half.populated() - 1);
        assert!(last < 1948, "{last}");
        // A short last populated chunk.
        let short = Layout {
            pages: 1100,
            every: 2,
        };
        assert_eq!(short.populated(), 512 + 76);
        assert_eq!(short.page(short.populated() - 1), 1099);
    }

    #[test]
    fn spread_stays_inside_the_populated_pages() {
        let l = Layout {
            pages: 64 * 512,
            every: 8,
        };
        for n in [1, 7, 100, l.populated()] {
            let pages: std::collections::BTreeSet<u64> = (0..n).map(|i| l.spread(i, n)).collect();
            assert_eq!(pages.len() as u64, n, "n = {n}: distinct pages");
            assert!(pages.iter().all(|&p| (p / 512) % 8 == 0 && p < l.pages));
        }
    }
}
