//! The operations endpoint, one HTTP port (`--metrics-port`) for both binaries: Prometheus
//! metrics, health checks and the admin API.
//!
//! It runs on a thread of its own with `tiny_http` (a small blocking HTTP/1.1 server, no
//! async runtime), so that it is the same in both binaries and a slow scrape never takes a
//! worker thread from the clients. What it shows and changes lives in the core's [`Proxy`].
//!
//! - `GET /metrics`: the Prometheus exposition ([`metrics`]).
//! - `GET /health/liveness`: 200 while the process serves.
//! - `GET /health/readiness`: 200 when ready, 503 when not, with a JSON body saying why.
//! - The admin API ([`admin`]): `GET /admin/status`, `GET /admin/config`,
//!   `POST /admin/primary`, `POST /admin/wait`.

pub mod admin;
pub mod client;
pub mod metrics;
pub mod reload;
pub mod report;
pub mod requests;
pub mod traffic;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use cqlmirror_core::config::Upstream;
use cqlmirror_core::health::{ClusterState, Readiness};
use cqlmirror_core::proxy::Proxy;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::cli::effective::EffectiveOptions;
use crate::cli::ops::OpsSettings;

/// What the endpoint serves from.
#[derive(Debug)]
pub struct Ops {
    pub proxy: Arc<Proxy>,
    pub binary: &'static str,
    pub settings: OpsSettings,
    pub effective: EffectiveOptions,
}

/// The endpoint, running.
pub struct Endpoint {
    pub address: SocketAddr,
    server: Arc<Server>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds the port and serves on a thread of its own until [`Endpoint::stop`].
    pub fn start(ops: Ops) -> io::Result<Self> {
        let server = Server::http(ops.settings.listen).map_err(io::Error::other)?;
        let address = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("the endpoint has no IP address"))?;
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        thread::Builder::new()
            .name("ops-endpoint".into())
            .spawn(move || {
                // `recv` fails only once the server is unblocked (shutdown).
                while let Ok(request) = serving.recv() {
                    handle(&ops, request);
                }
            })?;
        Ok(Self { address, server })
    }

    pub fn stop(&self) {
        self.server.unblock();
    }
}

/// A response: status, content type and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "application/json",
            body,
        }
    }

    pub fn error(status: u16, message: &str) -> Self {
        Self::json(status, serde_json::json!({ "error": message }).to_string())
    }
}

/// The proxy's readiness, and the journal's: a journal that refuses missed writes (its
/// `--journal-max-size` reached, or its disk failing) makes the proxy not ready, so that the
/// loss is seen where deployments look, besides the metric and the log.
pub fn readiness(proxy: &cqlmirror_core::proxy::Proxy) -> Readiness {
    let mut readiness = proxy.readiness();
    if let Some(journal) = crate::journal::installed::installed() {
        let stats = journal.stats();
        if stats.full {
            readiness.ready = false;
            readiness.reasons.push(format!(
                "the journal in {} reached --journal-max-size: writes the secondary misses are not journaled; run replay (it releases what it applied) or raise --journal-max-size",
                journal.dir().display()
            ));
        }
        if stats.failing {
            readiness.ready = false;
            readiness.reasons.push(format!(
                "the journal in {} cannot write (see the log): writes the secondary misses are not journaled",
                journal.dir().display()
            ));
        }
    }
    readiness
}

/// The journal's part of `GET /admin/status`, `null` without `--journal-dir`.
pub fn journal_json() -> serde_json::Value {
    let Some(journal) = crate::journal::installed::installed() else {
        return serde_json::Value::Null;
    };
    let stats = journal.stats();
    let mut refused = serde_json::Map::new();
    for (reason, n) in crate::journal::installed::refusals(&stats) {
        refused.insert(reason.to_owned(), n.into());
    }
    serde_json::json!({
        "dir": journal.dir().display().to_string(),
        "records": stats.appended,
        "bytes": stats.bytes,
        "segments": stats.segments,
        "refused": refused,
        "full": stats.full,
        "failing": stats.failing,
        "oldest_seconds": oldest_seconds(&stats),
    })
}

/// The background replayer's part of `GET /admin/status`: `manual` without `--replay auto`,
/// `null` without `--journal-dir`.
pub fn replay_json() -> serde_json::Value {
    if crate::journal::installed::installed().is_none() {
        return serde_json::Value::Null;
    }
    let Some(replay) = crate::replay::background::status() else {
        return serde_json::json!({ "mode": "manual" });
    };
    let mut records = serde_json::Map::new();
    for (result, n) in replay.results() {
        records.insert(result.to_owned(), n.into());
    }
    serde_json::json!({
        "mode": "auto",
        "state": replay.state.name(),
        "checkpoint": replay.checkpoint.to_string(),
        "records": records,
        "backlog_bytes": replay.backlog_bytes,
        "released_segments": replay.released,
    })
}

/// Seconds since the oldest segment holding records was created (0 when none does).
pub fn oldest_seconds(stats: &crate::journal::JournalStats) -> f64 {
    stats.oldest_micros.map_or(0.0, |oldest| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        (now.saturating_sub(oldest).max(0) as f64) / 1e6
    })
}

/// The readiness endpoint's body: ready or not, each cluster's state, and the reasons.
pub fn readiness_json(readiness: &Readiness) -> serde_json::Value {
    let mut clusters = serde_json::Map::new();
    for upstream in Upstream::BOTH {
        let state = &readiness.clusters[upstream.index()];
        let mut entry = serde_json::json!({ "state": state.name() });
        if let ClusterState::Unreachable(detail) = state {
            entry["detail"] = detail.as_str().into();
        }
        clusters.insert(upstream.name().to_owned(), entry);
    }
    serde_json::json!({
        "ready": readiness.ready,
        "primary": readiness.primary.name(),
        "clusters": clusters,
        "reasons": readiness.reasons,
    })
}

/// The largest request body read (admin commands are a word).
const MAX_BODY: u64 = 4096;

fn handle(ops: &Ops, mut request: Request) {
    let path = request.url().split('?').next().unwrap_or("").to_owned();
    let method = request.method().clone();
    let reply = match (&method, path.as_str()) {
        (Method::Get, "/metrics") => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: metrics::render(&ops.proxy, ops.binary),
        },
        (Method::Get, "/health/liveness") => Reply::json(200, "{\"live\":true}".into()),
        (Method::Get, "/health/readiness") => {
            let readiness = readiness(&ops.proxy);
            Reply::json(
                if readiness.ready { 200 } else { 503 },
                readiness_json(&readiness).to_string(),
            )
        }
        (_, p) if p.starts_with("/admin/") => {
            let authorization = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.as_str().to_owned());
            let mut body = String::new();
            let read = request.as_reader().take(MAX_BODY).read_to_string(&mut body);
            match read {
                Ok(_) => admin::handle(ops, &method, p, authorization.as_deref(), body.trim()),
                Err(_) => Reply::error(400, "the request body is not UTF-8 text"),
            }
        }
        (Method::Get, _) => Reply::error(
            404,
            "no such page: /metrics, /health/liveness, /health/readiness and /admin/... are served",
        ),
        _ => Reply::error(405, "only GET is served here"),
    };
    let content_type =
        Header::from_bytes("Content-Type", reply.content_type).expect("a constant header is valid");
    let response = Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(content_type);
    // A client that went away is its own business.
    let _ = request.respond(response);
}
