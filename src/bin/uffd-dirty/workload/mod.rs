//! A writer process with ground truth: it writes pages of one anonymous region in bursts and
//! records exactly which page it wrote when, so tests can hold the tracker's deltas against
//! it page for page. It also powers `uffd-dirty demo`.
//!
//! It checks the promises the tracker makes to its targets: no blocking call it makes while
//! waiting to be attached returns EINTR, sleeps keep their length, and at the end every page
//! still holds the last value it wrote (exit 3 and 4 otherwise).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::cli::parse_interval;

pub mod scenario;

/// Exit code when a blocking call returned EINTR (the attach disturbed the target).
pub const EXIT_EINTR: i32 = 3;
/// Exit code when memory did not hold what was written.
pub const EXIT_CORRUPT: i32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WaitMode {
    /// Start writing at once.
    None,
    /// Block in read(2) on stdin until a byte arrives.
    Stdin,
    /// Sleep --sleep in one nanosleep(2) call, then start.
    Nanosleep,
    /// One thread blocks in epoll_wait(2) on stdin while the main thread spins.
    Epoll,
    /// The only thread blocks in epoll_wait(2) with no timeout on stdin.
    EpollOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pattern {
    /// Random pages.
    Random,
    /// A window sliding through the region, plus a few random pages (for the demo).
    Wave,
}

#[derive(Debug, Clone, Args)]
pub struct WriterArgs {
    /// Pages in the region.
    #[arg(long, default_value_t = 1024)]
    pub pages: u64,
    /// Writer threads; thread t owns the pages with index % threads == t.
    #[arg(long, default_value_t = 1)]
    pub threads: u64,
    /// Bursts per thread (0: until --run-for ends).
    #[arg(long, default_value_t = 50)]
    pub bursts: u64,
    /// Pages written per burst.
    #[arg(long, default_value_t = 16)]
    pub burst_pages: u64,
    /// Pause between bursts.
    #[arg(long, default_value = "5ms", value_parser = parse_interval)]
    pub gap: Duration,
    /// Stop writing after this long (over 100 years: never).
    #[arg(long, value_parser = crate::cli::parse_run_time)]
    pub run_for: Option<Duration>,
    /// What to do before writing.
    #[arg(long, value_enum, default_value_t = WaitMode::None)]
    pub wait: WaitMode,
    /// Sleep length for --wait nanosleep.
    #[arg(long, default_value = "500ms", value_parser = parse_interval)]
    pub sleep: Duration,
    /// Pages [0, N) are written before waiting.
    #[arg(long, default_value_t = 0)]
    pub pre_write: u64,
    /// Pages [pre-write, pre-write + N) are only read before waiting (zero page).
    #[arg(long, default_value_t = 0)]
    pub pre_read: u64,
    /// Stop writing at the first byte on stdin, or its end (after --wait's byte, if any), as
    /// well as at --run-for: a test that needs writes until it has looked says when to stop.
    #[arg(long)]
    pub until_stdin: bool,
    /// After the last burst, print `done` and wait for stdin to close before exiting.
    #[arg(long)]
    pub hold: bool,
    /// Run a thread that spins (so it is the one a tracker borrows) for this long, then exits.
    #[arg(long, value_parser = parse_interval)]
    pub spinner: Option<Duration>,
    /// Pause after the last burst before exiting (or holding).
    #[arg(long, default_value = "1ms", value_parser = parse_interval)]
    pub linger: Duration,
    #[arg(long, value_enum, default_value_t = Pattern::Random)]
    pub pattern: Pattern,
    /// Bursts write only pages [0, N) of the region (0: all of it); the rest stays untouched.
    #[arg(long, default_value_t = 0)]
    pub write_first: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the ground-truth log (NDJSON) here.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Print nothing on stdout (no `ready` line): the demo's writer shares the tracker's stdout.
    #[arg(long)]
    pub quiet: bool,
}

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One thread's bursts, and its (page, value) writes in order.
type ThreadResult = (Vec<Burst>, Vec<(u64, u64)>);

struct Burst {
    thread: u64,
    start_ns: u64,
    end_ns: u64,
    pages: Vec<u64>,
}

fn last_errno_is_eintr() -> bool {
    io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
}

/// Wait in epoll_wait(-1) for stdin, then consume the byte; whether EINTR came back.
fn epoll_wait_stdin() -> bool {
    // SAFETY: plain epoll calls on an fd created here; `ev` outlives them.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, 0, &mut ev);
        let r = libc::epoll_wait(ep, &mut ev, 1, -1);
        let eintr = r < 0 && last_errno_is_eintr();
        let mut b = [0u8; 1];
        libc::read(0, b.as_mut_ptr().cast(), 1);
        libc::close(ep);
        eintr
    }
}

/// Block as asked; returns (EINTR seen, how long the wait took).
fn wait_for_go(args: &WriterArgs) -> (bool, Duration) {
    let t0 = Instant::now();
    let eintr = match args.wait {
        WaitMode::None => false,
        WaitMode::Stdin => {
            let mut b = [0u8; 1];
            // SAFETY: reading one byte into a local buffer.
            let r = unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) };
            r < 0 && last_errno_is_eintr()
        }
        WaitMode::Nanosleep => {
            let req = libc::timespec {
                tv_sec: args.sleep.as_secs() as _,
                tv_nsec: args.sleep.subsec_nanos() as _,
            };
            let mut rem = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid timespec pointers.
            let r = unsafe { libc::nanosleep(&req, &mut rem) };
            r < 0 && last_errno_is_eintr()
        }
        WaitMode::EpollOnly => epoll_wait_stdin(),
        WaitMode::Epoll => {
            let go = AtomicBool::new(false);
            let eintr = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    eintr.store(epoll_wait_stdin(), Ordering::SeqCst);
                    go.store(true, Ordering::SeqCst);
                });
                while !go.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
            });
            eintr.load(Ordering::SeqCst)
        }
    };
    (eintr, t0.elapsed())
}

fn pick_pages(args: &WriterArgs, thread: u64, burst: u64, rng: &mut Rng) -> Vec<u64> {
    let written = match args.write_first {
        0 => args.pages,
        n => n.min(args.pages),
    };
    let owned = written.saturating_sub(thread).div_ceil(args.threads).max(1);
    let mut pages: Vec<u64> = match args.pattern {
        Pattern::Random => (0..args.burst_pages).map(|_| rng.next() % owned).collect(),
        Pattern::Wave => {
            let window = args.burst_pages.min(owned);
            let base = (burst * window / 2) % owned;
            (0..window)
                .map(|i| (base + i) % owned)
                .chain((0..2).map(|_| rng.next() % owned))
                .collect()
        }
    };
    for p in &mut pages {
        *p = *p * args.threads + thread;
    }
    pages.sort_unstable();
    pages.dedup();
    pages
}

pub fn run_writer(args: &WriterArgs) -> Result<i32> {
    if args.threads == 0 || args.threads > args.pages || args.pre_write + args.pre_read > args.pages
    {
        bail!("--threads must be 1..=--pages and --pre-write + --pre-read at most --pages");
    }
    let page = crate::sys::page_size();
    let region = crate::sys::AnonMapping::new((args.pages * page) as usize, 0)
        .context("mapping the writer's region")?;
    let mut expected = vec![0u64; args.pages as usize];
    for p in 0..args.pre_write {
        let v = 0xfeed_0000 + p;
        region.write((p * page) as usize, v);
        expected[p as usize] = v;
    }
    for p in args.pre_write..args.pre_write + args.pre_read {
        std::hint::black_box(region.read::<u64>((p * page) as usize));
    }
    let mut stdout = io::stdout().lock();
    if !args.quiet {
        let ready = json!({"type": "ready", "pid": std::process::id(), "base": format!("{:#x}", region.addr()),
            "pages": args.pages, "page_size": page});
        writeln!(stdout, "{ready}")?;
        stdout.flush()?;
    }

    let spinner = args.spinner.map(|d| {
        std::thread::spawn(move || {
            let until = Instant::now() + d;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        })
    });
    let (eintr, waited) = wait_for_go(args);
    if let Some(s) = spinner {
        let _ = s.join();
    }
    let deadline = args.run_for.map(|d| Instant::now() + d);
    let told_to_stop = Arc::new(AtomicBool::new(false));
    if args.until_stdin {
        let told = Arc::clone(&told_to_stop);
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            // A byte or the end of stdin; EINTR (which a tracker must not cause) is not a stop.
            while let Err(e) = io::stdin().read(&mut b) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            told.store(true, Ordering::SeqCst);
        });
    }
    let results: Vec<ThreadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads)
            .map(|t| {
                let (region, told_to_stop) = (&region, &*told_to_stop);
                s.spawn(move || {
                    let mut rng = Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        ^ (t + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9)
                        | 1);
                    let (mut bursts, mut last) = (Vec::new(), Vec::new());
                    let mut b = 0;
                    while (args.bursts == 0 || b < args.bursts)
                        && deadline.is_none_or(|d| Instant::now() < d)
                        && !told_to_stop.load(Ordering::SeqCst)
                    {
                        let pages = pick_pages(args, t, b, &mut rng);
                        let start_ns = now_ns();
                        for &p in &pages {
                            let v = (b + 1) << 16 | t << 8 | 0x5a;
                            region.write((p * page) as usize, v);
                            last.push((p, v));
                        }
                        let end_ns = now_ns();
                        bursts.push(Burst {
                            thread: t,
                            start_ns,
                            end_ns,
                            pages,
                        });
                        b += 1;
                        std::thread::sleep(args.gap);
                    }
                    (bursts, last)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread panicked"))
            .collect()
    });
    std::thread::sleep(args.linger);
    for (_, last) in &results {
        for &(p, v) in last {
            expected[p as usize] = v;
        }
    }
    let corrupt = (0..args.pages)
        .filter(|&p| region.read::<u64>((p * page) as usize) != expected[p as usize])
        .count();

    if args.hold {
        writeln!(stdout, "{}", json!({"type": "done"}))?;
        stdout.flush()?;
        let mut sink = Vec::new();
        let _ = io::stdin().read_to_end(&mut sink);
    }
    if let Some(path) = &args.log {
        let mut log = BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        writeln!(
            log,
            "{}",
            json!({"type": "wait", "mode": format!("{:?}", args.wait).to_lowercase(), "eintr": eintr,
            "waited_us": waited.as_micros() as u64, "corrupt_pages": corrupt,
            "base": format!("{:#x}", region.addr()), "pages": args.pages})
        )?;
        for (bursts, _) in &results {
            for b in bursts {
                writeln!(
                    log,
                    "{}",
                    json!({"type": "burst", "thread": b.thread, "start_ns": b.start_ns, "end_ns": b.end_ns, "pages": b.pages})
                )?;
            }
        }
        log.flush()?;
    }
    Ok(if eintr {
        eprintln!("writer: a blocking call returned EINTR");
        EXIT_EINTR
    } else if corrupt > 0 {
        eprintln!("writer: {corrupt} pages do not hold what was written");
        EXIT_CORRUPT
    } else {
        0
    })
}
