//! Per-core counters: written by the owning core, read by anyone.
//!
//! Each counter is a relaxed atomic with a single writer, so an increment is a
//! plain load and store (no locked instruction) and a reader on another thread
//! sees a recent value without tearing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why the stack refused a frame. Each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    EthTruncated,
    /// Destination MAC is neither ours nor broadcast.
    EthNotForUs,
    /// Source MAC is broadcast or multicast.
    EthBadSource,
    /// Not ARP or IPv4 (IPv6, VLAN-tagged, ...).
    EthUnsupportedType,
    /// ARP too short, or not Ethernet/IPv4 ARP.
    ArpMalformed,
    /// ARP whose target is not our address.
    ArpNotForUs,
    /// ARP from a sender outside the interface's subnet, or with a bad MAC.
    ArpBadSender,
    /// ARP operation other than request/reply.
    ArpUnsupportedOp,
    /// Another host claims our address.
    ArpAddressConflict,
    /// IPv4 header too short, bad IHL, or total length past the frame.
    Ipv4Malformed,
    /// Version field is not 4.
    Ipv4BadVersion,
    Ipv4BadChecksum,
    /// A fragment (reassembly is not supported).
    Ipv4Fragment,
    /// Destination is not one of our addresses.
    Ipv4NotForUs,
    /// Destination is a broadcast or multicast address.
    Ipv4Broadcast,
    /// A unicast IP destination in a link-layer broadcast (RFC 1122 §3.3.6).
    Ipv4UnicastInL2Broadcast,
    /// Source is broadcast, multicast, unspecified, loopback or ours.
    Ipv4BadSource,
    /// A protocol this stack does not (yet) handle.
    Ipv4UnsupportedProtocol,
    /// TCP header too short or inconsistent, a zero port, or SYN with FIN/RST.
    TcpMalformed,
    TcpBadChecksum,
    /// ICMP shorter than its header.
    IcmpMalformed,
    IcmpBadChecksum,
    /// ICMP type we do not answer.
    IcmpUnsupportedType,
    /// No route to the destination.
    NoRoute,
    /// Neighbour queue full (per neighbour or per core).
    ArpPendingFull,
    /// Neighbour did not answer `max_requests` ARP requests.
    ArpUnresolved,
    /// Neighbour table full.
    ArpTableFull,
    /// No buffer to build a packet in (mempool empty).
    NoBuffer,
}

impl DropReason {
    pub const ALL: [DropReason; 28] = [
        DropReason::EthTruncated,
        DropReason::EthNotForUs,
        DropReason::EthBadSource,
        DropReason::EthUnsupportedType,
        DropReason::ArpMalformed,
        DropReason::ArpNotForUs,
        DropReason::ArpBadSender,
        DropReason::ArpUnsupportedOp,
        DropReason::ArpAddressConflict,
        DropReason::Ipv4Malformed,
        DropReason::Ipv4BadVersion,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv4Fragment,
        DropReason::Ipv4NotForUs,
        DropReason::Ipv4Broadcast,
        DropReason::Ipv4UnicastInL2Broadcast,
        DropReason::Ipv4BadSource,
        DropReason::Ipv4UnsupportedProtocol,
        DropReason::TcpMalformed,
        DropReason::TcpBadChecksum,
        DropReason::IcmpMalformed,
        DropReason::IcmpBadChecksum,
        DropReason::IcmpUnsupportedType,
        DropReason::NoRoute,
        DropReason::ArpPendingFull,
        DropReason::ArpUnresolved,
        DropReason::ArpTableFull,
        DropReason::NoBuffer,
    ];

    /// Stable snake_case name for stats output.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::EthTruncated => "eth_truncated",
            DropReason::EthNotForUs => "eth_not_for_us",
            DropReason::EthBadSource => "eth_bad_source",
            DropReason::EthUnsupportedType => "eth_unsupported_type",
            DropReason::ArpMalformed => "arp_malformed",
            DropReason::ArpNotForUs => "arp_not_for_us",
            DropReason::ArpBadSender => "arp_bad_sender",
            DropReason::ArpUnsupportedOp => "arp_unsupported_op",
            DropReason::ArpAddressConflict => "arp_address_conflict",
            DropReason::Ipv4Malformed => "ipv4_malformed",
            DropReason::Ipv4BadVersion => "ipv4_bad_version",
            DropReason::Ipv4BadChecksum => "ipv4_bad_checksum",
            DropReason::Ipv4Fragment => "ipv4_fragment",
            DropReason::Ipv4NotForUs => "ipv4_not_for_us",
            DropReason::Ipv4Broadcast => "ipv4_broadcast",
            DropReason::Ipv4UnicastInL2Broadcast => "ipv4_unicast_in_l2_broadcast",
            DropReason::Ipv4BadSource => "ipv4_bad_source",
            DropReason::Ipv4UnsupportedProtocol => "ipv4_unsupported_protocol",
            DropReason::TcpMalformed => "tcp_malformed",
            DropReason::TcpBadChecksum => "tcp_bad_checksum",
            DropReason::IcmpMalformed => "icmp_malformed",
            DropReason::IcmpBadChecksum => "icmp_bad_checksum",
            DropReason::IcmpUnsupportedType => "icmp_unsupported_type",
            DropReason::NoRoute => "no_route",
            DropReason::ArpPendingFull => "arp_pending_full",
            DropReason::ArpUnresolved => "arp_unresolved",
            DropReason::ArpTableFull => "arp_table_full",
            DropReason::NoBuffer => "no_buffer",
        }
    }
}

/// A counter with one writer (the owning core).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }
    /// Single-writer add: not a read-modify-write instruction.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed)
    }
    /// Publish a total kept elsewhere by the same writer.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed)
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Everything one core's stack counts.
#[derive(Debug, Default)]
pub struct Stats {
    pub rx_frames: Counter,
    pub tx_frames: Counter,
    pub arp_requests_rx: Counter,
    pub arp_replies_rx: Counter,
    pub arp_requests_tx: Counter,
    pub arp_replies_tx: Counter,
    pub icmp_echo_rx: Counter,
    /// Echo replies built: sent at once, or queued for ARP (and then either
    /// sent or counted as `arp_unresolved`/`arp_pending_full`).
    pub icmp_echo_tx: Counter,
    pub ipv4_rx: Counter,
    /// Frames whose checksum the device had already verified.
    pub rx_checksum_offloaded: Counter,
    /// Software steering: frames handed to the core that owns them (TCP
    /// segments of its connections, copies of ARP frames) ...
    pub steered_out: Counter,
    /// ... and frames received from other cores that way.
    pub steered_in: Counter,
    /// TCP engine totals, published by the owning core at each timer tick.
    pub tcp: TcpCounters,
    /// Payload copies per path (see docs/netstack.md).
    pub copies: CopyCounters,
    drops: [Counter; DropReason::ALL.len()],
}

impl Stats {
    #[inline]
    pub fn record_drop(&self, why: DropReason) {
        self.drops[why as usize].inc();
    }

    pub fn dropped(&self, why: DropReason) -> u64 {
        self.drops[why as usize].get()
    }

    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    /// Every counter by name: outcomes first, then `drop_<reason>`.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
        f("rx_frames", self.rx_frames.get());
        f("tx_frames", self.tx_frames.get());
        f("ipv4_rx", self.ipv4_rx.get());
        f("arp_requests_rx", self.arp_requests_rx.get());
        f("arp_replies_rx", self.arp_replies_rx.get());
        f("arp_requests_tx", self.arp_requests_tx.get());
        f("arp_replies_tx", self.arp_replies_tx.get());
        f("icmp_echo_rx", self.icmp_echo_rx.get());
        f("icmp_echo_tx", self.icmp_echo_tx.get());
        f("rx_checksum_offloaded", self.rx_checksum_offloaded.get());
        f("steered_out", self.steered_out.get());
        f("steered_in", self.steered_in.get());
        self.tcp.for_each(&mut f);
        self.copies.for_each(&mut f);
        for d in DropReason::ALL {
            f(d.name(), self.dropped(d));
        }
    }
}

/// The TCP engine's counters as the admin side sees them.
#[derive(Debug, Default)]
pub struct TcpCounters {
    pub segments_in: Counter,
    pub segments_out: Counter,
    pub no_connection: Counter,
    pub resets_sent: Counter,
    pub syns_received: Counter,
    pub backlog_full: Counter,
    pub syn_cookies_sent: Counter,
    pub syn_cookies_accepted: Counter,
    pub syn_cookies_invalid: Counter,
    pub table_full: Counter,
    pub accepted: Counter,
    pub connected: Counter,
    pub closed: Counter,
    pub unaccepted_closed: Counter,
    /// Connections currently held (a gauge).
    pub connections: Counter,
    pub retransmits: Counter,
    pub fast_retransmits: Counter,
    pub rto_expirations: Counter,
    pub challenge_acks: Counter,
    pub paws_rejected: Counter,
    pub syn_retried_after_rst: Counter,
    pub time_wait_reopened: Counter,
    /// Payload bytes held by this core's connections (a gauge).
    pub buffered: Counter,
    pub rx_over_budget: Counter,
    pub send_over_budget: Counter,
}

impl TcpCounters {
    pub fn publish(&self, s: &crate::tcp::EngineStats, connections: usize) {
        self.segments_in.set(s.segments_in);
        self.segments_out.set(s.segments_out);
        self.no_connection.set(s.no_connection);
        self.resets_sent.set(s.resets_sent);
        self.syns_received.set(s.syns_received);
        self.backlog_full.set(s.backlog_full);
        self.syn_cookies_sent.set(s.syn_cookies_sent);
        self.syn_cookies_accepted.set(s.syn_cookies_accepted);
        self.syn_cookies_invalid.set(s.syn_cookies_invalid);
        self.table_full.set(s.table_full);
        self.accepted.set(s.accepted);
        self.connected.set(s.connected);
        self.closed.set(s.closed);
        self.unaccepted_closed.set(s.unaccepted_closed);
        self.connections.set(connections as u64);
        self.retransmits.set(s.retransmits);
        self.fast_retransmits.set(s.fast_retransmits);
        self.rto_expirations.set(s.rto_expirations);
        self.challenge_acks.set(s.challenge_acks);
        self.paws_rejected.set(s.paws_rejected);
        self.syn_retried_after_rst.set(s.syn_retried_after_rst);
        self.time_wait_reopened.set(s.time_wait_reopened);
        self.buffered.set(s.buffered);
        self.rx_over_budget.set(s.rx_over_budget);
        self.send_over_budget.set(s.send_over_budget);
    }

    fn for_each(&self, f: &mut impl FnMut(&'static str, u64)) {
        f("tcp_segments_in", self.segments_in.get());
        f("tcp_segments_out", self.segments_out.get());
        f("tcp_no_connection", self.no_connection.get());
        f("tcp_resets_sent", self.resets_sent.get());
        f("tcp_syns_received", self.syns_received.get());
        f("tcp_backlog_full", self.backlog_full.get());
        f("tcp_syn_cookies_sent", self.syn_cookies_sent.get());
        f("tcp_syn_cookies_accepted", self.syn_cookies_accepted.get());
        f("tcp_syn_cookies_invalid", self.syn_cookies_invalid.get());
        f("tcp_table_full", self.table_full.get());
        f("tcp_accepted", self.accepted.get());
        f("tcp_connected", self.connected.get());
        f("tcp_closed", self.closed.get());
        f("tcp_unaccepted_closed", self.unaccepted_closed.get());
        f("tcp_connections", self.connections.get());
        f("tcp_retransmits", self.retransmits.get());
        f("tcp_fast_retransmits", self.fast_retransmits.get());
        f("tcp_rto_expirations", self.rto_expirations.get());
        f("tcp_challenge_acks", self.challenge_acks.get());
        f("tcp_paws_rejected", self.paws_rejected.get());
        f(
            "tcp_syn_retried_after_rst",
            self.syn_retried_after_rst.get(),
        );
        f("tcp_time_wait_reopened", self.time_wait_reopened.get());
        f("tcp_buffered_bytes", self.buffered.get());
        f("tcp_rx_over_budget", self.rx_over_budget.get());
        f("tcp_send_over_budget", self.send_over_budget.get());
    }
}

/// Where TCP payload was passed by reference and where it was copied, per
/// segment, with the bytes copied. The stack's own copies only: a device
/// may copy again (AF_PACKET and AF_XDP copy into their kernel rings).
#[derive(Debug, Default)]
pub struct CopyCounters {
    /// Received payload handed out as a slice of its buffer.
    pub rx_zero_copy: Counter,
    /// Received payload copied: shorter than `rx_min_payload`.
    pub rx_copied_small: Counter,
    /// Received payload copied: `rx_hold_limit` buffers already held.
    pub rx_copied_hold_limit: Counter,
    pub rx_copied_bytes: Counter,
    /// Received buffers held by payload now (a gauge, published per tick).
    pub rx_buffers_held: Counter,
    /// Sent payload attached behind the headers by reference.
    pub tx_zero_copy: Counter,
    /// Sent payload copied: shorter than `tx_min_payload`.
    pub tx_copied_small: Counter,
    /// Sent payload copied: the device takes single buffers only.
    pub tx_copied_single_segment: Counter,
    /// Sent payload copied: attaching failed (no buffer for the extra
    /// segment, or memory a device cannot address).
    pub tx_copied_unattachable: Counter,
    pub tx_copied_bytes: Counter,
}

impl CopyCounters {
    fn for_each(&self, f: &mut impl FnMut(&'static str, u64)) {
        f("tcp_rx_zero_copy", self.rx_zero_copy.get());
        f("tcp_rx_copied_small", self.rx_copied_small.get());
        f("tcp_rx_copied_hold_limit", self.rx_copied_hold_limit.get());
        f("tcp_rx_copied_bytes", self.rx_copied_bytes.get());
        f("tcp_rx_buffers_held", self.rx_buffers_held.get());
        f("tcp_tx_zero_copy", self.tx_zero_copy.get());
        f("tcp_tx_copied_small", self.tx_copied_small.get());
        f(
            "tcp_tx_copied_single_segment",
            self.tx_copied_single_segment.get(),
        );
        f(
            "tcp_tx_copied_unattachable",
            self.tx_copied_unattachable.get(),
        );
        f("tcp_tx_copied_bytes", self.tx_copied_bytes.get());
    }
}
