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
            let readiness = ops.proxy.readiness();
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
