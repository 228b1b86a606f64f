//! Deterministic simulation: two connections over an in-memory link that
//! drops, duplicates, reorders and delays segments by seed, on virtual time
//! that jumps to the next event (no sleeps, no clock).

use std::time::Duration;

use bytes::Bytes;

use super::{CloseReason, Connection, Segment, Seq, State, TcpConfig};
use crate::Instant;

pub(super) use crate::testing::{Impair, Link, Rng, pattern};

impl Link<Segment> {
    fn send(&mut self, now: Instant, from: usize, seg: Segment) {
        let data = !seg.payload.is_empty();
        self.send_item(now, from, seg, data);
    }
}

/// One side's application: sends `out` in random-sized chunks, then closes;
/// collects what arrives.
struct App {
    out: Bytes,
    sent: usize,
    got: Vec<u8>,
    read_paused_until: Option<Instant>,
}

struct Sim {
    now: Instant,
    conns: [Connection; 2],
    apps: [App; 2],
    link: Link<Segment>,
    rng: Rng,
    /// Events processed, to catch livelock.
    steps: u64,
    /// When side 1 had received everything side 0 sends.
    delivered_at: Option<Instant>,
}

impl Sim {
    fn new(seed: u64, imp: Impair, cfg: TcpConfig, bytes: [usize; 2]) -> Sim {
        let mut link = Link::new(seed, imp);
        let now = Instant::from_millis(1);
        let mut client =
            Connection::connect(cfg.clone(), Seq((seed as u32).wrapping_mul(2_654_435_761)));
        // The client's SYN crosses the link like everything else; the server is
        // created from the first SYN that arrives (as a listener would).
        let syn = client.poll_transmit(now).expect("SYN");
        link.send(now, 0, syn);
        let mut server = None;
        let mut t = now;
        while server.is_none() {
            t = link.next_at().unwrap_or_else(|| {
                // SYN lost: let the client retransmit.
                let at = client.poll_timeout().expect("SYN timer");
                client.handle_timeout(at);
                let syn = client.poll_transmit(at).expect("SYN again");
                link.send(at, 0, syn);
                at
            });
            for (to, seg) in link.due(t) {
                if to == 1 && seg.syn && server.is_none() {
                    server = Some(Connection::accept(
                        cfg.clone(),
                        t,
                        &seg,
                        Seq(0x8000_0000 ^ seed as u32),
                    ));
                }
            }
        }
        let apps = [0, 1].map(|i| App {
            out: Bytes::from(pattern(seed + i as u64, bytes[i])),
            sent: 0,
            got: Vec::new(),
            read_paused_until: None,
        });
        Sim {
            now: t,
            conns: [client, server.unwrap()],
            apps,
            link,
            rng: Rng(seed ^ 0xabcdef),
            steps: 0,
            delivered_at: None,
        }
    }

    /// Run until both sides are closed and quiet. Panics on livelock.
    fn run(&mut self, limit: Duration) {
        let deadline = self.now + limit;
        loop {
            self.steps += 1;
            assert!(self.steps < 5_000_000, "livelock");
            for i in 0..2 {
                self.app_step(i);
                while let Some(seg) = self.conns[i].poll_transmit(self.now) {
                    self.link.send(self.now, i, seg);
                }
            }
            let next = [
                self.link.next_at(),
                self.conns[0].poll_timeout(),
                self.conns[1].poll_timeout(),
                self.apps[0].read_paused_until,
                self.apps[1].read_paused_until,
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { return };
            assert!(
                next <= deadline,
                "not finished by the deadline: states {:?} {:?}",
                self.conns[0].state(),
                self.conns[1].state()
            );
            self.now = self.now.max(next);
            for (to, seg) in self.link.due(self.now) {
                self.conns[to].handle_segment(self.now, seg);
            }
            for c in &mut self.conns {
                if c.poll_timeout().is_some_and(|t| t <= self.now) {
                    c.handle_timeout(self.now);
                }
            }
        }
    }

    fn app_step(&mut self, i: usize) {
        let (c, a) = (&mut self.conns[i], &mut self.apps[i]);
        if !c.is_established() && c.state() != State::Closed {
            return;
        }
        while a.sent < a.out.len() && c.send_capacity() > 0 {
            let chunk = 1 + self.rng.below(64 * 1024) as usize;
            let end = (a.sent + chunk).min(a.out.len());
            let n = c.send(a.out.slice(a.sent..end));
            if n == 0 {
                break;
            }
            a.sent += n;
        }
        if a.sent == a.out.len() && matches!(c.state(), State::Established | State::CloseWait) {
            c.close();
        }
        if a.read_paused_until.is_some_and(|t| t > self.now) {
            return;
        }
        a.read_paused_until = None;
        while let Some(b) = c.recv() {
            a.got.extend_from_slice(&b);
        }
        if i == 1 && self.delivered_at.is_none() && self.apps[1].got.len() == self.apps[0].out.len()
        {
            self.delivered_at = Some(self.now);
        }
    }

    fn assert_delivered(&self) {
        for i in 0..2 {
            let want = &self.apps[1 - i].out;
            let got = &self.apps[i].got;
            assert_eq!(
                got.len(),
                want.len(),
                "side {i} received {} of {} bytes",
                got.len(),
                want.len()
            );
            assert!(got[..] == want[..], "side {i} received different bytes");
            assert_eq!(self.conns[i].state(), State::Closed, "side {i}");
            assert_eq!(
                self.conns[i].close_reason(),
                Some(CloseReason::Normal),
                "side {i}: {:?}",
                self.conns[i].stats()
            );
        }
    }
}

/// TIME_WAIT outlasts the longest RTO here, as 2 MSL does in the wild: the
/// simulation has no engine to answer a segment for a finished connection
/// with RST (RFC 9293 §3.10.7.1), so a retransmission arriving after the
/// peer's TIME_WAIT would go unanswered and time out.
pub(super) fn cfg() -> TcpConfig {
    TcpConfig {
        time_wait: Duration::from_secs(20),
        max_rto: Duration::from_secs(10),
        ..TcpConfig::default()
    }
}

#[test]
fn clean_link_transfers_both_ways_without_retransmission() {
    let mut sim = Sim::new(
        1,
        Impair {
            delay_us: 50,
            ..Impair::default()
        },
        cfg(),
        [1 << 20, 1 << 20],
    );
    sim.run(Duration::from_secs(30));
    sim.assert_delivered();
    for c in &sim.conns {
        assert_eq!(c.stats().retransmits, 0, "{:?}", c.stats());
        assert_eq!(c.stats().rto_expirations, 0);
    }
}

#[test]
fn hundreds_of_seeds_with_loss_duplication_reordering_and_delay() {
    let imp = Impair {
        drop_pct: 3.0,
        dup_pct: 2.0,
        reorder_pct: 5.0,
        reorder_us: 300,
        delay_us: 40,
        ..Impair::default()
    };
    let mut retransmits = 0;
    for seed in 0..300 {
        let bytes = [
            1000 + (seed as usize * 7919) % 150_000,
            (seed as usize * 104_729) % 100_000,
        ];
        let mut sim = Sim::new(seed, imp.clone(), cfg(), bytes);
        sim.run(Duration::from_secs(600));
        sim.assert_delivered();
        retransmits += sim.conns[0].stats().retransmits + sim.conns[1].stats().retransmits;
    }
    assert!(retransmits > 0, "the impairment must have bitten");
}

#[test]
fn megabytes_each_way_under_heavy_loss() {
    let imp = Impair {
        drop_pct: 5.0,
        dup_pct: 1.0,
        reorder_pct: 10.0,
        reorder_us: 500,
        delay_us: 100,
        ..Impair::default()
    };
    for seed in 1000..1004 {
        let mut sim = Sim::new(seed, imp.clone(), cfg(), [3 << 20, 2 << 20]);
        sim.run(Duration::from_secs(3600));
        sim.assert_delivered();
    }
}

#[test]
fn a_single_loss_is_repaired_by_fast_retransmit_not_a_timeout() {
    let imp = Impair {
        delay_us: 100,
        drop_nth_data: vec![20],
        ..Impair::default()
    };
    let mut sim = Sim::new(7, imp, cfg(), [400_000, 0]);
    sim.run(Duration::from_secs(30));
    sim.assert_delivered();
    let s = sim.conns[0].stats();
    assert_eq!(s.fast_retransmits, 1, "{s:?}");
    assert_eq!(s.rto_expirations, 0, "{s:?}");
    assert_eq!(s.retransmits, 1, "{s:?}");
}

/// Three losses in one window, without SACK: NewReno repairs one hole per
/// round trip, driven by partial ACKs.
#[test]
fn several_losses_in_one_window_recover_with_newreno_partial_acks() {
    let (s, _) = three_losses(false);
    assert_eq!(s.fast_retransmits, 1, "one recovery episode: {s:?}");
    assert_eq!(s.rto_expirations, 0, "{s:?}");
    assert_eq!(s.retransmits, 3, "{s:?}");
    assert_eq!(s.sack_retransmits, 0);
}

/// The same losses with SACK: the holes above the first are seen in the SACK
/// blocks and resent as the duplicate ACKs arrive, within the same round trip.
#[test]
fn several_losses_in_one_window_are_repaired_by_sack_recovery() {
    let (s, took) = three_losses(true);
    assert_eq!(s.fast_retransmits, 1, "one recovery episode: {s:?}");
    assert_eq!(s.rto_expirations, 0, "{s:?}");
    assert_eq!(s.retransmits, 3, "no spurious retransmission: {s:?}");
    assert_eq!(
        s.sack_retransmits, 2,
        "holes two and three found by SACK: {s:?}"
    );
    let (_, newreno) = three_losses(false);
    assert!(
        took < newreno,
        "SACK recovery ({took:?}) is quicker than NewReno's ({newreno:?})"
    );
}

/// Drop data segments 30, 33 and 36 of a 600 kB transfer; the sender's stats
/// and how long the transfer took.
fn three_losses(sack: bool) -> (super::ConnStats, Duration) {
    let imp = Impair {
        delay_us: 2000,
        drop_nth_data: vec![30, 33, 36],
        ..Impair::default()
    };
    let mut sim = Sim::new(8, imp, TcpConfig { sack, ..cfg() }, [600_000, 0]);
    let start = sim.now;
    sim.run(Duration::from_secs(60));
    sim.assert_delivered();
    // The transfer ends when the receiver has every byte, before the close.
    (
        *sim.conns[0].stats(),
        sim.delivered_at.expect("delivered").saturating_since(start),
    )
}

#[test]
fn a_closed_window_is_probed_and_resumes() {
    let small = TcpConfig {
        recv_buffer: 16 * 1024,
        ..cfg()
    };
    let mut sim = Sim::new(
        9,
        Impair {
            delay_us: 100,
            ..Impair::default()
        },
        small,
        [200_000, 0],
    );
    // The receiver does not read for 200 ms: the window closes.
    sim.apps[1].read_paused_until = Some(sim.now + Duration::from_millis(200));
    sim.run(Duration::from_secs(60));
    sim.assert_delivered();
    assert!(
        sim.conns[0].stats().zero_window_probes > 0,
        "{:?}",
        sim.conns[0].stats()
    );
}

#[test]
fn lost_syn_is_retransmitted() {
    let imp = Impair {
        delay_us: 100,
        ..Impair::default()
    };
    let mut link_seed = 0;
    // Find a seed whose first packet the 50% dropper eats, deterministically.
    for seed in 0..100 {
        let mut r = Rng(seed | 1);
        if r.chance(50.0) {
            link_seed = seed;
            break;
        }
    }
    let mut sim = Sim::new(
        link_seed,
        Impair {
            drop_pct: 50.0,
            ..imp.clone()
        },
        cfg(),
        [1000, 1000],
    );
    sim.link.imp = imp;
    sim.run(Duration::from_secs(60));
    sim.assert_delivered();
    assert!(sim.conns[0].stats().retransmits >= 1);
}

// === RST handling (RFC 5961) ===

fn established_pair() -> Sim {
    let mut sim = Sim::new(
        11,
        Impair {
            delay_us: 10,
            ..Impair::default()
        },
        cfg(),
        [0, 0],
    );
    // Let the handshake finish without closing: apps with nothing to send
    // would close at once, so step by hand.
    for _ in 0..10 {
        for i in 0..2 {
            while let Some(seg) = sim.conns[i].poll_transmit(sim.now) {
                sim.link.send(sim.now, i, seg);
            }
        }
        sim.now = sim.now + Duration::from_micros(20);
        for (to, seg) in sim.link.due(sim.now) {
            sim.conns[to].handle_segment(sim.now, seg);
        }
    }
    assert_eq!(sim.conns[0].state(), State::Established);
    assert_eq!(sim.conns[1].state(), State::Established);
    sim
}

fn next_seq(c: &mut Connection, now: Instant) -> Seq {
    // The ACK a connection sends tells its rcv_nxt.
    c.handle_timeout(now);
    let probe = Segment {
        seq: Seq(0),
        ack: Some(Seq(0)),
        syn: true,
        ..Default::default()
    };
    c.handle_segment(now, probe); // a SYN: challenge ACK carrying rcv_nxt
    c.poll_transmit(now)
        .and_then(|s| s.ack)
        .expect("challenge ack")
}

#[test]
fn in_window_rst_gets_a_challenge_ack_and_exact_rst_resets() {
    let mut sim = established_pair();
    let now = sim.now;
    let c = &mut sim.conns[1];
    let rcv_nxt = next_seq(c, now);
    let before = c.stats().challenge_acks;
    c.handle_segment(
        now,
        Segment {
            seq: rcv_nxt + 100,
            rst: true,
            ..Default::default()
        },
    );
    assert_eq!(
        c.state(),
        State::Established,
        "in-window but inexact RST must not reset"
    );
    assert_eq!(c.stats().challenge_acks, before + 1);
    let ack = c.poll_transmit(now).expect("challenge ACK");
    assert_eq!(ack.ack, Some(rcv_nxt));
    c.handle_segment(
        now,
        Segment {
            seq: rcv_nxt + 10_000_000,
            rst: true,
            ..Default::default()
        },
    );
    assert_eq!(
        c.state(),
        State::Established,
        "out-of-window RST is ignored"
    );
    c.handle_segment(
        now,
        Segment {
            seq: rcv_nxt,
            rst: true,
            ..Default::default()
        },
    );
    assert_eq!(c.state(), State::Closed);
    assert_eq!(c.close_reason(), Some(CloseReason::Reset));
}

#[test]
fn syn_answered_by_rst_is_refused() {
    let now = Instant::from_millis(1);
    let mut c = Connection::connect(cfg(), Seq(1000));
    let syn = c.poll_transmit(now).unwrap();
    assert!(syn.syn && syn.mss.is_some() && syn.window_scale.is_some());
    // An RST whose ACK does not cover our SYN is ignored.
    c.handle_segment(
        now,
        Segment {
            seq: Seq(0),
            ack: Some(Seq(5)),
            rst: true,
            ..Default::default()
        },
    );
    assert_eq!(c.state(), State::SynSent);
    c.handle_segment(
        now,
        Segment {
            seq: Seq(0),
            ack: Some(Seq(1001)),
            rst: true,
            ..Default::default()
        },
    );
    assert_eq!(c.close_reason(), Some(CloseReason::Refused));
}

#[test]
fn a_vanished_peer_times_out_after_the_retransmission_limit() {
    let quick = TcpConfig {
        max_retransmits: 4,
        initial_rto: Duration::from_millis(10),
        ..cfg()
    };
    let mut sim = Sim::new(
        12,
        Impair {
            delay_us: 10,
            ..Impair::default()
        },
        quick,
        [50_000, 0],
    );
    sim.link.imp.drop_pct = 100.0; // the peer disappears
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sim.run(Duration::from_secs(600))
    }));
    assert_eq!(sim.conns[0].close_reason(), Some(CloseReason::TimedOut));
    assert_eq!(sim.conns[0].stats().rto_expirations, 5);
}

#[test]
fn a_thousand_seeds_under_harsh_impairment() {
    let imp = Impair {
        drop_pct: 8.0,
        dup_pct: 5.0,
        reorder_pct: 20.0,
        reorder_us: 2000,
        delay_us: 100,
        ..Impair::default()
    };
    for seed in 5000..6000 {
        let bytes = [
            (seed as usize * 7919) % 300_000,
            (seed as usize * 104_729) % 200_000,
        ];
        let mut sim = Sim::new(seed, imp.clone(), cfg(), bytes);
        sim.run(Duration::from_secs(3600));
        sim.assert_delivered();
    }
}
