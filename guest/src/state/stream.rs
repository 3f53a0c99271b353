//! Docker's multiplexed stream format, `[kind, 0, 0, 0, len:be32] payload`:
//! what attach, exec and logs send to clients, and what a container's
//! monitor sends the engine (with one more kind, [`FRAME_EXIT`]). The API,
//! the engine and the monitor all frame through here.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Stream ids of Docker's multiplexed framing.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// Frame kind carrying the exit status of an exec session (the monitor's
/// JSON `ExitInfo`); never sent to a client.
pub const FRAME_EXIT: u8 = 3;

/// Prefixes `payload` with the 8-byte header `[kind, 0, 0, 0, len(be32)]`.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.push(kind);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one frame; `None` at end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; 8];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some((header[0], payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_is_big_endian_length() {
        assert_eq!(
            frame(STDERR, b"hi"),
            vec![2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']
        );
    }

    #[tokio::test]
    async fn frames_read_back() {
        let mut data = frame(STDOUT, b"abc");
        data.extend(frame(STDIN, b""));
        let mut reader = &data[..];
        assert_eq!(
            read_frame(&mut reader).await.unwrap(),
            Some((1, b"abc".to_vec()))
        );
        assert_eq!(
            read_frame(&mut reader).await.unwrap(),
            Some((0, Vec::new()))
        );
        assert_eq!(read_frame(&mut reader).await.unwrap(), None);
    }
}
