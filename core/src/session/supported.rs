//! The SUPPORTED answer a client gets: only what both clusters and the proxy support.
//!
//! A driver picks its CQL version, compression and protocol version from SUPPORTED; offering
//! something one cluster lacks would make the proxy fail later, on that cluster only. Keys that
//! would let a driver connect around the proxy (Scylla's shard-aware ports) are removed.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::frame::{Compression, ProtocolVersion};
use crate::message::{Body, Supported, startup::keys};

/// The merged SUPPORTED body from the primary's (`primary`) and, when it answered, the
/// secondary's (`secondary`) bodies, with protocol versions narrowed to `accepted`.
pub(super) fn merge(
    primary: &[u8],
    secondary: Option<&[u8]>,
    version: ProtocolVersion,
    accepted: &[ProtocolVersion],
) -> Result<Bytes, DecodeError> {
    let mut merged = Supported::decode(primary, version)?;
    if let Some(other) = secondary.and_then(|t| Supported::decode(t, version).ok()) {
        for key in [keys::COMPRESSION, keys::PROTOCOL_VERSIONS] {
            if merged.values(key).is_some() && other.values(key).is_some() {
                merged.intersect(key, &other);
            }
        }
        // Drivers need a CQL version: keep the primary's if the two have none in common.
        let common: Vec<&str> = merged
            .values(keys::CQL_VERSION)
            .unwrap_or(&[])
            .iter()
            .copied()
            .filter(|v| {
                other
                    .values(keys::CQL_VERSION)
                    .is_some_and(|t| t.contains(v))
            })
            .collect();
        if !common.is_empty() {
            merged.set(keys::CQL_VERSION, common);
        }
    }
    let compression: Vec<&str> = merged
        .values(keys::COMPRESSION)
        .unwrap_or(&[])
        .iter()
        .copied()
        .filter(|name| Compression::from_name(name).is_some())
        .collect();
    merged.set(keys::COMPRESSION, compression);
    if let Some(entries) = merged.values(keys::PROTOCOL_VERSIONS) {
        let kept: Vec<&str> = entries
            .iter()
            .copied()
            .filter(|entry| {
                let (number, description) = entry.split_once('/').unwrap_or((entry, ""));
                !description.contains("beta")
                    && number
                        .parse::<u8>()
                        .ok()
                        .and_then(ProtocolVersion::from_number)
                        .is_some_and(|v| accepted.contains(&v))
            })
            .collect();
        merged.set(keys::PROTOCOL_VERSIONS, kept);
    }
    merged.retain(|key, _| !key.starts_with("SCYLLA_"));
    Ok(merged.to_bytes(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(options: &[(&str, &[&str])]) -> Bytes {
        Supported {
            options: options.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
        }
        .to_bytes(ProtocolVersion::V4)
    }

    #[test]
    fn offers_what_both_and_the_proxy_support() {
        let source = body(&[
            ("CQL_VERSION", &["3.4.7"]),
            ("COMPRESSION", &["snappy", "lz4", "zstd"]),
            ("PROTOCOL_VERSIONS", &["3/v3", "4/v4", "5/v5", "6/v6-beta"]),
            ("SCYLLA_SHARD", &["0"]),
        ]);
        let target = body(&[
            ("CQL_VERSION", &["3.4.7"]),
            ("COMPRESSION", &["lz4"]),
            ("PROTOCOL_VERSIONS", &["3/v3", "4/v4"]),
        ]);
        let accepted = [
            ProtocolVersion::V3,
            ProtocolVersion::V4,
            ProtocolVersion::V5,
        ];
        let merged = merge(&source, Some(&target), ProtocolVersion::V4, &accepted).unwrap();
        let s = Supported::decode(&merged, ProtocolVersion::V4).unwrap();
        assert_eq!(s.values("COMPRESSION").unwrap(), &["lz4"]);
        assert_eq!(s.values("PROTOCOL_VERSIONS").unwrap(), &["3/v3", "4/v4"]);
        assert_eq!(s.values("CQL_VERSION").unwrap(), &["3.4.7"]);
        assert!(s.values("SCYLLA_SHARD").is_none());
    }

    #[test]
    fn source_alone_and_disjoint_cql_versions() {
        let source = body(&[
            ("CQL_VERSION", &["3.4.7"]),
            ("PROTOCOL_VERSIONS", &["4/v4", "5/v5"]),
        ]);
        let target = body(&[("CQL_VERSION", &["3.4.5"])]);
        let accepted = [ProtocolVersion::V4];
        let merged = merge(&source, Some(&target), ProtocolVersion::V4, &accepted).unwrap();
        let s = Supported::decode(&merged, ProtocolVersion::V4).unwrap();
        assert_eq!(s.values("CQL_VERSION").unwrap(), &["3.4.7"]);
        assert_eq!(s.values("COMPRESSION").unwrap(), &[] as &[&str]);
        assert_eq!(s.values("PROTOCOL_VERSIONS").unwrap(), &["4/v4"]);
        let alone = merge(&source, None, ProtocolVersion::V4, &accepted).unwrap();
        assert!(
            Supported::decode(&alone, ProtocolVersion::V4)
                .unwrap()
                .values("CQL_VERSION")
                .is_some()
        );
    }
}
