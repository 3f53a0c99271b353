//! Finding the helper programs and files vmctl runs with: QEMU, the vsock
//! backend, the VM image (of the guest architecture chosen by
//! `VMCTL_GUEST_ARCH`, default the desktop's: [`GuestArch`]). An environment
//! variable names each explicitly; otherwise the usual places are searched.

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
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    dirs.into_iter()
        .map(|dir| dir.join(&file))
        .find(|path| is_executable(path))
}

/// A file with an execute bit (unix); any file on Windows, where the
/// `.exe` suffix is what makes a program.
fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// The directory of the running vmctl executable.
pub fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(Path::to_owned)
}

/// Environment variable naming the VM image directory.
pub const IMAGE_ENV: &str = "VMCTL_VM_IMAGE";

/// Environment variable choosing the guest's architecture: `amd64` or
/// `arm64` (also `x86_64`, `aarch64`); default the desktop's own.
pub const GUEST_ARCH_ENV: &str = "VMCTL_GUEST_ARCH";

/// A guest architecture vmctl has VM images for (Debian's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestArch {
    Amd64,
    Arm64,
}

impl GuestArch {
    /// The desktop's own architecture (what runs without emulation).
    pub fn desktop() -> Self {
        if cfg!(target_arch = "aarch64") {
            GuestArch::Arm64
        } else {
            GuestArch::Amd64
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "amd64" | "x86_64" => Some(GuestArch::Amd64),
            "arm64" | "aarch64" => Some(GuestArch::Arm64),
            _ => None,
        }
    }

    /// `$VMCTL_GUEST_ARCH`, else the desktop's architecture (an unknown
    /// name is said in the log, and the desktop's is used).
    pub fn selected() -> Self {
        match std::env::var(GUEST_ARCH_ENV) {
            Ok(name) if !name.is_empty() => Self::parse(&name).unwrap_or_else(|| {
                tracing::warn!(%name, "{GUEST_ARCH_ENV} is neither amd64 nor arm64; using the desktop's");
                Self::desktop()
            }),
            _ => Self::desktop(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GuestArch::Amd64 => "amd64",
            GuestArch::Arm64 => "arm64",
        }
    }
}

impl std::fmt::Display for GuestArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The directory holding `vmlinux` and `initramfs.img` for guests of
/// `arch`, the first of [`image_candidates`] that holds both.
pub fn vm_image_dir(arch: GuestArch) -> Result<PathBuf, Vec<PathBuf>> {
    let explicit = std::env::var_os(IMAGE_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let candidates = image_candidates(arch, GuestArch::desktop(), exe_dir().as_deref(), explicit);
    candidates
        .iter()
        .find(|dir| dir.join("vmlinux").exists() && dir.join("initramfs.img").exists())
        .cloned()
        .ok_or(candidates)
}

/// Where the VM image of `arch` may be, in order: `explicit`
/// (`$VMCTL_VM_IMAGE`) alone when given; else, for the desktop's own
/// architecture, `<exe dir>/../vm` (a cargo build's `target/vm`) and
/// `<exe dir>/../share/vmctl/vm` (an install under a prefix); then, for any
/// architecture, `<exe dir>/../vm-<arch>` (`target/vm-arm64`) and
/// `<exe dir>/../share/vmctl/vm-<arch>`.
pub fn image_candidates(
    arch: GuestArch,
    desktop: GuestArch,
    exe: Option<&Path>,
    explicit: Option<PathBuf>,
) -> Vec<PathBuf> {
    if let Some(dir) = explicit {
        return vec![dir];
    }
    let Some(exe) = exe else {
        return Vec::new();
    };
    let mut candidates = Vec::new();
    if arch == desktop {
        candidates.push(exe.join("../vm"));
        candidates.push(exe.join("../share/vmctl/vm"));
    }
    candidates.push(exe.join(format!("../vm-{arch}")));
    candidates.push(exe.join(format!("../share/vmctl/vm-{arch}")));
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_desktop_arch_keeps_target_vm_first() {
        let exe = Path::new("/x/target/debug");
        let found = image_candidates(GuestArch::Amd64, GuestArch::Amd64, Some(exe), None);
        assert_eq!(
            found,
            [
                exe.join("../vm"),
                exe.join("../share/vmctl/vm"),
                exe.join("../vm-amd64"),
                exe.join("../share/vmctl/vm-amd64"),
            ]
        );
    }

    #[test]
    fn another_arch_never_takes_the_desktop_image() {
        let exe = Path::new("/x/target/debug");
        let found = image_candidates(GuestArch::Arm64, GuestArch::Amd64, Some(exe), None);
        assert_eq!(
            found,
            [exe.join("../vm-arm64"), exe.join("../share/vmctl/vm-arm64")]
        );
        // On Apple silicon arm64 is the desktop's own: target/vm first.
        let mac = image_candidates(GuestArch::Arm64, GuestArch::Arm64, Some(exe), None);
        assert_eq!(mac[0], exe.join("../vm"));
        assert_eq!(mac[2], exe.join("../vm-arm64"));
    }

    #[test]
    fn an_explicit_image_dir_is_the_only_candidate() {
        let found = image_candidates(
            GuestArch::Arm64,
            GuestArch::Amd64,
            Some(Path::new("/x")),
            Some("/images/mine".into()),
        );
        assert_eq!(found, [PathBuf::from("/images/mine")]);
        assert!(image_candidates(GuestArch::Arm64, GuestArch::Amd64, None, None).is_empty());
    }

    #[test]
    fn arch_names_parse() {
        assert_eq!(GuestArch::parse("arm64"), Some(GuestArch::Arm64));
        assert_eq!(GuestArch::parse("aarch64"), Some(GuestArch::Arm64));
        assert_eq!(GuestArch::parse("x86_64"), Some(GuestArch::Amd64));
        assert_eq!(GuestArch::parse("riscv64"), None);
        assert_eq!(GuestArch::Arm64.to_string(), "arm64");
    }
}
