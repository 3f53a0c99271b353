//! The uncompressed kernel for PVH boot: a bzImage carries its kernel ELF as
//! an xz stream after the setup code; booting that ELF directly saves the
//! decompression (seconds under emulation).

use xz2::stream::{Action, Status, Stream};

use super::VmImageError;

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
