//! ICMP echo: a request is answered in its own buffer, without the
//! request's IP options; every other ICMP message is counted and dropped.

use std::net::Ipv4Addr;

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, Ipv4Packet};

use super::ipv4::write_ipv4;
use super::{ETH_LEN, IPV4_MIN, Stack, Transmit};
use crate::frame::{Frame, FramePool};
use crate::stats::DropReason;
use crate::time::Instant;

impl<F: Frame> Stack<F> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn receive_icmp<P, T>(
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
}
