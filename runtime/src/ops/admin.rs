//! The admin API: what the proxy does now, and the switches an operator turns during a
//! migration without a restart. A change applies to every request received from then on,
//! on every open connection; requests in flight finish on the route they started with.
//!
//! - `GET /admin/status`: primary, wait policy, write order, readiness, connections.
//! - `GET /admin/config`: every option in force and where it came from, secrets masked.
//! - `POST /admin/primary` with body `source` or `target`.
//! - `POST /admin/wait` with body `both` (`true`) or `primary` (`false`): whether clients wait
//!   for the secondary's answer (`--wait`).
//! - `POST /admin/read-mode` with body `primary`, `shadow` or `compare` (`--read-mode`).
//! - `GET /admin/report`: the divergence report (JSON); `DELETE /admin/report` clears it.
//!
//! With `--admin-token`, each call needs `Authorization: Bearer TOKEN`.

use cqlmirror_core::config::{Upstream, WaitPolicy};
use cqlmirror_core::routing::ReadMode;
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
        (Method::Post | Method::Put, "/admin/read-mode") => set_read_mode(ops, body),
        (Method::Get, "/admin/report") => Reply::json(200, super::report::to_json(&ops.proxy)),
        (Method::Delete, "/admin/report") => {
            ops.proxy.divergences().clear();
            log::info!("admin API: the divergence report was cleared");
            Reply::json(200, r#"{"cleared":true}"#.to_owned())
        }
        (
            _,
            "/admin/status" | "/admin/config" | "/admin/primary" | "/admin/wait"
            | "/admin/read-mode" | "/admin/report",
        ) => Reply::error(
            405,
            "GET /admin/status, /admin/config and /admin/report; POST /admin/primary, /admin/wait and /admin/read-mode; DELETE /admin/report",
        ),
        _ => Reply::error(
            404,
            "no such admin call: /admin/status, /admin/config, /admin/primary, /admin/wait, /admin/read-mode, /admin/report",
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
        "read_mode": proxy.read_mode().name(),
        "write_order": proxy.write_order().name(),
        "shadow": {
            "sample": proxy.shadow().fraction(),
            "in_flight": proxy.shadow().in_flight(),
            "max_in_flight": proxy.shadow().max_in_flight(),
            "skipped_at_max": proxy.shadow().skipped(),
        },
        "client_connections": proxy.admission().open(),
        "readiness": super::readiness_json(&super::readiness(proxy)),
        "journal": super::journal_json(),
        "replay": super::replay_json(),
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

fn set_read_mode(ops: &Ops, body: &str) -> Reply {
    let Some(mode) = ReadMode::parse(body) else {
        return Reply::error(
            400,
            &format!("read mode '{body}': send `primary`, `shadow` or `compare` as the body"),
        );
    };
    let previous = ops.proxy.read_mode();
    ops.proxy.set_read_mode(mode);
    if previous != mode {
        log::warn!("admin API: read mode now {mode} (was {previous}), from the next read on");
    }
    Reply::json(
        200,
        serde_json::json!({ "read_mode": mode.name(), "previous": previous.name() }).to_string(),
    )
}

/// Compares without leaking, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
