//! What one forward carried so far, for `vmctl port ls`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes from desktop clients to the guest.
    pub bytes_in: AtomicU64,
    /// Bytes from the guest to desktop clients.
    pub bytes_out: AtomicU64,
    /// TCP connections (UDP: flows) since the forward began.
    pub connections: AtomicU64,
    /// Those still open.
    pub active: AtomicU64,
}

/// Counts one connection as open until dropped.
pub struct Open<'a>(&'a Stats);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    pub fn open(&self) -> Open<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        Open(self)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections: u64,
    pub active: u64,
}
