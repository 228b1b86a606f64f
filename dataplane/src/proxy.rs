//! The L4 proxy: client connections accepted on a listener are spliced to an
//! upstream connection opened on the same core, bytes moving from one side's
//! receive queue to the other's send queue by reference.
//!
//! Driven only by the TCP engine's events and the worker's clock, like the
//! services; one `Proxy` per core, sharing nothing with the others but the
//! clusters' circuit-breaker gauges and the counters the admin thread reads.
//!
//! A session's life:
//! - accept, pick an endpoint (`lb`), pass the circuit breakers, open the
//!   upstream connection. The client's bytes wait in its receive queue (its
//!   window closes) until the upstream handshake completes;
//! - splice both ways. What a side's send queue does not take is held, and
//!   the other side is not read until it drains: backpressure reaches the
//!   sender as a closed window, and memory stays bounded by the send buffers;
//! - a FIN is forwarded as a half-close once everything before it is sent;
//!   a reset (or a retransmission give-up) on one side resets the other;
//! - the session ends when both connections are closed, or at once (both
//!   reset) on a connect failure, a connect timeout or an idle timeout.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use dataplane_config::{Config, parse_socket_addr};
use hashbrown::HashMap;
use netstack::tcp::{CloseReason, ConnId, Engine, Event};
use netstack::{Counter, Instant};

use crate::lb::{Balancer, Verdict};

/// Counters of one listener, cluster or endpoint on one core. Not every
/// field means something at every level; the stats document shows the ones
/// that do.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections: accepted (listener) or opened upstream (cluster, endpoint).
    pub cx_total: Counter,
    /// Of those, ended. Active = total - closed.
    pub cx_closed: Counter,
    /// Upstream handshakes not completed yet (gauge: opened - settled).
    pub cx_connecting: Counter,
    pub cx_connected: Counter,
    /// Client to upstream.
    pub bytes_up: Counter,
    /// Upstream to client.
    pub bytes_down: Counter,
    /// Upstream handshakes refused or reset.
    pub connect_failures: Counter,
    pub connect_timeouts: Counter,
    /// Client connections refused by a circuit breaker.
    pub overflows: Counter,
    /// Client connections refused for want of an endpoint or a way to reach
    /// it (empty cluster, no route, connection table full).
    pub no_upstream: Counter,
    /// Client connections closed before reaching an upstream (any of the
    /// reasons above, or draining).
    pub refused: Counter,
    /// Sessions ended by a reset from either side or a retransmission
    /// give-up.
    pub resets: Counter,
    pub idle_timeouts: Counter,
    /// Times an endpoint was ejected by outlier detection.
    pub ejections: Counter,
}

/// The proxy counters of one core.
#[derive(Debug)]
pub struct ProxyStats {
    /// Set once this core has stopped listening (draining).
    pub drained: AtomicBool,
    pub listeners: Vec<Counters>,
    pub clusters: Vec<Counters>,
    /// `[cluster][endpoint]`.
    pub endpoints: Vec<Vec<Counters>>,
}

impl ProxyStats {
    /// The counters of a session's listener, cluster and endpoint.
    fn all(&self, li: usize, ci: usize, ep: usize) -> [&Counters; 3] {
        [
            &self.listeners[li],
            &self.clusters[ci],
            &self.endpoints[ci][ep],
        ]
    }

    /// The counters of an upstream connection: its cluster's and endpoint's.
    fn upstream(&self, ci: usize, ep: usize) -> [&Counters; 2] {
        [&self.clusters[ci], &self.endpoints[ci][ep]]
    }

    pub fn new(cfg: &Config) -> ProxyStats {
        ProxyStats {
            drained: AtomicBool::new(false),
            listeners: cfg.listeners.iter().map(|_| Counters::default()).collect(),
            clusters: cfg.clusters.iter().map(|_| Counters::default()).collect(),
            endpoints: cfg
                .clusters
                .iter()
                .map(|c| c.endpoints.iter().map(|_| Counters::default()).collect())
                .collect(),
        }
    }
}

/// A cluster's connections over all cores, for its circuit breakers.
#[derive(Debug, Default)]
pub struct ClusterGauges {
    /// Upstream connections open or opening.
    pub open: AtomicU32,
    /// Of those, still in their handshake.
    pub pending: AtomicU32,
}

impl ClusterGauges {
    pub fn for_config(cfg: &Config) -> Arc<[ClusterGauges]> {
        cfg.clusters
            .iter()
            .map(|_| ClusterGauges::default())
            .collect()
    }
}

/// Take one unit of `g` if that keeps it within `max`.
fn take(g: &AtomicU32, max: u32) -> bool {
    g.fetch_update(Relaxed, Relaxed, |v| (v < max).then_some(v + 1))
        .is_ok()
}

#[derive(Debug)]
struct Cluster {
    lb: Balancer,
    /// Per endpoint: the address of ours its connections leave from (`None`:
    /// no route to it).
    sources: Vec<Option<Ipv4Addr>>,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    max_connections: u32,
    max_pending: u32,
}

#[derive(Debug)]
struct Session {
    listener: usize,
    cluster: usize,
    endpoint: usize,
    down: ConnId,
    up: ConnId,
    connected: bool,
    down_open: bool,
    up_open: bool,
    /// Taken from the client, not yet taken by the upstream's send queue.
    to_up: Option<Bytes>,
    /// Taken from the upstream, not yet taken by the client's send queue.
    to_down: Option<Bytes>,
    fin_sent_up: bool,
    fin_sent_down: bool,
    /// The client's FIN was seen (its stream is complete): forward it once
    /// `to_up` is sent, even if the client's connection is gone by then.
    eof_down: bool,
    /// The upstream's FIN was seen.
    eof_up: bool,
    last_active: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client to upstream.
    Up,
    /// Upstream to client.
    Down,
}

#[derive(Debug)]
pub struct Proxy {
    /// Bound `(address, port)` → listener index.
    bound: HashMap<(Ipv4Addr, u16), usize>,
    listener_cluster: Vec<usize>,
    clusters: Vec<Cluster>,
    sessions: Vec<Option<Session>>,
    free: Vec<u32>,
    by_conn: HashMap<ConnId, u32>,
    /// Upstream handshake deadlines (session slot, client side's id): only
    /// the due ones are looked at, whatever the number of clusters.
    connecting: BinaryHeap<Reverse<(Instant, u32, ConnId)>>,
    /// Idle deadlines (sessions of clusters with an idle timeout): checked
    /// against the session's last activity when due.
    idle: BinaryHeap<Reverse<(Instant, u32, ConnId)>>,
    stats: Arc<ProxyStats>,
    gauges: Arc<[ClusterGauges]>,
}

impl Proxy {
    /// Listen on every listener's address (each port's address for
    /// `0.0.0.0`). `source` says which address of ours reaches a given
    /// upstream; `seed` varies the balancers' random choices per core.
    pub fn new(
        cfg: &Config,
        port_addrs: &[Ipv4Addr],
        source: impl Fn(Ipv4Addr) -> Option<Ipv4Addr>,
        gauges: Arc<[ClusterGauges]>,
        seed: u64,
        engine: &mut Engine,
    ) -> Proxy {
        let backlog = cfg.tcp.backlog as usize;
        let index: HashMap<&str, usize> = cfg
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let mut bound = HashMap::new();
        let mut listener_cluster = Vec::new();
        for (li, l) in cfg.listeners.iter().enumerate() {
            // Validated: the address parses and the cluster exists.
            listener_cluster.push(
                index
                    .get(l.tcp_proxy.cluster.as_str())
                    .copied()
                    .unwrap_or(0),
            );
            let Ok(sa) = parse_socket_addr(&l.address) else {
                continue;
            };
            let addrs: Vec<Ipv4Addr> = if sa.ip().is_unspecified() {
                port_addrs.to_vec()
            } else {
                vec![*sa.ip()]
            };
            for a in addrs {
                engine.listen(a, sa.port(), backlog);
                bound.insert((a, sa.port()), li);
            }
        }
        let clusters = cfg
            .clusters
            .iter()
            .enumerate()
            .map(|(ci, c)| {
                let lb = Balancer::new(
                    c,
                    seed.wrapping_add(ci as u64)
                        .wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                let sources = lb
                    .endpoints()
                    .iter()
                    .map(|e| source(*e.addr.ip()))
                    .collect();
                Cluster {
                    lb,
                    sources,
                    connect_timeout: Duration::from_millis(c.connect_timeout_ms),
                    idle_timeout: (c.idle_timeout_ms > 0)
                        .then(|| Duration::from_millis(c.idle_timeout_ms)),
                    max_connections: c.limits.max_connections,
                    max_pending: c.limits.max_pending,
                }
            })
            .collect();
        Proxy {
            bound,
            listener_cluster,
            clusters,
            sessions: Vec::new(),
            free: Vec::new(),
            by_conn: HashMap::new(),
            connecting: BinaryHeap::new(),
            idle: BinaryHeap::new(),
            stats: Arc::new(ProxyStats::new(cfg)),
            gauges,
        }
    }

    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.stats
    }

    /// Stop accepting: connections that completed their handshake are
    /// still taken, then the listeners go (later SYNs and handshakes in
    /// progress are reset); sessions carry on.
    pub fn drain(&mut self, e: &mut Engine, now: Instant) {
        if self.stats.drained.load(Relaxed) {
            return;
        }
        let bound: Vec<((Ipv4Addr, u16), usize)> =
            self.bound.iter().map(|(k, v)| (*k, *v)).collect();
        for ((a, p), li) in bound {
            while let Some(id) = e.accept(a, p) {
                self.open(e, now, li, id);
            }
            e.unlisten(a, p);
        }
        self.stats.drained.store(true, Relaxed);
    }

    /// Reset every session (when the worker stops).
    pub fn abort_all(&mut self, e: &mut Engine) {
        for k in 0..self.sessions.len() as u32 {
            if self.sessions[k as usize].is_some() {
                self.end(e, k, true);
            }
        }
    }

    /// Run due connect and idle timeouts. Cheap when none is due.
    pub fn tick(&mut self, e: &mut Engine, now: Instant) {
        while let Some(&Reverse((at, k, down))) = self.connecting.peek() {
            if at > now {
                break;
            }
            self.connecting.pop();
            let Some(s) = self.session(k, down) else {
                continue;
            };
            // Connected, or its `Connected` is still queued.
            if s.connected || e.connection(s.up).is_some_and(|c| c.is_established()) {
                continue;
            }
            let (ci, ep) = (s.cluster, s.endpoint);
            for c in self.stats.upstream(ci, ep) {
                c.connect_timeouts.inc();
            }
            self.connect_failed(ci, ep, now);
            self.refuse_session(e, k);
        }
        // Entries of ended sessions wait for their time; when they are most
        // of the heap, drop them at once.
        if self.idle.len() > 2 * self.by_conn.len() + 1024 {
            let sessions = &self.sessions;
            self.idle.retain(|Reverse((_, k, down))| {
                sessions
                    .get(*k as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.down == *down)
            });
        }
        while let Some(&Reverse((at, k, down))) = self.idle.peek() {
            if at > now {
                break;
            }
            self.idle.pop();
            let Some(s) = self.session(k, down) else {
                continue;
            };
            let Some(idle) = self.clusters[s.cluster].idle_timeout else {
                continue;
            };
            // Not connected yet: the connect timeout's business.
            let due = if s.connected {
                s.last_active + idle
            } else {
                now + idle
            };
            if due > now {
                self.idle.push(Reverse((due, k, down)));
                continue;
            }
            let (li, ci, ep) = (s.listener, s.cluster, s.endpoint);
            for c in self.stats.all(li, ci, ep) {
                c.idle_timeouts.inc();
            }
            self.end(e, k, true);
        }
    }

    /// Handle `ev` if it names one of the proxy's listeners or connections;
    /// otherwise give it back (it is the services').
    pub fn handle(&mut self, e: &mut Engine, now: Instant, ev: Event) -> Option<Event> {
        match ev {
            Event::Incoming { listener } => {
                let Some(&li) = self.bound.get(&listener) else {
                    return Some(ev);
                };
                while let Some(id) = e.accept(listener.0, listener.1) {
                    self.open(e, now, li, id);
                }
            }
            Event::Connected(id) => {
                let Some((k, _)) = self.side(id) else {
                    return Some(ev);
                };
                let s = self.sessions[k as usize].as_mut()?;
                if s.up != id || s.connected {
                    return None;
                }
                s.connected = true;
                s.last_active = now;
                let (ci, ep) = (s.cluster, s.endpoint);
                self.gauges[ci].pending.fetch_sub(1, Relaxed);
                for c in self.stats.upstream(ci, ep) {
                    c.cx_connected.inc();
                    c.cx_connecting.set(c.cx_connecting.get().wrapping_sub(1));
                }
                self.clusters[ci].lb.connect_succeeded(ep);
                self.pump(e, now, k, Dir::Up);
                self.pump(e, now, k, Dir::Down);
            }
            Event::Readable(id) | Event::PeerClosed(id) => {
                let Some((k, down)) = self.side(id) else {
                    return Some(ev);
                };
                self.pump(e, now, k, if down { Dir::Up } else { Dir::Down });
                self.finish_if_done(e, k);
            }
            Event::Writable(id) => {
                let Some((k, down)) = self.side(id) else {
                    return Some(ev);
                };
                self.pump(e, now, k, if down { Dir::Down } else { Dir::Up });
                self.finish_if_done(e, k);
            }
            Event::Closed(id, reason) => {
                let Some((k, down)) = self.side(id) else {
                    return Some(ev);
                };
                self.closed(e, now, k, down, id, reason);
            }
        }
        None
    }

    /// The session of `id`, and whether `id` is its client side.
    fn side(&self, id: ConnId) -> Option<(u32, bool)> {
        let &k = self.by_conn.get(&id)?;
        let s = self.sessions[k as usize].as_ref()?;
        Some((k, s.down == id))
    }

    /// Session `k` if it is still the one whose client side is `down`.
    fn session(&self, k: u32, down: ConnId) -> Option<&Session> {
        self.sessions
            .get(k as usize)?
            .as_ref()
            .filter(|s| s.down == down)
    }

    /// A new client connection on listener `li`: pick an endpoint and open
    /// the upstream side, or refuse it (reset) and count why.
    fn open(&mut self, e: &mut Engine, now: Instant, li: usize, down: ConnId) {
        let ci = self.listener_cluster[li];
        let ls = &self.stats.listeners[li];
        ls.cx_total.inc();
        let cs = &self.stats.clusters[ci];
        let g = &self.gauges[ci];
        let c = &mut self.clusters[ci];
        if !take(&g.open, c.max_connections) {
            cs.overflows.inc();
            ls.overflows.inc();
            return self.refuse(e, li, down);
        }
        if !take(&g.pending, c.max_pending) {
            g.open.fetch_sub(1, Relaxed);
            cs.overflows.inc();
            ls.overflows.inc();
            return self.refuse(e, li, down);
        }
        let up = c.lb.pick(now).and_then(|ep| {
            let id = c.sources[ep].and_then(|src| {
                let a = c.lb.endpoints()[ep].addr;
                e.connect(now, src, (*a.ip(), a.port()))
            });
            if id.is_none() {
                c.lb.release(ep);
            }
            Some((ep, id?))
        });
        let Some((ep, up)) = up else {
            g.open.fetch_sub(1, Relaxed);
            g.pending.fetch_sub(1, Relaxed);
            cs.no_upstream.inc();
            ls.no_upstream.inc();
            return self.refuse(e, li, down);
        };
        let k = match self.free.pop() {
            Some(k) => k,
            None => {
                self.sessions.push(None);
                (self.sessions.len() - 1) as u32
            }
        };
        self.sessions[k as usize] = Some(Session {
            listener: li,
            cluster: ci,
            endpoint: ep,
            down,
            up,
            connected: false,
            down_open: true,
            up_open: true,
            to_up: None,
            to_down: None,
            fin_sent_up: false,
            fin_sent_down: false,
            eof_down: false,
            eof_up: false,
            last_active: now,
        });
        self.by_conn.insert(down, k);
        self.by_conn.insert(up, k);
        let c = &self.clusters[ci];
        self.connecting
            .push(Reverse((now + c.connect_timeout, k, down)));
        if let Some(idle) = c.idle_timeout {
            self.idle.push(Reverse((now + idle, k, down)));
        }
        for c in self.stats.upstream(ci, ep) {
            c.cx_total.inc();
            c.cx_connecting.inc();
        }
    }

    /// Reset a client connection that gets no upstream.
    fn refuse(&self, e: &mut Engine, li: usize, down: ConnId) {
        let ls = &self.stats.listeners[li];
        ls.refused.inc();
        ls.cx_closed.inc();
        e.abort(down);
    }

    /// Move what `dir`'s source has to its destination, hold what does not
    /// fit, and forward the source's FIN once everything before it is sent.
    fn pump(&mut self, e: &mut Engine, now: Instant, k: u32, dir: Dir) {
        let Some(s) = self.sessions[k as usize].as_mut() else {
            return;
        };
        if !s.connected {
            return; // the client waits in its receive queue
        }
        let (src, dst, held, fin_sent, eof, dst_open) = match dir {
            Dir::Up => (
                s.down,
                s.up,
                &mut s.to_up,
                &mut s.fin_sent_up,
                &mut s.eof_down,
                s.up_open,
            ),
            Dir::Down => (
                s.up,
                s.down,
                &mut s.to_down,
                &mut s.fin_sent_down,
                &mut s.eof_up,
                s.down_open,
            ),
        };
        if !dst_open || *fin_sent {
            return;
        }
        let mut moved = 0u64;
        loop {
            let b = match held.take() {
                Some(b) => b,
                None => match e.recv(src) {
                    Some(b) => b,
                    None => break,
                },
            };
            let n = e.send(dst, b.clone());
            moved += n as u64;
            if n < b.len() {
                // Full: stop reading the source until `Writable`.
                *held = Some(b.slice(n..));
                break;
            }
        }
        *eof |= e.connection(src).is_some_and(|c| c.peer_closed());
        if held.is_none() && *eof {
            *fin_sent = true;
            e.close(dst);
        }
        if moved > 0 {
            s.last_active = now;
            let (li, ci, ep) = (s.listener, s.cluster, s.endpoint);
            for c in self.stats.all(li, ci, ep) {
                match dir {
                    Dir::Up => c.bytes_up.add(moved),
                    Dir::Down => c.bytes_down.add(moved),
                }
            }
        }
    }

    /// Connection `id`, side `is_down` of session `k`, is gone.
    fn closed(
        &mut self,
        e: &mut Engine,
        now: Instant,
        k: u32,
        is_down: bool,
        id: ConnId,
        reason: CloseReason,
    ) {
        self.by_conn.remove(&id);
        let Some(s) = self.sessions[k as usize].as_mut() else {
            return;
        };
        if is_down {
            s.down_open = false;
        } else {
            s.up_open = false;
        }
        let (li, ci, ep) = (s.listener, s.cluster, s.endpoint);
        if !is_down && !s.connected {
            // The upstream handshake failed (refused, reset, or retransmitted
            // to exhaustion).
            for c in self.stats.upstream(ci, ep) {
                c.connect_failures.inc();
            }
            self.connect_failed(ci, ep, now);
            return self.refuse_session(e, k);
        }
        if reason != CloseReason::Normal {
            // A reset, a give-up or our own abort: the other side cannot
            // complete either.
            for c in self.stats.all(li, ci, ep) {
                c.resets.inc();
            }
            return self.end(e, k, true);
        }
        // Both FINs are done on this side, and the engine keeps a
        // connection until its received bytes are read: its stream is
        // complete. The other side goes on until its own close, once what
        // is held for it is sent and the FIN passed on.
        if is_down {
            s.eof_down = true;
        } else {
            s.eof_up = true;
        }
        self.pump(e, now, k, if is_down { Dir::Up } else { Dir::Down });
        self.finish_if_done(e, k);
    }

    /// A side whose stream has ended both ways (its FIN read, ours
    /// queued after everything else) has nothing more to carry: the engine
    /// finishes it alone (the last ACKs, TIME_WAIT), and the session need
    /// not wait for that. When both sides are done, the session ends; the
    /// connections' later `Closed` events are no longer the proxy's.
    fn finish_if_done(&mut self, e: &mut Engine, k: u32) {
        let Some(s) = self.sessions[k as usize].as_mut() else {
            return;
        };
        let sides = [
            (s.down, &mut s.down_open, s.eof_down && s.fin_sent_down),
            (s.up, &mut s.up_open, s.eof_up && s.fin_sent_up),
        ];
        for (id, open, both_fins) in sides {
            let unread = e.connection(id).is_some_and(|c| c.recv_ready() > 0);
            if *open && both_fins && !unread {
                *open = false;
                self.by_conn.remove(&id);
            }
        }
        if !s.down_open && !s.up_open {
            self.end(e, k, false);
        }
    }

    /// The upstream of session `k` never connected: reset the client too.
    fn refuse_session(&mut self, e: &mut Engine, k: u32) {
        if let Some(s) = self.sessions[k as usize].as_ref() {
            self.stats.listeners[s.listener].refused.inc();
        }
        self.end(e, k, true);
    }

    fn connect_failed(&mut self, ci: usize, ep: usize, now: Instant) {
        if self.clusters[ci].lb.connect_failed(ep, now) == Verdict::Ejected {
            for c in self.stats.upstream(ci, ep) {
                c.ejections.inc();
            }
            tracing::warn!(
                "cluster {ci}: endpoint {} ejected after repeated connect failures",
                self.clusters[ci].lb.endpoints()[ep].addr
            );
        }
    }

    /// Forget session `k`, resetting whichever side is still open when
    /// `reset` (else nothing is open any more).
    fn end(&mut self, e: &mut Engine, k: u32, reset: bool) {
        let Some(s) = self.sessions[k as usize].take() else {
            return;
        };
        self.free.push(k);
        for (id, open) in [(s.down, s.down_open), (s.up, s.up_open)] {
            self.by_conn.remove(&id);
            if open && reset {
                e.abort(id);
            }
        }
        let (li, ci, ep) = (s.listener, s.cluster, s.endpoint);
        self.clusters[ci].lb.release(ep);
        let g = &self.gauges[ci];
        g.open.fetch_sub(1, Relaxed);
        if !s.connected {
            g.pending.fetch_sub(1, Relaxed);
            for c in self.stats.upstream(ci, ep) {
                c.cx_connecting.set(c.cx_connecting.get().wrapping_sub(1));
            }
        }
        for c in self.stats.all(li, ci, ep) {
            c.cx_closed.inc();
        }
    }
}

impl Counters {
    /// Every counter by name; `cx_active` derived.
    pub fn fields(&self) -> [(&'static str, u64); 15] {
        // Closed before total: read the other way round, a connection that
        // ends in between would make `cx_active` wrap.
        let closed = self.cx_closed.get();
        let total = self.cx_total.get();
        [
            ("cx_total", total),
            ("cx_active", total.saturating_sub(closed)),
            ("cx_connecting", self.cx_connecting.get()),
            ("cx_connected", self.cx_connected.get()),
            ("bytes_up", self.bytes_up.get()),
            ("bytes_down", self.bytes_down.get()),
            ("connect_failures", self.connect_failures.get()),
            ("connect_timeouts", self.connect_timeouts.get()),
            ("overflows", self.overflows.get()),
            ("no_upstream", self.no_upstream.get()),
            ("refused", self.refused.get()),
            ("resets", self.resets.get()),
            ("idle_timeouts", self.idle_timeouts.get()),
            ("ejections", self.ejections.get()),
            ("cx_closed", closed),
        ]
    }
}

/// The counters that mean something for a listener.
pub const LISTENER_FIELDS: &[&str] = &[
    "cx_total",
    "cx_active",
    "bytes_up",
    "bytes_down",
    "refused",
    "overflows",
    "no_upstream",
    "resets",
    "idle_timeouts",
];

/// ... for a cluster.
pub const CLUSTER_FIELDS: &[&str] = &[
    "cx_total",
    "cx_active",
    "cx_connecting",
    "cx_connected",
    "bytes_up",
    "bytes_down",
    "connect_failures",
    "connect_timeouts",
    "overflows",
    "no_upstream",
    "resets",
    "idle_timeouts",
    "ejections",
];

/// ... for an endpoint.
pub const ENDPOINT_FIELDS: &[&str] = &[
    "cx_total",
    "cx_active",
    "cx_connecting",
    "cx_connected",
    "bytes_up",
    "bytes_down",
    "connect_failures",
    "connect_timeouts",
    "resets",
    "idle_timeouts",
    "ejections",
];
