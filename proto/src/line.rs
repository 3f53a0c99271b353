//! Bounded JSON lines: every line one side reads from the other (requests
//! on the host-port service, the port-list stream, control answers) is at
//! most [`MAX_LINE`] bytes, newline included. A longer one is an error and
//! the reader drops the connection: a peer cannot make the other side
//! buffer without limit by never sending a newline.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// The longest line accepted, newline included.
pub const MAX_LINE: usize = 64 * 1024;

/// Reads one line (with its newline, if any) into `line`, as
/// `AsyncBufReadExt::read_line` does, but fails with `InvalidData` once
/// `max` bytes came without a newline. `Ok(0)` at the end of the stream.
pub async fn read_line_capped<R>(
    reader: &mut R,
    line: &mut String,
    max: usize,
) -> std::io::Result<usize>
where
    R: AsyncBufRead + Unpin,
{
    let start = line.len();
    let n = reader.take(max as u64).read_line(line).await?;
    if n == max && !line.ends_with('\n') {
        line.truncate(start);
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("line longer than {max} bytes"),
        ));
    }
    Ok(n)
}

/// [`read_line_capped`] with [`MAX_LINE`].
pub async fn read_line<R>(reader: &mut R, line: &mut String) -> std::io::Result<usize>
where
    R: AsyncBufRead + Unpin,
{
    read_line_capped(reader, line, MAX_LINE).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_up_to_the_cap_pass_and_longer_ones_fail() {
        let mut input = &b"short\nexactly!\n"[..];
        let mut line = String::new();
        assert_eq!(read_line_capped(&mut input, &mut line, 9).await.unwrap(), 6);
        assert_eq!(line, "short\n");
        line.clear();
        assert_eq!(read_line_capped(&mut input, &mut line, 9).await.unwrap(), 9);
        line.clear();
        assert_eq!(read_line_capped(&mut input, &mut line, 9).await.unwrap(), 0);

        let long = vec![b'x'; MAX_LINE + 10];
        let mut input = &long[..];
        let error = read_line(&mut input, &mut line).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(line.is_empty(), "nothing of a refused line is kept");
    }

    #[tokio::test]
    async fn a_last_line_without_newline_is_a_line() {
        let mut input = &b"tail"[..];
        let mut line = String::new();
        assert_eq!(read_line(&mut input, &mut line).await.unwrap(), 4);
        assert_eq!(line, "tail");
    }
}
