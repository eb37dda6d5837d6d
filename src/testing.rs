//! Test support shared by the unit tests here and the integration tests (not an API).

use std::io::Write;

/// Say that the calling test is skipped, and why: at once on stderr (libtest's capture, which
/// hides a passing test's output, does not reach a direct write), and again in a summary after
/// the binary's `test result:` line, so that a skip never passes for a silent `ok`.
pub fn skipped(reason: impl std::fmt::Display) {
    use std::sync::{Mutex, Once};
    static SKIPS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static SUMMARY: Once = Once::new();
    extern "C" fn summary() {
        let skips = SKIPS.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "\n{} test(s) SKIPPED:", skips.len());
        for s in skips.iter() {
            let _ = writeln!(err, "    {s}");
        }
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let line = format!("{test}: {reason}");
    let _ = writeln!(std::io::stderr(), "SKIPPED {line}");
    SKIPS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    // SAFETY: atexit with a plain extern "C" function that only locks and writes.
    SUMMARY.call_once(|| unsafe {
        libc::atexit(summary);
    });
}

/// A child process, killed and reaped when dropped, the test failing or not.
pub struct Reap(pub i32);

impl Drop for Reap {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}
