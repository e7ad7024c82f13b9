//! `--replay auto`: the proxy replays its own journal in the background, on a thread of its
//! own, as `replay` would: the same [`Pass`], the same checkpoint file
//! (`DIR/replay.checkpoint`), the same plain connection.
//!
//! - Each record goes to the cluster that missed it, with the proxy's own credentials for
//!   that cluster (`--target-username`, `--source-username`).
//! - A cluster that cannot be reached (or a request that times out) makes the replayer wait:
//!   1 s, doubling up to 30 s, or until the proxy's own connections see that cluster come
//!   back, then it tries again from the checkpoint. The outage is logged once, and so is the
//!   end of it.
//! - A record the cluster refuses three times is logged, counted as failed and passed; LWTs
//!   and writes of unknown outcome are logged (`attention:`) and passed; list writes applied
//!   out of their place are logged (`check order:`).
//! - At the end of the journal the replayer polls for more: an append in progress at the
//!   end of the segment being written is "not yet", never damage.
//! - The checkpoint is saved every second while records are replayed, at the end of the
//!   journal and at shutdown; segments wholly before it are released through
//!   [`Journal::release_through`], which keeps the journal's size accounting (and its cap)
//!   right.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cqlmirror_core::config::{Credentials, Endpoint, Upstream};
use cqlmirror_core::journal::Record;
use cqlmirror_core::journal::segment::HEADER_LEN;

use super::client::{ApplyError, Client};
use super::pass::{Driver, Notice, Pass, PassOptions, Step, Tally};
use super::{checkpoint, connect_to, describe};
use crate::journal::{Journal, Position};
use crate::shutdown::Shutdown;

/// `--replay-rate`'s default: records per second. A few percent of what a node takes, so
/// that a replay after a long outage does not compete with the live traffic.
pub const DEFAULT_RATE: f64 = 500.0;
/// The first wait after a cluster could not be reached, doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the end of the journal is looked at again for new records.
const POLL: Duration = Duration::from_millis(200);
/// How often the checkpoint is saved (and the backlog measured) while replaying.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// The longest a stop request waits for a pause to notice it.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// How one cluster is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterAccess {
    pub contact_points: Vec<Endpoint>,
    /// The proxy's own login on that cluster, if it has one.
    pub credentials: Option<Credentials>,
}

/// What the background replayer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoSettings {
    /// `--journal-dir`.
    pub dir: PathBuf,
    /// By [`Upstream::index`].
    pub clusters: [ClusterAccess; 2],
    /// `--replay-rate`: records per second at most (0: no limit).
    pub rate: f64,
    /// The longest a connection attempt or a request waits.
    pub timeout: Duration,
}

/// What the replayer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayState {
    /// Caught up: nothing left to replay.
    Idle,
    /// Applying records.
    Replaying,
    /// The cluster that missed the next record cannot be reached; trying again.
    Waiting,
    /// Not replaying: the proxy is shutting down, or the checkpoint cannot be read.
    Stopped,
}

impl ReplayState {
    pub const ALL: [Self; 4] = [Self::Idle, Self::Replaying, Self::Waiting, Self::Stopped];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Replaying => "replaying",
            Self::Waiting => "waiting",
            Self::Stopped => "stopped",
        }
    }

    const fn from_u8(n: u8) -> Self {
        match n {
            0 => Self::Idle,
            1 => Self::Replaying,
            2 => Self::Waiting,
            _ => Self::Stopped,
        }
    }

    const fn to_u8(self) -> u8 {
        match self {
            Self::Idle => 0,
            Self::Replaying => 1,
            Self::Waiting => 2,
            Self::Stopped => 3,
        }
    }
}

/// The replayer's progress, shared with the metrics and the admin API.
#[derive(Debug, Default)]
pub struct ReplayStatus {
    state: AtomicU8,
    applied: AtomicU64,
    check_order: AtomicU64,
    attention: AtomicU64,
    failed: AtomicU64,
    unreadable: AtomicU64,
    checkpoint_segment: AtomicU64,
    checkpoint_offset: AtomicU64,
    backlog_bytes: AtomicU64,
    released: AtomicU64,
}

/// A copy of the replayer's progress at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStats {
    pub state: ReplayState,
    /// Records applied since the proxy started, list orders to check not included.
    pub applied: u64,
    /// List writes applied whose row's order is to be checked.
    pub check_order: u64,
    /// Records logged for an operator, not applied.
    pub attention: u64,
    /// Records the cluster refused every try, passed.
    pub failed: u64,
    /// Parts of the journal that could not be read, passed.
    pub unreadable: u64,
    pub checkpoint: Position,
    /// Journal bytes after the checkpoint: what is left to replay.
    pub backlog_bytes: u64,
    /// Segments removed once replayed.
    pub released: u64,
}

impl ReplayStats {
    /// The counts of `cqlmirror_replay_records_total`, by result.
    pub const fn results(&self) -> [(&'static str, u64); 5] {
        [
            ("applied", self.applied),
            ("check-order", self.check_order),
            ("attention", self.attention),
            ("failed", self.failed),
            ("unreadable", self.unreadable),
        ]
    }
}

impl ReplayStatus {
    pub fn snapshot(&self) -> ReplayStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReplayStats {
            state: ReplayState::from_u8(self.state.load(Ordering::Relaxed)),
            applied: load(&self.applied),
            check_order: load(&self.check_order),
            attention: load(&self.attention),
            failed: load(&self.failed),
            unreadable: load(&self.unreadable),
            checkpoint: Position {
                segment: load(&self.checkpoint_segment),
                offset: load(&self.checkpoint_offset),
            },
            backlog_bytes: load(&self.backlog_bytes),
            released: load(&self.released),
        }
    }

    fn set_state(&self, state: ReplayState) {
        self.state.store(state.to_u8(), Ordering::Relaxed);
    }

    fn publish(&self, tally: Tally, checkpoint: Position) {
        let store = |a: &AtomicU64, n| a.store(n, Ordering::Relaxed);
        store(&self.applied, tally.applied - tally.check_order);
        store(&self.check_order, tally.check_order);
        store(&self.attention, tally.attention);
        store(&self.failed, tally.failed);
        store(&self.unreadable, tally.unreadable);
        store(&self.checkpoint_segment, checkpoint.segment);
        store(&self.checkpoint_offset, checkpoint.offset);
    }
}

static STATUS: OnceLock<Arc<ReplayStatus>> = OnceLock::new();

/// The background replayer's progress, with `--replay auto`.
pub fn status() -> Option<ReplayStats> {
    STATUS.get().map(|s| s.snapshot())
}

/// The running replayer; [`Replayer::stop`] ends it.
#[derive(Debug)]
pub struct Replayer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Replayer {
    /// Starts replaying `journal` (the proxy's own, open in `settings.dir`) until
    /// [`Replayer::stop`] or shutdown. `reachable` tells whether the proxy's own connections
    /// reach a cluster: a wait for a cluster ends early when it comes back.
    pub fn start(
        settings: AutoSettings,
        journal: &'static Journal,
        shutdown: Shutdown,
        reachable: impl Fn(Upstream) -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let status = Arc::clone(STATUS.get_or_init(Arc::default));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = {
            let stop = Arc::clone(&stop);
            move || stop.load(Ordering::Relaxed) || shutdown.is_requested()
        };
        let thread = std::thread::Builder::new()
            .name("replay".into())
            .spawn(move || run(&settings, journal, &status, stopping, reachable))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops at the next record or pause, saves the checkpoint and waits for that.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    settings: &AutoSettings,
    journal: &Journal,
    status: &ReplayStatus,
    stopping: impl Fn() -> bool,
    reachable: impl Fn(Upstream) -> bool,
) {
    let dir = &settings.dir;
    let path = dir.join("replay.checkpoint");
    let from = match checkpoint::load(&path) {
        Ok(from) => from,
        Err(e) => {
            log::error!(
                "--replay auto: {e}; nothing is replayed in the background (fix or remove the file and restart, or run `replay` once the proxy is stopped)"
            );
            status.set_state(ReplayState::Stopped);
            return;
        }
    };
    log::info!(
        "--replay auto: replaying {} from {from} in the background, at most {} records/s",
        dir.display(),
        settings.rate
    );
    let mut pass = Pass::new(
        dir,
        from,
        PassOptions {
            cluster: None,
            rate: settings.rate,
            keep_going: true,
            dry_run: false,
        },
    );
    let mut driver = Background {
        settings,
        client: None,
        last_cluster: None,
        stopping,
    };
    let mut saved = from;
    let mut saved_at = Instant::now();
    let mut released_before = 0;
    let mut backoff = FIRST_BACKOFF;
    let mut outage: Option<Instant> = None;
    status.publish(pass.tally(), from);
    status
        .backlog_bytes
        .store(backlog_bytes(dir, from), Ordering::Relaxed);
    loop {
        if (driver.stopping)() {
            break;
        }
        let from = pass.checkpoint();
        let step = pass.step(&mut driver);
        let at_end = matches!(step, Step::End);
        match step {
            Step::Done | Step::End => {
                if let Some(since) = outage.take() {
                    log::info!(
                        "--replay auto: replaying again after {:.0}s of waiting, from {}",
                        since.elapsed().as_secs_f64(),
                        from
                    );
                }
                backoff = FIRST_BACKOFF;
                status.set_state(if at_end {
                    ReplayState::Idle
                } else {
                    ReplayState::Replaying
                });
            }
            Step::Stopped(e) => {
                status.set_state(ReplayState::Waiting);
                if outage.is_none() {
                    outage = Some(Instant::now());
                    log::warn!(
                        "--replay auto: {e}; waiting for the cluster, trying again from {} (every {}s at first, up to every {}s)",
                        pass.checkpoint(),
                        FIRST_BACKOFF.as_secs(),
                        MAX_BACKOFF.as_secs()
                    );
                }
                save(&path, pass.checkpoint(), &mut saved);
                status
                    .backlog_bytes
                    .store(backlog_bytes(dir, pass.checkpoint()), Ordering::Relaxed);
                if !driver.wait_for_cluster(backoff, &reachable) {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Step::Interrupted => break,
        }
        let checkpoint = pass.checkpoint();
        status.publish(pass.tally(), checkpoint);
        if at_end || saved_at.elapsed() >= SAVE_EVERY {
            saved_at = Instant::now();
            if save(&path, checkpoint, &mut saved) {
                released_before = release(journal, checkpoint, released_before, status);
            }
            status
                .backlog_bytes
                .store(backlog_bytes(dir, checkpoint), Ordering::Relaxed);
        }
        if at_end && !driver.pause(POLL) {
            break;
        }
    }
    let checkpoint = pass.checkpoint();
    save(&path, checkpoint, &mut saved);
    status.publish(pass.tally(), checkpoint);
    status.set_state(ReplayState::Stopped);
    let tally = pass.tally();
    log::info!(
        "--replay auto: stopped at {checkpoint}: {} records applied, {} needing attention, {} failed since start",
        tally.applied,
        tally.attention,
        tally.failed
    );
}

/// Saves the checkpoint if it moved; `true` when it is saved (now or before).
fn save(path: &Path, checkpoint: Position, saved: &mut Position) -> bool {
    if checkpoint == *saved {
        return true;
    }
    match checkpoint::save(path, checkpoint) {
        Ok(()) => {
            *saved = checkpoint;
            true
        }
        Err(e) => {
            log::error!("--replay auto: {e}; a restart replays again from the last saved one");
            false
        }
    }
}

/// Releases the segments wholly before `checkpoint` (saved); the first segment not released
/// yet.
fn release(journal: &Journal, checkpoint: Position, before: u64, status: &ReplayStatus) -> u64 {
    if checkpoint.segment <= before.max(1) {
        return before;
    }
    match journal.release_through(checkpoint.segment - 1) {
        Ok(removed) => {
            if removed > 0 {
                status.released.fetch_add(removed, Ordering::Relaxed);
                log::info!(
                    "--replay auto: {removed} replayed journal segments removed (before {})",
                    checkpoint.segment
                );
            }
            checkpoint.segment
        }
        Err(e) => {
            log::error!(
                "--replay auto: cannot remove replayed journal segments: {e}; they count against --journal-max-size"
            );
            before
        }
    }
}

/// The bytes of records after `checkpoint` in the segments on disk.
fn backlog_bytes(dir: &Path, checkpoint: Position) -> u64 {
    let Ok(segments) = crate::journal::segments(dir) else {
        return 0;
    };
    segments
        .into_iter()
        .filter(|&s| s >= checkpoint.segment)
        .filter_map(|s| {
            let size = std::fs::metadata(crate::journal::segment_path(dir, s))
                .ok()?
                .len();
            let from = if s == checkpoint.segment {
                checkpoint.offset.max(HEADER_LEN as u64)
            } else {
                HEADER_LEN as u64
            };
            Some(size.saturating_sub(from))
        })
        .sum()
}

/// The background driver: a connection to the cluster of the record at hand, the log.
struct Background<'a, S> {
    settings: &'a AutoSettings,
    client: Option<(Upstream, Client)>,
    /// The cluster of the last record tried.
    last_cluster: Option<Upstream>,
    stopping: S,
}

impl<S: Fn() -> bool> Background<'_, S> {
    /// Waits `backoff`, or until the proxy's connections see the cluster of the last record
    /// come back (seen down during the wait first, so that a cluster the proxy reaches but
    /// replay cannot log in to is not tried at every check); `false` when stopping.
    fn wait_for_cluster(
        &mut self,
        backoff: Duration,
        reachable: &impl Fn(Upstream) -> bool,
    ) -> bool {
        let until = Instant::now() + backoff;
        let mut seen_down = false;
        loop {
            if (self.stopping)() {
                return false;
            }
            if let Some(cluster) = self.last_cluster {
                if !reachable(cluster) {
                    seen_down = true;
                } else if seen_down {
                    return true;
                }
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(STOP_CHECK));
        }
    }
}

impl<S: Fn() -> bool> Driver for Background<'_, S> {
    fn apply(&mut self, record: &Record) -> Result<(), ApplyError> {
        let cluster = record.cluster;
        self.last_cluster = Some(cluster);
        let client = match &mut self.client {
            Some((c, client)) if *c == cluster => client,
            _ => {
                self.client = None;
                let access = &self.settings.clusters[cluster.index()];
                let client = connect_to(
                    &access.contact_points,
                    access.credentials.as_ref(),
                    self.settings.timeout,
                )
                .map_err(|e| ApplyError::Connection(format!("the {cluster} cluster: {e}")))?;
                log::info!(
                    "--replay auto: connected to the {cluster} cluster at {} (protocol {})",
                    client.address(),
                    client.version()
                );
                &mut self.client.insert((cluster, client)).1
            }
        };
        let result = client.apply(record);
        if let Err(ApplyError::Connection(_)) = &result {
            self.client = None;
        }
        result
    }

    fn pause(&mut self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        loop {
            if (self.stopping)() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(STOP_CHECK));
        }
    }

    fn notice(&mut self, notice: Notice<'_>) {
        match notice {
            Notice::Applied {
                record,
                check_order: true,
            } => log::warn!("replay: check order: {}", describe(record)),
            Notice::Applied { .. } => {}
            Notice::Attention(record) => log::warn!("replay: attention: {}", describe(record)),
            Notice::Uncertain { record, error } => log::warn!(
                "replay: attention: replay's write may have applied ({error}), not tried again: {}",
                describe(record)
            ),
            Notice::Failed { record, error } => log::error!(
                "replay: failed (refused every try, passed): {error}: {}",
                describe(record)
            ),
            Notice::Unreadable(e) => log::error!("replay: unreadable: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JournalSettings;
    use cqlmirror_core::journal::{Outcome, WriteKind};

    /// One missed plain write (what it holds does not matter to these tests).
    fn record() -> Record {
        crate::replay::pass::tests::record(WriteKind::Plain, Outcome::NotApplied, 1)
    }

    #[test]
    fn waits_for_an_unreachable_cluster_and_stops_on_request() {
        let dir = std::env::temp_dir().join(format!("cqlmirror-background-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let journal: &'static Journal =
            Box::leak(Box::new(Journal::open(JournalSettings::new(&dir)).unwrap()));
        journal.append(record()).unwrap();
        journal.flush().unwrap();
        let nowhere = ClusterAccess {
            // Nothing listens on port 1.
            contact_points: vec![Endpoint {
                host: "127.0.0.1".into(),
                port: 1,
            }],
            credentials: None,
        };
        let settings = AutoSettings {
            dir: dir.clone(),
            clusters: [nowhere.clone(), nowhere],
            rate: 0.0,
            timeout: Duration::from_secs(1),
        };
        let shutdown = Shutdown::new();
        let replayer = Replayer::start(settings, journal, shutdown.clone(), |_| false).unwrap();
        let mut waited = 0;
        while status().map(|s| s.state) != Some(ReplayState::Waiting) {
            assert!(waited < 600, "never waiting: {:?}", status());
            std::thread::sleep(Duration::from_millis(50));
            waited += 1;
        }
        let stats = status().unwrap();
        assert_eq!((stats.applied, stats.failed), (0, 0));
        assert!(stats.backlog_bytes > 0, "{stats:?}");
        shutdown.request();
        replayer.stop();
        assert_eq!(status().unwrap().state, ReplayState::Stopped);
        // Nothing was done: the checkpoint is still the start (no file, or the start).
        assert_eq!(
            checkpoint::load(&dir.join("replay.checkpoint")).unwrap(),
            Position::START
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_backlog_counts_the_bytes_after_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("cqlmirror-backlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let journal = Journal::open(JournalSettings::new(&dir)).unwrap();
        assert_eq!(backlog_bytes(&dir, Position::START), 0);
        journal.append(record()).unwrap();
        journal.append(record()).unwrap();
        journal.flush().unwrap();
        let segment = crate::journal::segments(&dir).unwrap()[0];
        let size = std::fs::metadata(crate::journal::segment_path(&dir, segment))
            .unwrap()
            .len();
        let all = size - HEADER_LEN as u64;
        assert_eq!(backlog_bytes(&dir, Position::START), all);
        let half = Position {
            segment,
            offset: HEADER_LEN as u64 + all / 2,
        };
        assert_eq!(backlog_bytes(&dir, half), all - all / 2);
        let end = Position {
            segment,
            offset: size,
        };
        assert_eq!(backlog_bytes(&dir, end), 0);
        journal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_before_the_checkpoint_are_released() {
        let dir = std::env::temp_dir().join(format!("cqlmirror-release-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Each run of the journal starts a segment of its own.
        for _ in 0..2 {
            let journal = Journal::open(JournalSettings::new(&dir)).unwrap();
            journal.append(record()).unwrap();
            journal.close().unwrap();
        }
        let journal = Journal::open(JournalSettings::new(&dir)).unwrap();
        let segments = crate::journal::segments(&dir).unwrap();
        assert_eq!(segments.len(), 3);
        let status = ReplayStatus::default();
        let in_second = Position {
            segment: segments[1],
            offset: HEADER_LEN as u64,
        };
        let next = release(&journal, in_second, 0, &status);
        assert_eq!(next, segments[1]);
        assert_eq!(crate::journal::segments(&dir).unwrap(), &segments[1..]);
        // Released once, not again.
        assert_eq!(release(&journal, in_second, next, &status), next);
        let in_third = Position {
            segment: segments[2],
            offset: HEADER_LEN as u64,
        };
        release(&journal, in_third, next, &status);
        assert_eq!(crate::journal::segments(&dir).unwrap(), &segments[2..]);
        assert_eq!(status.snapshot().released, 2);
        assert_eq!(journal.stats().segments, 1);
        journal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
