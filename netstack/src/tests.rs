//! L2/L3 tests on an in-memory device: no DPDK, no clock.
//!
//! Fixtures were made with scapy (an implementation we did not write), so the
//! expected replies do not come from our own emit code.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use smoltcp::wire::{EthernetAddress, Icmpv4Packet, Ipv4Packet};

use crate::rss::Steering;
use crate::tcp::{ConnId, EngineConfig, Segment, Seq, wire as tcp_wire};
use crate::{
    ArpParams, DropReason, HeapFrame, HeapPool, IfaceConfig, Instant, RxChecksum, Stack,
    StackConfig, Transmit, ZeroCopyConfig,
};

const US: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);

// who-has 10.0.0.1 tell 10.0.0.2, padded to 60 bytes with dirty (0xa5) bytes.
const ARP_REQUEST: [u8; 60] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, 0x00, 0x01,
    0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x02,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5,
    0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5, 0xa5,
];
const ARP_REPLY_EXPECTED: [u8; 42] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x01,
    0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x01,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x02,
];
// 10.0.0.2 -> 10.0.0.1 echo request, id 0x77 seq 1, DF, TTL 61, 16 bytes of data.
const ECHO_REQUEST: [u8; 58] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x2c, 0x12, 0x34, 0x40, 0x00, 0x3d, 0x01, 0x17, 0x9b, 0x0a, 0x00, 0x00, 0x02, 0x0a, 0x00,
    0x00, 0x01, 0x08, 0x00, 0xc8, 0x50, 0x00, 0x77, 0x00, 0x01, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35,
    0x36, 0x37, 0x38, 0x39, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66,
];
// Our answer: ident 1, no flags, TTL 64.
const ECHO_REPLY_EXPECTED: [u8; 58] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x2c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0x66, 0xce, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00,
    0x00, 0x02, 0x00, 0x00, 0xd0, 0x50, 0x00, 0x77, 0x00, 0x01, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35,
    0x36, 0x37, 0x38, 0x39, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66,
];
// The same request with a 4-byte IP option (IHL 6).
const ECHO_REQUEST_WITH_OPTIONS: [u8; 62] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x46, 0x00,
    0x00, 0x30, 0x12, 0x34, 0x00, 0x00, 0x3d, 0x01, 0x54, 0x96, 0x0a, 0x00, 0x00, 0x02, 0x0a, 0x00,
    0x00, 0x01, 0x01, 0x01, 0x01, 0x00, 0x08, 0x00, 0xc8, 0x50, 0x00, 0x77, 0x00, 0x01, 0x30, 0x31,
    0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66,
];
const ARP_REQUEST_FROM_US: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x01,
    0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
];
const ARP_REPLY_FROM_PEER: [u8; 42] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, 0x00, 0x01,
    0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x02,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x01,
];

/// The in-memory device: what the stack transmitted, in order, and the
/// payload it attached to frames by reference.
#[derive(Default)]
struct Wire(Vec<(usize, Vec<u8>)>, Vec<Bytes>);

impl Transmit<HeapFrame> for Wire {
    fn transmit(&mut self, iface: usize, frame: HeapFrame) {
        self.1.extend(frame.tail.clone());
        self.0.push((iface, frame.into_vec()));
    }
}

struct Harness {
    stack: Stack<HeapFrame>,
    pool: HeapPool,
    wire: Wire,
    now: Instant,
}

impl Harness {
    fn new() -> Harness {
        Self::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut StackConfig)) -> Harness {
        let mut cfg = StackConfig {
            ifaces: vec![IfaceConfig {
                mac: US,
                addr: Ipv4Addr::new(10, 0, 0, 1),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 0, 254)),
                trust_rx_checksum: true,
                tx_chain: false,
                soft_steering: None,
            }],
            ttl: 64,
            arp: ArpParams {
                entry_ttl: Duration::from_secs(30),
                request_interval: Duration::from_millis(500),
                max_requests: 3,
                max_pending_per_neighbor: 4,
                max_pending_total: 16,
                max_entries: 64,
            },
            zero_copy: ZeroCopyConfig::default(),
        };
        tweak(&mut cfg);
        Harness {
            stack: Stack::new(cfg),
            pool: HeapPool::new(1000),
            wire: Wire::default(),
            now: Instant::from_millis(1),
        }
    }

    /// What went out, with the IPv4 ident and header checksum of echo
    /// replies zeroed (they vary with how many were sent before).
    fn sent_normalized(&mut self) -> Vec<Vec<u8>> {
        self.sent().into_iter().map(normalize).collect()
    }

    fn rx(&mut self, bytes: &[u8]) {
        self.rx_frame(HeapFrame::new(bytes));
    }

    fn rx_frame(&mut self, f: HeapFrame) {
        self.stack
            .receive(self.now, 0, f, &mut self.pool, &mut self.wire);
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.stack.poll(self.now, &mut self.pool, &mut self.wire);
    }

    fn sent(&mut self) -> Vec<Vec<u8>> {
        self.wire.0.drain(..).map(|(_, f)| f).collect()
    }

    fn dropped(&self, why: DropReason) -> u64 {
        self.stack.stats().dropped(why)
    }
}

fn with_ip_checksum(mut b: Vec<u8>) -> Vec<u8> {
    Ipv4Packet::new_unchecked(&mut b[14..]).fill_checksum();
    b
}

// === ARP ===

#[test]
fn arp_request_for_us_is_answered_in_place_and_teaches_the_sender() {
    let mut h = Harness::new();
    h.rx(&ARP_REQUEST);
    assert_eq!(
        h.sent(),
        vec![ARP_REPLY_EXPECTED.to_vec()],
        "reply must be exact and drop the dirty padding"
    );
    assert_eq!(h.stack.stats().arp_requests_rx.get(), 1);
    assert_eq!(h.stack.stats().arp_replies_tx.get(), 1);
    // The sender was learned: an echo request is answered at once, no ARP.
    h.rx(&ECHO_REQUEST);
    assert_eq!(h.sent(), vec![ECHO_REPLY_EXPECTED.to_vec()]);
}

#[test]
fn arp_for_another_address_is_not_answered_and_does_not_create_entries() {
    let mut h = Harness::new();
    let mut req = ARP_REQUEST.to_vec();
    req[41] = 9; // target 10.0.0.9
    h.rx(&req);
    assert!(h.sent().is_empty());
    assert_eq!(h.dropped(DropReason::ArpNotForUs), 1);
    assert_eq!(h.stack.arp_entries(), 0);
}

#[test]
fn arp_from_off_link_sender_or_multicast_mac_is_refused() {
    let mut h = Harness::new();
    let mut off_link = ARP_REQUEST.to_vec();
    off_link[28..32].copy_from_slice(&[192, 168, 1, 1]);
    h.rx(&off_link);
    assert_eq!(h.dropped(DropReason::ArpBadSender), 1);
    let mut multicast_sha = ARP_REQUEST.to_vec();
    multicast_sha[22] = 0x01;
    h.rx(&multicast_sha);
    assert_eq!(h.dropped(DropReason::ArpBadSender), 2);
    assert!(h.sent().is_empty());
}

#[test]
fn arp_claiming_our_address_is_a_conflict() {
    let mut h = Harness::new();
    let mut gratuitous = ARP_REQUEST.to_vec();
    gratuitous[28..32].copy_from_slice(&[10, 0, 0, 1]);
    h.rx(&gratuitous);
    assert_eq!(h.dropped(DropReason::ArpAddressConflict), 1);
    assert!(h.sent().is_empty());
}

#[test]
fn malformed_and_truncated_arp_is_counted_not_panicking() {
    let mut h = Harness::new();
    for len in 14..42 {
        h.rx(&ARP_REQUEST[..len]);
    }
    let mut wrong_hw = ARP_REQUEST.to_vec();
    wrong_hw[15] = 6; // hardware type 6 (IEEE 802)
    h.rx(&wrong_hw);
    let mut wrong_len = ARP_REQUEST.to_vec();
    wrong_len[18] = 8; // hlen 8
    h.rx(&wrong_len);
    assert_eq!(h.dropped(DropReason::ArpMalformed), 28 + 2);
    for len in 0..14 {
        h.rx(&ARP_REQUEST[..len]);
    }
    assert_eq!(h.dropped(DropReason::EthTruncated), 14);
    assert!(h.sent().is_empty());
}

// === resolving our next hop ===

#[test]
fn reply_to_unknown_neighbour_waits_for_arp_then_goes_out() {
    let mut h = Harness::new();
    h.rx(&ECHO_REQUEST);
    assert_eq!(
        h.sent(),
        vec![ARP_REQUEST_FROM_US.to_vec()],
        "must ask who has 10.0.0.2 first"
    );
    h.rx(&ECHO_REQUEST); // a second one waits too, without a second request
    assert!(h.sent().is_empty());
    h.rx(&ARP_REPLY_FROM_PEER);
    let out = h.sent();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], ECHO_REPLY_EXPECTED.to_vec());
    assert_eq!(h.stack.stats().arp_replies_rx.get(), 1);
}

#[test]
fn unanswered_arp_is_retried_then_given_up_with_the_queue_counted() {
    let mut h = Harness::new();
    h.rx(&ECHO_REQUEST);
    h.rx(&ECHO_REQUEST);
    assert_eq!(h.sent().len(), 1);
    assert_eq!(h.stack.poll_at(), Some(h.now + Duration::from_millis(500)));
    h.advance(Duration::from_millis(499));
    assert!(h.sent().is_empty(), "not before the interval");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.sent(), vec![ARP_REQUEST_FROM_US.to_vec()]);
    h.advance(Duration::from_millis(500));
    assert_eq!(h.sent().len(), 1, "third and last request");
    h.advance(Duration::from_millis(500));
    assert!(h.sent().is_empty());
    assert_eq!(h.dropped(DropReason::ArpUnresolved), 2);
    assert_eq!(h.stack.poll_at(), None);
    assert_eq!(h.stack.arp_entries(), 0);
}

#[test]
fn pending_queue_is_bounded_per_neighbour_and_per_core() {
    let mut h = Harness::new();
    for _ in 0..6 {
        h.rx(&ECHO_REQUEST);
    }
    assert_eq!(
        h.dropped(DropReason::ArpPendingFull),
        2,
        "4 may wait for one neighbour"
    );
    // Other neighbours fill the per-core budget of 16.
    for host in 3..10u8 {
        let mut e = ECHO_REQUEST.to_vec();
        e[29] = host;
        let e = with_ip_checksum(e);
        for _ in 0..4 {
            h.rx(&e);
        }
    }
    assert_eq!(h.dropped(DropReason::ArpPendingFull), 2 + (4 + 7 * 4 - 16));
}

/// `f` with the IPv4 ident and header checksum zeroed, if it is IPv4.
fn normalize(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() >= 34 && f[12..14] == [8, 0] {
        f[18..20].fill(0);
        f[24..26].fill(0);
    }
    f
}

fn echo_reply() -> Vec<u8> {
    normalize(ECHO_REPLY_EXPECTED.to_vec())
}

#[test]
fn learned_entries_unused_for_a_ttl_past_expiry_are_resolved_again() {
    let mut h = Harness::new();
    h.rx(&ARP_REQUEST);
    h.sent();
    h.advance(Duration::from_secs(25));
    h.rx(&ECHO_REQUEST);
    assert_eq!(h.sent(), vec![ECHO_REPLY_EXPECTED.to_vec()]);
    h.advance(Duration::from_secs(36));
    h.rx(&ECHO_REQUEST);
    assert_eq!(
        h.sent(),
        vec![ARP_REQUEST_FROM_US.to_vec()],
        "forgotten: ask again, the reply waits"
    );
}

/// Regression: an entry in use expired and was forgotten, so the next
/// packet (a SYN) waited for, or was dropped by, a new resolution.
#[test]
fn a_neighbour_in_use_is_reconfirmed_before_it_expires_and_nothing_waits() {
    let mut h = Harness::new();
    h.rx(&ARP_REQUEST);
    h.sent_normalized();
    // TTL 30 s; requests every 500 ms, 3 of them: re-confirmation starts
    // 1.5 s before expiry, on use.
    h.advance(Duration::from_millis(28_400));
    h.rx(&ECHO_REQUEST);
    assert_eq!(h.sent_normalized(), vec![echo_reply()], "not yet");
    h.advance(Duration::from_millis(200));
    h.rx(&ECHO_REQUEST);
    assert_eq!(
        h.sent_normalized(),
        vec![echo_reply(), ARP_REQUEST_FROM_US.to_vec()],
        "the reply goes at once, and a request checks the neighbour"
    );
    h.rx(&ECHO_REQUEST);
    assert_eq!(
        h.sent_normalized(),
        vec![echo_reply()],
        "one request at a time"
    );
    h.rx(&ARP_REPLY_FROM_PEER);
    h.sent_normalized();
    // Past the old expiry: still known, nothing queued, nothing asked.
    h.advance(Duration::from_secs(3));
    h.rx(&ECHO_REQUEST);
    assert_eq!(h.sent_normalized(), vec![echo_reply()]);
    assert_eq!(h.stack.stats().arp_refreshes.get(), 1);
    assert_eq!(h.stack.stats().dropped_total(), 0);
}

#[test]
fn a_stale_neighbour_is_used_while_reconfirmed_and_forgotten_when_silent() {
    let mut h = Harness::new();
    h.rx(&ARP_REQUEST);
    h.sent_normalized();
    h.advance(Duration::from_millis(30_200));
    h.rx(&ECHO_REQUEST);
    assert_eq!(
        h.sent_normalized(),
        vec![echo_reply(), ARP_REQUEST_FROM_US.to_vec()],
        "expired but known: used, and checked"
    );
    h.advance(Duration::from_millis(500));
    h.rx(&ECHO_REQUEST);
    assert_eq!(
        h.sent_normalized(),
        vec![ARP_REQUEST_FROM_US.to_vec(), echo_reply()],
        "second request; the address is still used"
    );
    h.advance(Duration::from_millis(500));
    assert_eq!(
        h.sent_normalized(),
        vec![ARP_REQUEST_FROM_US.to_vec()],
        "third and last"
    );
    h.advance(Duration::from_millis(500));
    assert!(h.sent_normalized().is_empty());
    assert_eq!(h.stack.arp_entries(), 0, "silent: forgotten");
    assert_eq!(h.stack.stats().arp_neighbours_lost.get(), 1);
    h.rx(&ECHO_REQUEST);
    assert_eq!(
        h.sent_normalized(),
        vec![ARP_REQUEST_FROM_US.to_vec()],
        "resolved anew"
    );
    assert_eq!(h.stack.stats().dropped_total(), 0);
}

#[test]
fn off_subnet_replies_go_through_the_gateway() {
    let mut h = Harness::new();
    let mut e = ECHO_REQUEST.to_vec();
    e[26..30].copy_from_slice(&[192, 168, 7, 7]);
    h.rx(&with_ip_checksum(e));
    let out = h.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(
        &out[0][38..42],
        &[10, 0, 0, 254],
        "ARP for the gateway, not the far host"
    );
}

#[test]
fn no_route_without_gateway() {
    let mut h = Harness::with(|c| c.ifaces[0].gateway = None);
    let mut e = ECHO_REQUEST.to_vec();
    e[26..30].copy_from_slice(&[192, 168, 7, 7]);
    h.rx(&with_ip_checksum(e));
    assert!(h.sent().is_empty());
    assert_eq!(h.dropped(DropReason::NoRoute), 1);
}

#[test]
fn arp_request_without_buffers_is_counted() {
    let mut h = Harness::new();
    h.pool.remaining = 0;
    h.rx(&ECHO_REQUEST);
    assert!(h.sent().is_empty());
    assert_eq!(h.dropped(DropReason::NoBuffer), 1);
}

// === IPv4 and ICMP ===

#[test]
fn echo_reply_is_exact_and_checksums_verify() {
    let mut h = Harness::new();
    h.rx(&ARP_REQUEST);
    h.sent();
    h.rx(&ECHO_REQUEST);
    let out = h.sent();
    assert_eq!(out, vec![ECHO_REPLY_EXPECTED.to_vec()]);
    let ip = Ipv4Packet::new_checked(&out[0][14..]).unwrap();
    assert!(ip.verify_checksum());
    assert!(
        Icmpv4Packet::new_checked(ip.payload())
            .unwrap()
            .verify_checksum()
    );
}

#[test]
fn echo_with_ip_options_is_answered_without_them() {
    let mut h = Harness::new();
    h.rx(&ARP_REQUEST);
    h.sent();
    h.rx(&ECHO_REQUEST_WITH_OPTIONS);
    assert_eq!(h.sent(), vec![ECHO_REPLY_EXPECTED.to_vec()]);
}

#[test]
fn ethernet_padding_is_not_echoed() {
    let mut h = Harness::new();
    h.rx(&ARP_REQUEST);
    h.sent();
    let mut padded = ECHO_REQUEST.to_vec();
    padded.extend_from_slice(&[0xa5; 6]);
    h.rx(&padded);
    assert_eq!(h.sent(), vec![ECHO_REPLY_EXPECTED.to_vec()]);
}

#[test]
fn wrong_checksums_are_dropped_and_counted() {
    let mut h = Harness::new();
    let mut bad_ip = ECHO_REQUEST.to_vec();
    bad_ip[24] ^= 0xff;
    h.rx(&bad_ip);
    assert_eq!(h.dropped(DropReason::Ipv4BadChecksum), 1);
    let mut bad_icmp = ECHO_REQUEST.to_vec();
    bad_icmp[57] ^= 0x01; // payload byte
    h.rx(&bad_icmp);
    assert_eq!(h.dropped(DropReason::IcmpBadChecksum), 1);
    assert!(h.sent().is_empty());
}

#[test]
fn device_checksum_verdict_is_used_only_when_trusted() {
    let mut bad_ip = ECHO_REQUEST.to_vec();
    bad_ip[24] ^= 0xff;
    // Trusted and the device says good: software does not re-check.
    let mut h = Harness::new();
    h.rx(&ARP_REQUEST);
    h.sent();
    let mut f = HeapFrame::new(&bad_ip);
    f.ip_checksum = RxChecksum::Good;
    h.rx_frame(f);
    assert_eq!(h.stack.stats().rx_checksum_offloaded.get(), 1);
    assert_eq!(h.sent().len(), 1);
    // Trusted and the device says bad: dropped even though the sum is right.
    let mut f = HeapFrame::new(&ECHO_REQUEST);
    f.ip_checksum = RxChecksum::Bad;
    h.rx_frame(f);
    assert_eq!(h.dropped(DropReason::Ipv4BadChecksum), 1);
    // Policy "verify": the device's "good" is ignored.
    let mut h = Harness::with(|c| c.ifaces[0].trust_rx_checksum = false);
    let mut f = HeapFrame::new(&bad_ip);
    f.ip_checksum = RxChecksum::Good;
    h.rx_frame(f);
    assert_eq!(h.dropped(DropReason::Ipv4BadChecksum), 1);
}

#[test]
fn fragments_are_counted_and_dropped() {
    let mut h = Harness::new();
    let mut mf = ECHO_REQUEST.to_vec();
    mf[20] = 0x20; // more fragments
    h.rx(&with_ip_checksum(mf));
    let mut off = ECHO_REQUEST.to_vec();
    off[20] = 0x00;
    off[21] = 0x10; // offset 128 bytes
    h.rx(&with_ip_checksum(off));
    assert_eq!(h.dropped(DropReason::Ipv4Fragment), 2);
    assert!(h.sent().is_empty());
}

#[test]
fn malformed_ipv4_headers_are_counted() {
    let mut h = Harness::new();
    let mut long = ECHO_REQUEST.to_vec();
    long[17] = 0x40; // total length 64 > 44 available
    h.rx(&with_ip_checksum(long));
    let mut ihl = ECHO_REQUEST.to_vec();
    ihl[14] = 0x44; // IHL 4 (16 bytes)
    h.rx(&ihl);
    for len in 14..34 {
        h.rx(&ECHO_REQUEST[..len]);
    }
    assert_eq!(h.dropped(DropReason::Ipv4Malformed), 2 + 20);
    let mut v6 = ECHO_REQUEST.to_vec();
    v6[14] = 0x65;
    h.rx(&with_ip_checksum(v6));
    assert_eq!(h.dropped(DropReason::Ipv4BadVersion), 1);
    let mut short_icmp = ECHO_REQUEST.to_vec();
    short_icmp.truncate(14 + 20 + 4);
    short_icmp[17] = 24;
    h.rx(&with_ip_checksum(short_icmp));
    assert_eq!(h.dropped(DropReason::IcmpMalformed), 1);
    assert!(h.sent().is_empty());
}

#[test]
fn traffic_not_for_us_is_counted_by_reason() {
    let mut h = Harness::new();
    let mut other_mac = ECHO_REQUEST.to_vec();
    other_mac[5] = 9;
    h.rx(&other_mac);
    assert_eq!(h.dropped(DropReason::EthNotForUs), 1);
    let mut other_ip = ECHO_REQUEST.to_vec();
    other_ip[33] = 9;
    h.rx(&with_ip_checksum(other_ip));
    assert_eq!(h.dropped(DropReason::Ipv4NotForUs), 1);
    let mut bcast = ECHO_REQUEST.to_vec();
    bcast[33] = 255;
    h.rx(&with_ip_checksum(bcast));
    assert_eq!(h.dropped(DropReason::Ipv4Broadcast), 1);
    let mut spoofed = ECHO_REQUEST.to_vec();
    spoofed[26..30].copy_from_slice(&[10, 0, 0, 1]);
    h.rx(&with_ip_checksum(spoofed));
    assert_eq!(h.dropped(DropReason::Ipv4BadSource), 1);
    let mut ipv6 = ECHO_REQUEST.to_vec();
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    h.rx(&ipv6);
    assert_eq!(h.dropped(DropReason::EthUnsupportedType), 1);
    let mut udp = ECHO_REQUEST.to_vec();
    udp[23] = 17;
    h.rx(&with_ip_checksum(udp));
    assert_eq!(h.dropped(DropReason::Ipv4UnsupportedProtocol), 1);
    let mut reply = ECHO_REQUEST.to_vec();
    reply[34] = 0; // echo reply: we sent no requests
    let mut icmp = Icmpv4Packet::new_unchecked(&mut reply[34..]);
    icmp.fill_checksum();
    h.rx(&reply);
    assert_eq!(h.dropped(DropReason::IcmpUnsupportedType), 1);
    assert!(h.sent().is_empty());
}

#[test]
fn stats_name_every_drop_reason_once() {
    let h = Harness::new();
    let mut names = Vec::new();
    h.stack.stats().for_each(|n, _| names.push(n));
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
    assert!(names.contains(&"ipv4_fragment"));
}

/// Mutated fixtures: never a panic, and every received frame ends in exactly
/// one outcome counter (a drop reason, or one of the handled kinds).
#[test]
fn mutated_frames_never_panic_and_every_frame_is_accounted() {
    let mut h = Harness::new();
    let fixtures: [&[u8]; 4] = [
        &ARP_REQUEST,
        &ECHO_REQUEST,
        &ECHO_REQUEST_WITH_OPTIONS,
        &ARP_REPLY_FROM_PEER,
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..50_000 {
        let mut f = fixtures[i % fixtures.len()].to_vec();
        for _ in 0..(rand() % 4 + 1) {
            let at = (rand() as usize) % f.len();
            f[at] = rand() as u8;
        }
        if rand() % 8 == 0 {
            let len = (rand() as usize) % (f.len() + 1);
            f.truncate(len);
        }
        if rand() % 3 == 0
            && f.len() >= 14 + usize::from(f.get(14).map_or(0, |b| b & 0xf)) * 4
            && f.len() > 34
        {
            f = with_ip_checksum(f); // get past the header checksum more often
        }
        h.rx(&f);
        if i % 1000 == 0 {
            h.advance(Duration::from_millis(700));
        }
    }
    h.advance(Duration::from_secs(5));
    let s = h.stack.stats();
    // Drops after a frame was accepted (its reply could not be sent).
    let output_drops: u64 = [
        DropReason::NoRoute,
        DropReason::ArpPendingFull,
        DropReason::ArpUnresolved,
        DropReason::ArpTableFull,
        DropReason::NoBuffer,
    ]
    .iter()
    .map(|d| s.dropped(*d))
    .sum();
    let handled = s.arp_requests_rx.get() + s.arp_replies_rx.get() + s.icmp_echo_rx.get();
    assert_eq!(s.rx_frames.get(), 50_000);
    assert_eq!(s.dropped_total() - output_drops + handled, 50_000);
    assert!(
        s.icmp_echo_rx.get() > 0 && s.arp_requests_rx.get() > 0,
        "the mutation kept some frames valid"
    );
}

#[test]
fn unicast_ip_in_a_link_layer_broadcast_is_dropped() {
    let mut h = Harness::new();
    let mut e = ECHO_REQUEST.to_vec();
    e[0..6].copy_from_slice(&[0xff; 6]);
    h.rx(&e);
    assert_eq!(h.dropped(DropReason::Ipv4UnicastInL2Broadcast), 1);
    assert!(h.sent().is_empty());
}

#[test]
fn on_a_31_both_addresses_are_neighbours() {
    // 10.0.0.1/31: the peer is 10.0.0.0, the "network" address of a longer prefix.
    let mut h = Harness::with(|c| {
        c.ifaces[0].prefix_len = 31;
        c.ifaces[0].gateway = None;
    });
    let mut req = ARP_REQUEST.to_vec();
    req[31] = 0; // sender 10.0.0.0
    h.rx(&req);
    let out = h.sent();
    assert_eq!(out.len(), 1, "the /31 peer gets an ARP reply");
    assert_eq!(&out[0][38..42], &[10, 0, 0, 0]);
}

#[test]
fn a_full_neighbour_table_evicts_rather_than_refuses() {
    let mut h = Harness::with(|c| c.arp.max_entries = 4);
    // Four "neighbours" announce themselves (as a spoofer could).
    for host in 10..14u8 {
        let mut req = ARP_REQUEST.to_vec();
        req[31] = host;
        req[27] = host;
        h.rx(&req);
    }
    h.sent();
    assert_eq!(h.stack.arp_entries(), 4);
    // A real neighbour still gets resolved.
    h.rx(&ECHO_REQUEST);
    assert_eq!(h.sent(), vec![ARP_REQUEST_FROM_US.to_vec()]);
    h.rx(&ARP_REPLY_FROM_PEER);
    assert_eq!(h.sent(), vec![ECHO_REPLY_EXPECTED.to_vec()]);
    assert_eq!(h.dropped(DropReason::ArpTableFull), 0);
    assert_eq!(h.stack.arp_entries(), 4);
}

// === TCP payload: by reference or copied ===

const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// An Ethernet frame from the peer (10.0.0.2:40000) to us (10.0.0.1:7).
fn tcp_from_peer(seg: &Segment) -> Vec<u8> {
    tcp_between(seg, 40000, 7)
}

/// An Ethernet frame from the peer's port `from` to our port `to`.
fn tcp_between(seg: &Segment, from: u16, to: u16) -> Vec<u8> {
    let tcp_len = tcp_wire::emit_len(seg);
    let mut b = vec![0u8; 14 + 20 + tcp_len];
    b[..14].copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0]);
    let mut ip = Ipv4Packet::new_unchecked(&mut b[14..34]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len((20 + tcp_len) as u16);
    ip.set_hop_limit(64);
    ip.set_next_header(smoltcp::wire::IpProtocol::Tcp);
    ip.set_src_addr(PEER_IP);
    ip.set_dst_addr(OUR_IP);
    ip.fill_checksum();
    tcp_wire::emit(seg, from, to, PEER_IP, OUR_IP, &mut b[34..]);
    b
}

/// Parse (with checksum) what we sent.
fn tcp_to_peer(frame: &[u8]) -> Segment {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert!(ip.verify_checksum());
    tcp_wire::parse(ip.payload(), OUR_IP, PEER_IP, true)
        .expect("valid TCP, checksum over header and attached payload")
        .segment
}

/// A stack with TCP listening on port 7 and one established connection from
/// the peer. Returns the connection and the next sequence numbers (ours,
/// the peer's).
fn tcp_harness(chains: bool, zero_copy: ZeroCopyConfig) -> (Harness, ConnId, Seq, Seq) {
    let mut h = Harness::with(|c| {
        c.ifaces[0].tx_chain = chains;
        c.zero_copy = zero_copy;
    });
    h.pool.chains = chains;
    h.stack.enable_tcp(EngineConfig::default(), h.now);
    h.stack.tcp().unwrap().listen(OUR_IP, 7, 8);
    h.rx(&ARP_REQUEST);
    h.sent();
    let peer_isn = Seq(1000);
    h.rx(&tcp_from_peer(&Segment {
        seq: peer_isn,
        syn: true,
        window: 65535,
        mss: Some(1460),
        ..Default::default()
    }));
    let syn_ack = tcp_to_peer(&h.sent()[0]);
    assert!(syn_ack.syn && syn_ack.ack == Some(peer_isn + 1));
    let ours = syn_ack.seq + 1;
    h.rx(&tcp_from_peer(&Segment {
        seq: peer_isn + 1,
        ack: Some(ours),
        window: 65535,
        ..Default::default()
    }));
    let id = h.stack.tcp().unwrap().accept(OUR_IP, 7).expect("accepted");
    (h, id, ours, peer_isn + 1)
}

fn pattern(n: usize, salt: u8) -> Bytes {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31) ^ salt)
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn tcp_payload_stays_in_its_receive_buffer_and_goes_back_out_attached() {
    let (mut h, id, ours, mut theirs) = tcp_harness(true, ZeroCopyConfig::default());
    let (big, small) = (pattern(1000, 1), pattern(100, 2));
    for p in [&big, &small] {
        h.rx(&tcp_from_peer(&Segment {
            seq: theirs,
            ack: Some(ours),
            window: 65535,
            payload: p.clone(),
            ..Default::default()
        }));
        theirs = theirs + p.len() as u32;
    }
    h.sent(); // ACKs
    let c = &h.stack.stats().copies;
    assert_eq!((c.rx_zero_copy.get(), c.rx_copied_small.get()), (1, 1));
    assert_eq!(c.rx_copied_bytes.get(), 100);
    let tcp = h.stack.tcp().unwrap();
    let (got_big, got_small) = (tcp.recv(id).unwrap(), tcp.recv(id).unwrap());
    assert_eq!((&got_big, &got_small), (&big, &small));
    h.advance(Duration::ZERO);
    assert_eq!(h.stack.stats().copies.rx_buffers_held.get(), 1);

    // Echo both: the big one leaves attached, pointing at the very buffer it
    // arrived in; the small one is copied in behind the headers.
    let tcp = h.stack.tcp().unwrap();
    tcp.send(id, got_big.clone());
    tcp.send(id, got_small.clone());
    h.stack.flush_tcp(h.now, &mut h.pool, &mut h.wire);
    let out = h.sent();
    assert_eq!(out.len(), 2);
    assert_eq!(h.wire.1.len(), 1, "one payload attached");
    assert_eq!(
        h.wire.1[0].as_ptr(),
        got_big.as_ptr(),
        "no copy from RX to TX"
    );
    let (a, b) = (tcp_to_peer(&out[0]), tcp_to_peer(&out[1]));
    assert_eq!((a.payload, b.payload), (big.clone(), small.clone()));
    let c = &h.stack.stats().copies;
    assert_eq!((c.tx_zero_copy.get(), c.tx_copied_small.get()), (1, 1));
    assert_eq!(c.tx_copied_bytes.get(), 100);

    // Once everyone lets go (the peer ACKs, the device frees), the receive
    // buffer is released.
    drop((got_big, got_small));
    h.wire.1.clear();
    h.rx(&tcp_from_peer(&Segment {
        seq: theirs,
        ack: Some(ours + 1100),
        window: 65535,
        ..Default::default()
    }));
    h.advance(Duration::from_millis(1));
    assert_eq!(h.stack.stats().copies.rx_buffers_held.get(), 0);
}

#[test]
fn tcp_payload_is_copied_past_the_hold_limit_and_on_single_segment_devices() {
    let zc = ZeroCopyConfig {
        rx_hold_limit: 1,
        ..ZeroCopyConfig::default()
    };
    let (mut h, id, ours, mut theirs) = tcp_harness(false, zc);
    for salt in 0..3 {
        let p = pattern(600, salt);
        h.rx(&tcp_from_peer(&Segment {
            seq: theirs,
            ack: Some(ours),
            window: 65535,
            payload: p.clone(),
            ..Default::default()
        }));
        theirs = theirs + 600;
    }
    h.sent();
    let c = &h.stack.stats().copies;
    assert_eq!((c.rx_zero_copy.get(), c.rx_copied_hold_limit.get()), (1, 2));
    let tcp = h.stack.tcp().unwrap();
    let first = tcp.recv(id).unwrap();
    assert_eq!(first, pattern(600, 0));
    tcp.send(id, first);
    h.stack.flush_tcp(h.now, &mut h.pool, &mut h.wire);
    let out = h.sent();
    assert_eq!(tcp_to_peer(&out[0]).payload, pattern(600, 0));
    assert!(
        h.wire.1.is_empty(),
        "nothing attached on a single-segment device"
    );
    let c = &h.stack.stats().copies;
    assert_eq!(
        (c.tx_zero_copy.get(), c.tx_copied_single_segment.get()),
        (0, 1)
    );
}

// === Software steering ===

/// Two cores behind a device that delivers everything to core 0, as a
/// single-queue device (or one that spreads flows by a hash we cannot
/// predict) does: ARP is shared, and every TCP segment reaches the core its
/// 4-tuple hashes to, for passive and active opens alike.
#[test]
fn software_steering_brings_each_connection_to_its_core() {
    let key: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(73) ^ 0x5c).collect();
    let mut cores: Vec<Harness> = (0..2u16)
        .map(|q| {
            let st = Steering::with_key(key.clone(), 2, 128, q);
            let mut h = Harness::with(|c| c.ifaces[0].soft_steering = Some(st.clone()));
            h.stack.enable_tcp(
                EngineConfig {
                    steering: vec![(OUR_IP, st)],
                    ..EngineConfig::default()
                },
                h.now,
            );
            h.stack.tcp().unwrap().listen(OUR_IP, 7, 64);
            h
        })
        .collect();
    // Deliver on core 0, then move what it hands off (one hop: a core never
    // hands a frame on again).
    fn deliver(cores: &mut [Harness], frame: &[u8]) {
        cores[0].rx(frame);
        let moved: Vec<_> = cores[0].stack.take_handoffs().collect();
        for h in moved {
            assert_eq!((h.core, h.iface), (1, 0));
            let c = &mut cores[1];
            c.stack
                .receive_handoff(c.now, h.iface, h.frame, &mut c.pool, &mut c.wire);
            assert_eq!(c.stack.take_handoffs().count(), 0);
        }
    }

    // The peer's ARP request is answered once, by core 0; core 1 learns the
    // peer from its copy and never has to ask.
    deliver(&mut cores, &ARP_REQUEST);
    assert_eq!(cores[0].sent(), vec![ARP_REPLY_EXPECTED.to_vec()]);
    assert!(cores[1].sent().is_empty());
    assert_eq!(cores[1].stack.arp_entries(), 1);

    // 64 passive opens from different source ports.
    let st = Steering::with_key(key.clone(), 2, 128, 0);
    let mut owner = [0usize; 2];
    for port in 40000..40064u16 {
        let q = usize::from(st.queue_of((PEER_IP, port), (OUR_IP, 7)));
        owner[q] += 1;
        let syn = Segment {
            seq: Seq(1000),
            syn: true,
            window: 65535,
            mss: Some(1460),
            ..Default::default()
        };
        deliver(&mut cores, &tcp_between(&syn, port, 7));
        let out = cores[q].sent();
        assert_eq!(out.len(), 1, "port {port}: the owner answers");
        assert!(cores[1 - q].sent().is_empty(), "and only the owner");
        let syn_ack = tcp_to_peer(&out[0]);
        deliver(
            &mut cores,
            &tcp_between(
                &Segment {
                    seq: Seq(1001),
                    ack: Some(syn_ack.seq + 1),
                    window: 65535,
                    ..Default::default()
                },
                port,
                7,
            ),
        );
        assert!(cores[q].stack.tcp().unwrap().accept(OUR_IP, 7).is_some());
    }
    assert!(
        owner[0] > 10 && owner[1] > 10,
        "both cores own some: {owner:?}"
    );
    for (q, c) in cores.iter_mut().enumerate() {
        assert_eq!(c.stack.tcp().unwrap().len(), owner[q]);
        assert_eq!(c.stack.stats().tcp.resets_sent.get(), 0);
        assert_eq!(c.stack.stats().arp_requests_tx.get(), 0);
    }

    // An active open on core 1: its replies arrive on core 0 and find it.
    let c1 = &mut cores[1];
    let id = c1
        .stack
        .tcp()
        .unwrap()
        .connect(c1.now, OUR_IP, (PEER_IP, 80))
        .unwrap();
    c1.stack.flush_tcp(c1.now, &mut c1.pool, &mut c1.wire);
    let syn = tcp_to_peer(&cores[1].sent()[0]);
    let local_port = cores[1].stack.tcp().unwrap().tuple(id).unwrap().local.1;
    let syn_ack = Segment {
        seq: Seq(5000),
        ack: Some(syn.seq + 1),
        syn: true,
        window: 65535,
        mss: Some(1460),
        ..Default::default()
    };
    deliver(&mut cores, &tcp_between(&syn_ack, 80, local_port));
    let ev: Vec<_> = std::iter::from_fn(|| cores[1].stack.tcp().unwrap().poll_event()).collect();
    assert!(ev.contains(&crate::tcp::Event::Connected(id)), "{ev:?}");
    assert!(cores[0].stack.stats().steered_out.get() > 64);
    assert_eq!(
        cores[0].stack.stats().steered_out.get(),
        cores[1].stack.stats().steered_in.get()
    );
}

/// Regression (issue 18, point 2): every ARP frame was copied to every
/// core before it was checked, so an ARP flood cost every core. Now only
/// ARP that can teach a core a neighbour is shared.
#[test]
fn only_arp_that_teaches_a_neighbour_is_shared_with_other_cores() {
    let key: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(73) ^ 0x5c).collect();
    let st = Steering::with_key(key, 4, 128, 0);
    let mut h = Harness::with(|c| c.ifaces[0].soft_steering = Some(st));
    // Other hosts' chatter: who has 10.0.0.250, from many senders.
    for sender in 2..200u8 {
        let mut f = ARP_REQUEST.to_vec();
        f[11] = sender; // source MAC
        f[27] = sender; // sender hardware address
        f[31] = sender; // sender protocol address
        f[41] = 250; // target protocol address: 10.0.0.250
        h.rx(&f);
    }
    // Malformed (truncated) and a probe for our address.
    h.rx(&ARP_REQUEST[..30]);
    let mut probe = ARP_REQUEST.to_vec();
    probe[28..32].fill(0);
    h.rx(&probe);
    assert_eq!(h.stack.take_handoffs().count(), 0, "nothing shared");
    assert_eq!(h.stack.stats().arp_not_shared.get(), 198 + 1);
    // A request to us teaches every core its sender: shared with the 3 others.
    h.rx(&ARP_REQUEST);
    assert_eq!(h.stack.take_handoffs().count(), 3);
    assert_eq!(h.stack.stats().steered_out.get(), 3);
}
