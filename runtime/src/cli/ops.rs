//! The options of the operations endpoint: metrics, health and the admin API.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use clap::builder::BoolishValueParser;
use cqlmirror_core::config::Secret;

use super::read_password;

/// Metrics, health checks and the admin API, on one HTTP port.
#[derive(Debug, Clone, Args)]
pub struct OpsArgs {
    /// Port of the HTTP endpoint: Prometheus metrics (/metrics), health (/health/liveness,
    /// /health/readiness) and the admin API (/admin/...). 0 picks a free port (logged at
    /// start-up).
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 28000,
        env = "CQLMIRROR_METRICS_PORT"
    )]
    pub metrics_port: u16,

    /// Address of the HTTP endpoint. Loopback by default: the admin API changes what clients
    /// get; to let Prometheus on another machine scrape, listen wider and set --admin-token.
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST),
          env = "CQLMIRROR_METRICS_ADDRESS")]
    pub metrics_address: IpAddr,

    /// A token the admin API requires (`Authorization: Bearer TOKEN`); metrics and health need
    /// none. Prefer the environment variable or --admin-token-file.
    #[arg(long, value_name = "TOKEN", env = "CQLMIRROR_ADMIN_TOKEN", hide_env_values = true,
          value_parser = parse_secret, conflicts_with = "admin_token_file")]
    pub admin_token: Option<Secret>,

    /// A file holding the admin token (its first line).
    #[arg(long, value_name = "FILE", env = "CQLMIRROR_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Report ready (/health/readiness) while the secondary cluster is unreachable: clients
    /// are served by the primary and the writes the secondary misses are counted. Without it,
    /// readiness needs both clusters.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_value = "false",
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          env = "CQLMIRROR_READY_WITHOUT_SECONDARY")]
    pub ready_without_secondary: bool,
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value))
}

/// The endpoint's settings.
#[derive(Debug, Clone)]
pub struct OpsSettings {
    pub listen: SocketAddr,
    pub admin_token: Option<Secret>,
}

impl OpsArgs {
    pub fn settings(&self) -> Result<OpsSettings, String> {
        let admin_token = match (&self.admin_token, &self.admin_token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(Secret::new(
                read_password(path).map_err(|e| format!("--admin-token-file: {e}"))?,
            )),
            (None, None) => None,
        };
        if admin_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            return Err(
                "--admin-token: use at least 16 characters (e.g. `openssl rand -hex 16`)".into(),
            );
        }
        Ok(OpsSettings {
            listen: SocketAddr::new(self.metrics_address, self.metrics_port),
            admin_token,
        })
    }
}
