//! The proxy's configuration, independent of how it was given (command line, file, embedder).
//!
//! Building a [`Config`] is where local misuse is caught: every error names the setting and
//! says how to fix it. Nothing here reads the environment.

use std::fmt;
use std::time::Duration;

use crate::frame::ProtocolVersion;
use crate::topology::TopologyMode;

/// Which cluster a backend connection goes to: the clusters' identities. What a cluster is to
/// a request (primary or secondary) is a [`Role`](crate::routing::Role), which can change at
/// run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Upstream {
    /// The cluster in use today, primary unless switched.
    Source,
    /// The cluster being migrated to: it receives every write too.
    Target,
}

impl Upstream {
    pub const BOTH: [Self; 2] = [Self::Source, Self::Target];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Target => "target",
        }
    }

    pub const fn other(self) -> Self {
        match self {
            Self::Source => Self::Target,
            Self::Target => Self::Source,
        }
    }

    /// 0 for the source, 1 for the target: an index into per-upstream arrays.
    pub const fn index(self) -> usize {
        match self {
            Self::Source => 0,
            Self::Target => 1,
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A contact point: a host name or IP address and a port. Resolved by the driver.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Endpoint {
    /// Parses a comma-separated list of `host[:port]` entries (`[v6]:port` or a bare IPv6
    /// address for IPv6), using `default_port` where no port is given.
    pub fn parse_list(list: &str, default_port: u16) -> Result<Vec<Self>, String> {
        let mut out = Vec::new();
        for entry in list.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(format!(
                    "empty contact point in '{list}': give host[:port] entries separated by commas"
                ));
            }
            out.push(Self::parse(entry, default_port)?);
        }
        Ok(out)
    }

    fn parse(entry: &str, default_port: u16) -> Result<Self, String> {
        let bad_port =
            |p: &str| format!("invalid port '{p}' in '{entry}': use a number from 1 to 65535");
        let parse_port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| bad_port(p))
        };
        if let Some(rest) = entry.strip_prefix('[') {
            // [v6] or [v6]:port
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("unclosed '[' in '{entry}': write IPv6 as [addr]:port"))?;
            let port = match after {
                "" => default_port,
                p => parse_port(p.strip_prefix(':').ok_or_else(|| bad_port(p))?)?,
            };
            return Ok(Self {
                host: host.to_owned(),
                port,
            });
        }
        match entry.matches(':').count() {
            0 => Ok(Self {
                host: entry.to_owned(),
                port: default_port,
            }),
            1 => {
                let (host, port) = entry.split_once(':').unwrap_or((entry, ""));
                if host.is_empty() {
                    return Err(format!("missing host in '{entry}'"));
                }
                Ok(Self {
                    host: host.to_owned(),
                    port: parse_port(port)?,
                })
            }
            // A bare IPv6 address: no port can be given without brackets.
            _ => Ok(Self {
                host: entry.to_owned(),
                port: default_port,
            }),
        }
    }
}

/// A secret (password): kept out of `Debug` and `Display` so that it is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A login for PasswordAuthenticator (SASL PLAIN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// When the client gets the answer to a request that went to both clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitPolicy {
    /// After both clusters answered (or the secondary failed): `--wait true`, the default.
    Both,
    /// As soon as the primary answered; the secondary completes in the background.
    Primary,
}

/// When the secondary gets a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteOrder {
    /// Both clusters at once: `--write-order parallel`, the default.
    #[default]
    Parallel,
    /// The secondary once the primary accepted it (a RESULT), so that a statement the primary
    /// refuses never lands on the secondary alone; one more round trip per write.
    PrimaryFirst,
}

impl WriteOrder {
    /// The option's value for this order.
    pub fn name(self) -> &'static str {
        match self {
            Self::Parallel => "parallel",
            Self::PrimaryFirst => "primary-first",
        }
    }

    /// The order an option's value names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "parallel" => Some(Self::Parallel),
            "primary-first" => Some(Self::PrimaryFirst),
            _ => None,
        }
    }
}

/// One backend cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub contact_points: Vec<Endpoint>,
    /// Credentials the proxy uses itself on this cluster instead of relaying the client's.
    pub credentials: Option<Credentials>,
    /// The data center whose nodes client connections go to; `None`: that of the node the
    /// control connection reads the topology from (a contact point's, at first).
    pub data_center: Option<String>,
}

/// Everything a proxy needs to know. Build it with [`Config::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: ClusterConfig,
    pub target: ClusterConfig,
    pub wait: WaitPolicy,
    /// When the secondary gets a write (switchable at run time).
    pub write_order: WriteOrder,
    /// Per client connection, the most requests not finished on the secondary (in flight,
    /// queued or held for it) before the proxy stops reading the client; 0: no bound.
    pub max_secondary_lag: usize,
    /// The same bound on those requests' bytes; 0: no bound.
    pub max_secondary_lag_bytes: usize,
    /// How long a client's answer (and its handshake) waits for the secondary once the
    /// primary answered (at most `request_timeout`); the secondary's request goes on until
    /// `request_timeout`.
    pub wait_timeout: Duration,
    /// How long a backend may take to answer one request.
    pub request_timeout: Duration,
    /// How long a backend connection may take to be established.
    pub connect_timeout: Duration,
    /// Close a client connection after this long without traffic in either direction.
    pub idle_timeout: Option<Duration>,
    /// How long a client may take from connecting to the end of its handshake (READY or
    /// AUTH_SUCCESS); it is closed after that.
    pub handshake_timeout: Duration,
    /// How long a frame the client started may stay incomplete while the proxy reads; the
    /// connection is closed after that.
    pub frame_timeout: Duration,
    /// Client connections open at once; more are refused (see [`crate::admission`]).
    pub max_connections: usize,
    /// Requests of one client connection in flight to the primary; the client is not read
    /// while it has this many (at most 32768, a connection's stream ids).
    pub max_in_flight: usize,
    /// Queued bytes per connection above which the proxy stops reading from the other side.
    pub write_buffer_size: usize,
    /// The largest frame (header and body) accepted from anyone.
    pub max_frame_size: usize,
    /// Protocol versions offered to clients, lowest first.
    pub protocol_versions: Vec<ProtocolVersion>,
    /// Close the client connection when the target connection is lost.
    pub dest_close: bool,
    /// Prepared statements remembered for id mapping and repair, across all connections.
    pub prepared_cache_size: usize,
    /// What drivers learn of the cluster's nodes.
    pub topology: TopologyMode,
    /// How long a schema change waits for each cluster's nodes to agree on the schema (zero:
    /// not at all).
    pub schema_agreement_timeout: Duration,
    /// Data-center names of the source and the target that stand for each other in keyspace
    /// replication (`--dc-map source_dc=target_dc`).
    pub dc_map: Vec<(String, String)>,
    /// Report ready while the secondary is unreachable (see [`crate::health`]).
    pub ready_without_secondary: bool,
    /// The cluster whose answers clients get at start (switchable at run time).
    pub primary: Upstream,
    /// How reads are served at start (switchable at run time).
    pub read_mode: crate::routing::ReadMode,
    /// In shadow mode, the fraction of reads also sent to the secondary (0 to 1).
    pub shadow_sample: f64,
    /// In shadow mode, the most shadow reads in flight at once, proxy-wide.
    pub shadow_max_in_flight: usize,
    /// Tables whose statements never reach the target (`--filter-tables`).
    pub filter_tables: Option<crate::filter::TableFilter>,
    /// Differing rows kept in memory for the divergence report.
    pub divergence_samples: usize,
    /// Evaluate `now()`, `uuid()`, `currentTimestamp()`, `currentDate()`, `currentTime()`
    /// (and their other names) in writes once, in the proxy, so that both clusters store the
    /// same values (`--uuid`).
    pub replace_functions: bool,
    /// Emit a journal record ([`crate::session::Event::Journal`]) for every write the
    /// secondary misses, for the runtime's journal (`--journal-dir`). Off, the request path
    /// keeps nothing for it.
    pub journal: bool,
}

/// Default maximum frame size: 64 MiB, a quarter of the protocol's 256 MB cap.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 64 * 1024 * 1024;

impl Config {
    /// A configuration with the defaults for everything but the two clusters.
    pub fn new(source: Vec<Endpoint>, target: Vec<Endpoint>) -> Self {
        Self {
            source: ClusterConfig {
                contact_points: source,
                credentials: None,
                data_center: None,
            },
            target: ClusterConfig {
                contact_points: target,
                credentials: None,
                data_center: None,
            },
            wait: WaitPolicy::Both,
            write_order: WriteOrder::Parallel,
            max_secondary_lag: 1024,
            max_secondary_lag_bytes: 4 * 1024 * 1024,
            wait_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(12),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: None,
            handshake_timeout: Duration::from_secs(10),
            max_connections: usize::MAX,
            max_in_flight: 2048,
            frame_timeout: Duration::from_secs(30),
            write_buffer_size: 1024 * 1024,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            protocol_versions: ProtocolVersion::ALL.to_vec(),
            dest_close: false,
            prepared_cache_size: 10_000,
            topology: TopologyMode::default(),
            schema_agreement_timeout: Duration::from_secs(10),
            dc_map: Vec::new(),
            ready_without_secondary: false,
            primary: Upstream::Source,
            read_mode: crate::routing::ReadMode::Primary,
            shadow_sample: 1.0,
            shadow_max_in_flight: 256,
            filter_tables: None,
            divergence_samples: 100,
            replace_functions: true,
            journal: false,
        }
    }

    /// Checks the settings together; the error names the setting and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.source.contact_points.is_empty() {
            return Err("no source contact point: give SOURCE as host[:port]".into());
        }
        if self.target.contact_points.is_empty() {
            return Err("no target contact point: give TARGET as host[:port]".into());
        }
        if self.protocol_versions.is_empty() {
            return Err("--protocol-version: give at least one of 3, 4, 5".into());
        }
        if self.request_timeout.is_zero() {
            return Err("--request-timeout must be greater than zero".into());
        }
        if self.connect_timeout.is_zero() {
            return Err("--connect-timeout must be greater than zero".into());
        }
        if !(1..=32_768).contains(&self.max_in_flight) {
            return Err(
                "--max-in-flight must be from 1 to 32768 (a connection's stream ids)".into(),
            );
        }
        if self.max_secondary_lag > 32_768 {
            return Err(
                "--max-secondary-lag must be from 0 (no bound) to 32768 (a connection's stream ids)"
                    .into(),
            );
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.handshake_timeout.is_zero() {
            return Err("--handshake-timeout must be greater than zero".into());
        }
        if self.frame_timeout.is_zero() {
            return Err("--frame-timeout must be greater than zero".into());
        }
        if self.max_frame_size < 64 * 1024 || self.max_frame_size > 256 * 1024 * 1024 {
            return Err("--max-frame-size must be between 64 KiB and 256 MiB".into());
        }
        if self.write_buffer_size < 1024 {
            return Err("--write-buffer-size must be at least 1024 bytes".into());
        }
        if !(0.0..=1.0).contains(&self.shadow_sample) {
            return Err(format!(
                "--shadow-sample {} is out of range: give a fraction of the reads from 0 to 1 (0.1 shadows one read in ten)",
                self.shadow_sample
            ));
        }
        if self.shadow_max_in_flight == 0 {
            return Err("--shadow-max-in-flight must be at least 1 (or use --read-mode primary to shadow nothing)".into());
        }
        if self.prepared_cache_size == 0 {
            return Err("--prepared-cache-size must be at least 1".into());
        }
        match &self.topology {
            TopologyMode::Virtual(v) => {
                if !v.instances.is_empty() && v.index >= v.instances.len() {
                    return Err(format!(
                        "--proxy-topology-index {} is out of range: --proxy-topology-addresses lists {} instances (index from 0)",
                        v.index,
                        v.instances.len()
                    ));
                }
                if v.num_tokens == 0 || v.num_tokens > 1024 {
                    return Err("--proxy-topology-num-tokens must be from 1 to 1024".into());
                }
                let mut seen = std::collections::BTreeSet::new();
                for instance in &v.instances {
                    if !seen.insert(instance) {
                        return Err(format!(
                            "--proxy-topology-addresses lists {instance} twice: give each proxy instance once"
                        ));
                    }
                }
            }
            TopologyMode::Ghost(map) => {
                if map.is_empty() {
                    return Err("--ghostIps maps no address: give {\"node address\": \"proxy address\", ...}".into());
                }
            }
        }
        Ok(())
    }

    pub fn cluster(&self, upstream: Upstream) -> &ClusterConfig {
        match upstream {
            Upstream::Source => &self.source,
            Upstream::Target => &self.target,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn contact_points() {
        assert_eq!(
            Endpoint::parse_list("a", 9042).unwrap(),
            vec![ep("a", 9042)]
        );
        assert_eq!(
            Endpoint::parse_list("10.0.0.1:9142, b", 9042).unwrap(),
            vec![ep("10.0.0.1", 9142), ep("b", 9042)]
        );
        assert_eq!(
            Endpoint::parse_list("[::1]:9043,::1,[fe80::1]", 9042).unwrap(),
            vec![ep("::1", 9043), ep("::1", 9042), ep("fe80::1", 9042)]
        );
        assert!(
            Endpoint::parse_list("a:0", 9042)
                .unwrap_err()
                .contains("invalid port '0'")
        );
        assert!(
            Endpoint::parse_list("a:x", 9042)
                .unwrap_err()
                .contains("invalid port 'x'")
        );
        assert!(
            Endpoint::parse_list("a,,b", 9042)
                .unwrap_err()
                .contains("empty contact point")
        );
        assert!(
            Endpoint::parse_list(":9042", 9042)
                .unwrap_err()
                .contains("missing host")
        );
        assert_eq!(ep("::1", 1).to_string(), "[::1]:1");
    }

    #[test]
    fn secrets_are_masked() {
        let c = Credentials {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.password.to_string(), "***");
        assert_eq!(c.password.expose(), "hunter2");
    }

    #[test]
    fn validation_names_the_setting() {
        let mut c = Config::new(vec![ep("a", 1)], vec![ep("b", 1)]);
        assert!(c.validate().is_ok());
        c.protocol_versions.clear();
        assert!(c.validate().unwrap_err().starts_with("--protocol-version"));
    }
}
