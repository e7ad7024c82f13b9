//! Prometheus metrics through the `metrics` facade, rendered by
//! `metrics-exporter-prometheus` (without its HTTP listener, which needs tokio: the endpoint
//! is [`super::serve`]'s).
//!
//! Two sources:
//! - **events** of the sessions ([`observe`]), for what happens per request: per-request
//!   counters and latency histograms go to fixed tables of atomics ([`super::requests`]),
//!   rarer events (errors, failures, missed writes) straight to the facade;
//! - **the proxy's state** read at each scrape ([`refresh`]): connections, the primary, the
//!   wait policy, reachability, the prepared-statement cache, readiness.
//!
//! Labels are small closed sets (opcodes, clusters, error codes, failure kinds): no client
//! addresses, so the number of series stays bounded whatever the traffic.

use std::sync::OnceLock;

use cqlmirror_core::config::{Upstream, WaitPolicy};
use cqlmirror_core::failure::FailureKind;
use cqlmirror_core::frame::Opcode;
use cqlmirror_core::proxy::Proxy;
use cqlmirror_core::session::reconnect::Reconnect;
use cqlmirror_core::session::{ClusterResult, Event, Peer};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::requests::{Outcome, REQUESTS};
use super::traffic::TRAFFIC;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder of the counters and gauges (latency histograms are [`REQUESTS`]').
fn recorder() -> Result<metrics_exporter_prometheus::PrometheusRecorder, String> {
    Ok(PrometheusBuilder::new().build_recorder())
}

/// Installs the process's recorder (once; later calls return the same handle).
pub fn install() -> Result<&'static PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let recorder = recorder()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("metrics: cannot install the recorder: {e}"))?;
    describe();
    zero();
    Ok(HANDLE.get_or_init(|| handle))
}

/// The exposition text, with the proxy's state read now.
pub fn render(proxy: &Proxy, binary: &'static str) -> String {
    refresh(proxy, binary);
    let mut text = match HANDLE.get() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    };
    text.push_str(&REQUESTS.render_histograms());
    text
}

/// "read" or "write", the request kind label.
fn kind(write: bool) -> &'static str {
    super::requests::kind_label(write)
}

fn opcode(opcode: Opcode) -> &'static str {
    opcode.name().unwrap_or("UNKNOWN")
}

/// Records what a session event says.
pub fn observe(event: &Event) {
    match event {
        Event::Answered {
            opcode: op,
            write,
            latency,
            added,
            ..
        } => REQUESTS.answered(*op, *write, *latency, *added),
        Event::ClusterDone {
            upstream,
            opcode: op,
            write,
            latency,
            result,
        } => match result {
            ClusterResult::Ok => {
                REQUESTS.cluster_done(*upstream, *op, *write, Outcome::Ok, Some(*latency));
            }
            ClusterResult::Error(code) => {
                REQUESTS.cluster_done(*upstream, *op, *write, Outcome::Error, Some(*latency));
                let (cluster, op, kind) = (upstream.name(), opcode(*op), kind(*write));
                let code = code.name().unwrap_or("UNKNOWN");
                counter!("cqlmirror_cluster_errors_total", "cluster" => cluster, "code" => code)
                    .increment(1);
                counter!("cassandraProxy_cqlServerErrorCount_total", "cluster" => cluster,
                         "opcode" => op, "kind" => kind)
                .increment(1);
            }
            ClusterResult::Failed(failure) => {
                REQUESTS.cluster_done(*upstream, *op, *write, Outcome::Failed, None);
                if *failure == FailureKind::Timeout {
                    counter!("cqlmirror_timeouts_total", "cluster" => upstream.name()).increment(1);
                }
            }
        },
        Event::Failure { upstream, kind, .. } => {
            counter!("cqlmirror_cluster_failures_total", "cluster" => upstream.name(),
                     "kind" => kind.label())
            .increment(1);
        }
        Event::MissedWrite {
            upstream,
            opcode: op,
            tables,
        } => {
            counter!("cqlmirror_missed_writes_total", "cluster" => upstream.name(),
                     "opcode" => opcode(*op))
            .increment(1);
            // The tables exist (the primary applied the write): bounded by the schema.
            for table in tables {
                counter!("cqlmirror_missed_writes_by_table_total", "cluster" => upstream.name(),
                         "keyspace" => table.keyspace.clone().unwrap_or_default(),
                         "table" => table.table.clone())
                .increment(1);
            }
        }
        Event::OutcomesDiffer { opcode: op, write } => {
            counter!("cassandraProxy_cqlDifferentResultCount_total", "opcode" => opcode(*op),
                     "kind" => kind(*write))
            .increment(1);
        }
        Event::Compared { table, divergence } => {
            let result = if divergence.is_some() {
                "different"
            } else {
                "equal"
            };
            counter!("cqlmirror_comparisons_total", "result" => result).increment(1);
            if let Some(d) = divergence {
                // Tables the clusters answered about: bounded by the schema (and by the
                // report's table bound).
                for (kind, n) in &d.counts {
                    counter!("cqlmirror_divergences_total",
                             "keyspace" => table.keyspace.clone().unwrap_or_default(),
                             "table" => table.table.clone().unwrap_or_default(),
                             "kind" => kind.label())
                    .increment(*n);
                }
                super::report::log_divergence(d);
            }
        }
        Event::SecondaryReconnect {
            upstream, result, ..
        } => {
            let label = match result {
                Reconnect::Reconnected { down, .. } => {
                    counter!("cqlmirror_secondary_outage_seconds_total", "cluster" => upstream.name())
                        .increment(down.as_secs());
                    "reconnected"
                }
                Reconnect::Failed { .. } => "failed",
            };
            counter!("cqlmirror_secondary_reconnects_total", "cluster" => upstream.name(),
                     "result" => label)
            .increment(1);
        }
        Event::ClientError { .. } => counter!("cqlmirror_client_errors_total").increment(1),
        Event::GeneratedValue { function } => {
            counter!("cqlmirror_generated_values_total", "function" => function.label())
                .increment(1);
        }
        Event::SecondaryLag { upstream, .. } => {
            counter!("cqlmirror_secondary_lag_pauses_total", "cluster" => upstream.name())
                .increment(1);
        }
        Event::Unjournaled { reason, .. } => {
            counter!("cqlmirror_journal_refused_total", "reason" => reason.name()).increment(1);
        }
        Event::Ready { version, .. } => {
            counter!("cqlmirror_client_handshakes_total", "protocol_version" => version.label())
                .increment(1);
        }
        _ => {}
    }
}

/// Sets the gauges and counters that mirror the proxy's state.
fn refresh(proxy: &Proxy, binary: &'static str) {
    REQUESTS.publish();
    let admission = proxy.admission();
    gauge!("cqlmirror_client_connections").set(admission.open() as f64);
    for upstream in Upstream::BOTH {
        gauge!("cqlmirror_cluster_connections", "cluster" => upstream.name())
            .set(TRAFFIC.open(upstream) as f64);
    }
    gauge!("cqlmirror_client_connections_limit").set(admission.limit() as f64);
    counter!("cqlmirror_refused_connections_total").absolute(admission.refused());
    let stats = proxy.stats();
    let load = |v: &std::sync::atomic::AtomicU64| v.load(std::sync::atomic::Ordering::Relaxed);
    counter!("cqlmirror_client_connections_total").absolute(load(&stats.sessions_opened));
    counter!("cqlmirror_topology_reads_total").absolute(load(&stats.topology_reads));
    gauge!("cqlmirror_requests_in_flight")
        .set(stats.in_flight.load(std::sync::atomic::Ordering::Relaxed) as f64);
    gauge!("cqlmirror_secondary_lag_requests").set(
        stats
            .secondary_lag
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    gauge!("cqlmirror_prepared_statements").set(proxy.prepared_len() as f64);
    counter!("cqlmirror_prepared_evictions_total").absolute(proxy.prepared_evictions());
    for peer in Peer::ALL {
        let name = match peer.upstream() {
            Some(upstream) => upstream.name(),
            None => "client",
        };
        let (received, sent, paused) = TRAFFIC.totals(peer);
        counter!("cqlmirror_bytes_total", "peer" => name, "direction" => "in").absolute(received);
        counter!("cqlmirror_bytes_total", "peer" => name, "direction" => "out").absolute(sent);
        match peer.upstream() {
            None => gauge!("cassandraProxy_clientSocket_paused_seconds").set(paused),
            Some(upstream) => gauge!("cassandraProxy_serverSocket_paused_seconds",
                                     "cluster" => upstream.name())
            .set(paused),
        }
    }
    let primary = proxy.primary();
    let readiness = super::readiness(proxy);
    for upstream in Upstream::BOTH {
        let cluster = upstream.name();
        gauge!("cqlmirror_primary", "cluster" => cluster).set(f64::from(upstream == primary));
        gauge!("cqlmirror_cluster_reachable", "cluster" => cluster).set(f64::from(
            readiness.clusters[upstream.index()].is_reachable(),
        ));
        gauge!("cqlmirror_cluster_stalled", "cluster" => cluster)
            .set(f64::from(proxy.is_stalled(upstream)));
        gauge!("cqlmirror_schema_tables", "cluster" => cluster)
            .set(proxy.known_tables(upstream) as f64);
    }
    let wait = proxy.wait_policy();
    for (policy, name) in [(WaitPolicy::Both, "both"), (WaitPolicy::Primary, "primary")] {
        gauge!("cqlmirror_wait_policy", "policy" => name).set(f64::from(wait == policy));
    }
    let mode = proxy.read_mode();
    for m in cqlmirror_core::routing::ReadMode::ALL {
        gauge!("cqlmirror_read_mode", "mode" => m.name()).set(f64::from(m == mode));
    }
    let shadow = proxy.shadow();
    gauge!("cqlmirror_shadow_reads_in_flight").set(shadow.in_flight() as f64);
    counter!("cqlmirror_shadow_reads_skipped_total").absolute(shadow.skipped());
    gauge!("cqlmirror_ready").set(f64::from(readiness.ready));
    if let Some(journal) = crate::journal::installed::installed() {
        let stats = journal.stats();
        counter!("cqlmirror_journal_records_total").absolute(stats.appended);
        gauge!("cqlmirror_journal_bytes").set(stats.bytes as f64);
        gauge!("cqlmirror_journal_segments").set(stats.segments as f64);
        gauge!("cqlmirror_journal_full").set(f64::from(stats.full));
        gauge!("cqlmirror_journal_oldest_seconds").set(super::oldest_seconds(&stats));
        for (reason, n) in crate::journal::installed::refusals(&stats) {
            counter!("cqlmirror_journal_refused_total", "reason" => reason).absolute(n);
        }
    }
    if let Some(replay) = crate::replay::background::status() {
        for (result, n) in replay.results() {
            counter!("cqlmirror_replay_records_total", "result" => result).absolute(n);
        }
        gauge!("cqlmirror_replay_backlog_bytes").set(replay.backlog_bytes as f64);
        for state in crate::replay::background::ReplayState::ALL {
            gauge!("cqlmirror_replay_state", "state" => state.name())
                .set(f64::from(state == replay.state));
        }
        counter!("cqlmirror_replay_released_segments_total").absolute(replay.released);
    }
    gauge!("cqlmirror_build_info", "version" => cqlmirror_core::VERSION, "binary" => binary)
        .set(1.0);
}

/// The counters an operator watches for trouble start at zero, so that dashboards and
/// alerts see 0 rather than no data until the first failure.
fn zero() {
    for upstream in Upstream::BOTH {
        let cluster = upstream.name();
        for op in [Opcode::QUERY, Opcode::EXECUTE, Opcode::BATCH] {
            counter!("cqlmirror_missed_writes_total", "cluster" => cluster, "opcode" => opcode(op))
                .absolute(0);
        }
        for kind in FailureKind::ALL {
            counter!("cqlmirror_cluster_failures_total", "cluster" => cluster,
                     "kind" => kind.label())
            .absolute(0);
        }
        counter!("cqlmirror_timeouts_total", "cluster" => cluster).absolute(0);
        counter!("cqlmirror_secondary_lag_pauses_total", "cluster" => cluster).absolute(0);
        for result in ["reconnected", "failed"] {
            counter!("cqlmirror_secondary_reconnects_total", "cluster" => cluster,
                     "result" => result)
            .absolute(0);
        }
    }
    counter!("cqlmirror_client_errors_total").absolute(0);
    for result in ["equal", "different"] {
        counter!("cqlmirror_comparisons_total", "result" => result).absolute(0);
    }
}

/// The journal's counters start at zero once it is open.
pub fn zero_journal() {
    for reason in crate::journal::installed::unjournaled_reasons() {
        counter!("cqlmirror_journal_refused_total", "reason" => reason).absolute(0);
    }
}

/// The background replayer's families exist from the start with `--replay auto`.
pub fn zero_replay() {
    for result in [
        "applied",
        "check-order",
        "attention",
        "failed",
        "unreadable",
    ] {
        counter!("cqlmirror_replay_records_total", "result" => result).absolute(0);
    }
    gauge!("cqlmirror_replay_backlog_bytes").set(0.0);
    counter!("cqlmirror_replay_released_segments_total").absolute(0);
}

/// The help text of each family.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_counter!(
        "cqlmirror_requests_total",
        "Requests answered to clients, by opcode and kind (read or write)"
    );
    describe_counter!(
        "cqlmirror_cluster_requests_total",
        "Requests each cluster finished, by outcome: ok, error (an ERROR answer) or failed (no answer)"
    );
    describe_counter!(
        "cqlmirror_cluster_errors_total",
        "ERROR answers of each cluster, by error code"
    );
    describe_counter!(
        "cassandraProxy_cqlServerErrorCount_total",
        "The older proxy's name: ERROR answers of each cluster, by opcode and kind"
    );
    describe_counter!(
        "cqlmirror_timeouts_total",
        "Requests a cluster did not answer within --request-timeout"
    );
    describe_counter!(
        "cqlmirror_cluster_failures_total",
        "Failures of each cluster by kind (unreachable, connection lost, timeout, error, ...)"
    );
    describe_counter!(
        "cqlmirror_secondary_reconnects_total",
        "Attempts to open a failed connection to the secondary again, by result: reconnected (the writes of that client connection reach it again) or failed (tried again after a backoff)"
    );
    describe_counter!(
        "cqlmirror_secondary_outage_seconds_total",
        "Whole seconds the secondary's connections that came back had been down, summed"
    );
    describe_counter!(
        "cqlmirror_missed_writes_total",
        "Writes the client was told succeeded (the primary applied them) that the secondary missed"
    );
    describe_counter!(
        "cassandraProxy_cqlDifferentResultCount_total",
        "The older proxy's name, real comparisons only: requests both clusters answered, one with an ERROR and the other not (rows are not compared yet)"
    );
    describe_counter!(
        "cqlmirror_journal_records_total",
        "Missed writes written to the journal (--journal-dir) since the proxy started"
    );
    describe_counter!(
        "cqlmirror_journal_refused_total",
        "Missed writes NOT in the journal, by reason: full (--journal-max-size reached), queue (the disk could not keep up), write-error, unknown-statement (a prepared statement the proxy forgot), not-data-write (schema, TRUNCATE: never replayed), malformed"
    );
    describe_gauge!(
        "cqlmirror_journal_bytes",
        Unit::Bytes,
        "Bytes the journal's segments take on disk"
    );
    describe_gauge!("cqlmirror_journal_segments", "Segment files of the journal");
    describe_gauge!(
        "cqlmirror_journal_full",
        "1 while the journal is at --journal-max-size and refuses records"
    );
    describe_gauge!(
        "cqlmirror_journal_oldest_seconds",
        Unit::Seconds,
        "Age of the journal's oldest segment holding records: how far back replay must go"
    );
    describe_counter!(
        "cqlmirror_replay_records_total",
        "Journal records the background replayer (--replay auto) went through, by result: applied, check-order (a list write applied, its row's order to check), attention (not applied: an LWT, or a counter or list write that may have applied), failed (refused by the cluster every try, passed), unreadable (damaged, passed)"
    );
    describe_gauge!(
        "cqlmirror_replay_backlog_bytes",
        Unit::Bytes,
        "Journal bytes after the background replayer's checkpoint: what is left to replay (0: caught up)"
    );
    describe_gauge!(
        "cqlmirror_replay_state",
        "1 for what the background replayer is doing: idle (caught up), replaying, waiting (the cluster that missed the writes cannot be reached), stopped"
    );
    describe_counter!(
        "cqlmirror_replay_released_segments_total",
        "Journal segments the background replayer removed once replayed"
    );
    describe_counter!(
        "cqlmirror_missed_writes_by_table_total",
        "Writes the secondary missed, per table they change (a batch counts for each of its tables)"
    );
    describe_counter!(
        "cqlmirror_secondary_lag_pauses_total",
        "Times a client connection stopped being read because this cluster, as secondary, had --max-secondary-lag requests or --max-secondary-lag-bytes unfinished (the time paused adds to cassandraProxy_clientSocket_paused_seconds)"
    );
    describe_counter!(
        "cqlmirror_client_errors_total",
        "Client connections refused or closed for bad input or stalling"
    );
    describe_counter!(
        "cqlmirror_client_handshakes_total",
        "Client handshakes completed, by protocol version"
    );
    describe_gauge!(
        "cqlmirror_cluster_connections",
        "Connections to each cluster open now, for client sessions (control connections aside)"
    );
    describe_gauge!(
        "cqlmirror_requests_in_flight",
        "Requests the proxy holds: not answered to the client yet, or still running on a cluster"
    );
    describe_gauge!(
        "cqlmirror_secondary_lag_requests",
        "Requests the secondary has not finished (in flight, queued or held for it), over all client connections; each connection may have at most --max-secondary-lag"
    );
    describe_gauge!(
        "cqlmirror_client_connections",
        "Client connections open now"
    );
    describe_gauge!(
        "cqlmirror_client_connections_limit",
        "--max-connections: more client connections are refused"
    );
    describe_counter!(
        "cqlmirror_client_connections_total",
        "Client connections accepted since the start"
    );
    describe_counter!(
        "cqlmirror_refused_connections_total",
        "Client connections refused at --max-connections"
    );
    describe_counter!(
        "cqlmirror_topology_reads_total",
        "Reads of system.local and system.peers* the proxy answered itself"
    );
    describe_gauge!(
        "cqlmirror_prepared_statements",
        "Prepared statements the proxy remembers (--prepared-cache-size at most)"
    );
    describe_gauge!(
        "cqlmirror_primary",
        "1 for the cluster whose answers clients get"
    );
    describe_gauge!(
        "cqlmirror_cluster_reachable",
        "1 when the cluster's control connection last read its topology"
    );
    describe_gauge!(
        "cqlmirror_cluster_stalled",
        "1 while clients do not wait for the cluster (it let --wait-timeout pass)"
    );
    describe_gauge!(
        "cqlmirror_wait_policy",
        "1 for the wait policy in force: both (--wait true) or primary (--wait false)"
    );
    describe_gauge!("cqlmirror_ready", "1 when /health/readiness says ready");
    describe_gauge!(
        "cqlmirror_schema_tables",
        "Tables whose primary key the proxy read from the cluster's schema: their reads are compared row by row (others as sets of rows)"
    );
    describe_gauge!(
        "cqlmirror_read_mode",
        "1 for the read mode in force: primary, shadow or compare (--read-mode)"
    );
    describe_gauge!(
        "cqlmirror_shadow_reads_in_flight",
        "Shadow reads waiting for the secondary now (--shadow-max-in-flight at most)"
    );
    describe_counter!(
        "cqlmirror_shadow_reads_skipped_total",
        "Reads not shadowed because --shadow-max-in-flight shadow reads were in flight"
    );
    describe_counter!(
        "cqlmirror_comparisons_total",
        "Answers of both clusters compared (shadow and compare read modes; writes whose outcomes differ), by result: equal or different"
    );
    describe_counter!(
        "cqlmirror_divergences_total",
        "Differences found by comparing the clusters' answers, by keyspace, table and kind: missing_rows and extra_rows (rows only the primary / only the secondary returned), different_values (rows), error (one side answered ERROR), order, columns"
    );
    describe_gauge!("cqlmirror_build_info", "Version and binary of this proxy");
    describe_counter!(
        "cqlmirror_prepared_evictions_total",
        "Prepared statements dropped to stay within --prepared-cache-size"
    );
    describe_counter!(
        "cqlmirror_bytes_total",
        Unit::Bytes,
        "Bytes received from (in) and sent to (out) clients and each cluster"
    );
    describe_gauge!(
        "cassandraProxy_clientSocket_paused_seconds",
        Unit::Seconds,
        "The older proxy's name: seconds, summed over connections, during which the proxy did not read clients (backpressure)"
    );
    describe_gauge!(
        "cassandraProxy_serverSocket_paused_seconds",
        Unit::Seconds,
        "The older proxy's name: seconds, summed over connections, during which the proxy did not read a cluster (backpressure)"
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cqlmirror_core::config::Upstream;
    use cqlmirror_core::failure::FailureKind;
    use cqlmirror_core::frame::Opcode;
    use cqlmirror_core::message::ErrorCode;
    use cqlmirror_core::session::{ClusterResult, Event};

    use super::super::requests::REQUESTS;
    use super::{observe, recorder};

    /// The exposition after `events`: the facade's part recorded by a recorder of its own,
    /// then the process-wide tables (each test uses opcodes no other test does).
    fn exposition(events: &[Event]) -> String {
        let recorder = recorder().unwrap();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            super::describe();
            for event in events {
                observe(event);
            }
            REQUESTS.publish();
        });
        handle.render() + &REQUESTS.render_histograms()
    }

    fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn an_answered_request_moves_the_request_counter_and_histograms() {
        let answered = Event::Answered {
            opcode: Opcode::AUTH_CHALLENGE,
            write: true,
            latency: Duration::from_micros(1500),
            added: Duration::from_micros(300),
            primary: Upstream::Source,
        };
        let text = exposition(&[answered.clone(), answered]);
        assert_eq!(
            value(
                &text,
                r#"cqlmirror_requests_total{opcode="AUTH_CHALLENGE",kind="write"}"#
            ),
            Some("2"),
            "{text}"
        );
        // 1.5 ms lands in the 2.5 ms bucket, not in the 1 ms one.
        for (family, le, expected) in [
            ("cqlmirror_request_duration_seconds", "0.001", "0"),
            ("cqlmirror_request_duration_seconds", "0.0025", "2"),
            ("cassandraProxy_cqlOperation_timer_seconds", "+Inf", "2"),
            // 300 µs added after the primary's answer.
            (
                "cassandraProxy_cqlOperation_proxyTime_seconds",
                "0.00025",
                "0",
            ),
            (
                "cassandraProxy_cqlOperation_proxyTime_seconds",
                "0.0005",
                "2",
            ),
        ] {
            let series =
                format!(r#"{family}_bucket{{opcode="AUTH_CHALLENGE",kind="write",le="{le}"}}"#);
            assert_eq!(value(&text, &series), Some(expected), "{series} in\n{text}");
        }
        assert!(text.contains("# HELP cqlmirror_requests_total Requests answered to clients"));
        assert!(text.contains("# TYPE cqlmirror_request_duration_seconds histogram"));
    }

    #[test]
    fn cluster_outcomes_are_counted_per_cluster_and_error_code() {
        let done = |upstream, result| Event::ClusterDone {
            upstream,
            opcode: Opcode::AUTH_RESPONSE,
            write: true,
            latency: Duration::from_millis(3),
            result,
        };
        let text = exposition(&[
            done(Upstream::Source, ClusterResult::Ok),
            done(
                Upstream::Target,
                ClusterResult::Error(ErrorCode::WRITE_TIMEOUT),
            ),
            done(
                Upstream::Target,
                ClusterResult::Failed(FailureKind::Timeout),
            ),
            Event::MissedWrite {
                upstream: Upstream::Target,
                opcode: Opcode::QUERY,
                tables: cqlmirror_core::statement::tables::written_tables(
                    "INSERT INTO shop.orders (k) VALUES (1)",
                ),
            },
            Event::Failure {
                upstream: Upstream::Target,
                kind: FailureKind::Closed,
                detail: "gone".into(),
                first: true,
            },
            Event::OutcomesDiffer {
                opcode: Opcode::AUTH_RESPONSE,
                write: true,
            },
        ]);
        let op = r#"opcode="AUTH_RESPONSE",kind="write""#;
        for (series, expected) in [
            (
                format!(
                    r#"cqlmirror_cluster_requests_total{{cluster="source",{op},outcome="ok"}}"#
                ),
                "1",
            ),
            (
                format!(
                    r#"cqlmirror_cluster_requests_total{{cluster="target",{op},outcome="error"}}"#
                ),
                "1",
            ),
            (
                format!(
                    r#"cqlmirror_cluster_requests_total{{cluster="target",{op},outcome="failed"}}"#
                ),
                "1",
            ),
            (
                r#"cqlmirror_cluster_errors_total{cluster="target",code="WRITE_TIMEOUT"}"#.into(),
                "1",
            ),
            (
                format!(r#"cassandraProxy_cqlServerErrorCount_total{{cluster="target",{op}}}"#),
                "1",
            ),
            (r#"cqlmirror_timeouts_total{cluster="target"}"#.into(), "1"),
            (
                r#"cqlmirror_missed_writes_total{cluster="target",opcode="QUERY"}"#.into(),
                "1",
            ),
            (
                format!(r#"cassandraProxy_cqlDifferentResultCount_total{{{op}}}"#),
                "1",
            ),
            (
                r#"cqlmirror_missed_writes_by_table_total{cluster="target",keyspace="shop",table="orders"}"#.into(),
                "1",
            ),
            (
                r#"cqlmirror_cluster_failures_total{cluster="target",kind="closed"}"#.into(),
                "1",
            ),
            (
                format!(
                    r#"cassandraProxy_cqlOperationSourceCassandra_timer_seconds_count{{{op}}}"#
                ),
                "1",
            ),
            // The failed request has no latency of an answer: one answer (the ERROR) is timed.
            (
                format!(
                    r#"cassandraProxy_cqlOperationTargetCassandra_timer_seconds_count{{{op}}}"#
                ),
                "1",
            ),
            (
                format!(
                    r#"cqlmirror_cluster_request_duration_seconds_count{{cluster="target",{op}}}"#
                ),
                "1",
            ),
        ] {
            assert_eq!(value(&text, &series), Some(expected), "{series} in\n{text}");
        }
        assert!(
            value(
                &text,
                r#"cqlmirror_cluster_errors_total{cluster="source",code="WRITE_TIMEOUT"}"#
            )
            .is_none()
        );
    }

    #[test]
    fn pauses_for_a_lagging_secondary_are_counted_per_cluster() {
        let lag = Event::SecondaryLag {
            upstream: Upstream::Target,
            requests: 1024,
            bytes: 4096,
        };
        let text = exposition(&[lag.clone(), lag]);
        assert_eq!(
            value(
                &text,
                r#"cqlmirror_secondary_lag_pauses_total{cluster="target"}"#
            ),
            Some("2"),
            "{text}"
        );
    }

    #[test]
    fn reconnects_of_the_secondary_are_counted_by_result() {
        use cqlmirror_core::session::reconnect::Reconnect;
        let reconnect = |result| Event::SecondaryReconnect {
            upstream: Upstream::Target,
            result,
            first: false,
        };
        let text = exposition(&[
            reconnect(Reconnect::Failed {
                attempt: 1,
                retry_in: Duration::from_millis(300),
            }),
            reconnect(Reconnect::Reconnected {
                down: Duration::from_millis(2500),
                attempts: 2,
                missed: 7,
            }),
        ]);
        for (series, expected) in [
            (
                r#"cqlmirror_secondary_reconnects_total{cluster="target",result="failed"}"#,
                "1",
            ),
            (
                r#"cqlmirror_secondary_reconnects_total{cluster="target",result="reconnected"}"#,
                "1",
            ),
            (
                r#"cqlmirror_secondary_outage_seconds_total{cluster="target"}"#,
                "2",
            ),
        ] {
            assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
        }
    }
}
