//! The HTTP/1.1 connection manager and router (Envoy's
//! `http_connection_manager` with `envoy.filters.http.router`), an [`App`]
//! beside the L4 splice on the same engine and connector.
//!
//! A client connection carries one request at a time; a pipelined request
//! waits in the receive queue (and the client's window) until the response
//! before it is sent. Per request:
//! - the head is parsed in place from the received segment (coalesced only
//!   when it spans segments), checked, normalized, routed;
//! - local answers (no route, redirect, direct response, fault abort,
//!   malformed request) are written at once;
//! - otherwise an endpoint is picked by the cluster's policy, and an idle
//!   pooled connection to it is used, or a new one opened. The rewritten
//!   head goes out, then the body as the received segments themselves;
//! - the response head is parsed, rewritten, sent, and its body forwarded
//!   by reference until its framing says it ended. A reusable upstream
//!   connection goes back to the endpoint's pool.
//!
//! Backpressure as in the splice: bytes a send queue does not take are held
//! and the other side is not read until they are gone. A request sent on a
//! pooled connection that the upstream closed before answering goes out
//! again on a new connection, when all of it is still held (64 KiB).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dataplane_config::Filter;
use dataplane_config::http::HttpConfig;
use dataplane_config::overload::OverloadAction;
use hashbrown::HashMap;
use netstack::Instant;
use netstack::tcp::{CloseReason, ConnId, Event};

use super::codec::{self, Body, BodyReader, Header, Limits, RequestHead, Version, has_token, trim};
use super::router::{Action, Request, RouteTable};
use super::trace::{self, SpanContext, SpanInfo};
use crate::app::{App, Cx};
use crate::listeners::{Accepted, Listeners};
use crate::live::{ListenerLive, Update};
use crate::metrics::Counters;
use crate::slab::Slab;
use crate::upstream::{ClusterId, ConnectError, Outcome, RequestSlot, Upstream};

/// Request bytes kept to send again if a pooled connection turns out dead.
const REPLAY_MAX: usize = 64 * 1024;
/// How long an idle pooled upstream connection is kept (Envoy's default
/// `common_http_protocol_options.idle_timeout`, one hour, is longer than
/// most servers keep theirs; they close first, and we notice).
const POOL_IDLE: Duration = Duration::from_secs(60);

/// What the connection manager keeps beside each of its listeners.
#[derive(Debug)]
struct HttpListener {
    http: Arc<HttpConfig>,
    /// `http.server_name`, as a header value made once.
    server: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Down(u32),
    Up(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Forwarding the request body.
    Body,
    /// The request is in; its response is on its way.
    Wait,
    /// Upgraded: bytes both ways as they come.
    Tunnel,
    /// Closing once what is queued for the client is sent.
    Closing,
}

/// A client connection.
#[derive(Debug)]
struct Down {
    listener: u32,
    id: ConnId,
    /// Incremented per request, so a timer knows its stream.
    serial: u64,
    remote: Ipv4Addr,
    phase: Phase,
    /// Received, not consumed yet.
    inbuf: Bytes,
    /// When the head being read started.
    head_since: Option<Instant>,
    /// When the request being answered started (its first byte), for
    /// `downstream_rq_time`.
    rq_started: Option<Instant>,
    /// The request's span, where the listener traces.
    span: Option<ActiveSpan>,
    /// Response bytes the client's send queue has not taken.
    out: VecDeque<Bytes>,
    requests: u32,
    opened: Instant,
    last_active: Instant,
    /// Close once the response in progress is sent.
    close_after: bool,
    /// The client half-closed.
    eof: bool,
    stream: Option<Stream>,
    /// A request held by the fault filter's delay (`TimerKind::Delay`).
    delayed: Option<RequestHead>,
}

/// The request in progress on a client connection.
#[derive(Debug)]
struct Stream {
    up: Option<u32>,
    method: Bytes,
    cluster: String,
    route: Option<(Arc<RouteTable>, usize, usize)>,
    req: BodyReader,
    /// Request bytes waiting for the upstream (connecting, or send queue full).
    to_up: VecDeque<Bytes>,
    /// Everything sent on a reused connection, while it may be replayed.
    replay: Option<Vec<Bytes>>,
    replay_len: usize,
    retried: bool,
    resp: RespPhase,
    /// Upstream bytes of the response head not complete yet.
    resp_buf: Bytes,
    /// Upgrade requested and allowed.
    upgrade: bool,
    /// A CONNECT: its 2xx starts the tunnel.
    connect: bool,
    started: Instant,
    upstream_keepalive: bool,
    /// Its place under the cluster's `max_requests`.
    slot: Option<RequestSlot>,
}

#[derive(Debug)]
enum RespPhase {
    Head,
    Body(BodyReader),
    Done,
}

/// An upstream connection: serving a stream, or idle in its pool.
#[derive(Debug)]
struct Up {
    up: Upstream,
    connected: bool,
    down: Option<u32>,
    serial: u64,
    idle_since: Instant,
    requests: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// The route's timeout of the stream with this serial.
    Route,
    /// request_headers_timeout.
    Head,
    /// idle_timeout of a client connection between requests; and
    /// stream_idle_timeout during one.
    Idle,
    /// An idle pooled connection.
    Pool,
    /// The fault filter's delay of the request waiting in `Down::delayed`.
    Delay,
    /// request_timeout: the whole request must be in by then.
    Request,
}

/// A deadline: when, what, whether of a client connection (else of a
/// pooled one), its slot, and the serial it was set for.
/// A traced request in progress.
#[derive(Debug)]
struct ActiveSpan {
    ctx: SpanContext,
    start: Instant,
    /// Taken only when sampled.
    info: Option<Box<SpanInfo>>,
    cluster: String,
    status: u16,
    server: bool,
}

impl ActiveSpan {
    /// The response is done: a sampled span goes to the exporter's queue
    /// (dropped and counted when it is full).
    fn finish(self, cx: &Cx<'_>, peer: Ipv4Addr) {
        let Some(info) = self.info else {
            return;
        };
        let info = *info;
        let span = trace::Span {
            ctx: self.ctx,
            server: self.server,
            start_us: self.start.as_micros(),
            duration_us: cx.now.saturating_since(self.start).as_micros() as u64,
            method: info.method,
            url: info.url,
            status: self.status,
            upstream_cluster: self.cluster,
            request_id: info.request_id,
            user_agent: info.user_agent,
            peer,
            response_flags: "-",
        };
        if cx.stats.spans.push(span).is_err() {
            cx.stats.spans_dropped.inc();
        }
    }
}

type TimerEntry = (Instant, TimerKind, bool, u32, u64);

/// Local answers of the router, with Envoy's bodies and response flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    NoRoute,
    NoCluster,
    NoHealthy,
    Overflow,
    ConnectFailure,
    ConnectTimeout,
    Reset,
    ProtocolError,
    Timeout,
    FaultAbort(u16),
    UpgradeRefused,
    Malformed(codec::Error),
    RequestHeadersTimeout,
    RequestTimeout,
    StreamIdle,
}

impl Local {
    fn status(self) -> u16 {
        match self {
            Local::NoRoute => 404,
            Local::UpgradeRefused => 403,
            Local::NoCluster
            | Local::NoHealthy
            | Local::Overflow
            | Local::ConnectFailure
            | Local::ConnectTimeout
            | Local::Reset
            | Local::ProtocolError => 503,
            Local::Timeout => 504,
            Local::FaultAbort(s) => s,
            Local::Malformed(e) => e.status(),
            Local::RequestHeadersTimeout | Local::RequestTimeout | Local::StreamIdle => 408,
        }
    }

    fn body(self) -> &'static str {
        match self {
            Local::NoHealthy => "no healthy upstream",
            Local::Overflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            Local::ConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            Local::ConnectTimeout => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
            }
            Local::Reset => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            Local::ProtocolError => {
                "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
            }
            Local::Timeout => "upstream request timeout",
            Local::FaultAbort(_) => "fault filter abort",
            Local::Malformed(e) => codec::reason_phrase(e.status()),
            Local::RequestHeadersTimeout => "request headers timeout",
            Local::RequestTimeout => "request timeout",
            Local::StreamIdle => "stream timeout",
            Local::NoRoute | Local::NoCluster | Local::UpgradeRefused => "",
        }
    }
}

/// One core's HTTP connection manager.
#[derive(Debug)]
pub struct HttpProxy {
    core: usize,
    listeners: Listeners<HttpListener>,
    routes: HashMap<String, Arc<RouteTable>>,
    downs: Slab<Down>,
    ups: Slab<Up>,
    by_conn: HashMap<ConnId, Side>,
    /// Idle upstream connections by (cluster, endpoint), newest last.
    pool: HashMap<(ClusterId, usize), Vec<u32>>,
    timers: BinaryHeap<Reverse<TimerEntry>>,
    serial: u64,
    rng: u64,
    draining: bool,
    /// Overload (`disable_http_keepalive`): every response closes.
    keepalive_off: bool,
}

impl HttpProxy {
    pub fn new(core: usize, port_addrs: &[Ipv4Addr], backlog: usize) -> HttpProxy {
        HttpProxy {
            core,
            listeners: Listeners::new(port_addrs, backlog),
            routes: HashMap::new(),
            downs: Slab::new(),
            ups: Slab::new(),
            by_conn: HashMap::new(),
            pool: HashMap::new(),
            timers: BinaryHeap::new(),
            serial: 0,
            rng: 0x2545_f491_4f6c_dd1d ^ (core as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            draining: false,
            keepalive_off: false,
        }
    }

    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn timer(&mut self, at: Instant, kind: TimerKind, down: bool, slot: u32, serial: u64) {
        self.timers.push(Reverse((at, kind, down, slot, serial)));
    }

    fn lstats(&self, li: u32) -> &Counters {
        self.listeners[li].live.stats.get(self.core)
    }

    // === client connections ===

    /// Open what listeners accepted as they stopped accepting.
    fn open_all(&mut self, cx: &mut Cx<'_>, accepted: Accepted) {
        for (li, id) in accepted {
            self.open(cx, li, id);
        }
    }

    fn open(&mut self, cx: &mut Cx<'_>, li: u32, id: ConnId) {
        self.lstats(li).cx_total.inc();
        let remote = cx
            .engine
            .tuple(id)
            .map_or(Ipv4Addr::UNSPECIFIED, |t| t.remote.0);
        let serial = self.next_serial();
        let now = cx.now;
        let d = self.downs.insert(Down {
            listener: li,
            id,
            serial,
            remote,
            phase: Phase::Head,
            inbuf: Bytes::new(),
            head_since: None,
            rq_started: None,
            span: None,
            out: VecDeque::new(),
            requests: 0,
            opened: now,
            last_active: now,
            close_after: false,
            eof: false,
            stream: None,
            delayed: None,
        });
        self.by_conn.insert(id, Side::Down(d));
        self.listeners.session_started(li);
        cx.stats.sessions.inc();
        self.arm_idle(d, now);
    }

    /// The idle timer of client connection `d` for its current state.
    fn arm_idle(&mut self, d: u32, now: Instant) {
        let dn = &self.downs[d];
        let h = &self.listeners[dn.listener].extra.http;
        let ms = if dn.stream.is_some() {
            h.stream_idle_timeout_ms
        } else {
            h.idle_timeout_ms
        };
        if ms > 0 {
            let serial = dn.serial;
            self.timer(
                now + Duration::from_millis(ms),
                TimerKind::Idle,
                true,
                d,
                serial,
            );
        }
    }

    /// Forget client connection `d`, resetting it if `reset`; its stream's
    /// upstream connection is reset too if a response was in progress.
    fn end_down(&mut self, cx: &mut Cx<'_>, d: u32, reset: bool) {
        let Some(mut dn) = self.downs.remove(d) else {
            return;
        };
        if let Some(s) = dn.stream.take()
            && let Some(u) = s.up
        {
            let done = matches!(s.resp, RespPhase::Done);
            self.end_up(cx, u, !done);
        }
        self.by_conn.remove(&dn.id);
        if reset {
            cx.engine.abort(dn.id);
        }
        let li = dn.listener;
        self.lstats(li).cx_closed.inc();
        cx.stats
            .sessions
            .set(cx.stats.sessions.get().wrapping_sub(1));
        self.listeners.session_ended(li);
    }

    /// Send what is queued for the client; close it when that is all.
    fn flush_down(&mut self, cx: &mut Cx<'_>, d: u32) {
        let Some(dn) = self.downs.get_mut(d) else {
            return;
        };
        while let Some(b) = dn.out.pop_front() {
            let n = cx.engine.send(dn.id, b.clone());
            if n < b.len() {
                dn.out.push_front(b.slice(n..));
                return;
            }
        }
        if dn.phase == Phase::Closing {
            let id = dn.id;
            cx.engine.close(id);
            // The engine finishes the close alone (FIN, TIME_WAIT).
            self.end_down(cx, d, false);
        }
    }

    /// Read and act on what client connection `d` has sent, as far as the
    /// state allows.
    fn drive_down(&mut self, cx: &mut Cx<'_>, d: u32) {
        loop {
            let Some(dn) = self.downs.get_mut(d) else {
                return;
            };
            match dn.phase {
                Phase::Head => {
                    if !dn.out.is_empty() {
                        return; // the previous response is still going out
                    }
                    let got = cx.engine.recv(dn.id);
                    let more = got.is_some();
                    match got {
                        Some(b) => {
                            dn.last_active = cx.now;
                            if dn.inbuf.is_empty() {
                                dn.inbuf = b;
                            } else {
                                // A head spanning segments: coalesce.
                                let mut m = BytesMut::with_capacity(dn.inbuf.len() + b.len());
                                m.extend_from_slice(&dn.inbuf);
                                m.extend_from_slice(&b);
                                dn.inbuf = m.freeze();
                            }
                        }
                        None if dn.inbuf.is_empty() => {
                            if dn.eof
                                || cx.engine.connection(dn.id).is_some_and(|c| c.peer_closed())
                            {
                                // The client is done between requests.
                                dn.phase = Phase::Closing;
                                self.flush_down(cx, d);
                            }
                            return;
                        }
                        None => {}
                    }
                    let dn = &mut self.downs[d];
                    if dn.head_since.is_none() {
                        dn.head_since = Some(cx.now);
                        let h = &self.listeners[dn.listener].extra.http;
                        if h.request_headers_timeout_ms > 0 {
                            let at = cx.now + Duration::from_millis(h.request_headers_timeout_ms);
                            let serial = dn.serial;
                            self.timer(at, TimerKind::Head, true, d, serial);
                        }
                    }
                    let dn = &self.downs[d];
                    let h = &self.listeners[dn.listener].extra.http;
                    let lim = Limits {
                        max_head_bytes: h.max_request_headers_kb as usize * 1024,
                        max_headers: h.max_headers_count as usize,
                    };
                    match codec::parse_request(&dn.inbuf, lim) {
                        Ok(None) => {
                            if !more {
                                return;
                            }
                        }
                        Ok(Some((head, n))) => {
                            let dn = &mut self.downs[d];
                            dn.inbuf = dn.inbuf.slice(n..);
                            dn.rq_started = dn.head_since.take();
                            self.start_request(cx, d, head);
                        }
                        Err(e) => {
                            let dn = &mut self.downs[d];
                            dn.rq_started = dn.head_since.take();
                            self.lstats(self.downs[d].listener).rq_malformed.inc();
                            self.lstats(self.downs[d].listener).rq_total.inc();
                            self.local_reply(cx, d, Local::Malformed(e), true);
                            return;
                        }
                    }
                }
                Phase::Body => {
                    let Some(s) = dn.stream.as_mut() else {
                        return;
                    };
                    if !s.to_up.is_empty() {
                        return; // wait for the upstream to take what it has
                    }
                    let b = if dn.inbuf.is_empty() {
                        match cx.engine.recv(dn.id) {
                            Some(b) => b,
                            None => {
                                if cx.engine.connection(dn.id).is_some_and(|c| c.peer_closed())
                                    && !s.req.done()
                                {
                                    // The client gave up mid-body.
                                    if matches!(s.req, BodyReader::UntilClose) {
                                        s.req = BodyReader::Done;
                                    } else {
                                        self.end_down(cx, d, true);
                                    }
                                }
                                return;
                            }
                        }
                    } else {
                        std::mem::take(&mut dn.inbuf)
                    };
                    dn.last_active = cx.now;
                    let n = match s.req.feed(&b) {
                        Ok(n) => n,
                        Err(_) => {
                            // A bad chunk after the head went out: nothing
                            // to answer with a status any more.
                            self.end_down(cx, d, true);
                            return;
                        }
                    };
                    if n < b.len() {
                        dn.inbuf = b.slice(n..);
                    }
                    if n > 0 {
                        self.queue_up(d, b.slice(..n));
                    }
                    let dn = &mut self.downs[d];
                    if dn.stream.as_ref().is_some_and(|s| s.req.done()) {
                        dn.phase = Phase::Wait;
                    }
                    self.flush_up(cx, d);
                }
                Phase::Tunnel => {
                    self.pump_tunnel(cx, d);
                    return;
                }
                Phase::Wait | Phase::Closing => return,
            }
        }
    }

    /// Queue request bytes for the stream's upstream (and keep them for a
    /// replay while that is possible).
    fn queue_up(&mut self, d: u32, b: Bytes) {
        let lis = self.downs[d].listener;
        let s = self.downs[d].stream.as_mut().expect("a stream");
        if let Some(r) = s.replay.as_mut() {
            s.replay_len += b.len();
            if s.replay_len > REPLAY_MAX {
                s.replay = None;
            } else {
                r.push(b.clone());
            }
        }
        let n = b.len() as u64;
        s.to_up.push_back(b);
        self.lstats(lis).bytes_up.add(n);
    }

    fn flush_up(&mut self, cx: &mut Cx<'_>, d: u32) {
        let Some(s) = self.downs.get_mut(d).and_then(|dn| dn.stream.as_mut()) else {
            return;
        };
        let Some(u) = s.up else {
            return;
        };
        let up = &self.ups[u];
        if !up.connected {
            return;
        }
        let conn = up.up.conn;
        let mut sent = 0u64;
        while let Some(b) = s.to_up.pop_front() {
            let n = cx.engine.send(conn, b.clone());
            sent += n as u64;
            if n < b.len() {
                s.to_up.push_front(b.slice(n..));
                break;
            }
        }
        if sent > 0 {
            for c in cx.upstreams.counters(&self.ups[u].up) {
                c.bytes_up.add(sent);
            }
        }
    }

    // === requests ===

    fn start_request(&mut self, cx: &mut Cx<'_>, d: u32, head: RequestHead) {
        let serial = self.next_serial();
        let dn = &mut self.downs[d];
        dn.serial = serial;
        dn.requests += 1;
        let li = dn.listener;
        self.lstats(li).rq_total.inc();
        let ms = self.listeners[li].extra.http.request_timeout_ms;
        if ms > 0 {
            self.timer(
                cx.now + Duration::from_millis(ms),
                TimerKind::Request,
                true,
                d,
                serial,
            );
        }
        self.route_request(cx, d, head, false);
    }

    /// Check, route and send (or answer) a request; `after_delay`: the
    /// fault filter's delay is behind it.
    fn route_request(&mut self, cx: &mut Cx<'_>, d: u32, head: RequestHead, after_delay: bool) {
        let now = cx.now;
        let serial = self.downs[d].serial;
        let li = self.downs[d].listener;
        let live = self.listeners[li].live.clone();
        let ls = live.stats.get(self.core);
        let h = self.listeners[li].extra.http.clone();
        // Keep-alive as the client asked, and as our limits allow.
        let dn = &mut self.downs[d];
        let close_asked = has_token(&head.headers, "connection", "close");
        let keep = match head.version {
            Version::Http11 => !close_asked,
            Version::Http10 => has_token(&head.headers, "connection", "keep-alive"),
        };
        if !keep
            || self.draining
            || self.keepalive_off
            || (h.max_requests_per_connection > 0 && dn.requests >= h.max_requests_per_connection)
            || (h.max_connection_duration_ms > 0
                && now >= dn.opened + Duration::from_millis(h.max_connection_duration_ms))
        {
            dn.close_after = true;
        }
        // Framing, host, target.
        let body = match codec::request_body(&head) {
            Ok(b) => b,
            Err(e) => {
                ls.rq_malformed.inc();
                return self.local_reply(cx, d, Local::Malformed(e), true);
            }
        };
        // CONNECT names an authority, not a path; it is a tunnel where
        // upgrade_configs allow "CONNECT", to a connect_matcher route.
        let connect = head.method.as_ref() == b"CONNECT";
        let parts = if connect {
            connect_target(&head)
        } else {
            target_parts(&head)
        };
        let Some((authority, path)) = parts else {
            ls.rq_malformed.inc();
            return self.local_reply(cx, d, Local::Malformed(codec::Error::BadHost), true);
        };
        if connect {
            let allowed = h
                .upgrade_configs
                .iter()
                .any(|c| c.enabled && c.upgrade_type.eq_ignore_ascii_case("CONNECT"));
            if !allowed {
                return self.local_reply(cx, d, Local::UpgradeRefused, true);
            }
            // A tunnel, or a refusal after which the connection closes.
            self.downs[d].close_after = true;
        }
        let mut path = path;
        if h.normalize_path && !connect {
            match normalize_path(&path) {
                Some(p) => path = p,
                None => {
                    ls.rq_malformed.inc();
                    return self.local_reply(cx, d, Local::Malformed(codec::Error::BadHead), true);
                }
            }
        }
        if h.merge_slashes && !connect {
            path = merge_slashes(&path);
        }
        // Upgrades only where configured.
        let upgrade_to = (!connect).then_some(()).and(
            head.headers
                .iter()
                .find(|x| x.is("upgrade"))
                .filter(|_| has_token(&head.headers, "connection", "upgrade"))
                .map(|x| x.value.clone()),
        );
        if let Some(u) = &upgrade_to {
            let allowed = h
                .upgrade_configs
                .iter()
                .any(|c| c.enabled && c.upgrade_type.as_bytes().eq_ignore_ascii_case(trim(u)));
            if !allowed {
                return self.local_reply(cx, d, Local::UpgradeRefused, true);
            }
        }
        // Trace context: continued or started, sampled or not.
        if !after_delay && let Some(t) = &h.tracing {
            let inc = trace::extract(&head.headers);
            let ctx = trace::start(inc, t.random_sampling, || self.rand());
            let info = ctx.sampled.then(|| {
                Box::new(trace::SpanInfo::of(
                    &head.method,
                    &authority,
                    &path,
                    &head.headers,
                ))
            });
            let dn = &mut self.downs[d];
            dn.span = Some(ActiveSpan {
                ctx,
                start: dn.rq_started.unwrap_or(now),
                info,
                cluster: String::new(),
                status: 0,
                server: self.listeners[li].live.cfg.traffic_direction
                    == dataplane_config::TrafficDirection::Inbound,
            });
        }
        // Route.
        let table = self.routes.get(&h.route_config).cloned();
        let req = Request {
            method: &head.method,
            authority: &authority,
            path: &path,
            scheme: b"http",
            headers: &head.headers,
        };
        let found = table.as_ref().and_then(|t| t.route_index(&req));
        let Some((vi, ri)) = found else {
            ls.rq_no_route.inc();
            return self.local_reply(cx, d, Local::NoRoute, !body_is_empty(body));
        };
        let table = table.expect("found in it");
        let (vh, route) = table.at(vi, ri);
        // Fault injection, before the router: a delay first (the request
        // waits, unread past its head), then an abort.
        if !after_delay && let Some(f) = h.fault.as_ref().and_then(|f| f.delay.as_ref()) {
            let x = (self.rand() % 1_000_000) as f64 / 10_000.0;
            if x < f.percentage {
                ls.rq_fault_delays.inc();
                let at = now + Duration::from_millis(f.fixed_delay_ms);
                let dn = &mut self.downs[d];
                dn.delayed = Some(head);
                dn.phase = Phase::Wait;
                self.timer(at, TimerKind::Delay, true, d, serial);
                return;
            }
        }
        if let Some(f) = h.fault.as_ref().and_then(|f| f.abort.as_ref()) {
            let x = (self.rand() % 1_000_000) as f64 / 10_000.0;
            if x < f.percentage {
                ls.rq_fault_aborts.inc();
                return self.local_reply(
                    cx,
                    d,
                    Local::FaultAbort(f.http_status),
                    !body_is_empty(body),
                );
            }
        }
        let action = match &route.action {
            Action::Direct { status, body: text } => {
                ls.rq_direct.inc();
                let (status, text) = (*status, text.clone());
                let hs = vec![];
                return self.direct_reply(
                    cx,
                    d,
                    status,
                    hs,
                    text,
                    &table,
                    vi,
                    ri,
                    !body_is_empty(body),
                );
            }
            Action::Redirect(r) => {
                ls.rq_direct.inc();
                let loc = route.redirect_location(r, &req);
                let code = r.response_code;
                let hs = vec![Header::new("location", loc)];
                return self.direct_reply(
                    cx,
                    d,
                    code,
                    hs,
                    Bytes::new(),
                    &table,
                    vi,
                    ri,
                    !body_is_empty(body),
                );
            }
            Action::Route(a) => a,
        };
        let rand = self.rand();
        let Some(cluster) = action
            .target
            .cluster(&head.headers, rand)
            .map(|c| c.into_owned())
        else {
            return self.local_reply(cx, d, Local::NoCluster, !body_is_empty(body));
        };
        // The head to send upstream.
        let rewritten = route.rewrite_path(&path);
        let mut hs = forward_headers(&head.headers, upgrade_to.is_some());
        if let Some(host) = &action.host_rewrite {
            set_header(&mut hs, "host", host.clone());
            // As Envoy does, the host it replaced goes along.
            set_header(&mut hs, "x-envoy-original-host", authority.clone());
        } else if !hs.iter().any(|x| x.is("host")) {
            hs.insert(0, Header::new("host", authority.clone()));
        }
        if h.use_remote_address {
            let ip = self.downs[d].remote.to_string();
            match hs.iter_mut().find(|x| x.is("x-forwarded-for")) {
                Some(x) => {
                    let mut v = x.value.to_vec();
                    v.extend_from_slice(b", ");
                    v.extend_from_slice(ip.as_bytes());
                    x.value = v.into();
                }
                None => hs.push(Header::new("x-forwarded-for", ip)),
            }
            set_header(&mut hs, "x-forwarded-proto", Bytes::from_static(b"http"));
        } else if !hs.iter().any(|x| x.is("x-forwarded-proto")) {
            hs.push(Header::new("x-forwarded-proto", "http"));
        }
        if h.generate_request_id && !hs.iter().any(|x| x.is("x-request-id")) {
            let id = uuid4(self.rand(), self.rand());
            hs.push(Header::new("x-request-id", id));
        }
        if let Some(t) = action.timeout {
            set_header(
                &mut hs,
                "x-envoy-expected-rq-timeout-ms",
                Bytes::from(t.as_millis().to_string()),
            );
        }
        if rewritten.is_some() {
            hs.push(Header::new("x-envoy-original-path", path.clone()));
        }
        if let Some(sp) = &self.downs[d].span {
            trace::inject(&sp.ctx, &mut hs);
        }
        route.headers.apply(&mut hs, true);
        vh.headers.apply(&mut hs, true);
        table.headers.apply(&mut hs, true);
        let target = if connect {
            head.target.clone()
        } else {
            rewritten.map_or(path, Bytes::from)
        };
        let mut out = BytesMut::new();
        // An HTTP/1.0 client's request goes out as HTTP/1.0: the upstream
        // then answers without chunking, which the client could not read,
        // and closes (the connection is not pooled).
        codec::write_request(&mut out, &head.method, &target, head.version, &hs);
        let timeout = action.timeout;
        // `auto_host_rewrite` needs the endpoint's host name, which
        // endpoints do not carry yet: the host stays as it came.
        self.downs[d].stream = Some(Stream {
            up: None,
            method: head.method.clone(),
            cluster: cluster.clone(),
            route: Some((table.clone(), vi, ri)),
            req: BodyReader::new(body),
            to_up: VecDeque::new(),
            replay: None,
            replay_len: 0,
            retried: false,
            resp: RespPhase::Head,
            resp_buf: Bytes::new(),
            upgrade: upgrade_to.is_some() || connect,
            connect,
            started: now,
            upstream_keepalive: head.version == Version::Http11,
            slot: None,
        });
        if let Some(t) = timeout {
            self.timer(now + t, TimerKind::Route, true, d, serial);
        }
        self.arm_idle(d, now);
        // An upstream connection: a pooled one to the picked endpoint, or a
        // new one.
        if let Err(why) = self.attach_upstream(cx, d, &cluster, false) {
            return self.local_reply(cx, d, why, !body_is_empty(body));
        }
        self.queue_up(d, out.freeze());
        let dn = &mut self.downs[d];
        dn.phase = if body_is_empty(body) {
            Phase::Wait
        } else {
            Phase::Body
        };
        self.flush_up(cx, d);
    }

    /// Give stream `d` an upstream connection to `cluster`.
    fn attach_upstream(
        &mut self,
        cx: &mut Cx<'_>,
        d: u32,
        cluster: &str,
        fresh: bool,
    ) -> Result<(), Local> {
        let li = self.downs[d].listener;
        let pick = cx.upstreams.pick(cluster, cx.now).map_err(|e| {
            let ls = self.lstats(li);
            match e {
                ConnectError::UnknownCluster => Local::NoCluster,
                _ => {
                    ls.no_upstream.inc();
                    Local::NoHealthy
                }
            }
        })?;
        if let Some(sp) = self.downs[d].span.as_mut()
            && sp.info.is_some()
        {
            sp.cluster = cluster.to_string();
        }
        let Some(slot) = cx.upstreams.request_slot(&pick) else {
            cx.upstreams.unpick(pick);
            self.lstats(li).overflows.inc();
            return Err(Local::Overflow);
        };
        self.downs[d].stream.as_mut().expect("a stream").slot = Some(slot);
        let key = (pick.cluster, pick.endpoint);
        let mut pooled = None;
        if !fresh {
            while let Some(u) = self.pool.get_mut(&key).and_then(Vec::pop) {
                if cx.upstreams.is_current(&self.ups[u].up) {
                    pooled = Some(u);
                    break;
                }
                self.end_up(cx, u, false);
            }
        }
        let u = match pooled {
            Some(u) => {
                cx.upstreams.unpick(pick);
                let up = &mut self.ups[u];
                up.down = Some(d);
                up.requests += 1;
                for c in cx.upstreams.counters(&up.up) {
                    c.rq_reused.inc();
                }
                let s = self.downs[d].stream.as_mut().expect("a stream");
                s.replay = (!s.retried).then(Vec::new);
                u
            }
            None => {
                let up = cx.connect(pick).map_err(|e| {
                    let ls = self.lstats(li);
                    match e {
                        ConnectError::Overflow => {
                            ls.overflows.inc();
                            Local::Overflow
                        }
                        ConnectError::UnknownCluster => Local::NoCluster,
                        ConnectError::NoEndpoint => {
                            ls.no_upstream.inc();
                            Local::NoHealthy
                        }
                        ConnectError::NoRoute | ConnectError::LocalExhausted => {
                            ls.no_upstream.inc();
                            Local::ConnectFailure
                        }
                    }
                })?;
                let conn = up.conn;
                let serial = self.next_serial();
                let u = self.ups.insert(Up {
                    up,
                    connected: false,
                    down: Some(d),
                    serial,
                    idle_since: cx.now,
                    requests: 1,
                });
                self.by_conn.insert(conn, Side::Up(u));
                u
            }
        };
        for c in cx.upstreams.counters(&self.ups[u].up) {
            c.rq_total.inc();
        }
        self.downs[d].stream.as_mut().expect("a stream").up = Some(u);
        Ok(())
    }

    /// Release upstream connection `u`: reset it (`reset`) or close it.
    fn end_up(&mut self, cx: &mut Cx<'_>, u: u32, reset: bool) {
        let Some(up) = self.ups.remove(u) else {
            return;
        };
        self.by_conn.remove(&up.up.conn);
        if reset {
            cx.engine.abort(up.up.conn);
        } else {
            cx.engine.close(up.up.conn);
        }
        let outcome = if up.connected {
            Outcome::Done
        } else {
            Outcome::Abandoned
        };
        cx.upstreams.release(up.up, outcome, cx.now);
    }

    /// Answer locally with Envoy's body for `why`; `close` closes the
    /// connection after it (a request whose body was not read, or a broken
    /// one).
    fn local_reply(&mut self, cx: &mut Cx<'_>, d: u32, why: Local, close: bool) {
        let status = why.status();
        let body = Bytes::from_static(why.body().as_bytes());
        if let Some(dn) = self.downs.get_mut(d) {
            dn.close_after |= close;
        }
        self.respond_local(cx, d, status, Vec::new(), body, None);
    }

    #[allow(clippy::too_many_arguments)]
    fn direct_reply(
        &mut self,
        cx: &mut Cx<'_>,
        d: u32,
        status: u16,
        hs: Vec<Header>,
        body: Bytes,
        table: &Arc<RouteTable>,
        vi: usize,
        ri: usize,
        close: bool,
    ) {
        self.downs[d].close_after |= close;
        self.respond_local(cx, d, status, hs, body, Some((table.clone(), vi, ri)));
    }

    /// Write a complete local response and end the stream.
    fn respond_local(
        &mut self,
        cx: &mut Cx<'_>,
        d: u32,
        status: u16,
        mut hs: Vec<Header>,
        body: Bytes,
        route: Option<(Arc<RouteTable>, usize, usize)>,
    ) {
        let Some(dn) = self.downs.get_mut(d) else {
            return;
        };
        // A stream that had an upstream connection gives it up.
        if let Some(s) = dn.stream.take()
            && let Some(u) = s.up
        {
            self.end_up(cx, u, true);
        }
        let dn = &mut self.downs[d];
        let li = dn.listener;
        if !body.is_empty() {
            hs.push(Header::new("content-type", "text/plain"));
        }
        hs.push(Header::new("content-length", body.len().to_string()));
        if let Some((t, vi, ri)) = &route {
            let (vh, r) = t.at(*vi, *ri);
            r.headers.apply(&mut hs, false);
            vh.headers.apply(&mut hs, false);
            t.headers.apply(&mut hs, false);
        }
        hs.push(Header::new(
            "server",
            self.listeners[li].extra.server.clone(),
        ));
        let dn = &mut self.downs[d];
        if dn.close_after {
            hs.push(Header::new("connection", "close"));
        }
        let mut out = BytesMut::new();
        codec::write_response(&mut out, status, b"", &hs);
        dn.out.push_back(out.freeze());
        if !body.is_empty() {
            dn.out.push_back(body);
        }
        self.count_status(d, status);
        self.finish_stream(cx, d);
    }

    /// A response to client connection `d`: counted on its listener, and
    /// noted on its span.
    fn count_status(&mut self, d: u32, status: u16) {
        let dn = &mut self.downs[d];
        if let Some(sp) = dn.span.as_mut() {
            sp.status = status;
        }
        let li = dn.listener;
        let ls = self.lstats(li);
        match status / 100 {
            1 => ls.rq_1xx.inc(),
            2 => ls.rq_2xx.inc(),
            3 => ls.rq_3xx.inc(),
            4 => ls.rq_4xx.inc(),
            _ => ls.rq_5xx.inc(),
        }
    }

    /// The response to client connection `d` is complete (queued): close
    /// or wait for the next request.
    fn finish_stream(&mut self, cx: &mut Cx<'_>, d: u32) {
        let Some(dn) = self.downs.get_mut(d) else {
            return;
        };
        let unread_body = dn.stream.as_ref().is_some_and(|s| !s.req.done());
        if unread_body || dn.eof {
            dn.close_after = true;
        }
        dn.stream = None;
        if let Some(sp) = dn.span.take() {
            sp.finish(cx, dn.remote);
        }
        if let Some(t) = dn.rq_started.take() {
            let us = cx.now.saturating_since(t).as_micros() as u64;
            self.listeners[dn.listener]
                .live
                .histograms
                .get(self.core)
                .downstream_rq_time
                .record_us(us);
        }
        if dn.close_after {
            dn.phase = Phase::Closing;
        } else {
            dn.phase = Phase::Head;
        }
        self.flush_down(cx, d);
        if self.downs.get(d).is_some_and(|dn| dn.phase == Phase::Head) {
            self.arm_idle(d, cx.now);
            // A pipelined request may be waiting.
            self.drive_down(cx, d);
        }
    }

    // === responses ===

    /// Read and forward what upstream connection `u` has sent.
    fn drive_up(&mut self, cx: &mut Cx<'_>, u: u32) {
        let Some(up) = self.ups.get(u) else {
            return;
        };
        let conn = up.up.conn;
        let Some(d) = up.down else {
            // Idle in the pool: an upstream sends nothing unasked.
            if cx
                .engine
                .connection(conn)
                .is_some_and(|c| c.recv_ready() > 0 || c.peer_closed())
            {
                self.unpool(u);
                self.end_up(cx, u, true);
            }
            return;
        };
        loop {
            let Some(dn) = self.downs.get_mut(d) else {
                return;
            };
            if dn.phase == Phase::Tunnel {
                self.pump_tunnel(cx, d);
                return;
            }
            if !dn.out.is_empty() {
                self.flush_down(cx, d);
                if self.downs.get(d).is_none_or(|dn| !dn.out.is_empty()) {
                    return; // the client must take what it has first
                }
                continue;
            }
            let Some(s) = dn.stream.as_mut() else {
                return;
            };
            let Some(b) = cx.engine.recv(conn) else {
                // Nothing more: a close-delimited body ends at the FIN.
                if cx.engine.connection(conn).is_some_and(|c| c.peer_closed()) {
                    self.upstream_eof(cx, u);
                }
                return;
            };
            dn.last_active = cx.now;
            s.replay = None; // it answered: no replay
            match &mut s.resp {
                RespPhase::Head => {
                    s.resp_buf = if s.resp_buf.is_empty() {
                        b
                    } else {
                        let mut m = BytesMut::with_capacity(s.resp_buf.len() + b.len());
                        m.extend_from_slice(&s.resp_buf);
                        m.extend_from_slice(&b);
                        m.freeze()
                    };
                    // Informational heads (100 Continue...) may come with
                    // the final one in the same segment: parse until a
                    // final head, or more bytes are needed.
                    loop {
                        let Some(s) = self.downs.get_mut(d).and_then(|dn| dn.stream.as_mut())
                        else {
                            return;
                        };
                        match codec::parse_response(&s.resp_buf, Limits::RESPONSE) {
                            Ok(None) => break,
                            Ok(Some((head, n))) => {
                                let rest = s.resp_buf.slice(n..);
                                s.resp_buf = Bytes::new();
                                if !self.response_head(cx, d, u, head) {
                                    return;
                                }
                                let Some(s) =
                                    self.downs.get_mut(d).and_then(|dn| dn.stream.as_mut())
                                else {
                                    return;
                                };
                                if matches!(s.resp, RespPhase::Head) {
                                    s.resp_buf = rest;
                                    continue;
                                }
                                if !rest.is_empty() {
                                    self.response_bytes(cx, d, u, rest);
                                }
                                break;
                            }
                            Err(_) => {
                                return self.upstream_failed(cx, d, u, Local::ProtocolError);
                            }
                        }
                    }
                }
                RespPhase::Body(_) => self.response_bytes(cx, d, u, b),
                RespPhase::Done => {
                    // Bytes past the end of the response: the connection
                    // cannot be reused.
                    if let Some(s) = self.downs.get_mut(d).and_then(|dn| dn.stream.as_mut()) {
                        s.upstream_keepalive = false;
                    }
                }
            }
        }
    }

    /// A parsed response head from `u` for client connection `d`. Returns
    /// whether the stream goes on.
    fn response_head(
        &mut self,
        cx: &mut Cx<'_>,
        d: u32,
        u: u32,
        head: codec::ResponseHead,
    ) -> bool {
        let dn = &mut self.downs[d];
        let li = dn.listener;
        let s = dn.stream.as_mut().expect("a stream");
        let upgraded = if s.connect {
            (200..300).contains(&head.status)
        } else {
            head.status == 101 && s.upgrade
        };
        if head.status < 200 && !upgraded {
            if head.status == 101 {
                self.upstream_failed(cx, d, u, Local::ProtocolError);
                return false;
            }
            // 100 Continue and the like: pass on, wait for the real one.
            let mut out = BytesMut::new();
            let hs = strip_hop_by_hop(&head.headers, false);
            codec::write_response(&mut out, head.status, &head.reason, &hs);
            dn.out.push_back(out.freeze());
            self.flush_down(cx, d);
            return true;
        }
        let framing = match codec::response_body(&s.method, &head) {
            Ok(b) => b,
            Err(_) => {
                self.upstream_failed(cx, d, u, Local::ProtocolError);
                return false;
            }
        };
        let keep = head.version == Version::Http11
            && !has_token(&head.headers, "connection", "close")
            && framing != Body::UntilClose
            && !upgraded;
        s.upstream_keepalive &= keep;
        if framing == Body::UntilClose {
            dn.close_after = true;
        }
        let mut hs = forward_headers(&head.headers, upgraded && !s.connect);
        let ms = cx.now.saturating_since(s.started).as_millis();
        hs.push(Header::new("x-envoy-upstream-service-time", ms.to_string()));
        if let Some((t, vi, ri)) = &s.route {
            let (vh, r) = t.at(*vi, *ri);
            r.headers.apply(&mut hs, false);
            vh.headers.apply(&mut hs, false);
            t.headers.apply(&mut hs, false);
        }
        set_header(&mut hs, "server", self.listeners[li].extra.server.clone());
        let dn = &mut self.downs[d];
        if dn.close_after && !upgraded {
            hs.push(Header::new("connection", "close"));
        }
        let mut out = BytesMut::new();
        codec::write_response(&mut out, head.status, &head.reason, &hs);
        dn.out.push_back(out.freeze());
        self.count_status(d, head.status);
        if let Some(h) = cx.upstreams.histograms(&self.ups[u].up) {
            h.codes.inc(head.status);
        }
        for c in cx.upstreams.counters(&self.ups[u].up) {
            match head.status / 100 {
                2 => c.rq_2xx.inc(),
                3 => c.rq_3xx.inc(),
                4 => c.rq_4xx.inc(),
                5 => c.rq_5xx.inc(),
                _ => c.rq_1xx.inc(),
            }
        }
        let dn = &mut self.downs[d];
        let s = dn.stream.as_mut().expect("a stream");
        if upgraded {
            s.resp = RespPhase::Done;
            dn.phase = Phase::Tunnel;
            self.flush_down(cx, d);
            self.pump_tunnel(cx, d);
            return false;
        }
        let reader = BodyReader::new(framing);
        if reader.done() {
            s.resp = RespPhase::Done;
            self.response_done(cx, d, u);
            return false;
        }
        s.resp = RespPhase::Body(reader);
        self.flush_down(cx, d);
        true
    }

    /// Body bytes from `u` for client connection `d`.
    fn response_bytes(&mut self, cx: &mut Cx<'_>, d: u32, u: u32, b: Bytes) {
        let dn = &mut self.downs[d];
        let s = dn.stream.as_mut().expect("a stream");
        let RespPhase::Body(r) = &mut s.resp else {
            s.upstream_keepalive = false;
            return;
        };
        let n = match r.feed(&b) {
            Ok(n) => n,
            Err(_) => {
                // A broken body after the head went out: reset both.
                self.end_down(cx, d, true);
                return;
            }
        };
        if n < b.len() {
            s.upstream_keepalive = false; // bytes past the response
        }
        let done = r.done();
        if n > 0 {
            dn.out.push_back(b.slice(..n));
            let li = dn.listener;
            self.lstats(li).bytes_down.add(n as u64);
            for c in cx.upstreams.counters(&self.ups[u].up) {
                c.bytes_down.add(n as u64);
            }
        }
        if done {
            self.downs[d].stream.as_mut().expect("a stream").resp = RespPhase::Done;
            self.response_done(cx, d, u);
        } else {
            self.flush_down(cx, d);
        }
    }

    /// The upstream's FIN with nothing left to read.
    fn upstream_eof(&mut self, cx: &mut Cx<'_>, u: u32) {
        let Some(d) = self.ups.get(u).and_then(|x| x.down) else {
            return;
        };
        let Some(s) = self.downs.get_mut(d).and_then(|dn| dn.stream.as_mut()) else {
            return;
        };
        match &s.resp {
            RespPhase::Body(BodyReader::UntilClose) => {
                s.resp = RespPhase::Done;
                s.upstream_keepalive = false;
                self.response_done(cx, d, u);
            }
            RespPhase::Head if s.resp_buf.is_empty() => self.stale_or_reset(cx, d, u),
            RespPhase::Done => {}
            _ => {
                // Cut short mid-response.
                if self.downs[d].out.is_empty()
                    && matches!(
                        self.downs[d].stream.as_ref().map(|s| &s.resp),
                        Some(RespPhase::Head)
                    )
                {
                    self.upstream_failed(cx, d, u, Local::Reset);
                } else {
                    self.end_down(cx, d, true);
                }
            }
        }
    }

    /// The upstream closed before any byte of the response: replay the
    /// request on a new connection if it was a reused one and all of the
    /// request is held; else 503.
    fn stale_or_reset(&mut self, cx: &mut Cx<'_>, d: u32, u: u32) {
        let dn = &mut self.downs[d];
        let s = dn.stream.as_mut().expect("a stream");
        let replayable =
            s.replay.is_some() && !s.retried && (s.req.done() || dn.phase == Phase::Body);
        if !replayable {
            return self.upstream_failed(cx, d, u, Local::Reset);
        }
        let replay = s.replay.take().unwrap_or_default();
        s.retried = true;
        s.up = None;
        let cluster = s.cluster.clone();
        for c in cx.upstreams.counters(&self.ups[u].up) {
            c.rq_retried_stale.inc();
        }
        self.end_up(cx, u, true);
        if let Err(why) = self.attach_upstream(cx, d, &cluster, true) {
            return self.local_reply(cx, d, why, true);
        }
        let s = self.downs[d].stream.as_mut().expect("a stream");
        // What was queued but not yet sent is part of the replay already.
        s.to_up = replay.into();
        self.flush_up(cx, d);
    }

    /// No response can come from `u`: answer `why` if nothing was sent to
    /// the client yet, else reset it.
    fn upstream_failed(&mut self, cx: &mut Cx<'_>, d: u32, u: u32, why: Local) {
        let head_sent = self
            .downs
            .get(d)
            .and_then(|dn| dn.stream.as_ref())
            .is_some_and(|s| !matches!(s.resp, RespPhase::Head));
        if head_sent {
            self.end_down(cx, d, true);
        } else {
            if let Some(s) = self.downs.get_mut(d).and_then(|dn| dn.stream.as_mut()) {
                s.up = None;
            }
            self.end_up(cx, u, true);
            self.local_reply(cx, d, why, true);
        }
    }

    /// The response from `u` is complete: pool or close `u`, then finish
    /// the client's stream.
    fn response_done(&mut self, cx: &mut Cx<'_>, d: u32, u: u32) {
        let dn = &mut self.downs[d];
        let s = dn.stream.as_mut().expect("a stream");
        let us = cx.now.saturating_since(s.started).as_micros() as u64;
        if let Some(h) = cx.upstreams.histograms(&self.ups[u].up) {
            h.upstream_rq_time.record_us(us);
        }
        let reusable = s.upstream_keepalive
            && s.req.done()
            && s.to_up.is_empty()
            && !self.draining
            && !self.keepalive_off;
        s.up = None;
        if reusable
            && cx
                .engine
                .connection(self.ups[u].up.conn)
                .is_some_and(|c| c.is_established() && !c.peer_closed())
        {
            let up = &mut self.ups[u];
            up.down = None;
            up.idle_since = cx.now;
            let key = (up.up.cluster, up.up.endpoint);
            let serial = up.serial;
            self.pool.entry(key).or_default().push(u);
            self.timer(cx.now + POOL_IDLE, TimerKind::Pool, false, u, serial);
        } else {
            self.end_up(cx, u, false);
        }
        self.finish_stream(cx, d);
    }

    fn unpool(&mut self, u: u32) {
        let Some(up) = self.ups.get(u) else {
            return;
        };
        let key = (up.up.cluster, up.up.endpoint);
        if let Some(v) = self.pool.get_mut(&key) {
            v.retain(|&x| x != u);
            if v.is_empty() {
                self.pool.remove(&key);
            }
        }
    }

    /// After an upgrade: bytes both ways as they come, the splice's way.
    fn pump_tunnel(&mut self, cx: &mut Cx<'_>, d: u32) {
        let Some(dn) = self.downs.get_mut(d) else {
            return;
        };
        let Some(u) = dn.stream.as_ref().and_then(|s| s.up) else {
            return;
        };
        let up_conn = self.ups[u].up.conn;
        // Client to upstream: what was read past the request's head (early
        // tunnel bytes) first, then what comes.
        if let Some(s) = dn.stream.as_mut()
            && !dn.inbuf.is_empty()
        {
            s.to_up.push_back(std::mem::take(&mut dn.inbuf));
        }
        self.flush_up(cx, d);
        let dn = &mut self.downs[d];
        let Some(s) = dn.stream.as_mut() else {
            return;
        };
        while s.to_up.is_empty() {
            let Some(b) = cx.engine.recv(dn.id) else {
                break;
            };
            let n = cx.engine.send(up_conn, b.clone());
            if n < b.len() {
                s.to_up.push_back(b.slice(n..));
            }
        }
        // Upstream to client.
        while dn.out.is_empty() {
            let Some(b) = cx.engine.recv(up_conn) else {
                break;
            };
            let n = cx.engine.send(dn.id, b.clone());
            if n < b.len() {
                dn.out.push_back(b.slice(n..));
            }
        }
        let down_eof = cx
            .engine
            .connection(dn.id)
            .is_none_or(|c| c.peer_closed() && c.recv_ready() == 0);
        let up_eof = cx
            .engine
            .connection(up_conn)
            .is_none_or(|c| c.peer_closed() && c.recv_ready() == 0);
        if down_eof && s.to_up.is_empty() {
            cx.engine.close(up_conn);
        }
        if up_eof && dn.out.is_empty() {
            cx.engine.close(dn.id);
        }
        if down_eof && up_eof && s.to_up.is_empty() && dn.out.is_empty() {
            self.end_down(cx, d, false);
        }
    }
}

fn body_is_empty(b: Body) -> bool {
    b == Body::Empty
}

/// The authority of a CONNECT request (`host:port`), and no path.
fn connect_target(h: &RequestHead) -> Option<(Bytes, Bytes)> {
    let t = &h.target;
    let port_ok = t
        .iter()
        .rposition(|b| *b == b':')
        .is_some_and(|i| i + 1 < t.len() && t[i + 1..].iter().all(u8::is_ascii_digit));
    (port_ok && valid_authority(t) && !t.contains(&b'@')).then(|| (t.clone(), Bytes::new()))
}

/// The authority and the path (with query) of a request.
fn target_parts(h: &RequestHead) -> Option<(Bytes, Bytes)> {
    let hosts: Vec<&Header> = h.headers.iter().filter(|x| x.is("host")).collect();
    if hosts.len() > 1 {
        return None;
    }
    let t = &h.target;
    if t.starts_with(b"/") {
        let host = match hosts.first() {
            Some(x) => trim(&x.value).to_vec(),
            None if h.version == Version::Http10 => Vec::new(),
            None => return None,
        };
        if !valid_authority(&host) {
            return None;
        }
        return Some((Bytes::from(host), t.clone()));
    }
    if t.as_ref() == b"*" {
        let host = hosts
            .first()
            .map(|x| trim(&x.value).to_vec())
            .unwrap_or_default();
        return Some((Bytes::from(host), t.clone()));
    }
    // Absolute form: the authority in it wins over `host`.
    let rest = t
        .strip_prefix(b"http://")
        .or_else(|| t.strip_prefix(b"https://"))?;
    let end = rest
        .iter()
        .position(|b| *b == b'/' || *b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || !valid_authority(authority) {
        return None;
    }
    let path = &rest[end..];
    let path = if path.is_empty() {
        Bytes::from_static(b"/")
    } else if path[0] == b'?' {
        let mut p = b"/".to_vec();
        p.extend_from_slice(path);
        Bytes::from(p)
    } else {
        t.slice_ref(path)
    };
    Some((t.slice_ref(authority), path))
}

fn valid_authority(a: &[u8]) -> bool {
    a.iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~:[]!$&'()*+,;=%@".contains(b))
}

/// Headers to pass on, either way: without hop-by-hop fields (and those
/// `connection` names), keeping `upgrade`/`connection: upgrade` for an
/// allowed upgrade.
fn forward_headers(hs: &[Header], upgrade: bool) -> Vec<Header> {
    let mut out = strip_hop_by_hop(hs, upgrade);
    if upgrade {
        out.push(Header::new("connection", "upgrade"));
    }
    out
}

fn strip_hop_by_hop(hs: &[Header], upgrade: bool) -> Vec<Header> {
    let named: Vec<Vec<u8>> = hs
        .iter()
        .filter(|h| h.is("connection"))
        .flat_map(|h| {
            h.value
                .split(|b| *b == b',')
                .map(|t| trim(t).to_ascii_lowercase())
        })
        .filter(|t| !t.is_empty() && t != b"close" && t != b"keep-alive" && t != b"upgrade")
        .collect();
    hs.iter()
        .filter(|h| {
            !(h.is("connection")
                || h.is("keep-alive")
                || h.is("proxy-connection")
                || (h.is("te") && !trim(&h.value).eq_ignore_ascii_case(b"trailers"))
                || (h.is("upgrade") && !upgrade)
                || h.is("x-envoy-upstream-service-time")
                || named.iter().any(|n| h.name.eq_ignore_ascii_case(n)))
        })
        .cloned()
        .collect()
}

/// Replace every `name` field with one holding `v`.
fn set_header(hs: &mut Vec<Header>, name: &'static str, v: Bytes) {
    hs.retain(|h| !h.is(name));
    hs.push(Header::new(name, v));
}

/// A random (version 4) UUID, as Envoy's `x-request-id`.
fn uuid4(a: u64, b: u64) -> String {
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// RFC 3986 path normalization as Envoy's `normalize_path` does it:
/// percent-encoded unreserved characters decoded, `.` and `..` segments
/// resolved (never above the root). `None`: not a path.
pub fn normalize_path(p: &[u8]) -> Option<Bytes> {
    let q = p.iter().position(|b| *b == b'?').unwrap_or(p.len());
    let (path, query) = p.split_at(q);
    if !path.starts_with(b"/") {
        return if path == b"*" {
            Some(Bytes::copy_from_slice(p))
        } else {
            None
        };
    }
    // Decode %XX of unreserved characters; upper-case the others' hex.
    let mut dec = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let c = path[i];
        if c == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            let (Some(h), Some(l)) = (
                path.get(i + 1).and_then(|b| hex(*b)),
                path.get(i + 2).and_then(|b| hex(*b)),
            ) else {
                return None;
            };
            let v = (h * 16 + l) as u8;
            if v.is_ascii_alphanumeric() || b"-._~".contains(&v) {
                dec.push(v);
            } else {
                dec.push(b'%');
                dec.push(path[i + 1].to_ascii_uppercase());
                dec.push(path[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else {
            dec.push(c);
            i += 1;
        }
    }
    // Remove dot segments.
    let mut segs: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = dec[1..].split(|b| *b == b'/').collect();
    let last = parts.len() - 1;
    let mut trailing = false;
    for (k, s) in parts.iter().enumerate() {
        match *s {
            b"." => trailing = k == last,
            b".." => {
                segs.pop();
                trailing = k == last;
            }
            s => {
                segs.push(s);
                trailing = false;
            }
        }
    }
    let mut out = Vec::with_capacity(dec.len() + query.len());
    for s in &segs {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    out.extend_from_slice(query);
    Some(Bytes::from(out))
}

/// Adjacent slashes in the path (not the query) merged.
pub fn merge_slashes(p: &[u8]) -> Bytes {
    let q = p.iter().position(|b| *b == b'?').unwrap_or(p.len());
    let mut out = Vec::with_capacity(p.len());
    for (i, &b) in p[..q].iter().enumerate() {
        if b == b'/' && i > 0 && p[i - 1] == b'/' {
            continue;
        }
        out.push(b);
    }
    out.extend_from_slice(&p[q..]);
    Bytes::from(out)
}

fn is_http(l: &ListenerLive) -> bool {
    matches!(l.cfg.filter(), Some(Filter::Http(_)))
}

impl App for HttpProxy {
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
            Event::Connected(id) => match self.by_conn.get(&id) {
                Some(&Side::Up(u)) => {
                    let up = &mut self.ups[u];
                    if !up.connected {
                        up.connected = true;
                        cx.upstreams.connected(&up.up, cx.now);
                    }
                    if let Some(d) = up.down {
                        self.flush_up(cx, d);
                        self.drive_down(cx, d);
                    }
                }
                Some(_) => {}
                None => return Some(ev),
            },
            Event::Readable(id) | Event::PeerClosed(id) => match self.by_conn.get(&id) {
                Some(&Side::Down(d)) => {
                    if matches!(ev, Event::PeerClosed(_)) {
                        self.downs[d].eof = true;
                    }
                    self.drive_down(cx, d);
                }
                Some(&Side::Up(u)) => self.drive_up(cx, u),
                None => return Some(ev),
            },
            Event::Writable(id) => match self.by_conn.get(&id) {
                Some(&Side::Down(d)) => {
                    self.flush_down(cx, d);
                    if let Some(u) = self
                        .downs
                        .get(d)
                        .and_then(|dn| dn.stream.as_ref())
                        .and_then(|s| s.up)
                    {
                        self.drive_up(cx, u);
                    } else {
                        self.drive_down(cx, d);
                    }
                }
                Some(&Side::Up(u)) => {
                    if let Some(d) = self.ups[u].down {
                        self.flush_up(cx, d);
                        self.drive_down(cx, d);
                    }
                }
                None => return Some(ev),
            },
            Event::Closed(id, why) => match self.by_conn.get(&id) {
                Some(&Side::Down(d)) => {
                    self.by_conn.remove(&id);
                    self.end_down(cx, d, false);
                }
                Some(&Side::Up(u)) => {
                    self.by_conn.remove(&id);
                    let up = &self.ups[u];
                    match up.down {
                        None => {
                            self.unpool(u);
                            self.end_up(cx, u, false);
                        }
                        Some(d) if !up.connected => {
                            let up = self.ups.remove(u).expect("in use");
                            cx.upstreams.release(up.up, Outcome::ConnectFailed, cx.now);
                            if let Some(s) = self.downs.get_mut(d).and_then(|dn| dn.stream.as_mut())
                            {
                                s.up = None;
                            }
                            self.local_reply(cx, d, Local::ConnectFailure, true);
                        }
                        Some(d) => {
                            // Read what it sent before going.
                            self.drive_up(cx, u);
                            if self.ups.get(u).is_some() {
                                if why == CloseReason::Normal {
                                    self.upstream_eof(cx, u);
                                } else {
                                    let fresh = self
                                        .downs
                                        .get(d)
                                        .and_then(|dn| dn.stream.as_ref())
                                        .is_some_and(|s| {
                                            matches!(s.resp, RespPhase::Head)
                                                && s.resp_buf.is_empty()
                                        });
                                    if fresh {
                                        self.stale_or_reset(cx, d, u);
                                    } else {
                                        self.upstream_failed(cx, d, u, Local::Reset);
                                    }
                                }
                            }
                        }
                    }
                }
                None => return Some(ev),
            },
        }
        None
    }

    fn connect_timeout(&mut self, cx: &mut Cx<'_>, conn: ConnId) {
        let Some(&Side::Up(u)) = self.by_conn.get(&conn) else {
            return;
        };
        self.by_conn.remove(&conn);
        let up = self.ups.remove(u).expect("in use");
        cx.engine.abort(conn);
        cx.upstreams.release(up.up, Outcome::ConnectTimeout, cx.now);
        if let Some(d) = up.down {
            if let Some(s) = self.downs.get_mut(d).and_then(|dn| dn.stream.as_mut()) {
                s.up = None;
            }
            self.local_reply(cx, d, Local::ConnectTimeout, true);
        }
    }

    fn tick(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        while let Some(&Reverse((at, kind, is_down, slot, serial))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !is_down {
                // An idle pooled connection.
                if let Some(up) = self.ups.get(slot)
                    && up.serial == serial
                    && up.down.is_none()
                {
                    let due = up.idle_since + POOL_IDLE;
                    if due > now {
                        self.timer(due, TimerKind::Pool, false, slot, serial);
                    } else {
                        self.unpool(slot);
                        self.end_up(cx, slot, false);
                    }
                }
                continue;
            }
            let Some(dn) = self.downs.get(slot) else {
                continue;
            };
            if dn.serial != serial {
                continue;
            }
            let li = dn.listener;
            match kind {
                TimerKind::Route => {
                    if dn.stream.is_some() && dn.phase != Phase::Tunnel {
                        self.lstats(li).rq_timeouts.inc();
                        if let Some(u) = dn.stream.as_ref().and_then(|s| s.up) {
                            let [c, _] = cx.upstreams.counters(&self.ups[u].up);
                            c.rq_timeouts.inc();
                        }
                        let u = dn.stream.as_ref().and_then(|s| s.up);
                        match u {
                            Some(u) => self.upstream_failed(cx, slot, u, Local::Timeout),
                            None => self.local_reply(cx, slot, Local::Timeout, true),
                        }
                    }
                }
                TimerKind::Head => {
                    if dn.head_since.is_some() && dn.stream.is_none() {
                        self.local_reply(cx, slot, Local::RequestHeadersTimeout, true);
                    }
                }
                TimerKind::Idle => {
                    let h = &self.listeners[li].extra.http;
                    let ms = if dn.stream.is_some() {
                        h.stream_idle_timeout_ms
                    } else {
                        h.idle_timeout_ms
                    };
                    if ms == 0 || dn.phase == Phase::Closing {
                        continue;
                    }
                    let due = dn.last_active + Duration::from_millis(ms);
                    if due > now {
                        self.timer(due, TimerKind::Idle, true, slot, serial);
                    } else if dn.stream.is_some() {
                        let u = dn.stream.as_ref().and_then(|s| s.up);
                        match u {
                            Some(u) => self.upstream_failed(cx, slot, u, Local::StreamIdle),
                            None => self.local_reply(cx, slot, Local::StreamIdle, true),
                        }
                    } else if dn.inbuf.is_empty() && dn.head_since.is_none() {
                        // Idle between requests: close quietly.
                        self.downs[slot].phase = Phase::Closing;
                        self.flush_down(cx, slot);
                    } else {
                        self.local_reply(cx, slot, Local::RequestHeadersTimeout, true);
                    }
                }
                TimerKind::Delay => {
                    if let Some(head) = self.downs[slot].delayed.take() {
                        self.route_request(cx, slot, head, true);
                        // Its body may be waiting in the receive queue.
                        self.drive_down(cx, slot);
                    }
                }
                TimerKind::Request => {
                    // Only while the request is not all in.
                    let unread =
                        dn.delayed.is_some() || dn.stream.as_ref().is_some_and(|s| !s.req.done());
                    if unread {
                        self.lstats(li).rq_timeouts.inc();
                        let u = dn.stream.as_ref().and_then(|s| s.up);
                        match u {
                            Some(u) => self.upstream_failed(cx, slot, u, Local::RequestTimeout),
                            None => self.local_reply(cx, slot, Local::RequestTimeout, true),
                        }
                    }
                }
                TimerKind::Pool => {}
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, ..))| *at)
    }

    fn retire(&mut self, cx: &mut Cx<'_>, u: &Update) {
        // A listener that is no longer `http` is another app's now: it
        // goes here as if removed; its idle connections close at once.
        let (retired, accepted) = self.listeners.retire(cx.engine, u, is_http);
        self.open_all(cx, accepted);
        for li in retired {
            self.close_idle(cx, Some(li));
            self.listeners.removed(li);
        }
        for name in &u.remove_route_configs {
            self.routes.remove(name);
        }
    }

    fn apply(&mut self, cx: &mut Cx<'_>, u: &Update) {
        for t in &u.route_tables {
            self.routes.insert(t.name.clone(), t.clone());
        }
        let drained = cx.stats.drained.load(Relaxed);
        let accepted = self.listeners.apply(cx.engine, u, drained, |l| {
            let Some(Filter::Http(h)) = l.cfg.filter() else {
                return None;
            };
            Some(HttpListener {
                http: Arc::new(h.clone()),
                server: Bytes::from(h.server_name.clone()),
            })
        });
        self.open_all(cx, accepted);
        // Pooled connections to endpoints no longer configured go.
        let stale: Vec<u32> = self
            .pool
            .values()
            .flatten()
            .copied()
            .filter(|&x| !cx.upstreams.is_current(&self.ups[x].up))
            .collect();
        for x in stale {
            self.unpool(x);
            self.end_up(cx, x, false);
        }
    }

    /// Stop accepting; idle keep-alive connections close at once, the
    /// others after their response (which says `connection: close`).
    fn drain(&mut self, cx: &mut Cx<'_>) {
        self.draining = true;
        let accepted = self.listeners.drain(cx.engine);
        self.open_all(cx, accepted);
        self.close_idle(cx, None);
        for d in 0..self.downs.capacity() as u32 {
            if let Some(dn) = self.downs.get_mut(d) {
                dn.close_after = true;
            }
        }
        let pooled: Vec<u32> = self.pool.values().flatten().copied().collect();
        for x in pooled {
            self.unpool(x);
            self.end_up(cx, x, false);
        }
    }

    /// `disable_http_keepalive`: idle client connections close now, the
    /// others after the response in progress (or their first); until it
    /// goes off, every response says `connection: close`, and no upstream
    /// connection is pooled (the pooled ones close now).
    fn overload(&mut self, cx: &mut Cx<'_>, action: OverloadAction, on: bool) {
        if action != OverloadAction::DisableHttpKeepalive {
            return;
        }
        self.keepalive_off = on;
        if !on {
            return;
        }
        let mut told = 0u64;
        for d in 0..self.downs.capacity() as u32 {
            if let Some(dn) = self.downs.get_mut(d)
                && dn.phase != Phase::Closing
                && !dn.close_after
            {
                dn.close_after = true;
                told += 1;
            }
        }
        let shed = self.close_idle(cx, None);
        // Idle pooled upstream connections hold table slots and buffers
        // too; none is pooled while the action is on.
        let pooled: Vec<u32> = self.pool.values().flatten().copied().collect();
        for &x in &pooled {
            self.unpool(x);
            self.end_up(cx, x, false);
        }
        let o = &cx.stats.overload;
        o.idle_connections_shed.add(shed);
        o.keepalive_disabled.add(told.saturating_sub(shed));
        o.upstream_idle_closed.add(pooled.len() as u64);
    }

    fn abort_all(&mut self, cx: &mut Cx<'_>) {
        for d in 0..self.downs.capacity() as u32 {
            if self.downs.get(d).is_some() {
                self.end_down(cx, d, true);
            }
        }
        for u in 0..self.ups.capacity() as u32 {
            if self.ups.get(u).is_some() {
                self.end_up(cx, u, true);
            }
        }
        self.pool.clear();
    }
}

impl HttpProxy {
    /// Close client connections between requests (of listener `li`, or
    /// all); those that have not had one yet close after their first.
    /// Returns how many closed now.
    fn close_idle(&mut self, cx: &mut Cx<'_>, li: Option<u32>) -> u64 {
        let mut n = 0;
        for d in 0..self.downs.capacity() as u32 {
            let Some(dn) = self.downs.get_mut(d) else {
                continue;
            };
            if li.is_some_and(|l| l != dn.listener) {
                continue;
            }
            if dn.phase != Phase::Head || !dn.inbuf.is_empty() || dn.head_since.is_some() {
                continue;
            }
            if dn.requests == 0 {
                // Not idle but new: its first request may be on the wire
                // already, and a client retries only on a connection it
                // has used. It closes after its first response instead.
                dn.close_after = true;
                continue;
            }
            dn.phase = Phase::Closing;
            self.flush_down(cx, d);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_as_rfc_3986_says() {
        let n =
            |p: &str| normalize_path(p.as_bytes()).map(|b| String::from_utf8(b.to_vec()).unwrap());
        assert_eq!(n("/a/./b/../c?x/../y").as_deref(), Some("/a/c?x/../y"));
        assert_eq!(n("/../../a").as_deref(), Some("/a"));
        assert_eq!(n("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(n("/%61%2f%7e").as_deref(), Some("/a%2F~"));
        assert_eq!(n("/%zz"), None);
        assert_eq!(n("a"), None);
        assert_eq!(&merge_slashes(b"//a///b?x//y")[..], b"/a/b?x//y");
    }

    #[test]
    fn absolute_form_targets_carry_their_authority() {
        let head = |t: &str, host: Option<&str>| RequestHead {
            method: Bytes::from_static(b"GET"),
            target: Bytes::copy_from_slice(t.as_bytes()),
            version: Version::Http11,
            headers: host
                .map(|h| vec![Header::new("host", h.to_owned())])
                .unwrap_or_default(),
        };
        let p = |t, h| {
            target_parts(&head(t, h)).map(|(a, p)| {
                (
                    String::from_utf8(a.to_vec()).unwrap(),
                    String::from_utf8(p.to_vec()).unwrap(),
                )
            })
        };
        assert_eq!(p("/x", Some("a")), Some(("a".into(), "/x".into())));
        assert_eq!(
            p("http://b:8/y?q", Some("a")),
            Some(("b:8".into(), "/y?q".into()))
        );
        assert_eq!(p("http://b?q", None), Some(("b".into(), "/?q".into())));
        assert_eq!(p("/x", None), None);
        assert_eq!(p("/x", Some("a b")), None);
    }

    #[test]
    fn hop_by_hop_fields_do_not_pass() {
        let hs = vec![
            Header::new("connection", "keep-alive, x-secret"),
            Header::new("x-secret", "1"),
            Header::new("keep-alive", "timeout=5"),
            Header::new("te", "gzip"),
            Header::new("upgrade", "websocket"),
            Header::new("x-kept", "1"),
        ];
        let out = forward_headers(&hs, false);
        assert_eq!(out.len(), 1);
        assert!(out[0].is("x-kept"));
        let out = forward_headers(&hs, true);
        assert!(out.iter().any(|h| h.is("upgrade")));
        assert!(
            out.iter()
                .any(|h| h.is("connection") && &h.value[..] == b"upgrade")
        );
        let id = uuid4(1, 2);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
