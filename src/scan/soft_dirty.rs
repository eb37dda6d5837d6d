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

    /// Append the soft-dirty pages of `span` to `out`.
    pub fn dirty(&mut self, span: Span, out: &mut Vec<Span>) -> io::Result<()> {
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
                if entry & abi::PM_SOFT_DIRTY != 0 {
                    let a = addr + i as u64 * self.page_size;
                    push_run(out, Span::new(a, a + self.page_size));
                }
            }
            addr += n as u64 * self.page_size;
        }
        Ok(())
    }

    /// Clear every soft-dirty bit of the process (`clear_refs` value 4).
    pub fn clear(&mut self) -> io::Result<()> {
        self.clear_refs.write_all(b"4")
    }
}

/// Whether soft-dirty really works here, by round trip in our own memory: writing to
/// clear_refs succeeds silently on kernels built without CONFIG_MEM_SOFT_DIRTY.
pub fn works() -> io::Result<bool> {
    let page = sys::page_size() as usize;
    // SAFETY: a fresh private anonymous page nothing else refers to, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        let pagemap = File::open("/proc/self/pagemap")?;
        let mut clear_refs = std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/self/clear_refs")?;
        let entry = |pm: &File| -> io::Result<u64> {
            let mut b = [0u8; 8];
            sys::pread_full(pm.as_fd(), &mut b, p as u64 / page as u64 * 8)?;
            Ok(u64::from_ne_bytes(b))
        };
        // SAFETY: writing our own fresh page.
        unsafe { std::ptr::write_volatile(p as *mut u8, 1) };
        clear_refs.write_all(b"4")?;
        let cleared = entry(&pagemap)? & abi::PM_SOFT_DIRTY == 0;
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(p as *mut u8, 2) };
        let dirtied = entry(&pagemap)? & abi::PM_SOFT_DIRTY != 0;
        Ok(cleared && dirtied)
    })();
    // SAFETY: unmapping the page mapped above.
    unsafe { libc::munmap(p, page) };
    result
}
