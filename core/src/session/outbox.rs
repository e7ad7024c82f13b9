//! Bytes queued for one peer, pulled by the driver when the socket can take them.
//!
//! Small frames are coalesced into one buffer so that the driver writes them with one call;
//! large bodies are queued as the very `Bytes` that arrived, so forwarding never copies them.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::frame::HEADER_LEN;

/// Bodies up to this size are copied next to their header; larger ones are queued as-is.
const COPY_LIMIT: usize = 16 * 1024;

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    chunks: VecDeque<Bytes>,
    staging: BytesMut,
    queued: usize,
}

impl Outbox {
    /// Queues an envelope given as its header and body, the body being `head` (usually
    /// empty) then `body`.
    pub(crate) fn push_frame(&mut self, header: [u8; HEADER_LEN], head: &[u8], body: &Bytes) {
        self.staging.extend_from_slice(&header);
        if !head.is_empty() {
            self.staging.extend_from_slice(head);
        }
        if body.len() <= COPY_LIMIT {
            self.staging.extend_from_slice(body);
        } else {
            self.seal();
            self.chunks.push_back(body.clone());
        }
        self.queued += HEADER_LEN + head.len() + body.len();
    }

    /// The buffer to append already-encoded bytes to (e.g. v5 segments); call
    /// [`Outbox::appended`] with the number of bytes added.
    pub(crate) fn buffer(&mut self) -> &mut BytesMut {
        &mut self.staging
    }

    pub(crate) fn appended(&mut self, n: usize) {
        self.queued += n;
    }

    /// The next bytes to write, oldest first.
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        let next = match self.chunks.pop_front() {
            Some(chunk) => chunk,
            None if !self.staging.is_empty() => self.staging.split().freeze(),
            None => return None,
        };
        self.queued -= next.len();
        Some(next)
    }

    /// Bytes queued and not yet pulled.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Drops everything queued (the peer is gone).
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.staging.clear();
        self.queued = 0;
    }

    fn seal(&mut self) {
        if !self.staging.is_empty() {
            self.chunks.push_back(self.staging.split().freeze());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_shares_large_bodies() {
        let mut o = Outbox::default();
        let small = Bytes::from_static(b"small");
        let large = Bytes::from(vec![7u8; COPY_LIMIT + 1]);
        o.push_frame([1; HEADER_LEN], &[], &small);
        o.push_frame([2; HEADER_LEN], b"head", &large);
        o.push_frame([3; HEADER_LEN], &[], &small);
        assert_eq!(
            o.queued(),
            3 * HEADER_LEN + 4 + 2 * small.len() + large.len()
        );
        let mut all = Vec::new();
        let mut pieces = 0;
        while let Some(b) = o.pop() {
            if b.len() == large.len() {
                assert_eq!(b.as_ptr(), large.as_ptr(), "large body is not copied");
            }
            all.extend_from_slice(&b);
            pieces += 1;
        }
        assert_eq!(pieces, 3);
        let mut expected = vec![1; HEADER_LEN];
        expected.extend_from_slice(b"small");
        expected.extend_from_slice(&[2; HEADER_LEN]);
        expected.extend_from_slice(b"head");
        expected.extend_from_slice(&large);
        expected.extend_from_slice(&[3; HEADER_LEN]);
        expected.extend_from_slice(b"small");
        assert_eq!(all, expected);
        assert!(o.is_empty());
    }
}
