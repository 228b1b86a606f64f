//! Ethernet: the frame checks and the dispatch by ethertype on the way in,
//! the Ethernet header and the hand-off to [`Transmit`] on the way out.

use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol};

use super::{Stack, Transmit};
use crate::frame::{Frame, FramePool};
use crate::stats::DropReason;
use crate::time::Instant;

impl<F: Frame> Stack<F> {
    pub(super) fn receive_frame<P, T>(
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
            EthernetProtocol::Arp => self.receive_arp(now, iface, frame, handed, pool, tx),
            EthernetProtocol::Ipv4 => {
                self.receive_ipv4(now, iface, frame, l2_broadcast, handed, pool, tx)
            }
            _ => self.stats.record_drop(DropReason::EthUnsupportedType),
        }
    }

    #[inline]
    pub(super) fn send<T: Transmit<F>>(&mut self, iface: usize, frame: F, tx: &mut T) {
        self.stats.tx_frames.inc();
        tx.transmit(iface, frame);
    }
}

pub(super) fn write_eth(
    data: &mut [u8],
    dst: EthernetAddress,
    src: EthernetAddress,
    ty: EthernetProtocol,
) {
    let mut eth = EthernetFrame::new_unchecked(data);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    eth.set_ethertype(ty);
}
