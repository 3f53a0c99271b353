//! The stream of a process the engine runs (attach, exec): what the API
//! bridges to its client. It comes from the container's monitor, which the
//! API reaches only through the engine; the framing is `state::stream`'s.

use tokio::io::AsyncRead;

pub use crate::runtime::monitor::client::Session;
pub use crate::runtime::monitor::protocol::ExitInfo;
use crate::state::stream::{read_frame, FRAME_EXIT};

/// One frame of a session's stream.
pub enum Frame {
    /// Output (`kind` 1 stdout, 2 stderr; 1 for a TTY).
    Output { kind: u8, payload: Vec<u8> },
    /// The end of an exec, with its code when the monitor could tell it.
    Exit(Option<i64>),
}

/// Reads the next frame; `None` at the end of the stream (or a broken one).
pub async fn next_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Option<Frame> {
    let (kind, payload) = read_frame(reader).await.ok()??;
    Some(if kind == FRAME_EXIT {
        Frame::Exit(
            serde_json::from_slice::<ExitInfo>(&payload)
                .ok()
                .map(|e| e.exit_code),
        )
    } else {
        Frame::Output { kind, payload }
    })
}
