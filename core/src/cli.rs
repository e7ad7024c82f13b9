//! The command line shared by `proxy-smol` and `proxy-tokio`.
//!
//! One definition serves both binaries so that they accept exactly the same options.

use clap::{CommandFactory, FromArgMatches, Parser};

/// Dual-write proxy for Apache Cassandra (CQL native protocol) live migrations.
///
/// Every write sent to the proxy reaches both the SOURCE cluster (in use today) and the TARGET
/// cluster (being migrated to).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    /// Source cluster contact point: `host[:port]` or a comma-separated list of them.
    #[arg(value_name = "SOURCE")]
    pub source: String,

    /// Target cluster contact point: `host[:port]` or a comma-separated list of them.
    #[arg(value_name = "TARGET")]
    pub target: String,

    /// Port the proxy listens on for CQL clients.
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 29042,
        env = "CQLMIRROR_PROXY_PORT"
    )]
    pub proxy_port: u16,
}

impl Cli {
    /// Parses the process arguments for the binary named `bin` (`proxy-smol` or `proxy-tokio`),
    /// so that `--help` and `--version` show the name the user typed.
    ///
    /// On a usage error this prints clap's message naming the option and exits with status 2.
    pub fn parse_for(bin: &'static str) -> Self {
        let matches = Self::command().name(bin).bin_name(bin).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}
