//! Per-request figures kept in fixed tables of atomics: what every request moves must cost a
//! few relaxed atomic additions, not a registry lookup and a stored sample (the facade's
//! histograms keep each sample until the next scrape: millions per second under load).
//!
//! Counters are handed to the `metrics` facade at each scrape ([`Requests::publish`]);
//! histograms, already bucketed here, are written out in the Prometheus text format
//! ([`Requests::render_histograms`]) after the exporter's text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cqlmirror_core::config::Upstream;
use cqlmirror_core::frame::Opcode;
use metrics::counter;

/// Opcodes 0x00 to 0x10 each have a slot; any other lands in 0x04, which the protocol does
/// not use (named `UNKNOWN`).
const OPCODES: usize = 0x11;
const UNKNOWN_SLOT: usize = 0x04;

fn slot(opcode: Opcode) -> usize {
    match usize::from(opcode.0) {
        n if n < OPCODES => n,
        _ => UNKNOWN_SLOT,
    }
}

fn opcode_name(slot: usize) -> &'static str {
    u8::try_from(slot)
        .ok()
        .and_then(|n| Opcode(n).name())
        .unwrap_or("UNKNOWN")
}

const KINDS: [&str; 2] = ["read", "write"];

/// The `kind` label of a request: `read` or `write`.
pub fn kind_label(write: bool) -> &'static str {
    KINDS[usize::from(write)]
}
const OUTCOMES: [&str; 3] = ["ok", "error", "failed"];

/// Upper bounds of the latency buckets, in seconds: 100 µs to 10 s.
pub const BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

const BOUNDS_NANOS: [u64; 16] = {
    let mut out = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// A latency histogram with [`BOUNDS`].
#[derive(Debug)]
pub struct Histogram {
    /// Samples per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; 17],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; 17],
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn record(&self, latency: Duration, writer: Writer) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BOUNDS_NANOS.len());
        writer.add(&self.buckets[bucket], 1);
        writer.add(&self.sum_nanos, nanos);
        writer.add(&self.count, 1);
    }

    /// Appends this histogram's samples (`name_bucket`, `name_sum`, `name_count`) with
    /// `labels` (`key="value",...`, possibly empty); nothing before its first sample.
    /// Adds `other`'s samples to this one.
    fn add(&self, other: &Self) {
        for (bucket, theirs) in self.buckets.iter().zip(&other.buckets) {
            bucket.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.sum_nanos
            .fetch_add(other.sum_nanos.load(Ordering::Relaxed), Ordering::Relaxed);
        self.count
            .fetch_add(other.count.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return;
        }
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        // +Inf is the count: samples recorded between the loads above land in both.
        let total = cumulative + self.buckets[BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

/// What the requests of every connection moved.
/// One thread's share of the per-request figures.
#[derive(Debug)]
struct Shard {
    /// `[opcode][kind]`: requests answered to clients.
    answered: [[AtomicU64; 2]; OPCODES],
    /// `[opcode][kind]`: time to the client's answer.
    latency: [[Histogram; 2]; OPCODES],
    /// `[opcode][kind]`: time the proxy added after the primary's answer.
    added: [[Histogram; 2]; OPCODES],
    /// `[cluster][opcode][kind][outcome]`: each cluster's part of a request.
    done: [[[[AtomicU64; 3]; 2]; OPCODES]; 2],
    /// `[cluster][opcode][kind]`: time to each cluster's answer.
    cluster_latency: [[[Histogram; 2]; OPCODES]; 2],
}

impl Shard {
    const fn new() -> Self {
        Self {
            answered: [const { [const { AtomicU64::new(0) }; 2] }; OPCODES],
            latency: [const { [const { Histogram::new() }; 2] }; OPCODES],
            added: [const { [const { Histogram::new() }; 2] }; OPCODES],
            done: [const { [const { [const { [const { AtomicU64::new(0) }; 3] }; 2] }; OPCODES] };
                2],
            cluster_latency: [const { [const { [const { Histogram::new() }; 2] }; OPCODES] }; 2],
        }
    }
}

/// Shards of the figures: a thread holds one of its own while it lives, so that two worker
/// threads never fight over the cache line of a counter they both add to with every request,
/// and, being the shard's only writer, adds with a plain load and store instead of a locked
/// read-modify-write. Threads beyond [`LEASES`] share the last shard, with atomic additions.
/// A scrape sums the shards.
const LEASES: usize = 8;
const SHARDS: usize = LEASES + 1;
const SHARED_SHARD: usize = LEASES;

/// Bit `i`: shard `i` is held by a living thread.
static LEASED: AtomicUsize = AtomicUsize::new(0);

/// A thread's hold on a shard, given back when the thread ends.
struct Lease(usize);

impl Lease {
    fn take() -> Self {
        let mut leased = LEASED.load(Ordering::Relaxed);
        loop {
            let free = (!leased).trailing_zeros() as usize;
            if free >= LEASES {
                return Self(SHARED_SHARD);
            }
            // Acquire: the previous holder's last additions happen before this thread's first.
            match LEASED.compare_exchange_weak(
                leased,
                leased | 1 << free,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Self(free),
                Err(now) => leased = now,
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.0 < LEASES {
            LEASED.fetch_and(!(1 << self.0), Ordering::Release);
        }
    }
}

thread_local! {
    static LEASE: Lease = Lease::take();
}

/// How a thread adds to its shard's counters.
#[derive(Debug, Clone, Copy)]
enum Writer {
    /// The shard's only writer: a load and a store (readers still see whole values).
    Sole,
    /// One of several writers.
    Shared,
}

impl Writer {
    fn add(self, counter: &AtomicU64, n: u64) {
        match self {
            Self::Sole => counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            ),
            Self::Shared => {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Debug)]
pub struct Requests {
    shards: [Shard; SHARDS],
}

pub static REQUESTS: Requests = Requests {
    shards: [const { Shard::new() }; SHARDS],
};

/// An outcome's index in [`OUTCOMES`].
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Ok = 0,
    Error = 1,
    Failed = 2,
}

impl Requests {
    pub fn answered(&self, opcode: Opcode, write: bool, latency: Duration, added: Duration) {
        let (op, kind) = (slot(opcode), usize::from(write));
        let (shard, writer) = self.shard();
        writer.add(&shard.answered[op][kind], 1);
        shard.latency[op][kind].record(latency, writer);
        shard.added[op][kind].record(added, writer);
    }

    /// One cluster's part of a request; `latency` only for an answer (not a failure).
    pub fn cluster_done(
        &self,
        upstream: Upstream,
        opcode: Opcode,
        write: bool,
        outcome: Outcome,
        latency: Option<Duration>,
    ) {
        let (c, op, kind) = (upstream.index(), slot(opcode), usize::from(write));
        let (shard, writer) = self.shard();
        writer.add(&shard.done[c][op][kind][outcome as usize], 1);
        if let Some(latency) = latency {
            shard.cluster_latency[c][op][kind].record(latency, writer);
        }
    }

    /// The calling thread's shard, and how it adds to it.
    fn shard(&self) -> (&Shard, Writer) {
        // A thread that is ending (its lease already given back) adds to the shared shard.
        match LEASE.try_with(|lease| lease.0) {
            Ok(SHARED_SHARD) | Err(_) => (&self.shards[SHARED_SHARD], Writer::Shared),
            Ok(own) => (&self.shards[own], Writer::Sole),
        }
    }

    /// A counter summed over the shards.
    fn sum(&self, counter: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|shard| counter(shard).load(Ordering::Relaxed))
            .sum()
    }

    /// A histogram summed over the shards.
    fn sum_histogram(&self, histogram: impl Fn(&Shard) -> &Histogram) -> Histogram {
        let sum = Histogram::new();
        for shard in &self.shards {
            sum.add(histogram(shard));
        }
        sum
    }

    /// Hands the counters to the facade, for the exporter to render.
    pub fn publish(&self) {
        for op in 0..OPCODES {
            for (kind, kind_name) in KINDS.iter().enumerate() {
                let value = self.sum(|shard| &shard.answered[op][kind]);
                if value > 0 {
                    counter!("cqlmirror_requests_total", "opcode" => opcode_name(op),
                             "kind" => *kind_name)
                    .absolute(value);
                }
            }
        }
        for upstream in Upstream::BOTH {
            let c = upstream.index();
            for op in 0..OPCODES {
                for (kind, kind_name) in KINDS.iter().enumerate() {
                    for (outcome, outcome_name) in OUTCOMES.iter().enumerate() {
                        let value = self.sum(|shard| &shard.done[c][op][kind][outcome]);
                        if value > 0 {
                            counter!("cqlmirror_cluster_requests_total",
                                     "cluster" => upstream.name(), "opcode" => opcode_name(op),
                                     "kind" => *kind_name, "outcome" => *outcome_name)
                            .absolute(value);
                        }
                    }
                }
            }
        }
    }

    /// The histograms in the Prometheus text format, with their HELP and TYPE lines.
    pub fn render_histograms(&self) -> String {
        let mut out = String::new();
        let families: [(&str, &str); 2] = [
            (
                "cqlmirror_request_duration_seconds",
                "Time from a request's arrival to its answer to the client",
            ),
            (
                "cassandraProxy_cqlOperation_timer_seconds",
                "The older proxy's name: time from a request's arrival to its answer to the client",
            ),
        ];
        type Table = fn(&Shard) -> &[[Histogram; 2]; OPCODES];
        let latency: Table = |shard| &shard.latency;
        let added: Table = |shard| &shard.added;
        let families = families.map(|(name, help)| (name, help, latency)).into_iter().chain([(
            "cassandraProxy_cqlOperation_proxyTime_seconds",
            "The older proxy's name, with this meaning: time the proxy added after the primary's answer (waiting for the secondary, keeping the client's order)",
            added,
        )]);
        for (name, help, table) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for op in 0..OPCODES {
                for (kind, kind_name) in KINDS.iter().enumerate() {
                    let labels = format!("opcode=\"{}\",kind=\"{kind_name}\"", opcode_name(op));
                    self.sum_histogram(|shard| &table(shard)[op][kind])
                        .render(&mut out, name, &labels);
                }
            }
            out.push('\n');
        }
        let name = "cqlmirror_cluster_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a request's arrival to each cluster's answer\n# TYPE {name} histogram"
        );
        for upstream in Upstream::BOTH {
            let c = upstream.index();
            for op in 0..OPCODES {
                for (kind, kind_name) in KINDS.iter().enumerate() {
                    let labels = format!(
                        "cluster=\"{}\",opcode=\"{}\",kind=\"{kind_name}\"",
                        upstream.name(),
                        opcode_name(op),
                    );
                    self.sum_histogram(|shard| &shard.cluster_latency[c][op][kind])
                        .render(&mut out, name, &labels);
                }
            }
        }
        out.push('\n');
        for upstream in Upstream::BOTH {
            let (name, which) = match upstream {
                Upstream::Source => (
                    "cassandraProxy_cqlOperationSourceCassandra_timer_seconds",
                    "source",
                ),
                Upstream::Target => (
                    "cassandraProxy_cqlOperationTargetCassandra_timer_seconds",
                    "target",
                ),
            };
            let _ = writeln!(
                out,
                "# HELP {name} The older proxy's name: time to the {which} cluster's answer\n# TYPE {name} histogram"
            );
            let c = upstream.index();
            for op in 0..OPCODES {
                for (kind, kind_name) in KINDS.iter().enumerate() {
                    let labels = format!("opcode=\"{}\",kind=\"{kind_name}\"", opcode_name(op));
                    self.sum_histogram(|shard| &shard.cluster_latency[c][op][kind])
                        .render(&mut out, name, &labels);
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        let h = Histogram::new();
        h.record(Duration::from_micros(80), Writer::Shared); // <= 100 µs
        h.record(Duration::from_micros(1500), Writer::Shared); // <= 2.5 ms
        h.record(Duration::from_secs(20), Writer::Shared); // above every bound
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "a=\"b\"");
        assert!(
            out.contains("x_seconds_bucket{a=\"b\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{a=\"b\",le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{a=\"b\",le=\"0.0025\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{a=\"b\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{a=\"b\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_sum{a=\"b\"} 20.00158\n"), "{out}");
        assert!(out.contains("x_seconds_count{a=\"b\"} 3\n"), "{out}");
        // A histogram without samples writes nothing.
        let mut empty = String::new();
        Histogram::new().render(&mut empty, "y_seconds", "");
        assert!(empty.is_empty());
    }

    #[test]
    fn figures_recorded_on_more_threads_than_shards_are_summed_exactly() {
        let requests = Requests {
            shards: [const { Shard::new() }; SHARDS],
        };
        let latency = Duration::from_micros(80);
        const THREADS: usize = LEASES + 4;
        const EACH: u64 = 1000;
        // Every thread holds its shard before any adds: at least four share the last one.
        let ready = std::sync::Barrier::new(THREADS);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    let _ = requests.shard();
                    ready.wait();
                    for _ in 0..EACH {
                        requests.answered(Opcode::QUERY, false, latency, Duration::ZERO);
                        requests.cluster_done(
                            Upstream::Source,
                            Opcode::QUERY,
                            false,
                            Outcome::Ok,
                            Some(latency),
                        );
                    }
                });
            }
        });
        let query = slot(Opcode::QUERY);
        let shared = requests.shards[SHARED_SHARD].answered[query][0].load(Ordering::Relaxed);
        assert!(shared >= 4 * EACH, "{shared} in the shared shard");
        let own = requests.shards[..LEASES]
            .iter()
            .filter(|shard| shard.answered[query][0].load(Ordering::Relaxed) > 0)
            .count();
        assert!(own >= 1, "threads with a shard of their own");
        assert_eq!(
            requests.sum(|shard| &shard.answered[query][0]),
            THREADS as u64 * EACH
        );
        assert_eq!(
            requests.sum(|shard| &shard.done[Upstream::Source.index()][query][0][0]),
            THREADS as u64 * EACH
        );
        let text = requests.render_histograms();
        for series in [
            "cqlmirror_request_duration_seconds_count{opcode=\"QUERY\",kind=\"read\"} 12000\n",
            "cqlmirror_request_duration_seconds_bucket{opcode=\"QUERY\",kind=\"read\",le=\"0.0001\"} 12000\n",
            "cqlmirror_cluster_request_duration_seconds_count{cluster=\"source\",opcode=\"QUERY\",kind=\"read\"} 12000\n",
            "cassandraProxy_cqlOperationSourceCassandra_timer_seconds_count{opcode=\"QUERY\",kind=\"read\"} 12000\n",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn a_thread_gives_its_shard_back_when_it_ends() {
        let taken = std::thread::spawn(|| {
            let (own, _) = REQUESTS.shard();
            let index = REQUESTS.shards.iter().position(|s| std::ptr::eq(s, own));
            (index, LEASED.load(Ordering::Acquire))
        })
        .join()
        .unwrap();
        let (Some(index), held) = taken else {
            panic!("the shard is one of REQUESTS'");
        };
        if index < LEASES {
            assert_ne!(held & 1 << index, 0, "held while the thread lived");
            // Another test's thread may take it again at once; wait for a moment without.
            let released = (0..1000).any(|_| {
                std::thread::yield_now();
                LEASED.load(Ordering::Acquire) & 1 << index == 0
            });
            assert!(
                released,
                "shard {index} still leased after its thread ended"
            );
        }
    }

    #[test]
    fn unknown_opcodes_share_one_slot() {
        assert_eq!(opcode_name(slot(Opcode::EXECUTE)), "EXECUTE");
        assert_eq!(opcode_name(slot(Opcode(0x42))), "UNKNOWN");
    }
}
