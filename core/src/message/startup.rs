//! The handshake: OPTIONS and SUPPORTED, STARTUP and READY.
//!
//! The proxy answers OPTIONS itself with what both clusters support, reads the client's
//! STARTUP to learn the CQL version and compression, and sends its own STARTUP to each cluster.

use bytes::BytesMut;

use crate::error::DecodeError;
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::Body;
use crate::wire::{self, Reader};

/// Well-known STARTUP option and SUPPORTED keys.
pub mod keys {
    /// STARTUP (mandatory) and SUPPORTED: the CQL version, e.g. `3.0.0`.
    pub const CQL_VERSION: &str = "CQL_VERSION";
    /// STARTUP and SUPPORTED: body compression, `lz4` or `snappy`.
    pub const COMPRESSION: &str = "COMPRESSION";
    /// SUPPORTED: the protocol versions, as `3/v3`, `5/v5-beta`, ...
    pub const PROTOCOL_VERSIONS: &str = "PROTOCOL_VERSIONS";
    pub const DRIVER_NAME: &str = "DRIVER_NAME";
    pub const DRIVER_VERSION: &str = "DRIVER_VERSION";
    pub const CLIENT_ID: &str = "CLIENT_ID";
    pub const APPLICATION_NAME: &str = "APPLICATION_NAME";
    pub const APPLICATION_VERSION: &str = "APPLICATION_VERSION";
    pub const THROW_ON_OVERLOAD: &str = "THROW_ON_OVERLOAD";
    /// v3/v4 only; removed in v5.
    pub const NO_COMPACT: &str = "NO_COMPACT";
}

/// An OPTIONS request (empty body): asks for SUPPORTED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options;

impl<'a> Body<'a> for Options {
    const OPCODE: Opcode = Opcode::OPTIONS;

    fn decode(body: &'a [u8], _version: ProtocolVersion) -> Result<Self, DecodeError> {
        Reader::new(body).finish().map(|()| Self)
    }

    fn encode(&self, _version: ProtocolVersion, _out: &mut BytesMut) {}
}

/// A READY response (empty body): the connection is ready for queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready;

impl<'a> Body<'a> for Ready {
    const OPCODE: Opcode = Opcode::READY;

    /// Extra bytes are ignored, as the spec asks of clients for every response.
    fn decode(_body: &'a [u8], _version: ProtocolVersion) -> Result<Self, DecodeError> {
        Ok(Self)
    }

    fn encode(&self, _version: ProtocolVersion, _out: &mut BytesMut) {}
}

/// A STARTUP request: a `[string map]` of options, kept in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Startup<'a> {
    pub options: Vec<(&'a str, &'a str)>,
}

impl<'a> Startup<'a> {
    /// The value of option `key` (the first, should the client repeat a key).
    pub fn option(&self, key: &str) -> Option<&'a str> {
        self.options
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub fn cql_version(&self) -> Option<&'a str> {
        self.option(keys::CQL_VERSION)
    }

    /// The requested compression, if any.
    pub fn compression(&self) -> Option<&'a str> {
        self.option(keys::COMPRESSION)
    }

    pub fn driver_name(&self) -> Option<&'a str> {
        self.option(keys::DRIVER_NAME)
    }

    pub fn driver_version(&self) -> Option<&'a str> {
        self.option(keys::DRIVER_VERSION)
    }

    /// Sets option `key`, replacing every earlier value of it.
    pub fn set(&mut self, key: &'a str, value: &'a str) {
        self.remove(key);
        self.options.push((key, value));
    }

    /// Removes option `key`; returns its (first) value.
    pub fn remove(&mut self, key: &str) -> Option<&'a str> {
        let old = self.option(key);
        self.options.retain(|(k, _)| *k != key);
        old
    }
}

impl<'a> Body<'a> for Startup<'a> {
    const OPCODE: Opcode = Opcode::STARTUP;

    fn decode(body: &'a [u8], _version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let options = r.string_map()?;
        r.finish()?;
        Ok(Self { options })
    }

    fn encode(&self, _version: ProtocolVersion, out: &mut BytesMut) {
        wire::put_string_map(out, self.options.iter().copied());
    }
}

/// A SUPPORTED response: a `[string multimap]` of option names and their possible values, in
/// wire order.
///
/// The proxy offers clients only what both clusters support and strips keys that would let a
/// driver bypass it (e.g. shard-aware ports), hence the editing methods.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Supported<'a> {
    pub options: Vec<(&'a str, Vec<&'a str>)>,
}

impl<'a> Supported<'a> {
    /// The values of `key`, if present.
    pub fn values(&self, key: &str) -> Option<&[&'a str]> {
        self.options
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Sets the values of `key`, replacing any earlier entry (keeping its place) or appending.
    pub fn set(&mut self, key: &'a str, values: Vec<&'a str>) {
        match self.options.iter_mut().find(|(k, _)| *k == key) {
            Some((_, old)) => *old = values,
            None => self.options.push((key, values)),
        }
        let mut seen = false;
        self.options.retain(|(k, _)| {
            let keep = *k != key || !seen;
            seen |= *k == key;
            keep
        });
    }

    /// Removes `key`; returns its values.
    pub fn remove(&mut self, key: &str) -> Option<Vec<&'a str>> {
        let pos = self.options.iter().position(|(k, _)| *k == key)?;
        let (_, values) = self.options.remove(pos);
        self.options.retain(|(k, _)| *k != key);
        Some(values)
    }

    /// Keeps only the keys for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[&'a str]) -> bool) {
        self.options.retain(|(k, v)| keep(k, v));
    }

    /// Narrows the values of `key` to those `other` also lists for it (order of `self`). A key
    /// that `other` lacks ends up with no values.
    pub fn intersect(&mut self, key: &str, other: &Supported<'_>) {
        let theirs = other.values(key).unwrap_or(&[]);
        for (_, values) in self.options.iter_mut().filter(|(k, _)| *k == key) {
            values.retain(|v| theirs.contains(v));
        }
    }

    /// The non-beta protocol versions listed under `PROTOCOL_VERSIONS` that this codec speaks
    /// (entries look like `4/v4` or `5/v5-beta`).
    pub fn protocol_versions(&self) -> Vec<ProtocolVersion> {
        let mut out = Vec::new();
        for entry in self.values(keys::PROTOCOL_VERSIONS).unwrap_or(&[]) {
            let (number, description) = entry.split_once('/').unwrap_or((entry, ""));
            if description.contains("beta") {
                continue;
            }
            if let Some(v) = number
                .parse::<u8>()
                .ok()
                .and_then(ProtocolVersion::from_number)
            {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    }

    /// The `PROTOCOL_VERSIONS` entry that advertises `version`.
    pub const fn protocol_version_entry(version: ProtocolVersion) -> &'static str {
        match version {
            ProtocolVersion::V3 => "3/v3",
            ProtocolVersion::V4 => "4/v4",
            ProtocolVersion::V5 => "5/v5",
        }
    }
}

impl<'a> Body<'a> for Supported<'a> {
    const OPCODE: Opcode = Opcode::SUPPORTED;

    fn decode(body: &'a [u8], _version: ProtocolVersion) -> Result<Self, DecodeError> {
        Reader::new(body)
            .string_multimap()
            .map(|options| Self { options })
    }

    fn encode(&self, _version: ProtocolVersion, out: &mut BytesMut) {
        wire::put_string_multimap(
            out,
            self.options.iter().map(|(k, v)| (*k, v.iter().copied())),
        );
    }
}
