//! One TCP connection's state machine (RFC 9293), sans-IO.
//!
//! [`Connection`] takes segments and `now`, and yields segments and a
//! wake-up time. This file holds its state, its public API and the arrival
//! of a segment (RFC 9293 §3.10.7: acceptability, PAWS per RFC 7323 §5.3,
//! RST and SYN with RFC 5961 challenge ACKs, the ACK, data, FIN). The
//! mechanisms live beside it, split the way quinn-proto splits a connection:
//! - `config`: [`TcpConfig`] and its defaults;
//! - `send`: the send queue and segmentation;
//! - `recv`: the receive queue, reassembly and the advertised window;
//! - `recovery`: the SACK scoreboard (RFC 2018), fast retransmit and
//!   recovery (RFC 5681 §3.2, RFC 6582, RFC 6675), Limited Transmit (RFC
//!   3042);
//! - `congestion`: NewReno (RFC 5681) and CUBIC (RFC 9438);
//! - `rtt`: RTT estimation and the RTO (RFC 6298), the timestamp clock (RFC
//!   7323);
//! - `timers`: retransmission, persist, delayed ACK, keepalive, TIME_WAIT,
//!   user and idle timeouts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::seq::Seq;
use crate::Instant;

mod config;
mod congestion;
mod recovery;
mod recv;
mod rtt;
mod send;
mod timers;

pub use config::{Congestion, Keepalive, TcpConfig};
use congestion::{Cubic, MAX_CWND};
use recv::RecvQueue;
use send::SendQueue;

/// RFC 9293 §3.3.2 states (LISTEN lives in the engine, not here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
    Closed,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both FINs exchanged and acknowledged.
    Normal,
    /// The peer reset it.
    Reset,
    /// The peer refused our SYN.
    Refused,
    /// Too many retransmission timeouts.
    TimedOut,
    /// We aborted it.
    Aborted,
}

/// A TCP segment as the state machine sees it (addresses and ports are the
/// engine's business).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segment {
    pub seq: Seq,
    pub ack: Option<Seq>,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    /// Window field as on the wire (not scaled).
    pub window: u16,
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    /// SACK-permitted option (RFC 2018 §2), in SYNs.
    pub sack_permitted: bool,
    /// Timestamps option (RFC 7323 §3): (TSval, TSecr).
    pub timestamp: Option<(u32, u32)>,
    /// SACK blocks `[left, right)` (RFC 2018 §3), most recent first.
    pub sack: [Option<(Seq, Seq)>; 3],
    pub payload: Bytes,
}

impl Segment {
    /// Sequence space the segment occupies.
    pub fn seq_len(&self) -> u32 {
        self.payload.len() as u32 + u32::from(self.syn) + u32::from(self.fin)
    }
}

/// Counters of one connection, to show which mechanism did the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    pub segments_sent: u64,
    pub segments_received: u64,
    /// Retransmitted segments of any kind.
    pub retransmits: u64,
    pub fast_retransmits: u64,
    /// Holes retransmitted because SACK showed data above them arrived.
    pub sack_retransmits: u64,
    pub rto_expirations: u64,
    pub dup_acks_received: u64,
    pub challenge_acks: u64,
    pub zero_window_probes: u64,
    /// ACKs held back by delayed ACK that then went out on their timer.
    pub delayed_acks: u64,
    pub keepalives_sent: u64,
    /// Segments dropped by PAWS: an older timestamp than already seen.
    pub paws_rejected: u64,
    /// RTT samples taken from echoed timestamps (when no segment was timed).
    pub rtt_samples_ts: u64,
    /// Segments outside the receive window (answered with an ACK).
    pub out_of_window: u64,
    pub out_of_order: u64,
    /// SYNs sent again at once behind a RST, after an ACK that did not
    /// acknowledge our SYN (an old incarnation of the 4-tuple at the peer).
    pub syn_retried_after_rst: u64,
}

const MAX_WINDOW_SHIFT: u8 = 14; // RFC 7323 §2.3

// === the connection ===

/// One TCP connection. See the module docs for what it does and does not do.
#[derive(Debug)]
pub struct Connection {
    /// Shared by every connection of an engine (one copy per core, not per
    /// connection: idle connections are mostly this struct).
    cfg: Arc<TcpConfig>,
    state: State,
    close_reason: Option<CloseReason>,

    // Send sequence space (RFC 9293 §3.3.1).
    iss: Seq,
    snd_una: Seq,
    snd_nxt: Seq,
    /// Highest sequence number sent (snd_nxt goes back on a timeout).
    snd_max: Seq,
    snd_wnd: u32,
    snd_wl1: Seq,
    snd_wl2: Seq,
    snd_shift: u8,
    /// Both SYNs carry the window scale option (RFC 7323 §2.2).
    scaling: bool,
    /// Both SYNs carry SACK-permitted (RFC 2018 §2).
    sack_ok: bool,
    /// SACKed ranges above snd_una, sorted and merged.
    scoreboard: Vec<(Seq, Seq)>,
    /// In SACK recovery: next sequence number to consider for a hole
    /// retransmission, and how many the ACK clock has allowed.
    rexmit_next: Seq,
    hole_tokens: u32,
    peer_mss: u32,
    sendq: SendQueue,
    /// Our SYN has been acknowledged. (Not `snd_una == iss`: that recurs
    /// every 4 GiB.)
    syn_acked: bool,
    /// Largest window the peer has offered, for the RFC 5961 §5.2 ACK check.
    max_snd_wnd: u32,
    /// Unanswered zero-window probes in a row.
    probes_unanswered: u32,
    /// Zero-window probes sent in this persist episode: each waits twice
    /// as long as the one before (answered or not, as in Linux and BSD).
    persist_backoff: u32,
    /// A probe's byte (at `snd_una`) is out, beyond the peer's shut window.
    probe_out: bool,
    /// After an RTO, fast recovery may not start until this is acknowledged
    /// (RFC 6582 §3.2 step 1).
    rto_recover: Option<Seq>,
    fin_queued: bool,
    /// Sequence number of our FIN once sent.
    snd_fin: Option<Seq>,

    // Receive sequence space.
    irs: Seq,
    rcv_nxt: Seq,
    /// Right edge we advertised: never moved left (RFC 9293 §3.8.6.2.2).
    rcv_adv: Seq,
    rcv_shift: u8,
    recvq: RecvQueue,
    /// Stream offset of the peer's FIN, once seen.
    peer_fin: Option<u64>,
    fin_received: bool,

    // What to send next.
    ack_pending: bool,
    /// Duplicate ACKs owed: one per out-of-order segment (RFC 5681 §4.2),
    /// even when several arrive between two polls.
    dup_acks_owed: u32,
    retransmit_now: bool,
    probe_now: bool,
    rst_to_send: Option<Segment>,

    // Congestion control (Reno with NewReno recovery).
    cwnd: u32,
    ssthresh: u32,
    dup_acks: u32,
    /// Segments RFC 3042 lets past cwnd (0-2).
    limited_transmit: u32,
    recover: Option<Seq>,
    cubic: Cubic,

    // RTT and timers.
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    rtt_probe: Option<(Seq, Instant)>,
    timeouts_in_a_row: u32,
    rto_at: Option<Instant>,
    persist_at: Option<Instant>,
    time_wait_at: Option<Instant>,
    /// Delayed ACK: in-order segments not yet acknowledged, and the timer.
    unacked_segments: u32,
    delack_at: Option<Instant>,
    /// Last segment received or data sent (idle timeout, keepalive).
    last_activity: Instant,
    keepalives_unanswered: u32,
    keepalive_now: bool,
    /// SynSent: our SYN was already sent again at once after an
    /// unacceptable ACK (see `handle_syn_sent`).
    syn_retried: bool,
    /// Last forward progress while data is outstanding (user timeout).
    progress_at: Option<Instant>,

    // Timestamps (RFC 7323).
    ts_ok: bool,
    /// The peer's latest TSval worth echoing (TS.Recent).
    ts_recent: u32,
    /// Our clock's offset for this connection (no cross-connection leak).
    ts_offset: u32,
    /// The time of the last `poll_transmit`, stamped on what it returns.
    ts_now: u32,
    /// rcv_nxt as our last ACK carried it (Last.ACK.sent).
    last_ack_sent: Seq,

    stats: ConnStats,
}

/// What a SYN cookie carries beyond the MSS when the peer's SYN had
/// timestamps: its other options, encoded in the low bits of our SYN-ACK's
/// TSval and read back from the ACK's TSecr (as Linux does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieOptions {
    /// The peer's window scale, if it offered one.
    pub window_scale: Option<u8>,
    pub sack: bool,
    /// The peer's TSval on the ACK that completed the handshake.
    pub ts_recent: u32,
}

impl CookieOptions {
    /// Bits of the TSval that carry the options.
    pub const MASK: u32 = 0x3f;

    /// The options of a SYN, as TSval bits: the window scale (0-14, 15 for
    /// none) and SACK.
    pub fn encode(syn: &Segment, sack: bool) -> u32 {
        let ws = syn.window_scale.map_or(15, |s| s.min(MAX_WINDOW_SHIFT));
        u32::from(ws) | (u32::from(sack && syn.sack_permitted) << 4)
    }

    /// Read back from the ACK's TSecr.
    pub fn decode(bits: u32, ts_recent: u32) -> CookieOptions {
        let ws = (bits & 15) as u8;
        CookieOptions {
            window_scale: (ws <= MAX_WINDOW_SHIFT).then_some(ws),
            sack: bits & 16 != 0,
            ts_recent,
        }
    }
}

/// What the engine read back from a valid SYN cookie, to rebuild the
/// connection with [`Connection::from_cookie`].
#[derive(Debug, Clone, Copy)]
pub struct CookieHandshake {
    /// The peer's ISN and ours (the cookie).
    pub irs: Seq,
    pub iss: Seq,
    pub peer_mss: u16,
    /// With timestamps: the other options (see [`CookieOptions`]).
    pub options: Option<CookieOptions>,
    /// The timestamp clock's offset the SYN-ACK was stamped with.
    pub ts_offset: u32,
}

/// The window scale we offer for a receive buffer (RFC 7323 §2.3): the
/// smallest that lets the whole buffer be advertised.
pub fn window_shift_for(recv_buffer: u32) -> u8 {
    let mut shift = 0;
    while shift < MAX_WINDOW_SHIFT && (recv_buffer >> shift) > u32::from(u16::MAX) {
        shift += 1;
    }
    shift
}

/// Options both ends agreed on in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub mss: u32,
    pub sack: bool,
    pub timestamps: bool,
    /// (the peer's, ours), when scaling is on.
    pub window_scale: Option<(u8, u8)>,
}

impl Connection {
    fn new(cfg: Arc<TcpConfig>, iss: Seq, state: State) -> Connection {
        let rcv_shift = window_shift_for(cfg.recv_buffer);
        let rto = cfg.initial_rto;
        let mss = u32::from(cfg.mss);
        Connection {
            state,
            close_reason: None,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            snd_wl1: Seq(0),
            snd_wl2: Seq(0),
            snd_shift: 0,
            scaling: false,
            sack_ok: false,
            scoreboard: Vec::new(),
            rexmit_next: iss,
            hole_tokens: 0,
            peer_mss: 536, // RFC 9293 §3.7.1 default until told
            sendq: SendQueue::default(),
            syn_acked: false,
            max_snd_wnd: 0,
            probes_unanswered: 0,
            persist_backoff: 0,
            probe_out: false,
            rto_recover: None,
            fin_queued: false,
            snd_fin: None,
            irs: Seq(0),
            rcv_nxt: Seq(0),
            rcv_adv: Seq(0),
            rcv_shift,
            recvq: RecvQueue::default(),
            peer_fin: None,
            fin_received: false,
            ack_pending: false,
            dup_acks_owed: 0,
            retransmit_now: false,
            probe_now: false,
            rst_to_send: None,
            cwnd: 10 * mss, // RFC 6928 initial window
            ssthresh: u32::MAX,
            dup_acks: 0,
            limited_transmit: 0,
            recover: None,
            cubic: Cubic::default(),
            srtt: None,
            rttvar: Duration::ZERO,
            rto,
            rtt_probe: None,
            timeouts_in_a_row: 0,
            rto_at: None,
            persist_at: None,
            time_wait_at: None,
            unacked_segments: 0,
            delack_at: None,
            last_activity: Instant::ZERO,
            keepalives_unanswered: 0,
            keepalive_now: false,
            syn_retried: false,
            progress_at: None,
            ts_ok: false,
            ts_recent: 0,
            // Derived from the keyed ISN: unpredictable, fixed per connection.
            ts_offset: iss.0.rotate_left(13) ^ 0x5bd1_e995,
            ts_now: 0,
            last_ack_sent: Seq(0),
            stats: ConnStats::default(),
            cfg,
        }
    }

    /// Set the offset added to our timestamp clock (before anything is
    /// sent). By default it derives from the ISN, so it is fixed per
    /// connection; the engine sets one per address pair instead, as Linux
    /// does, so that our timestamps only grow between connections to the
    /// same host and a peer's TIME_WAIT takes our new SYN (RFC 6191).
    pub fn set_ts_offset(&mut self, offset: u32) {
        self.ts_offset = offset;
    }

    /// Active open: the first `poll_transmit` yields our SYN.
    pub fn connect(cfg: impl Into<Arc<TcpConfig>>, iss: Seq) -> Connection {
        Connection::new(cfg.into(), iss, State::SynSent)
    }

    /// Passive open from a received SYN (the listener checked it carries SYN
    /// and no ACK/RST). The first `poll_transmit` yields our SYN-ACK.
    pub fn accept(
        cfg: impl Into<Arc<TcpConfig>>,
        now: Instant,
        syn: &Segment,
        iss: Seq,
    ) -> Connection {
        let mut c = Connection::new(cfg.into(), iss, State::SynReceived);
        c.irs = syn.seq;
        c.rcv_nxt = syn.seq + 1;
        c.take_syn_options(syn);
        c.snd_wnd = u32::from(syn.window); // SYN windows are never scaled
        c.snd_wl1 = syn.seq;
        c.rcv_adv = c.rcv_nxt + c.free_window();
        c.stats.segments_received += 1;
        let _ = now;
        c
    }

    /// A connection rebuilt from a valid SYN cookie (RFC 4987 §3.6): the
    /// handshake finished with `ack`, which is processed at once. With
    /// options (the SYN had timestamps) window scaling, SACK and timestamps
    /// are as the SYN asked; without, all three are off, since the cookie
    /// had nowhere to keep them.
    pub fn from_cookie(
        cfg: impl Into<Arc<TcpConfig>>,
        now: Instant,
        h: CookieHandshake,
        mut ack: Segment,
    ) -> Connection {
        let (irs, iss) = (h.irs, h.iss);
        let mut c = Connection::new(cfg.into(), iss, State::SynReceived);
        c.irs = irs;
        c.rcv_nxt = irs + 1;
        c.ts_offset = h.ts_offset;
        match h.options {
            Some(o) => {
                c.ts_ok = c.cfg.timestamps;
                c.ts_recent = o.ts_recent;
                c.sack_ok = o.sack && c.cfg.sack;
                match o.window_scale {
                    Some(s) => {
                        c.snd_shift = s;
                        c.scaling = true;
                    }
                    None => {
                        c.rcv_shift = 0;
                        c.snd_shift = 0;
                        c.scaling = false;
                    }
                }
                // The cookie's TSval was rounded down to carry the options:
                // no RTT sample from its echo.
                ack.timestamp = None;
            }
            None => {
                c.rcv_shift = 0;
                c.snd_shift = 0;
                c.scaling = false;
            }
        }
        c.peer_mss = u32::from(h.peer_mss);
        c.cwnd = 10 * c.eff_mss();
        c.snd_nxt = iss + 1;
        c.snd_max = iss + 1;
        c.snd_wl1 = irs;
        c.rcv_adv = c.rcv_nxt + c.free_window();
        c.handle_segment(now, ack);
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The options in force since the handshake.
    pub fn negotiated(&self) -> Negotiated {
        Negotiated {
            mss: self.eff_mss(),
            sack: self.sack_ok,
            timestamps: self.ts_ok,
            window_scale: self.scaling.then_some((self.snd_shift, self.rcv_shift)),
        }
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }

    pub fn stats(&self) -> &ConnStats {
        &self.stats
    }

    pub fn is_established(&self) -> bool {
        !matches!(
            self.state,
            State::SynSent | State::SynReceived | State::Closed
        )
    }

    // === user side ===

    /// Queue `data` for sending, as much as the send buffer takes (a slice of
    /// `data`, no copy). Returns how many bytes were taken.
    pub fn send(&mut self, mut data: Bytes) -> usize {
        if self.fin_queued || matches!(self.state, State::Closed | State::TimeWait) {
            return 0;
        }
        let room = self.send_capacity();
        if data.len() > room {
            data.truncate(room);
        }
        let n = data.len();
        if n > 0 {
            self.sendq.push(data);
        }
        n
    }

    /// Bytes `send` would take now.
    pub fn send_capacity(&self) -> usize {
        self.cfg.send_buffer.saturating_sub(self.sendq.len) as usize
    }

    /// Bytes queued and not yet acknowledged by the peer.
    pub fn send_queued(&self) -> usize {
        self.sendq.len as usize
    }

    /// The next chunk of in-order received data, as it arrived.
    pub fn recv(&mut self) -> Option<Bytes> {
        let b = self.recvq.ready.pop_front()?;
        self.recvq.ready_len -= b.len() as u32;
        // A window update when reading opens the window by a useful amount
        // (receiver-side silly window avoidance, RFC 9293 §3.8.6.2.2).
        let gain = self.free_window().saturating_sub(self.advertised_window());
        if gain >= (2 * self.eff_mss()).max(self.cfg.recv_buffer / 4) {
            self.ack_pending = true;
        }
        Some(b)
    }

    /// Payload this connection holds: queued to send (until acknowledged),
    /// ready to read, and received out of order.
    pub fn buffered(&self) -> usize {
        (self.sendq.len + self.recvq.ready_len + self.recvq.ooo_len) as usize
    }

    /// Bytes ready to `recv`.
    pub fn recv_ready(&self) -> usize {
        self.recvq.ready_len as usize
    }

    /// The peer has sent FIN and every byte before it has been read.
    pub fn peer_closed(&self) -> bool {
        self.fin_received && self.recvq.ready_len == 0
    }

    /// Half-close: send FIN after the queued data.
    pub fn close(&mut self) {
        match self.state {
            State::SynSent => self.finish(CloseReason::Aborted),
            // RFC 9293 §3.10.4: the FIN waits until the handshake completes.
            State::SynReceived => self.fin_queued = true,
            State::Established => {
                self.fin_queued = true;
                self.state = State::FinWait1;
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// Reset the connection now.
    pub fn abort(&mut self) {
        if matches!(self.state, State::Closed | State::SynSent | State::TimeWait) {
            self.finish(CloseReason::Aborted);
        } else {
            self.reset_and_finish(CloseReason::Aborted);
        }
    }

    // === segments in ===

    /// Process one segment that the engine demultiplexed to this connection.
    pub fn handle_segment(&mut self, now: Instant, seg: Segment) {
        self.stats.segments_received += 1;
        self.last_activity = now;
        self.keepalives_unanswered = 0;
        match self.state {
            State::Closed => {}
            State::SynSent => self.handle_syn_sent(now, seg),
            _ => self.handle_synchronized(now, seg),
        }
    }

    fn handle_syn_sent(&mut self, now: Instant, seg: Segment) {
        // RFC 9293 §3.10.7.3
        let ack_ok = seg
            .ack
            .map(|a| a.diff(self.iss) > 0 && self.snd_max.diff(a) >= 0);
        if ack_ok == Some(false) {
            if !seg.rst {
                self.rst_to_send = Some(Segment {
                    seq: seg.ack.unwrap_or_default(),
                    rst: true,
                    ..Default::default()
                });
                // Typically the peer still holds an old incarnation of this
                // 4-tuple (a TIME_WAIT that refused our SYN on PAWS or
                // sequence grounds) and answered with its ACK. The RST
                // clears it, so send the SYN again right behind it instead
                // of after the SYN's one-second RTO; once per connection.
                if !self.syn_retried {
                    self.syn_retried = true;
                    self.snd_nxt = self.iss;
                    self.rtt_probe = None; // Karn: a resent SYN is not timed
                    self.stats.syn_retried_after_rst += 1;
                }
            }
            return;
        }
        if seg.rst {
            if ack_ok == Some(true) {
                self.finish(CloseReason::Refused);
            }
            return;
        }
        if !seg.syn {
            return;
        }
        self.irs = seg.seq;
        self.rcv_nxt = seg.seq + 1;
        self.take_syn_options(&seg);
        self.rcv_adv = self.rcv_nxt + self.free_window();
        self.snd_wnd = u32::from(seg.window);
        self.snd_wl1 = seg.seq;
        self.ack_pending = true;
        if let Some(ack) = seg.ack {
            self.snd_wl2 = ack;
            self.ack_advance(now, ack, seg.timestamp);
            self.state = State::Established;
        } else {
            // Simultaneous open: answer with SYN-ACK.
            self.state = State::SynReceived;
            self.snd_nxt = self.iss;
        }
    }

    fn take_syn_options(&mut self, syn: &Segment) {
        self.sack_ok = syn.sack_permitted && self.cfg.sack;
        // Both must send it in the SYNs (RFC 7323 §3.2).
        if let (true, Some((tsval, _))) = (self.cfg.timestamps, syn.timestamp) {
            self.ts_ok = true;
            self.ts_recent = tsval;
        }
        if let Some(m) = syn.mss {
            self.peer_mss = u32::from(m.max(64));
        }
        match syn.window_scale {
            Some(s) => {
                self.snd_shift = s.min(MAX_WINDOW_SHIFT);
                self.scaling = true;
            }
            None => {
                // Both sides or neither (RFC 7323 §2.2).
                self.rcv_shift = 0;
                self.snd_shift = 0;
                self.scaling = false;
            }
        }
        self.cwnd = 10 * self.eff_mss();
    }

    fn handle_synchronized(&mut self, now: Instant, seg: Segment) {
        let mut new_ts_recent = None;
        // 0. PAWS (RFC 7323 §5.3): an older timestamp than one already seen
        //    is an old duplicate (a wrapped sequence number, or an earlier
        //    incarnation of this 4-tuple): acknowledge and drop.
        if self.ts_ok
            && !seg.rst
            && let Some((tsval, _)) = seg.timestamp
        {
            // TSvals wrap and compare like sequence numbers (§5.2).
            // Pure ACKs are exempt (as Linux exempts disordered ACKs): an old
            // one changes nothing a blind attacker could not try anyway
            // (RFC 5961 checks them), and dropping a reordered one could hide
            // the only ACK of a round.
            if seg.seq_len() > 0 && Seq(tsval).diff(Seq(self.ts_recent)) < 0 {
                self.stats.paws_rejected += 1;
                self.ack_pending = true;
                return;
            }
            // R3 of §5.3: remember it if this segment is the one expected
            // and not older, but only once the segment and its ACK are
            // found acceptable below: a blind attacker's segment must not
            // move TS.Recent, or every real segment after it would fail
            // PAWS and the connection die (as Linux, after the ACK check).
            if seg.seq.diff(self.last_ack_sent) <= 0 && Seq(tsval).diff(Seq(self.ts_recent)) >= 0 {
                new_ts_recent = Some(tsval);
            }
        }
        // 1. Acceptability (RFC 9293 §3.10.7.4).
        let wnd = self.rcv_adv - self.rcv_nxt;
        let len = seg.seq_len();
        let acceptable = match (len, wnd) {
            (0, 0) => seg.seq == self.rcv_nxt,
            (0, _) => seg.seq.in_range(self.rcv_nxt, self.rcv_nxt + wnd),
            (_, 0) => false,
            (_, _) => {
                seg.seq.in_range(self.rcv_nxt, self.rcv_nxt + wnd)
                    || (seg.seq + (len - 1)).in_range(self.rcv_nxt, self.rcv_nxt + wnd)
            }
        };
        if !acceptable {
            if !seg.rst {
                self.stats.out_of_window += 1;
                self.ack_pending = true;
                if self.state == State::TimeWait
                    && seg.fin
                    && seg.seq + seg.seq_len() == self.rcv_nxt
                {
                    // A retransmitted FIN: our ACK was lost; restart the wait
                    // (only for that, or junk could pin the tuple forever).
                    self.time_wait_at = Some(now + self.cfg.time_wait);
                }
                if self.state == State::SynReceived && seg.syn && seg.seq == self.irs {
                    // The peer did not get our SYN-ACK: send it again now.
                    self.snd_nxt = self.iss;
                }
            }
            return;
        }
        // 2. RST: exact match resets, anything else in window gets a challenge
        //    ACK (RFC 5961 §3.2), so a blind attacker must guess rcv_nxt.
        if seg.rst {
            if self.state == State::TimeWait {
                // RFC 1337 §4: a RST must not cut TIME-WAIT short (it would
                // let old duplicates into a new incarnation).
                return;
            }
            if seg.seq == self.rcv_nxt {
                self.finish(CloseReason::Reset);
            } else {
                self.challenge_ack();
            }
            return;
        }
        // 3. SYN on a synchronized connection: challenge ACK (RFC 5961 §4.2).
        if seg.syn {
            self.challenge_ack();
            return;
        }
        // 4. ACK.
        let Some(ack) = seg.ack else { return };
        if self.state == State::SynReceived {
            if ack.diff(self.snd_una) > 0 && self.snd_max.diff(ack) >= 0 {
                self.state = if self.fin_queued {
                    State::FinWait1
                } else {
                    State::Established
                };
                self.snd_wnd = u32::from(seg.window) << self.snd_shift;
                self.snd_wl1 = seg.seq;
                self.snd_wl2 = ack;
            } else {
                self.rst_to_send = Some(Segment {
                    seq: ack,
                    rst: true,
                    ..Default::default()
                });
                return;
            }
        }
        if ack.diff(self.snd_max) > 0 {
            // Acknowledges something we never sent.
            self.ack_pending = true;
            return;
        }
        if ack.diff(self.snd_una) < -(self.max_snd_wnd.max(1) as i32) {
            // RFC 5961 §5.2: an ACK from before anything still outstanding
            // could be a blind injection: answer, do not act.
            self.challenge_ack();
            return;
        }
        // An acceptable segment with an acceptable ACK: its timestamp may
        // become TS.Recent (RFC 7323 §5.3 R3, deferred from above).
        if let Some(ts) = new_ts_recent {
            self.ts_recent = ts;
        }
        // Any acceptable ACK shows the peer is alive (persist probes).
        self.probes_unanswered = 0;
        let window = u32::from(seg.window) << self.snd_shift;
        // RFC 6675 §2: with SACK, an ACK that brings SACK information counts
        // as a duplicate even if the window moved (a reading receiver moves it
        // all the time).
        let sacked_before = self.sacked_bytes();
        if self.sack_ok {
            self.take_sack(&seg);
        }
        let new_sack_info = self.sacked_bytes() > sacked_before;
        if ack.diff(self.snd_una) > 0 {
            self.ack_advance(now, ack, seg.timestamp);
        } else if ack == self.snd_una
            && seg.payload.is_empty()
            && !seg.fin
            && (window == self.snd_wnd || new_sack_info)
            && self.snd_max.diff(self.snd_una) > 0
            && window > 0
        {
            self.on_dup_ack();
        }
        // Window update (RFC 9293 §3.10.7.4, SND.WL1/WL2 rule).
        if self.snd_wl1.diff(seg.seq) < 0
            || (self.snd_wl1 == seg.seq && self.snd_wl2.diff(ack) <= 0)
        {
            self.snd_wnd = window;
            self.max_snd_wnd = self.max_snd_wnd.max(window);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = ack;
            if window > 0 {
                self.end_persist();
            }
        }
        self.after_ack(now);
        if self.state == State::Closed {
            return;
        }
        // 5. Data.
        let data_ok = matches!(
            self.state,
            State::Established | State::FinWait1 | State::FinWait2
        );
        if !seg.payload.is_empty() && data_ok {
            let off = self.stream_offset(seg.seq);
            if off > self.recvq.next {
                self.stats.out_of_order += 1;
                self.dup_acks_owed = (self.dup_acks_owed + 1).min(16);
            }
            // Trim what lies past the advertised right edge.
            let room = u64::from(self.rcv_adv - self.rcv_nxt) + self.recvq.next;
            let mut data = seg.payload.clone();
            // Nothing past the advertised edge, nor past a FIN already seen.
            let room = self.peer_fin.map_or(room, |f| room.min(f));
            if off + data.len() as u64 > room {
                data.truncate(room.saturating_sub(off) as usize);
            }
            let gap_before = !self.recvq.ooo.is_empty();
            let n = self.recvq.insert(off, data);
            self.rcv_nxt = self.rcv_nxt + n;
            self.unacked_segments += 1;
            if self.cfg.delayed_ack.is_zero() || self.unacked_segments >= 2 || gap_before {
                // Every second segment, and a filled gap, at once (RFC 5681 §4.2).
                self.ack_pending = true;
            } else if self.delack_at.is_none() {
                self.delack_at = Some(now + self.cfg.delayed_ack);
            }
        }
        // 6. FIN.
        if seg.fin && data_ok && self.peer_fin.is_none() {
            self.peer_fin = Some(self.stream_offset(seg.seq) + seg.payload.len() as u64);
        }
        if let Some(fin) = self.peer_fin
            && !self.fin_received
            && self.recvq.next == fin
        {
            self.fin_received = true;
            self.rcv_nxt = self.rcv_nxt + 1;
            self.ack_pending = true;
            match self.state {
                State::Established => self.state = State::CloseWait,
                State::FinWait1 => self.state = State::Closing,
                State::FinWait2 => self.enter_time_wait(now),
                _ => {}
            }
        }
        if self.rcv_adv.diff(self.rcv_nxt) < 0 {
            self.rcv_adv = self.rcv_nxt;
        }
    }

    fn challenge_ack(&mut self) {
        self.stats.challenge_acks += 1;
        self.ack_pending = true;
    }

    /// New data acknowledged up to `ack`, by a segment carrying `timestamp`.
    fn ack_advance(&mut self, now: Instant, ack: Seq, timestamp: Option<(u32, u32)>) {
        let mut acked = ack - self.snd_una;
        // SYN and FIN occupy sequence space but not the queue.
        if !self.syn_acked && acked > 0 {
            acked -= 1;
            self.syn_acked = true;
        }
        let data_acked = acked.min(self.sendq.len);
        self.sendq.consume(data_acked);
        self.snd_una = ack;
        if self.rto_recover.is_some_and(|r| ack.diff(r) > 0) {
            self.rto_recover = None;
        }
        self.scoreboard.retain_mut(|(l, r)| {
            if l.diff(ack) < 0 {
                *l = ack;
            }
            r.diff(ack) > 0
        });
        if self.snd_nxt.diff(ack) < 0 {
            self.snd_nxt = ack;
        }
        self.timeouts_in_a_row = 0;
        // RTT sample, Karn's rule: only from a segment never retransmitted,
        // timed to the microsecond ...
        if let Some((s, t)) = self.rtt_probe
            && ack.diff(s) > 0
        {
            self.rtt_sample(now.saturating_since(t));
            self.rtt_probe = None;
        } else if self.ts_ok
            && let Some((_, echo)) = timestamp
        {
            // ... else from the echoed timestamp (RFC 7323 §4.1), which names
            // the transmission it answers, so retransmitted data is timed
            // too (after an RTO Karn's rule has nothing to time). 1 ms ticks.
            let ticks = self.ts_at(now).wrapping_sub(echo);
            if ticks < 1 << 31 {
                self.stats.rtt_samples_ts += 1;
                self.rtt_sample(Duration::from_millis(u64::from(ticks)));
            }
        }
        let mss = self.eff_mss();
        match self.recover {
            Some(rec) if ack.diff(rec) < 0 => {
                // Partial ACK (RFC 6582 §3.2 step 3): retransmit the next hole,
                // deflate by what was acked, add back one MSS.
                if self.sack_ok && self.rexmit_next.diff(ack) > 0 {
                    // The hole walk is already past snd_una: let it go on.
                    self.hole_tokens += 1;
                } else {
                    self.retransmit_now = true;
                }
                self.cwnd = self.cwnd.saturating_sub(data_acked).saturating_add(mss);
            }
            Some(_) => {
                // Full ACK: leave recovery.
                self.recover = None;
                self.hole_tokens = 0;
                let flight = self.snd_max - self.snd_una;
                self.cwnd = self.ssthresh.min(flight.max(mss) + mss);
            }
            // slow start, then congestion avoidance; capped (no overflow)
            None if self.cwnd < self.ssthresh => {
                self.cwnd = (self.cwnd + data_acked.min(mss)).min(MAX_CWND)
            }
            None => self.congestion_avoidance(now, data_acked),
        }
        if self.recover.is_none() {
            self.dup_acks = 0;
            self.limited_transmit = 0;
        }
        let outstanding = self.snd_max.diff(self.snd_una) > 0;
        self.rto_at = outstanding.then(|| now + self.rto);
        self.progress_at = outstanding.then_some(now);
    }

    /// State changes that follow from what is now acknowledged.
    fn after_ack(&mut self, now: Instant) {
        let fin_acked = self.snd_fin.is_some_and(|f| self.snd_una.diff(f) > 0);
        match self.state {
            State::FinWait1 if fin_acked => self.state = State::FinWait2,
            State::Closing if fin_acked => self.enter_time_wait(now),
            State::LastAck if fin_acked => self.finish(CloseReason::Normal),
            _ => {}
        }
        if self.snd_wnd == 0
            && self.unsent() > 0
            && self.persist_at.is_none()
            && (self.snd_max == self.snd_una || self.probe_out)
        {
            self.persist_at = Some(now + self.persist_interval());
        }
    }

    /// How long until the next zero-window probe: the RTO, doubled for each
    /// probe of this episode, at most `max_rto`.
    pub(super) fn persist_interval(&self) -> Duration {
        self.rto
            .saturating_mul(1 << self.persist_backoff.min(16))
            .min(self.cfg.max_rto.max(self.rto))
    }

    /// The peer's window opened: probing stops, and a probe's byte it did
    /// not take is sent again in order, from `snd_una` (no hole).
    fn end_persist(&mut self) {
        self.persist_at = None;
        self.persist_backoff = 0;
        if std::mem::take(&mut self.probe_out) && self.snd_nxt.diff(self.snd_una) > 0 {
            self.snd_nxt = self.snd_una;
            self.snd_max = self.snd_una;
        }
    }

    /// Tell the peer with a RST, then close.
    fn reset_and_finish(&mut self, why: CloseReason) {
        self.rst_to_send = Some(Segment {
            seq: self.snd_nxt,
            rst: true,
            ..Default::default()
        });
        self.finish(why);
    }

    fn finish(&mut self, why: CloseReason) {
        self.state = State::Closed;
        self.close_reason.get_or_insert(why);
        self.rto_at = None;
        self.persist_at = None;
        self.time_wait_at = None;
        self.ack_pending = false;
        self.dup_acks_owed = 0;
        self.retransmit_now = false;
        self.delack_at = None;
        self.keepalive_now = false;
        self.progress_at = None;
    }

    // === timers ===

    /// When `handle_timeout` next has work, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.rto_at,
            self.persist_at,
            self.time_wait_at,
            self.delack_at,
            self.keepalive_at(),
            self.user_timeout_at(),
            self.idle_timeout_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Run the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.time_wait_at.is_some_and(|t| t <= now) {
            self.finish(CloseReason::Normal);
            return;
        }
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.user_timeout_at()) || due(self.idle_timeout_at()) {
            self.reset_and_finish(CloseReason::TimedOut);
            return;
        }
        if due(self.keepalive_at()) {
            let probes = self.cfg.keepalive.map_or(0, |k| k.probes);
            if self.keepalives_unanswered >= probes {
                self.reset_and_finish(CloseReason::TimedOut);
                return;
            }
            self.keepalives_unanswered += 1;
            self.keepalive_now = true;
        }
        if due(self.delack_at) {
            self.delack_at = None;
            if self.unacked_segments > 0 {
                self.ack_pending = true;
                self.stats.delayed_acks += 1;
            }
        }
        if self.persist_at.is_some_and(|t| t <= now) {
            self.probes_unanswered += 1;
            if self.probes_unanswered > self.cfg.max_retransmits {
                // The peer keeps its window shut and stopped answering.
                self.reset_and_finish(CloseReason::TimedOut);
                return;
            }
            // The probe byte goes again from snd_una (RFC 9293 §3.8.6.1):
            // never a second byte past the shut window.
            if self.probe_out {
                self.snd_nxt = self.snd_una;
            }
            self.persist_backoff = (self.persist_backoff + 1).min(16);
            self.persist_at = Some(now + self.persist_interval());
            self.probe_now = true;
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            self.on_rto(now);
        }
    }

    // === segments out ===

    /// The next segment to send, if any. Call until it returns `None`.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Segment> {
        self.ts_now = (now.as_micros() / 1000) as u32; // a 1 ms clock (ts_at)
        if let Some(rst) = self.rst_to_send.take() {
            return Some(self.count_out(rst));
        }
        match self.state {
            State::Closed => None,
            State::SynSent if self.snd_nxt == self.iss => {
                let syn = Segment {
                    seq: self.iss,
                    syn: true,
                    window: self.free_window().min(u32::from(u16::MAX)) as u16,
                    mss: Some(self.cfg.mss),
                    window_scale: Some(self.rcv_shift),
                    sack_permitted: self.cfg.sack,
                    timestamp: self.cfg.timestamps.then_some((self.tsval(), 0)),
                    ..Default::default()
                };
                Some(self.sent_syn(now, syn))
            }
            State::SynReceived if self.snd_nxt == self.iss => {
                let mut syn = self.ack_segment(self.iss);
                syn.syn = true;
                syn.mss = Some(self.cfg.mss);
                syn.window_scale = self.scaling.then_some(self.rcv_shift);
                syn.sack_permitted = self.sack_ok;
                syn.window = self.free_window().min(u32::from(u16::MAX)) as u16; // unscaled in SYNs
                Some(self.sent_syn(now, syn))
            }
            State::SynSent | State::SynReceived => None,
            _ => self.transmit_synchronized(now),
        }
    }

    /// Internal consistency, for the property tests and fuzz targets.
    pub(crate) fn check_invariants(&self) {
        assert!(
            self.snd_una.diff(self.snd_nxt) <= 0,
            "snd_una {:?} > snd_nxt {:?}",
            self.snd_una,
            self.snd_nxt
        );
        assert!(
            self.snd_nxt.diff(self.snd_max) <= 0,
            "snd_nxt {:?} > snd_max {:?}",
            self.snd_nxt,
            self.snd_max
        );
        assert!(
            self.sendq.len <= self.cfg.send_buffer,
            "send queue over its bound"
        );
        assert_eq!(
            self.sendq.len as usize,
            self.sendq.chunks.iter().map(Bytes::len).sum::<usize>()
        );
        assert_eq!(
            self.recvq.ready_len as usize,
            self.recvq.ready.iter().map(Bytes::len).sum::<usize>()
        );
        assert_eq!(
            self.recvq.ooo_len as usize,
            self.recvq.ooo.values().map(Bytes::len).sum::<usize>()
        );
        assert!(
            self.recvq.ready_len + self.recvq.ooo_len
                <= self.cfg.recv_buffer + u32::from(self.cfg.mss),
            "receive side holds more than its buffer: {} + {}",
            self.recvq.ready_len,
            self.recvq.ooo_len
        );
        assert!(
            self.recvq.ooo.keys().all(|&k| k > self.recvq.next),
            "out-of-order data below the in-order edge"
        );
        assert!(self.cwnd >= 1 && self.rto >= Duration::from_micros(1));
    }

    /// RFC 6191: may a new SYN reopen this 4-tuple while it is in
    /// TIME_WAIT? With timestamps, if its TSval is newer than any seen
    /// here; without, if its sequence number is past everything received.
    pub fn accepts_new_syn(&self, syn: &Segment) -> bool {
        if self.state != State::TimeWait {
            return false;
        }
        match (self.ts_ok, syn.timestamp) {
            (true, Some((tsval, _))) => Seq(tsval).diff(Seq(self.ts_recent)) > 0,
            (true, None) => false,
            (false, _) => syn.seq.diff(self.rcv_nxt) > 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn ts_recent_for_tests(&self) -> u32 {
        self.ts_recent
    }

    /// Leave TIME_WAIT now, for a new incarnation of the 4-tuple.
    pub fn end_time_wait(&mut self) {
        if self.state == State::TimeWait {
            self.finish(CloseReason::Normal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::recv::MAX_OOO_SEGMENTS;
    use super::*;

    #[test]
    fn an_old_incarnation_at_the_peer_is_reset_and_the_syn_sent_again_at_once() {
        let now = Instant::from_millis(1);
        let mut a = Connection::connect(TcpConfig::default(), Seq(1000));
        let syn = a.poll_transmit(now).unwrap();
        assert!(syn.syn);
        // A TIME_WAIT that refuses the SYN answers with its own ACK.
        let stale = Segment {
            seq: Seq(5000),
            ack: Some(Seq(77)),
            ..Default::default()
        };
        a.handle_segment(now, stale.clone());
        let rst = a.poll_transmit(now).unwrap();
        assert!(rst.rst && rst.seq == Seq(77), "{rst:?}");
        let again = a.poll_transmit(now).unwrap();
        assert!(again.syn && again.seq == Seq(1000), "{again:?}");
        assert_eq!(a.stats().syn_retried_after_rst, 1);
        // Once: a peer that keeps answering so gets only RSTs; the SYN
        // waits for its timer.
        a.handle_segment(now, stale);
        assert!(a.poll_transmit(now).unwrap().rst);
        assert!(a.poll_transmit(now).is_none());
        assert_eq!(a.stats().syn_retried_after_rst, 1);
        assert_eq!(a.state(), State::SynSent);
    }

    fn established() -> (Connection, Connection, Instant) {
        let now = Instant::from_millis(1);
        let cfg = TcpConfig {
            recv_buffer: 64 * 1024,
            ..TcpConfig::default()
        };
        let mut a = Connection::connect(cfg.clone(), Seq(u32::MAX - 10));
        let syn = a.poll_transmit(now).unwrap();
        let mut b = Connection::accept(cfg, now, &syn, Seq(7));
        for _ in 0..4 {
            while let Some(s) = b.poll_transmit(now) {
                a.handle_segment(now, s);
            }
            while let Some(s) = a.poll_transmit(now) {
                b.handle_segment(now, s);
            }
        }
        assert_eq!(
            (a.state(), b.state()),
            (State::Established, State::Established)
        );
        (a, b, now)
    }

    /// After 2^32 bytes the acknowledged sequence number equals the ISS again;
    /// the SYN must not be counted a second time.
    #[test]
    fn the_syn_is_counted_once_even_when_snd_una_comes_back_to_iss() {
        let (mut a, _, _) = established();
        assert!(a.syn_acked);
        // Pretend exactly 2^32 - 1 data bytes went by.
        a.snd_una = a.iss;
        a.snd_nxt = a.iss;
        a.snd_max = a.iss;
        assert_eq!(
            a.data_seq0(),
            a.iss,
            "data starts at snd_una, not one past it"
        );
    }

    #[test]
    fn overlapping_out_of_order_pieces_are_bounded() {
        let (_, mut b, now) = established();
        let base = b.rcv_nxt;
        // A peer sends 3 000 overlapping 1400-byte pieces one byte apart.
        for k in 1..3000u32 {
            let seg = Segment {
                seq: base + k,
                ack: Some(b.snd_nxt),
                window: 65535,
                payload: Bytes::from(vec![1; 1400]),
                ..Default::default()
            };
            b.handle_segment(now, seg);
            while b.poll_transmit(now).is_some() {}
        }
        assert!(b.recvq.ooo.len() <= MAX_OOO_SEGMENTS);
        assert!(
            b.recvq.ooo_len <= 64 * 1024,
            "held {} bytes",
            b.recvq.ooo_len
        );
        b.check_invariants();
    }

    #[test]
    fn a_shut_window_with_data_waiting_always_has_a_timer() {
        let (mut a, _, now) = established();
        // The peer acknowledges everything and shuts its window.
        let ack = Segment {
            seq: a.rcv_nxt,
            ack: Some(a.snd_max),
            window: 0,
            ..Default::default()
        };
        a.handle_segment(now, ack);
        assert_eq!(a.poll_timeout(), None);
        assert_eq!(a.send(Bytes::from_static(b"waiting")), 7);
        assert!(
            a.poll_transmit(now).is_none(),
            "nothing may go into a shut window"
        );
        assert!(a.poll_timeout().is_some(), "but a probe must be scheduled");
    }

    /// Issue 18, point 1: zero-window persistence as peers rely on it.
    #[test]
    fn a_persist_episode_backs_off_keeps_to_the_edge_and_resumes_at_once() {
        let (mut a, _, mut now) = established();
        let peer_seq = a.rcv_nxt;
        let ack = |ack: Seq, window: u16| Segment {
            seq: peer_seq,
            ack: Some(ack),
            window,
            ..Default::default()
        };
        assert_eq!(a.send(Bytes::from(vec![7u8; 60_000])), 60_000);
        while a.poll_transmit(now).is_some() {}
        // The peer takes what was sent and shuts its window.
        now = now + Duration::from_millis(10);
        a.handle_segment(now, ack(a.snd_max, 0));
        let edge = a.snd_una;
        let cwnd = a.cwnd;
        assert_eq!(a.rto_at, None, "no retransmission timer in persist");
        // Unanswered probes: one each time, never past edge + 1, at
        // intervals that double from the first one.
        let mut at = vec![now];
        for i in 0..6 {
            now = a.poll_timeout().expect("a probe is scheduled");
            a.handle_timeout(now);
            let sent: Vec<Segment> = std::iter::from_fn(|| a.poll_transmit(now)).collect();
            assert_eq!(sent.len(), 1, "probe {i}: {sent:?}");
            let p = &sent[0];
            assert_eq!(p.seq, edge, "probe {i} starts at the edge");
            assert!(p.seq_len() <= 1, "probe {i} carries at most one byte");
            assert_eq!(a.rto_at, None, "probe {i} arms no retransmission timer");
            at.push(now);
        }
        let gaps: Vec<u64> = at
            .windows(2)
            .map(|w| (w[1].as_micros() - w[0].as_micros()) / 1000)
            .collect();
        for w in gaps.windows(2) {
            assert!(
                w[1] >= 2 * w[0] - 2,
                "back-off doubles from the first probe: {gaps:?} ms"
            );
        }
        assert_eq!(a.stats().zero_window_probes, 6);
        // The peer answers a probe with its window still shut: the probes
        // go on backing off, and the connection lives.
        a.handle_segment(now, ack(edge, 0));
        assert!(std::iter::from_fn(|| a.poll_transmit(now)).all(|s| s.payload.is_empty()));
        let next = a.poll_timeout().expect("still probing");
        assert!(next.as_micros() - now.as_micros() >= 1000 * gaps[gaps.len() - 1]);
        // The window opens: data resumes from the first unacknowledged byte
        // at once, a window's worth, with no timeout and cwnd intact.
        now = now + Duration::from_millis(5);
        a.handle_segment(now, ack(edge, u16::MAX));
        let sent: Vec<Segment> = std::iter::from_fn(|| a.poll_transmit(now)).collect();
        assert_eq!(sent.first().map(|s| s.seq), Some(edge), "{sent:?}");
        assert!(sent.len() >= 2, "more than a probe's worth: {}", sent.len());
        for w in sent.windows(2) {
            assert_eq!(w[0].seq + w[0].seq_len(), w[1].seq, "no hole");
        }
        assert_eq!(a.stats().rto_expirations, 0);
        assert_eq!(a.cwnd, cwnd, "a persist episode is not congestion");
        // Fast retransmit still works: the first segment is lost, three
        // duplicate ACKs bring it back at once.
        let window = u16::MAX;
        for _ in 0..3 {
            a.handle_segment(now, ack(edge, window));
        }
        let again = a.poll_transmit(now).expect("a fast retransmission");
        assert_eq!(again.seq, edge);
        assert!(!again.payload.is_empty());
        assert_eq!(a.stats().rto_expirations, 0);
    }

    #[test]
    fn junk_in_time_wait_does_not_extend_it_but_a_retransmitted_fin_does() {
        let (mut a, mut b, now) = established();
        a.close();
        b.close();
        for _ in 0..4 {
            while let Some(s) = a.poll_transmit(now) {
                b.handle_segment(now, s);
            }
            while let Some(s) = b.poll_transmit(now) {
                a.handle_segment(now, s);
            }
        }
        assert_eq!(a.state(), State::TimeWait);
        let until = a.time_wait_at.unwrap();
        let later = now + Duration::from_millis(500);
        a.handle_segment(
            later,
            Segment {
                seq: a.rcv_nxt + 100_000,
                ack: Some(a.snd_max),
                ..Default::default()
            },
        );
        assert_eq!(a.time_wait_at, Some(until), "junk does not pin the tuple");
        let fin = Segment {
            seq: a.rcv_nxt + u32::MAX,
            ack: Some(a.snd_max),
            fin: true,
            ..Default::default()
        };
        a.handle_segment(later, fin);
        assert!(
            a.time_wait_at.unwrap() > until,
            "a retransmitted FIN restarts the wait"
        );
    }

    #[test]
    fn a_repeated_syn_in_syn_received_resends_the_syn_ack() {
        let now = Instant::from_millis(1);
        let mut a = Connection::connect(TcpConfig::default(), Seq(100));
        let syn = a.poll_transmit(now).unwrap();
        let mut b = Connection::accept(TcpConfig::default(), now, &syn, Seq(900));
        assert!(b.poll_transmit(now).unwrap().syn, "first SYN-ACK (lost)");
        assert!(b.poll_transmit(now).is_none());
        b.handle_segment(now, syn);
        let again = b.poll_transmit(now).expect("SYN-ACK again");
        assert!(again.syn && again.ack == Some(Seq(101)));
    }

    /// `established()` with `tweak` applied to both sides' config.
    fn established_with(tweak: impl Fn(&mut TcpConfig)) -> (Connection, Connection, Instant) {
        let (mut a, mut b, now) = established();
        tweak(Arc::make_mut(&mut a.cfg));
        tweak(Arc::make_mut(&mut b.cfg));
        (a, b, now)
    }

    fn drain(c: &mut Connection, now: Instant) -> Vec<Segment> {
        std::iter::from_fn(|| c.poll_transmit(now)).collect()
    }

    #[test]
    fn delayed_ack_waits_for_a_second_segment_or_its_timer() {
        let (mut a, mut b, mut now) = established();
        a.send(Bytes::from(vec![1; 100]));
        for s in drain(&mut a, now) {
            b.handle_segment(now, s);
        }
        assert!(drain(&mut b, now).is_empty(), "one segment: ACK held back");
        let due = b.poll_timeout().expect("delayed-ACK timer");
        assert_eq!(due, now + Duration::from_millis(10));
        now = due;
        b.handle_timeout(now);
        let acks = drain(&mut b, now);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].ack, Some(b.rcv_nxt));
        assert_eq!(b.stats().delayed_acks, 1);

        // Two segments: acknowledged at once, by one ACK.
        a.handle_segment(now, acks[0].clone());
        a.send(Bytes::from(vec![
            2;
            2 * (a.eff_mss() - a.ts_room()) as usize
        ]));
        let segs = drain(&mut a, now);
        assert_eq!(segs.len(), 2);
        for s in segs {
            b.handle_segment(now, s);
        }
        assert_eq!(drain(&mut b, now).len(), 1);
        assert_eq!(b.poll_timeout(), None, "no timer left behind");
    }

    #[test]
    fn out_of_order_data_is_acknowledged_at_once_despite_delayed_ack() {
        let (mut a, mut b, now) = established();
        a.send(Bytes::from(vec![1; 3 * 1460]));
        let segs = drain(&mut a, now);
        b.handle_segment(now, segs[1].clone());
        assert_eq!(drain(&mut b, now).len(), 1, "duplicate ACK at once");
        b.handle_segment(now, segs[0].clone());
        assert_eq!(drain(&mut b, now).len(), 1, "the filled gap at once");
    }

    #[test]
    fn keepalive_probes_an_idle_peer_and_resets_when_it_is_gone() {
        let ka = Keepalive {
            idle: Duration::from_secs(1),
            interval: Duration::from_millis(100),
            probes: 3,
        };
        let (mut a, mut b, _) = established_with(|c| c.keepalive = Some(ka));
        // An answering peer keeps the connection.
        let mut now = a.poll_timeout().unwrap();
        a.handle_timeout(now);
        let probe = drain(&mut a, now);
        assert_eq!(probe.len(), 1);
        assert_eq!(probe[0].seq, a.snd_una + u32::MAX, "one below snd_una");
        assert!(probe[0].payload.is_empty());
        b.handle_segment(now, probe[0].clone());
        for s in drain(&mut b, now) {
            a.handle_segment(now, s);
        }
        assert_eq!(
            a.poll_timeout(),
            Some(now + ka.idle),
            "quiet again: back to idle"
        );
        // A silent peer: three probes, then a reset.
        let mut probes = 0;
        while a.state() != State::Closed {
            now = a.poll_timeout().unwrap();
            a.handle_timeout(now);
            for s in drain(&mut a, now) {
                if s.rst {
                    continue;
                }
                probes += 1;
            }
        }
        assert_eq!(probes, 3);
        assert_eq!(a.close_reason(), Some(CloseReason::TimedOut));
        assert_eq!(a.stats().keepalives_sent, 4);
    }

    #[test]
    fn user_timeout_gives_up_on_unacknowledged_data_before_the_retry_limit() {
        let (mut a, _b, start) =
            established_with(|c| c.user_timeout = Some(Duration::from_millis(300)));
        a.send(Bytes::from(vec![1; 1000]));
        let mut now = start;
        drain(&mut a, now); // lost
        while a.state() != State::Closed {
            now = a.poll_timeout().unwrap();
            a.handle_timeout(now);
            drain(&mut a, now);
        }
        assert_eq!(a.close_reason(), Some(CloseReason::TimedOut));
        assert_eq!(now, start + Duration::from_millis(300));
    }

    #[test]
    fn idle_timeout_resets_a_quiet_connection() {
        let (mut a, _b, start) =
            established_with(|c| c.idle_timeout = Some(Duration::from_secs(5)));
        let now = a.poll_timeout().unwrap();
        assert_eq!(now, start + Duration::from_secs(5));
        a.handle_timeout(now);
        assert_eq!(a.close_reason(), Some(CloseReason::TimedOut));
        assert!(drain(&mut a, now).iter().any(|s| s.rst), "the peer is told");
    }

    /// Drive congestion avoidance for `secs` of virtual time on a path of
    /// `rtt`, a window's worth acknowledged per RTT (in 10 steps).
    fn grow(c: &mut Connection, now: &mut Instant, rtt: Duration, secs: f64) {
        c.srtt = Some(rtt);
        let step = rtt / 10;
        let steps = (secs / step.as_secs_f64()).round() as u32;
        for _ in 0..steps {
            *now = *now + step;
            let acked = c.cwnd / 10;
            c.congestion_avoidance(*now, acked);
        }
    }

    #[test]
    fn cubic_backs_off_by_seven_tenths_and_plateaus_at_the_last_maximum() {
        let (mut a, _, mut now) = established();
        assert_eq!(a.cfg.congestion, Congestion::Cubic, "the default");
        let mss = a.eff_mss();
        a.cwnd = 100 * mss;
        a.snd_max = a.snd_una + 100 * mss; // a full window in flight
        a.ssthresh = a.on_congestion_event();
        assert_eq!(a.ssthresh, 70 * mss);
        a.cwnd = a.ssthresh;
        // K = cbrt(W_max (1 - β) / C) = cbrt(75) s ≈ 4.22 s for W_max = 100 MSS.
        let rtt = Duration::from_millis(100);
        grow(&mut a, &mut now, rtt, 4.2);
        let w = f64::from(a.cwnd) / f64::from(mss);
        assert!((95.0..=105.0).contains(&w), "back near W_max at K: {w}");
        grow(&mut a, &mut now, rtt, 0.6);
        let plateau = f64::from(a.cwnd) / f64::from(mss);
        assert!(plateau - w < 5.0, "flat around W_max: {w} -> {plateau}");
        grow(&mut a, &mut now, rtt, 3.0);
        let probing = f64::from(a.cwnd) / f64::from(mss);
        // W(K + 3 s) = W_max + C·3³ MSS ≈ 111 MSS; aiming an RTT ahead adds some.
        assert!(probing > 110.0, "then probes beyond it, convex: {probing}");

        // A loss below the previous maximum gives up some room (fast convergence).
        a.cwnd = 80 * mss;
        a.snd_max = a.snd_una + 80 * mss;
        let before = a.cubic.w_max;
        a.on_congestion_event();
        assert!(a.cubic.w_max < before);
        assert_eq!(a.cubic.w_max as u32, 80 * mss * 17 / 20);
    }

    #[test]
    fn reno_halves_and_grows_one_segment_per_round_trip() {
        let (mut a, _, mut now) = established_with(|c| c.congestion = Congestion::Reno);
        let mss = a.eff_mss();
        a.cwnd = 100 * mss;
        a.snd_max = a.snd_una + 100 * mss;
        a.ssthresh = a.on_congestion_event();
        assert_eq!(a.ssthresh, 50 * mss);
        a.cwnd = a.ssthresh;
        grow(&mut a, &mut now, Duration::from_millis(100), 1.0);
        let w = a.cwnd / mss;
        assert!((59..=61).contains(&w), "ten round trips, ten segments: {w}");
    }

    #[test]
    fn cubic_is_never_slower_than_reno_on_a_short_path() {
        let (mut a, _, mut now) = established();
        let mss = a.eff_mss();
        a.cwnd = 100 * mss;
        a.snd_max = a.snd_una + 100 * mss;
        a.ssthresh = a.on_congestion_event();
        a.cwnd = a.ssthresh;
        // 1 ms RTT: in one second Reno-friendly growth (α ≈ 0.53 MSS per RTT)
        // far outruns the cubic curve, and wins.
        grow(&mut a, &mut now, Duration::from_millis(1), 1.0);
        let w = a.cwnd / mss;
        assert!(w > 500, "Reno-friendly region: {w}");
    }

    #[test]
    fn timestamps_are_negotiated_and_paws_drops_an_old_duplicate() {
        let (mut a, mut b, mut now) = established();
        assert!(a.ts_ok && b.ts_ok);
        now = now + Duration::from_millis(5);
        a.send(Bytes::from(vec![7; 3000]));
        let segs = drain(&mut a, now);
        assert_eq!(
            segs[0].payload.len(),
            1460 - 12,
            "the option comes out of the MSS"
        );
        let (tsval, tsecr) = segs[0].timestamp.expect("stamped");
        assert_eq!(tsecr, b.tsval(), "echoes the peer's latest");
        // The same bytes again, but stamped before anything b has seen: an
        // old duplicate from a wrapped sequence space. Dropped, and ACKed.
        let mut old = segs[0].clone();
        old.timestamp = Some((tsval.wrapping_sub(1 << 20), tsecr));
        b.handle_segment(now, old);
        assert_eq!((b.stats().paws_rejected, b.recv_ready()), (1, 0));
        assert_eq!(drain(&mut b, now).len(), 1, "acknowledged at once");
        for s in segs {
            b.handle_segment(now, s);
        }
        assert_eq!(b.recv_ready(), 3000, "current segments pass");
    }

    #[test]
    fn without_timestamps_on_one_side_neither_uses_them() {
        let now = Instant::from_millis(1);
        let mut a = Connection::connect(TcpConfig::default(), Seq(1));
        let syn = a.poll_transmit(now).unwrap();
        assert!(syn.timestamp.is_some(), "offered");
        let off = TcpConfig {
            timestamps: false,
            ..TcpConfig::default()
        };
        let mut b = Connection::accept(off, now, &syn, Seq(9));
        let syn_ack = b.poll_transmit(now).unwrap();
        assert_eq!(syn_ack.timestamp, None);
        a.handle_segment(now, syn_ack);
        assert!(!a.ts_ok && !b.ts_ok);
        assert!(drain(&mut a, now).iter().all(|s| s.timestamp.is_none()));
    }

    /// After an RTO only the echoed timestamp can time the retransmission
    /// (Karn's rule forbids the timer sample); without timestamps there is
    /// no sample at all.
    #[test]
    fn the_echoed_timestamp_times_a_retransmission() {
        for timestamps in [true, false] {
            let (mut a, mut b, mut now) = if timestamps {
                established()
            } else {
                let now = Instant::from_millis(1);
                let off = TcpConfig {
                    timestamps: false,
                    ..TcpConfig::default()
                };
                let mut a = Connection::connect(off.clone(), Seq(1));
                let syn = a.poll_transmit(now).unwrap();
                let mut b = Connection::accept(off, now, &syn, Seq(9));
                a.handle_segment(now, b.poll_transmit(now).unwrap());
                b.handle_segment(now, a.poll_transmit(now).unwrap());
                (a, b, now)
            };
            let srtt0 = a.srtt;
            a.send(Bytes::from(vec![1; 1000]));
            assert_eq!(drain(&mut a, now).len(), 1, "sent, and lost");
            now = a.poll_timeout().expect("RTO armed");
            a.handle_timeout(now);
            let rexmit = drain(&mut a, now);
            assert_eq!((rexmit.len(), a.stats().rto_expirations), (1, 1));
            // The retransmission arrives and its ACK comes back 30 ms later.
            now = now + Duration::from_millis(30);
            for s in rexmit {
                b.handle_segment(now, s);
            }
            b.handle_timeout(now + Duration::from_millis(50)); // delayed ACK
            for s in drain(&mut b, now + Duration::from_millis(50)) {
                a.handle_segment(now, s);
            }
            assert_eq!(a.send_queued(), 0, "acknowledged");
            if timestamps {
                assert_eq!(a.stats().rtt_samples_ts, 1);
                let srtt = a.srtt.unwrap();
                assert!(
                    srtt > srtt0.unwrap() && srtt >= Duration::from_millis(3),
                    "the 30 ms sample moved srtt: {srtt0:?} -> {srtt:?}"
                );
            } else {
                assert_eq!(a.srtt, srtt0, "Karn: nothing to time");
            }
        }
    }
}
