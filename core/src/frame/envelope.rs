//! Envelopes (a 9-byte header and a body) and the decoder that splits them off a receive buffer.
//!
//! An [`Envelope`] owns its body as [`Bytes`]: a reference-counted view into the driver's
//! receive buffer, so decoding, remapping the stream id and sending to two clusters never copy
//! the body. The header is a decoded [`Header`] value; encoding it back is nine byte stores.
//!
//! The [`EnvelopeDecoder`] validates as early as the bytes allow, because what arrives first
//! decides how the session must react: the version byte alone tells a v1/v2 (8-byte header)
//! client from one the proxy speaks, so it is checked as soon as one byte is there; the opcode
//! and the length limit are checked when the header is complete, before a single body byte is
//! awaited or buffered. Errors leave the buffer untouched, so the session can still read the
//! refusal details with [`peek_refusal`](super::peek_refusal).

use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::header::{Direction, HEADER_LEN, Header, Opcode, ProtocolVersion, StreamId};

/// The spec's cap on a frame body: 256 MiB. Sessions configure a lower limit.
pub const PROTOCOL_MAX_BODY_LEN: usize = 256 * 1024 * 1024;

/// A frame of protocol v3, v4 or v5: a header and its body.
///
/// The header's `length` always equals the body's length: the constructor sets it and the
/// fields are private so it cannot drift. Cloning is cheap (the body is reference-counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    header: Header,
    body: Bytes,
}

impl Envelope {
    /// An envelope of `header` and `body`; `header.length` is replaced by the body's length.
    ///
    /// Bodies longer than `u32::MAX` bytes cannot be framed; the proxy never builds one (decoded
    /// bodies are capped by the frame limit, its own messages are small), so the length
    /// saturates rather than failing.
    pub fn new(header: Header, body: Bytes) -> Self {
        debug_assert!(
            u32::try_from(body.len()).is_ok(),
            "envelope body over 4 GiB"
        );
        let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
        Self {
            header: Header { length, ..header },
            body,
        }
    }

    pub const fn header(&self) -> &Header {
        &self.header
    }

    /// The body as sent: still compressed if the compression flag is set, and starting with the
    /// prefixes the flags announce (see [`Prefix`](super::Prefix)).
    pub const fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn into_parts(self) -> (Header, Bytes) {
        (self.header, self.body)
    }

    pub const fn version(&self) -> ProtocolVersion {
        self.header.version
    }

    pub const fn direction(&self) -> Direction {
        self.header.direction
    }

    pub const fn opcode(&self) -> Opcode {
        self.header.opcode
    }

    pub const fn stream(&self) -> StreamId {
        self.header.stream
    }

    /// The same envelope on another stream. The body is shared, not copied.
    #[must_use]
    pub fn with_stream(&self, stream: StreamId) -> Self {
        Self {
            header: Header {
                stream,
                ..self.header
            },
            body: self.body.clone(),
        }
    }

    /// Header plus body length on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Appends the envelope's wire bytes to `out`. This copies the body; to send an envelope
    /// without copying, hand the driver a [`WireEnvelope`] (see [`Envelope::wire`]).
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        out.put_slice(&self.header.encode());
        out.put_slice(&self.body);
    }

    /// The envelope as bytes to write: the encoded header and the shared body.
    pub fn wire(&self) -> WireEnvelope {
        WireEnvelope {
            header: self.header.encode(),
            sent: 0,
            body: self.body.clone(),
        }
    }

    /// Like [`Envelope::wire`] without touching the body's reference count, for the last (or
    /// only) destination of an envelope: `envelope.into_wire().with_stream(remapped)`.
    pub fn into_wire(self) -> WireEnvelope {
        WireEnvelope {
            header: self.header.encode(),
            sent: 0,
            body: self.body,
        }
    }
}

/// An encoded envelope ready for the socket: nine header bytes and the body [`Bytes`], never
/// joined. It implements [`Buf`], so a driver can write it with vectored I/O
/// ([`Buf::chunks_vectored`]) and the body is never copied on the way out.
#[derive(Debug, Clone)]
pub struct WireEnvelope {
    header: [u8; HEADER_LEN],
    /// How many header bytes [`Buf::advance`] has consumed.
    sent: usize,
    body: Bytes,
}

impl WireEnvelope {
    /// Rewrites the stream id in the header bytes. Only meaningful before writing starts.
    pub fn set_stream(&mut self, stream: StreamId) {
        super::header::rewrite_stream(&mut self.header, stream);
    }

    /// The same wire envelope on another stream, for chaining.
    #[must_use]
    pub fn with_stream(mut self, stream: StreamId) -> Self {
        self.set_stream(stream);
        self
    }

    /// The encoded header.
    pub const fn header_bytes(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// The body still to write.
    pub const fn body(&self) -> &Bytes {
        &self.body
    }
}

impl Buf for WireEnvelope {
    fn remaining(&self) -> usize {
        HEADER_LEN - self.sent + self.body.len()
    }

    fn chunk(&self) -> &[u8] {
        match self.header.get(self.sent..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => &self.body,
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let header = self.header.get(self.sent..).unwrap_or_default();
        let mut n = 0;
        for part in [header, &self.body[..]] {
            if part.is_empty() {
                continue;
            }
            let Some(slot) = dst.get_mut(n) else { break };
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }

    fn advance(&mut self, cnt: usize) {
        let from_header = cnt.min(HEADER_LEN - self.sent);
        self.sent += from_header;
        // Clamped instead of panicking like other `Buf`s: advancing past the end is a driver bug,
        // not something to crash the proxy over.
        self.body.advance((cnt - from_header).min(self.body.len()));
    }
}

/// Splits envelopes off a receive buffer.
///
/// `max_frame_len` caps a whole envelope, header included; a longer one is refused as soon as
/// its header is in, without buffering the body.
#[derive(Debug, Clone)]
pub struct EnvelopeDecoder {
    max_frame_len: usize,
    direction: Option<Direction>,
}

impl EnvelopeDecoder {
    /// A decoder of envelopes up to `max_frame_len` bytes, header included, in either direction.
    pub const fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len,
            direction: None,
        }
    }

    /// Only accept envelopes travelling in `direction`: requests from a client, responses from
    /// a cluster. Anything else is an [`UnexpectedDirection`](DecodeErrorKind) error at byte 0.
    #[must_use]
    pub const fn expecting(mut self, direction: Direction) -> Self {
        self.direction = Some(direction);
        self
    }

    pub const fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Validates whatever part of a header `bytes` starts with and returns the header once all
    /// nine bytes are there: version and direction from the first byte, the opcode from the
    /// fifth, the length limit from the ninth. Error offsets count from the envelope's start.
    pub fn peek(&self, bytes: &[u8]) -> Result<Option<Header>, DecodeError> {
        let Some(&first) = bytes.first() else {
            return Ok(None);
        };
        let version = first & 0x7f;
        if ProtocolVersion::from_number(version).is_none() {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::UnsupportedVersion { version },
            ));
        }
        if let Some(expected) = self.direction {
            let direction = if first & 0x80 == 0 {
                Direction::Request
            } else {
                Direction::Response
            };
            if direction != expected {
                return Err(DecodeError::new(0, DecodeErrorKind::UnexpectedDirection));
            }
        }
        match bytes.get(4) {
            Some(&opcode) if !Opcode(opcode).is_known() => {
                return Err(DecodeError::new(4, DecodeErrorKind::UnknownOpcode(opcode)));
            }
            _ => {}
        }
        let Some(raw) = bytes.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::decode(raw)?;
        let length = HEADER_LEN as u64 + u64::from(header.length);
        let max = self.max_frame_len as u64;
        if length > max {
            return Err(DecodeError::new(
                5,
                DecodeErrorKind::TooLarge { length, max },
            ));
        }
        Ok(Some(header))
    }

    /// Splits the next whole envelope off the front of `buf`, or returns `Ok(None)` and leaves
    /// `buf` as it is if the envelope is not complete yet. On error nothing is consumed.
    ///
    /// The body is `buf.split_to(len).freeze()`: it shares `buf`'s allocation, no byte is
    /// copied.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Envelope>, DecodeError> {
        let Some(header) = self.peek(buf)? else {
            return Ok(None);
        };
        // `peek` checked HEADER_LEN + length against a usize limit, so this cannot truncate.
        let body_len = header.length as usize;
        if buf.len() - HEADER_LEN < body_len {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let body = buf.split_to(body_len).freeze();
        Ok(Some(Envelope { header, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::header::Flags;
    use proptest::prelude::*;

    fn header(opcode: Opcode, stream: i16) -> Header {
        Header {
            version: ProtocolVersion::V4,
            direction: Direction::Request,
            flags: Flags::empty(),
            stream: StreamId(stream),
            opcode,
            length: 0,
        }
    }

    fn envelope_strategy() -> impl Strategy<Value = Envelope> {
        (
            prop::sample::select(ProtocolVersion::ALL.to_vec()),
            any::<bool>(),
            any::<u8>(),
            any::<i16>(),
            (0u8..=0x10).prop_filter("known", |b| Opcode(*b).is_known()),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(version, response, flags, stream, opcode, body)| {
                Envelope::new(
                    Header {
                        version,
                        direction: if response {
                            Direction::Response
                        } else {
                            Direction::Request
                        },
                        flags: Flags::from_bits_retain(flags),
                        stream: StreamId(stream),
                        opcode: Opcode(opcode),
                        length: 12345,
                    },
                    Bytes::from(body),
                )
            })
    }

    #[test]
    fn constructor_sets_length() {
        let env = Envelope::new(header(Opcode::QUERY, 1), Bytes::from_static(b"hello"));
        assert_eq!(env.header().length, 5);
        assert_eq!(env.encoded_len(), 14);
    }

    #[test]
    fn version_is_checked_with_one_byte() {
        let mut dec = EnvelopeDecoder::new(1 << 20);
        for v in [0x01u8, 0x02, 0x82, 0x06, 0x42] {
            let mut buf = BytesMut::from(&[v][..]);
            let err = dec.decode(&mut buf).unwrap_err();
            assert_eq!(
                err,
                DecodeError::new(0, DecodeErrorKind::UnsupportedVersion { version: v & 0x7f })
            );
            assert_eq!(buf.len(), 1, "nothing consumed");
        }
        let mut buf = BytesMut::from(&[0x04][..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
    }

    #[test]
    fn v2_client_can_still_be_refused() {
        // A v2 OPTIONS (8-byte header, 1-byte stream 7): the error leaves the bytes for
        // `peek_refusal`.
        let mut dec = EnvelopeDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&[0x02, 0x00, 0x07, 0x05, 0, 0, 0, 0][..]);
        assert!(dec.decode(&mut buf).is_err());
        let refusal = crate::frame::peek_refusal(&buf).unwrap();
        assert_eq!((refusal.version, refusal.stream), (2, StreamId(7)));
    }

    #[test]
    fn direction_is_checked_with_one_byte() {
        let mut dec = EnvelopeDecoder::new(1 << 20).expecting(Direction::Request);
        let mut buf = BytesMut::from(&[0x84][..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(DecodeError::new(0, DecodeErrorKind::UnexpectedDirection))
        );
        let mut buf = BytesMut::from(&[0x04][..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
    }

    #[test]
    fn opcode_is_checked_before_the_length() {
        let mut dec = EnvelopeDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&[0x04, 0, 0, 1, 0x04][..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(DecodeError::new(4, DecodeErrorKind::UnknownOpcode(0x04)))
        );
        assert_eq!(buf.len(), 5);
    }

    #[test]
    fn oversize_is_refused_before_the_body() {
        let mut dec = EnvelopeDecoder::new(100);
        // 92 bytes of body: 101 in all.
        let mut buf = BytesMut::from(&[0x04, 0, 0, 1, 0x07, 0, 0, 0, 92][..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(DecodeError::new(
                5,
                DecodeErrorKind::TooLarge {
                    length: 101,
                    max: 100
                }
            ))
        );
        assert_eq!(buf.len(), 9);
        // Exactly at the limit is fine.
        let mut buf = BytesMut::from(&[0x04, 0, 0, 1, 0x07, 0, 0, 0, 91][..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        // A length of u32::MAX does not overflow anything.
        let mut buf = BytesMut::from(&[0x04, 0, 0, 1, 0x07, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            dec.decode(&mut buf).unwrap_err().kind,
            DecodeErrorKind::TooLarge {
                length: 0x1_0000_0008,
                max: 100
            }
        ));
    }

    #[test]
    fn partial_envelope_is_left_in_place() {
        let env = Envelope::new(header(Opcode::QUERY, 3), Bytes::from_static(b"abcdef"));
        let mut wire = BytesMut::new();
        env.encode(&mut wire);
        let mut dec = EnvelopeDecoder::new(1 << 20);
        for n in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..n]);
            assert_eq!(dec.decode(&mut buf), Ok(None));
            assert_eq!(buf.len(), n);
        }
    }

    #[test]
    fn body_shares_the_receive_buffer() {
        let env = Envelope::new(header(Opcode::QUERY, 3), Bytes::from_static(b"abcdef"));
        let mut buf = BytesMut::new();
        env.encode(&mut buf);
        env.encode(&mut buf);
        let base = buf.as_ptr() as usize;
        let mut dec = EnvelopeDecoder::new(1 << 20);
        let first = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(first.body().as_ptr() as usize, base + HEADER_LEN);
        let second = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(second.body().as_ptr() as usize, base + 2 * HEADER_LEN + 6);
        assert!(buf.is_empty());
    }

    #[test]
    fn wire_envelope_is_header_then_shared_body() {
        let env = Envelope::new(header(Opcode::QUERY, 3), Bytes::from_static(b"abcdef"));
        let mut wire = env.clone().into_wire().with_stream(StreamId(-9));
        assert_eq!(wire.body().as_ptr(), env.body().as_ptr());
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(wire.chunks_vectored(&mut slices), 2);
        assert_eq!(
            &*slices[0],
            &env.with_stream(StreamId(-9)).header().encode()
        );
        wire.set_stream(StreamId(0x0102));
        assert_eq!(wire.remaining(), 15);
        let mut out = Vec::new();
        // Drain in odd steps to cross the header/body boundary.
        while wire.has_remaining() {
            let n = wire.chunk().len().min(4);
            out.extend_from_slice(&wire.chunk()[..n]);
            wire.advance(n);
        }
        let mut expected = BytesMut::new();
        env.with_stream(StreamId(0x0102)).encode(&mut expected);
        assert_eq!(out, expected);
        wire.advance(100); // past the end: ignored, no panic
        assert_eq!(wire.remaining(), 0);
    }

    proptest! {
        #[test]
        fn envelopes_round_trip(envs in prop::collection::vec(envelope_strategy(), 1..8)) {
            let mut buf = BytesMut::new();
            for env in &envs {
                env.encode(&mut buf);
            }
            let mut dec = EnvelopeDecoder::new(1 << 20);
            for env in &envs {
                prop_assert_eq!(&dec.decode(&mut buf).unwrap().unwrap(), env);
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(dec.decode(&mut buf), Ok(None));
        }

        #[test]
        fn wire_equals_encode(env in envelope_strategy()) {
            let mut encoded = BytesMut::new();
            env.encode(&mut encoded);
            let mut wire = env.wire();
            let copied = wire.copy_to_bytes(wire.remaining());
            prop_assert_eq!(&copied[..], &encoded[..]);
        }

        #[test]
        fn decoder_never_panics(data in prop::collection::vec(any::<u8>(), 0..64), max in 0usize..64) {
            let mut buf = BytesMut::from(&data[..]);
            let mut dec = EnvelopeDecoder::new(max);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }
    }
}
