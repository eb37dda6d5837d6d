//! The terminal while the view is up: alternate screen, hidden cursor, keys unbuffered and
//! unechoed, and — whatever way the tracker leaves (normal end, error, panic) — all of it
//! restored. The saved state lives in one static so that the panic hook can restore it before
//! the panic message is printed (it would vanish with the alternate screen otherwise).

use std::fs::File;
use std::io::{self, Write};
use std::sync::{Mutex, Once};

use nix::sys::termios::{self, InputFlags, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

/// The terminal and its settings before the view took it, while the view has it.
static SAVED: Mutex<Option<(File, Termios)>> = Mutex::new(None);

const ENTER: &[u8] = b"\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J";
const LEAVE: &[u8] = b"\x1b[0m\x1b[?25h\x1b[?1049l";

/// The terminal taken over; dropping it gives it back.
pub struct Screen(());

impl Screen {
    /// Keys one by one, no echo, no signals from Ctrl-C (the view reads it as quit, so that
    /// a launched command in the same process group does not get a SIGINT of its own); output
    /// processing stays on, so a warning on stderr still starts at column 0.
    pub fn enter(tty: &File) -> io::Result<Screen> {
        let original = termios::tcgetattr(tty)?;
        let mut raw = original.clone();
        raw.local_flags &=
            !(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG | LocalFlags::IEXTEN);
        raw.input_flags &= !(InputFlags::IXON | InputFlags::ICRNL);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        install_panic_hook();
        *saved() = Some((tty.try_clone()?, original));
        termios::tcsetattr(tty, SetArg::TCSAFLUSH, &raw)?;
        let mut out = io::stdout().lock();
        out.write_all(ENTER)?;
        out.flush()?;
        Ok(Screen(()))
    }

    /// Give the terminal back (also done on drop).
    pub fn leave(&mut self) {
        restore();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

fn saved() -> std::sync::MutexGuard<'static, Option<(File, Termios)>> {
    SAVED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Leave the alternate screen and restore the saved settings, once.
fn restore() {
    let Some((tty, original)) = saved().take() else {
        return;
    };
    let mut out = io::stdout().lock();
    let _ = out.write_all(LEAVE);
    let _ = out.flush();
    let _ = termios::tcsetattr(&tty, SetArg::TCSAFLUSH, &original);
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
