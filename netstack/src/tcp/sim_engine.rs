//! Two engines over the impairing link: many connections at once, an echo
//! service driven only by events, RSTs for unknown connections, backlog
//! limits.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;

use super::sim::{Impair, Link, Rng, cfg, pattern};
use super::{CloseReason, ConnId, Engine, EngineConfig, Event, Segment, Seq, State};
use crate::Instant;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PORT: u16 = 7;

/// (from address/port, to address/port, segment) as it crosses the link.
type Packet = ((Ipv4Addr, u16), (Ipv4Addr, u16), Segment);

struct World {
    now: Instant,
    engines: [Engine; 2],
    link: Link<Packet>,
}

impl World {
    fn new(seed: u64, imp: Impair, backlog: usize) -> World {
        let now = Instant::from_millis(1);
        let mk = |k: u8| {
            Engine::new(
                EngineConfig {
                    tcp: cfg(),
                    secret: [k; 16],
                    ..EngineConfig::default()
                },
                now,
            )
        };
        let mut engines = [mk(1), mk(2)];
        engines[1].listen(SERVER, PORT, backlog);
        World {
            now,
            engines,
            link: Link::new(seed, imp),
        }
    }

    /// Move packets and time forward until `until` says stop or nothing is left.
    fn run(&mut self, limit: Duration, mut app: impl FnMut(&mut World) -> bool) {
        let deadline = self.now + limit;
        for _ in 0..10_000_000 {
            if app(self) {
                return;
            }
            for i in 0..2 {
                while let Some((t, seg)) = self.engines[i].poll_transmit(self.now) {
                    let data = !seg.payload.is_empty();
                    self.link
                        .send_item(self.now, i, (t.local, t.remote, seg), data);
                }
            }
            if app(self) {
                return;
            }
            let next = [
                self.link.next_at(),
                self.engines[0].poll_timeout(),
                self.engines[1].poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { return };
            assert!(next <= deadline, "deadline passed");
            self.now = self.now.max(next);
            for (to, (from, dst, seg)) in self.link.due(self.now) {
                self.engines[to].handle_segment(self.now, dst, from, seg);
            }
            for e in &mut self.engines {
                e.handle_timeout(self.now);
            }
        }
        panic!("livelock");
    }
}

/// Each of `n` clients sends its own pattern, reads the echo, then closes.
fn echo_many(seed: u64, imp: Impair, n: usize, size: usize) -> World {
    echo_many_backlog(seed, imp, n, size, n)
}

fn echo_many_backlog(seed: u64, imp: Impair, n: usize, size: usize, backlog: usize) -> World {
    echo_many_forged(seed, imp, n, size, backlog, 0)
}

/// A blind attacker's segment for the connection `to` the tuple names:
/// random sequence and acknowledgment numbers, RST, SYN, FIN or a bare
/// ACK, with or without a timestamp (RFC 5961's threat model).
fn forged(rng: &mut Rng) -> Segment {
    let r = rng.next();
    let kind = r % 6;
    Segment {
        seq: Seq(rng.next() as u32),
        ack: (kind != 0).then(|| Seq(rng.next() as u32)),
        rst: kind <= 1,
        syn: kind == 2,
        fin: kind == 3,
        window: 65535,
        timestamp: (r & 0x100 != 0).then(|| (rng.next() as u32, 0)),
        payload: if kind == 4 {
            Bytes::from_static(b"injected")
        } else {
            Bytes::new()
        },
        ..Segment::default()
    }
}

/// `echo_many_backlog`, with `forge` forged segments thrown at each side
/// of every connection per round of the simulation.
fn echo_many_forged(
    seed: u64,
    imp: Impair,
    n: usize,
    size: usize,
    backlog: usize,
    forge: usize,
) -> World {
    let mut w = World::new(seed, imp, backlog);
    let mut rng = Rng(seed ^ 0xf00d_f00d);
    let mut clients: HashMap<ConnId, (Bytes, usize, Vec<u8>)> = HashMap::new();
    for i in 0..n {
        let id = w.engines[0]
            .connect(w.now, CLIENT, (SERVER, PORT))
            .expect("port");
        clients.insert(
            id,
            (
                Bytes::from(pattern(seed * 1000 + i as u64, size)),
                0,
                Vec::new(),
            ),
        );
    }
    let mut done = 0;
    let mut server_open = 0usize;
    w.run(Duration::from_secs(3600), |w| {
        for &id in clients.keys() {
            let Some(t) = w.engines[0].tuple(id) else {
                continue;
            };
            for _ in 0..forge {
                let now = w.now;
                w.engines[1].handle_segment(now, t.remote, t.local, forged(&mut rng));
                w.engines[0].handle_segment(now, t.local, t.remote, forged(&mut rng));
            }
        }
        // Server: accept, echo what arrives, close when the client has.
        while let Some(ev) = w.engines[1].poll_event() {
            match ev {
                Event::Incoming { .. } => {
                    while w.engines[1].accept(SERVER, PORT).is_some() {
                        server_open += 1;
                    }
                }
                Event::Readable(id) => {
                    while let Some(b) = w.engines[1].recv(id) {
                        let n = w.engines[1].send(id, b.clone());
                        assert_eq!(n, b.len(), "echo buffer is as big as the receive window");
                    }
                }
                Event::PeerClosed(id) => w.engines[1].close(id),
                Event::Closed(_, why) => {
                    assert_eq!(why, CloseReason::Normal);
                    server_open -= 1;
                }
                _ => {}
            }
        }
        // Clients.
        while let Some(ev) = w.engines[0].poll_event() {
            match ev {
                Event::Connected(id) | Event::Writable(id) => {
                    let (out, sent, _) = clients.get_mut(&id).unwrap();
                    *sent += w.engines[0].send(id, out.slice(*sent..));
                }
                Event::Readable(id) => {
                    let (out, _, got) = clients.get_mut(&id).unwrap();
                    while let Some(b) = w.engines[0].recv(id) {
                        got.extend_from_slice(&b);
                    }
                    if got.len() == out.len() {
                        assert!(got[..] == out[..], "echo differs");
                        w.engines[0].close(id);
                    }
                }
                Event::Closed(id, why) => {
                    assert_eq!(why, CloseReason::Normal, "client {id:?}");
                    let (out, _, got) = clients.remove(&id).unwrap();
                    assert_eq!(got.len(), out.len());
                    done += 1;
                }
                _ => {}
            }
        }
        done == n && w.engines[1].is_empty()
    });
    assert_eq!(done, n, "all clients finished");
    assert_eq!(server_open, 0);
    assert!(
        w.engines[0].is_empty() && w.engines[1].is_empty(),
        "every connection was removed"
    );
    w
}

#[test]
fn an_echo_service_serves_two_thousand_concurrent_connections() {
    let w = echo_many(
        1,
        Impair {
            delay_us: 100,
            ..Impair::default()
        },
        2000,
        3000,
    );
    let s = w.engines[1].stats();
    assert_eq!((s.accepted, s.closed), (2000, 2000));
    assert_eq!(s.no_connection, 0);
}

#[test]
fn echo_under_loss_duplication_and_reordering() {
    let imp = Impair {
        drop_pct: 3.0,
        dup_pct: 2.0,
        reorder_pct: 5.0,
        reorder_us: 500,
        delay_us: 100,
        ..Impair::default()
    };
    for seed in 0..20 {
        echo_many(seed, imp.clone(), 50, 20_000);
    }
}

#[test]
fn segments_for_no_connection_get_rst_and_rst_gets_nothing() {
    let mut w = World::new(1, Impair::default(), 8);
    let now = w.now;
    let e = &mut w.engines[1];
    // Data to a port nobody listens on: RST with seq = their ACK.
    e.handle_segment(
        now,
        (SERVER, 9),
        (CLIENT, 5000),
        Segment {
            seq: Seq(10),
            ack: Some(Seq(777)),
            payload: Bytes::from_static(b"x"),
            ..Default::default()
        },
    );
    let (t, rst) = e.poll_transmit(now).unwrap();
    assert_eq!((t.local, t.remote), ((SERVER, 9), (CLIENT, 5000)));
    assert!(rst.rst && rst.seq == Seq(777) && rst.ack.is_none());
    // A SYN to a closed port: RST+ACK acknowledging the SYN.
    e.handle_segment(
        now,
        (SERVER, 9),
        (CLIENT, 5001),
        Segment {
            seq: Seq(100),
            syn: true,
            ..Default::default()
        },
    );
    let (_, rst) = e.poll_transmit(now).unwrap();
    assert!(rst.rst && rst.ack == Some(Seq(101)));
    // A RST for nothing is not answered.
    e.handle_segment(
        now,
        (SERVER, 9),
        (CLIENT, 5002),
        Segment {
            seq: Seq(1),
            rst: true,
            ..Default::default()
        },
    );
    assert!(e.poll_transmit(now).is_none());
    assert_eq!(e.stats().no_connection, 3);
    assert_eq!(e.stats().resets_sent, 2);
}

#[test]
fn a_full_backlog_answers_with_syn_cookies_and_keeps_no_state() {
    let mut w = World::new(1, Impair::default(), 2);
    let now = w.now;
    for p in 0..5u16 {
        let syn = Segment {
            seq: Seq(1000 * u32::from(p)),
            syn: true,
            window: 65535,
            ..Default::default()
        };
        w.engines[1].handle_segment(now, (SERVER, PORT), (CLIENT, 6000 + p), syn);
    }
    assert_eq!(
        w.engines[1].len(),
        2,
        "no state for the three over the backlog"
    );
    assert_eq!(w.engines[1].stats().backlog_full, 3);
    assert_eq!(w.engines[1].stats().syn_cookies_sent, 3);
    let mut syn_acks = 0;
    while let Some((_, seg)) = w.engines[1].poll_transmit(now) {
        assert!(seg.syn && seg.ack.is_some());
        syn_acks += 1;
    }
    assert_eq!(syn_acks, 5, "every SYN was answered");
}

#[test]
fn handshakes_complete_through_syn_cookies_when_the_backlog_is_tiny() {
    let w = echo_many_backlog(
        5,
        Impair {
            delay_us: 100,
            ..Impair::default()
        },
        300,
        5000,
        4,
    );
    let s = w.engines[1].stats();
    assert!(s.syn_cookies_accepted > 100, "{s:?}");
    assert_eq!(s.syn_cookies_invalid, 0);
    assert_eq!(s.closed, 300);
}

/// Issue 18, point 1: with timestamps, a cookie keeps window scaling, SACK
/// and timestamps (encoded in the SYN-ACK's TSval), so a connection born
/// of a flood fills a window past 64 KiB like any other.
#[test]
fn a_syn_cookie_keeps_window_scaling_sack_and_timestamps() {
    let mut w = World::new(
        3,
        Impair {
            delay_us: 2_000,
            ..Impair::default()
        },
        1,
    );
    // One handshake takes the backlog of 1 and stays unaccepted.
    let first = w.engines[0].connect(w.now, CLIENT, (SERVER, PORT)).unwrap();
    w.run(Duration::from_secs(5), |w| {
        w.engines[0]
            .connection(first)
            .is_some_and(|c| c.is_established())
    });
    let id = w.engines[0].connect(w.now, CLIENT, (SERVER, PORT)).unwrap();
    let port = w.engines[0].tuple(id).unwrap().local.1;
    let data = Bytes::from(pattern(3, 2 << 20));
    let (mut sent, mut got) = (0, Vec::new());
    let mut accepted = Vec::new();
    let mut server = None;
    w.run(Duration::from_secs(60), |w| {
        let c = &mut w.engines[0];
        if c.connection(id).is_some_and(|c| c.is_established()) && sent < data.len() {
            sent += c.send(id, data.slice(sent..));
        }
        let s = &mut w.engines[1];
        while let Some(sid) = s.accept(SERVER, PORT) {
            accepted.push(sid);
        }
        while s.poll_event().is_some() {}
        for &sid in &accepted {
            if s.tuple(sid).is_some_and(|t| t.remote.1 == port) {
                server = Some(sid);
                while let Some(b) = s.recv(sid) {
                    got.extend_from_slice(&b);
                }
            }
        }
        got.len() == data.len()
    });
    assert_eq!(
        w.engines[1].stats().syn_cookies_accepted,
        1,
        "{:?}",
        w.engines[1].stats()
    );
    assert!(got[..] == data[..], "every byte, in order");
    let shift = super::window_shift_for(cfg().recv_buffer);
    assert!(shift > 0, "the receive buffer needs scaling");
    let client = w.engines[0].connection(id).unwrap().negotiated();
    assert_eq!(client.window_scale, Some((shift, shift)));
    assert!(client.sack && client.timestamps);
    // The server's half, rebuilt from the cookie, agrees.
    let srv = w.engines[1]
        .connection(server.unwrap())
        .unwrap()
        .negotiated();
    assert_eq!(srv.window_scale, Some((shift, shift)));
    assert!(srv.sack && srv.timestamps);
    assert_eq!(w.engines[0].stats().rto_expirations, 0);
}

#[test]
fn a_forged_cookie_gets_a_reset_and_no_connection() {
    let mut w = World::new(1, Impair::default(), 1);
    let now = w.now;
    let e = &mut w.engines[1];
    let forged = || Segment {
        seq: Seq(1001),
        ack: Some(Seq(0xdead_beef)),
        window: 1000,
        ..Default::default()
    };
    // No cookie was ever sent: the ACK is not even checked as one.
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 7000), forged());
    assert_eq!(
        (
            e.len(),
            e.stats().syn_cookies_invalid,
            e.stats().no_connection
        ),
        (0, 0, 1)
    );
    let (_, rst) = e.poll_transmit(now).unwrap();
    assert!(rst.rst && rst.seq == Seq(0xdead_beef));
    // Once the listener has sent cookies, a wrong one is refused as such.
    for p in 0..2u16 {
        let syn = Segment {
            seq: Seq(1000),
            syn: true,
            window: 65535,
            ..Default::default()
        };
        e.handle_segment(now, (SERVER, PORT), (CLIENT, 6000 + p), syn);
    }
    assert_eq!(e.stats().syn_cookies_sent, 1);
    while e.poll_transmit(now).is_some() {}
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 7001), forged());
    assert_eq!(e.stats().syn_cookies_invalid, 1);
    assert_eq!(e.len(), 1, "only the one in the backlog");
}

#[test]
fn a_cookie_with_altered_mss_bits_is_refused() {
    let mut w = World::new(1, Impair::default(), 1);
    let now = w.now;
    let e = &mut w.engines[1];
    let syn = || Segment {
        seq: Seq(5000),
        syn: true,
        window: 65535,
        mss: Some(1460),
        ..Default::default()
    };
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 1), syn()); // takes the backlog
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 2), syn()); // gets a cookie
    let mut cookie = None;
    while let Some((t, s)) = e.poll_transmit(now) {
        if t.remote.1 == 2 {
            cookie = Some(s.seq);
        }
    }
    let c = cookie.unwrap();
    let altered = Seq(c.0 ^ (1 << 24)); // another MSS index
    let ack = |a: Seq| Segment {
        seq: Seq(5001),
        ack: Some(a + 1),
        window: 1000,
        ..Default::default()
    };
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 2), ack(altered));
    assert_eq!(e.stats().syn_cookies_invalid, 1);
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 2), ack(c));
    assert_eq!(
        e.stats().syn_cookies_accepted,
        1,
        "the genuine cookie still works"
    );
}

/// Overload: a refusing engine answers SYNs and cookie ACKs to its
/// listeners with a RST and keeps nothing; connections it holds carry on,
/// and once it stops refusing handshakes complete again.
#[test]
fn a_refusing_engine_resets_new_handshakes_and_keeps_its_connections() {
    let mut w = World::new(1, Impair::default(), 1);
    let now = w.now;
    let e = &mut w.engines[1];
    let syn = |seq: u32| Segment {
        seq: Seq(seq),
        syn: true,
        window: 65535,
        mss: Some(1460),
        ..Default::default()
    };
    let ack = |seq: u32, a: Seq| Segment {
        seq: Seq(seq + 1),
        ack: Some(a + 1),
        window: 1000,
        ..Default::default()
    };
    // One handshake in the backlog, one answered with a cookie.
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 1), syn(100));
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 2), syn(200));
    let (mut cookie, mut sa) = (None, None);
    while let Some((t, s)) = e.poll_transmit(now) {
        match t.remote.1 {
            1 => sa = Some(s.seq),
            _ => cookie = Some(s.seq),
        }
    }
    let (cookie, sa) = (cookie.expect("a cookie SYN-ACK"), sa.expect("a SYN-ACK"));
    assert_eq!(e.len(), 1);
    e.set_refusing(true);
    // A new SYN: a RST acknowledging it, nothing kept.
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 3), syn(300));
    let (t, rst) = e.poll_transmit(now).expect("a RST");
    assert_eq!(t.remote.1, 3);
    assert!(rst.rst && rst.ack == Some(Seq(301)), "{rst:?}");
    // The cookie's ACK would open a connection: refused the same way.
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 2), ack(200, cookie));
    let (t, rst) = e.poll_transmit(now).expect("a RST");
    assert_eq!(t.remote.1, 2);
    assert!(rst.rst && rst.seq == cookie + 1, "{rst:?}");
    assert_eq!(e.stats().overload_refused, 2);
    assert_eq!(e.stats().syn_cookies_accepted, 0);
    assert_eq!(e.len(), 1, "only the half-open connection it already held");
    // The handshake under way completes: what the engine holds carries on.
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 1), ack(100, sa));
    while e.poll_transmit(now).is_some() {}
    assert!(matches!(e.poll_event(), Some(Event::Incoming { .. })));
    assert!(e.accept(SERVER, PORT).is_some());
    // Refusing no more: a new handshake is taken.
    e.set_refusing(false);
    e.handle_segment(now, (SERVER, PORT), (CLIENT, 4), syn(400));
    let (t, sa) = e.poll_transmit(now).expect("a SYN-ACK");
    assert!(t.remote.1 == 4 && sa.syn && !sa.rst, "{sa:?}");
    assert_eq!(e.stats().overload_refused, 2);
}

#[test]
fn data_that_arrived_before_accept_is_announced_after_it() {
    let mut w = World::new(
        1,
        Impair {
            delay_us: 10,
            ..Impair::default()
        },
        8,
    );
    let id = w.engines[0].connect(w.now, CLIENT, (SERVER, PORT)).unwrap();
    let mut sent = false;
    w.run(Duration::from_secs(5), |w| {
        while let Some(ev) = w.engines[0].poll_event() {
            if let Event::Connected(c) = ev {
                assert_eq!(c, id);
                w.engines[0].send(id, Bytes::from_static(b"early"));
                sent = true;
            }
        }
        sent
    });
    // Deliver everything; nobody accepts on the server yet.
    w.run(Duration::from_secs(5), |_| false);
    // The server application has not accepted yet; the data waits.
    while w.engines[1].poll_transmit(w.now).is_some() {}
    let mut incoming = false;
    while let Some(ev) = w.engines[1].poll_event() {
        incoming |= matches!(ev, Event::Incoming { .. });
    }
    assert!(incoming);
    let sid = w.engines[1].accept(SERVER, PORT).unwrap();
    while w.engines[1].poll_transmit(w.now).is_some() {}
    let events: Vec<Event> = std::iter::from_fn(|| w.engines[1].poll_event()).collect();
    assert!(events.contains(&Event::Readable(sid)), "{events:?}");
    assert_eq!(w.engines[1].recv(sid).as_deref(), Some(&b"early"[..]));
}

#[test]
fn a_stale_handle_reaches_nothing() {
    let mut w = World::new(1, Impair::default(), 8);
    let now = w.now;
    let id = w.engines[0].connect(now, CLIENT, (SERVER, 9)).unwrap();
    // Port 9 is closed: the server resets, the client connection goes away.
    w.run(Duration::from_secs(10), |_| false);
    let mut closed = None;
    while let Some(ev) = w.engines[0].poll_event() {
        if let Event::Closed(i, why) = ev {
            closed = Some((i, why));
        }
    }
    assert_eq!(closed, Some((id, CloseReason::Refused)));
    let id2 = w.engines[0].connect(now, CLIENT, (SERVER, PORT)).unwrap();
    assert_ne!(id, id2, "the reused slot has a new generation");
    assert!(w.engines[0].connection(id).is_none());
    assert_eq!(w.engines[0].send(id, Bytes::from_static(b"x")), 0);
}

/// Harsh enough that delayed duplicate SYNs open half-open connections after
/// the real ones finished; the clients' RSTs must clean them up unseen.
#[test]
fn echo_under_harsh_impairment_with_late_duplicate_syns() {
    let imp = Impair {
        drop_pct: 6.0,
        dup_pct: 5.0,
        reorder_pct: 15.0,
        reorder_us: 3000,
        delay_us: 100,
        ..Impair::default()
    };
    for seed in 100..160 {
        echo_many(seed, imp.clone(), 30, 30_000);
    }
}

/// With RSS steering, every port an active open picks brings the replies
/// back to the opening core's queue; spread over four cores' engines, each
/// gets its share and they never pick the same tuple.
#[test]
fn active_opens_pick_ports_whose_replies_hash_to_their_own_queue() {
    use crate::rss::Steering;
    let now = Instant::from_millis(1);
    let mut tuples = std::collections::HashSet::new();
    for queue in 0..4u16 {
        let steering = Steering::round_robin(4, 128, queue);
        let mut e = Engine::new(
            EngineConfig {
                steering: vec![(CLIENT, steering.clone())],
                ..EngineConfig::default()
            },
            now,
        );
        for _ in 0..500 {
            let id = e
                .connect(now, CLIENT, (SERVER, 80))
                .expect("a port is free");
            let t = e.tuple(id).unwrap();
            assert_eq!(steering.queue_of(t.remote, t.local), queue);
            assert!(tuples.insert(t), "{t:?} picked twice");
        }
    }
    // The ports of one core run out after about a quarter of the range.
    let mut e = Engine::new(
        EngineConfig {
            steering: vec![(CLIENT, Steering::round_robin(4, 128, 1))],
            max_connections: 1 << 20,
            ..EngineConfig::default()
        },
        now,
    );
    let mut n = 0;
    while e.connect(now, CLIENT, (SERVER, 80)).is_some() {
        n += 1;
    }
    assert!(
        (3000..5200).contains(&n),
        "{n} ports for one of four queues"
    );
}

/// RFC 6191: the server closed first and holds the 4-tuple in TIME_WAIT; a
/// new SYN on it with a newer timestamp opens a new connection at once, an
/// old one (older timestamp) is only acknowledged.
#[test]
fn a_newer_syn_reopens_a_tuple_in_time_wait() {
    let mut w = World::new(1, Impair::default(), 8);
    let now = w.now;
    let client = w.engines[0].connect(now, CLIENT, (SERVER, PORT)).unwrap();
    let tuple = w.engines[0].tuple(client).unwrap();
    let mut server = None;
    w.run(Duration::from_secs(5), |w| {
        if server.is_none() {
            server = w.engines[1].accept(SERVER, PORT);
            if let Some(s) = server {
                w.engines[1].close(s); // the server closes first
            }
        }
        if w.engines[0]
            .connection(client)
            .is_some_and(|c| c.peer_closed())
        {
            w.engines[0].close(client);
        }
        // Done once the server waits and the client is gone.
        server
            .and_then(|s| w.engines[1].connection(s))
            .is_some_and(|c| c.state() == State::TimeWait)
            && w.engines[0].connection(client).is_none()
    });
    let server = server.expect("accepted");
    let c = w.engines[1].connection(server).expect("still held");
    assert_eq!(c.state(), State::TimeWait);

    // A SYN from the same client port, timestamp far in the past: the wait
    // goes on, and the stray SYN gets an ACK, not a SYN-ACK.
    let syn = |tsval: u32| Segment {
        seq: Seq(123_456),
        syn: true,
        window: 65535,
        mss: Some(1460),
        timestamp: Some((tsval, 0)),
        ..Default::default()
    };
    let server_engine = &mut w.engines[1];
    let before = server_engine.stats().time_wait_reopened;
    // Older than what the server saw: half the clock space behind ts_recent.
    let recent = server_engine
        .connection(server)
        .unwrap()
        .ts_recent_for_tests();
    server_engine.handle_segment(
        w.now,
        tuple.remote,
        tuple.local,
        syn(recent.wrapping_sub(1000)),
    );
    let out: Vec<_> = std::iter::from_fn(|| server_engine.poll_transmit(w.now)).collect();
    assert!(
        out.iter().all(|(_, s)| !s.syn),
        "old SYN: just an ACK {out:?}"
    );
    assert_eq!(server_engine.stats().time_wait_reopened, before);
    assert_eq!(
        server_engine.connection(server).unwrap().state(),
        State::TimeWait
    );

    server_engine.handle_segment(
        w.now,
        tuple.remote,
        tuple.local,
        syn(recent.wrapping_add(5)),
    );
    let out: Vec<_> = std::iter::from_fn(|| server_engine.poll_transmit(w.now)).collect();
    assert!(
        out.iter()
            .any(|(_, s)| s.syn && s.ack == Some(Seq(123_457))),
        "a new SYN-ACK: {out:?}"
    );
    assert_eq!(server_engine.stats().time_wait_reopened, 1);
    assert!(
        server_engine.connection(server).is_none(),
        "the old incarnation is gone"
    );
}

/// A core whose connections may hold 100 kB in all: eight clients send
/// 200 kB each to an echo server that reads nothing for two seconds and then
/// echoes with backpressure. The budget holds (received payload past it is
/// dropped and comes again; `send` takes only what fits and `Writable`
/// follows), and every byte still arrives, echoed exactly.
#[test]
fn a_core_wide_buffer_budget_holds_and_nothing_is_lost() {
    const BUDGET: usize = 100_000;
    const SIZE: usize = 200_000;
    let mut w = World::new(3, Impair::default(), 16);
    w.engines[1] = Engine::new(
        EngineConfig {
            tcp: cfg(),
            secret: [2; 16],
            max_buffered: BUDGET,
            ..EngineConfig::default()
        },
        w.now,
    );
    w.engines[1].listen(SERVER, PORT, 16);
    let start = w.now;
    let mut clients: HashMap<ConnId, (Bytes, usize, Vec<u8>)> = HashMap::new();
    for i in 0..8u64 {
        let id = w.engines[0].connect(w.now, CLIENT, (SERVER, PORT)).unwrap();
        clients.insert(id, (Bytes::from(pattern(100 + i, SIZE)), 0, Vec::new()));
    }
    // Server side: connections with data to read, bytes waiting to be sent.
    let mut readable = std::collections::HashSet::new();
    let mut pending: HashMap<ConnId, std::collections::VecDeque<Bytes>> = HashMap::new();
    let mut peer_closed = std::collections::HashSet::new();
    let (mut done, mut peak) = (0, 0u64);
    w.run(Duration::from_secs(600), |w| {
        let s = &mut w.engines[1];
        peak = peak.max(s.stats().buffered);
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Incoming { .. } => while s.accept(SERVER, PORT).is_some() {},
                Event::Readable(id) | Event::Writable(id) => {
                    readable.insert(id);
                }
                Event::PeerClosed(id) => {
                    peer_closed.insert(id);
                    readable.insert(id);
                }
                _ => {}
            }
        }
        if w.now >= start + Duration::from_secs(2) {
            for id in readable.clone() {
                let q = pending.entry(id).or_default();
                loop {
                    // Send what waits first; read more only when it all went.
                    while let Some(b) = q.pop_front() {
                        let n = s.send(id, b.clone());
                        if n < b.len() {
                            q.push_front(b.slice(n..));
                            break;
                        }
                    }
                    if !q.is_empty() {
                        break; // Writable will bring us back
                    }
                    match s.recv(id) {
                        Some(b) => q.push_back(b),
                        None => break,
                    }
                }
                if q.is_empty() && s.connection(id).is_none_or(|c| c.recv_ready() == 0) {
                    readable.remove(&id);
                    if peer_closed.remove(&id) {
                        s.close(id);
                    }
                }
            }
        }
        let c = &mut w.engines[0];
        while let Some(ev) = c.poll_event() {
            match ev {
                Event::Connected(id) | Event::Writable(id) => {
                    let (out, sent, _) = clients.get_mut(&id).unwrap();
                    *sent += c.send(id, out.slice(*sent..));
                }
                Event::Readable(id) => {
                    let (out, _, got) = clients.get_mut(&id).unwrap();
                    while let Some(b) = c.recv(id) {
                        got.extend_from_slice(&b);
                    }
                    if got.len() == out.len() {
                        assert!(got[..] == out[..], "echo differs");
                        c.close(id);
                    }
                }
                Event::Closed(_, why) => {
                    assert_eq!(why, CloseReason::Normal);
                    done += 1;
                }
                _ => {}
            }
        }
        done == 8 && w.engines[1].is_empty()
    });
    assert_eq!(done, 8);
    let s = w.engines[1].stats();
    // Payload is checked against the budget before it is taken: one
    // segment's worth past it at most.
    assert!(
        peak as usize <= BUDGET + 1500,
        "peak {peak} over a budget of {BUDGET}"
    );
    assert!(s.rx_over_budget > 0, "received payload was refused: {s:?}");
    assert!(s.send_over_budget > 0, "send was cut short: {s:?}");
    assert_eq!(
        s.buffered, 0,
        "nothing counted once every connection is gone"
    );
}

/// Issue 18, point 2: floods of RST, SYN, FIN, ACK and data segments with
/// random sequence numbers, at both ends of every connection throughout
/// the transfers, disturb none of them (RFC 5961: only an exact RST
/// resets; anything else in the window gets a challenge ACK; ACKs for
/// data never sent or from before the window are not acted on).
/// Regression: a forged segment's timestamp became TS.Recent before the
/// segment was found acceptable, and then every real segment failed PAWS
/// until the connection timed out.
#[test]
fn blind_floods_disturb_no_established_connection() {
    let w = echo_many_forged(
        7,
        Impair {
            delay_us: 200,
            ..Impair::default()
        },
        8,
        100_000,
        8,
        10,
    );
    let (c, s) = (w.engines[0].stats(), w.engines[1].stats());
    assert!(
        c.challenge_acks + s.challenge_acks > 100,
        "the flood reached the connections: {} + {} challenge ACKs",
        c.challenge_acks,
        s.challenge_acks
    );
}
