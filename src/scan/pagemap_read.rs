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

impl PagemapRead {
    pub fn new(pagemap: File) -> Self {
        PagemapRead {
            pagemap,
            buf: vec![0; BLOCK * 8],
            page_size: sys::page_size(),
        }
    }

    /// Append to `written` the pages of `span` that exist without the uffd-wp bit; with
    /// `empty_is_written`, empty entries too (in armed memory an empty entry is a zapped page:
    /// its marker went with it). Existing pages go to `populated` when given.
    pub fn scan(
        &mut self,
        span: Span,
        empty_is_written: bool,
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
                    empty_is_written
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
