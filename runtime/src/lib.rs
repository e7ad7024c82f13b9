//! What `proxy-smol` and `proxy-tokio` share: the command line, logging, the accept loop, the
//! connection loop and shutdown, written once over the small [`Runtime`] trait.
//!
//! A binary is an adapter that implements [`Runtime`] for its async runtime and calls
//! [`main`]. Every protocol decision is made in `cqlmirror-core`; everything here is I/O
//! plumbing, identical for every runtime by construction.
//!
//! - [`cli`]: the options, their parsing and their checks.
//! - [`runtime`]: the traits an adapter implements (tasks, TCP with readiness, timers).
//! - `connection`: one client connection and its two backend connections.
//! - `control`: the control connection to each cluster (topology, node status).
//! - [`descriptors`]: the descriptor limit, raised at start-up.
//! - [`journal`]: the journal of missed writes on disk: its writer and its reader.
//! - `serve`: the accept loop, the drain at shutdown, the wall clock.
//! - [`shutdown`]: SIGTERM and Ctrl-C.
//! - [`logging`]: log set-up and the log line of each session event.
//! - [`ops`]: the metrics, health and admin endpoint.
#![forbid(unsafe_code)]

pub mod cli;
mod connection;
mod control;
pub mod descriptors;
pub mod journal;
pub mod logging;
pub mod ops;
pub mod replay;
pub mod runtime;
mod serve;
pub mod shutdown;
pub mod tls;
pub mod workers;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use cqlmirror_core::proxy::{Proxy, WallClock};

pub use cli::{Cli, Settings};
pub use runtime::{Listener, Runtime, Stream, Timer};
pub use serve::DRAIN_TIMEOUT;
pub use shutdown::Shutdown;
pub use workers::Workers;

/// How often the TLS files are checked for changes.
const TLS_FILES_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// The whole program of the binary named `bin`: parses the command line, starts the runtime
/// and serves until SIGTERM or Ctrl-C. Exit status 2 for a usage error, 1 when the proxy
/// cannot start (e.g. its port is taken).
pub fn main<R: Runtime>(bin: &'static str) -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("admin") => return ops::client::main(bin, args.into_iter().skip(1).collect()),
        Some("replay") => return replay::main(bin, args.into_iter().skip(1).collect()),
        // `BIN report ...` is `BIN admin report ...`: the command operators reach for most.
        Some("report") => {
            let admin = ["admin".to_owned(), "report".to_owned()]
                .into_iter()
                .chain(args.into_iter().skip(2))
                .collect();
            return ops::client::main(bin, admin);
        }
        _ => {}
    }
    let mut settings = match Cli::parse_for(bin).settings(cli::default_threads()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{bin}: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(settings.debug, settings.log_json);
    if let Some(path) = &settings.divergence_log {
        if let Err(e) = ops::report::open_log(path) {
            eprintln!("{bin}: {e}");
            return ExitCode::from(2);
        }
    }
    let descriptors = descriptors::raise_limit();
    settings.config.max_connections = settings
        .max_connections
        .unwrap_or_else(|| descriptors.max_connections());
    let clock = WallClock::new(Instant::now(), SystemTime::now());
    let proxy = match Proxy::new(settings.config.clone(), clock, seed()) {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("{bin}: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = ops::metrics::install() {
        eprintln!("{bin}: {e}");
        return ExitCode::from(1);
    }
    if let Some(journal) = settings.journal.clone() {
        let (dir, fsync, max) = (journal.dir.clone(), journal.fsync, journal.max_size);
        match journal::Journal::open(journal) {
            Ok(journal) => {
                let stats = journal.stats();
                if journal::installed::install(journal).is_err() {
                    eprintln!("{bin}: --journal-dir: a journal is open already");
                    return ExitCode::from(1);
                }
                ops::metrics::zero_journal();
                log::info!(
                    "journaling writes the secondary misses in {} (fsync {}, at most {max} bytes; {} bytes in {} segments there already)",
                    dir.display(),
                    fsync.name(),
                    stats.bytes,
                    stats.segments
                );
            }
            Err(e) => {
                eprintln!("{bin}: --journal-dir {}: {e}", dir.display());
                return ExitCode::from(1);
            }
        }
    }
    let endpoint = match ops::Endpoint::start(ops::Ops {
        proxy: Arc::clone(&proxy),
        binary: bin,
        settings: settings.ops.clone(),
        effective: settings.effective.clone(),
    }) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            eprintln!(
                "{bin}: cannot serve metrics on {}: {e}; pick another --metrics-port (0: any free port) or --metrics-address",
                settings.ops.listen
            );
            return ExitCode::from(1);
        }
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        eprintln!("{bin}: cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    let replayer = match (settings.replay.clone(), journal::installed::installed()) {
        (Some(auto), Some(journal)) => {
            ops::metrics::zero_replay();
            let proxy = Arc::clone(&proxy);
            let reachable = move |cluster: cqlmirror_core::config::Upstream| {
                proxy.readiness().clusters[cluster.index()].is_reachable()
            };
            match replay::background::Replayer::start(auto, journal, shutdown.clone(), reachable) {
                Ok(replayer) => Some(replayer),
                Err(e) => {
                    eprintln!("{bin}: --replay auto: cannot start the replay thread: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        _ => None,
    };
    let served = R::run(settings.threads, |runtime| async move {
        let mut listeners = Vec::new();
        let plain = settings
            .plain_listen
            .map(|a| (a, true, "--proxy-plain-port"));
        for (address, plaintext, option) in
            std::iter::once((settings.listen, false, "--proxy-port")).chain(plain)
        {
            match runtime.bind(address) {
                Ok(listener) => listeners.push(serve::Listening {
                    listener,
                    plaintext,
                }),
                Err(e) => {
                    eprintln!(
                        "{bin}: cannot listen on {address}: {e}; pick another {option} or --listen-address"
                    );
                    return ExitCode::from(1);
                }
            }
        }
        log::info!(
            "{bin} {}: {}; {}; {}",
            cqlmirror_core::VERSION,
            cli::describe(&settings),
            settings.tls.describe(),
            descriptors.describe()
        );
        log::info!(
            "metrics on http://{0}/metrics, health on http://{0}/health/readiness, admin API on http://{0}/admin/status{1}",
            endpoint.address,
            if settings.ops.admin_token.is_some() {
                " (token required)"
            } else {
                ""
            }
        );
        if !endpoint.address.ip().is_loopback() && settings.ops.admin_token.is_none() {
            log::warn!(
                "the admin API on {} can switch the primary and is open to the network without a token: set --admin-token, or --metrics-address 127.0.0.1",
                endpoint.address
            );
        }
        for upstream in cqlmirror_core::config::Upstream::BOTH {
            if settings.tls.backend(upstream).is_some_and(|b| b.insecure) {
                log::warn!(
                    "--{upstream}-tls-insecure: the {upstream} cluster's certificates are NOT checked: anyone on the network path can impersonate it and read every request"
                );
            }
        }
        if let Some(path) = &settings.config_file {
            if let Err(e) =
                ops::reload::on_sighup(path.clone(), settings.effective.clone(), Arc::clone(&proxy))
            {
                log::warn!("cannot read the config file again on SIGHUP: {e}");
            }
        }
        let tls = tls::TlsHolder::new(settings.tls.clone());
        if let Err(e) = tls.reload_on_sighup(settings.tls_options.clone()) {
            log::warn!("cannot reload TLS files on SIGHUP: {e}");
        }
        if let Err(e) = tls.reload_on_change(settings.tls_options.clone(), TLS_FILES_CHECK) {
            log::warn!("cannot watch the TLS files for changes: {e}");
        }
        let served = serve::serve(runtime, listeners, proxy, tls, shutdown).await;
        endpoint.stop();
        if let Some(replayer) = replayer {
            // It saw the shutdown request when the drain began; this waits for its
            // checkpoint to be saved.
            replayer.stop();
        }
        if let Some(journal) = journal::installed::installed() {
            // Everything the sessions appended is on disk before the process ends.
            match journal.flush() {
                Ok(()) => log::info!(
                    "journal {}: {} records written, flushed",
                    journal.dir().display(),
                    journal.stats().appended
                ),
                Err(e) => log::error!("journal {}: cannot flush: {e}", journal.dir().display()),
            }
        }
        served
    });
    served.unwrap_or_else(|e| {
        eprintln!("{bin}: cannot start the runtime: {e}");
        ExitCode::from(1)
    })
}

/// A seed for the proxy's random values that differs between processes and starts: the
/// standard library's per-process random hash keys (drawn from the operating system), mixed
/// with the time and the process id.
fn seed() -> cqlmirror_core::entropy::Seed {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    cqlmirror_core::entropy::Seed(hasher.finish())
}
