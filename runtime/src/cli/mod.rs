//! The command line shared by `proxy-smol` and `proxy-tokio`.
//!
//! One definition serves both binaries so that they accept exactly the same options. Option
//! names of the older Java cassandra-proxy are accepted, including its `--wait false` style of
//! boolean values, so that switching is a matter of changing the program name.

use std::net::IpAddr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{CommandFactory, FromArgMatches, Parser};

use cqlmirror_core::config::{Config, Credentials, Endpoint, Secret, WaitPolicy};
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::topology::{TopologyMode, VirtualTopology};

pub mod effective;
pub mod file;
pub mod functions;
pub mod journal;
pub mod ops;
mod parse;
pub mod reads;
pub mod replay;
#[cfg(test)]
mod testing;
mod tls;
pub mod writes;

pub use tls::TlsArgs;

use parse::parse_version;
pub use parse::{parse_dc_pair, parse_duration, parse_ghost_map, parse_instances, parse_size};

/// Worker threads when `--threads` is not given: one per CPU.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The lines describing the running configuration, secrets masked.
pub fn describe(settings: &Settings) -> String {
    let c = &settings.config;
    let points = |v: &[Endpoint]| {
        v.iter()
            .map(Endpoint::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let topology = match &c.topology {
        TopologyMode::Virtual(v) if v.instances.is_empty() => format!(
            "drivers see this instance alone, at {}",
            v.advertise
                .map_or("the address they connect to".to_owned(), |a| a.to_string())
        ),
        TopologyMode::Virtual(v) => format!(
            "drivers see {} proxy instances ({}), this one {}",
            v.instances.len(),
            v.instances
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            v.instances
                .get(v.index)
                .map_or(String::new(), ToString::to_string)
        ),
        TopologyMode::Ghost(map) => format!("ghost addresses for {} nodes", map.len()),
    };
    format!(
        "listening on {}{} (at most {} client connections); source {}; target {}{}; {} primary; reads: {}{}; wait for {} (secondary at most {:?}); writes {}, secondary lag at most {}; request timeout {:?}; protocol versions {:?}; {topology}; {} threads",
        settings.listen,
        settings.plain_listen.map_or(String::new(), |a| format!(
            " and on {a} for plaintext clients"
        )),
        c.max_connections,
        points(&c.source.contact_points),
        points(&c.target.contact_points),
        c.target
            .credentials
            .as_ref()
            .map_or(String::new(), |cr| format!(
                " (as {}, password {})",
                cr.username, cr.password
            )),
        c.primary,
        c.read_mode,
        match c.read_mode {
            cqlmirror_core::routing::ReadMode::Shadow => format!(
                " ({} of them, at most {} in flight)",
                c.shadow_sample, c.shadow_max_in_flight
            ),
            _ => String::new(),
        },
        match c.wait {
            WaitPolicy::Both => "both clusters",
            WaitPolicy::Primary => "the primary only",
        },
        c.wait_timeout,
        c.write_order.name(),
        match (c.max_secondary_lag, c.max_secondary_lag_bytes) {
            (0, 0) => "unbounded".to_owned(),
            (n, 0) => format!("{n} requests"),
            (0, b) => format!("{b} bytes"),
            (n, b) => format!("{n} requests or {b} bytes"),
        },
        c.request_timeout,
        c.protocol_versions
            .iter()
            .map(|v| v.number())
            .collect::<Vec<_>>(),
        settings.threads,
    )
}

/// Dual-write proxy for Apache Cassandra (CQL native protocol) live migrations.
///
/// Every write sent to the proxy reaches both the SOURCE cluster (in use today) and the
/// TARGET cluster (being migrated to); reads go to the primary (the source unless switched),
/// and can be shadowed to the other cluster and compared. The client gets the primary's
/// answers. Every option can also be set with the environment variable named in its help.
#[derive(Debug, Parser)]
#[command(version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// Source cluster: `host[:port]` or a comma-separated list of contact points.
    #[arg(value_name = "SOURCE", env = "CQLMIRROR_SOURCE")]
    pub source: String,

    /// Target cluster: `host[:port]` or a comma-separated list of contact points.
    #[arg(value_name = "TARGET", env = "CQLMIRROR_TARGET")]
    pub target: String,

    /// Port of SOURCE contact points given without one.
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 9042,
        env = "CQLMIRROR_SOURCE_PORT"
    )]
    pub source_port: u16,

    /// Port of TARGET contact points given without one.
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 9042,
        env = "CQLMIRROR_TARGET_PORT"
    )]
    pub target_port: u16,

    /// Port the proxy listens on for CQL clients.
    #[arg(
        short = 'p',
        long,
        value_name = "PORT",
        default_value_t = 29042,
        env = "CQLMIRROR_PROXY_PORT"
    )]
    pub proxy_port: u16,

    /// With TLS to clients (--proxy-pem-certfile or --proxy-pkcs12): a second port on which the proxy takes
    /// plaintext clients too, for a gradual move of the applications to TLS.
    #[arg(long, value_name = "PORT", env = "CQLMIRROR_PROXY_PLAIN_PORT")]
    pub proxy_plain_port: Option<u16>,

    /// Address the proxy listens on (0.0.0.0 for all IPv4 interfaces, :: for all).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0",
        env = "CQLMIRROR_LISTEN_ADDRESS"
    )]
    pub listen_address: IpAddr,

    /// Worker threads [default: the number of CPUs].
    #[arg(short = 't', long, value_name = "N", env = "CQLMIRROR_THREADS")]
    pub threads: Option<usize>,

    /// Answer a write only after both clusters answered (true), or as soon as the primary
    /// answered, completing the secondary's write in the background (false). Reads follow
    /// --read-mode.
    #[arg(short = 'W', long, value_name = "BOOL", num_args = 0..=1, default_value = "true",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          env = "CQLMIRROR_WAIT")]
    pub wait: bool,

    /// With --wait true (and for compared reads): how long the client's answer (and its
    /// handshake) waits for the secondary once the primary answered. The secondary's request
    /// goes on in the background until --request-timeout, and a failed write is counted as
    /// missed. While the secondary is known to stall, clients do not wait for it at all, until
    /// it answers again.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration,
          env = "CQLMIRROR_WAIT_TIMEOUT")]
    pub wait_timeout: Duration,

    /// Bytes queued for one connection above which the proxy stops reading from the other
    /// side (backpressure). Accepts K/M/G and KiB/MiB/GiB suffixes. The older proxy's default
    /// was 64 KiB; larger values let big results flow without stalls.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_size,
          env = "CQLMIRROR_WRITE_BUFFER_SIZE")]
    pub write_buffer_size: usize,

    /// Close a client connection idle for this many seconds (0: never).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0,
        env = "CQLMIRROR_TCP_IDLE_TIME_OUT"
    )]
    pub tcp_idle_time_out: u64,

    /// How long a client may take from connecting to the end of its handshake (STARTUP
    /// through READY or AUTH_SUCCESS) before it is closed. Drivers give up on a connection
    /// after about 5 s; this is longer, so that only clients that stall are cut.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration,
          env = "CQLMIRROR_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Duration,

    /// How long a frame a client started sending may stay incomplete before the connection
    /// is closed (time the proxy itself stops reading for backpressure does not count).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration,
          env = "CQLMIRROR_FRAME_TIMEOUT")]
    pub frame_timeout: Duration,

    /// Client connections served at once; more are closed as soon as they are accepted,
    /// counted, and logged once every 10 s [default: what the descriptor limit allows, at 3
    /// descriptors per connection; the soft limit is raised to the hard one at start-up].
    #[arg(long, value_name = "N", env = "CQLMIRROR_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Requests of one client connection in flight to the source at once; while a client has
    /// this many, the proxy reads nothing more from it (the driver waits, nothing fails).
    /// Bounds what one client can push onto the clusters; drivers use far fewer per
    /// connection (the Java driver at most 1024 by default). At most 32768.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2048,
        env = "CQLMIRROR_MAX_IN_FLIGHT"
    )]
    pub max_in_flight: usize,

    /// How long a cluster may take to answer one request (e.g. 12s, 500ms, 2m). A source that
    /// does not answer in time gets the client an error; a target that does not is counted.
    #[arg(long, value_name = "DURATION", default_value = "12s", value_parser = parse_duration,
          env = "CQLMIRROR_REQUEST_TIMEOUT")]
    pub request_timeout: Duration,

    /// How long connecting to a cluster may take.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration,
          env = "CQLMIRROR_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,

    /// Protocol versions offered to clients (repeatable: 3, 4, 5) [default: 3, 4 and 5].
    /// Versions that a cluster refuses are refused to the client too.
    #[arg(long, value_name = "N", value_parser = parse_version, env = "CQLMIRROR_PROTOCOL_VERSION",
          value_delimiter = ',')]
    pub protocol_version: Vec<ProtocolVersion>,

    /// Largest frame accepted from a client or cluster (K/M/G suffixes).
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_size,
          env = "CQLMIRROR_MAX_FRAME_SIZE")]
    pub max_frame_size: usize,

    /// Username the proxy logs in with on the source, instead of relaying the client's
    /// credentials (and for its control connection to the source). Needs --source-password.
    #[arg(
        long,
        value_name = "USER",
        env = "CQLMIRROR_SOURCE_USERNAME",
        requires = "source_secret"
    )]
    pub source_username: Option<String>,

    /// Password for --source-username. Prefer the environment variable: command lines are
    /// visible to other users of the machine.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "CQLMIRROR_SOURCE_PASSWORD",
        hide_env_values = true,
        requires = "source_username",
        group = "source_secret"
    )]
    pub source_password: Option<String>,

    /// A file holding the password for --source-username (its first line), instead of
    /// --source-password: for secrets mounted as files.
    #[arg(
        long,
        value_name = "FILE",
        env = "CQLMIRROR_SOURCE_PASSWORD_FILE",
        requires = "source_username",
        group = "source_secret"
    )]
    pub source_password_file: Option<std::path::PathBuf>,

    /// Username the proxy logs in with on the target, instead of relaying the client's
    /// credentials. Needs --target-password.
    #[arg(
        long,
        value_name = "USER",
        env = "CQLMIRROR_TARGET_USERNAME",
        requires = "target_secret"
    )]
    pub target_username: Option<String>,

    /// Password for --target-username. Prefer the environment variable: command lines are
    /// visible to other users of the machine.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "CQLMIRROR_TARGET_PASSWORD",
        hide_env_values = true,
        requires = "target_username",
        group = "target_secret"
    )]
    pub target_password: Option<String>,

    /// A file holding the password for --target-username (its first line), instead of
    /// --target-password: for secrets mounted as files.
    #[arg(
        long,
        value_name = "FILE",
        env = "CQLMIRROR_TARGET_PASSWORD_FILE",
        requires = "target_username",
        group = "target_secret"
    )]
    pub target_password_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub tls: tls::TlsArgs,

    #[command(flatten)]
    pub ops: ops::OpsArgs,

    #[command(flatten)]
    pub reads: reads::ReadArgs,

    #[command(flatten)]
    pub functions: functions::FunctionArgs,

    #[command(flatten)]
    pub writes: writes::WriteArgs,

    #[command(flatten)]
    pub journal: journal::JournalArgs,

    #[command(flatten)]
    pub replay: replay::ReplayArgs,

    /// A TOML file setting any option (keys: the long option names without dashes, e.g.
    /// `wait-timeout = "2s"`); the command line and the environment take precedence over it.
    /// SIGHUP reads it again: what can change at run time (--wait, --write-order, --primary,
    /// --read-mode, --shadow-sample) is applied, the rest is
    /// logged as needing a restart.
    #[arg(long, value_name = "FILE", env = "CQLMIRROR_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Every option as given, filled in by [`Cli::parse_for`] (for the admin API).
    #[arg(skip)]
    pub effective: effective::EffectiveOptions,

    /// Close the client connection when the connection to the target is lost.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          env = "CQLMIRROR_DEST_CLOSE")]
    pub dest_close: bool,

    /// Prepared statements remembered across connections for id mapping and repair.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        env = "CQLMIRROR_PREPARED_CACHE_SIZE"
    )]
    pub prepared_cache_size: usize,

    /// How long a schema change waits for each cluster's nodes to agree on the schema before
    /// it is answered (drivers cannot check that through the proxy; 0s: do not wait).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration,
          env = "CQLMIRROR_SCHEMA_AGREEMENT_TIMEOUT")]
    pub schema_agreement_timeout: Duration,

    /// The data center of the source whose nodes client connections go to [default: that of
    /// the node the proxy reads the source's topology from, a contact point's at first].
    #[arg(long, value_name = "NAME", env = "CQLMIRROR_SOURCE_DC")]
    pub source_dc: Option<String>,

    /// The data center of the target whose nodes client connections go to [default: that of
    /// the node the proxy reads the target's topology from].
    #[arg(long, value_name = "NAME", env = "CQLMIRROR_TARGET_DC")]
    pub target_dc: Option<String>,

    /// A data center of the source and its counterpart in the target, e.g. dc1=azure-east
    /// (repeatable, or comma-separated): keyspace replication written with one cluster's names
    /// (CREATE/ALTER KEYSPACE ... NetworkTopologyStrategy) reaches the other with its own.
    #[arg(long, value_name = "SOURCE_DC=TARGET_DC", value_delimiter = ',', value_parser = parse_dc_pair,
          env = "CQLMIRROR_DC_MAP")]
    pub dc_map: Vec<(String, String)>,

    /// Every proxy instance drivers may use, the same list (in the same order) on each
    /// instance: `host[:port]`, comma-separated, IPv4 or IPv6 (`[v6]:port`); the port defaults
    /// to --proxy-port. Drivers see these instances as the cluster's nodes. Without it, each
    /// client sees this instance alone, at the address it connected to (or
    /// --advertise-address).
    #[arg(
        long,
        value_name = "LIST",
        env = "CQLMIRROR_PROXY_TOPOLOGY_ADDRESSES",
        conflicts_with = "ghost_ips"
    )]
    pub proxy_topology_addresses: Option<String>,

    /// Which of --proxy-topology-addresses this instance is (from 0).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        env = "CQLMIRROR_PROXY_TOPOLOGY_INDEX"
    )]
    pub proxy_topology_index: usize,

    /// Tokens each proxy instance owns in the topology drivers see, spread evenly over the
    /// ring (drivers use them for token-aware routing between proxy instances).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 8,
        env = "CQLMIRROR_PROXY_TOPOLOGY_NUM_TOKENS"
    )]
    pub proxy_topology_num_tokens: usize,

    /// The data center drivers see the proxy instances in [default: the primary cluster's].
    #[arg(long, value_name = "NAME", env = "CQLMIRROR_PROXY_TOPOLOGY_DATACENTER")]
    pub proxy_topology_datacenter: Option<String>,

    /// The address drivers see for this instance when --proxy-topology-addresses is not given
    /// [default: the address each client connected to].
    #[arg(long, value_name = "ADDR", env = "CQLMIRROR_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<IpAddr>,

    /// The older proxy's ghost mode: a JSON object from each source node's address to the
    /// proxy address drivers see for it, e.g. '{"10.0.0.1":"10.1.0.1","10.0.0.2":"10.1.0.2"}'
    /// (a value may carry a port: "10.1.0.2:29042"). Drivers then see the primary's nodes
    /// under these addresses; a node missing from the map is left out.
    #[arg(long = "ghostIps", value_name = "JSON", env = "CQLMIRROR_GHOST_IPS")]
    pub ghost_ips: Option<String>,

    /// Log at debug level (per-connection events).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          env = "CQLMIRROR_DEBUG")]
    pub debug: bool,

    /// Log lines as text, or as one JSON object per line (time, level, message, and the
    /// connection's id where there is one) for log collectors.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"],
          env = "CQLMIRROR_LOG_FORMAT")]
    pub log_format: String,
}

/// What a runtime needs beyond the core's [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub listen: std::net::SocketAddr,
    /// A second listener, for plaintext clients beside TLS ones (`--proxy-plain-port`).
    pub plain_listen: Option<std::net::SocketAddr>,
    pub threads: usize,
    pub debug: bool,
    /// One JSON object per log line (`--log-format json`).
    pub log_json: bool,
    /// TLS to clients and to each cluster.
    pub tls: crate::tls::TlsSettings,
    /// The TLS options, to read the files again on SIGHUP.
    pub tls_options: TlsArgs,
    /// `--max-connections` as given; without it, the runtime derives the limit from the
    /// descriptor limit (see [`crate::descriptors`]).
    pub max_connections: Option<usize>,
    /// The metrics, health and admin endpoint.
    pub ops: ops::OpsSettings,
    /// Every option as in force, secrets masked.
    pub effective: effective::EffectiveOptions,
    /// `--config`: read again on SIGHUP.
    pub config_file: Option<std::path::PathBuf>,
    /// `--divergence-log`: a JSON line per divergence.
    pub divergence_log: Option<std::path::PathBuf>,
    /// `--journal-dir` and its settings: the journal of missed writes, when on.
    pub journal: Option<crate::journal::JournalSettings>,
    /// `--replay auto`: the background replayer's settings.
    pub replay: Option<crate::replay::background::AutoSettings>,
}

/// Why the command line could not be parsed.
#[derive(Debug)]
pub enum ParseError {
    /// A usage error, as clap reports it (also `--help` and `--version`).
    Usage(clap::Error),
    /// The config file could not be read or has an unknown key.
    File(String),
}

/// The first line of a password file, without its line ending. The error names the file,
/// never its contents.
pub(crate) fn read_password(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        return Err(format!(
            "the password file {} is empty: put the password on its first line",
            path.display()
        ));
    }
    Ok(password)
}

impl Cli {
    /// Parses the process arguments for the binary named `bin` (`proxy-smol` or `proxy-tokio`),
    /// so that `--help` and `--version` show the name the user typed.
    ///
    /// On a usage error this prints clap's message naming the option and exits with status 2.
    pub fn parse_for(bin: &'static str) -> Self {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        match Self::parse_with_file(bin, &args) {
            Ok(cli) => cli,
            Err(ParseError::Usage(e)) => e.exit(),
            Err(ParseError::File(e)) => {
                eprintln!("{bin}: {e}");
                std::process::exit(2);
            }
        }
    }

    /// Parses `args` (the binary's name first) with the config file they name, if any.
    pub fn parse_with_file(
        bin: &'static str,
        args: &[std::ffi::OsString],
    ) -> Result<Self, ParseError> {
        let command = Self::command().name(bin).bin_name(bin).after_help(format!(
            "A running proxy is steered through its admin API: `{bin} admin --help` (e.g. `{bin} admin set-primary target`); writes the secondary missed (--journal-dir) are applied to it with `{bin} replay --help`."
        ));
        let given = file::given(&command, args);
        let path = given
            .as_ref()
            .and_then(|g| g.get_one::<std::path::PathBuf>("config").cloned());
        let (args, from_file) = match (path, given) {
            (Some(path), Some(given)) => {
                let options = file::read(&path, &command).map_err(ParseError::File)?;
                // The options the command line or the environment set win over the file's.
                file::merge(args, &options, |id| {
                    matches!(
                        given.value_source(id),
                        Some(
                            clap::parser::ValueSource::CommandLine
                                | clap::parser::ValueSource::EnvVariable
                        )
                    )
                })
            }
            _ => (args.to_vec(), Vec::new()),
        };
        let matches = command
            .clone()
            .try_get_matches_from(&args)
            .map_err(ParseError::Usage)?;
        let mut cli = Self::from_arg_matches(&matches).map_err(ParseError::Usage)?;
        cli.effective = effective::EffectiveOptions::from_matches(&command, &matches, &from_file);
        Ok(cli)
    }

    /// Turns the options into settings; the error names the option and the fix.
    pub fn settings(self, default_threads: usize) -> Result<Settings, String> {
        let source = Endpoint::parse_list(&self.source, self.source_port)
            .map_err(|e| format!("SOURCE: {e}"))?;
        let target = Endpoint::parse_list(&self.target, self.target_port)
            .map_err(|e| format!("TARGET: {e}"))?;
        let mut config = Config::new(source, target);
        config.wait = if self.wait {
            WaitPolicy::Both
        } else {
            WaitPolicy::Primary
        };
        config.write_buffer_size = self.write_buffer_size;
        config.wait_timeout = self.wait_timeout;
        config.idle_timeout =
            (self.tcp_idle_time_out > 0).then(|| Duration::from_secs(self.tcp_idle_time_out));
        config.request_timeout = self.request_timeout;
        config.connect_timeout = self.connect_timeout;
        config.handshake_timeout = self.handshake_timeout;
        config.max_in_flight = self.max_in_flight;
        config.ready_without_secondary = self.ops.ready_without_secondary;
        self.reads.apply(&mut config)?;
        self.functions.apply(&mut config);
        self.writes.apply(&mut config);
        let journal = self.journal.apply(&mut config)?;
        if self.max_connections == Some(0) {
            return Err("--max-connections must be at least 1".into());
        }
        config.frame_timeout = self.frame_timeout;
        if !self.protocol_version.is_empty() {
            let mut versions = self.protocol_version;
            versions.sort();
            versions.dedup();
            config.protocol_versions = versions;
        }
        config.max_frame_size = self.max_frame_size;
        config.dest_close = self.dest_close;
        config.prepared_cache_size = self.prepared_cache_size;
        config.schema_agreement_timeout = self.schema_agreement_timeout;
        config.source.data_center = self.source_dc.clone();
        config.target.data_center = self.target_dc.clone();
        config.dc_map = self.dc_map.clone();
        for (cluster, username, password, file) in [
            (
                &mut config.source,
                self.source_username,
                self.source_password,
                &self.source_password_file,
            ),
            (
                &mut config.target,
                self.target_username,
                self.target_password,
                &self.target_password_file,
            ),
        ] {
            let password = match (password, file) {
                (Some(password), _) => Some(password),
                (None, Some(file)) => Some(read_password(file)?),
                (None, None) => None,
            };
            if let (Some(username), Some(password)) = (username, password) {
                cluster.credentials = Some(Credentials {
                    username,
                    password: Secret::new(password),
                });
            }
        }
        config.topology = match &self.ghost_ips {
            Some(json) => {
                TopologyMode::Ghost(parse_ghost_map(json).map_err(|e| format!("--ghostIps: {e}"))?)
            }
            None => TopologyMode::Virtual(VirtualTopology {
                instances: match &self.proxy_topology_addresses {
                    Some(list) => parse_instances(list, self.proxy_port)
                        .map_err(|e| format!("--proxy-topology-addresses: {e}"))?,
                    None => Vec::new(),
                },
                index: self.proxy_topology_index,
                advertise: self.advertise_address,
                num_tokens: self.proxy_topology_num_tokens,
                data_center: self.proxy_topology_datacenter.clone(),
            }),
        };
        config.validate()?;
        let threads = self.threads.unwrap_or(default_threads);
        if threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        let tls = self.tls.settings()?;
        let replay = self.replay.settings(journal.as_ref(), &config, &tls)?;
        let plain_port = match self.proxy_plain_port {
            Some(_) if tls.clients.is_none() => {
                return Err("--proxy-plain-port is a plaintext listener beside the TLS one: give --proxy-pem-certfile and --proxy-pem-keyfile (or --proxy-pkcs12) too (without them every client is plaintext already)".into());
            }
            Some(port) if port == self.proxy_port => {
                return Err(format!(
                    "--proxy-plain-port {port} is --proxy-port too: give the plaintext listener a port of its own"
                ));
            }
            other => other,
        };
        Ok(Settings {
            config,
            listen: std::net::SocketAddr::new(self.listen_address, self.proxy_port),
            plain_listen: plain_port
                .map(|port| std::net::SocketAddr::new(self.listen_address, port)),
            threads,
            debug: self.debug,
            log_json: self.log_format == "json",
            tls,
            tls_options: self.tls.clone(),
            ops: self.ops.settings()?,
            effective: self.effective.clone(),
            config_file: self.config.clone(),
            divergence_log: self.reads.divergence_log.clone(),
            journal,
            replay,
            max_connections: self.max_connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("proxy").chain(args.iter().copied()))
    }

    #[test]
    fn older_proxy_boolean_syntax() {
        assert!(parse(&["a", "b"]).unwrap().wait);
        assert!(!parse(&["--wait", "false", "a", "b"]).unwrap().wait);
        assert!(!parse(&["--wait=false", "a", "b"]).unwrap().wait);
        assert!(parse(&["a", "b", "--wait"]).unwrap().wait);
        assert!(
            parse(&["a", "b", "--dest-close", "true"])
                .unwrap()
                .dest_close
        );
        assert!(
            parse(&["--debug", "a", "b"]).is_err(),
            "a bare flag before positionals eats one"
        );
    }

    #[test]
    fn read_options() {
        use cqlmirror_core::config::Upstream;
        use cqlmirror_core::routing::ReadMode;
        let s = parse(&["a", "b"]).unwrap().settings(2).unwrap();
        assert_eq!(s.config.primary, Upstream::Source);
        assert_eq!(s.config.read_mode, ReadMode::Primary);
        assert!(s.config.filter_tables.is_none());
        let s = parse(&[
            "a",
            "b",
            "--primary",
            "target",
            "--read-mode",
            "shadow",
            "--shadow-sample",
            "0.25",
            "--shadow-max-in-flight",
            "16",
            "--filter-tables",
            r"shop\.audit_.*",
            "--divergence-samples",
            "5",
            "--divergence-log",
            "/tmp/d.jsonl",
        ])
        .unwrap()
        .settings(2)
        .unwrap();
        assert_eq!(s.config.primary, Upstream::Target);
        assert_eq!(s.config.read_mode, ReadMode::Shadow);
        assert_eq!(s.config.shadow_sample, 0.25);
        assert_eq!(s.config.shadow_max_in_flight, 16);
        assert_eq!(s.config.divergence_samples, 5);
        assert_eq!(s.config.filter_tables.unwrap().pattern(), r"shop\.audit_.*");
        assert_eq!(s.divergence_log.unwrap().to_str(), Some("/tmp/d.jsonl"));

        let error = parse(&["a", "b", "--filter-tables", "shop.("])
            .unwrap()
            .settings(2)
            .unwrap_err();
        assert!(
            error.starts_with("--filter-tables 'shop.(' is not a valid regular expression"),
            "{error}"
        );
        let error = parse(&["a", "b", "--shadow-sample", "2"])
            .unwrap()
            .settings(2)
            .unwrap_err();
        assert!(
            error.starts_with("--shadow-sample 2 is out of range"),
            "{error}"
        );
        let error = parse(&["a", "b", "--read-mode", "sometimes"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("[possible values: primary, shadow, compare]"),
            "{error}"
        );
        let error = parse(&["a", "b", "--primary", "both"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("[possible values: source, target]"),
            "{error}"
        );
    }

    #[test]
    fn settings_from_options() {
        let cli = parse(&[
            "10.0.0.1,10.0.0.2:9043",
            "t1",
            "--target-port",
            "9142",
            "--protocol-version",
            "4",
            "--protocol-version",
            "v3",
            "--write-buffer-size",
            "64KiB",
            "--tcp-idle-time-out",
            "30",
            "--request-timeout",
            "500ms",
            "--target-username",
            "u",
            "--target-password",
            "p",
            "--max-connections",
            "500",
            "--max-in-flight",
            "128",
            "--handshake-timeout",
            "4s",
            "--frame-timeout",
            "1m",
        ])
        .unwrap();
        let s = cli.settings(2).unwrap();
        assert_eq!(s.max_connections, Some(500));
        assert_eq!(s.config.max_in_flight, 128);
        assert_eq!(s.config.handshake_timeout, Duration::from_secs(4));
        assert_eq!(s.config.frame_timeout, Duration::from_secs(60));
        assert_eq!(s.config.source.contact_points.len(), 2);
        assert_eq!(s.config.source.contact_points[1].port, 9043);
        assert_eq!(s.config.target.contact_points[0].port, 9142);
        assert_eq!(
            s.config.protocol_versions,
            vec![ProtocolVersion::V3, ProtocolVersion::V4]
        );
        assert_eq!(s.config.write_buffer_size, 65536);
        assert_eq!(s.config.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.config.request_timeout, Duration::from_millis(500));
        assert_eq!(s.config.target.credentials.as_ref().unwrap().username, "u");
        assert_eq!(s.threads, 2);
        assert_eq!(s.listen.port(), 29042);
    }

    #[test]
    fn passwords_from_files() {
        let dir = std::env::temp_dir().join(format!("cqlmirror-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("target-password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let path = file.to_str().unwrap();
        let s = parse(&[
            "a",
            "b",
            "--target-username",
            "u",
            "--target-password-file",
            path,
        ])
        .unwrap()
        .settings(1)
        .unwrap();
        let credentials = s.config.target.credentials.unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.password.expose()),
            ("u", "s3cret")
        );
        // Never both, never without the username.
        assert!(
            parse(&[
                "a",
                "b",
                "--target-username",
                "u",
                "--target-password",
                "p",
                "--target-password-file",
                path
            ])
            .is_err()
        );
        assert!(parse(&["a", "b", "--target-password-file", path]).is_err());
        std::fs::write(&file, "").unwrap();
        let e = parse(&[
            "a",
            "b",
            "--source-username",
            "u",
            "--source-password-file",
            path,
        ])
        .unwrap()
        .settings(1)
        .unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_option() {
        let e = parse(&["a", "b", "--protocol-version", "6"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--protocol-version") && e.contains("use 3, 4 or 5"),
            "{e}"
        );
        let e = parse(&["a", "b", "--target-username", "u"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--target-password"), "{e}");
        let e = parse(&["a:x", "b"]).unwrap().settings(1).unwrap_err();
        assert!(e.starts_with("SOURCE: invalid port 'x'"), "{e}");
        for (option, value, expected) in [
            (
                "--max-in-flight",
                "40000",
                "--max-in-flight must be from 1 to 32768",
            ),
            (
                "--max-connections",
                "0",
                "--max-connections must be at least 1",
            ),
            (
                "--handshake-timeout",
                "0s",
                "--handshake-timeout must be greater than zero",
            ),
        ] {
            let e = parse(&["a", "b", option, value])
                .unwrap()
                .settings(1)
                .unwrap_err();
            assert!(e.contains(expected), "{e}");
        }
        let e = parse(&["a", "b", "--proxy-plain-port", "9100"])
            .unwrap()
            .settings(1)
            .unwrap_err();
        assert!(
            e.contains("--proxy-plain-port is a plaintext listener beside the TLS one"),
            "{e}"
        );
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls");
        let (cert, key) = (format!("{dir}/server.pem"), format!("{dir}/server.key"));
        let tls = ["--proxy-pem-certfile", &cert, "--proxy-pem-keyfile", &key];
        let e = parse(
            &[
                &["a", "b", "-p", "9100", "--proxy-plain-port", "9100"][..],
                &tls,
            ]
            .concat(),
        )
        .unwrap()
        .settings(1)
        .unwrap_err();
        assert!(e.contains("is --proxy-port too"), "{e}");
        let s = parse(&[&["a", "b", "--proxy-plain-port", "9100"][..], &tls].concat())
            .unwrap()
            .settings(1)
            .unwrap();
        assert_eq!(s.plain_listen.map(|a| a.port()), Some(9100));
        let e = parse(&["a", "b", "--target-tls", "--disable-target-tls"])
            .unwrap()
            .settings(1)
            .unwrap_err();
        assert!(e.contains("--disable-target-tls contradicts"), "{e}");
        // The older proxy's switch alone: plaintext, as asked.
        let s = parse(&["a", "b", "--disable-source-tls"])
            .unwrap()
            .settings(1)
            .unwrap();
        assert!(
            s.tls
                .backend(cqlmirror_core::config::Upstream::Source)
                .is_none()
        );
        // PKCS#12 instead of PEM: password from a file, or the option; never both formats.
        let p12 = format!("{dir}/server.p12");
        let password_file = std::env::temp_dir().join(format!("p12-{}", std::process::id()));
        std::fs::write(&password_file, "test-only\n").unwrap();
        let password_file = password_file.to_str().unwrap();
        let with_file = [
            "--proxy-pkcs12",
            &p12,
            "--proxy-pkcs12-password-file",
            password_file,
        ];
        let s = parse(&[&["a", "b"][..], &with_file].concat())
            .unwrap()
            .settings(1)
            .unwrap();
        assert!(s.tls.clients.is_some());
        let e = parse(&[
            "a",
            "b",
            "--proxy-pkcs12",
            &p12,
            "--proxy-pkcs12-password",
            "nope",
        ])
        .unwrap()
        .settings(1)
        .unwrap_err();
        assert!(e.contains("wrong password") && !e.contains("nope"), "{e}");
        let e = parse(&[&["a", "b", "--proxy-pkcs12", &p12][..], &tls].concat())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be used with"), "{e}");
        let _ = std::fs::remove_file(password_file);
        let e = parse(&["a", "b", "--write-buffer-size", "1T"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown size unit"), "{e}");
    }

    #[test]
    fn topology_options() {
        let s = parse(&[
            "a",
            "b",
            "--proxy-topology-addresses",
            "10.0.0.1,10.0.0.2:9043,[::1]:29042",
            "--proxy-topology-index",
            "2",
            "--dc-map",
            "dc1=east,dc2=west",
            "--source-dc",
            "dc1",
        ])
        .unwrap()
        .settings(1)
        .unwrap();
        let TopologyMode::Virtual(v) = &s.config.topology else {
            panic!("virtual topology expected");
        };
        assert_eq!(
            v.instances
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.0.0.1:29042", "10.0.0.2:9043", "[::1]:29042"]
        );
        assert_eq!(v.index, 2);
        assert_eq!(
            s.config.dc_map,
            vec![("dc1".into(), "east".into()), ("dc2".into(), "west".into())]
        );
        assert_eq!(s.config.source.data_center.as_deref(), Some("dc1"));

        let e = parse(&[
            "a",
            "b",
            "--proxy-topology-addresses",
            "10.0.0.1",
            "--proxy-topology-index",
            "1",
        ])
        .unwrap()
        .settings(1)
        .unwrap_err();
        assert!(
            e.contains("--proxy-topology-index 1 is out of range"),
            "{e}"
        );

        let s = parse(&[
            "a",
            "b",
            "--ghostIps",
            r#"{"10.0.0.1":"10.1.0.1","10.0.0.2":"10.1.0.2:9043"}"#,
        ])
        .unwrap()
        .settings(1)
        .unwrap();
        let TopologyMode::Ghost(map) = &s.config.topology else {
            panic!("ghost mode expected");
        };
        assert_eq!(map.len(), 2);
        assert_eq!(
            map.get("10.0.0.2".parse().unwrap()).unwrap().port,
            Some(9043)
        );
        let e = parse(&["a", "b", "--ghostIps", "10.0.0.1=10.1.0.1"])
            .unwrap()
            .settings(1)
            .unwrap_err();
        assert!(e.starts_with("--ghostIps: not a JSON object"), "{e}");
        let e = parse(&["a", "b", "--dc-map", "dc1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SOURCE_DC=TARGET_DC"), "{e}");
        assert!(
            parse(&[
                "a",
                "b",
                "--ghostIps",
                "{}",
                "--proxy-topology-addresses",
                "x"
            ])
            .is_err()
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("200us").unwrap(), Duration::from_micros(200));
        assert_eq!(parse_duration("50µs").unwrap(), Duration::from_micros(50));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn help_is_complete() {
        Cli::command().debug_assert();
    }
}
