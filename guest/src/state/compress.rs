//! Compressed streams the engine takes in (layer blobs, `docker cp`
//! uploads, build contexts): the decompressor a stream's first bytes call for.

use std::io::{BufRead, BufReader, Read};

/// Wraps `blob` in the decompressor its first bytes call for: gzip, zstd, or
/// none.
pub fn decompress<'a>(blob: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut reader = BufReader::new(blob);
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(reader)?))
    } else {
        Ok(Box::new(reader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(blob: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        decompress(blob).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn plain_gzip_and_zstd() {
        let text = b"layer bytes".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &text).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&text[..], 1).unwrap();
        assert_eq!(read_all(&text), text);
        assert_eq!(read_all(&gz), text);
        assert_eq!(read_all(&zst), text);
        assert_eq!(read_all(b""), b"");
    }
}
