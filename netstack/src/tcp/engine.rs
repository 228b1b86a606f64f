//! The per-core TCP engine: demultiplexes segments to connections in O(1),
//! owns listeners and their backlogs, runs timers on a wheel, and tells the
//! caller what happened through an event queue, so nothing ever scans idle
//! connections.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use hashbrown::HashMap;
use siphasher::sip::SipHasher13;

use super::wheel::Wheel;
use super::{
    CloseReason, Connection, CookieHandshake, CookieOptions, Segment, Seq, State, TcpConfig,
    window_shift_for,
};
use crate::Instant;
use crate::rss::Steering;

/// Local and remote ends of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourTuple {
    pub local: (Ipv4Addr, u16),
    pub remote: (Ipv4Addr, u16),
}

/// A connection's handle: slot index and generation, so a stale handle never
/// reaches a reused slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

/// What happened, in order. Edge-triggered: `Readable` once when data becomes
/// available after the queue was drained, and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A passive connection finished its handshake; take it with `accept`.
    Incoming {
        listener: (Ipv4Addr, u16),
    },
    /// Our active open completed.
    Connected(ConnId),
    Readable(ConnId),
    /// Send buffer space opened after `send` took less than offered.
    Writable(ConnId),
    /// The peer sent FIN and everything before it has been read.
    PeerClosed(ConnId),
    /// The connection is gone; its handle is now invalid.
    Closed(ConnId, CloseReason),
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub tcp: TcpConfig,
    /// Connections (of every state) this core holds at most.
    pub max_connections: usize,
    /// Payload bytes all of this core's connections hold at most, queued to
    /// send or received and not yet read. At the limit `send` takes nothing
    /// (the caller gets `Writable` when room returns) and received payload is
    /// dropped, its ACK information kept (the peer retransmits).
    pub max_buffered: usize,
    /// Secret for ISNs (RFC 6528); random in production, fixed in tests.
    pub secret: [u8; 16],
    /// Timer wheel resolution.
    pub tick: Duration,
    /// With several cores: per local address (so per port), how the device
    /// (or software in its place) spreads received packets over them. Active
    /// opens from an address listed here use only ephemeral ports whose
    /// replies come back to this core.
    pub steering: Vec<(Ipv4Addr, Steering)>,
}

impl EngineConfig {
    /// The defaults, which [`Default`] returns. The data plane's configuration
    /// (`dataplane-config`) takes its `tcp.max_connections` default from here.
    pub const DEFAULT: EngineConfig = EngineConfig {
        tcp: TcpConfig::DEFAULT,
        max_connections: 100_000,
        max_buffered: 1 << 30,
        secret: [0; 16],
        tick: Duration::from_millis(1),
        steering: Vec::new(),
    };
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig::DEFAULT
    }
}

/// Engine counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub segments_in: u64,
    pub segments_out: u64,
    /// Connections in TIME_WAIT ended early by a newer SYN (RFC 6191).
    pub time_wait_reopened: u64,
    /// Old duplicates dropped by PAWS (summed when connections close).
    pub paws_rejected: u64,
    pub syn_retried_after_rst: u64,
    /// Segments for no connection or listener, answered with RST.
    pub no_connection: u64,
    pub resets_sent: u64,
    pub syns_received: u64,
    /// SYNs refused because the listener's backlog was full.
    pub backlog_full: u64,
    /// SYNs refused because the connection table was full.
    pub table_full: u64,
    pub accepted: u64,
    /// SYN-ACKs with a cookie, sent instead of queueing when the backlog was full.
    pub syn_cookies_sent: u64,
    /// Handshakes completed from a valid cookie.
    pub syn_cookies_accepted: u64,
    /// ACKs to a listener carrying a cookie that did not verify.
    pub syn_cookies_invalid: u64,
    pub connected: u64,
    pub closed: u64,
    /// Passive connections that ended before the application accepted them
    /// (reset or timed out in the handshake, or closed while queued); the
    /// application never hears of them (RFC 9293 §3.10.7.4).
    pub unaccepted_closed: u64,
    /// Mechanism totals of connections that have ended.
    pub retransmits: u64,
    pub fast_retransmits: u64,
    pub rto_expirations: u64,
    pub zero_window_probes: u64,
    pub challenge_acks: u64,
    /// Handshakes refused while the engine was refusing (overload).
    pub overload_refused: u64,
    /// Segments outside a connection's receive window (answered with an
    /// ACK; a blind injection's usual fate).
    pub out_of_window: u64,
    /// Payload bytes held by every connection now (a gauge).
    pub buffered: u64,
    /// Segments whose payload was dropped because `max_buffered` was reached.
    pub rx_over_budget: u64,
    /// `send` calls cut short by `max_buffered`.
    pub send_over_budget: u64,
}

#[derive(Debug)]
struct Listener {
    /// Time slot in which this listener last sent a SYN cookie: only then
    /// are ACKs checked as cookies (so a blind attacker cannot guess at will).
    cookie_slot: Option<u32>,
    backlog: usize,
    /// Handshakes in progress or done, not yet accepted.
    pending: usize,
    ready: VecDeque<ConnId>,
}

#[derive(Debug)]
struct Entry {
    conn: Connection,
    tuple: FourTuple,
    /// Listener it came from, until accepted.
    listener: Option<(Ipv4Addr, u16)>,
    /// Deadline registered in the wheel (the earliest one, if several).
    timer: Option<Instant>,
    dirty: bool,
    was_established: bool,
    readable_sent: bool,
    peer_closed_sent: bool,
    want_writable: bool,
    /// Its share of `EngineStats::buffered` when last counted.
    buffered: usize,
    /// Listed in `over_budget` (once).
    awaits_budget: bool,
}

/// One core's TCP. See the module docs.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    /// `cfg.tcp`, shared by the connections.
    tcp: std::sync::Arc<super::TcpConfig>,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    generations: Vec<u32>,
    by_tuple: HashMap<FourTuple, u32, KeyedState>,
    listeners: HashMap<(Ipv4Addr, u16), Listener, KeyedState>,
    /// (slot, generation, deadline µs): an entry whose deadline is no longer
    /// the registered one is stale and ignored.
    wheel: Wheel<(u32, u32, u64)>,
    dirty: VecDeque<u32>,
    /// Connections that were refused send room by `max_buffered`: told
    /// `Writable` when the core is back under it.
    over_budget: Vec<(u32, u32)>,
    events: VecDeque<Event>,
    pending_rst: VecDeque<(FourTuple, Segment)>,
    due_scratch: Vec<(u32, u32, u64)>,
    next_port: u16,
    epoch: Instant,
    stats: EngineStats,
    /// Overload: listeners answer new handshakes with a RST.
    refusing: bool,
}

/// SipHash keyed by the engine's secret: 4-tuples are chosen by whoever
/// sends us packets, so the table must not be a collision target.
#[derive(Debug, Clone)]
struct KeyedState([u8; 16]);

impl BuildHasher for KeyedState {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_key(&self.0)
    }
}

const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

/// MSS values a SYN cookie can carry (3 bits).
const COOKIE_MSS: [u16; 8] = [536, 1024, 1220, 1360, 1400, 1440, 1452, 1460];

impl Engine {
    pub fn new(cfg: EngineConfig, now: Instant) -> Engine {
        let mut table_key = cfg.secret;
        table_key[0] ^= 0x5a; // a different key than the ISN function's
        Engine {
            slots: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            by_tuple: HashMap::with_hasher(KeyedState(table_key)),
            listeners: HashMap::with_hasher(KeyedState(table_key)),
            wheel: Wheel::new(4096, cfg.tick.as_micros().max(1) as u64, now),
            dirty: VecDeque::new(),
            over_budget: Vec::new(),
            events: VecDeque::new(),
            pending_rst: VecDeque::new(),
            due_scratch: Vec::new(),
            // From the secret: a restarted process does not walk the ports
            // its predecessor just used (and the peer may hold in TIME_WAIT).
            next_port: *EPHEMERAL.start()
                + u16::from_le_bytes([cfg.secret[0], cfg.secret[1]])
                    % (*EPHEMERAL.end() - *EPHEMERAL.start()),
            epoch: now,
            stats: EngineStats::default(),
            refusing: false,
            tcp: std::sync::Arc::new(cfg.tcp.clone()),
            cfg,
        }
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The limits this engine was made with.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// While on, every listener refuses new connections: a SYN, or the ACK
    /// completing a SYN cookie, gets a RST and is counted
    /// (`overload_refused`); no state is kept. Connections already in the
    /// table, half-open ones included, carry on.
    pub fn set_refusing(&mut self, on: bool) {
        self.refusing = on;
    }

    pub fn refusing(&self) -> bool {
        self.refusing
    }

    /// Connections held (every state).
    pub fn len(&self) -> usize {
        self.by_tuple.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_tuple.is_empty()
    }

    /// A hasher keyed by the engine's secret, made distinct per use by
    /// `domain` (the ISN function uses 0), so that no output of one use
    /// tells anything about another.
    fn keyed(&self, domain: u8) -> SipHasher13 {
        let mut key = self.cfg.secret;
        key[15] ^= domain;
        SipHasher13::new_with_key(&key)
    }

    /// RFC 6528: ISN = M + F(4-tuple, secret), M a 4 µs clock.
    fn isn(&self, now: Instant, t: &FourTuple) -> Seq {
        let mut h = self.keyed(0);
        std::hash::Hash::hash(t, &mut h);
        let m = (now.as_micros().wrapping_sub(self.epoch.as_micros()) / 4) as u32;
        Seq((h.finish() as u32).wrapping_add(m))
    }

    // === listeners and opens ===

    /// Accept connections to `addr:port`, holding at most `backlog` that are
    /// in handshake or not yet accepted.
    pub fn listen(&mut self, addr: Ipv4Addr, port: u16, backlog: usize) {
        // Listening again only changes the backlog: connections in progress
        // keep their place.
        self.listeners
            .entry((addr, port))
            .and_modify(|l| l.backlog = backlog.max(1))
            .or_insert(Listener {
                cookie_slot: None,
                backlog: backlog.max(1),
                pending: 0,
                ready: VecDeque::new(),
            });
    }

    /// Stop accepting on `addr:port`: later SYNs are answered with RST, and
    /// connections still in its backlog (handshaking or not yet accepted)
    /// are reset. Connections already accepted are not touched. Scans the
    /// table once; meant for draining, not for the fast path.
    pub fn unlisten(&mut self, addr: Ipv4Addr, port: u16) {
        if self.listeners.remove(&(addr, port)).is_none() {
            return;
        }
        for index in 0..self.slots.len() as u32 {
            let Some(Some(e)) = self.slots.get_mut(index as usize) else {
                continue;
            };
            if e.listener == Some((addr, port)) {
                e.conn.abort();
                self.mark(index);
            }
        }
    }

    /// Take the next established connection of a listener.
    pub fn accept(&mut self, addr: Ipv4Addr, port: u16) -> Option<ConnId> {
        let l = self.listeners.get_mut(&(addr, port))?;
        let id = l.ready.pop_front()?;
        l.pending -= 1;
        if let Some(e) = self.entry_mut(id) {
            e.listener = None;
        }
        // Data or FIN that came before accept now deserves its events.
        self.mark(id.index);
        Some(id)
    }

    /// Open a connection from `local` (an address of ours) to `remote`.
    pub fn connect(
        &mut self,
        now: Instant,
        local: Ipv4Addr,
        remote: (Ipv4Addr, u16),
    ) -> Option<ConnId> {
        if self.len() >= self.cfg.max_connections {
            return None;
        }
        let steering = self.cfg.steering.iter().find(|(a, _)| *a == local);
        let span = u32::from(*EPHEMERAL.end() - *EPHEMERAL.start()) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                port + 1
            };
            let tuple = FourTuple {
                local: (local, port),
                remote,
            };
            if self.by_tuple.contains_key(&tuple) {
                continue;
            }
            if let Some((_, st)) = steering
                && !st.is_ours(remote, tuple.local)
            {
                continue; // its replies would arrive on another core
            }
            let iss = self.isn(now, &tuple);
            let mut conn = Connection::connect(self.tcp.clone(), iss);
            conn.set_ts_offset(self.ts_offset(&tuple));
            return Some(self.insert(tuple, conn, None));
        }
        None
    }

    fn insert(
        &mut self,
        tuple: FourTuple,
        conn: Connection,
        listener: Option<(Ipv4Addr, u16)>,
    ) -> ConnId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.generations[index as usize];
        self.slots[index as usize] = Some(Entry {
            conn,
            tuple,
            listener,
            timer: None,
            dirty: true,
            was_established: false,
            readable_sent: false,
            peer_closed_sent: false,
            want_writable: false,
            buffered: 0,
            awaits_budget: false,
        });
        self.by_tuple.insert(tuple, index);
        self.dirty.push_back(index);
        ConnId { index, generation }
    }

    /// The entry `id` names, if it is still that connection (the slot's
    /// generation is the handle's).
    fn entry(&self, id: ConnId) -> Option<&Entry> {
        let i = id.index as usize;
        (self.generations.get(i) == Some(&id.generation))
            .then(|| self.slots[i].as_ref())
            .flatten()
    }

    fn entry_mut(&mut self, id: ConnId) -> Option<&mut Entry> {
        let i = id.index as usize;
        (self.generations.get(i) == Some(&id.generation))
            .then(|| self.slots[i].as_mut())
            .flatten()
    }

    /// Something changed on this connection: count its buffers again and
    /// queue it for a visit.
    fn mark(&mut self, index: u32) {
        if let Some(Some(e)) = self.slots.get_mut(index as usize) {
            let b = e.conn.buffered();
            self.stats.buffered = self.stats.buffered + b as u64 - e.buffered as u64;
            e.buffered = b;
            if !e.dirty {
                e.dirty = true;
                self.dirty.push_back(index);
            }
        }
    }

    /// Once the core is back under `max_buffered`, connections that were
    /// refused room are visited (and told `Writable`).
    fn wake_over_budget(&mut self) {
        if (self.stats.buffered as usize) < self.cfg.max_buffered {
            // `mark` never lists anything, so the list can be walked in place.
            for k in 0..self.over_budget.len() {
                let (index, generation) = self.over_budget[k];
                if let Some(e) = self.entry_mut(ConnId { index, generation }) {
                    e.awaits_budget = false;
                    self.mark(index);
                }
            }
            self.over_budget.clear();
        }
    }

    // === user side ===

    /// Queue `data` on `id` (by reference). Returns how much was taken: less
    /// than offered when the connection's send buffer or the core's
    /// `max_buffered` is full, and then `Writable` follows when room returns.
    pub fn send(&mut self, id: ConnId, data: Bytes) -> usize {
        if self.entry(id).is_none() {
            return 0;
        }
        let offered = data.len();
        let room = self
            .cfg
            .max_buffered
            .saturating_sub(self.stats.buffered as usize);
        let mut data = data;
        if offered > room {
            data.truncate(room);
            self.stats.send_over_budget += 1; // settle lists it to be woken
        }
        let Some(e) = self.entry_mut(id) else {
            return 0;
        };
        let n = e.conn.send(data);
        e.want_writable |= n < offered;
        self.mark(id.index);
        n
    }

    pub fn recv(&mut self, id: ConnId) -> Option<Bytes> {
        let e = self.entry_mut(id)?;
        let b = e.conn.recv();
        if e.conn.recv_ready() == 0 {
            e.readable_sent = false;
        }
        self.mark(id.index); // a window update may be due
        b
    }

    pub fn close(&mut self, id: ConnId) {
        if let Some(e) = self.entry_mut(id) {
            e.conn.close();
            self.mark(id.index);
        }
    }

    pub fn abort(&mut self, id: ConnId) {
        if let Some(e) = self.entry_mut(id) {
            e.conn.abort();
            self.mark(id.index);
        }
    }

    /// The addresses and ports of connection `id`.
    pub fn tuple(&self, id: ConnId) -> Option<FourTuple> {
        self.entry(id).map(|e| e.tuple)
    }

    pub fn connection(&self, id: ConnId) -> Option<&Connection> {
        self.entry(id).map(|e| &e.conn)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // === segments in ===

    /// A segment from `remote` to `local`, already parsed and checksummed.
    pub fn handle_segment(
        &mut self,
        now: Instant,
        local: (Ipv4Addr, u16),
        remote: (Ipv4Addr, u16),
        seg: Segment,
    ) {
        self.stats.segments_in += 1;
        let tuple = FourTuple { local, remote };
        if let Some(&index) = self.by_tuple.get(&tuple) {
            let Some(Some(e)) = self.slots.get_mut(index as usize) else {
                return;
            };
            let reopen = seg.syn && seg.ack.is_none() && !seg.rst && e.conn.accepts_new_syn(&seg);
            if !reopen {
                let mut seg = seg;
                if !seg.payload.is_empty() && self.stats.buffered as usize >= self.cfg.max_buffered
                {
                    // Keep what it acknowledges; its data (and a FIN after
                    // it) comes again when the peer retransmits.
                    self.stats.rx_over_budget += 1;
                    seg.payload = Bytes::new();
                    seg.fin = false;
                }
                e.conn.handle_segment(now, seg);
                self.mark(index);
                return;
            }
            // RFC 6191: a newer SYN ends TIME_WAIT and opens the tuple anew,
            // so that high connection rates do not run out of 4-tuples.
            self.stats.time_wait_reopened += 1;
            e.conn.end_time_wait();
            self.settle(index);
        }
        if seg.syn && seg.ack.is_none() && !seg.rst {
            self.stats.syns_received += 1;
            let table_full = self.len() >= self.cfg.max_connections;
            if self.refusing && self.listeners.contains_key(&local) {
                self.stats.overload_refused += 1;
                self.reset_for(tuple, &seg);
                return;
            }
            if let Some(l) = self.listeners.get_mut(&local) {
                if l.pending >= l.backlog {
                    // RFC 4987 §3.6: answer statelessly; the handshake is
                    // rebuilt when the ACK brings the cookie back.
                    self.stats.backlog_full += 1;
                    self.stats.syn_cookies_sent += 1;
                    l.cookie_slot = Some((now.as_micros() / 64_000_000) as u32);
                    let cookie = self.cookie(now, &tuple, seg.seq, seg.mss.unwrap_or(536));
                    // With timestamps the other options ride in our TSval's
                    // low bits (Linux's way): scaling, SACK and timestamps
                    // survive the cookie.
                    let tcp = &self.cfg.tcp;
                    let ts = seg.timestamp.filter(|_| tcp.timestamps).map(|(tsval, _)| {
                        let clock =
                            ((now.as_micros() / 1000) as u32).wrapping_add(self.ts_offset(&tuple));
                        let opts = CookieOptions::encode(&seg, tcp.sack);
                        let mut ours = (clock & !CookieOptions::MASK) | opts;
                        if Seq(ours).diff(Seq(clock)) > 0 {
                            // Never ahead of the clock later segments carry.
                            ours = ours.wrapping_sub(CookieOptions::MASK + 1);
                        }
                        (ours, tsval)
                    });
                    let syn_ack = Segment {
                        seq: cookie,
                        ack: Some(seg.seq + 1),
                        syn: true,
                        window: tcp.recv_buffer.min(u32::from(u16::MAX)) as u16,
                        mss: Some(tcp.mss),
                        window_scale: ts
                            .and(seg.window_scale)
                            .map(|_| window_shift_for(tcp.recv_buffer)),
                        sack_permitted: ts.is_some() && seg.sack_permitted && tcp.sack,
                        timestamp: ts,
                        ..Default::default()
                    };
                    self.pending_rst.push_back((tuple, syn_ack));
                    return;
                }
                if table_full {
                    self.stats.table_full += 1;
                    return;
                }
                l.pending += 1;
                let iss = self.isn(now, &tuple);
                let mut conn = Connection::accept(self.tcp.clone(), now, &seg, iss);
                conn.set_ts_offset(self.ts_offset(&tuple));
                self.insert(tuple, conn, Some(local));
                return;
            }
        }
        // An ACK to a listener may complete a cookie handshake.
        if let Some(ack) = seg.ack
            && !seg.syn
            && !seg.rst
            && self
                .listeners
                .get(&local)
                .and_then(|l| l.cookie_slot)
                .is_some_and(|s| {
                    let cur = self.cookie_slot(now);
                    s == cur || s.wrapping_add(1) == cur
                })
        {
            let irs = seg.seq + u32::MAX; // seq - 1
            match self.check_cookie(now, &tuple, irs, ack + u32::MAX) {
                Some(_) if self.refusing => {
                    self.stats.overload_refused += 1;
                    self.reset_for(tuple, &seg);
                    return;
                }
                Some(mss) if self.len() < self.cfg.max_connections => {
                    self.stats.syn_cookies_accepted += 1;
                    let opts =
                        seg.timestamp
                            .filter(|_| self.cfg.tcp.timestamps)
                            .map(|(tsval, tsecr)| {
                                CookieOptions::decode(tsecr & CookieOptions::MASK, tsval)
                            });
                    let handshake = CookieHandshake {
                        irs,
                        iss: ack + u32::MAX,
                        peer_mss: mss,
                        options: opts,
                        ts_offset: self.ts_offset(&tuple),
                    };
                    let conn = Connection::from_cookie(self.tcp.clone(), now, handshake, seg);
                    if let Some(l) = self.listeners.get_mut(&local) {
                        l.pending += 1;
                    }
                    self.insert(tuple, conn, Some(local));
                    return;
                }
                Some(_) => {
                    self.stats.table_full += 1;
                    return;
                }
                None => self.stats.syn_cookies_invalid += 1,
            }
        }
        self.stats.no_connection += 1;
        self.reset_for(tuple, &seg);
    }

    /// Our timestamp clock's offset towards a host: keyed by the address
    /// pair only, so it is unpredictable to others but the same for every
    /// connection between the two hosts (see `Connection::set_ts_offset`).
    fn ts_offset(&self, t: &FourTuple) -> u32 {
        let mut h = self.keyed(0x75);
        h.write_u32(u32::from(t.local.0));
        h.write_u32(u32::from(t.remote.0));
        h.finish() as u32
    }

    /// Cookie layout (our ISN): 5 bits of a 64 s time slot, 3 bits of MSS
    /// index, 24 bits of a keyed hash of the 4-tuple, the slot and the
    /// client's ISN.
    fn cookie(&self, now: Instant, t: &FourTuple, client_isn: Seq, mss: u16) -> Seq {
        let slot = self.cookie_slot(now);
        let idx = COOKIE_MSS.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32;
        let h = self.cookie_hash(t, slot, client_isn, idx) & 0x00ff_ffff;
        Seq(((slot & 31) << 27) | (idx << 24) | h)
    }

    /// The MSS a cookie carried, if it is ours, for this tuple, and at most one
    /// slot (64-128 s) old.
    fn check_cookie(
        &self,
        now: Instant,
        t: &FourTuple,
        client_isn: Seq,
        cookie: Seq,
    ) -> Option<u16> {
        let c = cookie.0;
        let now_slot = self.cookie_slot(now);
        let slot = [now_slot, now_slot.wrapping_sub(1)]
            .into_iter()
            .find(|s| s & 31 == c >> 27)?;
        let idx = (c >> 24) & 7;
        if self.cookie_hash(t, slot, client_isn, idx) & 0x00ff_ffff != c & 0x00ff_ffff {
            return None;
        }
        Some(COOKIE_MSS[idx as usize])
    }

    fn cookie_slot(&self, now: Instant) -> u32 {
        (now.as_micros() / 64_000_000) as u32
    }

    /// Covers the MSS index too, so it cannot be altered.
    fn cookie_hash(&self, t: &FourTuple, slot: u32, client_isn: Seq, mss_idx: u32) -> u32 {
        let mut h = self.keyed(0xc0);
        std::hash::Hash::hash(t, &mut h);
        h.write_u32(slot);
        h.write_u32(client_isn.0);
        h.write_u32(mss_idx);
        h.finish() as u32
    }

    /// RFC 9293 §3.10.7.1: a segment for no connection gets a RST (never in
    /// answer to a RST).
    fn reset_for(&mut self, tuple: FourTuple, seg: &Segment) {
        if seg.rst {
            return;
        }
        let rst = match seg.ack {
            Some(ack) => Segment {
                seq: ack,
                rst: true,
                ..Default::default()
            },
            None => Segment {
                seq: Seq(0),
                ack: Some(seg.seq + seg.seq_len()),
                rst: true,
                ..Default::default()
            },
        };
        self.stats.resets_sent += 1;
        self.pending_rst.push_back((tuple, rst));
    }

    // === segments out, timers, events ===

    /// The next segment to send and its 4-tuple. Only connections with
    /// something new (a segment in, a user call, a timer) are visited.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(FourTuple, Segment)> {
        if let Some(r) = self.pending_rst.pop_front() {
            self.stats.segments_out += 1;
            return Some(r);
        }
        if !self.over_budget.is_empty() {
            self.wake_over_budget();
        }
        while let Some(&index) = self.dirty.front() {
            let Some(Some(e)) = self.slots.get_mut(index as usize) else {
                self.dirty.pop_front();
                continue;
            };
            if let Some(seg) = e.conn.poll_transmit(now) {
                self.stats.segments_out += 1;
                return Some((e.tuple, seg));
            }
            self.dirty.pop_front();
            e.dirty = false;
            self.settle(index);
        }
        None
    }

    /// After a connection has had its say: events, timer registration, and
    /// removal once closed.
    fn settle(&mut self, index: u32) {
        let generation = self.generations[index as usize];
        let Some(Some(e)) = self.slots.get_mut(index as usize) else {
            return;
        };
        let id = ConnId { index, generation };
        let c = &e.conn;
        if !e.was_established && c.is_established() {
            e.was_established = true;
            match e.listener {
                Some(l) => {
                    if let Some(lst) = self.listeners.get_mut(&l) {
                        lst.ready.push_back(id);
                    }
                    self.stats.accepted += 1;
                    self.events.push_back(Event::Incoming { listener: l });
                }
                None => {
                    self.stats.connected += 1;
                    self.events.push_back(Event::Connected(id));
                }
            }
        }
        if c.recv_ready() > 0 && !e.readable_sent && e.listener.is_none() {
            e.readable_sent = true;
            self.events.push_back(Event::Readable(id));
        }
        if c.peer_closed() && !e.peer_closed_sent && e.listener.is_none() {
            e.peer_closed_sent = true;
            self.events.push_back(Event::PeerClosed(id));
        }
        if e.want_writable && c.send_capacity() > 0 && c.state() != State::Closed {
            if (self.stats.buffered as usize) < self.cfg.max_buffered {
                e.want_writable = false;
                self.events.push_back(Event::Writable(id));
            } else if !e.awaits_budget {
                e.awaits_budget = true;
                self.over_budget.push((index, generation));
            }
        }
        if c.state() == State::Closed {
            // Closed normally with received bytes its user has not read yet
            // (both FINs are done, the peer was told they arrived): the
            // tuple is free at once, the connection stays until they are
            // read.
            if e.listener.is_none()
                && c.recv_ready() > 0
                && c.close_reason() == Some(CloseReason::Normal)
            {
                let tuple = e.tuple;
                if self.by_tuple.get(&tuple) == Some(&index) {
                    self.by_tuple.remove(&tuple);
                }
                return;
            }
            let reason = c.close_reason().unwrap_or(CloseReason::Aborted);
            let cs = *c.stats();
            self.stats.retransmits += cs.retransmits;
            self.stats.fast_retransmits += cs.fast_retransmits;
            self.stats.rto_expirations += cs.rto_expirations;
            self.stats.zero_window_probes += cs.zero_window_probes;
            self.stats.challenge_acks += cs.challenge_acks;
            self.stats.out_of_window += cs.out_of_window;
            self.stats.paws_rejected += cs.paws_rejected;
            self.stats.syn_retried_after_rst += cs.syn_retried_after_rst;
            self.stats.buffered -= e.buffered as u64;
            let tuple = e.tuple;
            let listener = e.listener;
            // Still tied to its listener: never handed to the application.
            let unaccepted = listener.is_some();
            self.slots[index as usize] = None;
            self.generations[index as usize] = self.generations[index as usize].wrapping_add(1);
            self.free.push(index);
            if self.by_tuple.get(&tuple) == Some(&index) {
                self.by_tuple.remove(&tuple);
            }
            if let Some(l) = listener.and_then(|l| self.listeners.get_mut(&l)) {
                // Never accepted: it leaves the backlog.
                l.pending -= 1;
                l.ready.retain(|x| *x != id);
            }
            if unaccepted {
                self.stats.unaccepted_closed += 1;
            } else {
                self.stats.closed += 1;
                self.events.push_back(Event::Closed(id, reason));
            }
            return;
        }
        if let Some(t) = c.poll_timeout()
            && e.timer.is_none_or(|r| t < r)
        {
            e.timer = Some(t);
            self.wheel.insert(t, (index, generation, t.as_micros()));
        }
    }

    /// Run due timers. Cheap when nothing is due; call every tick or at
    /// [`Engine::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due_scratch);
        self.wheel.expire(now, |x| due.push(x));
        for &(index, generation, at) in &due {
            if self.generations[index as usize] != generation {
                continue; // the slot was reused
            }
            let Some(Some(e)) = self.slots.get_mut(index as usize) else {
                continue;
            };
            if e.timer.map(Instant::as_micros) != Some(at) {
                continue;
            }
            e.timer = None;
            if e.conn.poll_timeout().is_some_and(|t| t <= now) {
                e.conn.handle_timeout(now);
            }
            // Re-registers the real (maybe later) deadline when settled.
            self.mark(index);
        }
        due.clear();
        self.due_scratch = due;
    }

    /// The earliest timer, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }
}
