//! Windows consoles: raw mode is the input console without line editing,
//! echo and Ctrl-C processing, with virtual-terminal input (keys arrive as
//! the escape sequences a Linux program expects); the output console
//! interprets the container's escape sequences. The size is the visible
//! window of the screen buffer.

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Console::{
    GetConsoleMode, GetConsoleScreenBufferInfo, GetStdHandle, SetConsoleMode,
    CONSOLE_SCREEN_BUFFER_INFO, ENABLE_ECHO_INPUT, ENABLE_LINE_INPUT, ENABLE_PROCESSED_INPUT,
    ENABLE_VIRTUAL_TERMINAL_INPUT, ENABLE_VIRTUAL_TERMINAL_PROCESSING, STD_INPUT_HANDLE,
    STD_OUTPUT_HANDLE,
};

pub(super) fn size() -> Option<(u16, u16)> {
    // SAFETY: an all-zero CONSOLE_SCREEN_BUFFER_INFO is a valid value to fill.
    let mut info: CONSOLE_SCREEN_BUFFER_INFO = unsafe { std::mem::zeroed() };
    // SAFETY: the process's stdout handle (not owned: never closed) and a
    // struct of ours to fill.
    let ok = unsafe { GetConsoleScreenBufferInfo(GetStdHandle(STD_OUTPUT_HANDLE), &mut info) };
    if ok == 0 {
        return None;
    }
    let window = info.srWindow;
    let rows = u16::try_from(window.Bottom - window.Top + 1).ok()?;
    let cols = u16::try_from(window.Right - window.Left + 1).ok()?;
    Some((rows, cols))
}

fn mode(handle: HANDLE) -> Option<u32> {
    let mut mode = 0;
    // SAFETY: a std handle of this process and a u32 of ours to fill.
    (unsafe { GetConsoleMode(handle, &mut mode) } != 0).then_some(mode)
}

fn set_mode(handle: HANDLE, mode: u32) -> bool {
    // SAFETY: a std handle of this process; SetConsoleMode only reads `mode`.
    unsafe { SetConsoleMode(handle, mode) != 0 }
}

/// Both consoles' modes before raw mode, put back on drop.
pub(super) struct Saved {
    input: u32,
    output: Option<u32>,
}

impl Saved {
    pub(super) fn enter_raw() -> Option<Self> {
        // SAFETY: GetStdHandle takes a constant and returns a borrowed handle.
        let (stdin, stdout) = unsafe {
            (
                GetStdHandle(STD_INPUT_HANDLE),
                GetStdHandle(STD_OUTPUT_HANDLE),
            )
        };
        let input = mode(stdin)?;
        let raw = (input & !(ENABLE_LINE_INPUT | ENABLE_ECHO_INPUT | ENABLE_PROCESSED_INPUT))
            | ENABLE_VIRTUAL_TERMINAL_INPUT;
        if !set_mode(stdin, raw) {
            return None;
        }
        let output = mode(stdout);
        if let Some(output) = output {
            set_mode(stdout, output | ENABLE_VIRTUAL_TERMINAL_PROCESSING);
        }
        Some(Self { input, output })
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        // SAFETY: GetStdHandle takes a constant and returns a borrowed handle.
        let (stdin, stdout) = unsafe {
            (
                GetStdHandle(STD_INPUT_HANDLE),
                GetStdHandle(STD_OUTPUT_HANDLE),
            )
        };
        set_mode(stdin, self.input);
        if let Some(output) = self.output {
            set_mode(stdout, output);
        }
    }
}
