//! The upstream machinery every proxy app on a core shares: clusters, load
//! balancing ([`lb`]), circuit breakers, outlier detection and connect
//! deadlines, behind one connector.
//!
//! An app asks for an upstream connection with [`Upstreams::acquire`]; that
//! passes the cluster's circuit breakers (gauges over all cores), picks an
//! endpoint by the cluster's policy and opens the connection on this core's
//! engine. The app reports the handshake's end with [`Upstreams::connected`]
//! and gives the connection back with [`Upstreams::release`] and an
//! [`Outcome`], which settles the counters, the breakers and the endpoint's
//! health. An [`Upstream`] is a handle that cannot be copied: it is released
//! once. The connector keeps each handshake's deadline and its owner (the
//! app that acquired it): [`Upstreams::expired`] names the handshakes past
//! their connect timeout and whose they are. A connection pool can later
//! sit behind the same calls.
//!
//! Clusters live in slots that keep their index while a connection uses
//! them: a cluster removed by an update takes no new connections and is
//! forgotten with its last one.

pub mod lb;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hashbrown::HashMap;
use netstack::Instant;
use netstack::tcp::{ConnId, Engine};

use crate::live::{ClusterLive, Update};
use crate::metrics::{ClusterGauges, ClusterHistograms, Counters};
use crate::slab::Slab;
use lb::{Balancer, Verdict};

/// A cluster's slot on this core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(u32);

/// An upstream connection handed out by [`Upstreams::acquire`], until it
/// is given back to [`Upstreams::release`] (not `Copy`: released once).
#[derive(Debug, PartialEq, Eq)]
pub struct Upstream {
    pub cluster: ClusterId,
    /// The endpoint's index in its cluster's balancer.
    pub endpoint: usize,
    /// The connection on this core's engine.
    pub conn: ConnId,
}

/// An endpoint chosen by [`Upstreams::pick`], held until it is connected
/// to or given back (not `Copy`: used once).
#[derive(Debug, PartialEq, Eq)]
pub struct Pick {
    pub cluster: ClusterId,
    pub endpoint: usize,
}

/// One HTTP request counted against its cluster's `max_requests`, given
/// back when dropped (whatever ends the request).
#[derive(Debug)]
pub struct RequestSlot(Arc<ClusterGauges>);

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Relaxed);
    }
}

/// Why no upstream connection could be opened. Each is counted on the
/// cluster (and by the caller on its listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The cluster is not (or no longer) configured.
    #[error("no such cluster")]
    UnknownCluster,
    /// A circuit breaker is full: `max_connections` or `max_pending`.
    #[error("circuit breaker open (cluster overflow)")]
    Overflow,
    /// The cluster has no endpoint.
    #[error("no endpoint in the cluster")]
    NoEndpoint,
    /// The chosen endpoint has no route from any port.
    #[error("no route to the endpoint")]
    NoRoute,
    /// The engine could not open the connection (table full, no local port).
    #[error("no local connection slot or port")]
    LocalExhausted,
}

impl ConnectError {
    /// Whether trying again later (or another host) may succeed; a full
    /// breaker is a refusal the caller must not retry at once, as Envoy
    /// does not retry an overflow.
    pub fn is_retryable(self) -> bool {
        matches!(self, ConnectError::NoRoute | ConnectError::LocalExhausted)
    }
}

/// How an upstream connection ended, for [`Upstreams::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It connected and is done (whatever happened after).
    Done,
    /// The handshake was refused or reset.
    ConnectFailed,
    /// The handshake did not complete within the cluster's connect timeout.
    ConnectTimeout,
    /// Given up before the handshake ended, for a reason not the
    /// endpoint's (the client left, the worker stops).
    Abandoned,
}

/// One cluster as this core sees it.
#[derive(Debug)]
struct Cluster {
    live: Arc<ClusterLive>,
    lb: Balancer,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    /// Connections acquired and not released.
    users: u32,
    removed: bool,
}

impl Cluster {
    fn new(live: &Arc<ClusterLive>, seed: u64) -> Cluster {
        let mut c = Cluster {
            lb: Balancer::new(live, seed),
            live: live.clone(),
            connect_timeout: Duration::ZERO,
            idle_timeout: None,
            users: 0,
            removed: false,
        };
        c.update(live);
        c
    }

    fn update(&mut self, live: &Arc<ClusterLive>) {
        let c = &live.cfg;
        self.connect_timeout = Duration::from_millis(c.connect_timeout_ms);
        self.idle_timeout =
            (c.idle_timeout_ms > 0).then(|| Duration::from_millis(c.idle_timeout_ms));
        if !Arc::ptr_eq(&self.live, live) {
            self.lb.update(live);
        }
        self.live = live.clone();
    }
}

/// One core's clusters and its upstream connections in their handshake.
#[derive(Debug)]
pub struct Upstreams {
    /// This worker's index: its slot in every `PerCore` counter.
    core: usize,
    seed: u64,
    clusters: Slab<Cluster>,
    by_name: HashMap<String, u32>,
    /// Handshake deadlines: only the due ones are looked at, whatever the
    /// number of clusters.
    deadlines: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Handshakes under way, and the app that owns each.
    /// Handshakes in progress: the app that owns each, and when it began.
    handshakes: HashMap<ConnId, (usize, Instant)>,
}

impl Upstreams {
    /// No clusters yet, for worker `core`; `seed` varies the balancers'
    /// random choices per core.
    pub fn new(core: usize, seed: u64) -> Upstreams {
        Upstreams {
            core,
            seed,
            clusters: Slab::new(),
            by_name: HashMap::new(),
            deadlines: BinaryHeap::new(),
            handshakes: HashMap::new(),
        }
    }

    /// Take an update's clusters: new ones are added, changed ones updated
    /// in place (endpoints keep their health and counts by address),
    /// removed ones take no new connections and go with their last.
    pub fn apply(&mut self, u: &Update) {
        for name in &u.remove_clusters {
            if let Some(ci) = self.by_name.remove(name) {
                self.clusters[ci].removed = true;
                self.forget_if_unused(ci);
            }
        }
        for c in &u.clusters {
            match self.by_name.get(&c.cfg.name) {
                Some(&ci) => self.clusters[ci].update(c),
                None => {
                    let seed = self
                        .seed
                        .wrapping_add(self.clusters.capacity() as u64)
                        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let ci = self.clusters.insert(Cluster::new(c, seed));
                    self.by_name.insert(c.cfg.name.clone(), ci);
                }
            }
        }
    }

    /// Open a connection to an endpoint of `cluster` for app `owner`:
    /// endpoint choice ([`Upstreams::pick`]), then [`Upstreams::connect`].
    /// Apps call it through [`crate::Cx::acquire`].
    pub fn acquire(
        &mut self,
        cluster: &str,
        now: Instant,
        e: &mut Engine,
        owner: usize,
    ) -> Result<Upstream, ConnectError> {
        let p = self.pick(cluster, now)?;
        self.connect(p, now, e, owner)
    }

    /// Choose an endpoint of `cluster` by its policy. The choice holds the
    /// endpoint (its slot, and one count for `least_connections`) until it
    /// is given to [`Upstreams::connect`], which passes the hold to the
    /// connection, or back to [`Upstreams::unpick`] (a pooled connection to
    /// that endpoint is used instead).
    pub fn pick(&mut self, cluster: &str, now: Instant) -> Result<Pick, ConnectError> {
        let &ci = self
            .by_name
            .get(cluster)
            .ok_or(ConnectError::UnknownCluster)?;
        let c = &mut self.clusters[ci];
        match c.lb.pick(now) {
            Some(ep) => {
                c.users += 1;
                Ok(Pick {
                    cluster: ClusterId(ci),
                    endpoint: ep,
                })
            }
            None => {
                c.live.stats.get(self.core).no_upstream.inc();
                Err(ConnectError::NoEndpoint)
            }
        }
    }

    /// Give back a choice not used for a new connection.
    pub fn unpick(&mut self, p: Pick) {
        let ci = p.cluster.0;
        let c = &mut self.clusters[ci];
        c.lb.release(p.endpoint);
        c.users -= 1;
        self.forget_if_unused(ci);
    }

    /// Open a connection to the endpoint of `p` for app `owner`: breakers,
    /// then the engine's active open (its `Connected` or `Closed` event
    /// follows). Counts the attempt, or the refusal on the cluster.
    pub fn connect(
        &mut self,
        p: Pick,
        now: Instant,
        e: &mut Engine,
        owner: usize,
    ) -> Result<Upstream, ConnectError> {
        let ci = p.cluster.0;
        let ep = p.endpoint;
        let c = &mut self.clusters[ci];
        let cs = c.live.stats.get(self.core);
        let g = &c.live.gauges;
        let limits = &c.live.cfg.limits;
        let refused = if !ClusterGauges::take(&g.open, limits.max_connections) {
            Some(ConnectError::Overflow)
        } else if !ClusterGauges::take(&g.pending, limits.max_pending) {
            g.open.fetch_sub(1, Relaxed);
            Some(ConnectError::Overflow)
        } else {
            None
        };
        if let Some(why) = refused {
            cs.overflows.inc();
            self.unpick(p);
            return Err(why);
        }
        let target = &c.lb.endpoints()[ep];
        let a = target.addr;
        let opened = match target.source {
            None => Err(ConnectError::NoRoute),
            Some(src) => e
                .connect(now, src, (*a.ip(), a.port()))
                .ok_or(ConnectError::LocalExhausted),
        };
        let conn = match opened {
            Ok(x) => x,
            Err(why) => {
                g.open.fetch_sub(1, Relaxed);
                g.pending.fetch_sub(1, Relaxed);
                cs.no_upstream.inc();
                self.unpick(p);
                return Err(why);
            }
        };
        self.deadlines
            .push(Reverse((now + c.connect_timeout, conn)));
        self.handshakes.insert(conn, (owner, now));
        let up = Upstream {
            cluster: ClusterId(ci),
            endpoint: ep,
            conn,
        };
        for c in self.counters(&up) {
            c.cx_total.inc();
            c.cx_connecting.inc();
        }
        Ok(up)
    }

    /// `up`'s handshake completed (once; later calls do nothing).
    pub fn connected(&mut self, up: &Upstream, now: Instant) {
        let Some((_, began)) = self.handshakes.remove(&up.conn) else {
            return;
        };
        if let Some(h) = self.histograms(up) {
            h.upstream_cx_connect_ms
                .record_us(now.saturating_since(began).as_micros() as u64);
        }
        let c = &mut self.clusters[up.cluster.0];
        c.live.gauges.pending.fetch_sub(1, Relaxed);
        c.lb.connect_succeeded(up.endpoint);
        for c in self.counters(up) {
            c.cx_connected.inc();
            Counters::dec(&c.cx_connecting);
        }
    }

    /// Give `up` back. Settles the breakers and the counters, and feeds a
    /// failed handshake to outlier detection.
    pub fn release(&mut self, up: Upstream, outcome: Outcome, now: Instant) {
        let connected = self.handshakes.remove(&up.conn).is_none();
        match outcome {
            Outcome::ConnectFailed | Outcome::ConnectTimeout => {
                for c in self.counters(&up) {
                    match outcome {
                        Outcome::ConnectFailed => c.connect_failures.inc(),
                        _ => c.connect_timeouts.inc(),
                    }
                }
                self.connect_failed(&up, now);
            }
            Outcome::Done | Outcome::Abandoned => {}
        }
        let ci = up.cluster.0;
        let c = &mut self.clusters[ci];
        c.lb.release(up.endpoint);
        c.users -= 1;
        let g = &c.live.gauges;
        g.open.fetch_sub(1, Relaxed);
        if !connected {
            g.pending.fetch_sub(1, Relaxed);
            for c in self.counters(&up) {
                Counters::dec(&c.cx_connecting);
            }
        }
        for c in self.counters(&up) {
            c.cx_closed.inc();
        }
        self.forget_if_unused(ci);
    }

    fn connect_failed(&mut self, up: &Upstream, now: Instant) {
        let c = &mut self.clusters[up.cluster.0];
        if c.lb.connect_failed(up.endpoint, now) == Verdict::Ejected {
            tracing::warn!(
                "cluster {}: endpoint {} ejected after repeated connect failures",
                c.live.cfg.name,
                c.lb.endpoints()[up.endpoint].addr
            );
            for c in self.counters(up) {
                c.ejections.inc();
            }
        }
    }

    /// The handshakes past their connect timeout, each with the app that
    /// owns it (which then releases it with [`Outcome::ConnectTimeout`]).
    /// One whose `Connected` is still queued is not among them. Cheap when
    /// none is due.
    pub fn expired(&mut self, now: Instant, e: &Engine) -> Vec<(usize, ConnId)> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, id))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if let Some(&(owner, _)) = self.handshakes.get(&id)
                && !e.connection(id).is_some_and(|c| c.is_established())
            {
                out.push((owner, id));
            }
        }
        out
    }

    /// When [`Upstreams::expired`] may next have something.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// A place for one HTTP request to the cluster of `p`, within its
    /// `max_requests` breaker; held until dropped. `None`: the breaker is
    /// full (counted as an overflow on the cluster).
    pub fn request_slot(&self, p: &Pick) -> Option<RequestSlot> {
        let c = &self.clusters[p.cluster.0];
        let g = &c.live.gauges;
        if ClusterGauges::take(&g.requests, c.live.cfg.limits.max_requests) {
            Some(RequestSlot(g.clone()))
        } else {
            c.live.stats.get(self.core).overflows.inc();
            None
        }
    }

    /// Whether `up`'s endpoint is still configured in a configured cluster
    /// (a pooled connection to one that is not should close).
    pub fn is_current(&self, up: &Upstream) -> bool {
        let c = &self.clusters[up.cluster.0];
        !c.removed
            && c.lb
                .endpoints()
                .get(up.endpoint)
                .is_some_and(|e| !e.removed)
    }

    /// The idle timeout of `up`'s cluster, if it has one.
    pub fn idle_timeout(&self, up: &Upstream) -> Option<Duration> {
        self.clusters[up.cluster.0].idle_timeout
    }

    /// The counters of an upstream connection: its cluster's and endpoint's.
    pub fn counters(&self, up: &Upstream) -> [&Counters; 2] {
        let c = &self.clusters[up.cluster.0];
        [
            c.live.stats.get(self.core),
            c.lb.endpoints()[up.endpoint].stats.get(self.core),
        ]
    }

    /// The latency histograms and response codes of `up`'s cluster on
    /// this core.
    pub fn histograms(&self, up: &Upstream) -> Option<&ClusterHistograms> {
        self.clusters
            .get(up.cluster.0)
            .map(|c| c.live.histograms.get(self.core))
    }

    fn forget_if_unused(&mut self, ci: u32) {
        if self
            .clusters
            .get(ci)
            .is_some_and(|c| c.removed && c.users == 0)
        {
            self.clusters.remove(ci);
        }
    }
}
