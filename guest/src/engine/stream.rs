//! The stream of a process the engine runs (attach, exec): what the API
//! bridges to its client. It comes from the container's monitor, which the
//! API reaches only through the engine; the framing is `state::stream`'s.

pub use crate::runtime::monitor::client::Session;
pub use crate::runtime::monitor::protocol::ExitInfo;
