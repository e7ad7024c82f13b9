//! REGISTER: the event types a client wants pushed to it.
//!
//! The proxy registers on the backend for what clients asked for, and rewrites the addresses in
//! the events it relays.

use bytes::BytesMut;

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::Body;
use crate::wire::{self, Reader};

/// A REGISTER request: a `[string list]` of event types (see [`super::Event`]'s constants).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Register<'a> {
    pub events: Vec<&'a str>,
}

impl<'a> Body<'a> for Register<'a> {
    const OPCODE: Opcode = Opcode::REGISTER;

    fn decode(body: &'a [u8], _version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let events = r.string_list()?;
        r.finish()?;
        // What Cassandra accepts; anything else is refused there too, so it is not relayed.
        const KNOWN: [&str; 3] = [
            super::Event::TOPOLOGY_CHANGE,
            super::Event::STATUS_CHANGE,
            super::Event::SCHEMA_CHANGE,
        ];
        if let Some(unknown) = events.iter().find(|e| !KNOWN.contains(e)) {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::UnknownName {
                    field: "event type",
                    name: (*unknown).to_owned(),
                },
            ));
        }
        Ok(Self { events })
    }

    fn encode(&self, _version: ProtocolVersion, out: &mut BytesMut) {
        wire::put_string_list(out, self.events.iter().copied());
    }
}
