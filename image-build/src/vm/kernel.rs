//! The uncompressed kernel the VMM boots directly, per architecture.
//!
//! amd64: PVH boot of the ELF `vmlinux`: a bzImage carries its kernel ELF as
//! an xz stream after the setup code; booting that ELF directly saves the
//! decompression (seconds under emulation).
//! arm64: Debian's `vmlinuz` already is the uncompressed arm64 boot `Image`
//! (what QEMU's `-M virt` and Virtualization.framework's `VZLinuxBootLoader`
//! load): a 64-byte header whose `ARM\x64` magic sits at offset 56.

use xz2::stream::{Action, Status, Stream};

use super::arch::Arch;
use super::VmImageError;

/// The arm64 `Image` header's magic and where it sits.
const ARM64_MAGIC: &[u8] = b"ARM\x64";
const ARM64_MAGIC_AT: usize = 56;

/// The kernel to boot directly, from the package's `vmlinuz`.
pub fn boot_kernel(arch: Arch, vmlinuz: &[u8]) -> Result<Vec<u8>, VmImageError> {
    match arch {
        Arch::Amd64 => vmlinux(vmlinuz),
        Arch::Arm64 => {
            let magic = vmlinuz.get(ARM64_MAGIC_AT..ARM64_MAGIC_AT + ARM64_MAGIC.len());
            if magic == Some(ARM64_MAGIC) {
                Ok(vmlinuz.to_vec())
            } else {
                Err(VmImageError::NoArm64Image)
            }
        }
    }
}

const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";

/// The ELF kernel inside a bzImage (the first xz stream that decodes to one).
pub fn vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, VmImageError> {
    let mut from = 0;
    while let Some(at) = find(&bzimage[from..], XZ_MAGIC).map(|i| i + from) {
        if let Some(out) = decode_one_stream(&bzimage[at..]) {
            if out.starts_with(b"\x7fELF") {
                return Ok(out);
            }
        }
        from = at + 1;
    }
    Err(VmImageError::NoVmlinux)
}

/// Decodes the xz stream at the start of `input`, ignoring what follows it
/// (the bzImage's trailer is not xz, so a plain reader reports corruption).
fn decode_one_stream(mut input: &[u8]) -> Option<Vec<u8>> {
    let mut stream = Stream::new_stream_decoder(u64::MAX, 0).ok()?;
    let mut out = Vec::with_capacity(input.len() * 5);
    loop {
        if out.capacity() - out.len() < 1 << 20 {
            out.reserve(16 << 20);
        }
        let before = stream.total_in();
        let status = stream.process_vec(input, &mut out, Action::Run).ok()?;
        input = &input[(stream.total_in() - before) as usize..];
        match status {
            Status::StreamEnd => return Some(out),
            Status::Ok | Status::GetCheck => {}
            Status::MemNeeded => return None,
        }
        if input.is_empty() {
            return None;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arm64_image_is_booted_as_is_and_anything_else_refused() {
        let mut image = vec![0u8; 4096];
        image[ARM64_MAGIC_AT..ARM64_MAGIC_AT + 4].copy_from_slice(ARM64_MAGIC);
        assert_eq!(boot_kernel(Arch::Arm64, &image).unwrap(), image);
        let gzip = b"\x1f\x8b\x08\0rest of a compressed kernel".to_vec();
        assert!(matches!(
            boot_kernel(Arch::Arm64, &gzip),
            Err(VmImageError::NoArm64Image)
        ));
        assert!(matches!(
            boot_kernel(Arch::Amd64, &image),
            Err(VmImageError::NoVmlinux)
        ));
    }
}
