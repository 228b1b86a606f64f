//! Our connection against smoltcp's TCP socket (an implementation we did not
//! write), over the seeded impairing link, as real IPv4 packets. Both
//! directions of open: we connect to a smoltcp listener, and a smoltcp client
//! connects to us.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Packet, Ipv4Repr};

use super::sim::{Impair, Link, Rng, cfg, pattern};
use super::{CloseReason, Connection, Seq, State, wire};
use crate::Instant;

const OURS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const THEIRS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const OUR_PORT: u16 = 40_000;
const THEIR_PORT: u16 = 80;

/// smoltcp's side of the wire: IP packets in and out.
#[derive(Default)]
struct Wire {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push(b);
        r
    }
}

impl Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _: SInstant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }
    fn transmit(&mut self, _: SInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = 1500;
        c
    }
}

fn s_now(now: Instant) -> SInstant {
    SInstant::from_micros(now.as_micros() as i64)
}

/// Our segment as an IPv4 packet from us to them.
fn encode(seg: &super::Segment) -> Vec<u8> {
    let tcp_len = wire::emit_len(seg);
    let ip = Ipv4Repr {
        src_addr: OURS,
        dst_addr: THEIRS,
        next_header: IpProtocol::Tcp,
        payload_len: tcp_len,
        hop_limit: 64,
    };
    let mut buf = vec![0u8; ip.buffer_len() + tcp_len];
    ip.emit(
        &mut Ipv4Packet::new_unchecked(&mut buf[..]),
        &smoltcp::phy::ChecksumCapabilities::default(),
    );
    wire::emit(seg, OUR_PORT, THEIR_PORT, OURS, THEIRS, &mut buf[20..]);
    buf
}

fn decode(pkt: &[u8]) -> super::Segment {
    let ip = Ipv4Packet::new_checked(pkt).expect("IPv4 from smoltcp");
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.next_header()),
        (THEIRS, OURS, IpProtocol::Tcp)
    );
    let p = wire::parse(ip.payload(), THEIRS, OURS, true).expect("valid TCP from smoltcp");
    assert_eq!((p.src_port, p.dst_port), (THEIR_PORT, OUR_PORT));
    p.segment
}

struct Pair {
    now: Instant,
    ours: Option<Connection>,
    iface: Interface,
    dev: Wire,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    link: Link<Vec<u8>>,
    rng: Rng,
    /// What each side sends: [ours, theirs].
    out: [Bytes; 2],
    sent: [usize; 2],
    got: [Vec<u8>; 2],
    their_closed: bool,
}

impl Pair {
    fn new(seed: u64, imp: Impair, bytes: [usize; 2], we_connect: bool) -> Pair {
        let now = Instant::from_millis(1);
        let mut dev = Wire::default();
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, s_now(now));
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(THEIRS), 24)).unwrap());
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        );
        if we_connect {
            sock.listen(THEIR_PORT).unwrap();
        } else {
            sock.connect(
                iface.context(),
                (IpAddress::Ipv4(OURS), OUR_PORT),
                THEIR_PORT,
            )
            .unwrap();
        }
        let mut sockets = SocketSet::new(vec![]);
        let handle = sockets.add(sock);
        let ours = we_connect.then(|| Connection::connect(cfg(), Seq(seed as u32 ^ 0x5555_0000)));
        Pair {
            now,
            ours,
            iface,
            dev,
            sockets,
            handle,
            link: Link::new(seed, imp),
            rng: Rng(seed ^ 0x77),
            out: [
                Bytes::from(pattern(seed, bytes[0])),
                Bytes::from(pattern(seed + 1, bytes[1])),
            ],
            sent: [0, 0],
            got: [Vec::new(), Vec::new()],
            their_closed: false,
        }
    }

    fn step_apps(&mut self) {
        if let Some(c) = self.ours.as_mut()
            && (c.is_established() || c.state() == State::Closed)
        {
            while self.sent[0] < self.out[0].len() && c.send_capacity() > 0 {
                let end =
                    (self.sent[0] + 1 + self.rng.below(32 * 1024) as usize).min(self.out[0].len());
                self.sent[0] += c.send(self.out[0].slice(self.sent[0]..end));
            }
            if self.sent[0] == self.out[0].len()
                && matches!(c.state(), State::Established | State::CloseWait)
            {
                c.close();
            }
            while let Some(b) = c.recv() {
                self.got[0].extend_from_slice(&b);
            }
        }
        let s = self.sockets.get_mut::<tcp::Socket>(self.handle);
        while s.can_send() && self.sent[1] < self.out[1].len() {
            let n = s.send_slice(&self.out[1][self.sent[1]..]).unwrap();
            if n == 0 {
                break;
            }
            self.sent[1] += n;
        }
        if s.may_send() && self.sent[1] == self.out[1].len() && !self.their_closed {
            s.close();
            self.their_closed = true;
        }
        let mut buf = [0u8; 16 * 1024];
        while s.can_recv() {
            let n = s.recv_slice(&mut buf).unwrap();
            self.got[1].extend_from_slice(&buf[..n]);
        }
    }

    fn run(&mut self, limit: Duration) {
        let deadline = self.now + limit;
        for _ in 0..5_000_000 {
            self.step_apps();
            if let Some(c) = self.ours.as_mut() {
                while let Some(seg) = c.poll_transmit(self.now) {
                    let data = !seg.payload.is_empty();
                    self.link.send_item(self.now, 0, encode(&seg), data);
                }
            }
            self.iface
                .poll(s_now(self.now), &mut self.dev, &mut self.sockets);
            for p in self.dev.tx.drain(..) {
                self.link.send_item(self.now, 1, p, false);
            }
            let smol_at = self
                .iface
                .poll_at(s_now(self.now), &self.sockets)
                .map(|t| Instant::from_micros(t.total_micros().max(0) as u64));
            let next = [
                self.link.next_at(),
                self.ours.as_ref().and_then(|c| c.poll_timeout()),
                smol_at,
            ]
            .into_iter()
            .flatten()
            .min();
            let done = self
                .ours
                .as_ref()
                .is_some_and(|c| c.state() == State::Closed)
                && self.sockets.get::<tcp::Socket>(self.handle).state() == tcp::State::Closed;
            let Some(next) = next.filter(|_| !done) else {
                return;
            };
            assert!(next <= deadline, "not finished by the deadline");
            // smoltcp may ask to be polled "now" again; always move forward.
            self.now = next.max(self.now + Duration::from_micros(1));
            for (to, pkt) in self.link.due(self.now) {
                if to == 1 {
                    self.dev.rx.push_back(pkt);
                    continue;
                }
                let seg = decode(&pkt);
                match self.ours.as_mut() {
                    Some(c) => c.handle_segment(self.now, seg),
                    // We are the listener: the first SYN makes the connection.
                    None if seg.syn && seg.ack.is_none() => {
                        self.ours =
                            Some(Connection::accept(cfg(), self.now, &seg, Seq(0x1234_5678)));
                    }
                    None => {}
                }
            }
            if let Some(c) = self.ours.as_mut()
                && c.poll_timeout().is_some_and(|t| t <= self.now)
            {
                c.handle_timeout(self.now);
            }
        }
        panic!("livelock");
    }

    fn assert_delivered(&self) {
        assert_eq!(
            self.got[1].len(),
            self.out[0].len(),
            "smoltcp received {} of our {} bytes",
            self.got[1].len(),
            self.out[0].len()
        );
        assert!(
            self.got[1][..] == self.out[0][..],
            "smoltcp received different bytes"
        );
        assert_eq!(
            self.got[0].len(),
            self.out[1].len(),
            "we received {} of smoltcp's {} bytes",
            self.got[0].len(),
            self.out[1].len()
        );
        assert!(
            self.got[0][..] == self.out[1][..],
            "we received different bytes"
        );
        let c = self.ours.as_ref().unwrap();
        assert_eq!(
            c.close_reason(),
            Some(CloseReason::Normal),
            "{:?}",
            c.stats()
        );
    }
}

/// smoltcp delays its ACKs by 10 ms: with the default RTO floor (50 ms) that
/// costs no spurious retransmission; with a 5 ms floor it would.
#[test]
fn we_connect_to_smoltcp_and_transfer_both_ways() {
    let mut p = Pair::new(
        1,
        Impair {
            delay_us: 100,
            ..Impair::default()
        },
        [1 << 20, 1 << 20],
        true,
    );
    p.run(Duration::from_secs(600));
    p.assert_delivered();
    let st = *p.ours.as_ref().unwrap().stats();
    assert_eq!(st.retransmits, 0, "{st:?}");
}

#[test]
fn smoltcp_connects_to_us_and_transfers_both_ways() {
    let mut p = Pair::new(
        2,
        Impair {
            delay_us: 100,
            ..Impair::default()
        },
        [700_000, 900_000],
        false,
    );
    p.run(Duration::from_secs(600));
    p.assert_delivered();
}

#[test]
fn against_smoltcp_under_loss_duplication_and_reordering() {
    let imp = Impair {
        drop_pct: 2.0,
        dup_pct: 2.0,
        reorder_pct: 5.0,
        reorder_us: 400,
        delay_us: 100,
        ..Impair::default()
    };
    for seed in 0..60 {
        let bytes = [
            (seed as usize * 7919) % 120_000,
            (seed as usize * 104_729) % 90_000,
        ];
        let mut p = Pair::new(seed, imp.clone(), bytes, seed % 2 == 0);
        p.run(Duration::from_secs(3600));
        p.assert_delivered();
    }
}
