//! IPv4: header checks on the way in (the checksum per the device's
//! offload verdict, fragments counted and dropped, addresses that are not
//! ours or make no sense as a source), dispatch by protocol, and on the way
//! out the route lookup, neighbour resolution and our header fields.

use std::net::Ipv4Addr;

use smoltcp::wire::{EthernetAddress, EthernetProtocol, IpProtocol, Ipv4Packet};

use super::ethernet::write_eth;
use super::{ETH_LEN, Handoff, IPV4_MIN, Stack, Transmit};
use crate::frame::{Frame, FramePool, RxChecksum};
use crate::stats::DropReason;
use crate::time::Instant;

impl<F: Frame> Stack<F> {
    pub(super) fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    fn is_ours(&self, ip: Ipv4Addr) -> bool {
        self.ifaces.iter().any(|i| i.addr == ip)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn receive_ipv4<P, T>(
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

    pub(super) fn output<P, T>(
        &mut self,
        now: Instant,
        frame: F,
        dst: Ipv4Addr,
        pool: &mut P,
        tx: &mut T,
    ) where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
        let Some((iface, next_hop)) = self.routes.lookup(dst) else {
            return self.stats.record_drop(DropReason::NoRoute);
        };
        self.output_via(now, frame, iface, next_hop, pool, tx);
    }

    pub(super) fn output_via<P, T>(
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
            Some((EthernetAddress::BROADCAST, false))
        } else {
            self.arp.lookup(now, iface, next_hop)
        };
        if let Some((dst_mac, reconfirm)) = neighbour {
            write_eth(frame.data_mut(), dst_mac, mac, EthernetProtocol::Ipv4);
            self.send(iface, frame, tx);
            // The packet went to the address known; the request checks it
            // is still right before the entry expires.
            if reconfirm {
                self.stats.arp_refreshes.inc();
                self.send_arp_request(iface, next_hop, pool, tx);
            }
            return;
        }
        match self.arp.enqueue(now, iface, next_hop, frame) {
            Ok(true) => self.send_arp_request(iface, next_hop, pool, tx),
            Ok(false) => {}
            Err(why) => self.stats.record_drop(why),
        }
    }
}

/// The header fields of an IPv4 packet we send: a 20-byte header, our ident
/// and TTL, addresses `(src, dst)`, and the checksum over it all, last.
/// Version, TOS and protocol are the caller's.
pub(super) fn write_ipv4(
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
