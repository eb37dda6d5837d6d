//! The soft-dirty method: no userfaultfd. `echo 4 > /proc/PID/clear_refs` clears every
//! soft-dirty bit of the process; a written page gets bit 55 of its pagemap entry back. Read
//! and clear are two steps over the whole process, so the target is frozen between them (see
//! `attach::Frozen`) unless the user accepts that writes in that window can be lost. New or
//! expanded VMAs carry VM_SOFTDIRTY and read wholly dirty, as the kernel decides.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;

use super::push_run;
use crate::maps::Span;
use crate::sys::{self, abi};

const BLOCK: usize = 1 << 16;

pub struct SoftDirty {
    pagemap: File,
    clear_refs: File,
    buf: Vec<u8>,
    page_size: u64,
}

impl SoftDirty {
    pub fn new(pagemap: File, clear_refs: File) -> Self {
        SoftDirty {
            pagemap,
            clear_refs,
            buf: vec![0; BLOCK * 8],
            page_size: sys::page_size(),
        }
    }

    /// Append the soft-dirty pages of `span` to `out`, and its populated (present or swapped)
    /// pages to `populated`.
    pub fn dirty(
        &mut self,
        span: Span,
        out: &mut Vec<Span>,
        populated: &mut Vec<Span>,
    ) -> io::Result<()> {
        let mut addr = span.start;
        while addr < span.end {
            let pages = ((span.end - addr) / self.page_size).min(BLOCK as u64) as usize;
            let n = sys::pread_full(
                self.pagemap.as_fd(),
                &mut self.buf[..pages * 8],
                addr / self.page_size * 8,
            )? / 8;
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            for (i, chunk) in self.buf[..n * 8].chunks_exact(8).enumerate() {
                let entry = u64::from_ne_bytes(chunk.try_into().expect("8-byte chunk"));
                let a = addr + i as u64 * self.page_size;
                if entry & abi::PM_SOFT_DIRTY != 0 {
                    push_run(out, Span::new(a, a + self.page_size));
                }
                if entry & (abi::PM_PRESENT | abi::PM_SWAP) != 0 {
                    push_run(populated, Span::new(a, a + self.page_size));
                }
            }
            addr += n as u64 * self.page_size;
        }
        Ok(())
    }

    /// Clear every soft-dirty bit of the process (`clear_refs` value 4).
    pub fn clear(&mut self) -> io::Result<()> {
        self.clear_refs.write_all(abi::CLEAR_REFS_SOFT_DIRTY)
    }
}

/// Whether soft-dirty really works here, by round trip (see `check::soft_dirty_round_trip`):
/// writing to clear_refs succeeds silently on kernels built without CONFIG_MEM_SOFT_DIRTY.
pub fn works() -> io::Result<bool> {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if let Some(&w) = WORKS.get() {
        return Ok(w);
    }
    let w = crate::probe::soft_dirty_round_trip()?;
    Ok(*WORKS.get_or_init(|| w))
}
