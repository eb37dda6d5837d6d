//! `track --view`: a live picture of the target's tracked memory on the terminal, redrawn at
//! every delta and at every key.
//!
//! [`View`] is an [`Emitter`]: it takes the same records as the other formats (and passes
//! them on to `--output FILE` as well, when given). A key-reader thread shares the
//! [`model::Model`] under a mutex and redraws at once on a key; it also notices a resize. `q`
//! or Ctrl-C sets the tracker's stop flag, so the tracking loop ends exactly as on SIGINT
//! (final harvest, end record, the target left as it was), and a SIGINT or SIGTERM after it
//! exits at once with 130 as a second one does. The terminal is taken over at the start record
//! (after attach, so the attach's progress bar and warnings stay on the normal screen) and
//! given back at the end record, on drop, by the panic hook, or by that signal's handler.

pub mod model;
mod terminal;

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::exit::usage;
use crate::output::{Emitter, Record};
use crate::stop::Stop;
use model::Model;
use uffd_dirty::Mapping;

/// How often the key reader looks for a resize and for the end of the view.
const KEY_POLL_MS: u16 = 100;

/// The terminal the view draws on and reads keys from, or the usage error that says why there
/// is none. Called before anything touches the target, and before the signal handlers are
/// registered: it saves the terminal's settings for [`exit_on_second_signal`].
pub fn open_terminal() -> Result<File> {
    if !io::stdout().is_terminal() {
        return Err(usage(
            "--view draws on a terminal, and stdout is not one: run it in a terminal, or drop --view (--format json for scripts)",
        ));
    }
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| {
            usage(format!(
                "--view reads keys from the controlling terminal, and /dev/tty cannot be opened ({e}): run it from an interactive terminal, or drop --view (--format json for scripts)"
            ))
        })?;
    // Before any signal handler exists: a second SIGINT restores these settings.
    terminal::save(&tty).context("reading the settings of /dev/tty")?;
    Ok(tty)
}

/// In view mode, a second SIGINT or SIGTERM (or one after `q`) still exits at once with 130,
/// but gives the terminal back first. Register it before the handler that sets `stop`.
pub fn exit_on_second_signal(sig: i32, stop: Arc<AtomicBool>) -> io::Result<()> {
    terminal::exit_on_second_signal(sig, stop)
}

/// What the drawing thread and the key thread share.
struct Shared {
    tty: File,
    styled: bool,
    state: Mutex<State>,
}

struct State {
    model: Model,
    /// The size of the last frame, to redraw on a resize.
    size: (u16, u16),
    /// The view is over: nothing may draw any more.
    done: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn size(&self) -> (u16, u16) {
        match crate::os::window_size(self.tty.as_fd()) {
            Ok((cols, rows)) if cols > 0 && rows > 0 => (cols, rows),
            _ => (80, 24),
        }
    }

    /// Draw a whole frame: each line placed by cursor position, so a line that fills its
    /// row never wraps into the next.
    fn draw(&self, state: &mut State) -> io::Result<()> {
        if state.done {
            return Ok(());
        }
        state.size = self.size();
        let (cols, rows) = state.size;
        let lines = state.model.frame(cols as usize, rows as usize, self.styled);
        let mut frame = String::new();
        for (i, line) in lines.iter().enumerate() {
            frame.push_str(&format!("\x1b[{};1H{line}\x1b[K", i + 1));
        }
        frame.push_str("\x1b[J");
        let mut out = io::stdout().lock();
        out.write_all(frame.as_bytes())?;
        out.flush()
    }
}

/// The live view; see the module header.
pub struct View {
    shared: Arc<Shared>,
    stop: Arc<Stop>,
    /// `--output FILE`: the records go there too.
    file: Option<Box<dyn Emitter>>,
    screen: Option<terminal::Screen>,
    keys: Option<JoinHandle<()>>,
}

impl View {
    /// A view on `tty` (from [`open_terminal`]); `stop` is the tracker's stop request, which
    /// the quit keys make.
    /// `styled`: colours, or shading characters (`--color`, NO_COLOR).
    pub fn new(tty: File, stop: Arc<Stop>, file: Option<Box<dyn Emitter>>, styled: bool) -> View {
        View {
            shared: Arc::new(Shared {
                tty,
                styled,
                state: Mutex::new(State {
                    model: Model::default(),
                    size: (0, 0),
                    done: false,
                }),
            }),
            stop,
            file,
            screen: None,
            keys: None,
        }
    }

    fn start(&mut self) -> io::Result<()> {
        self.screen = Some(terminal::Screen::enter(&self.shared.tty)?);
        let shared = Arc::clone(&self.shared);
        let stop = Arc::clone(&self.stop);
        self.keys = Some(
            std::thread::Builder::new()
                .name("view-keys".into())
                .spawn(move || read_keys(&shared, &stop))?,
        );
        Ok(())
    }

    /// Stop the key reader and give the terminal back.
    fn finish(&mut self) {
        self.shared.lock().done = true;
        if let Some(keys) = self.keys.take() {
            let _ = keys.join();
        }
        if let Some(mut screen) = self.screen.take() {
            screen.leave();
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Emitter for View {
    fn emit(&mut self, record: &Record, vmas: &[Mapping]) -> io::Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.emit(record, vmas)?;
        }
        if let Record::Start(_) = record {
            self.start()?;
        }
        if let Record::End(end) = record {
            let page_size = self.shared.lock().model.page_size();
            self.finish();
            let mut out = io::stdout().lock();
            writeln!(out, "{}", crate::output::human::end_line(end, page_size))?;
            return out.flush();
        }
        let mut state = self.shared.lock();
        state.model.record(record, vmas);
        self.shared.draw(&mut state)
    }
}

/// The key thread: apply keys and redraw at once; redraw on a resize; end with the view.
fn read_keys(shared: &Shared, stop: &Stop) {
    let mut buf = [0u8; 64];
    loop {
        if shared.lock().done {
            return;
        }
        let mut fds = [PollFd::new(shared.tty.as_fd(), PollFlags::POLLIN)];
        let ready = matches!(poll(&mut fds, PollTimeout::from(KEY_POLL_MS)), Ok(n) if n > 0);
        let mut state = shared.lock();
        if ready {
            let n = match (&shared.tty).read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for key in model::parse_keys(&buf[..n]) {
                if state.model.key(key) {
                    stop.request();
                }
            }
        } else if state.size == shared.size() {
            continue;
        }
        // A failed draw shows at the next delta's draw, which reports it.
        let _ = shared.draw(&mut state);
    }
}
