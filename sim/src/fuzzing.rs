//! Bodies of the fuzz targets in `fuzz/`, one function per target.
//!
//! They live here, not in the fuzz crate, so that they compile on stable Rust with the rest of
//! the core and so that the committed corpus is replayed by an ordinary test
//! (`core/tests/fuzz_corpus.rs`). Each function takes arbitrary bytes, must never panic, and
//! checks what must hold for any input (e.g. that what decodes re-encodes to the same thing).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use cqlmirror_core::config::{Config, Endpoint, Upstream, WaitPolicy};
use cqlmirror_core::frame::{
    Compression, Direction, EnvelopeDecoder, FrameDecoder, Opcode, Prefix, ProtocolVersion,
    SegmentDecoder, SegmentFormat, SegmentReader,
};
use cqlmirror_core::message::{
    AuthResponse, Authenticate, Batch, Body, ErrorMessage, Event, Execute, Prepare, Query,
    Register, ResultMessage, Startup, Supported, ensure_default_timestamp,
};
use cqlmirror_core::proxy::{Proxy, WallClock};
use cqlmirror_core::session::{Peer, Session};
use cqlmirror_core::statement::Statement;

const MAX_FRAME: usize = 1 << 20;

/// The protocol version a fuzz input selects with its first byte.
fn version(selector: u8) -> ProtocolVersion {
    ProtocolVersion::ALL[usize::from(selector) % ProtocolVersion::ALL.len()]
}

/// Splits `data` into pieces whose sizes come from the data itself, to exercise partial reads.
fn pieces(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&size, tail)) = rest.split_first() {
        let n = (usize::from(size) % 64 + 1).min(tail.len());
        let (piece, after) = tail.split_at(n);
        out.push(piece);
        rest = after;
        if n == 0 {
            break;
        }
    }
    out
}

/// Envelopes decoded from a stream fed in pieces, in either direction.
pub fn envelope(data: &[u8]) {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let direction = if selector & 1 == 0 {
        Direction::Request
    } else {
        Direction::Response
    };
    let mut decoder = EnvelopeDecoder::new(MAX_FRAME).expecting(direction);
    let mut buf = BytesMut::new();
    for piece in pieces(data) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(envelope)) => {
                    // What decodes re-encodes to the same bytes.
                    let mut out = BytesMut::new();
                    envelope.encode(&mut out);
                    let again = EnvelopeDecoder::new(MAX_FRAME).decode(&mut out);
                    assert!(matches!(again, Ok(Some(e)) if e == envelope));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// v5 segments, raw and as envelopes, uncompressed or lz4.
pub fn segment(data: &[u8]) {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 {
        SegmentFormat::Uncompressed
    } else {
        SegmentFormat::Lz4
    };
    let mut segments = SegmentDecoder::new(format);
    let mut reader = SegmentReader::new(format, EnvelopeDecoder::new(MAX_FRAME));
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    for piece in pieces(data) {
        a.extend_from_slice(piece);
        b.extend_from_slice(piece);
        while let Ok(Some(_)) = segments.decode(&mut a) {}
        while let Ok(Some(_)) = reader.decode(&mut b) {}
    }
}

/// A connection's framing switching from envelopes to segments mid-stream, as in v5.
pub fn frame_stream(data: &[u8]) {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new(EnvelopeDecoder::new(MAX_FRAME));
    let mut buf = BytesMut::from(data);
    let mut decoded = 0u8;
    while let Ok(Some(_)) = decoder.decode(&mut buf) {
        decoded = decoded.wrapping_add(1);
        if decoded == selector % 4 {
            decoder.switch_to_segments(if selector & 0x80 == 0 {
                SegmentFormat::Uncompressed
            } else {
                SegmentFormat::Lz4
            });
        }
    }
}

/// v3/v4 body decompression with a size limit.
pub fn compression(data: &[u8]) {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let compression = if selector & 1 == 0 {
        Compression::Lz4
    } else {
        Compression::Snappy
    };
    if let Ok(plain) = compression.decompress(data, MAX_FRAME) {
        assert!(plain.len() <= MAX_FRAME);
        if let Some(packed) = compression.compress(&plain) {
            assert_eq!(compression.decompress(&packed, MAX_FRAME).ok(), Some(plain));
        }
    }
}

/// Every request body decoder and the proxy's rewrites of requests.
pub fn request(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let v = version(selector);
    let _ = Prefix::parse(
        cqlmirror_core::frame::Flags::from_bits_retain(selector),
        Direction::Request,
        body,
    );
    let _ = Startup::decode(body, v);
    let _ = AuthResponse::decode(body, v);
    let _ = Register::decode(body, v);
    if let Ok(prepare) = Prepare::decode(body, v) {
        let _ = Statement::classify(prepare.query);
    }
    let bytes = Bytes::copy_from_slice(body);
    for opcode in [Opcode::QUERY, Opcode::EXECUTE, Opcode::BATCH] {
        let decoded = match opcode {
            Opcode::QUERY => Query::decode(body, v).map(|q| q.params.timestamp),
            Opcode::EXECUTE => Execute::decode(body, v).map(|e| e.params.timestamp),
            _ => Batch::decode(body, v).map(|b| b.timestamp),
        };
        let stamped = ensure_default_timestamp(opcode, body, v, 1_700_000_000_000_000);
        // A body is rewritten exactly when it decodes, and the rewrite decodes again.
        assert_eq!(decoded.is_ok(), stamped.is_ok());
        if let Ok(cqlmirror_core::message::DefaultTimestamp::Inserted(new)) = stamped {
            // A v5 body with its own timestamp but no now_in_seconds gets only the latter: it
            // keeps the client's timestamp.
            let kept = decoded.ok().flatten();
            let again = ensure_default_timestamp(opcode, &new, v, 1);
            assert_eq!(
                again.ok(),
                Some(cqlmirror_core::message::DefaultTimestamp::AlreadySet(
                    kept.unwrap_or(1_700_000_000_000_000)
                ))
            );
        }
    }
    let _ = Execute::with_ids(&bytes, v, b"new-id", Some(b"md"));
    let _ = Batch::map_prepared_ids(&bytes, v, |id| {
        (id.len() % 2 == 0).then(|| Bytes::from_static(b"x"))
    });
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = Statement::classify(text);
    }
}

/// Every response body decoder, walking all rows and cells.
pub fn response(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let v = version(selector);
    let _ = Prefix::parse(
        cqlmirror_core::frame::Flags::from_bits_retain(selector),
        Direction::Response,
        body,
    );
    let _ = Supported::decode(body, v);
    let _ = Authenticate::decode(body, v);
    let _ = ErrorMessage::decode(body, v);
    let _ = Event::decode(body, v);
    if let Ok(ResultMessage::Rows(rows)) = ResultMessage::decode(body, v) {
        for row in rows.iter() {
            let Ok(row) = row else { break };
            for _cell in row.cells() {}
        }
    }
    let bytes = Bytes::copy_from_slice(body);
    let _ = cqlmirror_core::message::Prepared::with_ids(&bytes, v, b"id", None);
}

/// A whole session fed arbitrary bytes from the client and from both clusters: it must never
/// panic, and its queues must stay bounded.
pub fn session(data: &[u8], now: Instant) {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let ep = |host: &str| {
        vec![Endpoint {
            host: host.into(),
            port: 9042,
        }]
    };
    let mut config = Config::new(ep("source"), ep("target"));
    config.max_frame_size = 64 * 1024;
    config.write_buffer_size = 16 * 1024;
    config.wait = if selector & 1 == 0 {
        WaitPolicy::Both
    } else {
        WaitPolicy::Primary
    };
    let Ok(proxy) = Proxy::new(
        config,
        WallClock {
            instant: now,
            unix_micros: 1_700_000_000_000_000,
        },
        cqlmirror_core::entropy::Seed(1),
    ) else {
        return;
    };
    let mut session = Session::new(proxy, now);
    session.handle_connected(Upstream::Source, now);
    session.handle_connected(Upstream::Target, now);
    let mut buffers = [BytesMut::new(), BytesMut::new(), BytesMut::new()];
    let mut clock = now;
    for (i, piece) in pieces(data).into_iter().enumerate() {
        let which = (usize::from(selector >> 1) + i) % 3;
        buffers[which].extend_from_slice(piece);
        match which {
            0 => session.handle_client_bytes(&mut buffers[0], clock),
            1 => session.handle_upstream_bytes(Upstream::Source, &mut buffers[1], clock),
            _ => session.handle_upstream_bytes(Upstream::Target, &mut buffers[2], clock),
        }
        if i % 7 == 6 {
            clock += Duration::from_secs(5);
            session.handle_timeout(clock);
        }
        while session.poll_action().is_some() {}
        for peer in Peer::ALL {
            // Bounded: at most the limit plus one frame plus one read's worth of frames.
            assert!(session.queued(peer) <= 16 * 1024 + 2 * 64 * 1024 + 64 * 1024);
            while session.poll_transmit(peer).is_some() {}
        }
        while session.poll_event().is_some() {}
        let _ = session.poll_timeout();
    }
    session.handle_closed(Peer::Client, "fuzz input ended", clock);
    session.handle_timeout(clock + Duration::from_secs(60));
}
