//! `watch DIR`: an inotify watcher for VM tests (the `hello` busybox has no
//! `inotifyd`). Watches DIR and prints one line per event, as it comes:
//! `EVENTS NAME`, EVENTS being inotify's names joined by `,`
//! (`OPEN,ATTRIB,CLOSE_WRITE app.js`). Prints `ready` once the watch is in
//! place. Built std-only and static (see `tests/src/netpeer.rs`), so the
//! inotify calls are declared here.

use std::ffi::CString;
use std::io::Write;

extern "C" {
    fn inotify_init1(flags: i32) -> i32;
    fn inotify_add_watch(fd: i32, path: *const std::ffi::c_char, mask: u32) -> i32;
    fn read(fd: i32, buffer: *mut u8, count: usize) -> isize;
}

const NAMES: [(u32, &str); 10] = [
    (0x001, "ACCESS"),
    (0x002, "MODIFY"),
    (0x004, "ATTRIB"),
    (0x008, "CLOSE_WRITE"),
    (0x010, "CLOSE_NOWRITE"),
    (0x020, "OPEN"),
    (0x040, "MOVED_FROM"),
    (0x080, "MOVED_TO"),
    (0x100, "CREATE"),
    (0x200, "DELETE"),
];

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/src".into());
    let path = CString::new(dir.clone()).expect("a path without NUL");
    // SAFETY: plain syscalls; results checked.
    let fd = unsafe { inotify_init1(0) };
    assert!(
        fd >= 0,
        "inotify_init1: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a valid inotify fd and a NUL-terminated path; IN_ALL_EVENTS.
    let wd = unsafe { inotify_add_watch(fd, path.as_ptr(), 0xfff) };
    assert!(wd >= 0, "watch {dir}: {}", std::io::Error::last_os_error());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: the buffer is ours and as long as we say.
        let n = unsafe { read(fd, buffer.as_mut_ptr(), buffer.len()) };
        if n <= 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            panic!("inotify read: {error}");
        }
        let n = n as usize;
        let mut at = 0;
        while at + 16 <= n {
            let word =
                |i: usize| u32::from_ne_bytes(buffer[at + i..at + i + 4].try_into().unwrap());
            let (mask, len) = (word(4), word(12) as usize);
            let name = String::from_utf8_lossy(&buffer[at + 16..at + 16 + len]);
            let events: Vec<&str> = NAMES
                .iter()
                .filter(|(bit, _)| mask & bit != 0)
                .map(|(_, name)| *name)
                .collect();
            let _ = writeln!(out, "{} {}", events.join(","), name.trim_end_matches('\0'));
            at += 16 + len;
        }
        let _ = out.flush();
    }
}
