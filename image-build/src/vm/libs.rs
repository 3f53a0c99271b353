//! The shared libraries a dynamically linked program needs, as the host's
//! dynamic loader resolves them (`ldd`), so the initramfs can run the
//! engine, `nft` and `mke2fs` without a distribution underneath.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::VmImageError;

/// Absolute paths of the libraries (and the loader) `binary` needs.
pub fn closure(binary: &Path) -> Result<BTreeSet<String>, VmImageError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| VmImageError::Ldd {
            path: binary.to_owned(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(BTreeSet::new());
    }
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let target = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line.trim(),
        };
        let path = target.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.insert(path.to_owned());
        } else if line.contains("not found") {
            return Err(VmImageError::MissingLibrary {
                binary: binary.to_owned(),
                line: line.trim().to_owned(),
            });
        }
    }
    Ok(libs)
}
