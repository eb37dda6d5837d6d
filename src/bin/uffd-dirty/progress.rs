//! A progress bar on stderr for the one slow step people wait on: arming many GiB at attach.
//!
//! The bar appears only when stderr is a terminal and only once the step has taken longer than
//! [`SHOW_AFTER`], so attaching to a small process never flashes one; it is erased
//! (`\r\x1b[K`) when the step ends. Library code reports through a plain
//! `&mut dyn FnMut(done, total)` and knows nothing of terminals.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

/// How long a step runs before its bar appears.
pub const SHOW_AFTER: Duration = Duration::from_millis(200);
/// Overrides [`SHOW_AFTER`], in milliseconds (for the tests, which cannot afford a target of
/// the 16 GiB that takes 200 ms to arm).
pub const SHOW_AFTER_ENV: &str = "UFFD_DIRTY_PROGRESS_AFTER_MS";
/// Redraw at most this often.
const REDRAW_EVERY: Duration = Duration::from_millis(50);
const BAR_CELLS: usize = 30;

/// A progress bar on stderr; see the module header.
pub struct Bar {
    label: &'static str,
    enabled: bool,
    show_after: Duration,
    started: Instant,
    drawn_at: Option<Instant>,
}

impl Bar {
    /// A bar for `label` (e.g. "arming"), drawn only if stderr is a terminal.
    pub fn on_stderr(label: &'static str) -> Bar {
        let show_after = std::env::var(SHOW_AFTER_ENV)
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(SHOW_AFTER, Duration::from_millis);
        Bar {
            label,
            enabled: io::stderr().is_terminal(),
            show_after,
            started: Instant::now(),
            drawn_at: None,
        }
    }

    /// `done` of `total` bytes are through; at `total`, the bar is erased.
    pub fn update(&mut self, done: u64, total: u64) {
        if done >= total {
            return self.clear();
        }
        if !self.enabled || total == 0 || self.started.elapsed() < self.show_after {
            return;
        }
        if self.drawn_at.is_some_and(|t| t.elapsed() < REDRAW_EVERY) {
            return;
        }
        self.drawn_at = Some(Instant::now());
        let line = format!("\r{} {}", self.label, bar_text(done, total));
        // A failed write to stderr must not fail the attach.
        let _ = io::stderr().write_all(line.as_bytes());
    }

    /// Erase the bar if it was drawn.
    pub fn clear(&mut self) {
        if self.drawn_at.take().is_some() {
            let _ = io::stderr().write_all(b"\r\x1b[K");
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `[#######.......]  42%  1.7/4.0 GiB`
fn bar_text(done: u64, total: u64) -> String {
    let done = done.min(total);
    let filled = (done as u128 * BAR_CELLS as u128 / total as u128) as usize;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    format!(
        "[{}{}] {:3}%  {:.1}/{:.1} GiB",
        "#".repeat(filled),
        ".".repeat(BAR_CELLS - filled),
        done as u128 * 100 / total as u128,
        gib(done),
        gib(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(
            bar_text(0, 4 << 30),
            format!("[{}]   0%  0.0/4.0 GiB", ".".repeat(30))
        );
        assert_eq!(
            bar_text(1 << 30, 4 << 30),
            format!("[{}{}]  25%  1.0/4.0 GiB", "#".repeat(7), ".".repeat(23))
        );
        assert_eq!(
            bar_text(5 << 30, 4 << 30),
            format!("[{}] 100%  4.0/4.0 GiB", "#".repeat(30))
        );
    }
}
