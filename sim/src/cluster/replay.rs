//! Writes applied to a cluster's table from outside the simulated network, as a replay tool
//! applies a journal once the cluster is back: the request is read by the same code as one
//! arriving on a connection, and applied with the same last-write-wins rule.

use cqlmirror_core::frame::{Opcode, ProtocolVersion};

use super::serve::{self, Plan};
use super::store::Store;

impl Store {
    /// Applies a QUERY or BATCH `body` encoded for `version`, as sent on a connection whose
    /// keyspace is `keyspace` (v3 and v4 requests carry none); a write without a timestamp
    /// gets `default_timestamp`, the cluster's clock. The number of cells written, or the
    /// error the cluster would have answered with.
    pub fn apply_request(
        &mut self,
        version: ProtocolVersion,
        opcode: Opcode,
        body: &[u8],
        keyspace: Option<&str>,
        default_timestamp: i64,
    ) -> Result<usize, String> {
        match serve::plan_body(opcode, body, version, keyspace, self)? {
            Plan::Writes { writes, timestamp } => {
                let at = timestamp.unwrap_or(default_timestamp);
                let n = writes.len();
                for (key, value, _) in writes {
                    self.put(key, value, at);
                }
                Ok(n)
            }
            Plan::Fail { code, message } => Err(format!("error {code}: {message}")),
            other => Err(format!("not a write: {other:?}")),
        }
    }
}

/// The writes a QUERY or BATCH `body` carries, as a cluster would read them on a connection
/// whose keyspace is `keyspace`: key and write id (see [`super::write_id`]) of each, in order.
pub fn writes_of_request(
    version: ProtocolVersion,
    opcode: Opcode,
    body: &[u8],
    keyspace: Option<&str>,
) -> Result<Vec<(i64, String)>, String> {
    match serve::plan_body(opcode, body, version, keyspace, &Store::default())? {
        Plan::Writes { writes, .. } => Ok(writes.into_iter().map(|(k, _, id)| (k, id)).collect()),
        Plan::Fail { code, message } => Err(format!("error {code}: {message}")),
        other => Err(format!("not a write: {other:?}")),
    }
}
