//! The optional fields that header flags put in front of a message body.
//!
//! In a response the order is: tracing id (`[uuid]`, flag 0x02), warnings (`[string list]`,
//! flag 0x08), custom payload (`[bytes map]`, flag 0x04), then the message. A request can only
//! carry a custom payload: its tracing flag asks for tracing and adds no field, and the warning
//! flag means nothing on a request.
//!
//! Prefixes are read from a plain (decompressed) body. They are parsed apart from the messages
//! because the proxy must skip them to reach any message and must sometimes rewrite them (the
//! same warnings from two clusters, a tracing id that only one cluster knows) while forwarding
//! the message bytes untouched.

use bytes::BufMut;

use crate::error::DecodeError;
use crate::frame::header::{Direction, Flags};
use crate::wire::{BytesMap, Reader, put_bytes_map, put_string_list};

/// The prefix fields of one body, borrowed from it. `None` means the flag is not set; a flag
/// set with an empty list or map is `Some` of an empty collection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prefix<'a> {
    /// Responses only.
    pub tracing_id: Option<[u8; 16]>,
    /// Responses only.
    pub warnings: Option<Vec<&'a str>>,
    pub custom_payload: Option<BytesMap<'a>>,
}

impl<'a> Prefix<'a> {
    /// Reads the fields `flags` announce from the start of `body` and returns them with the
    /// offset at which the message starts. Error offsets count from the body's start.
    pub fn parse(
        flags: Flags,
        direction: Direction,
        body: &'a [u8],
    ) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(body);
        let mut prefix = Self::default();
        if direction == Direction::Response {
            if flags.contains(Flags::TRACING) {
                prefix.tracing_id = Some(r.uuid()?);
            }
            if flags.contains(Flags::WARNING) {
                prefix.warnings = Some(r.string_list()?);
            }
        }
        if flags.contains(Flags::CUSTOM_PAYLOAD) {
            prefix.custom_payload = Some(r.bytes_map()?);
        }
        Ok((prefix, r.position()))
    }

    /// Whether no field is present.
    pub fn is_empty(&self) -> bool {
        self.tracing_id.is_none() && self.warnings.is_none() && self.custom_payload.is_none()
    }

    /// The flags announcing the fields that [`Prefix::encode`] writes for `direction`. Other
    /// flags of a frame (compression, beta, a request's tracing request) are the caller's.
    pub fn flags(&self, direction: Direction) -> Flags {
        let mut flags = Flags::empty();
        if direction == Direction::Response {
            if self.tracing_id.is_some() {
                flags = flags.union(Flags::TRACING);
            }
            if self.warnings.is_some() {
                flags = flags.union(Flags::WARNING);
            }
        }
        if self.custom_payload.is_some() {
            flags = flags.union(Flags::CUSTOM_PAYLOAD);
        }
        flags
    }

    /// Writes the fields in protocol order. For a request only the custom payload is written,
    /// matching what [`Prefix::parse`] reads and [`Prefix::flags`] announces.
    pub fn encode(&self, direction: Direction, out: &mut impl BufMut) {
        if direction == Direction::Response {
            if let Some(id) = &self.tracing_id {
                out.put_slice(id);
            }
            if let Some(warnings) = &self.warnings {
                put_string_list(out, warnings.iter().copied());
            }
        }
        if let Some(payload) = &self.custom_payload {
            put_bytes_map(out, payload.iter().copied());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeErrorKind;
    use bytes::BytesMut;
    use proptest::prelude::*;

    #[test]
    fn response_order_is_tracing_warnings_payload() {
        let prefix = Prefix {
            tracing_id: Some([0xab; 16]),
            warnings: Some(vec!["w1", "w2"]),
            custom_payload: Some(vec![("k", Some(&b"v"[..])), ("n", None)]),
        };
        let mut out = BytesMut::new();
        prefix.encode(Direction::Response, &mut out);
        out.put_slice(b"MSG");
        let mut expected = vec![0xab; 16];
        expected.extend_from_slice(&[0, 2, 0, 2, b'w', b'1', 0, 2, b'w', b'2']);
        expected.extend_from_slice(&[0, 2, 0, 1, b'k', 0, 0, 0, 1, b'v']);
        expected.extend_from_slice(&[0, 1, b'n', 0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(b"MSG");
        assert_eq!(&out[..], &expected[..]);
        let flags = prefix.flags(Direction::Response);
        assert_eq!(flags, Flags::from_bits_retain(0x02 | 0x04 | 0x08));
        let (back, at) = Prefix::parse(flags, Direction::Response, &out).unwrap();
        assert_eq!(back, prefix);
        assert_eq!(&out[at..], b"MSG");
    }

    #[test]
    fn requests_carry_only_a_custom_payload() {
        let body = [0, 0, b'Q'];
        // Tracing and warning flags on a request add no field.
        let flags = Flags::TRACING
            .union(Flags::WARNING)
            .union(Flags::CUSTOM_PAYLOAD);
        let (prefix, at) = Prefix::parse(flags, Direction::Request, &body).unwrap();
        assert_eq!(prefix.custom_payload, Some(vec![]));
        assert_eq!(prefix.tracing_id, None);
        assert_eq!(at, 2);
        let prefix = Prefix {
            tracing_id: Some([1; 16]),
            warnings: Some(vec!["x"]),
            custom_payload: None,
        };
        assert_eq!(prefix.flags(Direction::Request), Flags::empty());
        let mut out = BytesMut::new();
        prefix.encode(Direction::Request, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn no_flags_no_prefix() {
        let (prefix, at) =
            Prefix::parse(Flags::from_bits_retain(0x11), Direction::Response, b"abc").unwrap();
        assert!(prefix.is_empty());
        assert_eq!(at, 0);
    }

    #[test]
    fn truncated_prefix_reports_offset() {
        let mut body = vec![0u8; 16];
        body.extend_from_slice(&[0, 1, 0, 9, b'x']);
        let err = Prefix::parse(
            Flags::TRACING.union(Flags::WARNING),
            Direction::Response,
            &body,
        )
        .unwrap_err();
        assert_eq!(
            err,
            DecodeError::new(
                20,
                DecodeErrorKind::Truncated {
                    needed: 9,
                    available: 1
                }
            )
        );
        let err = Prefix::parse(Flags::TRACING, Direction::Response, &[0; 15]).unwrap_err();
        assert_eq!(err.offset, 0);
    }

    proptest! {
        #[test]
        fn prefixes_round_trip(
            tracing in proptest::option::of(any::<[u8; 16]>()),
            warnings in proptest::option::of(prop::collection::vec(".{0,10}", 0..4)),
            payload in proptest::option::of(prop::collection::vec(
                (".{0,6}", proptest::option::of(prop::collection::vec(any::<u8>(), 0..8))),
                0..4,
            )),
            response in any::<bool>(),
            message in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            let direction = if response { Direction::Response } else { Direction::Request };
            let prefix = Prefix {
                tracing_id: tracing,
                warnings: warnings.as_ref().map(|w| w.iter().map(String::as_str).collect()),
                custom_payload: payload.as_ref().map(|p| {
                    p.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect()
                }),
            };
            let mut out = BytesMut::new();
            prefix.encode(direction, &mut out);
            out.put_slice(&message);
            let (back, at) = Prefix::parse(prefix.flags(direction), direction, &out).unwrap();
            prop_assert_eq!(&out[at..], &message[..]);
            if response {
                prop_assert_eq!(back, prefix);
            } else {
                prop_assert_eq!(back.custom_payload, prefix.custom_payload);
                prop_assert!(back.tracing_id.is_none() && back.warnings.is_none());
            }
        }

        #[test]
        fn parse_never_panics(flags in any::<u8>(), data in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Prefix::parse(Flags::from_bits_retain(flags), Direction::Response, &data);
            let _ = Prefix::parse(Flags::from_bits_retain(flags), Direction::Request, &data);
        }
    }
}
