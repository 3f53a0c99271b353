//! Unix terminals: termios raw mode on stdin, the size from `TIOCGWINSZ`.

use nix::sys::termios::{self, SetArg, Termios};

pub(super) fn size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut size) } == 0;
    ok.then_some((size.ws_row, size.ws_col))
}

/// Stdin's settings before raw mode, put back on drop.
pub(super) struct Saved(Termios);

impl Saved {
    pub(super) fn enter_raw() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(Self(saved))
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}
