//! Writes no tracker here can see, and the signs that a target has them.
//!
//! Both userfaultfd write-protection and soft-dirty see a write only when it goes through the
//! target's page tables. Memory pinned long-term (`FOLL_LONGTERM`) is written by the kernel or a
//! device through the pin: io_uring fixed buffers (`IORING_REGISTER_BUFFERS`, then
//! `IORING_OP_READ_FIXED` & co. copy into them through a kernel mapping), RDMA memory regions
//! (the NIC writes by DMA), VFIO/iommufd DMA mappings. None of that faults, so none of it is
//! reported. What can be found from `/proc`, without touching the target:
//!
//! - an `anon_inode:[io_uring]` fd whose fdinfo counts `UserBufs` (with their ranges, when the
//!   kernel could take the ring's lock to print them); a ring without registered buffers is not
//!   blind: its reads copy through the page tables and are seen;
//! - `/dev/infiniband/*` (uverbs) and `/dev/vfio/*`, `/dev/iommu`, `anon_inode:[vfio-device]`;
//! - `VmPin` in `/proc/PID/status`, the pages pinned long-term and accounted to the process
//!   (io_uring buffers and RDMA regions are): what the fds above do not explain is reported as
//!   `pinned`, which covers a ring whose fd was closed after registering it as a ring fd.
//!
//! Listing fds costs a `readlink` per fd, so while tracking they are listed again only when
//! `VmPin` or `VmLck` (where VFIO type1 accounts its pins) changed; the status read is the
//! once-a-second cost.

use std::collections::BTreeSet;
use std::fs;

use crate::span::Span;

/// A kind of write no tracker can see: memory written without a page fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum BlindKind {
    /// io_uring registered (fixed) buffers, filled by the kernel through a pin.
    #[serde(rename = "io_uring")]
    IoUring,
    /// An RDMA device's registered memory, written by the device.
    #[serde(rename = "rdma")]
    Rdma,
    /// A VFIO or iommufd device's DMA mappings.
    #[serde(rename = "vfio")]
    Vfio,
    /// Memory pinned long-term for some other reason (`VmPin` in `/proc/PID/status`).
    #[serde(rename = "pinned")]
    Pinned,
}

display_as_serialized!(BlindKind);

impl std::fmt::Display for Blind {
    /// Its [`detail`](Blind::detail).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A source of writes the tracker cannot see, found in the target (its fds, its pinned
/// memory). Writes through it are not reported; see the README's "Guarantees".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Blind {
    /// What it is.
    pub kind: BlindKind,
    /// The target's fd behind it, if there is one.
    pub fd: Option<i32>,
    /// One sentence saying what it is and why its writes are unseen.
    pub detail: String,
    /// The memory it writes, when the kernel says (io_uring buffers), as whole pages.
    pub spans: Vec<Span>,
}

/// What [`Watch::check`] compares between two looks: `VmPin` and `VmLck`, KiB.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Pins {
    pinned_kib: u64,
    locked_kib: u64,
}

fn read_pins(pid: i32) -> Option<Pins> {
    let text = crate::process::read_proc(format!("/proc/{pid}/status")).ok()?;
    Some(parse_pins(&text))
}

fn parse_pins(status: &str) -> Pins {
    let mut pins = Pins::default();
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kib = || {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0)
        };
        match key {
            "VmPin" => pins.pinned_kib = kib(),
            "VmLck" => pins.locked_kib = kib(),
            _ => {}
        }
    }
    pins
}

/// An io_uring's registered buffers, from its fdinfo: the count, and the ranges when printed.
#[derive(Debug, Default, PartialEq, Eq)]
struct UserBufs {
    count: u64,
    /// `(address, length)` in bytes; empty when the kernel printed only the count.
    ranges: Vec<(u64, u64)>,
}

/// `UserBufs:\t1` then lines `    0: 0x7f9a6492a000/1048576` until the next `Key:` line.
fn parse_user_bufs(fdinfo: &str) -> Option<UserBufs> {
    let mut lines = fdinfo.lines();
    let count = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("UserBufs:"))?
        .trim()
        .parse()
        .ok()?;
    let mut bufs = UserBufs {
        count,
        ranges: Vec::new(),
    };
    for line in lines {
        let Some((index, range)) = line.trim().split_once(':') else {
            break;
        };
        if index.parse::<u64>().is_err() {
            break;
        }
        let Some((addr, len)) = range.trim().split_once('/') else {
            break;
        };
        let addr = addr
            .strip_prefix("0x")
            .and_then(|a| u64::from_str_radix(a, 16).ok());
        if let (Some(addr), Ok(len)) = (addr, len.parse::<u64>()) {
            bufs.ranges.push((addr, len));
        }
    }
    Some(bufs)
}

/// The device behind an fd link that lets a device write the process's memory by DMA.
fn device_kind(link: &str) -> Option<BlindKind> {
    if link.starts_with("/dev/infiniband/") {
        Some(BlindKind::Rdma)
    } else if link.starts_with("/dev/vfio/") || link == "/dev/iommu" || link.contains("[vfio-") {
        Some(BlindKind::Vfio)
    } else {
        None
    }
}

/// The whole pages holding each `(address, length)` range.
fn page_runs(ranges: &[(u64, u64)], page_size: u64) -> Vec<Span> {
    ranges
        .iter()
        .filter(|&&(_, len)| len > 0)
        .map(|&(addr, len)| {
            let start = addr - addr % page_size;
            let end = addr.saturating_add(len).div_ceil(page_size) * page_size;
            Span::new(start, end)
        })
        .collect()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Every sign of unseen writes in process `pid` now, in fd order, `pinned` last.
fn scan(pid: i32, pins: Pins, page_size: u64) -> Vec<Blind> {
    let mut found = Vec::new();
    let mut fds: Vec<i32> = match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    fds.sort_unstable();
    let mut explained_kib = 0;
    // An RDMA or VFIO fd, or an io_uring whose buffers' sizes were not printed: VmPin is
    // theirs to explain, and not reported again as `pinned`.
    let mut unsized_pins = false;
    for fd in fds {
        let Ok(link) = fs::read_link(format!("/proc/{pid}/fd/{fd}")) else {
            continue;
        };
        let link = link.to_string_lossy();
        if link == "anon_inode:[io_uring]" {
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok();
            let bufs = info.as_deref().and_then(parse_user_bufs);
            let detail = match &bufs {
                Some(b) if b.count == 0 => continue,
                Some(b) => {
                    let bytes: u64 = b.ranges.iter().map(|r| r.1).sum();
                    // Pinned whole pages, as VmPin counts them.
                    explained_kib += page_runs(&b.ranges, page_size)
                        .iter()
                        .map(|r| r.len() / 1024)
                        .sum::<u64>();
                    unsized_pins |= b.ranges.is_empty();
                    let size = if b.ranges.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", mib(bytes))
                    };
                    format!(
                        "io_uring fd {fd} has {} registered buffer{}{size}: the kernel fills them through a pin (READ_FIXED, RECV with fixed buffers), without a page fault",
                        b.count,
                        if b.count == 1 { "" } else { "s" }
                    )
                }
                None => format!(
                    "io_uring fd {fd} (its fdinfo could not be read): buffers it registers are filled by the kernel without a page fault"
                ),
            };
            found.push(Blind {
                kind: BlindKind::IoUring,
                fd: Some(fd),
                detail,
                spans: bufs.map_or_else(Vec::new, |b| page_runs(&b.ranges, page_size)),
            });
        } else if let Some(kind) = device_kind(&link) {
            unsized_pins = true;
            let what = if kind == BlindKind::Rdma {
                "an RDMA device"
            } else {
                "a VFIO/iommufd device"
            };
            found.push(Blind {
                kind,
                fd: Some(fd),
                detail: format!(
                    "fd {fd} is {what} ({link}): memory it registers for DMA is written by the device, without a page fault"
                ),
                spans: Vec::new(),
            });
        }
    }
    if !unsized_pins && pins.pinned_kib > explained_kib {
        found.push(Blind {
            kind: BlindKind::Pinned,
            fd: None,
            detail: format!(
                "{} kB of its memory is pinned long-term (VmPin{}): the kernel or a device writes it through the pin, without a page fault",
                pins.pinned_kib,
                if explained_kib > 0 {
                    format!(", {explained_kib} kB of it the io_uring buffers above")
                } else {
                    String::new()
                }
            ),
            spans: Vec::new(),
        });
    }
    found
}

/// What is known of a target's blind spots, and which were already announced.
pub struct Watch {
    pid: i32,
    page_size: u64,
    pins: Option<Pins>,
    /// `(kind, fd)` of every source reported so far (fd -1 for `pinned`).
    seen: BTreeSet<(BlindKind, i32)>,
}

impl Watch {
    /// Look at process `pid` for the first time: everything found is new.
    pub fn start(pid: i32, page_size: u64) -> (Watch, Vec<Blind>) {
        let mut watch = Watch {
            pid,
            page_size,
            pins: None,
            seen: BTreeSet::new(),
        };
        let found = watch.look();
        (watch, found)
    }

    /// The sources that appeared since the last look (listing fds only if the pin counts
    /// moved).
    pub fn check(&mut self) -> Vec<Blind> {
        let pins = read_pins(self.pid);
        if pins.is_some() && pins == self.pins {
            return Vec::new();
        }
        self.look()
    }

    fn look(&mut self) -> Vec<Blind> {
        let pins = read_pins(self.pid);
        self.pins = pins;
        scan(self.pid, pins.unwrap_or_default(), self.page_size)
            .into_iter()
            .filter(|b| self.seen.insert((b.kind, b.fd.unwrap_or(-1))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_bufs_parse_with_and_without_ranges() {
        let info = "pos:\t0\nUserFiles:\t0\nUserBufs:\t2\n    0: 0x7f9a6492a000/1048576\n    1: 0x1000/10\nPollList:\n";
        assert_eq!(
            parse_user_bufs(info),
            Some(UserBufs {
                count: 2,
                ranges: vec![(0x7f9a6492a000, 1 << 20), (0x1000, 10)]
            })
        );
        assert_eq!(
            parse_user_bufs("UserBufs:\t3\nPollList:\n"),
            Some(UserBufs {
                count: 3,
                ranges: vec![]
            })
        );
        assert_eq!(parse_user_bufs("pos:\t0\n"), None);
    }

    #[test]
    fn buffer_ranges_widen_to_whole_pages() {
        let runs = page_runs(&[(0x1010, 10), (0x3000, 0x2000), (0x5000, 0)], 4096);
        let got: Vec<_> = runs
            .iter()
            .map(|r| (r.start, r.end, r.pages(4096)))
            .collect();
        assert_eq!(got, vec![(0x1000, 0x2000, 1), (0x3000, 0x5000, 2)]);
    }

    #[test]
    fn pins_and_devices_are_recognised() {
        let pins =
            parse_pins("Name:\tx\nVmLck:\t       8 kB\nVmPin:\t    1024 kB\nVmHWM:\t 1 kB\n");
        assert_eq!(
            pins,
            Pins {
                pinned_kib: 1024,
                locked_kib: 8
            }
        );
        assert_eq!(
            device_kind("/dev/infiniband/uverbs0"),
            Some(BlindKind::Rdma)
        );
        assert_eq!(device_kind("/dev/vfio/12"), Some(BlindKind::Vfio));
        assert_eq!(device_kind("/dev/iommu"), Some(BlindKind::Vfio));
        assert_eq!(
            device_kind("anon_inode:[vfio-device]"),
            Some(BlindKind::Vfio)
        );
        assert_eq!(device_kind("/dev/null"), None);
        assert_eq!(device_kind("anon_inode:[eventfd]"), None);
    }

    #[test]
    fn this_process_has_no_blind_spots() {
        let (_, found) = Watch::start(std::process::id() as i32, 4096);
        assert!(found.is_empty(), "{found:?}");
    }
}
