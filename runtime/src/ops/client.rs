//! `proxy-smol admin ...` (and `proxy-tokio admin ...`): the admin API's command-line
//! client, so that an operator switches the primary with one command on the proxy's host.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The admin API's client: shows what a running proxy does and switches it at run time.
#[derive(Debug, Parser)]
#[command(
    about = "Talks to a running proxy's admin API (its --metrics-port)",
    after_help = "Examples:\n  proxy-smol admin status\n  proxy-smol admin set-primary target\n  proxy-smol admin set-read-mode shadow\n  proxy-smol report    (the same as: proxy-smol admin report)\n  proxy-smol admin --url http://10.0.0.5:28000 --token-file /run/secrets/admin set-wait primary"
)]
struct AdminCli {
    /// The proxy's endpoint (--metrics-address and --metrics-port of the proxy).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        default_value = "http://127.0.0.1:28000",
        env = "CQLMIRROR_ADMIN_URL"
    )]
    url: String,

    /// The proxy's --admin-token, if it has one. Prefer the environment variable or
    /// --token-file.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "CQLMIRROR_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,

    /// A file holding the token (its first line).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "CQLMIRROR_ADMIN_TOKEN_FILE"
    )]
    token_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Primary, wait policy, readiness and client connections (JSON).
    Status,
    /// Every option in force and where it came from, secrets masked (JSON).
    Config,
    /// Readiness and its reasons (JSON); exit status 1 when not ready.
    Readiness,
    /// Makes SOURCE or TARGET the cluster whose answers clients get, from their next request.
    SetPrimary {
        #[arg(value_parser = ["source", "target"])]
        cluster: String,
    },
    /// Whether clients wait for both clusters (`both`, --wait true) or the primary only
    /// (`primary`, --wait false), from their next request.
    SetWait {
        #[arg(value_parser = ["both", "primary"])]
        policy: String,
    },
    /// How reads are served from the next one on: `primary`, `shadow` or `compare`.
    SetReadMode {
        #[arg(value_parser = ["primary", "shadow", "compare"])]
        mode: String,
    },
    /// The divergence report: what comparing the clusters' answers found, per table, and the
    /// latest differing rows (a table; --json for the API's JSON).
    Report {
        /// Print the JSON the admin API serves.
        #[arg(long)]
        json: bool,
        /// Clear the report after printing it.
        #[arg(long)]
        clear: bool,
    },
}

/// Runs `BIN admin ARGS...` (`args` starts with `admin`).
pub fn main(bin: &'static str, args: Vec<String>) -> ExitCode {
    let cli = match <AdminCli as clap::CommandFactory>::command()
        .bin_name(format!("{bin} admin"))
        .try_get_matches_from(args)
        .and_then(|m| <AdminCli as clap::FromArgMatches>::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(&cli) {
        Ok((ok, body)) => {
            println!("{body}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("{bin} admin: {e}");
            ExitCode::from(1)
        }
    }
}

/// Sends the command; `(whether the proxy said yes, the body)`.
fn run(cli: &AdminCli) -> Result<(bool, String), String> {
    let token = match (&cli.token, &cli.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(crate::cli::read_password(path)?),
        (None, None) => None,
    };
    let base = cli.url.trim_end_matches('/');
    let (method, path, body) = match &cli.command {
        Command::Status => ("GET", "/admin/status", None),
        Command::Config => ("GET", "/admin/config", None),
        Command::Readiness => ("GET", "/health/readiness", None),
        Command::SetPrimary { cluster } => ("POST", "/admin/primary", Some(cluster.as_str())),
        Command::SetWait { policy } => ("POST", "/admin/wait", Some(policy.as_str())),
        Command::SetReadMode { mode } => ("POST", "/admin/read-mode", Some(mode.as_str())),
        Command::Report { .. } => ("GET", "/admin/report", None),
    };
    let url = format!("{base}{path}");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build(),
    );
    let authorization = token.map(|t| format!("Bearer {t}"));
    let response = match (method, body) {
        ("POST", Some(body)) => {
            let mut request = agent.post(&url);
            if let Some(a) = &authorization {
                request = request.header("Authorization", a);
            }
            request.send(body)
        }
        _ => {
            let mut request = agent.get(&url);
            if let Some(a) = &authorization {
                request = request.header("Authorization", a);
            }
            request.call()
        }
    };
    let mut response = response.map_err(|e| {
        format!("{url}: {e} (is the proxy running, with --metrics-port and --metrics-address as --url says?)")
    })?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{url}: cannot read the answer: {e}"))?;
    if let (Command::Report { json, clear }, true) = (&cli.command, status.is_success()) {
        if *clear {
            let mut request = agent.delete(&url);
            if let Some(a) = &authorization {
                request = request.header("Authorization", a);
            }
            request
                .call()
                .map_err(|e| format!("{url}: cannot clear the report: {e}"))?;
        }
        if !json {
            let report: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("{url}: the answer is not the report's JSON: {e}"))?;
            return Ok((true, crate::ops::report::to_table(&report)));
        }
    }
    Ok((status.is_success(), text))
}
