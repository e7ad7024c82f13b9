//! EVENT: topology, status and schema changes pushed by the server on stream -1.
//!
//! Topology and status events carry a node address that the proxy rewrites (drivers must only
//! ever learn proxy addresses). Schema change bodies are shared with RESULT Schema_change.

use std::net::SocketAddr;

use bytes::BytesMut;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::Body;
use crate::wire::{self, Reader};

/// An EVENT response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A node joined or left: `change` is `NEW_NODE`, `REMOVED_NODE` (or `MOVED_NODE` from
    /// older servers).
    TopologyChange {
        change: &'a str,
        address: SocketAddr,
    },
    /// A node went up or down: `change` is `UP` or `DOWN`.
    StatusChange {
        change: &'a str,
        address: SocketAddr,
    },
    SchemaChange(SchemaChange<'a>),
}

impl Event<'_> {
    pub const TOPOLOGY_CHANGE: &'static str = "TOPOLOGY_CHANGE";
    pub const STATUS_CHANGE: &'static str = "STATUS_CHANGE";
    pub const SCHEMA_CHANGE: &'static str = "SCHEMA_CHANGE";

    pub const NEW_NODE: &'static str = "NEW_NODE";
    pub const REMOVED_NODE: &'static str = "REMOVED_NODE";
    pub const MOVED_NODE: &'static str = "MOVED_NODE";
    pub const UP: &'static str = "UP";
    pub const DOWN: &'static str = "DOWN";

    /// The event type, as REGISTER names it.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::TopologyChange { .. } => Self::TOPOLOGY_CHANGE,
            Self::StatusChange { .. } => Self::STATUS_CHANGE,
            Self::SchemaChange(_) => Self::SCHEMA_CHANGE,
        }
    }

    /// The node address of a topology or status event.
    pub fn address(&self) -> Option<SocketAddr> {
        match self {
            Self::TopologyChange { address, .. } | Self::StatusChange { address, .. } => {
                Some(*address)
            }
            Self::SchemaChange(_) => None,
        }
    }

    /// The same event about another address (schema changes are returned unchanged).
    #[must_use]
    pub fn with_address(&self, to: SocketAddr) -> Self {
        let mut out = self.clone();
        if let Self::TopologyChange { address, .. } | Self::StatusChange { address, .. } = &mut out
        {
            *address = to;
        }
        out
    }
}

impl<'a> Body<'a> for Event<'a> {
    const OPCODE: Opcode = Opcode::EVENT;

    fn decode(body: &'a [u8], _version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let at = r.position();
        let kind = r.string()?;
        Ok(match kind {
            Self::TOPOLOGY_CHANGE => Self::TopologyChange {
                change: r.string()?,
                address: r.inet()?,
            },
            Self::STATUS_CHANGE => Self::StatusChange {
                change: r.string()?,
                address: r.inet()?,
            },
            Self::SCHEMA_CHANGE => Self::SchemaChange(SchemaChange::read(&mut r)?),
            _ => return Err(unknown_name(at, "event type", kind)),
        })
    }

    fn encode(&self, _version: ProtocolVersion, out: &mut BytesMut) {
        wire::put_string(out, self.event_type());
        match self {
            Self::TopologyChange { change, address } | Self::StatusChange { change, address } => {
                wire::put_string(out, change);
                wire::put_inet(out, *address);
            }
            Self::SchemaChange(change) => change.write(out),
        }
    }
}

/// An unknown name in a field whose value decides the layout of what follows. The error kinds
/// carry numbers, not text, so the value is the name's length and the offset points at it.
fn unknown_name(at: usize, field: &'static str, name: &str) -> DecodeError {
    Reader::error_at(
        at,
        DecodeErrorKind::InvalidValue {
            field,
            value: name.len() as i64,
        },
    )
}

/// A schema change: `<change_type><target><options>`, in EVENT and in RESULT Schema_change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange<'a> {
    /// `CREATED`, `UPDATED` or `DROPPED`.
    pub change: &'a str,
    pub target: SchemaTarget<'a>,
}

/// What a schema change is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaTarget<'a> {
    Keyspace(&'a str),
    Table {
        keyspace: &'a str,
        name: &'a str,
    },
    /// A user-defined type.
    Type {
        keyspace: &'a str,
        name: &'a str,
    },
    Function {
        keyspace: &'a str,
        name: &'a str,
        /// One CQL type per argument.
        arg_types: Vec<&'a str>,
    },
    Aggregate {
        keyspace: &'a str,
        name: &'a str,
        arg_types: Vec<&'a str>,
    },
}

impl<'a> SchemaChange<'a> {
    pub const CREATED: &'static str = "CREATED";
    pub const UPDATED: &'static str = "UPDATED";
    pub const DROPPED: &'static str = "DROPPED";

    /// Reads `<change_type><target><options>`.
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let change = r.string()?;
        let at = r.position();
        let target = match r.string()? {
            "KEYSPACE" => SchemaTarget::Keyspace(r.string()?),
            "TABLE" => SchemaTarget::Table {
                keyspace: r.string()?,
                name: r.string()?,
            },
            "TYPE" => SchemaTarget::Type {
                keyspace: r.string()?,
                name: r.string()?,
            },
            "FUNCTION" => SchemaTarget::Function {
                keyspace: r.string()?,
                name: r.string()?,
                arg_types: r.string_list()?,
            },
            "AGGREGATE" => SchemaTarget::Aggregate {
                keyspace: r.string()?,
                name: r.string()?,
                arg_types: r.string_list()?,
            },
            other => return Err(unknown_name(at, "schema change target", other)),
        };
        Ok(Self { change, target })
    }

    pub(crate) fn write(&self, out: &mut BytesMut) {
        wire::put_string(out, self.change);
        wire::put_string(out, self.target.name());
        match &self.target {
            SchemaTarget::Keyspace(ks) => wire::put_string(out, ks),
            SchemaTarget::Table { keyspace, name } | SchemaTarget::Type { keyspace, name } => {
                wire::put_string(out, keyspace);
                wire::put_string(out, name);
            }
            SchemaTarget::Function {
                keyspace,
                name,
                arg_types,
            }
            | SchemaTarget::Aggregate {
                keyspace,
                name,
                arg_types,
            } => {
                wire::put_string(out, keyspace);
                wire::put_string(out, name);
                wire::put_string_list(out, arg_types.iter().copied());
            }
        }
    }
}

impl<'a> SchemaTarget<'a> {
    /// The `<target>` string.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Keyspace(_) => "KEYSPACE",
            Self::Table { .. } => "TABLE",
            Self::Type { .. } => "TYPE",
            Self::Function { .. } => "FUNCTION",
            Self::Aggregate { .. } => "AGGREGATE",
        }
    }

    /// The keyspace the change happened in.
    pub const fn keyspace(&self) -> &'a str {
        match self {
            Self::Keyspace(keyspace)
            | Self::Table { keyspace, .. }
            | Self::Type { keyspace, .. }
            | Self::Function { keyspace, .. }
            | Self::Aggregate { keyspace, .. } => keyspace,
        }
    }
}
