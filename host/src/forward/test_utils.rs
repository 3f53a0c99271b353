//! Test doubles shared by the forwarder's unit tests.
#![cfg(test)]

use crate::vsock::{ConnectFuture, VsockError, VsockTransport};

/// No guest: every connect is refused (for tests that look at listeners and
/// answers only).
pub struct NoGuest;

impl VsockTransport for NoGuest {
    fn name(&self) -> &'static str {
        "none"
    }
    fn connect(&self, port: u32) -> ConnectFuture<'_> {
        Box::pin(async move { Err(VsockError::Refused { port }) })
    }
}
