//! TCP glue between frames and the per-core [`Engine`](crate::tcp::Engine):
//! segments in (checksum per the device's verdict, payload kept in its
//! receive buffer or copied per [`ZeroCopyConfig`](super::ZeroCopyConfig)),
//! segments out (a fresh header buffer, payload attached by reference or
//! copied), and, with software steering, the core that owns a segment's
//! 4-tuple.

use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use bytes::Bytes;
use smoltcp::wire::{IpProtocol, Ipv4Packet};

use super::ipv4::write_ipv4;
use super::{ETH_LEN, IPV4_MIN, Stack, Transmit};
use crate::frame::{Frame, FramePool, RxChecksum};
use crate::stats::DropReason;
use crate::tcp::{FourTuple, Segment, wire as tcp_wire};
use crate::time::Instant;

impl<F: Frame> Stack<F> {
    /// With software steering on `iface`: the core whose queue this TCP
    /// segment's 4-tuple hashes to, if not ours. A header too short to carry
    /// ports stays here and is dropped as malformed.
    pub(super) fn owner_elsewhere(
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
    pub(super) fn receive_tcp<P, T>(
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
