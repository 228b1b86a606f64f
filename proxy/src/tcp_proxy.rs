//! The L4 splice (Envoy's `tcp_proxy`): client connections accepted on a
//! listener are spliced to an upstream connection opened on the same core,
//! bytes moving from one side's receive queue to the other's send queue by
//! reference.
//!
//! An [`App`] driven only by the TCP engine's events and the worker's
//! clock; one per core, sharing nothing with the others but the clusters'
//! circuit-breaker gauges and the counters the admin thread reads. The
//! upstream side comes from the core's connector ([`Upstreams`]).
//!
//! A session's life:
//! - accept, acquire an upstream connection (breakers, endpoint choice,
//!   active open). The client's bytes wait in its receive queue (its
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
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use dataplane_config::Filter;
use hashbrown::HashMap;
use netstack::Instant;
use netstack::tcp::{CloseReason, ConnId, Engine, Event};

use crate::app::{App, Cx};
use crate::listeners::{Accepted, Listeners};
use crate::live::{ListenerLive, Update};
use crate::metrics::Counters;
use crate::slab::Slab;
use crate::upstream::{ConnectError, Outcome, Upstream, Upstreams};

#[derive(Debug)]
struct Session {
    listener: u32,
    down: ConnId,
    up: Upstream,
    /// The upstream handshake completed. The connector knows it too (its
    /// handshake table); this copy spares a hash lookup on every pump.
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

/// One core's L4 proxy.
#[derive(Debug)]
pub struct TcpProxy {
    /// This worker's index: its slot in every `PerCore` counter.
    core: usize,
    listeners: Listeners<()>,
    sessions: Slab<Session>,
    by_conn: HashMap<ConnId, u32>,
    /// Idle deadlines (sessions of clusters with an idle timeout): checked
    /// against the session's last activity when due.
    idle: BinaryHeap<Reverse<(Instant, u32, ConnId)>>,
}

impl TcpProxy {
    /// An empty proxy for worker `core`; listeners arrive as updates (the
    /// first one is everything configured). `port_addrs` are the addresses
    /// a `0.0.0.0` listener binds.
    pub fn new(core: usize, port_addrs: &[Ipv4Addr], backlog: usize) -> TcpProxy {
        TcpProxy {
            core,
            listeners: Listeners::new(port_addrs, backlog),
            sessions: Slab::new(),
            by_conn: HashMap::new(),
            idle: BinaryHeap::new(),
        }
    }

    /// Open what listeners accepted as they stopped accepting.
    fn open_all(&mut self, cx: &mut Cx<'_>, accepted: Accepted) {
        for (li, id) in accepted {
            self.open(cx, li, id);
        }
    }

    // === counters ===

    /// The counters of a session's listener, cluster and endpoint.
    fn all<'a>(&'a self, up: &'a Upstreams, li: u32, u: &Upstream) -> [&'a Counters; 3] {
        let [c, e] = up.counters(u);
        [self.listener_stats(li), c, e]
    }

    fn listener_stats(&self, li: u32) -> &Counters {
        self.listeners[li].live.stats.get(self.core)
    }

    // === sessions ===

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

    /// A new client connection on listener `li`: acquire an upstream
    /// connection for it, or refuse it (reset) and count why.
    fn open(&mut self, cx: &mut Cx<'_>, li: u32, down: ConnId) {
        let ls = self.listeners[li].live.stats.get(self.core);
        ls.cx_total.inc();
        let Some(Filter::TcpProxy(t)) = self.listeners[li].live.cfg.filter() else {
            return self.refuse(cx.engine, li, down); // not ours since `retire`
        };
        let up = match cx.acquire(&t.cluster) {
            Ok(up) => up,
            Err(why) => {
                match why {
                    ConnectError::Overflow => ls.overflows.inc(),
                    ConnectError::UnknownCluster
                    | ConnectError::NoEndpoint
                    | ConnectError::NoRoute
                    | ConnectError::LocalExhausted => ls.no_upstream.inc(),
                }
                return self.refuse(cx.engine, li, down);
            }
        };
        self.listeners.session_started(li);
        cx.stats.sessions.inc();
        let now = cx.now;
        let idle = cx.upstreams.idle_timeout(&up);
        let up_conn = up.conn;
        let k = self.sessions.insert(Session {
            listener: li,
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
        self.by_conn.insert(up_conn, k);
        if let Some(idle) = idle {
            self.idle.push(Reverse((now + idle, k, down)));
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
    fn pump(&mut self, cx: &mut Cx<'_>, k: u32, dir: Dir) {
        let e = &mut *cx.engine;
        let Some(s) = self.sessions.get_mut(k) else {
            return;
        };
        if !s.connected {
            return; // the client waits in its receive queue
        }
        let (src, dst, held, fin_sent, eof, dst_open) = match dir {
            Dir::Up => (
                s.down,
                s.up.conn,
                &mut s.to_up,
                &mut s.fin_sent_up,
                &mut s.eof_down,
                s.up_open,
            ),
            Dir::Down => (
                s.up.conn,
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
            s.last_active = cx.now;
            let s = &self.sessions[k];
            for c in self.all(cx.upstreams, s.listener, &s.up) {
                match dir {
                    Dir::Up => c.bytes_up.add(moved),
                    Dir::Down => c.bytes_down.add(moved),
                }
            }
        }
    }

    /// Connection `id`, side `is_down` of session `k`, is gone.
    fn closed(&mut self, cx: &mut Cx<'_>, k: u32, is_down: bool, id: ConnId, why: CloseReason) {
        self.by_conn.remove(&id);
        let Some(s) = self.sessions.get_mut(k) else {
            return;
        };
        if is_down {
            s.down_open = false;
        } else {
            s.up_open = false;
        }
        if !is_down && !s.connected {
            // The upstream handshake failed (refused, reset, or retransmitted
            // to exhaustion).
            return self.refuse_session(cx, k, Outcome::ConnectFailed);
        }
        if why != CloseReason::Normal {
            // A reset, a give-up or our own abort: the other side cannot
            // complete either.
            let s = &self.sessions[k];
            for c in self.all(cx.upstreams, s.listener, &s.up) {
                c.resets.inc();
            }
            return self.end(cx, k, true, Outcome::Done);
        }
        // Both FINs are done on this side, and the engine keeps a
        // connection until its received bytes are read: its stream is
        // complete. The other side goes on until its own close, once what
        // is held for it is sent and the FIN passed on.
        let s = &mut self.sessions[k];
        if is_down {
            s.eof_down = true;
        } else {
            s.eof_up = true;
        }
        self.pump(cx, k, if is_down { Dir::Up } else { Dir::Down });
        self.finish_if_done(cx, k);
    }

    /// A side whose stream has ended both ways (its FIN read, ours
    /// queued after everything else) has nothing more to carry: the engine
    /// finishes it alone (the last ACKs, TIME_WAIT), and the session need
    /// not wait for that. When both sides are done, the session ends; the
    /// connections' later `Closed` events are no longer the proxy's.
    fn finish_if_done(&mut self, cx: &mut Cx<'_>, k: u32) {
        let Some(s) = self.sessions.get_mut(k) else {
            return;
        };
        let sides = [
            (s.down, &mut s.down_open, s.eof_down && s.fin_sent_down),
            (s.up.conn, &mut s.up_open, s.eof_up && s.fin_sent_up),
        ];
        for (id, open, both_fins) in sides {
            let unread = cx.engine.connection(id).is_some_and(|c| c.recv_ready() > 0);
            if *open && both_fins && !unread {
                *open = false;
                self.by_conn.remove(&id);
            }
        }
        if !s.down_open && !s.up_open {
            self.end(cx, k, false, Outcome::Done);
        }
    }

    /// The upstream of session `k` never connected: reset the client too.
    fn refuse_session(&mut self, cx: &mut Cx<'_>, k: u32, why: Outcome) {
        if let Some(s) = self.sessions.get(k) {
            self.listener_stats(s.listener).refused.inc();
        }
        self.end(cx, k, true, why);
    }

    /// Forget session `k`, resetting whichever side is still open when
    /// `reset` (else nothing is open any more), and give its upstream
    /// connection back with `outcome`.
    fn end(&mut self, cx: &mut Cx<'_>, k: u32, reset: bool, outcome: Outcome) {
        let Some(s) = self.sessions.remove(k) else {
            return;
        };
        for (id, open) in [(s.down, s.down_open), (s.up.conn, s.up_open)] {
            self.by_conn.remove(&id);
            if open && reset {
                cx.engine.abort(id);
            }
        }
        let li = s.listener;
        let outcome = match outcome {
            Outcome::Done if !s.connected => Outcome::Abandoned,
            o => o,
        };
        self.listener_stats(li).cx_closed.inc();
        cx.upstreams.release(s.up, outcome, cx.now);
        cx.stats
            .sessions
            .set(cx.stats.sessions.get().wrapping_sub(1));
        self.listeners.session_ended(li);
    }
}

fn is_tcp_proxy(l: &ListenerLive) -> bool {
    matches!(l.cfg.filter(), Some(Filter::TcpProxy(_)))
}

impl App for TcpProxy {
    fn handle(&mut self, cx: &mut Cx<'_>, ev: Event) -> Option<Event> {
        match ev {
            Event::Incoming { listener } => {
                let Some(li) = self.listeners.bound_to(listener) else {
                    return Some(ev);
                };
                while let Some(id) = cx.engine.accept(listener.0, listener.1) {
                    self.open(cx, li, id);
                }
            }
            Event::Connected(id) => {
                let Some((k, _)) = self.side(id) else {
                    return Some(ev);
                };
                let s = self.sessions.get_mut(k)?;
                if s.up.conn != id || s.connected {
                    return None;
                }
                s.connected = true;
                s.last_active = cx.now;
                cx.upstreams.connected(&s.up, cx.now);
                self.pump(cx, k, Dir::Up);
                self.pump(cx, k, Dir::Down);
            }
            Event::Readable(id) | Event::PeerClosed(id) => {
                let Some((k, down)) = self.side(id) else {
                    return Some(ev);
                };
                self.pump(cx, k, if down { Dir::Up } else { Dir::Down });
                self.finish_if_done(cx, k);
            }
            Event::Writable(id) => {
                let Some((k, down)) = self.side(id) else {
                    return Some(ev);
                };
                self.pump(cx, k, if down { Dir::Down } else { Dir::Up });
                self.finish_if_done(cx, k);
            }
            Event::Closed(id, why) => {
                let Some((k, down)) = self.side(id) else {
                    return Some(ev);
                };
                self.closed(cx, k, down, id, why);
            }
        }
        None
    }

    /// The handshake of upstream `conn` timed out: reset the client too.
    fn connect_timeout(&mut self, cx: &mut Cx<'_>, conn: ConnId) {
        if let Some((k, false)) = self.side(conn) {
            self.refuse_session(cx, k, Outcome::ConnectTimeout);
        }
    }

    /// Run due idle timeouts.
    fn tick(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
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
            let Some(idle) = cx.upstreams.idle_timeout(&s.up) else {
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
            for c in self.all(cx.upstreams, s.listener, &s.up) {
                c.idle_timeouts.inc();
            }
            self.end(cx, k, true, Outcome::Done);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.idle.peek().map(|Reverse((at, _, _))| *at)
    }

    fn retire(&mut self, cx: &mut Cx<'_>, u: &Update) {
        // A listener that is no longer a `tcp_proxy` is another app's now:
        // it goes here as if removed.
        let (retired, accepted) = self.listeners.retire(cx.engine, u, is_tcp_proxy);
        self.open_all(cx, accepted);
        for li in retired {
            self.listeners.removed(li);
        }
    }

    fn apply(&mut self, cx: &mut Cx<'_>, u: &Update) {
        let drained = cx.stats.drained.load(Relaxed);
        let accepted = self
            .listeners
            .apply(cx.engine, u, drained, |l| is_tcp_proxy(l).then_some(()));
        self.open_all(cx, accepted);
    }

    /// Stop accepting: connections that completed their handshake are
    /// still taken, then the listeners go (later SYNs and handshakes in
    /// progress are reset); sessions carry on.
    fn drain(&mut self, cx: &mut Cx<'_>) {
        let accepted = self.listeners.drain(cx.engine);
        self.open_all(cx, accepted);
    }

    fn abort_all(&mut self, cx: &mut Cx<'_>) {
        for k in 0..self.sessions.capacity() as u32 {
            if self.sessions.get(k).is_some() {
                self.end(cx, k, true, Outcome::Abandoned);
            }
        }
    }
}
