//! Function calls evaluated once, by the proxy (`--uuid`): the session's part.
//!
//! A write's `now()`, `uuid()`, `currentTimestamp()`, ... would be evaluated by each cluster on
//! its own. The session gives each call one value and sends the same bytes to both clusters:
//! as a literal in QUERY text and text entries of a BATCH; as a bound value in an EXECUTE (or a
//! prepared entry of a BATCH) of a statement that was prepared with markers in place of its
//! calls. Values are generated once per request, before the request is stamped and fanned out.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::error::DecodeError;
use crate::frame::{Direction, Envelope, Flags, Header, Prefix, ProtocolVersion, StreamId};
use crate::message::Statement as BatchEntry;
use crate::message::generated::{self, EntryChange};
use crate::session::{Event, Session};
use crate::statement::Statement;
use crate::statement::functions::{self, Function, GeneratedMarker};

impl Session {
    /// A value for one call, counted for the metrics.
    fn generate_value(&mut self, function: Function, now: Instant) -> crate::generated::Generated {
        self.events.push_back(Event::GeneratedValue { function });
        self.proxy.generate(function, now)
    }

    /// A QUERY body whose text has each call replaced by a literal, or `None` without calls.
    pub(super) fn query_with_values(
        &mut self,
        message: &Bytes,
        text: &str,
        version: ProtocolVersion,
        now: Instant,
    ) -> Result<Option<Bytes>, DecodeError> {
        let Some(text) = functions::with_literals(text, |f| self.generate_value(f, now).literal())
        else {
            return Ok(None);
        };
        generated::query_with_text(message, version, &text).map(Some)
    }

    /// An EXECUTE body with fresh values for `markers`.
    pub(super) fn execute_with_values(
        &mut self,
        message: &Bytes,
        version: ProtocolVersion,
        markers: &[GeneratedMarker],
        now: Instant,
    ) -> Result<Bytes, DecodeError> {
        let values: Vec<Bytes> = markers
            .iter()
            .map(|m| self.generate_value(m.function, now).to_bytes())
            .collect();
        generated::execute_with_values(message, version, markers, &values)
    }

    /// A BATCH body with its text entries' calls replaced by literals and fresh values for the
    /// markers of its prepared entries, or `None` when it has neither.
    pub(super) fn batch_with_values(
        &mut self,
        message: &Bytes,
        version: ProtocolVersion,
        now: Instant,
    ) -> Result<Option<Bytes>, DecodeError> {
        let proxy = Arc::clone(&self.proxy);
        generated::batch_with_values(message, version, |entry| match *entry {
            BatchEntry::Query(text) => EntryChange {
                text: Statement::classify(text)
                    .calls_functions
                    .then(|| {
                        functions::with_literals(text, |f| self.generate_value(f, now).literal())
                    })
                    .flatten(),
                generated: None,
            },
            BatchEntry::Prepared(id) => {
                let markers = proxy.prepared().get(id).and_then(|p| p.generated.clone());
                EntryChange {
                    text: None,
                    generated: markers.map(|markers| {
                        let values = markers
                            .iter()
                            .map(|m| self.generate_value(m.function, now).to_bytes())
                            .collect();
                        (markers, values)
                    }),
                }
            }
        })
    }

    /// Sends the client the PREPARED answer to a statement the proxy added `markers` to, with
    /// the metadata of the statement the client asked for. Any other answer goes unchanged.
    pub(super) fn answer_prepared(
        &mut self,
        stream: StreamId,
        version: ProtocolVersion,
        envelope: &Envelope,
        markers: &[GeneratedMarker],
    ) {
        let rewritten = envelope
            .decompressed(self.compression, self.proxy.config().max_frame_size)
            .and_then(|plain| {
                let body = plain.body();
                let (_, offset) = Prefix::parse(plain.header().flags, Direction::Response, body)?;
                let message = generated::prepared_for_client(&body[offset..], version, markers)?;
                Ok((plain.header().flags, body.slice(..offset), message))
            });
        match rewritten {
            Ok((flags, prefix, message)) => {
                let body = crate::session::intake::join(&prefix, &message);
                let header = Header {
                    version,
                    direction: Direction::Response,
                    flags: flags.difference(Flags::COMPRESSION),
                    stream,
                    opcode: envelope.opcode(),
                    length: body.len() as u32,
                };
                self.client.send(header, &body);
            }
            // Not a readable answer: the client gets it as it is (an ERROR, typically).
            Err(_) => self.answer_client(stream, version, envelope),
        }
    }
}

/// The markers a statement to prepare gets in place of its calls, when `replace` is on and it
/// is a write calling such functions.
pub(super) fn markers_for(replace: bool, query: &str) -> Option<functions::WithMarkers> {
    if !replace || !Statement::classify(query).calls_functions {
        return None;
    }
    functions::with_markers(query)
}

/// Markers as the prepared cache keeps them.
pub(super) fn shared(markers: Vec<GeneratedMarker>) -> Arc<[GeneratedMarker]> {
    Arc::from(markers)
}
