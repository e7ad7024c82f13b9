//! Parsers of option values: sizes, durations, protocol versions, address lists and the ghost
//! map. Each error says what was wrong with the value and how to write it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use cqlmirror_core::config::Endpoint;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::topology::{GhostMap, Instance};

pub(crate) fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    let n = s.trim().trim_start_matches(['v', 'V']);
    n.parse::<u8>()
        .ok()
        .and_then(ProtocolVersion::from_number)
        .ok_or_else(|| format!("'{s}' is not a supported protocol version: use 3, 4 or 5"))
}

/// Parses `1048576`, `64k`, `64KiB`, `1M`, `1MiB`, `1G` … (all powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size: use e.g. 65536, 64KiB or 1MiB"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{s}': use K, M or G"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses `12s`, `500ms`, `200us`, `2m`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration: use e.g. 12s, 500ms or 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        other => {
            return Err(format!(
                "unknown duration unit '{other}' in '{s}': use us, ms, s or m"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is not a valid duration"))
}

/// Parses `host[:port],...` (`[v6]:port` or a bare IPv6 address for IPv6) into proxy
/// instances, resolving host names once; `default_port` where none is given.
pub fn parse_instances(list: &str, default_port: u16) -> Result<Vec<Instance>, String> {
    let endpoints = Endpoint::parse_list(list, default_port)?;
    let mut out = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let address = match endpoint.host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => (endpoint.host.as_str(), endpoint.port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve '{}': {e}", endpoint.host))?
                .next()
                .ok_or_else(|| format!("'{}' resolves to no address", endpoint.host))?
                .ip(),
        };
        out.push(Instance {
            address,
            port: endpoint.port,
        });
    }
    Ok(out)
}

/// Parses the older proxy's `--ghostIps`: a JSON object from each node's address to the
/// proxy address drivers see for it (`"10.1.0.1"`, or `"10.1.0.1:29042"` with a port).
pub fn parse_ghost_map(json: &str) -> Result<GhostMap, String> {
    let entries: BTreeMap<String, String> = serde_json::from_str(json).map_err(|e| {
        format!("not a JSON object of addresses ({e}): write it as '{{\"10.0.0.1\": \"10.1.0.1\", ...}}'")
    })?;
    let mut map = GhostMap::default();
    for (node, ghost) in entries {
        let node: IpAddr = node.parse().map_err(|_| {
            format!("'{node}' is not an IP address: the keys are the nodes' addresses")
        })?;
        let (address, port) = match ghost.parse::<IpAddr>() {
            Ok(ip) => (ip, None),
            Err(_) => match ghost.parse::<SocketAddr>() {
                Ok(s) => (s.ip(), Some(s.port())),
                Err(_) => {
                    return Err(format!(
                        "'{ghost}' (for {node}) is not an IP address or address:port"
                    ));
                }
            },
        };
        map.insert(node, address, port);
    }
    Ok(map)
}

/// Parses `source_dc=target_dc`.
pub fn parse_dc_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((from, to)) if !from.trim().is_empty() && !to.trim().is_empty() => {
            Ok((from.trim().to_owned(), to.trim().to_owned()))
        }
        _ => Err(format!(
            "'{s}' is not a pair of data centers: write SOURCE_DC=TARGET_DC, e.g. dc1=azure-east"
        )),
    }
}
