//! Bytes moved and time spent not reading, per peer (the client, the source, the target),
//! summed over every connection of the process in relaxed atomics: the connection loops add,
//! the metrics endpoint reads at each scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cqlmirror_core::session::Peer;

/// Per peer, by [`Peer::index`].
#[derive(Debug)]
pub struct Traffic {
    bytes_in: [AtomicU64; 3],
    bytes_out: [AtomicU64; 3],
    /// Nanoseconds during which the proxy did not read the peer (backpressure).
    paused: [AtomicU64; 3],
}

pub static TRAFFIC: Traffic = Traffic {
    bytes_in: [const { AtomicU64::new(0) }; 3],
    bytes_out: [const { AtomicU64::new(0) }; 3],
    paused: [const { AtomicU64::new(0) }; 3],
};

impl Traffic {
    pub fn received(&self, peer: Peer, bytes: usize) {
        self.bytes_in[peer.index()].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn sent(&self, peer: Peer, bytes: usize) {
        self.bytes_out[peer.index()].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn paused(&self, peer: Peer, time: Duration) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        self.paused[peer.index()].fetch_add(nanos, Ordering::Relaxed);
    }

    /// (bytes received, bytes sent, seconds paused) of `peer` so far.
    pub fn totals(&self, peer: Peer) -> (u64, u64, f64) {
        let i = peer.index();
        (
            self.bytes_in[i].load(Ordering::Relaxed),
            self.bytes_out[i].load(Ordering::Relaxed),
            self.paused[i].load(Ordering::Relaxed) as f64 / 1e9,
        )
    }
}
