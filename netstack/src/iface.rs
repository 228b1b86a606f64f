//! One core's IPv4 host stack over Ethernet: receive, answer, resolve, route.

use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet,
};

use crate::arp::{ArpCache, Due};
use crate::frame::{Frame, FramePool, RxChecksum};
use crate::route::RouteTable;
use crate::rss::Steering;
use crate::stats::{DropReason, Stats};
use crate::tcp::{Engine, EngineConfig, FourTuple, Segment, wire as tcp_wire};
use crate::time::Instant;

const ETH_LEN: usize = 14;
const ARP_LEN: usize = 28;
const IPV4_MIN: usize = 20;

/// Where the stack sends frames. The caller batches them per port queue.
pub trait Transmit<F> {
    fn transmit(&mut self, iface: usize, frame: F);
}

/// One interface: a port's MAC and its IPv4 address.
#[derive(Debug, Clone)]
pub struct IfaceConfig {
    pub mac: EthernetAddress,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// Default route via this interface.
    pub gateway: Option<Ipv4Addr>,
    /// Trust the device's RX checksum verdict when it gives one (offload);
    /// otherwise every header is checked in software.
    pub trust_rx_checksum: bool,
    /// The device sends chained buffers (multi-segment TX): TCP payload is
    /// attached behind the headers instead of copied.
    pub tx_chain: bool,
    /// Software steering, for devices that cannot spread flows by RSS: TCP
    /// segments whose 4-tuple hashes to another core's queue are handed to
    /// that core ([`Stack::take_handoffs`]), and every ARP frame is shared
    /// with the other cores so that each learns its neighbours.
    pub soft_steering: Option<Steering>,
}

/// A frame received here that belongs to another core (software steering).
/// The caller moves it there, where it goes to [`Stack::receive_handoff`].
#[derive(Debug)]
pub struct Handoff<F> {
    pub core: u16,
    pub iface: usize,
    pub frame: F,
}

/// When payload is passed by reference rather than copied.
#[derive(Debug, Clone)]
pub struct ZeroCopyConfig {
    /// Received TCP payload of at least this many bytes stays in its buffer
    /// and is handed out as a slice of it. Smaller payload is copied: holding
    /// a 2 KiB buffer for a few bytes would waste the pool.
    pub rx_min_payload: usize,
    /// At most this many received buffers held by payload at once (in
    /// receive and reassembly queues, or being sent on); past it payload is
    /// copied, so the RX pool never runs dry because data waits unread.
    pub rx_hold_limit: usize,
    /// Payload of at least this many bytes is attached to the header buffer
    /// by reference on devices that chain; smaller is copied (a second
    /// buffer costs more than copying a few bytes).
    pub tx_min_payload: usize,
}

impl Default for ZeroCopyConfig {
    fn default() -> Self {
        ZeroCopyConfig {
            rx_min_payload: 512,
            rx_hold_limit: 4096,
            tx_min_payload: 512,
        }
    }
}

/// Neighbour resolution parameters.
#[derive(Debug, Clone)]
pub struct ArpParams {
    pub entry_ttl: Duration,
    pub request_interval: Duration,
    pub max_requests: u32,
    pub max_pending_per_neighbor: usize,
    pub max_pending_total: usize,
    pub max_entries: usize,
}

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub ifaces: Vec<IfaceConfig>,
    /// TTL of packets we originate.
    pub ttl: u8,
    pub arp: ArpParams,
    pub zero_copy: ZeroCopyConfig,
}

#[derive(Debug)]
struct Iface {
    mac: EthernetAddress,
    addr: Ipv4Addr,
    mask: u32,
    broadcast: Ipv4Addr,
    trust_rx_checksum: bool,
    tx_chain: bool,
    soft_steering: Option<Steering>,
}

impl Iface {
    /// A host address of this interface's subnet (not its network or
    /// broadcast address, except on a /31 where both are hosts, RFC 3021).
    fn on_link(&self, ip: Ipv4Addr) -> bool {
        let in_subnet = (u32::from(ip) ^ u32::from(self.addr)) & self.mask == 0;
        let network = Ipv4Addr::from(u32::from(self.addr) & self.mask);
        in_subnet && (self.mask == !1 || (ip != self.broadcast && ip != network))
    }
}

/// The L2/L3 stack of one core. See the crate docs for its contract.
#[derive(Debug)]
pub struct Stack<F> {
    ifaces: Vec<Iface>,
    routes: RouteTable,
    arp: ArpCache<F>,
    stats: Arc<Stats>,
    ttl: u8,
    ident: u16,
    due: Vec<Due>,
    tcp: Option<Engine>,
    zero_copy: ZeroCopyConfig,
    /// Received buffers kept alive by payload handed out (shared with the
    /// `Bytes` owners, which may be dropped on any thread).
    rx_held: Arc<AtomicUsize>,
    handoffs: Vec<Handoff<F>>,
}

impl<F: Frame> Stack<F> {
    pub fn new(cfg: StackConfig) -> Self {
        let mut routes = RouteTable::default();
        let mut ifaces = Vec::with_capacity(cfg.ifaces.len());
        for (i, c) in cfg.ifaces.iter().enumerate() {
            let mask = if c.prefix_len == 0 {
                0
            } else {
                u32::MAX << (32 - c.prefix_len.min(32))
            };
            // A /32 or /31 has no broadcast address of its own (RFC 3021).
            let broadcast = if c.prefix_len >= 31 {
                Ipv4Addr::BROADCAST
            } else {
                Ipv4Addr::from(u32::from(c.addr) | !mask)
            };
            routes.add_iface(i, c.addr, c.prefix_len, c.gateway);
            ifaces.push(Iface {
                mac: c.mac,
                addr: c.addr,
                mask,
                broadcast,
                trust_rx_checksum: c.trust_rx_checksum,
                tx_chain: c.tx_chain,
                soft_steering: c.soft_steering.clone(),
            });
        }
        Stack {
            ifaces,
            routes,
            arp: ArpCache::new(cfg.arp),
            stats: Arc::new(Stats::default()),
            ttl: cfg.ttl,
            ident: 0,
            due: Vec::new(),
            tcp: None,
            zero_copy: cfg.zero_copy,
            rx_held: Arc::new(AtomicUsize::new(0)),
            handoffs: Vec::new(),
        }
    }

    /// Terminate TCP on this stack's addresses with `cfg`.
    pub fn enable_tcp(&mut self, cfg: EngineConfig, now: Instant) {
        self.tcp = Some(Engine::new(cfg, now));
    }

    /// The TCP engine, for listening, connecting and the event loop. After
    /// calls that may produce segments (send, recv, close...), call
    /// [`Stack::flush_tcp`].
    pub fn tcp(&mut self) -> Option<&mut Engine> {
        self.tcp.as_mut()
    }

    /// The address of ours that packets to `dst` leave from (that of the
    /// interface its route goes out of), if there is a route.
    pub fn source_addr(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let (iface, _) = self.routes.lookup(dst)?;
        Some(self.ifaces[iface].addr)
    }

    /// This core's counters; clone the `Arc` to read them from another thread.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The device's checksum verdict if this interface trusts its offload,
    /// else "unknown" (verify in software).
    fn device_verdict(&self, iface: usize, verdict: RxChecksum) -> RxChecksum {
        if self.ifaces[iface].trust_rx_checksum {
            verdict
        } else {
            RxChecksum::Unknown
        }
    }

    fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    fn is_ours(&self, ip: Ipv4Addr) -> bool {
        self.ifaces.iter().any(|i| i.addr == ip)
    }

    /// Handle one frame received on interface `iface`. Replies go to `tx`, or
    /// wait for ARP; `pool` supplies buffers for ARP requests. With software
    /// steering, frames for other cores are set aside: see
    /// [`Stack::take_handoffs`].
    pub fn receive<P, T>(&mut self, now: Instant, iface: usize, frame: F, pool: &mut P, tx: &mut T)
    where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        self.stats.rx_frames.inc();
        self.receive_frame(now, iface, frame, false, pool, tx);
    }

    /// Handle a frame another core received and handed here (software
    /// steering): a TCP segment of a connection this core owns, or a copy of
    /// an ARP frame, which teaches but is not answered again.
    pub fn receive_handoff<P, T>(
        &mut self,
        now: Instant,
        iface: usize,
        frame: F,
        pool: &mut P,
        tx: &mut T,
    ) where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        self.stats.steered_in.inc();
        self.receive_frame(now, iface, frame, true, pool, tx);
    }

    /// Frames set aside for other cores since the last call.
    pub fn take_handoffs(&mut self) -> std::vec::Drain<'_, Handoff<F>> {
        self.handoffs.drain(..)
    }

    fn receive_frame<P, T>(
        &mut self,
        now: Instant,
        iface: usize,
        frame: F,
        handed: bool,
        pool: &mut P,
        tx: &mut T,
    ) where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        let Some(ifc) = self.ifaces.get(iface) else {
            return self.stats.record_drop(DropReason::EthNotForUs);
        };
        let Ok(eth) = EthernetFrame::new_checked(frame.data()) else {
            return self.stats.record_drop(DropReason::EthTruncated);
        };
        let dst = eth.dst_addr();
        if dst != ifc.mac && !dst.is_broadcast() {
            return self.stats.record_drop(DropReason::EthNotForUs);
        }
        if !eth.src_addr().is_unicast() {
            return self.stats.record_drop(DropReason::EthBadSource);
        }
        let l2_broadcast = dst.is_broadcast();
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                if !handed {
                    self.share_arp(iface, &frame, pool);
                }
                self.receive_arp(now, iface, frame, handed, tx)
            }
            EthernetProtocol::Ipv4 => {
                self.receive_ipv4(now, iface, frame, l2_broadcast, handed, pool, tx)
            }
            _ => self.stats.record_drop(DropReason::EthUnsupportedType),
        }
    }

    /// With software steering, give every other core a copy of an ARP frame
    /// (requests and replies alike: whichever core asked, or will need the
    /// neighbour, learns it).
    fn share_arp<P: FramePool<Frame = F>>(&mut self, iface: usize, frame: &F, pool: &mut P) {
        let Some(st) = &self.ifaces[iface].soft_steering else {
            return;
        };
        let (me, cores) = (st.queue(), st.queues());
        for core in (0..cores).filter(|&c| c != me) {
            let len = frame.data().len();
            let Some(mut copy) = pool.alloc() else {
                self.stats.record_drop(DropReason::NoBuffer);
                continue;
            };
            let Some(room) = copy.append(len) else {
                self.stats.record_drop(DropReason::NoBuffer);
                continue;
            };
            room.copy_from_slice(frame.data());
            self.stats.steered_out.inc();
            self.handoffs.push(Handoff {
                core,
                iface,
                frame: copy,
            });
        }
    }

    /// `shared`: a copy another core received and answered; learn from it,
    /// do not answer again.
    fn receive_arp<T: Transmit<F>>(
        &mut self,
        now: Instant,
        iface: usize,
        mut frame: F,
        shared: bool,
        tx: &mut T,
    ) {
        let ifc = &self.ifaces[iface];
        let Ok(pkt) = ArpPacket::new_checked(&frame.data()[ETH_LEN..]) else {
            return self.arp_drop(shared, DropReason::ArpMalformed);
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_protocol_addr: tpa,
            ..
        }) = ArpRepr::parse(&pkt)
        else {
            return self.arp_drop(shared, DropReason::ArpMalformed);
        };
        if !sha.is_unicast() {
            return self.arp_drop(shared, DropReason::ArpBadSender);
        }
        if spa == ifc.addr && sha != ifc.mac {
            return self.arp_drop(shared, DropReason::ArpAddressConflict);
        }
        // An RFC 5227 probe (sender 0.0.0.0) asking for our address gets a reply
        // but teaches us nothing.
        let probe = spa.is_unspecified();
        let on_link = ifc.on_link(spa);
        if tpa != ifc.addr {
            if on_link {
                // RFC 826 merge: refresh an entry we already have.
                if let Some(waiting) = self.arp.learn(now, iface, spa, sha, false) {
                    self.flush_waiting(iface, sha, waiting, tx);
                }
            }
            return self.arp_drop(shared, DropReason::ArpNotForUs);
        }
        if !on_link && !probe {
            return self.arp_drop(shared, DropReason::ArpBadSender);
        }
        match operation {
            ArpOperation::Request => {
                if !probe && let Some(waiting) = self.arp.learn(now, iface, spa, sha, true) {
                    self.flush_waiting(iface, sha, waiting, tx);
                }
                if shared {
                    return; // the core that received it answers
                }
                self.stats.arp_requests_rx.inc();
                // Answer in place: the request's buffer becomes the reply.
                let ifc = &self.ifaces[iface];
                let reply = ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_hardware_addr: ifc.mac,
                    source_protocol_addr: ifc.addr,
                    target_hardware_addr: sha,
                    target_protocol_addr: spa,
                };
                let mac = ifc.mac;
                frame.truncate(ETH_LEN + ARP_LEN);
                let data = frame.data_mut();
                write_eth(data, sha, mac, EthernetProtocol::Arp);
                reply.emit(&mut ArpPacket::new_unchecked(&mut data[ETH_LEN..]));
                self.stats.arp_replies_tx.inc();
                self.send(iface, frame, tx);
            }
            ArpOperation::Reply => {
                if !shared {
                    self.stats.arp_replies_rx.inc();
                }
                // Only solicited replies create entries (as Linux with arp_accept=0).
                if !probe && let Some(waiting) = self.arp.learn(now, iface, spa, sha, false) {
                    self.flush_waiting(iface, sha, waiting, tx);
                }
            }
            _ => self.arp_drop(shared, DropReason::ArpUnsupportedOp),
        }
    }

    /// Count an ARP drop once: not again for the copies other cores get.
    fn arp_drop(&self, shared: bool, why: DropReason) {
        if !shared {
            self.stats.record_drop(why);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn receive_ipv4<P, T>(
        &mut self,
        now: Instant,
        iface: usize,
        mut frame: F,
        l2_broadcast: bool,
        handed: bool,
        pool: &mut P,
        tx: &mut T,
    ) where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        if !handed {
            self.stats.ipv4_rx.inc(); // counted once, by the core that received it
        }
        let Ok(ip) = Ipv4Packet::new_checked(&frame.data()[ETH_LEN..]) else {
            return self.stats.record_drop(DropReason::Ipv4Malformed);
        };
        if ip.version() != 4 {
            return self.stats.record_drop(DropReason::Ipv4BadVersion);
        }
        match self.device_verdict(iface, frame.rx_ipv4_checksum()) {
            RxChecksum::Good => self.stats.rx_checksum_offloaded.inc(),
            RxChecksum::Bad => return self.stats.record_drop(DropReason::Ipv4BadChecksum),
            RxChecksum::Unknown if !ip.verify_checksum() => {
                return self.stats.record_drop(DropReason::Ipv4BadChecksum);
            }
            RxChecksum::Unknown => {}
        }
        if ip.more_frags() || ip.frag_offset() != 0 {
            return self.stats.record_drop(DropReason::Ipv4Fragment);
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if !self.is_ours(dst) {
            let ifc = &self.ifaces[iface];
            let why = if dst.is_broadcast() || dst == ifc.broadcast || dst.is_multicast() {
                DropReason::Ipv4Broadcast
            } else {
                DropReason::Ipv4NotForUs
            };
            return self.stats.record_drop(why);
        }
        if l2_broadcast {
            return self.stats.record_drop(DropReason::Ipv4UnicastInL2Broadcast);
        }
        if src.is_broadcast()
            || src.is_multicast()
            || src.is_unspecified()
            || src.is_loopback()
            || self.is_ours(src)
            || src == self.ifaces[iface].broadcast
        {
            return self.stats.record_drop(DropReason::Ipv4BadSource);
        }
        let header_len = usize::from(ip.header_len());
        let total_len = usize::from(ip.total_len());
        let protocol = ip.next_header();
        // Drop Ethernet padding past the IP datagram.
        frame.truncate(ETH_LEN + total_len);
        match protocol {
            IpProtocol::Icmp => self.receive_icmp(now, frame, header_len, src, dst, pool, tx),
            IpProtocol::Tcp if self.tcp.is_some() => {
                if !handed
                    && let Some(core) = self.owner_elsewhere(iface, &frame, header_len, src, dst)
                {
                    self.stats.steered_out.inc();
                    self.handoffs.push(Handoff { core, iface, frame });
                    return;
                }
                self.receive_tcp(now, iface, frame, header_len, src, dst, pool, tx)
            }
            _ => self.stats.record_drop(DropReason::Ipv4UnsupportedProtocol),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn receive_icmp<P, T>(
        &mut self,
        now: Instant,
        mut frame: F,
        header_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        pool: &mut P,
        tx: &mut T,
    ) where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        let l4 = ETH_LEN + header_len;
        let Ok(icmp) = Icmpv4Packet::new_checked(&frame.data()[l4..]) else {
            return self.stats.record_drop(DropReason::IcmpMalformed);
        };
        if !icmp.verify_checksum() {
            return self.stats.record_drop(DropReason::IcmpBadChecksum);
        }
        if icmp.msg_type() != Icmpv4Message::EchoRequest || icmp.msg_code() != 0 {
            return self.stats.record_drop(DropReason::IcmpUnsupportedType);
        }
        self.stats.icmp_echo_rx.inc();

        // The reply reuses the request's buffer. IP options are not echoed:
        // move the ICMP message up against a plain 20-byte header.
        let icmp_len = frame.data().len() - l4;
        if header_len > IPV4_MIN {
            frame.data_mut().copy_within(l4.., ETH_LEN + IPV4_MIN);
            frame.truncate(ETH_LEN + IPV4_MIN + icmp_len);
        }
        let (ident, ttl) = (self.next_ident(), self.ttl);
        let data = frame.data_mut();
        {
            let mut icmp = Icmpv4Packet::new_unchecked(&mut data[ETH_LEN + IPV4_MIN..]);
            icmp.set_msg_type(Icmpv4Message::EchoReply);
            icmp.fill_checksum();
        }
        // Version, TOS and protocol stay as the request had them.
        let mut ip = Ipv4Packet::new_unchecked(&mut data[ETH_LEN..]);
        write_ipv4(&mut ip, IPV4_MIN + icmp_len, ident, ttl, (dst, src), false);
        self.stats.icmp_echo_tx.inc();
        self.output(now, frame, src, pool, tx);
    }

    /// With software steering on `iface`: the core whose queue this TCP
    /// segment's 4-tuple hashes to, if not ours. A header too short to carry
    /// ports stays here and is dropped as malformed.
    fn owner_elsewhere(
        &self,
        iface: usize,
        frame: &F,
        header_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Option<u16> {
        let st = self.ifaces[iface].soft_steering.as_ref()?;
        let at = ETH_LEN + header_len;
        let ports = frame.data().get(at..at + 4)?;
        let remote = (src, u16::from_be_bytes([ports[0], ports[1]]));
        let local = (dst, u16::from_be_bytes([ports[2], ports[3]]));
        let q = st.queue_of(remote, local);
        (q != st.queue()).then_some(q)
    }

    #[allow(clippy::too_many_arguments)]
    fn receive_tcp<P, T>(
        &mut self,
        now: Instant,
        iface: usize,
        frame: F,
        header_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        pool: &mut P,
        tx: &mut T,
    ) where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        let device_says = self.device_verdict(iface, frame.rx_l4_checksum());
        if device_says == RxChecksum::Bad {
            return self.stats.record_drop(DropReason::TcpBadChecksum);
        }
        let verify = device_says != RxChecksum::Good;
        let l4 = ETH_LEN + header_len;
        let parsed = tcp_wire::parse_header(&frame.data()[l4..], src, dst, verify);
        let p = match parsed {
            Ok((mut p, payload)) => {
                if !payload.is_empty() {
                    let range = l4 + payload.start..l4 + payload.end;
                    p.segment.payload = self.take_payload(frame, range);
                }
                p
            }
            Err(tcp_wire::WireError::BadChecksum) => {
                return self.stats.record_drop(DropReason::TcpBadChecksum);
            }
            Err(_) => return self.stats.record_drop(DropReason::TcpMalformed),
        };
        if let Some(e) = self.tcp.as_mut() {
            e.handle_segment(now, (dst, p.dst_port), (src, p.src_port), p.segment);
        }
        self.flush_tcp(now, pool, tx);
    }

    /// Received payload at `range` of `frame`, as `Bytes`: a slice of the
    /// frame itself (which it keeps alive) when the payload is big enough and
    /// the hold limit allows, else a copy.
    fn take_payload(&mut self, frame: F, range: Range<usize>) -> Bytes {
        let c = &self.stats.copies;
        let len = range.len();
        let copy = if len < self.zero_copy.rx_min_payload {
            &c.rx_copied_small
        } else if self.rx_held.load(Relaxed) >= self.zero_copy.rx_hold_limit {
            &c.rx_copied_hold_limit
        } else {
            c.rx_zero_copy.inc();
            self.rx_held.fetch_add(1, Relaxed);
            return Bytes::from_owner(HeldFrame {
                frame,
                range,
                held: self.rx_held.clone(),
            });
        };
        copy.inc();
        c.rx_copied_bytes.add(len as u64);
        Bytes::copy_from_slice(&frame.data()[range])
    }

    /// Send whatever the TCP engine has to send: each segment gets a fresh
    /// buffer for its headers, then its payload attached by reference (on
    /// devices that chain) or copied in, and the usual route and ARP
    /// resolution.
    pub fn flush_tcp<P, T>(&mut self, now: Instant, pool: &mut P, tx: &mut T)
    where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        loop {
            let Some((t, seg)) = self.tcp.as_mut().and_then(|e| e.poll_transmit(now)) else {
                return;
            };
            let Some((iface, next_hop)) = self.routes.lookup(t.remote.0) else {
                self.stats.record_drop(DropReason::NoRoute);
                continue;
            };
            let Some(frame) = self.build_tcp(t, &seg, iface, pool) else {
                self.stats.record_drop(DropReason::NoBuffer);
                continue;
            };
            self.output_via(now, frame, iface, next_hop, pool, tx);
        }
    }

    /// One TCP segment in a fresh frame, without its Ethernet addresses.
    fn build_tcp<P>(&mut self, t: FourTuple, seg: &Segment, iface: usize, pool: &mut P) -> Option<F>
    where
        P: FramePool<Frame = F>,
    {
        let header = tcp_wire::header_len(seg);
        let n = seg.payload.len();
        let total = IPV4_MIN + header + n;
        let mut frame = pool.alloc()?;
        let (ident, ttl) = (self.next_ident(), self.ttl);
        let data = frame.append(ETH_LEN + IPV4_MIN + header)?;
        let mut ip = Ipv4Packet::new_unchecked(&mut data[ETH_LEN..ETH_LEN + IPV4_MIN]);
        ip.set_version(4);
        ip.set_next_header(IpProtocol::Tcp);
        write_ipv4(&mut ip, total, ident, ttl, (t.local.0, t.remote.0), true);
        let (local, remote) = (t.local, t.remote);
        let tcp = &mut data[ETH_LEN + IPV4_MIN..];
        tcp_wire::emit_header(seg, local.1, remote.1, local.0, remote.0, tcp);
        if n == 0 {
            return Some(frame);
        }
        let c = &self.stats.copies;
        let by_reference = self.ifaces[iface].tx_chain && n >= self.zero_copy.tx_min_payload;
        if by_reference && frame.attach(&seg.payload) {
            c.tx_zero_copy.inc();
            return Some(frame);
        }
        frame.append(n)?.copy_from_slice(&seg.payload);
        if by_reference {
            c.tx_copied_unattachable.inc();
        } else if self.ifaces[iface].tx_chain {
            c.tx_copied_small.inc();
        } else {
            c.tx_copied_single_segment.inc();
        }
        c.tx_copied_bytes.add(n as u64);
        Some(frame)
    }

    fn output<P, T>(&mut self, now: Instant, frame: F, dst: Ipv4Addr, pool: &mut P, tx: &mut T)
    where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        let Some((iface, next_hop)) = self.routes.lookup(dst) else {
            return self.stats.record_drop(DropReason::NoRoute);
        };
        self.output_via(now, frame, iface, next_hop, pool, tx);
    }

    fn output_via<P, T>(
        &mut self,
        now: Instant,
        mut frame: F,
        iface: usize,
        next_hop: Ipv4Addr,
        pool: &mut P,
        tx: &mut T,
    ) where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        let ifc = &self.ifaces[iface];
        let mac = ifc.mac;
        let neighbour = if next_hop.is_broadcast() || next_hop == ifc.broadcast {
            Some(EthernetAddress::BROADCAST)
        } else {
            self.arp.lookup(now, iface, next_hop)
        };
        if let Some(dst_mac) = neighbour {
            write_eth(frame.data_mut(), dst_mac, mac, EthernetProtocol::Ipv4);
            return self.send(iface, frame, tx);
        }
        match self.arp.enqueue(now, iface, next_hop, frame) {
            Ok(true) => self.send_arp_request(iface, next_hop, pool, tx),
            Ok(false) => {}
            Err(why) => self.stats.record_drop(why),
        }
    }

    fn send_arp_request<P, T>(&mut self, iface: usize, target: Ipv4Addr, pool: &mut P, tx: &mut T)
    where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        let ifc = &self.ifaces[iface];
        let Some(mut frame) = pool.alloc() else {
            return self.stats.record_drop(DropReason::NoBuffer);
        };
        let Some(data) = frame.append(ETH_LEN + ARP_LEN) else {
            return self.stats.record_drop(DropReason::NoBuffer);
        };
        write_eth(
            data,
            EthernetAddress::BROADCAST,
            ifc.mac,
            EthernetProtocol::Arp,
        );
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: ifc.mac,
            source_protocol_addr: ifc.addr,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        }
        .emit(&mut ArpPacket::new_unchecked(&mut data[ETH_LEN..]));
        self.stats.arp_requests_tx.inc();
        self.send(iface, frame, tx);
    }

    fn flush_waiting<T: Transmit<F>>(
        &mut self,
        iface: usize,
        dst: EthernetAddress,
        waiting: impl IntoIterator<Item = F>,
        tx: &mut T,
    ) {
        let src = self.ifaces[iface].mac;
        for mut frame in waiting {
            write_eth(frame.data_mut(), dst, src, EthernetProtocol::Ipv4);
            self.send(iface, frame, tx);
        }
    }

    #[inline]
    fn send<T: Transmit<F>>(&mut self, iface: usize, frame: F, tx: &mut T) {
        self.stats.tx_frames.inc();
        tx.transmit(iface, frame);
    }

    /// Run timers that are due: ARP retransmissions and give-ups. Call when
    /// [`Stack::poll_at`] has passed (calling more often is harmless).
    pub fn poll<P, T>(&mut self, now: Instant, pool: &mut P, tx: &mut T)
    where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        if let Some(e) = self.tcp.as_mut() {
            e.handle_timeout(now);
            self.stats.tcp.publish(e.stats(), e.len());
        }
        let held = self.rx_held.load(Relaxed) as u64;
        self.stats.copies.rx_buffers_held.set(held);
        self.flush_tcp(now, pool, tx);
        let mut due = std::mem::take(&mut self.due);
        self.arp.poll(now, &mut due);
        for d in &due {
            match *d {
                Due::Request(iface, ip) => self.send_arp_request(iface, ip, pool, tx),
                Due::Unresolved(n) => {
                    for _ in 0..n {
                        self.stats.record_drop(DropReason::ArpUnresolved);
                    }
                }
            }
        }
        self.due = due;
    }

    /// When [`Stack::poll`] next has work, if ever.
    #[must_use]
    pub fn poll_at(&self) -> Option<Instant> {
        let tcp = self.tcp.as_ref().and_then(|e| e.poll_timeout());
        [self.arp.poll_at(), tcp].into_iter().flatten().min()
    }

    #[cfg(test)]
    pub(crate) fn arp_entries(&self) -> usize {
        self.arp.len()
    }
}

/// The header fields of an IPv4 packet we send: a 20-byte header, our ident
/// and TTL, addresses `(src, dst)`, and the checksum over it all, last.
/// Version, TOS and protocol are the caller's.
fn write_ipv4(
    ip: &mut Ipv4Packet<&mut [u8]>,
    total_len: usize,
    ident: u16,
    ttl: u8,
    (src, dst): (Ipv4Addr, Ipv4Addr),
    dont_frag: bool,
) {
    ip.set_header_len(IPV4_MIN as u8);
    ip.set_total_len(total_len as u16);
    ip.set_ident(ident);
    ip.clear_flags();
    ip.set_dont_frag(dont_frag);
    ip.set_hop_limit(ttl);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
}

/// The owner behind received payload handed out without a copy: the frame
/// itself, released (and the hold count lowered) when the last `Bytes`
/// slice of it goes.
struct HeldFrame<F> {
    frame: F,
    range: Range<usize>,
    held: Arc<AtomicUsize>,
}

impl<F: Frame> AsRef<[u8]> for HeldFrame<F> {
    fn as_ref(&self) -> &[u8] {
        &self.frame.data()[self.range.clone()]
    }
}

impl<F> Drop for HeldFrame<F> {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Relaxed);
    }
}

fn write_eth(data: &mut [u8], dst: EthernetAddress, src: EthernetAddress, ty: EthernetProtocol) {
    let mut eth = EthernetFrame::new_unchecked(data);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    eth.set_ethertype(ty);
}
