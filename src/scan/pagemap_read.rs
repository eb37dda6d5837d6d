//! The plain-reads method: `pread` of `/proc/PID/pagemap` entries, a page is written when it
//! exists and its uffd-wp bit (57) is clear, then `UFFDIO_WRITEPROTECT` re-arms what was
//! read as written. Read-then-protect loses nothing: a page read as written is reported
//! whatever happens to it before it is protected, and a page read as clean that is written
//! afterwards stays unprotected for the next harvest. A baseline for the benchmark and the
//! path for readers of the raw pagemap format.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use super::push_run;
use crate::maps::Span;
use crate::sys::{self, abi};

/// Entries read per `pread` (512 KiB of pagemap for 256 MiB of address space).
const BLOCK: usize = 1 << 16;

pub struct PagemapRead {
    pagemap: File,
    buf: Vec<u8>,
    page_size: u64,
}

/// How the memory read was armed, which decides what an empty pagemap entry means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmedAs {
    /// Every slot, empty ones included: an empty entry lost its marker, so was zapped.
    Whole,
    /// Only its populated pages (sparse memory): an empty entry was never populated.
    PopulatedOnly,
}

impl PagemapRead {
    pub fn new(pagemap: File) -> Self {
        PagemapRead {
            pagemap,
            buf: vec![0; BLOCK * 8],
            page_size: sys::page_size(),
        }
    }

    /// Append to `written` the pages of `span` that exist without the uffd-wp bit; in memory
    /// armed whole, empty entries too (an empty entry is a zapped page there: its marker went
    /// with it). Existing pages go to `populated` when given.
    pub fn scan(
        &mut self,
        span: Span,
        armed: ArmedAs,
        written: &mut Vec<Span>,
        mut populated: Option<&mut Vec<Span>>,
    ) -> io::Result<()> {
        let mut addr = span.start;
        while addr < span.end {
            let pages = ((span.end - addr) / self.page_size).min(BLOCK as u64) as usize;
            let offset = addr / self.page_size * 8;
            let n = sys::pread_full(self.pagemap.as_fd(), &mut self.buf[..pages * 8], offset)? / 8;
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            for (i, chunk) in self.buf[..n * 8].chunks_exact(8).enumerate() {
                let entry = u64::from_ne_bytes(chunk.try_into().expect("8-byte chunk"));
                let page = Span::new(
                    addr + i as u64 * self.page_size,
                    addr + (i as u64 + 1) * self.page_size,
                );
                // A uffd-wp marker reads as SWAP + UFFD_WP: an armed empty slot, not a page.
                let marker = entry & abi::PM_PRESENT == 0 && entry & abi::PM_UFFD_WP != 0;
                let exists = entry & (abi::PM_PRESENT | abi::PM_SWAP) != 0 && !marker;
                if exists && let Some(p) = populated.as_deref_mut() {
                    push_run(p, page);
                }
                // Empty means neither present nor swapped, whatever else is set: soft-dirty
                // kernels mark every empty entry of a VM_SOFTDIRTY VMA with bit 55.
                let empty = entry & (abi::PM_PRESENT | abi::PM_SWAP) == 0;
                let is_written = if empty {
                    armed == ArmedAs::Whole
                } else {
                    !marker && entry & abi::PM_UFFD_WP == 0
                };
                if is_written {
                    push_run(written, page);
                }
            }
            addr += n as u64 * self.page_size;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The pagemap entry bits are procfs's format, in no uapi header: held here against the
    //! running kernel.
    use super::*;
    use crate::sys::abi::{PM_PRESENT, PM_SOFT_DIRTY, PM_SWAP, PM_UFFD_WP};

    const BITS: u64 = PM_PRESENT | PM_SWAP | PM_UFFD_WP;

    fn entry(pagemap: &File, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        let offset = addr / sys::page_size() * 8;
        assert_eq!(sys::pread_full(pagemap.as_fd(), &mut b, offset).unwrap(), 8);
        u64::from_ne_bytes(b)
    }

    /// Whether the VMA holding `addr` is VM_SOFTDIRTY: `sd` in its smaps VmFlags, which only
    /// kernels with CONFIG_MEM_SOFT_DIRTY show.
    fn vma_soft_dirty(addr: u64) -> bool {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                if inside {
                    return flags.split_whitespace().any(|f| f == "sd");
                }
            } else if let Some((range, _)) = line.split_once(' ')
                && let Some((start, end)) = range.split_once('-')
                && let (Ok(start), Ok(end)) =
                    (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            {
                inside = start <= addr && addr < end;
            }
        }
        false
    }

    /// A written page, an untouched one, both write-protected (the untouched one then holds a
    /// uffd-wp marker), and the written one written again: each entry as the bits say.
    #[test]
    fn pagemap_entry_bits_match_the_running_kernel() {
        let page = sys::page_size();
        let map = sys::AnonMapping::new(2 * page as usize, 0).unwrap();
        let (written, untouched) = (map.addr(), map.addr() + page);
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        map.write(0, 1u8);
        // A VMA is VM_SOFTDIRTY from its creation until a clear_refs (another test's may come
        // at any time): the bit is checked only when the flag is there before and after.
        let soft_dirty_before = vma_soft_dirty(written);
        let e = entry(&pagemap, written);
        if soft_dirty_before && vma_soft_dirty(written) {
            assert_ne!(e & PM_SOFT_DIRTY, 0, "a page of a VM_SOFTDIRTY VMA: {e:#x}");
        }
        assert_eq!(e & BITS, PM_PRESENT, "a written page: {e:#x}");
        let e = entry(&pagemap, untouched);
        assert_eq!(e & BITS, 0, "an untouched page: {e:#x}");

        match crate::uffd::probe() {
            Ok(s) if s.wp_async() && s.wp_unpopulated() => {}
            _ => {
                return crate::testing::skipped(
                    "no userfaultfd async write-protect: the uffd-wp bit is not checked",
                );
            }
        }
        let uffd = sys::userfaultfd_local().unwrap();
        let features = abi::UFFD_FEATURE_WP_ASYNC | abi::UFFD_FEATURE_WP_UNPOPULATED;
        sys::uffdio_api(uffd.as_fd(), features).unwrap();
        sys::uffdio_register_wp(uffd.as_fd(), written, 2 * page).unwrap();
        sys::uffdio_writeprotect(uffd.as_fd(), written, 2 * page).unwrap();
        let e = entry(&pagemap, written);
        assert_eq!(
            e & BITS,
            PM_PRESENT | PM_UFFD_WP,
            "a protected page: {e:#x}"
        );
        let e = entry(&pagemap, untouched);
        assert_eq!(e & BITS, PM_SWAP | PM_UFFD_WP, "a uffd-wp marker: {e:#x}");
        map.write(0, 2u8);
        let e = entry(&pagemap, written);
        assert_eq!(
            e & BITS,
            PM_PRESENT,
            "written again, so unprotected: {e:#x}"
        );
    }
}
