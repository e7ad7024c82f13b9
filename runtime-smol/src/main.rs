//! `proxy-smol`: cqlmirror driven by the smol runtime.

use std::process::ExitCode;

use cqlmirror_core::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse_for("proxy-smol");
    eprintln!(
        "proxy-smol: would proxy {} and {} on port {}, but forwarding is not built yet; \
         only --help and --version work in this version",
        cli.source, cli.target, cli.proxy_port
    );
    ExitCode::from(2)
}
