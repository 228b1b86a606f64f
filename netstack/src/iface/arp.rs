//! The interface's side of ARP (RFC 826): requests for our addresses are
//! answered in their own buffer, replies and requests teach the neighbour
//! cache (RFC 826's merge; RFC 5227 probes are answered but teach nothing),
//! packets that waited for a neighbour go out once it is known, and our own
//! requests are built here. With software steering, ARP that can teach
//! another core a neighbour (a valid request or reply to us, or a
//! gratuitous announcement, from an on-link unicast sender) is shared with
//! the other cores once checked; other hosts' ARP chatter is not, so an
//! ARP flood costs one core, not every core. The cache itself, its expiry
//! and its bounded waiting queues are [`crate::arp`].

use std::net::Ipv4Addr;

use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetProtocol};

use super::ethernet::write_eth;
use super::{ETH_LEN, Handoff, Stack, Transmit};
use crate::frame::{Frame, FramePool};
use crate::stats::DropReason;
use crate::time::Instant;

const ARP_LEN: usize = 28;

impl<F: Frame> Stack<F> {
    /// With software steering, give every other core a copy of an ARP frame
    /// that teaches a neighbour (requests and replies alike: whichever core
    /// asked, or will need the neighbour, learns it).
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
    /// do not answer again (nor share it).
    pub(super) fn receive_arp<P, T>(
        &mut self,
        now: Instant,
        iface: usize,
        mut frame: F,
        shared: bool,
        pool: &mut P,
        tx: &mut T,
    ) where
        P: FramePool<Frame = F>,
        T: Transmit<F>,
    {
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
        // What may teach another core a neighbour it holds or asked for:
        // checked, from an on-link sender, to us or announcing itself.
        let teaches = !probe && on_link && (tpa == ifc.addr || spa == tpa);
        if !shared && ifc.soft_steering.is_some() {
            if teaches {
                self.share_arp(iface, &frame, pool);
            } else {
                self.stats.arp_not_shared.inc();
            }
        }
        let ifc = &self.ifaces[iface];
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

    pub(super) fn send_arp_request<P, T>(
        &mut self,
        iface: usize,
        target: Ipv4Addr,
        pool: &mut P,
        tx: &mut T,
    ) where
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
}
