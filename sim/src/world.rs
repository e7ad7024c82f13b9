//! The simulated world: one proxy, two clusters, clients with one session each, the network
//! between them, and a virtual clock that jumps from one due thing to the next.
//!
//! Each step takes the earliest due thing (a cluster event, a connection attempt's outcome,
//! a session timer, a piece of bytes arriving, a cluster answer, a client's next request),
//! handles everything due at that time, and lets every party react until nothing moves.
//! Pieces of bytes are delivered one at a time, and the receiver reads after each, so the way
//! a pipe cuts a stream is the way the receiver sees it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::SimClient;
use crate::cluster::{ClusterEvent, ConnectMode, SimCluster};
use crate::host::{Host, SessionLinks};
use crate::pipe::{Link, Pipe};
use crate::rng::SimRng;
use crate::scenario::Scenario;
use cqlmirror_core::config::Upstream;
use cqlmirror_core::proxy::{Proxy, WallClock};
use cqlmirror_core::session::Session;

/// A connection attempt in progress.
#[derive(Debug, Clone, Copy)]
struct Connecting {
    at: Duration,
    slot: usize,
    upstream: Upstream,
    mode: ConnectMode,
}

/// One client with its session.
#[derive(Debug)]
pub struct Slot {
    pub client: SimClient,
    /// The session, once the client connected.
    pub host: Option<Host>,
    pub links: Option<SessionLinks>,
}

/// A running simulation.
#[derive(Debug)]
pub struct World {
    scenario: Scenario,
    base: Instant,
    now: Duration,
    rng: SimRng,
    proxy: Arc<Proxy>,
    clusters: [SimCluster; 2],
    slots: Vec<Slot>,
    connecting: Vec<Connecting>,
    /// Switches of primary not applied yet.
    switches: std::collections::VecDeque<(Duration, Upstream)>,
    shutdown_done: bool,
    steps: u64,
}

impl World {
    /// A world at run time zero. `base` is the `Instant` that stands for run time zero: only
    /// offsets from it matter, so any instant will do (the core never reads a clock).
    pub fn new(scenario: Scenario, base: Instant) -> Result<Self, String> {
        let mut rng = SimRng::new(scenario.seed);
        let mut sorted = scenario.primary_switches.clone();
        sorted.sort_by_key(|&(at, _)| at);
        let scenario_switches = sorted.into_iter().collect();
        let clock = WallClock {
            instant: base,
            unix_micros: scenario.epoch_micros,
        };
        let proxy = Proxy::new(
            scenario.config.clone(),
            clock,
            cqlmirror_core::entropy::Seed(scenario.seed),
        )?;
        let clusters = [
            SimCluster::new(
                Upstream::Source,
                scenario.source.clone(),
                rng.fork(),
                scenario.epoch_micros,
            ),
            SimCluster::new(
                Upstream::Target,
                scenario.target.clone(),
                rng.fork(),
                scenario.epoch_micros,
            ),
        ];
        let slots = scenario
            .clients
            .iter()
            .enumerate()
            .map(|(i, spec)| Slot {
                client: SimClient::new(i, spec.clone(), rng.fork(), scenario.epoch_micros),
                host: None,
                links: None,
            })
            .collect();
        Ok(Self {
            scenario,
            base,
            now: Duration::ZERO,
            rng,
            proxy,
            clusters,
            slots,
            connecting: Vec::new(),
            switches: scenario_switches,
            shutdown_done: false,
            steps: 0,
        })
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Run time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    pub fn cluster(&self, upstream: Upstream) -> &SimCluster {
        &self.clusters[upstream.index()]
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Runs until nothing is left to happen or the time limit.
    pub fn run(&mut self) {
        while self.step() {}
    }

    /// Runs until run time `until` (or until nothing is left to happen).
    pub fn run_until(&mut self, until: Duration) {
        if self.steps == 0 {
            self.settle();
        }
        while self.next_time().is_some_and(|t| t <= until) && self.step() {}
        self.now = self.now.max(until);
    }

    /// Takes one step; false when nothing is left to happen before the time limit.
    pub fn step(&mut self) -> bool {
        if self.steps == 0 {
            // Clients due at time zero connect.
            self.settle();
        }
        let Some(at) = self.next_time() else {
            return false;
        };
        if at > self.scenario.time_limit {
            return false;
        }
        self.now = self.now.max(at);
        self.steps += 1;
        let now = self.now;
        // The proxy's inputs: switches of primary, then shutdown.
        while self.switches.front().is_some_and(|&(when, _)| when <= now) {
            if let Some((_, upstream)) = self.switches.pop_front() {
                self.proxy.set_primary(upstream);
            }
        }
        if !self.shutdown_done && self.scenario.shutdown_at.is_some_and(|t| t <= now) {
            self.shutdown_done = true;
            for s in &mut self.slots {
                if let (Some(host), Some(links)) = (&mut s.host, &mut s.links) {
                    host.shutdown(links, now);
                }
            }
        }
        // Cluster events.
        for which in Upstream::BOTH {
            for event in self.clusters[which.index()].take_due_events(now) {
                if event == ClusterEvent::DropConnections {
                    self.drop_connections(which);
                }
            }
        }
        // Connection attempts that end now.
        let (due, later): (Vec<Connecting>, Vec<Connecting>) =
            self.connecting.iter().partition(|c| c.at <= now);
        self.connecting = later;
        for c in due {
            self.finish_connect(c);
        }
        // Session timers.
        for s in &mut self.slots {
            if let (Some(host), Some(links)) = (&mut s.host, &mut s.links) {
                host.on_time(links, now);
            }
        }
        self.settle();
        // Bytes arriving, one piece at a time.
        loop {
            let mut delivered = false;
            for i in 0..self.slots.len() {
                let Some(links) = self.slots[i].links.as_mut() else {
                    continue;
                };
                let mut pipes: Vec<&mut Pipe> = vec![&mut links.client.up, &mut links.client.down];
                for link in links.upstreams.iter_mut().flatten() {
                    pipes.push(&mut link.up);
                    pipes.push(&mut link.down);
                }
                let mut any = false;
                for pipe in pipes {
                    if pipe.deliver_one(now) {
                        any = true;
                    }
                }
                if any {
                    delivered = true;
                    self.settle();
                }
            }
            if !delivered {
                break;
            }
        }
        self.settle();
        true
    }

    /// The earliest thing due after now.
    fn next_time(&self) -> Option<Duration> {
        let now = self.now;
        let mut times: Vec<Duration> = Vec::new();
        times.extend(self.connecting.iter().map(|c| c.at));
        times.extend(self.switches.front().map(|&(at, _)| at));
        if !self.shutdown_done {
            times.extend(self.scenario.shutdown_at);
        }
        for c in &self.clusters {
            times.extend(c.next_wakeup());
        }
        for s in &self.slots {
            times.extend(s.client.next_wakeup(now));
            if let Some(host) = &s.host {
                times.extend(host.next_timeout());
            }
            if let Some(links) = &s.links {
                times.extend(links.client.up.next_arrival());
                times.extend(links.client.down.next_arrival());
                for link in links.upstreams.iter().flatten() {
                    times.extend(link.up.next_arrival());
                    times.extend(link.down.next_arrival());
                }
            }
        }
        // Anything due now was handled in this step; what is still due is blocked and moves
        // only when something else happens, except bytes or connections due right now.
        let due_now = self.pieces_due() || self.connecting.iter().any(|c| c.at <= now);
        if due_now {
            return Some(now);
        }
        times.into_iter().filter(|&t| t > now).min()
    }

    fn pieces_due(&self) -> bool {
        let now = self.now;
        self.slots
            .iter()
            .filter_map(|s| s.links.as_ref())
            .any(|links| {
                let mut due = links.client.up.next_arrival().is_some_and(|t| t <= now)
                    || links.client.down.next_arrival().is_some_and(|t| t <= now);
                for link in links.upstreams.iter().flatten() {
                    due |= link.up.next_arrival().is_some_and(|t| t <= now)
                        || link.down.next_arrival().is_some_and(|t| t <= now);
                }
                due
            })
    }

    /// Lets every party react until nothing moves.
    fn settle(&mut self) {
        let now = self.now;
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            let mut progress = false;
            for i in 0..self.slots.len() {
                progress |= self.start_slot(i);
                let slot = &mut self.slots[i];
                let (Some(host), Some(links)) = (&mut slot.host, &mut slot.links) else {
                    continue;
                };
                progress |= slot.client.pump(&mut links.client, now);
                progress |= host.pump(links, now);
                for which in Upstream::BOTH {
                    if let Some(link) = links.upstreams[which.index()].as_mut() {
                        progress |= self.clusters[which.index()].pump(i, link, now);
                    }
                }
                for (upstream, _endpoint) in host.take_connects() {
                    let (mode, after) = self.clusters[upstream.index()].connect();
                    self.connecting.push(Connecting {
                        at: now + after,
                        slot: i,
                        upstream,
                        mode,
                    });
                    progress = true;
                }
                self.collect_markers(i);
            }
            if !progress || rounds > 10_000 {
                break;
            }
        }
    }

    /// Creates the session of a client whose time has come.
    fn start_slot(&mut self, i: usize) -> bool {
        let now = self.now;
        let slot = &mut self.slots[i];
        // A proxy that shuts down accepts no new clients.
        if slot.host.is_some() || now < slot.client.spec().start_at || self.shutdown_done {
            return false;
        }
        let n = self.scenario.network;
        let mut links = SessionLinks {
            client: Link::new(n.client_up, n.client_down, &mut self.rng),
            upstreams: [None, None],
        };
        let (ip, port) = crate::client::PROXY_ADDRESS;
        let local = std::net::SocketAddr::from((ip, port));
        let session = Session::accepted(Arc::clone(&self.proxy), local, self.base + now);
        let mut host = Host::new(
            session,
            self.scenario.engine,
            self.base,
            self.scenario.proxy_max_read,
        );
        if self.scenario.track_held_answers {
            host.track_held_answers();
        }
        host.start(&mut links, now);
        slot.host = Some(host);
        slot.links = Some(links);
        true
    }

    fn finish_connect(&mut self, c: Connecting) {
        let now = self.now;
        let n = self.scenario.network;
        let slot = &mut self.slots[c.slot];
        let (Some(host), Some(links)) = (&mut slot.host, &mut slot.links) else {
            return;
        };
        if !host.wants_connection(c.upstream) {
            return;
        }
        match c.mode {
            ConnectMode::Accept => {
                links.upstreams[c.upstream.index()] =
                    Some(Link::new(n.upstream_up, n.upstream_down, &mut self.rng));
                self.clusters[c.upstream.index()].accept(c.slot);
                host.connected(c.upstream, links, now);
            }
            ConnectMode::Refuse => host.connect_failed(c.upstream, links, now),
            ConnectMode::Hang => {}
        }
    }

    fn drop_connections(&mut self, which: Upstream) {
        let now = self.now;
        for i in 0..self.slots.len() {
            let Some(links) = self.slots[i].links.as_mut() else {
                continue;
            };
            if let Some(link) = links.upstreams[which.index()].as_mut() {
                link.reset(now);
                self.clusters[which.index()].connection_lost(i);
            }
        }
    }

    /// Hands the markers reached on a slot's pipes to their owners.
    fn collect_markers(&mut self, i: usize) {
        let Some(links) = self.slots[i].links.as_mut() else {
            return;
        };
        let mut reached = links.client.up.take_reached();
        for link in links.upstreams.iter_mut().flatten() {
            reached.extend(link.down.take_reached());
        }
        for (id, at) in reached {
            let kind = id >> 56;
            let owner = ((id >> 40) & 0xffff) as usize;
            let index = (id & 0xff_ffff_ffff) as usize;
            match kind {
                1 => {
                    if let Some(s) = self.slots.get_mut(owner) {
                        s.client.request_consumed(index, at);
                    }
                }
                2 => {
                    if let Some(c) = self.clusters.get_mut(owner) {
                        c.answer_delivered(index, at);
                    }
                }
                3 => {
                    if let Some(c) = self.clusters.get_mut(owner) {
                        c.push_delivered(index, at);
                    }
                }
                _ => {}
            }
        }
    }
}
