//! Fuzz target bodies, shared by the cargo-fuzz targets in `netstack/fuzz`
//! (coverage-guided, `cargo fuzz run --sanitizer none` works on stable) and
//! the test that replays their saved corpus on every `cargo test`.
//!
//! Both panic on a broken invariant and on nothing else: bad input must be
//! refused or absorbed, never crash.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;

use super::{Connection, Segment, Seq, TcpConfig, wire};
use crate::Instant;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Arbitrary bytes as a TCP segment (with and without checksum checks);
/// whatever parses must emit and parse back to the same segment.
pub fn parse_segment(data: &[u8]) {
    for verify in [true, false] {
        let Ok(p) = wire::parse(data, A, B, verify) else {
            continue;
        };
        let mut out = vec![0; wire::emit_len(&p.segment)];
        wire::emit(&p.segment, p.src_port, p.dst_port, A, B, &mut out);
        let again = wire::parse(&out, A, B, true).expect("a re-emitted segment parses");
        assert_eq!(again.segment, p.segment, "round trip");
    }
}

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
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A segment near what the connection expects (`seq` near its receive edge,
/// `ack` near its send edge), with fields and options from the input.
fn segment(inp: &mut Input<'_>, seq: Seq, ack: Seq) -> Segment {
    let flags = inp.u8();
    let near = |inp: &mut Input<'_>, base: Seq| base + ((inp.u16() as i16 as i32) * 8) as u32;
    let seq = near(inp, seq);
    let ackv = near(inp, ack);
    let window = inp.u16();
    let len = usize::from(inp.u8()) * 12;
    let mss = inp.u16();
    let shift = inp.u8();
    let ts = (inp.u32(), inp.u32());
    let nsack = inp.u8() % 5;
    let sack = std::array::from_fn(|i| {
        (i < usize::from(nsack)).then(|| {
            let l = near(inp, ack);
            (l, l + u32::from(inp.u16()))
        })
    });
    Segment {
        seq,
        ack: (flags & 1 != 0).then_some(ackv),
        syn: flags & 2 != 0,
        fin: flags & 4 != 0,
        rst: flags & 8 != 0,
        window,
        mss: (flags & 16 != 0).then_some(mss),
        window_scale: (flags & 32 != 0).then_some(shift),
        sack_permitted: flags & 64 != 0,
        timestamp: (flags & 128 != 0).then_some(ts),
        sack,
        payload: Bytes::from(vec![0xa5; len]),
    }
}

/// Send everything pending; a connection that never runs out is a livelock.
fn drain(c: &mut Connection, now: Instant) -> Option<Segment> {
    let mut last = None;
    for _ in 0..10_000 {
        match c.poll_transmit(now) {
            Some(s) => last = Some(s),
            None => return last,
        }
    }
    panic!("poll_transmit never runs dry: {c:#?}");
}

/// A connection brought into some state of its life with a well-behaved
/// peer, then driven by the input: segments near its sequence space, time,
/// and user calls. Its invariants are checked after every step.
pub fn drive_connection(data: &[u8]) {
    let mut inp = Input(data);
    let cfg = TcpConfig {
        recv_buffer: 32 * 1024,
        send_buffer: 32 * 1024,
        ..TcpConfig::default()
    };
    let mut now = Instant::from_millis(1);
    let mut ours = Connection::connect(cfg.clone(), Seq(inp.u32()));
    let Some(syn) = ours.poll_transmit(now) else {
        panic!("an active open sends a SYN");
    };
    let mut peer = Connection::accept(cfg, now, &syn, Seq(inp.u32()));
    // A prelude with a proper peer: handshake, data, maybe closes.
    for step in 0..inp.u8() % 32 {
        while let Some(s) = peer.poll_transmit(now) {
            ours.handle_segment(now, s);
        }
        while let Some(s) = ours.poll_transmit(now) {
            peer.handle_segment(now, s);
        }
        match (step % 4, inp.u8()) {
            (0, n) => {
                let _ = ours.send(Bytes::from(vec![1; usize::from(n) * 40]));
            }
            (1, n) => {
                let _ = peer.send(Bytes::from(vec![2; usize::from(n) * 40]));
            }
            (2, n) if n & 3 == 0 => ours.close(),
            (3, n) if n & 7 == 0 => peer.close(),
            _ => {}
        }
        while ours.recv().is_some() {}
        while peer.recv().is_some() {}
    }
    // Then whatever the input says.
    let (mut seq, mut ack) = (Seq(0), Seq(0));
    while !inp.is_empty() {
        match inp.u8() % 6 {
            0 | 1 => {
                let seg = segment(&mut inp, seq, ack);
                ours.handle_segment(now, seg);
            }
            2 => {
                now = now + Duration::from_millis(u64::from(inp.u8()) * 20);
                ours.handle_timeout(now);
            }
            3 => {
                let _ = ours.send(Bytes::from(vec![3; usize::from(inp.u16() % 8192)]));
            }
            4 => while ours.recv().is_some() {},
            _ => match inp.u8() % 8 {
                0 => ours.abort(),
                1..=3 => ours.close(),
                _ => {}
            },
        }
        ours.check_invariants();
        if let Some(s) = drain(&mut ours, now) {
            seq = s.ack.unwrap_or(seq);
            ack = s.seq + s.seq_len();
        }
        ours.check_invariants();
    }
}
