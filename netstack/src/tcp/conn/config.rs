//! Per-connection tunables, [`TcpConfig`], and their defaults.
//!
//! The RTO bounds follow RFC 6298 (§2.1 initial RTO, floor lowered for a
//! data centre), delayed ACK RFC 1122 §4.2.3.2 and RFC 5681 §4.2, keepalive
//! RFC 1122 §4.2.3.6, the user timeout RFC 5482, SACK RFC 2018 and
//! timestamps RFC 7323.

use std::time::Duration;

/// Per-connection tunables.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// MSS we advertise (what we can receive per segment).
    pub mss: u16,
    /// Receive buffer: the most we advertise and hold, in bytes.
    pub recv_buffer: u32,
    /// Send buffer: the most the user may queue, in bytes.
    pub send_buffer: u32,
    /// Floor of the retransmission timeout. RFC 6298 says 1 s; inside a data
    /// centre tens of milliseconds is right. It must stay above the peers'
    /// delayed-ACK time (Linux: up to 40 ms, smoltcp: 10 ms), or the last
    /// segment of every flight is retransmitted spuriously while its ACK is
    /// held back. Between stacks that ACK at once, a few milliseconds works.
    pub min_rto: Duration,
    pub max_rto: Duration,
    /// RTO before the first RTT sample (RFC 6298 §2.1).
    pub initial_rto: Duration,
    /// How long a connection stays in TIME_WAIT. Short values recycle
    /// 4-tuples fast but trade safety: a peer still retransmitting (its ACK
    /// was lost, its RTO backed off) after the wait ends gets a RST instead
    /// of an ACK, and ends with "reset" although all data arrived.
    pub time_wait: Duration,
    /// Consecutive retransmission timeouts before the connection is reset.
    pub max_retransmits: u32,
    /// Offer and use selective acknowledgements (RFC 2018).
    pub sack: bool,
    /// Delayed ACK (RFC 1122 §4.2.3.2, RFC 5681 §4.2): in-order data is
    /// acknowledged every second segment or after this long, whichever comes
    /// first. Zero: acknowledge every segment at once. Out-of-order data, a
    /// filled gap and a FIN are always acknowledged at once. Keep it well
    /// below the peers' minimum RTO (Linux 200 ms, ours `min_rto`).
    pub delayed_ack: Duration,
    /// Keepalive probes on an idle connection (RFC 1122 §4.2.3.6); off by
    /// default.
    pub keepalive: Option<Keepalive>,
    /// Give up (RST, `TimedOut`) when sent data stays unacknowledged this
    /// long with no progress (RFC 5482's user timeout); `None`: only
    /// `max_retransmits` ends it.
    pub user_timeout: Option<Duration>,
    /// Give up (RST, `TimedOut`) when nothing was received or sent for this
    /// long; `None`: never.
    pub idle_timeout: Option<Duration>,
    pub congestion: Congestion,
    /// Offer and use timestamps (RFC 7323): PAWS protection against old
    /// duplicates, which is what makes a short TIME_WAIT safe, and a new SYN
    /// accepted in TIME_WAIT by its newer timestamp (RFC 6191).
    pub timestamps: bool,
}

/// Congestion control algorithm. Both use NewReno's loss recovery (RFC
/// 6582) and SACK; they differ in how the window grows and shrinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    /// RFC 5681: +1 MSS per RTT, halved on loss.
    Reno,
    /// RFC 9438: a cubic function of the time since the last loss, ×0.7 on
    /// loss, never slower than Reno would be.
    Cubic,
}

/// Keepalive parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Quiet time before the first probe.
    pub idle: Duration,
    /// Time between unanswered probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is reset.
    pub probes: u32,
}

impl TcpConfig {
    /// The defaults, which [`Default`] returns. The data plane's configuration
    /// (`dataplane-config`) takes its `tcp` section's defaults from here, so
    /// the two cannot drift apart.
    pub const DEFAULT: TcpConfig = TcpConfig {
        mss: 1460,
        recv_buffer: 256 * 1024,
        send_buffer: 256 * 1024,
        min_rto: Duration::from_millis(50),
        max_rto: Duration::from_secs(60),
        initial_rto: Duration::from_secs(1),
        time_wait: Duration::from_secs(1),
        max_retransmits: 12,
        sack: true,
        delayed_ack: Duration::from_millis(10),
        keepalive: None,
        user_timeout: None,
        idle_timeout: None,
        congestion: Congestion::Cubic,
        timestamps: true,
    };
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig::DEFAULT
    }
}
