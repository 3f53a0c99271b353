//! Loading kernel modules: `finit_module` on each path of
//! `/etc/vmctl/modules`, which the image builder wrote in dependency order.

use std::os::fd::AsRawFd;
use std::path::Path;

/// The list the image builder wrote.
pub const LIST: &str = "/etc/vmctl/modules";

/// Loads every listed module; answers (loaded, failed). A module already
/// present is fine; any other failure is logged and boot goes on.
pub fn load_all(list: &Path) -> (usize, usize) {
    let Ok(text) = std::fs::read_to_string(list) else {
        tracing::warn!(list = %list.display(), "no module list");
        return (0, 0);
    };
    let (mut loaded, mut failed) = (0, 0);
    for path in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match load(Path::new(path)) {
            Ok(()) => loaded += 1,
            Err(e) => {
                failed += 1;
                tracing::warn!(module = path, error = %e, "module not loaded");
            }
        }
    }
    (loaded, failed)
}

fn load(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let params = c"";
    // SAFETY: finit_module reads the open fd and the NUL-terminated params.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        Ok(())
    } else {
        Err(err)
    }
}
