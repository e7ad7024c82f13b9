//! The admin API: what the proxy does now, and the switches an operator turns during a
//! migration without a restart. A change applies to every request received from then on,
//! on every open connection; requests in flight finish on the route they started with.
//!
//! - `GET /admin/status`: primary, wait policy, readiness, connections.
//! - `GET /admin/config`: every option in force and where it came from, secrets masked.
//! - `POST /admin/primary` with body `source` or `target`.
//! - `POST /admin/wait` with body `both` (`true`) or `primary` (`false`): whether clients wait
//!   for the secondary's answer (`--wait`).
//!
//! With `--admin-token`, each call needs `Authorization: Bearer TOKEN`.

use cqlmirror_core::config::{Upstream, WaitPolicy};
use tiny_http::Method;

use super::{Ops, Reply};

pub fn handle(
    ops: &Ops,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> Reply {
    if let Some(token) = &ops.settings.admin_token {
        let given = authorization.and_then(|a| a.strip_prefix("Bearer "));
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.expose().as_bytes()))
        {
            return Reply::error(
                401,
                "the admin API needs the token given to --admin-token: send Authorization: Bearer TOKEN",
            );
        }
    }
    match (method, path) {
        (Method::Get, "/admin/status") => Reply::json(200, status(ops)),
        (Method::Get, "/admin/config") => Reply::json(200, ops.effective.to_json()),
        (Method::Post | Method::Put, "/admin/primary") => set_primary(ops, body),
        (Method::Post | Method::Put, "/admin/wait") => set_wait(ops, body),
        (_, "/admin/status" | "/admin/config" | "/admin/primary" | "/admin/wait") => Reply::error(
            405,
            "GET /admin/status and /admin/config; POST /admin/primary and /admin/wait",
        ),
        _ => Reply::error(
            404,
            "no such admin call: /admin/status, /admin/config, /admin/primary, /admin/wait",
        ),
    }
}

fn wait_name(wait: WaitPolicy) -> &'static str {
    match wait {
        WaitPolicy::Both => "both",
        WaitPolicy::Primary => "primary",
    }
}

fn status(ops: &Ops) -> String {
    let proxy = &ops.proxy;
    serde_json::json!({
        "binary": ops.binary,
        "version": cqlmirror_core::VERSION,
        "primary": proxy.primary().name(),
        "wait": wait_name(proxy.wait_policy()),
        "client_connections": proxy.admission().open(),
        "readiness": super::readiness_json(&proxy.readiness()),
    })
    .to_string()
}

fn set_primary(ops: &Ops, body: &str) -> Reply {
    let upstream = match body {
        "source" => Upstream::Source,
        "target" => Upstream::Target,
        other => {
            return Reply::error(
                400,
                &format!("primary '{other}': send `source` or `target` as the body"),
            );
        }
    };
    let previous = ops.proxy.primary();
    ops.proxy.set_primary(upstream);
    if previous != upstream {
        log::warn!(
            "admin API: the {upstream} cluster is now primary (was the {previous}): clients get its answers from their next request on"
        );
    }
    Reply::json(
        200,
        serde_json::json!({ "primary": upstream.name(), "previous": previous.name() }).to_string(),
    )
}

fn set_wait(ops: &Ops, body: &str) -> Reply {
    let wait = match body {
        "both" | "true" => WaitPolicy::Both,
        "primary" | "false" => WaitPolicy::Primary,
        other => {
            return Reply::error(
                400,
                &format!(
                    "wait policy '{other}': send `both` (clients wait for both clusters, --wait true) or `primary` (--wait false)"
                ),
            );
        }
    };
    let previous = ops.proxy.wait_policy();
    ops.proxy.set_wait_policy(wait);
    if previous != wait {
        log::warn!(
            "admin API: wait policy now {} (was {})",
            wait_name(wait),
            wait_name(previous)
        );
    }
    Reply::json(
        200,
        serde_json::json!({ "wait": wait_name(wait), "previous": wait_name(previous) }).to_string(),
    )
}

/// Compares without leaking, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
