//! `PAGEMAP_SCAN` queries, typed: which pages a scan matches (by their [`Categories`]), which
//! categories it labels the regions it reports with, and whether it write-protects what it
//! matches, so that each call reads like what it asks:
//!
//! ```text
//! Scan::pages()
//!     .all_of(Categories::WRITTEN)
//!     .report(Categories::WRITTEN)
//!     .write_protect()
//!     .run(pagemap, start..end, &mut regions)?
//! ```
//!
//! A [`Scan`] is a plain `Copy` value built by `const fn`s; running it fills one `pm_scan_arg`
//! on the stack and makes the one ioctl, allocating nothing.

use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};

pub use super::abi::Categories;
use super::abi::{self, page_region, pm_scan_arg};
use super::cvt_ioctl;

/// An empty output region, to fill region buffers with.
pub const NO_REGION: page_region = page_region {
    start: 0,
    end: 0,
    categories: 0,
};

/// A `PAGEMAP_SCAN` query. A page matches when it has every category of [`all_of`], none of
/// [`none_of`] and, unless that is empty, one of [`any_of`]; matching pages are reported as
/// regions (maximal runs alike in the [`report`]ed categories) and, with [`write_protect`],
/// write-protected in the same walk. The kernel applies `none_of`'s inversion before both
/// tests, so a category belongs in one of the three at most.
///
/// [`all_of`]: Scan::all_of
/// [`none_of`]: Scan::none_of
/// [`any_of`]: Scan::any_of
/// [`report`]: Scan::report
/// [`write_protect`]: Scan::write_protect
#[derive(Debug, Clone, Copy)]
pub struct Scan {
    flags: u64,
    all_of: Categories,
    none_of: Categories,
    any_of: Categories,
    report: Categories,
    max_pages: u64,
}

/// What one call found.
#[derive(Debug)]
pub struct Scanned<'v> {
    /// The regions the kernel wrote, at the head of the buffer given.
    pub regions: &'v [page_region],
    /// Where the walk stopped: the end of the range, or short of it when the buffer filled
    /// (the next call resumes here).
    pub walk_end: u64,
}

impl Scan {
    /// Every page (of mapped memory), reported with no category, left as it is.
    pub const fn pages() -> Scan {
        Scan {
            flags: 0,
            all_of: Categories::empty(),
            none_of: Categories::empty(),
            any_of: Categories::empty(),
            report: Categories::empty(),
            max_pages: 0,
        }
    }

    /// Only pages in every one of `categories` (`category_mask`).
    pub const fn all_of(mut self, categories: Categories) -> Scan {
        self.all_of = self.all_of.union(categories);
        self
    }

    /// Only pages in none of `categories` (`category_inverted` and `category_mask`).
    pub const fn none_of(mut self, categories: Categories) -> Scan {
        self.none_of = self.none_of.union(categories);
        self
    }

    /// Only pages in at least one of `categories` (`category_anyof_mask`).
    pub const fn any_of(mut self, categories: Categories) -> Scan {
        self.any_of = self.any_of.union(categories);
        self
    }

    /// Label the reported regions with these of their categories (`return_mask`): a region
    /// is a run of matching pages alike in them.
    pub const fn report(mut self, categories: Categories) -> Scan {
        self.report = self.report.union(categories);
        self
    }

    /// Write-protect every matching page in the same walk, under its page-table lock
    /// (`PM_SCAN_WP_MATCHING`). Run with an empty buffer, the kernel protects the whole range
    /// in one pass and reports nothing.
    pub const fn write_protect(mut self) -> Scan {
        self.flags |= abi::PM_SCAN_WP_MATCHING;
        self
    }

    /// Stop the walk once it has found `pages` matching pages (`max_pages`; 0: no limit):
    /// `walk_end` then says where to resume. Bounds what one call re-protects.
    pub const fn max_pages(mut self, pages: u64) -> Scan {
        self.max_pages = pages;
        self
    }

    /// Whether [`Scan::max_pages`] bounds the walk.
    pub const fn limits_pages(&self) -> bool {
        self.max_pages != 0
    }

    /// Run the query over `range` on a `/proc/PID/pagemap` fd: one ioctl, the kernel writing
    /// at most `regions.len()` regions to `regions` (an empty buffer asks for none).
    pub fn run<'v>(
        &self,
        pagemap: BorrowedFd<'_>,
        range: Range<u64>,
        regions: &'v mut [page_region],
    ) -> io::Result<Scanned<'v>> {
        let mut arg = self.arg(range, regions);
        // SAFETY: `arg` is a valid pm_scan_arg, and its `vec`/`vec_len` describe `regions`, a
        // live, exclusively borrowed buffer of `page_region`s the kernel may fill up to
        // `vec_len` entries.
        let n = cvt_ioctl(unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                abi::PAGEMAP_SCAN as _,
                &mut arg as *mut pm_scan_arg,
            )
        })?;
        let regions: &'v [page_region] = regions;
        Ok(Scanned {
            regions: &regions[..n as usize],
            walk_end: arg.walk_end,
        })
    }

    /// The ioctl's argument: the query over `range`, output to `regions`.
    fn arg(&self, range: Range<u64>, regions: &mut [page_region]) -> pm_scan_arg {
        pm_scan_arg {
            size: size_of::<pm_scan_arg>() as u64,
            flags: self.flags,
            start: range.start,
            end: range.end,
            walk_end: 0,
            vec: if regions.is_empty() {
                0
            } else {
                regions.as_mut_ptr() as u64
            },
            vec_len: regions.len() as u64,
            max_pages: self.max_pages,
            category_inverted: self.none_of.bits(),
            category_mask: self.all_of.union(self.none_of).bits(),
            category_anyof_mask: self.any_of.bits(),
            return_mask: self.report.bits(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each builder step in the field the kernel reads it from.
    #[test]
    fn queries_encode_as_the_kernel_reads_them() {
        let mut regions = [NO_REGION; 2];
        let arg = Scan::pages()
            .all_of(Categories::WRITTEN)
            .none_of(Categories::PRESENT | Categories::SWAPPED)
            .any_of(Categories::FILE)
            .report(Categories::WRITTEN)
            .write_protect()
            .arg(0x1000..0x9000, &mut regions);
        assert_eq!(arg.size, 96);
        assert_eq!(arg.flags, abi::PM_SCAN_WP_MATCHING);
        assert_eq!((arg.start, arg.end, arg.walk_end), (0x1000, 0x9000, 0));
        assert_eq!(arg.vec, regions.as_ptr() as u64);
        assert_eq!((arg.vec_len, arg.max_pages), (2, 0));
        assert_eq!(arg.category_mask, 0b1_1010);
        assert_eq!(arg.category_inverted, 0b1_1000);
        assert_eq!(arg.category_anyof_mask, 0b100);
        assert_eq!(arg.return_mask, 0b10);

        let arg = Scan::pages().arg(0..0, &mut []);
        assert_eq!((arg.flags, arg.vec, arg.vec_len), (0, 0, 0));
        assert_eq!(
            [
                arg.category_mask,
                arg.category_inverted,
                arg.category_anyof_mask,
                arg.return_mask
            ],
            [0; 4]
        );
    }
}
