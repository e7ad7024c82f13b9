//! The divergence report as JSON (GET /admin/report, the divergence log) and as the table the
//! `report` command prints.

use std::io::Write as _;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use cqlmirror_core::compare::{DivergenceKind, RowDifference};
use cqlmirror_core::divergence::Divergence;
use cqlmirror_core::proxy::Proxy;
use serde_json::{Value, json};

/// Where divergences go as JSON lines (`--divergence-log`), through a thread of its own so
/// that a slow disk never holds up a connection.
static LOG: OnceLock<SyncSender<String>> = OnceLock::new();
/// Lines the log's queue had no room for.
static LOG_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines queued for the log's thread at most.
const LOG_QUEUE: usize = 4096;

/// Opens (appends to) the divergence log and starts its writer; the error names the option.
pub fn open_log(path: &Path) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("--divergence-log {}: {e}", path.display()))?;
    let (tx, rx) = sync_channel::<String>(LOG_QUEUE);
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("divergence-log".into())
        .spawn(move || {
            let mut out = std::io::LineWriter::new(file);
            let mut failing = false;
            for line in rx {
                match writeln!(out, "{line}") {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        log::error!("--divergence-log {shown}: cannot write: {e}");
                    }
                    Err(_) => {}
                }
            }
        })
        .map_err(|e| format!("--divergence-log: cannot start its writer: {e}"))?;
    let _ = LOG.set(tx);
    Ok(())
}

/// Queues a divergence for the log, if there is one; a full queue drops the line (counted
/// and reported once per thousand) rather than slow the proxy down.
pub fn log_divergence(d: &Divergence) {
    let Some(tx) = LOG.get() else { return };
    match tx.try_send(divergence_json(d).to_string()) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            let n = LOG_DROPPED.fetch_add(1, Ordering::Relaxed);
            if n % 1000 == 0 {
                log::warn!(
                    "--divergence-log cannot keep up: {} divergences not written (the report's counts are complete)",
                    n + 1
                );
            }
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

/// The whole report: totals, counts per table and kind, and the latest differences.
pub fn to_json(proxy: &Proxy) -> String {
    let snapshot = proxy.divergences().snapshot();
    let tables: Vec<Value> = snapshot
        .tables
        .iter()
        .map(|(name, counts)| {
            let mut table = json!({
                "keyspace": name.keyspace,
                "table": name.table,
                "compared": counts.compared,
                "differing": counts.differing,
            });
            for kind in DivergenceKind::ALL {
                table[kind.label()] = json!(counts.by_kind.get(&kind).copied().unwrap_or(0));
            }
            table
        })
        .collect();
    json!({
        "primary": proxy.primary().name(),
        "read_mode": proxy.read_mode().name(),
        "compared": snapshot.compared,
        "differing": snapshot.differing,
        "tables": tables,
        "samples": snapshot.samples.iter().map(divergence_json).collect::<Vec<_>>(),
        "dropped_samples": snapshot.dropped_samples,
        "not_compared_too_large": snapshot.too_large,
    })
    .to_string()
}

/// One divergence, as the report and the divergence log give it.
pub fn divergence_json(d: &Divergence) -> Value {
    let counts: serde_json::Map<String, Value> = d
        .counts
        .iter()
        .map(|(kind, n)| (kind.label().to_owned(), json!(n)))
        .collect();
    json!({
        "at": time(d.at_micros),
        "keyspace": d.table.keyspace,
        "table": d.table.table,
        "primary": d.primary.name(),
        "secondary": d.primary.other().name(),
        "opcode": d.opcode.to_string(),
        "statement": d.statement,
        "counts": counts,
        "notes": d.notes,
        "rows": d.rows.iter().map(row_json).collect::<Vec<_>>(),
    })
}

fn row_json(row: &RowDifference) -> Value {
    json!({
        "kind": row.kind.label(),
        "key": row.key.iter().map(|(k, v)| json!({"column": k, "value": v})).collect::<Vec<_>>(),
        "columns": row.columns.iter().map(|c| json!({
            "name": c.name,
            "primary": c.primary,
            "secondary": c.secondary,
        })).collect::<Vec<_>>(),
    })
}

/// RFC 3339 in UTC, to the millisecond.
fn time(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros)
        .map_or_else(|_| micros.to_string(), |t| format!("{:.3}", t))
}

/// The report (as [`to_json`] gives it) as a table for a terminal.
pub fn to_table(report: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let n = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
    let s = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("?").to_owned();
    let _ = writeln!(
        out,
        "{} answers compared, {} differ (primary: {}, read mode: {}).",
        n(report, "compared"),
        n(report, "differing"),
        s(report, "primary"),
        s(report, "read_mode"),
    );
    let tables = report.get("tables").and_then(Value::as_array);
    if let Some(tables) = tables.filter(|t| !t.is_empty()) {
        let _ = writeln!(
            out,
            "\n{:<40} {:>9} {:>9} {:>8} {:>8} {:>9} {:>7} {:>6} {:>8}",
            "TABLE",
            "COMPARED",
            "DIFFERING",
            "MISSING",
            "EXTRA",
            "DIFFERENT",
            "ERRORS",
            "ORDER",
            "COLUMNS"
        );
        for t in tables {
            let name = format!(
                "{}.{}",
                t.get("keyspace").and_then(Value::as_str).unwrap_or("?"),
                t.get("table").and_then(Value::as_str).unwrap_or("?")
            );
            let _ = writeln!(
                out,
                "{:<40} {:>9} {:>9} {:>8} {:>8} {:>9} {:>7} {:>6} {:>8}",
                name,
                n(t, "compared"),
                n(t, "differing"),
                n(t, "missing_rows"),
                n(t, "extra_rows"),
                n(t, "different_values"),
                n(t, "error"),
                n(t, "order"),
                n(t, "columns"),
            );
        }
    }
    let samples = report.get("samples").and_then(Value::as_array);
    if let Some(samples) = samples.filter(|s| !s.is_empty()) {
        let _ = writeln!(out, "\nLatest differences, newest first:");
        for d in samples {
            let primary = s(d, "primary");
            let secondary = s(d, "secondary");
            let _ = writeln!(
                out,
                "\n{}  {}.{}  {}",
                s(d, "at"),
                d.get("keyspace").and_then(Value::as_str).unwrap_or("?"),
                d.get("table").and_then(Value::as_str).unwrap_or("?"),
                d.get("statement").and_then(Value::as_str).unwrap_or(""),
            );
            for note in d
                .get("notes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let _ = writeln!(out, "  note: {}", note.as_str().unwrap_or(""));
            }
            for row in d
                .get("rows")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key: Vec<String> = row
                    .get("key")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|k| format!("{}={}", s(k, "column"), s(k, "value")))
                    .collect();
                let _ = writeln!(
                    out,
                    "  {:<17} {}",
                    s(row, "kind"),
                    if key.is_empty() {
                        "(no key known)".to_owned()
                    } else {
                        key.join(" ")
                    }
                );
                for c in row
                    .get("columns")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let side = |key: &str| {
                        c.get(key)
                            .and_then(Value::as_str)
                            .map_or("null".to_owned(), str::to_owned)
                    };
                    let _ = writeln!(
                        out,
                        "      {}: {primary} {} | {secondary} {}",
                        s(c, "name"),
                        side("primary"),
                        side("secondary")
                    );
                }
            }
        }
    }
    let too_large = n(report, "not_compared_too_large");
    if too_large > 0 {
        let _ = writeln!(
            out,
            "\n({too_large} reads not compared: an answer was larger than 8 MiB)"
        );
    }
    let dropped = n(report, "dropped_samples");
    if dropped > 0 {
        let _ = writeln!(
            out,
            "\n({dropped} older differences fell out of the sample; --divergence-samples keeps more, --divergence-log keeps all)"
        );
    }
    out
}
