//! Requests with the values the proxy generated for function calls (see
//! [`crate::statement::functions`]): QUERY text with literals, and EXECUTE and BATCH entries
//! with the values of the markers the proxy added to their prepared statements.
//!
//! The proxy rewrites a request once and sends the same bytes to both clusters.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::frame::ProtocolVersion;
use crate::message::Body;
use crate::message::batch::{Batch, BatchStatement, Statement, Statements};
use crate::message::execute::Execute;
use crate::message::params::{QueryParams, Values};
use crate::message::query::Query;
use crate::message::result::ResultMessage;
use crate::statement::functions::GeneratedMarker;
use crate::wire::Value;

/// Bound values with the generated ones added, owned by the caller while a body is encoded.
#[derive(Debug)]
pub enum Bound<'a> {
    Positional(Vec<Value<'a>>),
    Named(Vec<(&'a str, Value<'a>)>),
}

impl<'a> Bound<'a> {
    /// The client's `values` with `generated[i]` for `markers[i]`: at the marker's position
    /// when values are positional (markers are in increasing position), appended under the
    /// marker's name when they are named.
    pub fn new(
        values: Option<Values<'a>>,
        markers: &'a [GeneratedMarker],
        generated: &'a [Bytes],
    ) -> Self {
        let named = values.is_some_and(|v| v.has_names());
        let pairs = markers.iter().zip(generated);
        if named {
            let mut out: Vec<(&str, Value<'_>)> = values
                .iter()
                .flat_map(|v| v.iter())
                .map(|(name, value)| (name.unwrap_or(""), value))
                .collect();
            out.extend(pairs.map(|(m, g)| (m.name.as_str(), Value::Bytes(g))));
            Self::Named(out)
        } else {
            let mut out: Vec<Value<'_>> = values
                .iter()
                .flat_map(|v| v.iter())
                .map(|(_, value)| value)
                .collect();
            for (marker, value) in pairs {
                // A client that sent too few values gets the cluster's error about it.
                out.insert(marker.index.min(out.len()), Value::Bytes(value));
            }
            Self::Positional(out)
        }
    }

    pub fn values(&self) -> Values<'_> {
        match self {
            Self::Positional(v) => Values::positional(v),
            Self::Named(v) => Values::named(v),
        }
    }
}

/// A QUERY body with another statement text, the parameters unchanged.
pub fn query_with_text(
    body: &[u8],
    version: ProtocolVersion,
    text: &str,
) -> Result<Bytes, DecodeError> {
    let query = Query::decode(body, version)?;
    Ok(Query { text, ..query }.to_bytes(version))
}

/// An EXECUTE body with `generated` bound to `markers`.
pub fn execute_with_values(
    body: &[u8],
    version: ProtocolVersion,
    markers: &[GeneratedMarker],
    generated: &[Bytes],
) -> Result<Bytes, DecodeError> {
    let execute = Execute::decode(body, version)?;
    let bound = Bound::new(execute.params.values, markers, generated);
    let params = QueryParams {
        values: Some(bound.values()),
        ..execute.params
    };
    Ok(Execute { params, ..execute }.to_bytes(version))
}

/// What changes in one statement of a batch.
#[derive(Debug, Default)]
pub struct EntryChange {
    /// New text for a statement given as text.
    pub text: Option<String>,
    /// Values to bind to the markers the proxy added to a prepared statement.
    pub generated: Option<(std::sync::Arc<[GeneratedMarker]>, Vec<Bytes>)>,
}

/// A BATCH body with `change` applied to each statement (`change` gets each statement in
/// order), or `None` when nothing changes.
pub fn batch_with_values(
    body: &[u8],
    version: ProtocolVersion,
    mut change: impl FnMut(&Statement<'_>) -> EntryChange,
) -> Result<Option<Bytes>, DecodeError> {
    let batch = Batch::decode(body, version)?;
    let entries: Vec<BatchStatement<'_>> = batch.statements.iter().collect();
    let changes: Vec<EntryChange> = entries.iter().map(|e| change(&e.statement)).collect();
    if changes
        .iter()
        .all(|c| c.text.is_none() && c.generated.is_none())
    {
        return Ok(None);
    }
    let bound: Vec<Option<Bound<'_>>> = entries
        .iter()
        .zip(&changes)
        .map(|(entry, change)| {
            change
                .generated
                .as_ref()
                .map(|(markers, values)| Bound::new(Some(entry.values), markers, values))
        })
        .collect();
    let rewritten: Vec<BatchStatement<'_>> = entries
        .iter()
        .zip(&changes)
        .zip(&bound)
        .map(|((entry, change), bound)| BatchStatement {
            statement: change
                .text
                .as_deref()
                .map_or(entry.statement, Statement::Query),
            values: bound.as_ref().map_or(entry.values, Bound::values),
        })
        .collect();
    Ok(Some(
        Batch {
            statements: Statements::new(&rewritten),
            ..batch
        }
        .to_bytes(version),
    ))
}

/// What a client sees of the PREPARED answer to a statement the proxy added `markers` to: the
/// bind markers of the statement it asked for. The added markers leave the metadata; the
/// partition key indexes are renumbered, or emptied when the partition key is generated (the
/// client cannot compute the routing token then, as for any unbound key). The rest (ids,
/// result metadata) stays.
pub fn prepared_for_client(
    message: &[u8],
    version: ProtocolVersion,
    markers: &[GeneratedMarker],
) -> Result<Bytes, DecodeError> {
    let ResultMessage::Prepared(mut prepared) = ResultMessage::decode(message, version)? else {
        return Ok(Bytes::copy_from_slice(message));
    };
    let generated = |i: usize| markers.iter().any(|m| m.index == i);
    let metadata = &mut prepared.metadata;
    let mut index = 0;
    metadata.columns.retain(|_| {
        index += 1;
        !generated(index - 1)
    });
    let pk_indexes: Option<Vec<u16>> = metadata
        .pk_indexes
        .iter()
        .map(|&i| {
            let i = usize::from(i);
            (!generated(i)).then(|| {
                let before = markers.iter().filter(|m| m.index < i).count();
                (i - before) as u16
            })
        })
        .collect();
    metadata.pk_indexes = pk_indexes.unwrap_or_default();
    Ok(ResultMessage::Prepared(prepared).to_bytes(version))
}

/// The names the cluster gives `markers` in its PREPARED answer, for markers without a name of
/// their own (`?`): what values bound by name must be called.
pub fn name_markers(message: &[u8], version: ProtocolVersion, markers: &mut [GeneratedMarker]) {
    let Ok(ResultMessage::Prepared(prepared)) = ResultMessage::decode(message, version) else {
        return;
    };
    for marker in markers.iter_mut().filter(|m| m.name.is_empty()) {
        if let Some(column) = prepared.metadata.columns.get(marker.index) {
            column.name.clone_into(&mut marker.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::functions::Function;
    use crate::wire::Consistency;

    fn marker(index: usize, name: &str) -> GeneratedMarker {
        GeneratedMarker {
            index,
            function: Function::TimeUuid,
            name: name.into(),
        }
    }

    #[test]
    fn positional_values_go_to_their_positions() {
        let markers = [marker(0, ""), marker(2, "")];
        let generated = [Bytes::from_static(b"g0"), Bytes::from_static(b"g2")];
        let client = [Value::Bytes(b"c1"), Value::Null];
        let bound = Bound::new(Some(Values::positional(&client)), &markers, &generated);
        let got: Vec<_> = bound.values().iter().map(|(_, v)| v).collect();
        assert_eq!(
            got,
            vec![
                Value::Bytes(b"g0"),
                Value::Bytes(b"c1"),
                Value::Bytes(b"g2"),
                Value::Null
            ]
        );
        // No values at all: the generated ones alone.
        let alone = Bound::new(None, &markers, &generated);
        let got: Vec<_> = alone.values().iter().map(|(_, v)| v).collect();
        assert_eq!(got, vec![Value::Bytes(b"g0"), Value::Bytes(b"g2")]);
    }

    #[test]
    fn named_values_are_appended_by_name() {
        let markers = [marker(0, "ts")];
        let generated = [Bytes::from_static(b"g")];
        let client = [("k", Value::Bytes(b"1"))];
        let bound = Bound::new(Some(Values::named(&client)), &markers, &generated);
        let got: Vec<_> = bound.values().iter().collect();
        assert_eq!(
            got,
            vec![
                (Some("k"), Value::Bytes(b"1")),
                (Some("ts"), Value::Bytes(b"g"))
            ]
        );
    }

    #[test]
    fn an_execute_keeps_its_other_parameters() {
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            let client = [Value::Bytes(b"k")];
            let body = Execute {
                id: b"id",
                result_metadata_id: Some(b"rm"),
                params: QueryParams {
                    values: Some(Values::positional(&client)),
                    serial_consistency: Some(Consistency::LOCAL_SERIAL),
                    timestamp: Some(42),
                    ..QueryParams::new(Consistency::QUORUM)
                },
            }
            .to_bytes(version);
            let out = execute_with_values(
                &body,
                version,
                &[marker(1, "")],
                &[Bytes::from_static(b"gen")],
            )
            .unwrap();
            let e = Execute::decode(&out, version).unwrap();
            assert_eq!(e.id, b"id");
            assert_eq!(e.params.timestamp, Some(42));
            assert_eq!(e.params.consistency, Consistency::QUORUM);
            let values: Vec<_> = e.params.values.unwrap().iter().map(|(_, v)| v).collect();
            assert_eq!(values, vec![Value::Bytes(b"k"), Value::Bytes(b"gen")]);
        }
    }
}
