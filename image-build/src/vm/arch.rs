//! The guest architectures the VM image is built for, and what differs
//! between them: Debian's name, the ELF machine of its binaries, where its
//! libraries live, the modules it loads, and the kernel's boot format.
//!
//! amd64 is built from the host's own programs (the builder runs on amd64);
//! arm64 (Apple silicon, `qemu-system-aarch64 -M virt`) from Debian's arm64
//! packages, read without running anything they contain.

use std::fmt;

/// A guest architecture, by Debian's (and Docker's) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// The architecture this builder was compiled for.
    pub fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }

    /// Debian's, Go's and Docker's name: `amd64`, `arm64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// `e_machine` of this architecture's ELF files (EM_X86_64, EM_AARCH64).
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 62,
            Arch::Arm64 => 183,
        }
    }

    /// The GNU triple: Debian's multiarch directory, the cross tools' prefix.
    pub fn gnu_triple(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-linux-gnu",
            Arch::Arm64 => "aarch64-linux-gnu",
        }
    }

    /// Where the dynamic loader of this architecture looks, in order.
    pub fn library_dirs(self) -> [String; 4] {
        let triple = self.gnu_triple();
        [
            format!("lib/{triple}"),
            format!("usr/lib/{triple}"),
            "lib".to_owned(),
            "usr/lib".to_owned(),
        ]
    }

    /// The roots of the module list (`image-build/modules-<arch>.txt`).
    pub fn module_roots(self) -> &'static str {
        match self {
            Arch::Amd64 => include_str!("../../modules-amd64.txt"),
            Arch::Arm64 => include_str!("../../modules-arm64.txt"),
        }
    }

    /// The `strip` that understands this architecture's ELF files.
    pub fn strip_program(self) -> String {
        if self == Arch::host() {
            "strip".to_owned()
        } else {
            format!("{}-strip", self.gnu_triple())
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_lists_differ_where_the_hardware_does() {
        let amd64 = crate::vm::modules::roots(Arch::Amd64.module_roots());
        let arm64 = crate::vm::modules::roots(Arch::Arm64.module_roots());
        assert!(amd64.contains(&"crc32c_intel"));
        assert!(!arm64.contains(&"crc32c_intel"));
        for both in [
            "virtiofs",
            "fuse",
            "qemu_fw_cfg",
            "vmw_vsock_virtio_transport",
        ] {
            assert!(amd64.contains(&both) && arm64.contains(&both), "{both}");
        }
    }

    #[test]
    fn names_follow_debian() {
        assert_eq!(Arch::Arm64.to_string(), "arm64");
        assert_eq!(Arch::Arm64.library_dirs()[0], "lib/aarch64-linux-gnu");
        assert_eq!(Arch::Amd64.elf_machine(), 62);
    }
}
