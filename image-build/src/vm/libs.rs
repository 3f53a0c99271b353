//! The shared libraries a dynamically linked program needs, so the
//! initramfs can run the engine, `nft` and `mke2fs` without a distribution
//! underneath.
//!
//! Two sources: the host's own programs, resolved as the host's dynamic
//! loader resolves them (`ldd`); or another architecture's programs from an
//! unpacked tree of its Debian packages (a sysroot), where `ldd` cannot run
//! them: there the interpreter (`PT_INTERP`) and each `DT_NEEDED` name are
//! read from the ELF files ([`super::elf`]) and looked up, transitively, in
//! the architecture's library directories inside the tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::arch::Arch;
use super::elf::Elf;
use super::VmImageError;

/// Where a program's libraries come from.
#[derive(Debug, Clone)]
pub enum Libraries {
    /// The host's own (`ldd`).
    Host,
    /// An unpacked tree of `arch`'s packages.
    Sysroot { root: PathBuf, arch: Arch },
}

/// The libraries (and the loader) `binary` needs: path in the image →
/// the file to read it from.
pub fn closure(binary: &Path, from: &Libraries) -> Result<BTreeMap<String, PathBuf>, VmImageError> {
    match from {
        Libraries::Host => Ok(ldd(binary)?
            .into_iter()
            .map(|lib| (lib.clone(), PathBuf::from(lib)))
            .collect()),
        Libraries::Sysroot { root, arch } => sysroot_closure(binary, root, *arch),
    }
}

/// Absolute paths of the libraries (and the loader) `binary` needs, from the host's `ldd`.
fn ldd(binary: &Path) -> Result<BTreeSet<String>, VmImageError> {
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

/// The closure of `binary` inside `root`: its interpreter, then every
/// `DT_NEEDED` library, each looked up in `arch`'s library directories.
fn sysroot_closure(
    binary: &Path,
    root: &Path,
    arch: Arch,
) -> Result<BTreeMap<String, PathBuf>, VmImageError> {
    let mut found = BTreeMap::new();
    let mut queue = vec![binary.to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(file) = queue.pop() {
        let bytes = super::read(&file)?;
        let elf = Elf::parse(&bytes).map_err(|source| VmImageError::Elf {
            path: file.clone(),
            source,
        })?;
        if elf.machine() != arch.elf_machine() {
            return Err(VmImageError::WrongArch {
                path: file.clone(),
                arch,
            });
        }
        let elf_error = |source| VmImageError::Elf {
            path: file.clone(),
            source,
        };
        if let Some(interp) = elf.interpreter().map_err(elf_error)? {
            let host = resolve(root, &interp).ok_or_else(|| VmImageError::MissingLibrary {
                binary: file.clone(),
                line: interp.clone(),
            })?;
            found.insert(interp, host);
        }
        for name in elf.needed().map_err(elf_error)? {
            if !seen.insert(name.clone()) {
                continue;
            }
            let (at, host) = arch
                .library_dirs()
                .iter()
                .map(|dir| format!("/{dir}/{name}"))
                .find_map(|at| resolve(root, &at).map(|host| (at, host)))
                .ok_or_else(|| VmImageError::MissingLibrary {
                    binary: file.clone(),
                    line: format!("{name} is in none of {:?}", arch.library_dirs()),
                })?;
            queue.push(host.clone());
            found.insert(at, host);
        }
    }
    Ok(found)
}

/// The regular file at absolute `path` inside `root`, following symlinks
/// (absolute ones relative to `root`, never out of it); `None` if missing.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let root = normalise(root);
    let mut at = root.join(path.trim_start_matches('/'));
    for _ in 0..40 {
        let meta = std::fs::symlink_metadata(&at).ok()?;
        if meta.is_file() {
            return Some(at);
        }
        if !meta.file_type().is_symlink() {
            return None;
        }
        let target = std::fs::read_link(&at).ok()?;
        at = normalise(&if target.is_absolute() {
            root.join(target.strip_prefix("/").ok()?)
        } else {
            at.parent()?.join(target)
        });
        if !at.starts_with(&root) {
            return None;
        }
    }
    None
}

/// `path` with `..` and `.` folded away (lexically).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("lib/aarch64-linux-gnu")).unwrap();
        std::fs::write(root.join("lib/aarch64-linux-gnu/ld.so"), b"x").unwrap();
        std::os::unix::fs::symlink("aarch64-linux-gnu/ld.so", root.join("lib/ld.so.1")).unwrap();
        std::os::unix::fs::symlink("/lib/aarch64-linux-gnu/ld.so", root.join("lib/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", root.join("lib/out")).unwrap();
        let real = root.join("lib/aarch64-linux-gnu/ld.so");
        assert_eq!(resolve(root, "/lib/ld.so.1"), Some(real.clone()));
        assert_eq!(resolve(root, "/lib/abs"), Some(real));
        assert_eq!(resolve(root, "/lib/out"), None);
        assert_eq!(resolve(root, "/lib/nosuch"), None);
    }

    #[test]
    fn a_host_binary_is_refused_for_another_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = if Arch::host() == Arch::Amd64 {
            Arch::Arm64
        } else {
            Arch::Amd64
        };
        let exe = std::env::current_exe().unwrap();
        let from = Libraries::Sysroot {
            root: dir.path().to_owned(),
            arch: foreign,
        };
        assert!(matches!(
            closure(&exe, &from),
            Err(VmImageError::WrongArch { .. })
        ));
        // The same binary against an empty tree of its own architecture:
        // its loader is missing there.
        let own = Libraries::Sysroot {
            root: dir.path().to_owned(),
            arch: Arch::host(),
        };
        assert!(matches!(
            closure(&exe, &own),
            Err(VmImageError::MissingLibrary { .. })
        ));
    }
}
