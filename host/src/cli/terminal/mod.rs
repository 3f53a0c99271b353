//! The local terminal for `-t` streams (`run -t`, `exec -t`, `machine
//! ssh`): its size, and raw mode while the stream runs, restored on drop.
//! One file per mechanism: [`unix`] (termios, `TIOCGWINSZ`) and [`windows`]
//! (the console API, with virtual-terminal sequences both ways).

#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;

#[cfg(unix)]
use unix as sys;
#[cfg(windows)]
use windows as sys;

use std::io::IsTerminal;

/// The terminal's size (rows, columns), when stdout is one.
pub fn size() -> Option<(u16, u16)> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    sys::size()
}

/// The local terminal in raw mode while a `-t` stream runs.
pub struct RawMode {
    _saved: sys::Saved,
}

impl RawMode {
    /// Raw mode when stdin is a terminal; `None` otherwise.
    pub fn enter() -> Option<Self> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        Some(Self {
            _saved: sys::Saved::enter_raw()?,
        })
    }
}
