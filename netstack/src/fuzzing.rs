//! Fuzz target body for the frame path: Ethernet, ARP, IPv4 and ICMP, and
//! TCP behind them, through a whole [`Stack`] with an echo service. Shared
//! by the cargo-fuzz target `frames` in `netstack/fuzz` and the test that
//! replays its saved corpus on every `cargo test` (the TCP engine's own
//! targets are in [`crate::tcp::fuzzing`]).
//!
//! The input is a script: a byte of settings, then records, each either a
//! raw frame or a template (ARP, ICMP echo, a TCP segment that tracks the
//! connection's sequence numbers) with fuzzed fields, overwritten bytes and
//! checksums fixed or not, and a time step. The body panics on a broken
//! invariant and on nothing else:
//! - every frame the stack sends is well formed: from our MAC; ARP with our
//!   address as sender; IPv4 from our address, never to a broadcast or
//!   multicast address, with valid header and TCP or ICMP checksums (over
//!   attached payload too); a broadcast MAC only for ARP requests;
//! - a received frame is dropped for at most one reason;
//! - nothing panics (overflow checks are on in the replay test).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, IpProtocol, Ipv4Packet,
};

use crate::rss::Steering;
use crate::tcp::{EngineConfig, Event, Segment, Seq, wire as tcp_wire};
use crate::{
    ArpParams, HeapFrame, HeapPool, IfaceConfig, Instant, RxChecksum, Stack, StackConfig, Transmit,
    ZeroCopyConfig,
};

const US: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
/// The echo service's port, and the remote port the stack connects to.
const ECHO_PORT: u16 = 7;
const REMOTE_PORT: u16 = 8080;

/// Input bytes, read field by field; zeros once exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What went out, checked as it is handed over.
#[derive(Default)]
struct Checked {
    sent: Vec<Vec<u8>>,
}

impl Transmit<HeapFrame> for Checked {
    fn transmit(&mut self, iface: usize, frame: HeapFrame) {
        assert_eq!(iface, 0, "one interface");
        let bytes = frame.into_vec();
        check_sent(&bytes);
        self.sent.push(bytes);
    }
}

fn check_sent(b: &[u8]) {
    let eth = EthernetFrame::new_checked(b).expect("a whole Ethernet header");
    assert_eq!(eth.src_addr(), US, "sent from our MAC");
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let arp = ArpPacket::new_checked(eth.payload()).expect("a whole ARP packet");
            let Ok(ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                ..
            }) = ArpRepr::parse(&arp)
            else {
                panic!("ARP we sent does not parse: {b:02x?}");
            };
            assert_eq!(source_hardware_addr, US);
            assert_eq!(source_protocol_addr, OUR_IP);
            if eth.dst_addr().is_broadcast() {
                assert_eq!(operation, ArpOperation::Request, "only requests broadcast");
            }
        }
        EthernetProtocol::Ipv4 => {
            assert!(
                eth.dst_addr().is_unicast(),
                "IPv4 to a unicast MAC: {b:02x?}"
            );
            let ip = Ipv4Packet::new_checked(eth.payload()).expect("a whole IPv4 packet");
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            assert_eq!(ip.src_addr(), OUR_IP);
            let dst = ip.dst_addr();
            assert!(
                !dst.is_broadcast() && !dst.is_multicast() && !dst.is_unspecified(),
                "never to {dst}"
            );
            assert_eq!(
                usize::from(ip.total_len()),
                eth.payload().len(),
                "no padding on what we send"
            );
            match ip.next_header() {
                IpProtocol::Tcp => {
                    tcp_wire::parse(ip.payload(), OUR_IP, dst, true)
                        .unwrap_or_else(|e| panic!("TCP we sent: {e:?}"));
                }
                IpProtocol::Icmp => {
                    let icmp = Icmpv4Packet::new_checked(ip.payload()).expect("whole ICMP");
                    assert!(icmp.verify_checksum(), "ICMP checksum");
                }
                other => panic!("we never send {other}"),
            }
        }
        other => panic!("we never send ethertype {other}"),
    }
}

/// One peer's view of a TCP flow, learnt from what the stack sent: the
/// next sequence number the stack expects, and how far it has sent.
#[derive(Clone, Copy)]
struct Flow {
    rcv_nxt: Seq,
    snd_nxt: Seq,
}

/// Fill the IPv4 header checksum and the TCP or ICMP one, where the lengths
/// make that possible.
fn fix_checksums(b: &mut [u8]) {
    let Some(ip_bytes) = b.get_mut(14..) else {
        return;
    };
    let Ok(mut ip) = Ipv4Packet::new_checked(ip_bytes) else {
        return;
    };
    ip.fill_checksum();
    let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), ip.next_header());
    let payload = ip.payload_mut();
    match proto {
        IpProtocol::Tcp if payload.len() >= 20 => {
            payload[16] = 0;
            payload[17] = 0;
            let sum = tcp_checksum(src, dst, payload);
            payload[16..18].copy_from_slice(&sum.to_be_bytes());
        }
        IpProtocol::Icmp => {
            if let Ok(mut icmp) = Icmpv4Packet::new_checked(payload) {
                icmp.fill_checksum();
            }
        }
        _ => {}
    }
}

/// The TCP checksum (RFC 9293 §3.1) of `seg` with its checksum field zero.
fn tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, seg: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for w in [src.octets(), dst.octets()] {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
        sum += u64::from(u16::from_be_bytes([w[2], w[3]]));
    }
    sum += 6 + seg.len() as u64;
    for c in seg.chunks(2) {
        sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ethernet(
    dst: EthernetAddress,
    src: EthernetAddress,
    ty: EthernetProtocol,
    len: usize,
) -> Vec<u8> {
    let mut b = vec![0; 14 + len];
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype: ty,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut b[..]));
    b
}

fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    body: &[u8],
    peer: EthernetAddress,
) -> Vec<u8> {
    let mut b = ethernet(US, peer, EthernetProtocol::Ipv4, 20 + body.len());
    let mut ip = Ipv4Packet::new_unchecked(&mut b[14..]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len((20 + body.len()) as u16);
    ip.set_hop_limit(64);
    ip.set_next_header(proto);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.payload_mut().copy_from_slice(body);
    b
}

/// Drops of received frames, leaving out those of packets the stack built
/// (replies waiting for a neighbour, no buffer, no route): one received
/// segment may cause several of those.
fn rx_drops(stack: &Stack<HeapFrame>) -> u64 {
    use crate::DropReason as D;
    D::ALL
        .into_iter()
        .filter(|r| {
            !matches!(
                r,
                D::ArpPendingFull | D::ArpUnresolved | D::ArpTableFull | D::NoBuffer | D::NoRoute
            )
        })
        .map(|r| stack.stats().dropped(r))
        .sum()
}

/// Run the script in `data` (see the module's text).
pub fn frames(data: &[u8]) {
    let mut inp = Input(data);
    let settings = inp.u8();
    let trust = settings & 1 != 0;
    let chains = settings & 2 != 0;
    let cfg = StackConfig {
        ifaces: vec![IfaceConfig {
            mac: US,
            addr: OUR_IP,
            prefix_len: 24,
            gateway: Some(GATEWAY),
            trust_rx_checksum: trust,
            tx_chain: chains,
            soft_steering: (settings & 4 != 0).then(|| Steering::round_robin(2, 128, 0)),
        }],
        ttl: 64,
        arp: ArpParams {
            entry_ttl: Duration::from_secs(2),
            request_interval: Duration::from_millis(200),
            max_requests: 3,
            max_pending_per_neighbor: 4,
            max_pending_total: 16,
            max_entries: 8,
        },
        zero_copy: ZeroCopyConfig {
            rx_min_payload: 16,
            rx_hold_limit: 8,
            tx_min_payload: 16,
        },
    };
    let mut stack: Stack<HeapFrame> = Stack::new(cfg);
    let mut pool = HeapPool::new(usize::from(inp.u8()) + 4);
    pool.chains = chains;
    let mut now = Instant::from_millis(1);
    let ecfg = EngineConfig {
        secret: [7; 16],
        max_connections: 16,
        max_buffered: 64 * 1024,
        ..EngineConfig::default()
    };
    stack.enable_tcp(ecfg, now);
    let tcp = stack.tcp().expect("enabled");
    tcp.listen(OUR_IP, ECHO_PORT, 4);
    if settings & 8 != 0 {
        // An active open, so that the neighbour queue and SYN-SENT are in play.
        tcp.connect(now, OUR_IP, (Ipv4Addr::new(10, 0, 0, 2), REMOTE_PORT));
    }
    let mut tx = Checked::default();
    stack.flush_tcp(now, &mut pool, &mut tx);

    let mut flows: HashMap<(Ipv4Addr, u16, u16), Flow> = HashMap::new();
    let mut steps = 0;
    while !inp.is_empty() && steps < 64 {
        steps += 1;
        let kind = inp.u8();
        let peer_ip = Ipv4Addr::new(10, 0, 0, 2 + inp.u8() % 3);
        let peer_mac = EthernetAddress([2, 0, 0, 0, 0, peer_ip.octets()[3]]);
        let mut frame = match kind % 5 {
            0 => {
                let len = usize::from(inp.u16() % 1600);
                inp.bytes(len).to_vec()
            }
            1 => {
                let op = match inp.u8() % 3 {
                    0 => ArpOperation::Request,
                    1 => ArpOperation::Reply,
                    n => ArpOperation::Unknown(u16::from(n)),
                };
                let target = if inp.u8() & 1 == 0 {
                    OUR_IP
                } else {
                    Ipv4Addr::from(inp.u32())
                };
                let dst = if op == ArpOperation::Request {
                    EthernetAddress::BROADCAST
                } else {
                    US
                };
                let repr = ArpRepr::EthernetIpv4 {
                    operation: op,
                    source_hardware_addr: peer_mac,
                    source_protocol_addr: peer_ip,
                    target_hardware_addr: US,
                    target_protocol_addr: target,
                };
                let mut b = ethernet(dst, peer_mac, EthernetProtocol::Arp, repr.buffer_len());
                repr.emit(&mut ArpPacket::new_unchecked(&mut b[14..]));
                b
            }
            2 => {
                let len = usize::from(inp.u8());
                let mut body = vec![8, 0, 0, 0];
                body.extend_from_slice(&inp.u32().to_be_bytes());
                body.extend_from_slice(inp.bytes(len));
                ipv4(peer_ip, OUR_IP, IpProtocol::Icmp, &body, peer_mac)
            }
            _ => {
                // A TCP segment on one of a few flows, near what the stack
                // expects when it has spoken on that flow.
                let (src_port, dst_port) = match inp.u8() % 3 {
                    0 => (40_000, ECHO_PORT),
                    1 => (40_001, ECHO_PORT),
                    _ => {
                        // Our active open's port, once it has sent a SYN.
                        let ours = flows.keys().find(|k| k.0 == peer_ip && k.1 == REMOTE_PORT);
                        (REMOTE_PORT, ours.map_or_else(|| inp.u16(), |k| k.2))
                    }
                };
                let flow = flows.get(&(peer_ip, src_port, dst_port)).copied();
                let flags = inp.u8();
                let delta = |inp: &mut Input<'_>| (inp.u8() as i8 as i32 * 97) as u32;
                let seq = flow.map_or(Seq(inp.u32()), |f| f.rcv_nxt + delta(&mut inp));
                let ack = flow.map_or(Seq(inp.u32()), |f| f.snd_nxt + delta(&mut inp));
                let len = usize::from(inp.u8()) * 8;
                let payload = Bytes::copy_from_slice(inp.bytes(len));
                let sack_left = ack + delta(&mut inp);
                let seg = Segment {
                    seq,
                    ack: (flags & 1 != 0).then_some(ack),
                    syn: flags & 2 != 0,
                    fin: flags & 4 != 0,
                    rst: flags & 8 != 0,
                    window: inp.u16(),
                    mss: (flags & 16 != 0).then(|| inp.u16()),
                    window_scale: (flags & 32 != 0).then(|| inp.u8() % 16),
                    sack_permitted: flags & 64 != 0,
                    timestamp: (flags & 128 != 0).then(|| (inp.u32(), inp.u32())),
                    sack: [
                        (kind & 0x80 != 0).then(|| (sack_left, sack_left + u32::from(inp.u16()))),
                        None,
                        None,
                    ],
                    payload,
                };
                let mut body = vec![0; tcp_wire::emit_len(&seg)];
                tcp_wire::emit(&seg, src_port, dst_port, peer_ip, OUR_IP, &mut body);
                ipv4(peer_ip, OUR_IP, IpProtocol::Tcp, &body, peer_mac)
            }
        };
        // Damage: a few bytes overwritten, then checksums fixed or not.
        for _ in 0..(kind >> 5) & 3 {
            let at = usize::from(inp.u16());
            let v = inp.u8();
            if !frame.is_empty() {
                let i = at % frame.len();
                frame[i] = v;
            }
        }
        if kind & 0x10 == 0 {
            fix_checksums(&mut frame);
        }
        let mut f = HeapFrame::new(&frame);
        f.ip_checksum = if kind & 0x08 != 0 {
            RxChecksum::Good
        } else {
            RxChecksum::Unknown
        };
        let drops = rx_drops(&stack);
        stack.receive(now, 0, f, &mut pool, &mut tx);
        let dropped = rx_drops(&stack) - drops;
        assert!(dropped <= 1, "one frame dropped {dropped} times");
        drop(stack.take_handoffs());

        // The echo service.
        let tcp = stack.tcp().expect("enabled");
        while let Some(ev) = tcp.poll_event() {
            match ev {
                Event::Incoming { listener } => {
                    tcp.accept(listener.0, listener.1);
                }
                Event::Readable(id) => {
                    while let Some(b) = tcp.recv(id) {
                        tcp.send(id, b);
                    }
                }
                Event::PeerClosed(id) => tcp.close(id),
                _ => {}
            }
        }
        now = now + Duration::from_millis(u64::from(inp.u8()) * 4);
        stack.poll(now, &mut pool, &mut tx);

        // Learn the flows' sequence numbers from what went out.
        for b in tx.sent.drain(..) {
            let Ok(ip) = Ipv4Packet::new_checked(&b[14..]) else {
                continue;
            };
            if ip.next_header() != IpProtocol::Tcp {
                continue;
            }
            let Ok(p) = tcp_wire::parse(ip.payload(), OUR_IP, ip.dst_addr(), true) else {
                continue;
            };
            let s = &p.segment;
            let key = (ip.dst_addr(), p.dst_port, p.src_port);
            if s.rst {
                flows.remove(&key);
                continue;
            }
            let e = flows.entry(key).or_insert(Flow {
                rcv_nxt: s.ack.unwrap_or(Seq(0)),
                snd_nxt: s.seq,
            });
            if let Some(a) = s.ack {
                e.rcv_nxt = a;
            }
            e.snd_nxt = s.seq + s.seq_len();
        }
    }
    // Time goes on: the timers that are due fire, and what they send is
    // well formed too.
    for _ in 0..16 {
        let Some(at) = stack.poll_at() else { break };
        now = now.max(at);
        stack.poll(now, &mut pool, &mut tx);
    }
}

#[cfg(test)]
mod tests {
    /// The corpus cargo-fuzz saved (netstack/fuzz/corpus/frames), replayed
    /// through the same body.
    #[test]
    fn the_saved_frames_corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frames");
        let n = crate::testing::replay_fuzz_corpus(&dir, super::frames);
        assert!(n >= 50, "only {n} saved inputs in {}", dir.display());
    }
}
