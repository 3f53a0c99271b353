//! Finding the helper programs and files vmctl runs with: QEMU, the vsock
//! backend, the VM image. An environment variable names each explicitly;
//! otherwise the usual places are searched.

use std::path::{Path, PathBuf};

/// `$env` if set, else `name` on `PATH`, else in `~/.cargo/bin` and next to
/// the vmctl executable.
pub fn find(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    if let Some(dir) = exe_dir() {
        dirs.push(dir);
    }
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The directory of the running vmctl executable.
pub fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(Path::to_owned)
}

/// Environment variable naming the VM image directory.
pub const IMAGE_ENV: &str = "VMCTL_VM_IMAGE";

/// The directory holding `vmlinux` and `initramfs.img`: `$VMCTL_VM_IMAGE`,
/// else `<exe dir>/../vm` (a cargo build's `target/vm`), else
/// `<exe dir>/../share/vmctl/vm` (an install under a prefix).
pub fn vm_image_dir() -> Result<PathBuf, Vec<PathBuf>> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os(IMAGE_ENV).filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(dir));
    } else if let Some(exe) = exe_dir() {
        candidates.push(exe.join("../vm"));
        candidates.push(exe.join("../share/vmctl/vm"));
    }
    candidates
        .iter()
        .find(|dir| dir.join("vmlinux").exists() && dir.join("initramfs.img").exists())
        .cloned()
        .ok_or(candidates)
}
