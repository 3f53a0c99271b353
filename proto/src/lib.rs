//! Wire constants shared by the vmctl host and the guest engine.
//!
//! Owns the numbers both sides must agree on — vsock ports and the Docker
//! Engine API versions the guest speaks — so the host and the guest cannot
//! drift — the wire types of the published-port list ([`ports`]) and its
//! forwarding ([`forward`]), of the control service ([`control`]), the frames
//! every host ↔ guest vsock stream travels in ([`framing`]) and the
//! per-boot secret's handshake that opens each of them ([`auth`]). Code here
//! never opens a stream: it reads and writes through the `AsyncRead` /
//! `AsyncWrite` (or `Read` / `Write`) traits the caller's stream implements.

pub mod auth;
pub mod control;
pub mod file_events;
pub mod forward;
pub mod framing;
pub mod line;
pub mod ports;
pub mod share;

/// The Docker Engine API version the guest advertises in `Api-Version`.
pub const API_VERSION: &str = "1.47";

/// The oldest Docker Engine API version the guest still accepts in a path prefix.
pub const MIN_API_VERSION: &str = "1.24";

/// Guest vsock port serving the Docker Engine API.
pub const VSOCK_PORT_API: u32 = 2375;

/// Guest vsock port of the control service (health, version, shutdown, port events).
pub const VSOCK_PORT_CONTROL: u32 = 1025;

/// Guest vsock port of the published-port forwarder.
pub const VSOCK_PORT_FORWARD: u32 = 1026;

/// *Host* vsock port where the daemon takes the guest engine's port
/// reservations (a guest → host connection).
pub const VSOCK_PORT_HOST_PORTS: u32 = 1027;

/// Guest vsock port of the file-events service (desktop changes raised as
/// inotify events: [`file_events`]).
pub const VSOCK_PORT_FILE_EVENTS: u32 = 1029;

/// Parses an API version such as `1.44` into `(major, minor)`.
pub fn parse_api_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(parse_api_version("1.44"), Some((1, 44)));
        assert_eq!(parse_api_version("1.x"), None);
        assert_eq!(parse_api_version("144"), None);
        let min = parse_api_version(MIN_API_VERSION).unwrap();
        let max = parse_api_version(API_VERSION).unwrap();
        assert!(min < max);
        assert!(max >= (1, 44), "the docker CLI v28 needs at least 1.44");
    }
}
