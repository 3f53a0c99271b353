//! Loading kernel modules: `finit_module` on each path of
//! `/etc/vmctl/modules`, which the image builder wrote as `<level> <path>`
//! lines in dependency order. The modules of one level need only lower
//! levels, so each level loads on every CPU at once.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The list the image builder wrote.
pub const LIST: &str = "/etc/vmctl/modules";

/// Loads every listed module; answers (loaded, failed). A module already
/// present is fine; any other failure is logged and boot goes on.
pub fn load_all(list: &Path) -> (usize, usize) {
    let Ok(text) = std::fs::read_to_string(list) else {
        tracing::warn!(list = %list.display(), "no module list");
        return (0, 0);
    };
    let loaded = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    for level in levels(&text) {
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..workers.min(level.len()) {
                scope.spawn(|| loop {
                    let Some(path) = level.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    match load(Path::new(path)) {
                        Ok(()) => loaded.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(module = path, error = %e, "module not loaded");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                });
            }
        });
    }
    (loaded.into_inner(), failed.into_inner())
}

/// The listed paths grouped by level, lowest first (a line without a level
/// is its own level, after the previous one).
fn levels(text: &str) -> Vec<Vec<&str>> {
    let mut groups: Vec<(usize, Vec<&str>)> = Vec::new();
    let mut fallback = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (level, path) = match line.split_once(' ') {
            Some((level, path)) if level.parse::<usize>().is_ok() => {
                (level.parse().unwrap_or(0), path)
            }
            _ => {
                fallback += 1;
                (usize::MAX / 2 + fallback, line)
            }
        };
        match groups.iter_mut().find(|(l, _)| *l == level) {
            Some((_, paths)) => paths.push(path),
            None => groups.push((level, vec![path])),
        }
    }
    groups.sort_by_key(|(level, _)| *level);
    groups.into_iter().map(|(_, paths)| paths).collect()
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

#[cfg(test)]
mod tests {
    #[test]
    fn groups_by_level() {
        let text = "0 /a.ko\n1 /b.ko\n0 /c.ko\n2 /d.ko\n";
        assert_eq!(
            super::levels(text),
            vec![vec!["/a.ko", "/c.ko"], vec!["/b.ko"], vec!["/d.ko"]]
        );
        assert_eq!(
            super::levels("/x.ko\n/y.ko\n"),
            vec![vec!["/x.ko"], vec!["/y.ko"]]
        );
    }
}
