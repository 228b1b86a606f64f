//! Property tests standing in for fuzzing on the stable toolchain: arbitrary
//! and mutated bytes into the parser, arbitrary segments into connections in
//! every state and into the engine. Seeds are fixed, so every run replays the
//! same corpus (well under a minute); failures name their seed.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;

use super::sim::Rng;
use super::{Connection, Engine, EngineConfig, Segment, Seq, TcpConfig, wire};
use crate::Instant;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn some_segment(r: &mut Rng, around_seq: Seq, around_ack: Seq) -> Segment {
    let near = |r: &mut Rng, base: Seq| match r.below(4) {
        0 => Seq(r.next() as u32),
        _ => base + (r.below(300_000) as u32).wrapping_sub(100_000),
    };
    let flags = r.next();
    let len = match r.below(4) {
        0 => 0,
        1 => r.below(8) as usize,
        _ => r.below(3000) as usize,
    };
    Segment {
        seq: near(r, around_seq),
        ack: (flags & 1 != 0).then(|| near(r, around_ack)),
        syn: flags & 2 != 0 && r.below(4) == 0,
        fin: flags & 4 != 0 && r.below(3) == 0,
        rst: flags & 8 != 0 && r.below(6) == 0,
        window: match r.below(4) {
            0 => 0,
            _ => r.next() as u16,
        },
        mss: (flags & 16 != 0).then(|| r.next() as u16),
        window_scale: (flags & 32 != 0).then(|| r.below(20) as u8),
        sack_permitted: flags & 64 != 0,
        // Around the peers' clocks and far from them (PAWS must judge both).
        timestamp: (flags & 128 != 0).then(|| (r.next() as u32, r.next() as u32)),
        sack: std::array::from_fn(|_| {
            (r.below(3) == 0).then(|| {
                let l = near(r, around_ack);
                (l, l + r.below(20_000) as u32)
            })
        }),
        payload: Bytes::from(vec![r.next() as u8; len]),
    }
}

#[test]
fn parser_never_panics_and_round_trips_what_it_accepts() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut accepted = 0;
    for i in 0..200_000u32 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            (0..r.below(80)).map(|_| r.next() as u8).collect()
        } else {
            // A valid segment, mutated.
            let seg = some_segment(&mut r, Seq(5), Seq(9));
            if seg.syn && (seg.fin || seg.rst) {
                continue;
            }
            let mut b = vec![0; wire::emit_len(&seg)];
            wire::emit(
                &seg,
                1 + r.below(60000) as u16,
                1 + r.below(60000) as u16,
                A,
                B,
                &mut b,
            );
            for _ in 0..r.below(4) {
                let at = r.below(b.len() as u64) as usize;
                b[at] = r.next() as u8;
            }
            b
        };
        for verify in [true, false] {
            if let Ok(p) = wire::parse(&bytes, A, B, verify) {
                accepted += 1;
                let mut out = vec![0; wire::emit_len(&p.segment)];
                wire::emit(&p.segment, p.src_port, p.dst_port, A, B, &mut out);
                let again = wire::parse(&out, A, B, true)
                    .unwrap_or_else(|e| panic!("iteration {i}: re-emitted segment refused: {e:?}"));
                assert_eq!(again.segment, p.segment, "iteration {i}");
            }
        }
    }
    assert!(
        accepted > 10_000,
        "the corpus reaches the accepting paths ({accepted})"
    );
}

/// Send everything pending; a connection that never runs out is a livelock.
fn drain(c: &mut Connection, now: Instant, seed: u64, i: usize) {
    for _ in 0..10_000 {
        if c.poll_transmit(now).is_none() {
            return;
        }
    }
    panic!("seed {seed} step {i}: poll_transmit never runs dry: {c:#?}");
}

/// A connection driven into `steps` of its life, then fed arbitrary segments.
fn pummel(seed: u64, handshake_steps: usize) {
    let mut r = Rng(seed | 1);
    let cfg = TcpConfig {
        recv_buffer: 32 * 1024,
        send_buffer: 32 * 1024,
        ..TcpConfig::default()
    };
    let mut now = Instant::from_millis(1);
    let mut client = Connection::connect(cfg.clone(), Seq(r.next() as u32));
    let syn = client.poll_transmit(now).unwrap();
    let mut server = Connection::accept(cfg, now, &syn, Seq(r.next() as u32));
    // Let them talk properly for a while so every state gets visited.
    for step in 0..handshake_steps {
        while let Some(s) = server.poll_transmit(now) {
            client.handle_segment(now, s);
        }
        while let Some(s) = client.poll_transmit(now) {
            server.handle_segment(now, s);
        }
        match step % 5 {
            0 => {
                let _ = client.send(Bytes::from(vec![1; r.below(5000) as usize]));
            }
            1 => while client.recv().is_some() {},
            2 => while server.recv().is_some() {},
            3 if r.below(6) == 0 => client.close(),
            4 if r.below(8) == 0 => server.close(),
            _ => {}
        }
    }
    // Now arbitrary input, with timeouts and drains in between.
    let (mut seq, mut ack) = (Seq(r.next() as u32), Seq(r.next() as u32));
    for i in 0..400 {
        if let Some(s) = client.poll_transmit(now) {
            seq = s.ack.unwrap_or(seq);
            ack = s.seq + s.seq_len();
        }
        let seg = some_segment(&mut r, seq, ack);
        client.handle_segment(now, seg);
        client.check_invariants();
        match r.below(6) {
            0 => {
                now = now + Duration::from_millis(r.below(3000));
                client.handle_timeout(now);
            }
            1 => {
                let _ = client.send(Bytes::from(vec![2; r.below(4000) as usize]));
            }
            2 => while client.recv().is_some() {},
            3 if r.below(20) == 0 => client.close(),
            _ => {}
        }
        drain(&mut client, now, seed, i);
        client.check_invariants();
        let _ = i;
    }
}

#[test]
fn connections_in_every_state_survive_arbitrary_segments() {
    for seed in 0..400 {
        pummel(seed, (seed % 40) as usize);
    }
}

#[test]
fn the_engine_survives_arbitrary_traffic() {
    let mut r = Rng(99);
    let mut now = Instant::from_millis(1);
    let cfg = EngineConfig {
        max_connections: 64,
        secret: [3; 16],
        ..EngineConfig::default()
    };
    let mut e = Engine::new(cfg, now);
    e.listen(B, 80, 8);
    for _ in 0..4 {
        let _ = e.connect(now, B, (A, 443));
    }
    for _ in 0..100_000 {
        let remote = (A, 1000 + r.below(40) as u16);
        let local = (B, if r.below(3) == 0 { 81 } else { 80 });
        let (s0, a0) = (Seq(r.next() as u32), Seq(r.next() as u32));
        let seg = some_segment(&mut r, s0, a0);
        e.handle_segment(now, local, remote, seg);
        if r.below(10) == 0 {
            now = now + Duration::from_millis(r.below(2000));
            e.handle_timeout(now);
        }
        let mut n = 0;
        while e.poll_transmit(now).is_some() {
            n += 1;
            assert!(n < 100_000, "engine poll_transmit never runs dry");
        }
        while let Some(ev) = e.poll_event() {
            if let super::Event::Incoming { listener } = ev {
                while let Some(id) = e.accept(listener.0, listener.1) {
                    if r.below(2) == 0 {
                        e.close(id);
                    }
                }
            }
        }
        assert!(e.len() <= 64);
    }
}

/// The corpus cargo-fuzz saved (netstack/fuzz/corpus), replayed through the
/// same target bodies: every input that ever found a new path stays a test.
#[test]
fn the_saved_fuzz_corpus_replays() {
    use super::fuzzing;
    type Target = fn(&[u8]);
    let targets: [(&str, Target); 2] = [
        ("tcp_parse", fuzzing::parse_segment),
        ("tcp_conn", fuzzing::drive_connection),
    ];
    for (target, run) in targets {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let n = crate::testing::replay_fuzz_corpus(&dir, run);
        assert!(
            n >= 50,
            "{target}: only {n} saved inputs in {}",
            dir.display()
        );
    }
}
