//! One core's IPv4 host stack over Ethernet: receive, answer, resolve, route.
//!
//! This file holds the configuration, the [`Stack`] and its public API; the
//! layers live beside it, split the way smoltcp splits its interface:
//! - `ethernet`: frame checks and dispatch, the Ethernet header;
//! - `arp`: answering, learning and asking (RFC 826), sharing ARP frames
//!   between cores (the cache is [`crate::arp`]);
//! - `ipv4`: IPv4 checks and dispatch, routing and output;
//! - `icmp`: echo;
//! - `tcp`: segments between frames and the TCP engine, zero-copy payload,
//!   software steering.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use smoltcp::wire::EthernetAddress;

use crate::arp::{ArpCache, Due};
use crate::frame::{Frame, FramePool, RxChecksum};
use crate::route::RouteTable;
use crate::rss::Steering;
use crate::stats::{DropReason, Stats};
use crate::tcp::{Engine, EngineConfig};
use crate::time::Instant;

mod arp;
mod ethernet;
mod icmp;
mod ipv4;
mod tcp;

const ETH_LEN: usize = 14;
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
                Due::Lost => self.stats.arp_neighbours_lost.inc(),
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
