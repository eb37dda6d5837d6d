//! The terminal while the view is up: alternate screen, hidden cursor, keys unbuffered and
//! unechoed, and — whatever way the tracker leaves (normal end, error, panic, a second
//! SIGINT/SIGTERM) — all of it restored.
//!
//! The settings to restore are saved once, by [`save`], before any signal handler is
//! registered, in statics a signal handler may read: a descriptor of the terminal that stays
//! open for the life of the process and the plain `libc::termios`. The panic hook restores
//! before the panic message is printed (it would vanish with the alternate screen otherwise),
//! and [`exit_on_second_signal`] restores with async-signal-safe calls only before `_exit`.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};

use nix::sys::termios::{self, InputFlags, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

/// The terminal and its settings from before the view, saved once by [`save`].
struct Original {
    /// A duplicate of the terminal's descriptor, never closed (the static is never dropped).
    tty: OwnedFd,
    termios: libc::termios,
}

static ORIGINAL: OnceLock<Original> = OnceLock::new();

/// The view has the terminal now (raw, alternate screen): set before the terminal is changed,
/// cleared only once it is given back, so a signal in between restores it.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Serialises the ordinary restores (the drawing thread's and a panicking thread's).
static RESTORING: Mutex<()> = Mutex::new(());

const ENTER: &[u8] = b"\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J";
const LEAVE: &[u8] = b"\x1b[0m\x1b[?25h\x1b[?1049l";

/// Save `tty`'s settings, to be restored when the view ends however it ends. Call it before
/// [`exit_on_second_signal`] and [`Screen::enter`]; later calls keep the first settings.
pub fn save(tty: &File) -> io::Result<()> {
    if ORIGINAL.get().is_some() {
        return Ok(());
    }
    let termios = libc::termios::from(termios::tcgetattr(tty)?);
    let tty = OwnedFd::from(tty.try_clone()?);
    let _ = ORIGINAL.set(Original { tty, termios });
    Ok(())
}

/// On `sig`, once `stop` is set (by an earlier signal, or by `q`): give the terminal back if the
/// view has it, then `_exit(130)`. Register it before the handler that sets `stop`, so that
/// the first signal finds `stop` still clear. This replaces `register_conditional_shutdown`,
/// whose `_exit` would leave the terminal raw and on the alternate screen.
pub fn exit_on_second_signal(sig: libc::c_int, stop: Arc<AtomicBool>) -> io::Result<()> {
    let action = move || {
        if stop.load(Ordering::SeqCst) {
            restore_from_signal();
            signal_hook::low_level::exit(130);
        }
    };
    // SAFETY: the action only loads atomics, reads statics that were initialised before it
    // could run (ORIGINAL is set before TAKEN, which is set only after [`save`]), and calls
    // write(2), tcsetattr(3) and _exit(2), which POSIX lists as async-signal-safe. It neither
    // allocates nor takes a lock.
    unsafe { signal_hook::low_level::register(sig, action) }?;
    Ok(())
}

/// The restore a signal handler can do: no locks, no allocation, no Rust stdout buffer.
fn restore_from_signal() {
    if !TAKEN.load(Ordering::SeqCst) {
        return;
    }
    let Some(original) = ORIGINAL.get() else {
        return;
    };
    // SAFETY: write(2) from a static byte string; tcsetattr(3) on a descriptor we keep open
    // for the life of the process, with a `termios` tcgetattr filled. Both are
    // async-signal-safe; their errors leave nothing better to do before _exit.
    unsafe {
        libc::write(libc::STDOUT_FILENO, LEAVE.as_ptr().cast(), LEAVE.len());
        libc::tcsetattr(original.tty.as_raw_fd(), libc::TCSAFLUSH, &original.termios);
    }
}

/// The terminal taken over; dropping it gives it back.
pub struct Screen(());

impl Screen {
    /// Keys one by one, no echo, no signals from Ctrl-C (the view reads it as quit, so that
    /// a launched command in the same process group does not get a SIGINT of its own); output
    /// processing stays on, so a warning on stderr still starts at column 0.
    pub fn enter(tty: &File) -> io::Result<Screen> {
        save(tty)?;
        let original = ORIGINAL.get().expect("saved just above");
        let mut raw = Termios::from(original.termios);
        raw.local_flags &=
            !(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG | LocalFlags::IEXTEN);
        raw.input_flags &= !(InputFlags::IXON | InputFlags::ICRNL);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        install_panic_hook();
        // The guard exists before the terminal changes: if anything below fails, dropping it
        // on the way out restores what was already changed.
        TAKEN.store(true, Ordering::SeqCst);
        let screen = Screen(());
        termios::tcsetattr(tty, SetArg::TCSAFLUSH, &raw)?;
        let mut out = io::stdout().lock();
        out.write_all(ENTER)?;
        out.flush()?;
        Ok(screen)
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

/// Leave the alternate screen and restore the saved settings, once.
fn restore() {
    let _serial = RESTORING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !TAKEN.load(Ordering::SeqCst) {
        return;
    }
    let Some(original) = ORIGINAL.get() else {
        return;
    };
    let mut out = io::stdout().lock();
    let _ = out.write_all(LEAVE);
    let _ = out.flush();
    let _ = termios::tcsetattr(
        &original.tty,
        SetArg::TCSAFLUSH,
        &Termios::from(original.termios),
    );
    // Only now: a signal until here finds the terminal still taken and restores it itself.
    TAKEN.store(false, Ordering::SeqCst);
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
