//! The L4 splice's behaviours on virtual time.

use std::time::Duration;

use dataplane_config::ProxyUpdate;
use netstack::tcp::CloseReason;
use netstack::testing::{Impair, pattern};

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn clean() -> [Impair; 2] {
    [Impair::default(), Impair::default()]
}

fn lossy(pct: f64) -> Impair {
    Impair {
        drop_pct: pct,
        reorder_pct: pct,
        reorder_us: 2_000,
        delay_us: 100,
        ..Impair::default()
    }
}

fn one_endpoint(extra: &str) -> Config {
    web(&format!(
        "    endpoints: [{{address: 10.10.2.2:80}}]\n{extra}"
    ))
}

/// Everything the client sends comes back through an echoing upstream,
/// byte for byte, and the session ends cleanly on both sides.
fn echo_through(seed: u64, legs: [Impair; 2], size: usize) {
    let mut w = World::new(one_endpoint(""), Mode::Echo, seed, legs);
    let data = pattern(seed, size);
    let id = w.connect(&data, true);
    w.run_until(120 * SECOND, |w| {
        w.client_conn(id).closed.is_some() && w.sessions() == 0
    });
    let c = w.client_conn(id);
    assert_eq!(c.closed, Some(CloseReason::Normal));
    assert!(
        c.got == data,
        "echo differs ({} of {} bytes)",
        c.got.len(),
        size
    );
    let up = &w.u.conns[&w.u.accepted[0]];
    assert!(
        up.got == data,
        "upstream got {} of {} bytes",
        up.got.len(),
        size
    );
    assert_eq!(w.listener_counter("web", "bytes_up"), size as u64);
    assert_eq!(w.listener_counter("web", "bytes_down"), size as u64);
    assert_eq!(w.cluster_counter("web", "cx_connected"), 1);
    assert_eq!(w.listener_counter("web", "cx_closed"), 1);
    w.assert_settled();
}

#[test]
fn splices_both_ways_byte_exact() {
    echo_through(1, clean(), 1 << 20);
}

#[test]
fn splices_through_loss_and_reordering_on_both_legs() {
    for seed in 2..5 {
        echo_through(seed, [lossy(2.0), lossy(2.0)], 256 << 10);
    }
}

/// The client's FIN reaches the upstream only after its request, and the
/// upstream's reply still reaches the half-closed client.
#[test]
fn half_close_is_forwarded_and_the_reply_still_arrives() {
    let mut w = World::new(one_endpoint(""), Mode::ReplyOnEof, 7, clean());
    w.u.reply = b"reply after your FIN".to_vec();
    let id = w.connect(b"request", true);
    w.run_until(10 * SECOND, |w| w.client_conn(id).closed.is_some());
    let up = &w.u.conns[&w.u.accepted[0]];
    assert!(up.eof, "the upstream saw the client's FIN");
    assert_eq!(up.got, b"request");
    let c = w.client_conn(id);
    assert_eq!(c.got, b"reply after your FIN");
    assert!(c.eof);
    assert_eq!(c.closed, Some(CloseReason::Normal));
    w.run_until(10 * SECOND, |w| w.sessions() == 0);
    w.assert_settled();
}

/// A reset on one side resets the other, counted once per level.
#[test]
fn a_reset_on_either_side_resets_the_other() {
    // The upstream resets.
    let mut w = World::new(one_endpoint(""), Mode::Echo, 8, clean());
    let id = w.connect(b"hello", false);
    w.run_until(10 * SECOND, |w| w.client_conn(id).got == b"hello");
    let up = w.u.accepted[0];
    w.upstream.abort(up);
    w.run_until(10 * SECOND, |w| w.client_conn(id).closed.is_some());
    assert_eq!(w.client_conn(id).closed, Some(CloseReason::Reset));
    assert_eq!(w.cluster_counter("web", "resets"), 1);
    assert_eq!(w.listener_counter("web", "resets"), 1);
    w.run_until(SECOND, |w| w.sessions() == 0);

    // The client resets.
    let mut w = World::new(one_endpoint(""), Mode::Echo, 9, clean());
    let id = w.connect(b"hello", false);
    w.run_until(10 * SECOND, |w| w.client_conn(id).got == b"hello");
    w.client.abort(id);
    w.run_until(10 * SECOND, |w| {
        w.u.conns[&w.u.accepted[0]].closed.is_some()
    });
    assert_eq!(w.u.conns[&w.u.accepted[0]].closed, Some(CloseReason::Reset));
    assert_eq!(w.sessions(), 0);
}

/// An upstream that never answers: the client is reset at the connect
/// timeout, not before, and the endpoint counts it.
#[test]
fn connect_timeout_resets_the_client() {
    let cfg = web("    connect_timeout_ms: 300\n    endpoints: [{address: 10.10.2.99:80}]\n");
    let mut w = World::new(cfg, Mode::Echo, 10, clean());
    let t0 = w.now;
    let id = w.connect(b"anyone?", false);
    w.run_until(10 * SECOND, |w| w.client_conn(id).closed.is_some());
    let took = w.now.saturating_since(t0);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(400),
        "reset after {took:?}"
    );
    assert_eq!(w.client_conn(id).closed, Some(CloseReason::Reset));
    assert_eq!(w.cluster_counter("web", "connect_timeouts"), 1);
    assert_eq!(
        w.endpoint_counter("web", "10.10.2.99:80", "connect_timeouts"),
        1
    );
    assert_eq!(w.listener_counter("web", "refused"), 1);
    w.assert_settled();
    assert_eq!(
        w.live.clusters["web"]
            .gauges
            .pending
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// A session quiet for the idle timeout is reset on both sides; traffic
/// keeps it alive.
#[test]
fn idle_timeout_ends_quiet_sessions_only() {
    let cfg = one_endpoint("    idle_timeout_ms: 500\n");
    let mut w = World::new(cfg, Mode::Echo, 11, clean());
    let id = w.connect(b"ping", false);
    w.run_until(10 * SECOND, |w| w.client_conn(id).got == b"ping");
    // Traffic every 300 ms keeps it open past several timeouts.
    for i in 0..5u8 {
        w.run_for(Duration::from_millis(300));
        let c = w.c.conns.get_mut(&id).unwrap();
        c.out.push(i);
        w.c.pump(&mut w.client, id);
        assert!(w.client_conn(id).closed.is_none(), "closed while active");
    }
    let quiet_from = w.now;
    w.run_until(10 * SECOND, |w| w.client_conn(id).closed.is_some());
    let quiet = w.now.saturating_since(quiet_from);
    assert!(
        quiet >= Duration::from_millis(500),
        "closed after {quiet:?}"
    );
    assert_eq!(w.client_conn(id).closed, Some(CloseReason::Reset));
    assert_eq!(w.listener_counter("web", "idle_timeouts"), 1);
    w.run_until(SECOND, |w| {
        w.u.conns[&w.u.accepted[0]].closed == Some(CloseReason::Reset)
    });
    w.assert_settled();
}

/// An upstream that does not read: the proxy holds no more than its
/// windows and queues, the client is slowed by a closed window, and
/// everything arrives once the upstream reads.
#[test]
fn backpressure_bounds_what_the_proxy_holds() {
    let mut w = World::new(one_endpoint(""), Mode::Stall, 12, clean());
    let size = 16 << 20;
    let data = pattern(12, size);
    let id = w.connect(&data, true);
    w.run_for(5 * SECOND);
    let held = w.proxy.stats().buffered;
    let t = &w.cfg.tcp;
    let bound = 2 * u64::from(t.recv_buffer + t.send_buffer);
    assert!(
        held > 0 && held <= bound,
        "proxy holds {held} bytes, bound {bound}"
    );
    let sent = w.client_conn(id).sent;
    assert!(
        sent < size / 4,
        "client sent {sent} of {size} into a stalled upstream"
    );
    w.u.mode = Mode::Read;
    w.poke_upstream();
    w.run_until(120 * SECOND, |w| w.u.conns[&w.u.accepted[0]].eof);
    assert!(w.u.conns[&w.u.accepted[0]].got == data);
}

/// `max_connections` over all cores: the second connection is refused
/// (overflow), and the slot is free again once the first one ends.
#[test]
fn circuit_breaker_refuses_past_max_connections() {
    let cfg = one_endpoint("    limits: {max_connections: 1}\n");
    let mut w = World::new(cfg, Mode::Echo, 13, clean());
    let first = w.connect(b"one", false);
    w.run_until(10 * SECOND, |w| w.client_conn(first).got == b"one");
    let second = w.connect(b"two", false);
    w.run_until(10 * SECOND, |w| w.client_conn(second).closed.is_some());
    assert_eq!(w.client_conn(second).closed, Some(CloseReason::Reset));
    assert_eq!(w.cluster_counter("web", "overflows"), 1);
    assert_eq!(w.listener_counter("web", "overflows"), 1);
    // The first ends; a third gets through.
    let c = w.c.conns.get_mut(&first).unwrap();
    c.close_after = true;
    w.c.pump(&mut w.client, first);
    w.run_until(10 * SECOND, |w| w.sessions() == 0);
    let third = w.connect(b"three", true);
    w.run_until(10 * SECOND, |w| w.client_conn(third).closed.is_some());
    assert_eq!(w.client_conn(third).got, b"three");
    assert_eq!(w.cluster_counter("web", "overflows"), 1);
    w.run_until(10 * SECOND, |w| w.sessions() == 0);
    w.assert_settled();
}

/// An endpoint that refuses connections is ejected after
/// `consecutive_failures`, and new connections go to the healthy one.
#[test]
fn a_failing_endpoint_is_ejected() {
    let cfg = web(
        "    endpoints: [{address: 10.10.2.2:80}, {address: 10.10.2.3:81}]\n    outlier_detection: {consecutive_failures: 2, max_ejection_percent: 50, base_ejection_ms: 600000}\n",
    );
    let mut w = World::new(cfg, Mode::Echo, 14, clean());
    let mut ok = 0;
    let mut refused = 0;
    for i in 0..12u8 {
        let id = w.connect(&[i], true);
        w.run_until(10 * SECOND, |w| w.client_conn(id).closed.is_some());
        match w.client_conn(id).closed {
            Some(CloseReason::Normal) => ok += 1,
            _ => refused += 1,
        }
    }
    let bad = "10.10.2.3:81";
    assert_eq!(w.endpoint_counter("web", bad, "connect_failures"), 2);
    assert_eq!(w.endpoint_counter("web", bad, "ejections"), 1);
    assert_eq!(w.cluster_counter("web", "ejections"), 1);
    assert_eq!((ok, refused), (10, 2));
    w.run_until(10 * SECOND, |w| w.sessions() == 0);
    w.assert_settled();
}

/// Draining: new connections are refused, the session in progress runs to
/// its end.
#[test]
fn drain_refuses_new_connections_and_lets_sessions_finish() {
    let mut w = World::new(one_endpoint(""), Mode::Echo, 15, clean());
    let old = w.connect(b"before", false);
    w.run_until(10 * SECOND, |w| w.client_conn(old).got == b"before");
    w.apps.drain(&mut w.proxy, w.now);
    assert!(
        w.apps
            .stats()
            .drained
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    let new = w.connect(b"after", true);
    w.run_until(10 * SECOND, |w| w.client_conn(new).closed.is_some());
    assert_ne!(w.client_conn(new).closed, Some(CloseReason::Normal));
    assert!(w.client_conn(new).got.is_empty());
    let c = w.c.conns.get_mut(&old).unwrap();
    c.out.extend_from_slice(b" and during");
    c.close_after = true;
    w.c.pump(&mut w.client, old);
    w.run_until(10 * SECOND, |w| w.client_conn(old).closed.is_some());
    assert_eq!(w.client_conn(old).got, b"before and during");
    assert_eq!(w.client_conn(old).closed, Some(CloseReason::Normal));
    w.assert_settled();
}

/// A live update mid-session: the cluster's endpoint changes and then the
/// listener goes; the session in progress finishes on its old endpoint,
/// new connections use the new one, then none are taken.
#[test]
fn a_live_update_does_not_disturb_a_session() {
    let mut w = World::new(one_endpoint(""), Mode::Echo, 16, clean());
    let old = w.connect(b"first half", false);
    w.run_until(10 * SECOND, |w| w.client_conn(old).got == b"first half");

    let mut cluster = w.live.state.clusters["web"].clone();
    cluster.endpoints[0].address = "10.10.2.3:80".into();
    w.update(ProxyUpdate {
        version: "v2".into(),
        clusters: vec![cluster],
        ..ProxyUpdate::default()
    });
    let new = w.connect(b"to B", true);
    w.run_until(10 * SECOND, |w| w.client_conn(new).closed.is_some());
    assert_eq!(w.client_conn(new).got, b"to B");
    let b = w.u.accepted[1];
    assert_eq!(w.u.conns[&b].local, Some((UP_B, 80)));

    w.update(ProxyUpdate {
        version: "v3".into(),
        remove_listeners: vec!["web".into()],
        ..ProxyUpdate::default()
    });
    let refused = w.connect(b"nobody", true);
    w.run_until(10 * SECOND, |w| w.client_conn(refused).closed.is_some());
    assert_ne!(w.client_conn(refused).closed, Some(CloseReason::Normal));

    // The first session still runs, on A.
    let c = w.c.conns.get_mut(&old).unwrap();
    c.out.extend_from_slice(b", second half");
    c.close_after = true;
    w.c.pump(&mut w.client, old);
    w.run_until(10 * SECOND, |w| w.client_conn(old).closed.is_some());
    assert_eq!(w.client_conn(old).got, b"first half, second half");
    assert_eq!(w.client_conn(old).closed, Some(CloseReason::Normal));
    let a = w.u.accepted[0];
    assert_eq!(w.u.conns[&a].local, Some((UP_A, 80)));
    w.assert_settled();
}

/// A cluster removed mid-session and added again under the same name: the
/// session keeps the old one (its slot lives until the session ends), new
/// connections take the new one, and nothing is counted twice or left over.
#[test]
fn a_cluster_removed_and_added_again_mid_session() {
    let mut w = World::new(one_endpoint(""), Mode::Echo, 17, clean());
    let old = w.connect(b"on A", false);
    w.run_until(10 * SECOND, |w| w.client_conn(old).got == b"on A");
    let mut cluster = w.live.state.clusters["web"].clone();
    w.update(ProxyUpdate {
        version: "gone".into(),
        remove_clusters: vec!["web".into()],
        ..ProxyUpdate::default()
    });
    let none = w.connect(b"x", true);
    w.run_until(10 * SECOND, |w| w.client_conn(none).closed.is_some());
    assert_ne!(w.client_conn(none).closed, Some(CloseReason::Normal));
    assert_eq!(w.listener_counter("web", "no_upstream"), 1);
    cluster.endpoints[0].address = "10.10.2.3:80".into();
    w.update(ProxyUpdate {
        version: "back".into(),
        clusters: vec![cluster],
        ..ProxyUpdate::default()
    });
    let new = w.connect(b"on B", true);
    w.run_until(10 * SECOND, |w| w.client_conn(new).closed.is_some());
    assert_eq!(w.client_conn(new).got, b"on B");
    assert_eq!(w.u.conns[&w.u.accepted[1]].local, Some((UP_B, 80)));
    // The first session, still on A, ends normally.
    let c = w.c.conns.get_mut(&old).unwrap();
    c.close_after = true;
    w.c.pump(&mut w.client, old);
    w.run_until(10 * SECOND, |w| w.client_conn(old).closed.is_some());
    assert_eq!(w.client_conn(old).closed, Some(CloseReason::Normal));
    w.run_until(10 * SECOND, |w| w.sessions() == 0);
    w.assert_settled();
    // The cluster added again starts its own counters and gauges (they
    // follow a name only while it is configured): its one session.
    assert_eq!(w.cluster_counter("web", "cx_total"), 1);
}

/// Two apps on one connector: each handshake's connect timeout goes back
/// to the app that acquired it, not to whichever app ticks first.
#[test]
fn a_connect_timeout_goes_to_the_app_that_acquired_the_connection() {
    use std::sync::{Arc, Mutex};

    use crate::app::{App, Cx};
    use crate::upstream::{Outcome, Upstream};

    /// Acquires one connection on its first tick; records its timeout.
    #[derive(Debug)]
    struct Prober {
        held: Option<Upstream>,
        started: bool,
        timed_out: Arc<Mutex<Vec<ConnId>>>,
    }
    impl App for Prober {
        fn handle(
            &mut self,
            _cx: &mut Cx<'_>,
            ev: netstack::tcp::Event,
        ) -> Option<netstack::tcp::Event> {
            Some(ev)
        }
        fn tick(&mut self, cx: &mut Cx<'_>) {
            if !self.started {
                self.started = true;
                self.held = Some(cx.acquire("web").expect("an upstream"));
            }
        }
        fn connect_timeout(&mut self, cx: &mut Cx<'_>, conn: ConnId) {
            let up = self.held.take().expect("ours");
            assert_eq!(up.conn, conn);
            cx.upstreams.release(up, Outcome::ConnectTimeout, cx.now);
            self.timed_out.lock().unwrap().push(conn);
        }
    }

    let cfg = web("    connect_timeout_ms: 200\n    endpoints: [{address: 10.10.2.99:80}]\n");
    let mut w = World::new(cfg, Mode::Echo, 18, clean());
    let timed_out = Arc::new(Mutex::new(Vec::new()));
    w.apps.push(Box::new(Prober {
        held: None,
        started: false,
        timed_out: timed_out.clone(),
    }));
    // The proxy (first app) has a session in its handshake at the same time.
    let id = w.connect(b"x", false);
    w.run_until(10 * SECOND, |w| {
        w.client_conn(id).closed.is_some() && !timed_out.lock().unwrap().is_empty()
    });
    assert_eq!(timed_out.lock().unwrap().len(), 1);
    assert_eq!(w.cluster_counter("web", "connect_timeouts"), 2);
    w.assert_settled();
}
