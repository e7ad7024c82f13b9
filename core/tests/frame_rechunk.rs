//! Re-chunking: however the socket cuts a byte stream (one byte at a time, random pieces, all
//! at once), the frame decoder yields the same envelopes and leaves nothing behind.
//!
//! Covered: plain v4 (bodies compressed or not; the decoder passes them through), and v5 with
//! a plain-envelope handshake followed by segments, uncompressed and lz4, with envelopes small
//! enough to share a segment and large enough to span several. The decoder switches to
//! segments after READY, as a session does, even when READY and the first segments arrive in
//! the same piece.

// Helpers outside #[test] functions unwrap too: in a test a panic is the failure report.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use cqlmirror_core::frame::{
    Compression, Direction, Envelope, EnvelopeDecoder, Flags, FrameDecoder, FrameEncoder, Framing,
    Header, Opcode, ProtocolVersion, SegmentFormat, StreamId,
};

fn envelope(
    version: ProtocolVersion,
    opcode: Opcode,
    stream: i16,
    flags: u8,
    body: Vec<u8>,
) -> Envelope {
    Envelope::new(
        Header {
            version,
            direction: Direction::Response,
            flags: Flags::from_bits_retain(flags),
            stream: StreamId(stream),
            opcode,
            length: 0,
        },
        Bytes::from(body),
    )
}

/// Message opcodes that do not end a handshake (READY and AUTHENTICATE switch framing).
fn opcode() -> impl Strategy<Value = Opcode> {
    prop::sample::select(vec![
        Opcode::ERROR,
        Opcode::RESULT,
        Opcode::EVENT,
        Opcode::SUPPORTED,
        Opcode::AUTH_CHALLENGE,
        Opcode::AUTH_SUCCESS,
    ])
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..120),
        2 => prop::collection::vec(any::<u8>(), 120..5000),
        1 => (130_000usize..300_000, any::<u8>())
            .prop_map(|(n, b)| (0..n).map(|i| b.wrapping_add((i % 251) as u8)).collect()),
    ]
}

fn messages() -> impl Strategy<Value = Vec<(Opcode, i16, u8, Vec<u8>)>> {
    prop::collection::vec((opcode(), any::<i16>(), any::<u8>(), body()), 1..40)
}

/// How a stream is cut: piece lengths, used cyclically.
#[derive(Debug, Clone)]
enum Cuts {
    Bytewise,
    Pieces(Vec<usize>),
    Whole,
}

fn cuts() -> impl Strategy<Value = Cuts> {
    prop_oneof![
        Just(Cuts::Bytewise),
        prop::collection::vec(1usize..20_000, 1..30).prop_map(Cuts::Pieces),
        Just(Cuts::Whole),
    ]
}

/// Feeds `wire` to a fresh decoder in pieces and collects what it yields. `switch` is the
/// segment format to adopt after READY, if any.
fn feed(wire: &[u8], cuts: &Cuts, switch: Option<SegmentFormat>) -> Vec<Envelope> {
    let mut decoder =
        FrameDecoder::new(EnvelopeDecoder::new(1 << 24).expecting(Direction::Response));
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut piece = 0;
    while at < wire.len() {
        let n = match cuts {
            Cuts::Bytewise => 1,
            Cuts::Whole => wire.len(),
            Cuts::Pieces(lens) => lens[piece % lens.len()],
        };
        piece += 1;
        let end = (at + n).min(wire.len());
        buf.extend_from_slice(&wire[at..end]);
        at = end;
        while let Some(envelope) = decoder.decode(&mut buf).unwrap() {
            if envelope.opcode() == Opcode::READY {
                if let Some(format) = switch {
                    decoder.switch_to_segments(format);
                }
            }
            out.push(envelope);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn v4_plain(messages in messages(), cuts in cuts()) {
        let envelopes: Vec<Envelope> = messages
            .into_iter()
            .enumerate()
            .map(|(i, (op, stream, flags, body))| {
                let env = envelope(ProtocolVersion::V4, op, stream, flags & !0x01, body);
                // Every third envelope travels compressed; the decoder must not care.
                match i % 3 {
                    1 => env.compressed(Compression::Lz4),
                    2 => env.compressed(Compression::Snappy),
                    _ => env,
                }
            })
            .collect();
        let mut encoder = FrameEncoder::new();
        let mut wire = BytesMut::new();
        encoder.encode_all(&envelopes, &mut wire);
        prop_assert_eq!(feed(&wire, &cuts, None), envelopes);
    }

    #[test]
    fn v5_handshake_then_segments(
        messages in messages(),
        cuts in cuts(),
        lz4 in any::<bool>(),
        batch in 1usize..8,
    ) {
        let format = if lz4 { SegmentFormat::Lz4 } else { SegmentFormat::Uncompressed };
        let supported = envelope(ProtocolVersion::V5, Opcode::SUPPORTED, 0, 0, vec![0, 0]);
        let ready = envelope(ProtocolVersion::V5, Opcode::READY, 1, 0, vec![]);
        let rest: Vec<Envelope> = messages
            .into_iter()
            .map(|(op, stream, flags, body)| envelope(ProtocolVersion::V5, op, stream, flags, body))
            .collect();

        let mut encoder = FrameEncoder::new();
        let mut wire = BytesMut::new();
        encoder.encode(&supported, &mut wire);
        encoder.encode(&ready, &mut wire);
        encoder.switch_to_segments(format);
        prop_assert_eq!(encoder.framing(), Framing::Segments(format));
        // Batches of several envelopes share segments.
        for chunk in rest.chunks(batch) {
            encoder.encode_all(chunk, &mut wire);
        }

        let expected: Vec<Envelope> = [supported, ready].into_iter().chain(rest).collect();
        prop_assert_eq!(feed(&wire, &cuts, Some(format)), expected);
    }
}

/// The same stream cut three ways gives identical results (a fixed case, every cut style).
#[test]
fn all_cut_styles_agree() {
    let envelopes: Vec<Envelope> = (0..50)
        .map(|i| {
            envelope(
                ProtocolVersion::V5,
                Opcode::RESULT,
                i,
                0,
                vec![i as u8; (i as usize) * 997],
            )
        })
        .collect();
    for format in [SegmentFormat::Uncompressed, SegmentFormat::Lz4] {
        let ready = envelope(ProtocolVersion::V5, Opcode::READY, 0, 0, vec![]);
        let mut encoder = FrameEncoder::new();
        let mut wire = BytesMut::new();
        encoder.encode(&ready, &mut wire);
        encoder.switch_to_segments(format);
        encoder.encode_all(&envelopes, &mut wire);
        let expected: Vec<Envelope> = std::iter::once(ready).chain(envelopes.clone()).collect();
        for cuts in [
            Cuts::Bytewise,
            Cuts::Pieces(vec![1, 7, 4096, 3, 65_536]),
            Cuts::Whole,
        ] {
            assert_eq!(
                feed(&wire, &cuts, Some(format)),
                expected,
                "{format:?} {cuts:?}"
            );
        }
    }
}
