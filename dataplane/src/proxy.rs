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
use hashbrown::HashMap;
use netstack::tcp::{CloseReason, ConnId, Engine, Event};
use netstack::{Counter, Instant};

use crate::lb::{Balancer, Verdict};
use crate::live::{ClusterLive, ListenerLive, Update};

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

/// What the control thread reads of one core's proxy (the counters of
/// listeners, clusters and endpoints live with them, in `live`).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Set once this core has stopped listening (draining).
    pub drained: AtomicBool,
    /// Sessions in progress (client side accepted, not yet ended).
    pub sessions: Counter,
}

/// A cluster's connections over all cores, for its circuit breakers.
#[derive(Debug, Default)]
pub struct ClusterGauges {
    /// Upstream connections open or opening.
    pub open: AtomicU32,
    /// Of those, still in their handshake.
    pub pending: AtomicU32,
}

/// Take one unit of `g` if that keeps it within `max`.
fn take(g: &AtomicU32, max: u32) -> bool {
    g.fetch_update(Relaxed, Relaxed, |v| (v < max).then_some(v + 1))
        .is_ok()
}

#[derive(Debug)]
struct Listener {
    live: Arc<ListenerLive>,
    /// The engine listeners it owns (each port's address for `0.0.0.0`).
    bound: Vec<(Ipv4Addr, u16)>,
    sessions: u32,
    /// No longer configured: kept only for its sessions' counters.
    removed: bool,
}

#[derive(Debug)]
struct Cluster {
    live: Arc<ClusterLive>,
    lb: Balancer,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    sessions: u32,
    removed: bool,
}

impl Cluster {
    fn new(live: &Arc<ClusterLive>, seed: u64) -> Cluster {
        let mut c = Cluster {
            lb: Balancer::new(live, seed),
            live: live.clone(),
            connect_timeout: Duration::ZERO,
            idle_timeout: None,
            sessions: 0,
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

/// Slots that keep their index while anything refers to them.
#[derive(Debug)]
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Slab<T> {
    fn new() -> Slab<T> {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
    fn insert(&mut self, v: T) -> u32 {
        match self.free.pop() {
            Some(k) => {
                self.items[k as usize] = Some(v);
                k
            }
            None => {
                self.items.push(Some(v));
                (self.items.len() - 1) as u32
            }
        }
    }
    fn remove(&mut self, k: u32) -> Option<T> {
        let v = self.items.get_mut(k as usize)?.take();
        if v.is_some() {
            self.free.push(k);
        }
        v
    }
    fn get(&self, k: u32) -> Option<&T> {
        self.items.get(k as usize)?.as_ref()
    }
    fn get_mut(&mut self, k: u32) -> Option<&mut T> {
        self.items.get_mut(k as usize)?.as_mut()
    }
}

impl<T> std::ops::Index<u32> for Slab<T> {
    type Output = T;
    fn index(&self, k: u32) -> &T {
        self.get(k).expect("slot in use")
    }
}

impl<T> std::ops::IndexMut<u32> for Slab<T> {
    fn index_mut(&mut self, k: u32) -> &mut T {
        self.get_mut(k).expect("slot in use")
    }
}

#[derive(Debug)]
struct Session {
    listener: u32,
    cluster: u32,
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
    /// This worker's index: its slot in every `PerCore` counter.
    core: usize,
    port_addrs: Vec<Ipv4Addr>,
    backlog: usize,
    seed: u64,
    /// Bound `(address, port)` → listener slot.
    bound: HashMap<(Ipv4Addr, u16), u32>,
    listeners: Slab<Listener>,
    listener_by_name: HashMap<String, u32>,
    clusters: Slab<Cluster>,
    cluster_by_name: HashMap<String, u32>,
    sessions: Slab<Session>,
    by_conn: HashMap<ConnId, u32>,
    /// Upstream handshake deadlines (session slot, client side's id): only
    /// the due ones are looked at, whatever the number of clusters.
    connecting: BinaryHeap<Reverse<(Instant, u32, ConnId)>>,
    /// Idle deadlines (sessions of clusters with an idle timeout): checked
    /// against the session's last activity when due.
    idle: BinaryHeap<Reverse<(Instant, u32, ConnId)>>,
    stats: Arc<ProxyStats>,
}

impl Proxy {
    /// An empty proxy for worker `core`; listeners and clusters arrive as
    /// updates (the first one is everything configured). `port_addrs` are
    /// the addresses a `0.0.0.0` listener binds; `seed` varies the
    /// balancers' random choices per core.
    pub fn new(core: usize, port_addrs: &[Ipv4Addr], backlog: usize, seed: u64) -> Proxy {
        Proxy {
            core,
            port_addrs: port_addrs.to_vec(),
            backlog,
            seed,
            bound: HashMap::new(),
            listeners: Slab::new(),
            listener_by_name: HashMap::new(),
            clusters: Slab::new(),
            cluster_by_name: HashMap::new(),
            sessions: Slab::new(),
            by_conn: HashMap::new(),
            connecting: BinaryHeap::new(),
            idle: BinaryHeap::new(),
            stats: Arc::new(ProxyStats::default()),
        }
    }

    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.stats
    }

    // === updates ===

    /// Apply one configuration update. Sessions carry on whatever it
    /// changes: a removed listener stops accepting, a removed cluster or
    /// endpoint takes no new connections, and both are forgotten once
    /// their last session ends.
    pub fn apply(&mut self, e: &mut Engine, now: Instant, u: &Update) {
        for name in &u.remove_listeners {
            if let Some(li) = self.listener_by_name.remove(name) {
                self.unbind(e, now, li);
                self.listeners[li].removed = true;
                self.forget_listener_if_unused(li);
            }
        }
        for name in &u.remove_clusters {
            if let Some(ci) = self.cluster_by_name.remove(name) {
                self.clusters[ci].removed = true;
                self.forget_cluster_if_unused(ci);
            }
        }
        for c in &u.clusters {
            match self.cluster_by_name.get(&c.cfg.name) {
                Some(&ci) => self.clusters[ci].update(c),
                None => {
                    let seed = self
                        .seed
                        .wrapping_add(self.clusters.items.len() as u64)
                        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let ci = self.clusters.insert(Cluster::new(c, seed));
                    self.cluster_by_name.insert(c.cfg.name.clone(), ci);
                }
            }
        }
        // Listeners that move release their old addresses first, so that
        // another may take them in the same update.
        let mut to_bind = Vec::new();
        for l in &u.listeners {
            match self.listener_by_name.get(&l.cfg.name) {
                Some(&li) => {
                    if self.listeners[li].live.addr != l.addr {
                        self.unbind(e, now, li);
                        to_bind.push(li);
                    }
                    self.listeners[li].live = l.clone();
                }
                None => {
                    let li = self.listeners.insert(Listener {
                        live: l.clone(),
                        bound: Vec::new(),
                        sessions: 0,
                        removed: false,
                    });
                    self.listener_by_name.insert(l.cfg.name.clone(), li);
                    to_bind.push(li);
                }
            }
        }
        if !self.stats.drained.load(Relaxed) {
            for li in to_bind {
                self.bind(e, li);
            }
        }
    }

    fn bind(&mut self, e: &mut Engine, li: u32) {
        let sa = self.listeners[li].live.addr;
        let addrs: Vec<Ipv4Addr> = if sa.ip().is_unspecified() {
            self.port_addrs.clone()
        } else {
            vec![*sa.ip()]
        };
        for a in addrs {
            e.listen(a, sa.port(), self.backlog);
            self.bound.insert((a, sa.port()), li);
            self.listeners[li].bound.push((a, sa.port()));
        }
    }

    /// Stop accepting on listener `li`: connections that completed their
    /// handshake are still taken, later SYNs and handshakes in progress are
    /// reset.
    fn unbind(&mut self, e: &mut Engine, now: Instant, li: u32) {
        let bound = std::mem::take(&mut self.listeners[li].bound);
        for (a, p) in bound {
            while let Some(id) = e.accept(a, p) {
                self.open(e, now, li, id);
            }
            e.unlisten(a, p);
            self.bound.remove(&(a, p));
        }
    }

    fn forget_listener_if_unused(&mut self, li: u32) {
        if self
            .listeners
            .get(li)
            .is_some_and(|l| l.removed && l.sessions == 0)
        {
            self.listeners.remove(li);
        }
    }

    fn forget_cluster_if_unused(&mut self, ci: u32) {
        if self
            .clusters
            .get(ci)
            .is_some_and(|c| c.removed && c.sessions == 0)
        {
            self.clusters.remove(ci);
        }
    }

    // === counters ===

    /// The counters of a session's listener, cluster and endpoint.
    fn all(&self, li: u32, ci: u32, ep: usize) -> [&Counters; 3] {
        let [c, e] = self.upstream(ci, ep);
        [self.listeners[li].live.stats.get(self.core), c, e]
    }

    /// The counters of an upstream connection: its cluster's and endpoint's.
    fn upstream(&self, ci: u32, ep: usize) -> [&Counters; 2] {
        let c = &self.clusters[ci];
        [
            c.live.stats.get(self.core),
            c.lb.endpoints()[ep].stats.get(self.core),
        ]
    }

    fn listener_stats(&self, li: u32) -> &Counters {
        self.listeners[li].live.stats.get(self.core)
    }

    /// Stop accepting: connections that completed their handshake are
    /// still taken, then the listeners go (later SYNs and handshakes in
    /// progress are reset); sessions carry on.
    pub fn drain(&mut self, e: &mut Engine, now: Instant) {
        if self.stats.drained.load(Relaxed) {
            return;
        }
        let all: Vec<u32> = self.listener_by_name.values().copied().collect();
        for li in all {
            self.unbind(e, now, li);
        }
        self.stats.drained.store(true, Relaxed);
    }

    /// Reset every session (when the worker stops).
    pub fn abort_all(&mut self, e: &mut Engine) {
        for k in 0..self.sessions.items.len() as u32 {
            if self.sessions.get(k).is_some() {
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
            for c in self.upstream(ci, ep) {
                c.connect_timeouts.inc();
            }
            self.connect_failed(ci, ep, now);
            self.refuse_session(e, k);
        }
        // Entries of ended sessions wait for their time; when they are most
        // of the heap, drop them at once.
        if self.idle.len() > 2 * self.by_conn.len() + 1024 {
            let sessions = &self.sessions;
            self.idle
                .retain(|Reverse((_, k, down))| sessions.get(*k).is_some_and(|s| s.down == *down));
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
            for c in self.all(li, ci, ep) {
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
                let s = self.sessions.get_mut(k)?;
                if s.up != id || s.connected {
                    return None;
                }
                s.connected = true;
                s.last_active = now;
                let (ci, ep) = (s.cluster, s.endpoint);
                self.clusters[ci].live.gauges.pending.fetch_sub(1, Relaxed);
                for c in self.upstream(ci, ep) {
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
        let s = self.sessions.get(k)?;
        Some((k, s.down == id))
    }

    /// Session `k` if it is still the one whose client side is `down`.
    fn session(&self, k: u32, down: ConnId) -> Option<&Session> {
        self.sessions.get(k).filter(|s| s.down == down)
    }

    /// A new client connection on listener `li`: pick an endpoint and open
    /// the upstream side, or refuse it (reset) and count why.
    fn open(&mut self, e: &mut Engine, now: Instant, li: u32, down: ConnId) {
        let ls = self.listeners[li].live.stats.get(self.core);
        ls.cx_total.inc();
        let cluster = &self.listeners[li].live.cfg.tcp_proxy.cluster;
        let Some(&ci) = self.cluster_by_name.get(cluster) else {
            // Named by the listener but not (or no longer) configured.
            ls.no_upstream.inc();
            return self.refuse(e, li, down);
        };
        let c = &mut self.clusters[ci];
        let cs = c.live.stats.get(self.core);
        let g = &c.live.gauges;
        let limits = &c.live.cfg.limits;
        if !take(&g.open, limits.max_connections) {
            cs.overflows.inc();
            ls.overflows.inc();
            return self.refuse(e, li, down);
        }
        if !take(&g.pending, limits.max_pending) {
            g.open.fetch_sub(1, Relaxed);
            cs.overflows.inc();
            ls.overflows.inc();
            return self.refuse(e, li, down);
        }
        let up = c.lb.pick(now).and_then(|ep| {
            let target = &c.lb.endpoints()[ep];
            let a = target.addr;
            let id = target
                .source
                .and_then(|src| e.connect(now, src, (*a.ip(), a.port())));
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
        c.sessions += 1;
        let (connect_timeout, idle_timeout) = (c.connect_timeout, c.idle_timeout);
        self.listeners[li].sessions += 1;
        self.stats.sessions.inc();
        let k = self.sessions.insert(Session {
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
        self.connecting
            .push(Reverse((now + connect_timeout, k, down)));
        if let Some(idle) = idle_timeout {
            self.idle.push(Reverse((now + idle, k, down)));
        }
        for c in self.upstream(ci, ep) {
            c.cx_total.inc();
            c.cx_connecting.inc();
        }
    }

    /// Reset a client connection that gets no upstream.
    fn refuse(&self, e: &mut Engine, li: u32, down: ConnId) {
        let ls = self.listener_stats(li);
        ls.refused.inc();
        ls.cx_closed.inc();
        e.abort(down);
    }

    /// Move what `dir`'s source has to its destination, hold what does not
    /// fit, and forward the source's FIN once everything before it is sent.
    fn pump(&mut self, e: &mut Engine, now: Instant, k: u32, dir: Dir) {
        let Some(s) = self.sessions.get_mut(k) else {
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
            for c in self.all(li, ci, ep) {
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
        let Some(s) = self.sessions.get_mut(k) else {
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
            for c in self.upstream(ci, ep) {
                c.connect_failures.inc();
            }
            self.connect_failed(ci, ep, now);
            return self.refuse_session(e, k);
        }
        if reason != CloseReason::Normal {
            // A reset, a give-up or our own abort: the other side cannot
            // complete either.
            for c in self.all(li, ci, ep) {
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
        let Some(s) = self.sessions.get_mut(k) else {
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
        if let Some(s) = self.sessions.get(k) {
            self.listener_stats(s.listener).refused.inc();
        }
        self.end(e, k, true);
    }

    fn connect_failed(&mut self, ci: u32, ep: usize, now: Instant) {
        if self.clusters[ci].lb.connect_failed(ep, now) == Verdict::Ejected {
            for c in self.upstream(ci, ep) {
                c.ejections.inc();
            }
            let c = &self.clusters[ci];
            tracing::warn!(
                "cluster {}: endpoint {} ejected after repeated connect failures",
                c.live.cfg.name,
                c.lb.endpoints()[ep].addr
            );
        }
    }

    /// Forget session `k`, resetting whichever side is still open when
    /// `reset` (else nothing is open any more).
    fn end(&mut self, e: &mut Engine, k: u32, reset: bool) {
        let Some(s) = self.sessions.remove(k) else {
            return;
        };
        for (id, open) in [(s.down, s.down_open), (s.up, s.up_open)] {
            self.by_conn.remove(&id);
            if open && reset {
                e.abort(id);
            }
        }
        let (li, ci, ep) = (s.listener, s.cluster, s.endpoint);
        let c = &mut self.clusters[ci];
        c.lb.release(ep);
        c.sessions -= 1;
        let g = &c.live.gauges;
        g.open.fetch_sub(1, Relaxed);
        if !s.connected {
            g.pending.fetch_sub(1, Relaxed);
            for c in self.upstream(ci, ep) {
                c.cx_connecting.set(c.cx_connecting.get().wrapping_sub(1));
            }
        }
        for c in self.all(li, ci, ep) {
            c.cx_closed.inc();
        }
        self.stats
            .sessions
            .set(self.stats.sessions.get().wrapping_sub(1));
        self.listeners[li].sessions -= 1;
        self.forget_listener_if_unused(li);
        self.forget_cluster_if_unused(ci);
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
