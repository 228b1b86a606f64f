//! The proxy on virtual time: a client engine, the proxy's engine running
//! [`Apps`], and an upstream engine, joined by two simulated links (client
//! leg and upstream leg, each with its own seeded impairment). The clock
//! jumps to the next deadline of any engine, link or app, as quinn's test
//! `Pair` does: no sleeps, no DPDK, no root.
//!
//! The client and the upstream are small scripted peers ([`Peer`]): they
//! send what they are given, read (or not), echo (or not), and record
//! what arrived and how each connection ended.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use dataplane_config::{Config, ProxyState, ProxyUpdate};
use hashbrown::HashMap;
use netstack::Instant;
use netstack::tcp::{CloseReason, ConnId, Engine, EngineConfig, Event, Segment};
use netstack::testing::{Impair, Link};

use crate::http::hcm::HttpProxy;
use crate::{Apps, Live, TcpProxy};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 2);
/// The proxy's addresses: one per port, as the embedded default has them.
pub const PROXY_C: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 1);
pub const PROXY_U: Ipv4Addr = Ipv4Addr::new(10, 10, 2, 1);
pub const UP_A: Ipv4Addr = Ipv4Addr::new(10, 10, 2, 2);
pub const UP_B: Ipv4Addr = Ipv4Addr::new(10, 10, 2, 3);
/// An upstream address nothing answers for: its packets are lost.
pub const BLACKHOLE: Ipv4Addr = Ipv4Addr::new(10, 10, 2, 99);
pub const LISTEN: u16 = 8080;

type Packet = ((Ipv4Addr, u16), (Ipv4Addr, u16), Segment);

/// What a scripted peer does with what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read everything; echo it back; close once the peer has closed and
    /// the echo is sent.
    Echo,
    /// Read everything and keep it; close after `reply` once the peer has
    /// closed (a request/response exchange over a half-close).
    ReplyOnEof,
    /// Read everything and keep it; close only as told (a client).
    Read,
    /// Accept, never read: the receive window fills.
    Stall,
    /// An HTTP/1.1 server: each request (with a `content-length` body, or
    /// none) is answered 200 with the request's bytes as the body; a
    /// request with `upgrade` is answered 101, and what follows is echoed.
    HttpEcho,
}

/// One connection of a scripted peer.
#[derive(Debug, Default)]
pub struct PeerConn {
    /// To send, and how much of it the send queue has taken.
    pub out: Vec<u8>,
    pub sent: usize,
    /// Close once `out` is sent.
    pub close_after: bool,
    pub closing: bool,
    pub got: Vec<u8>,
    pub connected: bool,
    /// The peer's FIN arrived.
    pub eof: bool,
    pub closed: Option<CloseReason>,
    /// Our local address and port (the upstream side: which endpoint).
    pub local: Option<(Ipv4Addr, u16)>,
    /// Of `got`, what [`Mode::HttpEcho`] has answered.
    pub parsed: usize,
    /// [`Mode::HttpEcho`] answered an upgrade: bytes are echoed from
    /// `parsed` on.
    pub tunnel: bool,
}

/// A scripted user of a client or upstream engine.
#[derive(Debug)]
pub struct Peer {
    pub mode: Mode,
    /// Sent after the peer's FIN in [`Mode::ReplyOnEof`].
    pub reply: Vec<u8>,
    pub conns: HashMap<ConnId, PeerConn>,
    /// Accepted connections, in order.
    pub accepted: Vec<ConnId>,
}

impl Peer {
    fn new(mode: Mode) -> Peer {
        Peer {
            mode,
            reply: Vec::new(),
            conns: HashMap::new(),
            accepted: Vec::new(),
        }
    }

    fn on_events(&mut self, e: &mut Engine) {
        while let Some(ev) = e.poll_event() {
            match ev {
                Event::Incoming { listener } => {
                    while let Some(id) = e.accept(listener.0, listener.1) {
                        let local = e.tuple(id).map(|t| t.local);
                        self.conns.insert(
                            id,
                            PeerConn {
                                connected: true,
                                local,
                                ..PeerConn::default()
                            },
                        );
                        self.accepted.push(id);
                        self.pump(e, id);
                    }
                }
                Event::Connected(id) => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.connected = true;
                    }
                    self.pump(e, id);
                }
                Event::Readable(id) | Event::Writable(id) | Event::PeerClosed(id) => {
                    self.pump(e, id)
                }
                Event::Closed(id, why) => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.closed = Some(why);
                    }
                }
            }
        }
    }

    /// Read, echo or reply as the mode says, send what is queued, close
    /// when done.
    fn pump(&mut self, e: &mut Engine, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.closed.is_some() || !c.connected {
            return;
        }
        if self.mode != Mode::Stall {
            while let Some(b) = e.recv(id) {
                if self.mode == Mode::Echo {
                    c.out.extend_from_slice(&b);
                }
                c.got.extend_from_slice(&b);
            }
            if self.mode == Mode::HttpEcho {
                http_echo(c);
            }
            if e.connection(id).is_some_and(|x| x.peer_closed()) && !c.eof {
                c.eof = true;
                match self.mode {
                    Mode::ReplyOnEof => {
                        c.out.extend_from_slice(&self.reply);
                        c.close_after = true;
                    }
                    Mode::Echo | Mode::HttpEcho => c.close_after = true,
                    Mode::Read | Mode::Stall => {}
                }
            }
        }
        while c.sent < c.out.len() {
            let n = e.send(id, Bytes::copy_from_slice(&c.out[c.sent..]));
            if n == 0 {
                break;
            }
            c.sent += n;
        }
        if c.close_after && c.sent == c.out.len() && !c.closing {
            c.closing = true;
            e.close(id);
        }
    }
}

/// Answer every complete request in `c.got` past `c.parsed`.
fn http_echo(c: &mut PeerConn) {
    use crate::http::codec;
    loop {
        if c.tunnel {
            let rest = c.got[c.parsed..].to_vec();
            c.out.extend_from_slice(&rest);
            c.parsed = c.got.len();
            return;
        }
        let buf = Bytes::copy_from_slice(&c.got[c.parsed..]);
        let lim = codec::Limits {
            max_head_bytes: 1 << 20,
            max_headers: 200,
        };
        let Ok(Some((head, n))) = codec::parse_request(&buf, lim) else {
            return;
        };
        let len = match codec::request_body(&head) {
            Ok(codec::Body::Length(l)) => l as usize,
            _ => 0,
        };
        if buf.len() < n + len {
            return;
        }
        if head.method.as_ref() == b"CONNECT" {
            c.out
                .extend_from_slice(b"HTTP/1.1 200 Connection established\r\n\r\n");
            c.parsed += n;
            c.tunnel = true;
            continue;
        }
        if head.headers.iter().any(|h| h.is("upgrade")) {
            c.out.extend_from_slice(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            );
            c.parsed += n;
            c.tunnel = true;
            continue;
        }
        let whole = &buf[..n + len];
        c.out.extend_from_slice(
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", whole.len()).as_bytes(),
        );
        c.out.extend_from_slice(whole);
        c.parsed += n + len;
    }
}

/// Client, proxy and upstream on two simulated links.
#[derive(Debug)]
pub struct World {
    pub now: Instant,
    pub cfg: Config,
    pub live: Live,
    pub client: Engine,
    pub proxy: Engine,
    pub upstream: Engine,
    pub apps: Apps,
    pub c: Peer,
    pub u: Peer,
    /// 0: client (side 0) – proxy (side 1); 1: proxy (side 0) – upstream.
    legs: [Link<Packet>; 2],
}

/// A configuration with the embedded default's ports and `proxy_yaml`'s
/// listeners and clusters.
pub fn config(proxy_yaml: &str) -> Config {
    let base = dataplane_config::DEFAULT_YAML;
    let ports_and_more = &base[..base.find("\nlisteners:").expect("default has listeners")];
    Config::from_yaml(&format!("{ports_and_more}\n{proxy_yaml}")).expect("valid test config")
}

/// One listener on port 8080 to cluster `web`, whose YAML follows.
pub fn web(cluster_yaml: &str) -> Config {
    config(&format!(
        "listeners:\n  - {{name: web, address: 0.0.0.0:{LISTEN}, tcp_proxy: {{cluster: web}}}}\nclusters:\n  - name: web\n{cluster_yaml}"
    ))
}

impl World {
    /// The proxy configured by `cfg`, an upstream in `mode` listening on
    /// port 80 of A and B, and links impaired as `client_leg` and
    /// `upstream_leg` say.
    pub fn new(cfg: Config, mode: Mode, seed: u64, legs: [Impair; 2]) -> World {
        let now = Instant::from_millis(1);
        let engine = |k: u8| {
            let mut c = crate::engine_config(&cfg, [k; 16], Vec::new());
            c.tcp.min_rto = Duration::from_millis(50);
            Engine::new(c, now)
        };
        let client = Engine::new(
            EngineConfig {
                secret: [1; 16],
                ..EngineConfig::default()
            },
            now,
        );
        let mut upstream = engine(3);
        for a in [UP_A, UP_B] {
            upstream.listen(a, 80, 1024);
        }
        let proxy = engine(2);
        let live = Live::new(ProxyState::from_config(&cfg), &cfg, 1);
        let mut apps = Apps::new(0, seed);
        apps.set_overload(&cfg.overload_manager);
        apps.push(Box::new(TcpProxy::new(
            0,
            &[PROXY_C, PROXY_U],
            cfg.tcp.backlog as usize,
        )));
        apps.push(Box::new(HttpProxy::new(
            0,
            &[PROXY_C, PROXY_U],
            cfg.tcp.backlog as usize,
        )));
        let [l0, l1] = legs;
        let mut w = World {
            now,
            cfg,
            live,
            client,
            proxy,
            upstream,
            apps,
            c: Peer::new(Mode::Read),
            u: Peer::new(mode),
            legs: [Link::new(seed, l0), Link::new(seed ^ 0x5555, l1)],
        };
        let first = w.live.initial();
        w.apps.apply(&mut w.proxy, now, &first);
        w
    }

    /// Open a client connection to the proxy's listener that sends `data`,
    /// then closes if `close` (half-close: it still reads).
    pub fn connect(&mut self, data: &[u8], close: bool) -> ConnId {
        let id = self
            .client
            .connect(self.now, CLIENT, (PROXY_C, LISTEN))
            .expect("client port");
        self.c.conns.insert(
            id,
            PeerConn {
                out: data.to_vec(),
                close_after: close,
                ..PeerConn::default()
            },
        );
        id
    }

    /// Apply `u` as the control thread would (checked, then every worker).
    pub fn update(&mut self, u: ProxyUpdate) {
        let (up, rejected) = self.live.prepare(u, &self.cfg).expect("update accepted");
        assert!(rejected.is_empty(), "{rejected:?}");
        self.apps.apply(&mut self.proxy, self.now, &up);
    }

    /// One round: apps and peers react, segments go out, the clock jumps
    /// to the next thing due (not past `until`). False once nothing is left.
    fn step(&mut self, until: Instant) -> bool {
        // Sending can raise events (a connection that ends), which can
        // send more: a few rounds, as the worker's loop does.
        for _ in 0..3 {
            self.react();
            self.transmit();
        }
        let next = [
            self.legs[0].next_at(),
            self.legs[1].next_at(),
            self.client.poll_timeout(),
            self.proxy.poll_timeout(),
            self.upstream.poll_timeout(),
            self.apps.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next.min(until));
        for (leg, link) in self.legs.iter_mut().enumerate() {
            for (to, (from, dst, seg)) in link.due(self.now) {
                let e = match (leg, to) {
                    (0, 0) => &mut self.client,
                    (0, _) | (1, 0) => &mut self.proxy,
                    _ if dst.0 == BLACKHOLE => continue,
                    _ => &mut self.upstream,
                };
                e.handle_segment(self.now, dst, from, seg);
            }
        }
        for e in [&mut self.client, &mut self.proxy, &mut self.upstream] {
            e.handle_timeout(self.now);
        }
        // What arrived is acted on at the time it arrived (a check between
        // two steps sees it then, not after the next jump).
        self.react();
        self.transmit();
        self.react();
        true
    }

    /// Every engine's segments onto their links.
    fn transmit(&mut self) {
        let now = self.now;
        while let Some((t, seg)) = self.client.poll_transmit(now) {
            let data = !seg.payload.is_empty();
            self.legs[0].send_item(now, 0, (t.local, t.remote, seg), data);
        }
        while let Some((t, seg)) = self.proxy.poll_transmit(now) {
            let data = !seg.payload.is_empty();
            if t.remote.0 == CLIENT {
                self.legs[0].send_item(now, 1, (t.local, t.remote, seg), data);
            } else {
                self.legs[1].send_item(now, 0, (t.local, t.remote, seg), data);
            }
        }
        while let Some((t, seg)) = self.upstream.poll_transmit(now) {
            let data = !seg.payload.is_empty();
            self.legs[1].send_item(now, 1, (t.local, t.remote, seg), data);
        }
    }

    /// Apps and peers take their events; the apps' due timers run.
    fn react(&mut self) {
        self.apps.tick(&mut self.proxy, self.now);
        self.apps.handle_events(&mut self.proxy, self.now);
        self.c.on_events(&mut self.client);
        self.u.on_events(&mut self.upstream);
    }

    /// Run until `done` holds; panics past `limit` of virtual time.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) {
        let deadline = self.now + limit;
        for _ in 0..50_000_000u64 {
            if done(self) {
                return;
            }
            assert!(
                self.now < deadline,
                "not done within {limit:?} of virtual time"
            );
            if !self.step(deadline) {
                assert!(done(self), "nothing left to happen, and not done");
                return;
            }
        }
        panic!("livelock");
    }

    /// Let `d` of virtual time pass.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            if !self.step(until) {
                self.now = until;
            }
        }
    }

    /// Let the upstream act on what it already has (after its mode changed:
    /// its events fired already).
    pub fn poke_upstream(&mut self) {
        let ids: Vec<ConnId> = self.u.conns.keys().copied().collect();
        for id in ids {
            self.u.pump(&mut self.upstream, id);
        }
    }

    pub fn client_conn(&self, id: ConnId) -> &PeerConn {
        &self.c.conns[&id]
    }

    /// Nothing left over once every session ended: no session, and every
    /// cluster's breaker gauges and handshake counters back to zero.
    pub fn assert_settled(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(self.sessions(), 0, "sessions");
        for (name, c) in &self.live.clusters {
            assert_eq!(c.gauges.open.load(Relaxed), 0, "{name}: open");
            assert_eq!(c.gauges.pending.load(Relaxed), 0, "{name}: pending");
            assert_eq!(c.gauges.requests.load(Relaxed), 0, "{name}: requests");
            assert_eq!(value(c.stats.get(0), "cx_connecting"), 0, "{name}");
            assert_eq!(
                value(c.stats.get(0), "cx_total"),
                value(c.stats.get(0), "cx_closed"),
                "{name}: every upstream connection closed"
            );
        }
    }

    /// Sessions in progress on the proxy.
    pub fn sessions(&self) -> u64 {
        self.apps.stats().sessions.get()
    }

    /// A listener's, cluster's or endpoint's counter, by name.
    pub fn listener_counter(&self, name: &str, counter: &str) -> u64 {
        value(self.live.listeners[name].stats.get(0), counter)
    }

    pub fn cluster_counter(&self, name: &str, counter: &str) -> u64 {
        value(self.live.clusters[name].stats.get(0), counter)
    }

    pub fn endpoint_counter(&self, cluster: &str, addr: &str, counter: &str) -> u64 {
        let c = &self.live.clusters[cluster];
        let ep = c.endpoints.iter().find(|e| e.addr.to_string() == addr);
        value(ep.expect("endpoint").stats.get(0), counter)
    }
}

/// Counter `name` of `c`.
fn value(c: &crate::Counters, name: &str) -> u64 {
    let mut v = None;
    c.for_each(|k, x| {
        if k == name {
            v = Some(x);
        }
    });
    v.unwrap_or_else(|| panic!("no counter {name}"))
}

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod tests;
