//! The query parameters shared by QUERY and EXECUTE, and the trailer of BATCH.
//!
//! The proxy reads them to route (consistency, keyspace), to give both clusters the same write
//! time (the default timestamp, see [`super::timestamp`]) and to compare what it forwards. The
//! bound values are not interpreted here: they are validated and kept as a borrowed slice of the
//! body that [`Values::iter`] walks on demand.

use std::fmt;

use bytes::BufMut;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::ProtocolVersion;
use crate::wire::{self, Consistency, Reader, Value};

bitflags::bitflags! {
    /// The `<flags>` of the query parameters: one byte in v3 and v4, an `[int]` from v5 on.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct QueryFlags: u32 {
        const VALUES = 0x01;
        const SKIP_METADATA = 0x02;
        const PAGE_SIZE = 0x04;
        const PAGING_STATE = 0x08;
        const SERIAL_CONSISTENCY = 0x10;
        const DEFAULT_TIMESTAMP = 0x20;
        const NAMES_FOR_VALUES = 0x40;
        /// v5 (Cassandra 4.0 also honours it in v4, where it fits in the byte).
        const KEYSPACE = 0x80;
        /// v5 only: it does not fit in the one-byte flags of earlier versions.
        const NOW_IN_SECONDS = 0x100;
    }
}

impl QueryFlags {
    /// Every flag the protocol defines. A body with any other bit set has fields this codec
    /// cannot place, so it is refused rather than misread.
    const KNOWN: u32 = Self::all().bits();

    /// Flags that make no sense in a BATCH trailer (the spec requires them to be 0 there).
    const NOT_IN_BATCH: u32 = 0x0f;

    /// Width of the flags field on the wire.
    pub const fn width(version: ProtocolVersion) -> usize {
        if version.wide_query_flags() { 4 } else { 1 }
    }

    pub(crate) fn read(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        if version.wide_query_flags() {
            r.u32().map(Self::from_bits_retain)
        } else {
            r.u8().map(|b| Self::from_bits_retain(u32::from(b)))
        }
    }

    /// Writes the flags in the version's width. Bits that do not fit a one-byte field are
    /// dropped; the encoders never set them for those versions.
    pub(crate) fn write(self, version: ProtocolVersion, out: &mut impl BufMut) {
        if version.wide_query_flags() {
            out.put_u32(self.bits());
        } else {
            out.put_u8((self.bits() & 0xff) as u8);
        }
    }
}

/// Bound values of a QUERY, an EXECUTE or a BATCH statement, positional or named.
///
/// A decoded list borrows the wire bytes and is only walked when iterated; a list built for
/// encoding borrows the caller's slice. Both compare equal when they hold the same values.
#[derive(Clone, Copy)]
pub struct Values<'a>(Repr<'a>);

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// `count` values, validated at decode time, each preceded by a name if `named`.
    Wire {
        raw: &'a [u8],
        count: u16,
        named: bool,
    },
    Positional(&'a [Value<'a>]),
    Named(&'a [(&'a str, Value<'a>)]),
}

impl<'a> Values<'a> {
    /// Values bound by position (the usual case, and the only one for EXECUTE in practice).
    pub const fn positional(values: &'a [Value<'a>]) -> Self {
        Self(Repr::Positional(values))
    }

    /// Values bound by marker name (flag 0x40).
    pub const fn named(values: &'a [(&'a str, Value<'a>)]) -> Self {
        Self(Repr::Named(values))
    }

    pub const fn len(&self) -> usize {
        match self.0 {
            Repr::Wire { count, .. } => count as usize,
            Repr::Positional(v) => v.len(),
            Repr::Named(v) => v.len(),
        }
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether each value carries a marker name.
    pub const fn has_names(&self) -> bool {
        match self.0 {
            Repr::Wire { named, .. } => named,
            Repr::Positional(_) => false,
            Repr::Named(_) => true,
        }
    }

    /// The values in order, each with its name when [`Self::has_names`].
    pub fn iter(&self) -> ValuesIter<'a> {
        ValuesIter {
            repr: self.0,
            reader: match self.0 {
                Repr::Wire { raw, .. } => Reader::new(raw),
                _ => Reader::new(&[]),
            },
            index: 0,
        }
    }

    /// Reads `[short] n` and `n` values (with names if `named`), checking every length.
    pub(crate) fn decode(r: &mut Reader<'a>, named: bool) -> Result<Self, DecodeError> {
        let count = r.u16()?;
        let start = r.position();
        for _ in 0..count {
            if named {
                r.string()?;
            }
            r.value()?;
        }
        let raw = r.since(start);
        Ok(Self(Repr::Wire { raw, count, named }))
    }

    /// Writes `[short] n` and the values; names are written iff `with_names` (a positional list
    /// under a batch-wide names flag gets empty names).
    pub(crate) fn encode(&self, with_names: bool, out: &mut impl BufMut) {
        let count = self.len().min(usize::from(u16::MAX));
        out.put_u16(count as u16);
        if let Repr::Wire { raw, named, .. } = self.0 {
            if named == with_names {
                out.put_slice(raw);
                return;
            }
        }
        for (name, value) in self.iter().take(count) {
            if with_names {
                wire::put_string(out, name.unwrap_or(""));
            }
            wire::put_value(out, value);
        }
    }
}

impl PartialEq for Values<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.has_names() == other.has_names()
            && self.len() == other.len()
            && self.iter().eq(other.iter())
    }
}

impl Eq for Values<'_> {}

impl fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (name, value) in self.iter() {
            match name {
                Some(name) => list.entry(&(name, value)),
                None => list.entry(&value),
            };
        }
        list.finish()
    }
}

/// Iterator over [`Values`]: `(name, value)` pairs, the name `None` for positional values.
#[derive(Debug, Clone)]
pub struct ValuesIter<'a> {
    repr: Repr<'a>,
    reader: Reader<'a>,
    index: usize,
}

impl fmt::Debug for Repr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wire { count, named, .. } => write!(f, "Wire({count}, named: {named})"),
            Self::Positional(v) => write!(f, "Positional({})", v.len()),
            Self::Named(v) => write!(f, "Named({})", v.len()),
        }
    }
}

impl<'a> Iterator for ValuesIter<'a> {
    type Item = (Option<&'a str>, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.index;
        self.index += 1;
        match self.repr {
            Repr::Wire { count, named, .. } => {
                if i >= usize::from(count) {
                    return None;
                }
                // Validated when decoded: a failure here cannot happen and ends the iteration.
                let name = if named {
                    Some(self.reader.string().ok()?)
                } else {
                    None
                };
                Some((name, self.reader.value().ok()?))
            }
            Repr::Positional(v) => v.get(i).map(|v| (None, *v)),
            Repr::Named(v) => v.get(i).map(|(n, v)| (Some(*n), *v)),
        }
    }
}

/// The query parameters of QUERY and EXECUTE.
///
/// The flags are not stored: they follow from which fields are set (see [`Self::flags`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryParams<'a> {
    pub consistency: Consistency,
    /// Flag 0x01 (and 0x40 when the values are named).
    pub values: Option<Values<'a>>,
    /// Flag 0x02: the client already knows the result metadata.
    pub skip_metadata: bool,
    /// Flag 0x04, in rows.
    pub page_size: Option<i32>,
    /// Flag 0x08: where the previous page ended. A null paging state decodes as absent.
    pub paging_state: Option<&'a [u8]>,
    /// Flag 0x10.
    pub serial_consistency: Option<Consistency>,
    /// Flag 0x20: the default write time, in microseconds since the epoch.
    pub timestamp: Option<i64>,
    /// Flag 0x80 (v5): the keyspace the statement runs in, overriding `USE`.
    pub keyspace: Option<&'a str>,
    /// Flag 0x100 (v5 only; not encoded for earlier versions).
    pub now_in_seconds: Option<i32>,
}

/// Where the fields that the proxy rewrites sit in a body, found while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Offset of the flags field.
    pub flags_at: usize,
    /// Offset where a default timestamp is (or would be inserted): right after the serial
    /// consistency, before the keyspace and now_in_seconds.
    pub timestamp_at: usize,
}

impl<'a> QueryParams<'a> {
    /// Parameters with only a consistency level.
    pub const fn new(consistency: Consistency) -> Self {
        Self {
            consistency,
            values: None,
            skip_metadata: false,
            page_size: None,
            paging_state: None,
            serial_consistency: None,
            timestamp: None,
            keyspace: None,
            now_in_seconds: None,
        }
    }

    /// The flags these parameters are encoded with.
    pub fn flags(&self) -> QueryFlags {
        let mut f = QueryFlags::empty();
        let mut set = |on: bool, flag| {
            if on {
                f = f.union(flag);
            }
        };
        set(self.values.is_some(), QueryFlags::VALUES);
        set(
            self.values.is_some_and(|v| v.has_names()),
            QueryFlags::NAMES_FOR_VALUES,
        );
        set(self.skip_metadata, QueryFlags::SKIP_METADATA);
        set(self.page_size.is_some(), QueryFlags::PAGE_SIZE);
        set(self.paging_state.is_some(), QueryFlags::PAGING_STATE);
        set(
            self.serial_consistency.is_some(),
            QueryFlags::SERIAL_CONSISTENCY,
        );
        set(self.timestamp.is_some(), QueryFlags::DEFAULT_TIMESTAMP);
        set(self.keyspace.is_some(), QueryFlags::KEYSPACE);
        set(self.now_in_seconds.is_some(), QueryFlags::NOW_IN_SECONDS);
        f
    }

    /// Reads the parameters of a QUERY or EXECUTE.
    pub(crate) fn decode(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<(Self, Layout), DecodeError> {
        Self::decode_in(r, version, false).map(|(p, _, layout)| (p, layout))
    }

    /// Reads the `<consistency><flags>...` trailer of a BATCH, where only the serial
    /// consistency, timestamp, keyspace and now_in_seconds may follow. The flags are returned
    /// too: their names bit is about the statements, which come before them.
    pub(crate) fn decode_batch_trailer(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
    ) -> Result<(Self, QueryFlags, Layout), DecodeError> {
        Self::decode_in(r, version, true)
    }

    fn decode_in(
        r: &mut Reader<'a>,
        version: ProtocolVersion,
        batch: bool,
    ) -> Result<(Self, QueryFlags, Layout), DecodeError> {
        let consistency = r.consistency()?;
        let flags_at = r.position();
        let flags = QueryFlags::read(r, version)?;
        let refused = if batch {
            !QueryFlags::KNOWN | QueryFlags::NOT_IN_BATCH
        } else {
            !QueryFlags::KNOWN
        };
        if flags.bits() & refused != 0 {
            return Err(Reader::error_at(
                flags_at,
                DecodeErrorKind::InvalidValue {
                    field: if batch { "batch flags" } else { "query flags" },
                    value: i64::from(flags.bits()),
                },
            ));
        }
        let mut params = Self::new(consistency);
        if flags.contains(QueryFlags::VALUES) {
            let named = flags.contains(QueryFlags::NAMES_FOR_VALUES);
            params.values = Some(Values::decode(r, named)?);
        }
        params.skip_metadata = flags.contains(QueryFlags::SKIP_METADATA);
        if flags.contains(QueryFlags::PAGE_SIZE) {
            params.page_size = Some(r.i32()?);
        }
        if flags.contains(QueryFlags::PAGING_STATE) {
            params.paging_state = r.bytes()?;
        }
        if flags.contains(QueryFlags::SERIAL_CONSISTENCY) {
            params.serial_consistency = Some(r.consistency()?);
        }
        let timestamp_at = r.position();
        if flags.contains(QueryFlags::DEFAULT_TIMESTAMP) {
            params.timestamp = Some(r.i64()?);
        }
        if flags.contains(QueryFlags::KEYSPACE) {
            params.keyspace = Some(r.string()?);
        }
        if flags.contains(QueryFlags::NOW_IN_SECONDS) {
            params.now_in_seconds = Some(r.i32()?);
        }
        Ok((
            params,
            flags,
            Layout {
                flags_at,
                timestamp_at,
            },
        ))
    }

    /// Writes the parameters. For v3 and v4, `now_in_seconds` is left out (it has no flag bit
    /// there).
    pub fn encode(&self, version: ProtocolVersion, out: &mut impl BufMut) {
        self.encode_with(version, QueryFlags::empty(), out);
    }

    /// Writes the parameters with `extra` flags set besides those that follow from the fields
    /// (a BATCH trailer sets the names flag for its statements).
    pub(crate) fn encode_with(
        &self,
        version: ProtocolVersion,
        extra: QueryFlags,
        out: &mut impl BufMut,
    ) {
        let mut flags = self.flags().union(extra);
        if !version.wide_query_flags() {
            flags = flags.difference(QueryFlags::NOW_IN_SECONDS);
        }
        wire::put_consistency(out, self.consistency);
        flags.write(version, out);
        if let Some(values) = &self.values {
            values.encode(values.has_names(), out);
        }
        if let Some(n) = self.page_size {
            out.put_i32(n);
        }
        if let Some(state) = self.paging_state {
            wire::put_bytes(out, Some(state));
        }
        if let Some(c) = self.serial_consistency {
            wire::put_consistency(out, c);
        }
        if let Some(t) = self.timestamp {
            out.put_i64(t);
        }
        if let Some(ks) = self.keyspace {
            wire::put_string(out, ks);
        }
        if flags.contains(QueryFlags::NOW_IN_SECONDS) {
            if let Some(now) = self.now_in_seconds {
                out.put_i32(now);
            }
        }
    }
}
