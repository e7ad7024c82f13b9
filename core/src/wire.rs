//! The protocol's primitive types (`[short]`, `[string]`, `[bytes]`, maps, `[inet]` …): a
//! bounds-checked reader over a borrowed body and the matching writers.
//!
//! The reader never allocates according to a length it read before checking that the bytes are
//! there, and it borrows: strings and byte values are slices of the body, so messages decode
//! without copying.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::BufMut;

use crate::error::{DecodeError, DecodeErrorKind};

/// A consistency level (`[consistency]`, a `[short]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Consistency(pub u16);

impl Consistency {
    pub const ANY: Self = Self(0x0000);
    pub const ONE: Self = Self(0x0001);
    pub const TWO: Self = Self(0x0002);
    pub const THREE: Self = Self(0x0003);
    pub const QUORUM: Self = Self(0x0004);
    pub const ALL: Self = Self(0x0005);
    pub const LOCAL_QUORUM: Self = Self(0x0006);
    pub const EACH_QUORUM: Self = Self(0x0007);
    pub const SERIAL: Self = Self(0x0008);
    pub const LOCAL_SERIAL: Self = Self(0x0009);
    pub const LOCAL_ONE: Self = Self(0x000A);
}

/// A `[value]`: bytes, null (length -1) or, from v4 on, "unset" (length -2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Null,
    Unset,
}

/// A decoded `[string multimap]`, in wire order.
pub type StringMultimap<'a> = Vec<(&'a str, Vec<&'a str>)>;

/// A decoded `[bytes map]` (custom payloads), in wire order; `None` values are null.
pub type BytesMap<'a> = Vec<(&'a str, Option<&'a [u8]>)>;

/// A bounds-checked cursor over a message body.
///
/// Errors carry the offset of the field that failed, counted from the start of the slice the
/// reader was created over.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// A reader over the whole of `buf` that starts `pos` bytes in (clamped to the end), so
    /// that a decoder resuming inside a body still reports offsets from the body's start.
    pub const fn starting_at(buf: &'a [u8], pos: usize) -> Self {
        let pos = if pos > buf.len() { buf.len() } else { pos };
        Self { buf, pos }
    }

    /// Bytes consumed so far.
    pub const fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub const fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub const fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unread rest, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// An error of `kind` at the current position.
    pub const fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.pos, kind)
    }

    /// An error of `kind` at `offset`.
    pub const fn error_at(offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(offset, kind)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(self.error(DecodeErrorKind::TrailingBytes { count })),
        }
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.error(DecodeErrorKind::Truncated {
                needed: n,
                available: self.remaining(),
            }));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The bytes consumed from offset `start` up to the current position (empty if `start` is
    /// not behind the position).
    pub fn since(&self, start: usize) -> &'a [u8] {
        self.buf.get(start..self.pos).unwrap_or(&[])
    }

    /// Skips exactly `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.take(n).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// `[short]`: an unsigned 16-bit integer.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    /// `[int]`: a signed 32-bit integer.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// `[long]`: a signed 64-bit integer.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A non-negative `[int]` used as a count or length.
    pub fn count(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.i32()?;
        usize::try_from(n)
            .map_err(|_| Self::error_at(at, DecodeErrorKind::NegativeLength(i64::from(n))))
    }

    /// `[string]`: a `[short]` length and UTF-8 bytes.
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        let n = usize::from(self.u16()?);
        self.utf8(n)
    }

    /// `[long string]`: an `[int]` length and UTF-8 bytes.
    pub fn long_string(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.count()?;
        self.utf8(n)
    }

    fn utf8(&mut self, n: usize) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let raw = self.take(n)?;
        std::str::from_utf8(raw).map_err(|_| Self::error_at(at, DecodeErrorKind::InvalidUtf8))
    }

    /// `[bytes]`: an `[int]` length and bytes; a negative length is null.
    pub fn bytes(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        // A non-negative i32 always fits in usize on the platforms we build for.
        self.take(n as usize).map(Some)
    }

    /// `[short bytes]`: a `[short]` length and bytes.
    pub fn short_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }

    /// `[value]`: like `[bytes]`, with -2 meaning "unset". Other negative lengths are errors.
    pub fn value(&mut self) -> Result<Value<'a>, DecodeError> {
        let at = self.pos;
        match self.i32()? {
            -1 => Ok(Value::Null),
            -2 => Ok(Value::Unset),
            n if n < 0 => Err(Self::error_at(
                at,
                DecodeErrorKind::NegativeLength(i64::from(n)),
            )),
            n => self.take(n as usize).map(Value::Bytes),
        }
    }

    pub fn consistency(&mut self) -> Result<Consistency, DecodeError> {
        self.u16().map(Consistency)
    }

    /// `[uuid]`: 16 bytes.
    pub fn uuid(&mut self) -> Result<[u8; 16], DecodeError> {
        self.array()
    }

    /// `[string list]`.
    pub fn string_list(&mut self) -> Result<Vec<&'a str>, DecodeError> {
        let n = usize::from(self.u16()?);
        // Each entry takes at least its 2-byte length: never reserve more than could be there.
        let mut out = Vec::with_capacity(n.min(self.remaining() / 2));
        for _ in 0..n {
            out.push(self.string()?);
        }
        Ok(out)
    }

    /// `[string map]`, in wire order.
    pub fn string_map(&mut self) -> Result<Vec<(&'a str, &'a str)>, DecodeError> {
        let n = usize::from(self.u16()?);
        let mut out = Vec::with_capacity(n.min(self.remaining() / 4));
        for _ in 0..n {
            out.push((self.string()?, self.string()?));
        }
        Ok(out)
    }

    /// `[string multimap]`, in wire order.
    pub fn string_multimap(&mut self) -> Result<StringMultimap<'a>, DecodeError> {
        let n = usize::from(self.u16()?);
        let mut out = Vec::with_capacity(n.min(self.remaining() / 4));
        for _ in 0..n {
            out.push((self.string()?, self.string_list()?));
        }
        Ok(out)
    }

    /// `[bytes map]`, in wire order.
    pub fn bytes_map(&mut self) -> Result<BytesMap<'a>, DecodeError> {
        let n = usize::from(self.u16()?);
        let mut out = Vec::with_capacity(n.min(self.remaining() / 6));
        for _ in 0..n {
            out.push((self.string()?, self.bytes()?));
        }
        Ok(out)
    }

    /// `[inetaddr]`: a one-byte length (4 or 16) and the address.
    pub fn inet_addr(&mut self) -> Result<IpAddr, DecodeError> {
        let at = self.pos;
        match self.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            16 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            n => Err(Self::error_at(
                at,
                DecodeErrorKind::InvalidValue {
                    field: "inet address length",
                    value: i64::from(n),
                },
            )),
        }
    }

    /// `[inet]`: an `[inetaddr]` and an `[int]` port.
    pub fn inet(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = self.inet_addr()?;
        let at = self.pos;
        let port = self.i32()?;
        let port = u16::try_from(port).map_err(|_| {
            Self::error_at(
                at,
                DecodeErrorKind::InvalidValue {
                    field: "port",
                    value: port.into(),
                },
            )
        })?;
        Ok(SocketAddr::new(ip, port))
    }
}

// Writers. Lengths that do not fit their field are a local misuse (the proxy builds these
// values itself), so they are clamped rather than wrapped; see `put_string`.

/// Writes a `[string]`. Text longer than 65535 bytes is cut at a character boundary: the only
/// callers are proxy-made messages (error texts, names), never relayed data.
pub fn put_string(out: &mut impl BufMut, s: &str) {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

/// Writes a `[long string]`.
pub fn put_long_string(out: &mut impl BufMut, s: &str) {
    put_len_i32(out, s.len());
    out.put_slice(s.as_bytes());
}

/// Writes a `[bytes]`; `None` is null.
pub fn put_bytes(out: &mut impl BufMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_len_i32(out, b.len());
            out.put_slice(b);
        }
        None => out.put_i32(-1),
    }
}

/// Writes a `[value]`.
pub fn put_value(out: &mut impl BufMut, v: Value<'_>) {
    match v {
        Value::Bytes(b) => put_bytes(out, Some(b)),
        Value::Null => out.put_i32(-1),
        Value::Unset => out.put_i32(-2),
    }
}

/// Writes a `[consistency]`.
pub fn put_consistency(out: &mut impl BufMut, c: Consistency) {
    out.put_u16(c.0);
}

/// Writes a count or length as an `[int]`, clamped like every other length (see
/// [`put_long_string`]).
pub fn put_count(out: &mut impl BufMut, n: usize) {
    put_len_i32(out, n);
}

/// Writes a `[short bytes]`, clamped to 65535 bytes like [`put_string`].
pub fn put_short_bytes(out: &mut impl BufMut, b: &[u8]) {
    let n = b.len().min(usize::from(u16::MAX));
    out.put_u16(n as u16);
    out.put_slice(&b[..n]);
}

pub fn put_string_list<'s>(out: &mut impl BufMut, list: impl ExactSizeIterator<Item = &'s str>) {
    out.put_u16(clamp_u16(list.len()));
    for s in list.take(usize::from(u16::MAX)) {
        put_string(out, s);
    }
}

pub fn put_string_map<'s>(
    out: &mut impl BufMut,
    map: impl ExactSizeIterator<Item = (&'s str, &'s str)>,
) {
    out.put_u16(clamp_u16(map.len()));
    for (k, v) in map.take(usize::from(u16::MAX)) {
        put_string(out, k);
        put_string(out, v);
    }
}

pub fn put_string_multimap<'s, L>(
    out: &mut impl BufMut,
    map: impl ExactSizeIterator<Item = (&'s str, L)>,
) where
    L: IntoIterator<Item = &'s str>,
    L::IntoIter: ExactSizeIterator,
{
    out.put_u16(clamp_u16(map.len()));
    for (k, values) in map.take(usize::from(u16::MAX)) {
        put_string(out, k);
        put_string_list(out, values.into_iter());
    }
}

pub fn put_bytes_map<'s>(
    out: &mut impl BufMut,
    map: impl ExactSizeIterator<Item = (&'s str, Option<&'s [u8]>)>,
) {
    out.put_u16(clamp_u16(map.len()));
    for (k, v) in map.take(usize::from(u16::MAX)) {
        put_string(out, k);
        put_bytes(out, v);
    }
}

pub fn put_inet_addr(out: &mut impl BufMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.put_u8(4);
            out.put_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.put_u8(16);
            out.put_slice(&v6.octets());
        }
    }
}

pub fn put_inet(out: &mut impl BufMut, addr: SocketAddr) {
    put_inet_addr(out, addr.ip());
    out.put_i32(i32::from(addr.port()));
}

fn clamp_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Writes a length as an `[int]`. Bodies are capped far below 2 GiB by the frame size limit,
/// so a longer value can only be a local misuse; it is clamped.
fn put_len_i32(out: &mut impl BufMut, n: usize) {
    out.put_i32(i32::try_from(n).unwrap_or(i32::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;

    #[test]
    fn truncated_reports_offset_and_sizes() {
        let mut r = Reader::new(&[0, 5, b'a', b'b']);
        let err = r.string().unwrap_err();
        assert_eq!(err.offset, 2);
        assert_eq!(
            err.kind,
            DecodeErrorKind::Truncated {
                needed: 5,
                available: 2
            }
        );
    }

    #[test]
    fn value_markers() {
        let mut out = BytesMut::new();
        put_value(&mut out, Value::Null);
        put_value(&mut out, Value::Unset);
        put_value(&mut out, Value::Bytes(b"xy"));
        out.put_i32(-3);
        let mut r = Reader::new(&out);
        assert_eq!(r.value().unwrap(), Value::Null);
        assert_eq!(r.value().unwrap(), Value::Unset);
        assert_eq!(r.value().unwrap(), Value::Bytes(b"xy"));
        assert_eq!(
            r.value().unwrap_err().kind,
            DecodeErrorKind::NegativeLength(-3)
        );
    }

    #[test]
    fn huge_list_count_does_not_reserve_memory() {
        // 65535 entries announced, none present: fails on the first, reserves nothing big.
        let mut r = Reader::new(&[0xff, 0xff]);
        assert!(matches!(
            r.string_list().unwrap_err().kind,
            DecodeErrorKind::Truncated { .. }
        ));
    }

    #[test]
    fn long_strings_are_cut_at_char_boundary() {
        let s = "é".repeat(40_000); // 80000 bytes
        let mut out = BytesMut::new();
        put_string(&mut out, &s);
        let mut r = Reader::new(&out);
        let back = r.string().unwrap();
        assert_eq!(back.len(), 65534);
        assert!(s.starts_with(back));
    }

    proptest! {
        #[test]
        fn primitives_round_trip(
            s in ".{0,40}",
            ls in ".{0,40}",
            b in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            list in proptest::collection::vec(".{0,8}", 0..5),
            map in proptest::collection::vec((".{0,8}", ".{0,8}"), 0..5),
            multi in proptest::collection::vec((".{0,8}", proptest::collection::vec(".{0,8}", 0..3)), 0..4),
            v4 in any::<[u8; 4]>(),
            v6 in any::<[u8; 16]>(),
            port in any::<u16>(),
        ) {
            let mut out = BytesMut::new();
            put_string(&mut out, &s);
            put_long_string(&mut out, &ls);
            put_bytes(&mut out, b.as_deref());
            put_string_list(&mut out, list.iter().map(String::as_str));
            put_string_map(&mut out, map.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            put_string_multimap(&mut out, multi.iter().map(|(k, v)| (k.as_str(), v.iter().map(String::as_str))));
            let a4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(v4)), port);
            let a6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(v6)), port);
            put_inet(&mut out, a4);
            put_inet(&mut out, a6);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.string().unwrap(), s.as_str());
            prop_assert_eq!(r.long_string().unwrap(), ls.as_str());
            prop_assert_eq!(r.bytes().unwrap(), b.as_deref());
            prop_assert_eq!(r.string_list().unwrap(), list.iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert_eq!(r.string_map().unwrap(), map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>());
            let back = r.string_multimap().unwrap();
            prop_assert_eq!(back.len(), multi.len());
            for ((k, vs), (ek, evs)) in back.iter().zip(&multi) {
                prop_assert_eq!(*k, ek.as_str());
                prop_assert_eq!(vs, &evs.iter().map(String::as_str).collect::<Vec<_>>());
            }
            prop_assert_eq!(r.inet().unwrap(), a4);
            prop_assert_eq!(r.inet().unwrap(), a6);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn reader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&data);
            let _ = r.string_multimap();
            let mut r = Reader::new(&data);
            let _ = r.bytes_map();
            let mut r = Reader::new(&data);
            let _ = (r.inet(), r.value(), r.long_string(), r.short_bytes());
        }
    }
}
