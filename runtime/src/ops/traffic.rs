//! Bytes moved and time spent not reading, per peer (the client, the source, the target),
//! summed over every connection of the process in relaxed atomics: the connection loops add,
//! the metrics endpoint reads at each scrape.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use cqlmirror_core::config::Upstream;
use cqlmirror_core::session::Peer;

/// Per peer, by [`Peer::index`].
#[derive(Debug)]
pub struct Traffic {
    bytes_in: [AtomicU64; 3],
    bytes_out: [AtomicU64; 3],
    /// Nanoseconds during which the proxy did not read the peer (backpressure).
    paused: [AtomicU64; 3],
    /// Connections to each cluster open now, by [`Upstream::index`] (those of client
    /// sessions; the control connections are not counted).
    open: [AtomicI64; 2],
}

pub static TRAFFIC: Traffic = Traffic {
    bytes_in: [const { AtomicU64::new(0) }; 3],
    bytes_out: [const { AtomicU64::new(0) }; 3],
    paused: [const { AtomicU64::new(0) }; 3],
    open: [const { AtomicI64::new(0) }; 2],
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

    pub fn connected(&self, upstream: Upstream) {
        self.open[upstream.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn disconnected(&self, upstream: Upstream) {
        self.open[upstream.index()].fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections to `upstream` open now.
    pub fn open(&self, upstream: Upstream) -> i64 {
        self.open[upstream.index()].load(Ordering::Relaxed)
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
