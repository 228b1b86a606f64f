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

/// Declares a set of [`Counter`]s once: the struct (every field a public
/// `Counter`), `NAMES` (each counter's exported name, in declaration order),
/// `SCOPES` (which levels a counter means something at, a bit mask of the
/// caller's choosing; all bits when not given) and `for_each` (name and
/// value of each). The stats documents and, later, Prometheus read the
/// names from here, so a counter is named in one place.
///
/// ```
/// netstack::counters! {
///     /// What a cache counts.
///     pub struct CacheCounters prefix "cache_" {
///         hits,
///         /// Evictions by age.
///         evicted as "evictions",
///     }
/// }
/// let c = CacheCounters::default();
/// c.hits.inc();
/// assert_eq!(CacheCounters::NAMES, ["cache_hits", "cache_evictions"]);
/// let mut seen = Vec::new();
/// c.for_each(|k, v| seen.push((k, v)));
/// assert_eq!(seen, [("cache_hits", 1), ("cache_evictions", 0)]);
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$sm:meta])*
        $vis:vis struct $name:ident prefix $prefix:literal { $($body:tt)* }
    ) => {
        $crate::counters!(@struct [$prefix] $(#[$sm])* $vis struct $name { $($body)* });
    };
    (
        $(#[$sm:meta])*
        $vis:vis struct $name:ident { $($body:tt)* }
    ) => {
        $crate::counters!(@struct [""] $(#[$sm])* $vis struct $name { $($body)* });
    };
    (
        @struct [$prefix:literal]
        $(#[$sm:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fm:meta])* $field:ident $(as $alias:literal)? $(: $scope:expr)? ),* $(,)?
        }
    ) => {
        $(#[$sm])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $( $(#[$fm])* pub $field: $crate::Counter, )*
        }

        impl $name {
            /// Every counter's exported name, in declaration order.
            pub const NAMES: &'static [&'static str] =
                &[$( concat!($prefix, $crate::counters!(@name $field $($alias)?)) ),*];
            /// Where each counter (same order as `NAMES`) means something.
            pub const SCOPES: &'static [u32] = &[$( $crate::counters!(@scope $($scope)?) ),*];

            /// Each counter's name and current value, in declaration order.
            pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
                let all: &[&$crate::Counter] = &[$( &self.$field ),*];
                for (name, c) in Self::NAMES.iter().zip(all) {
                    f(name, c.get());
                }
            }

            /// Add every counter of `other` to this one's (merging per-core
            /// sets into a total, off the hot path).
            pub fn add_from(&self, other: &Self) {
                $( self.$field.add(other.$field.get()); )*
            }

            /// The counters whose scope has a bit of `scope`, by name.
            pub fn for_each_in(&self, scope: u32, mut f: impl FnMut(&'static str, u64)) {
                let mut i = 0;
                self.for_each(|k, v| {
                    if Self::SCOPES[i] & scope != 0 {
                        f(k, v);
                    }
                    i += 1;
                });
            }
        }
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $alias:literal) => { $alias };
    (@scope) => { u32::MAX };
    (@scope $scope:expr) => { $scope };
}

counters! {
    /// What the stack counts of frames, ARP, IPv4 and ICMP: outcomes, not
    /// drops (those are counted by [`DropReason`]).
    pub struct FrameCounters {
        rx_frames,
        tx_frames,
        arp_requests_rx,
        arp_replies_rx,
        arp_requests_tx,
        arp_replies_tx,
        /// Known neighbours re-confirmed (a request sent shortly before or
        /// after their entry expired, while packets kept using it).
        arp_refreshes,
        /// Known neighbours that answered none of those requests, forgotten.
        arp_neighbours_lost,
        icmp_echo_rx,
        /// Echo replies built: sent at once, or queued for ARP (and then either
        /// sent or counted as `arp_unresolved`/`arp_pending_full`).
        icmp_echo_tx,
        ipv4_rx,
        /// Frames whose checksum the device had already verified.
        rx_checksum_offloaded,
        /// Software steering: frames handed to the core that owns them (TCP
        /// segments of its connections, copies of ARP frames) ...
        steered_out,
        /// ... and frames received from other cores that way.
        steered_in,
        /// Software steering: valid ARP frames kept to the core that
        /// received them, as they teach no core a neighbour (other hosts'
        /// chatter, probes, off-link senders). Malformed ones are drops.
        arp_not_shared,
    }
}

/// Everything one core's stack counts. The frame counters are reached
/// through it (`stats.rx_frames`).
#[derive(Debug, Default)]
pub struct Stats {
    pub frames: FrameCounters,
    /// TCP engine totals, published by the owning core at each timer tick.
    pub tcp: TcpCounters,
    /// Payload copies per path (see docs/netstack.md).
    pub copies: CopyCounters,
    drops: [Counter; DropReason::ALL.len()],
}

impl std::ops::Deref for Stats {
    type Target = FrameCounters;
    fn deref(&self) -> &FrameCounters {
        &self.frames
    }
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
        self.frames.for_each(&mut f);
        self.tcp.for_each(&mut f);
        self.copies.for_each(&mut f);
        for d in DropReason::ALL {
            f(d.name(), self.dropped(d));
        }
    }
}

counters! {
    /// The TCP engine's counters as the admin side sees them.
    pub struct TcpCounters prefix "tcp_" {
        segments_in,
        segments_out,
        no_connection,
        resets_sent,
        syns_received,
        backlog_full,
        syn_cookies_sent,
        syn_cookies_accepted,
        syn_cookies_invalid,
        table_full,
        accepted,
        connected,
        closed,
        unaccepted_closed,
        /// Connections currently held (a gauge).
        connections,
        retransmits,
        fast_retransmits,
        rto_expirations,
        zero_window_probes,
        challenge_acks,
        out_of_window,
        overload_refused,
        paws_rejected,
        syn_retried_after_rst,
        time_wait_reopened,
        /// Payload bytes held by this core's connections (a gauge).
        buffered as "buffered_bytes",
        rx_over_budget,
        send_over_budget,
    }
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
        self.zero_window_probes.set(s.zero_window_probes);
        self.challenge_acks.set(s.challenge_acks);
        self.out_of_window.set(s.out_of_window);
        self.overload_refused.set(s.overload_refused);
        self.paws_rejected.set(s.paws_rejected);
        self.syn_retried_after_rst.set(s.syn_retried_after_rst);
        self.time_wait_reopened.set(s.time_wait_reopened);
        self.buffered.set(s.buffered);
        self.rx_over_budget.set(s.rx_over_budget);
        self.send_over_budget.set(s.send_over_budget);
    }
}

counters! {
    /// Where TCP payload was passed by reference and where it was copied, per
    /// segment, with the bytes copied. The stack's own copies only: a device
    /// may copy again (AF_PACKET and AF_XDP copy into their kernel rings).
    pub struct CopyCounters prefix "tcp_" {
        /// Received payload handed out as a slice of its buffer.
        rx_zero_copy,
        /// Received payload copied: shorter than `rx_min_payload`.
        rx_copied_small,
        /// Received payload copied: `rx_hold_limit` buffers already held.
        rx_copied_hold_limit,
        rx_copied_bytes,
        /// Received buffers held by payload now (a gauge, published per tick).
        rx_buffers_held,
        /// Sent payload attached behind the headers by reference.
        tx_zero_copy,
        /// Sent payload copied: shorter than `tx_min_payload`.
        tx_copied_small,
        /// Sent payload copied: the device takes single buffers only.
        tx_copied_single_segment,
        /// Sent payload copied: attaching failed (no buffer for the extra
        /// segment, or memory a device cannot address).
        tx_copied_unattachable,
        tx_copied_bytes,
    }
}
