//! The HTTP connection manager on virtual time: routing, rewriting,
//! pooling, local answers and framing checks, against a scripted HTTP
//! upstream.

use std::time::Duration;

use bytes::Bytes;
use netstack::testing::{Impair, pattern};

use super::*;
use crate::http::codec::{self, Limits};

const SECOND: Duration = Duration::from_secs(1);

fn clean() -> [Impair; 2] {
    [Impair::default(), Impair::default()]
}

const ROUTES: &str = r#"
  - name: r
    response_headers_to_add: [{key: x-config, value: c}]
    virtual_hosts:
      - name: api
        domains: [api.example.com]
        routes:
          - match: {prefix: /api/}
            route: {cluster: a, prefix_rewrite: /v1/}
            request_headers_to_add: [{key: x-added, value: '1'}]
          - match: {path: /moved}
            redirect: {path_redirect: /new, response_code: 302}
          - match: {prefix: /teapot}
            direct_response: {status: 418, body: short and stout}
          - match: {prefix: /}
            route: {cluster: b}
      - name: rest
        domains: ['*']
        routes:
          - match: {connect_matcher: {}}
            route: {cluster: b}
          - match: {prefix: /}
            route: {cluster: b}
      - name: none
        domains: [nowhere.example.com]
"#;

fn world(seed: u64, legs: [Impair; 2], http_extra: &str) -> World {
    world_with(seed, legs, http_extra, "", Mode::HttpEcho)
}

/// With `b_extra` in cluster b's fields, and the upstream in `mode`.
fn world_with(seed: u64, legs: [Impair; 2], http_extra: &str, b_extra: &str, mode: Mode) -> World {
    let cfg = config(&format!(
        "listeners:
  - {{name: web, address: 0.0.0.0:{LISTEN}, filter_chains: [{{http: {{route_config: r{http_extra}}}}}]}}
clusters:
  - {{name: a, endpoints: [{{address: 10.10.2.2:80}}]}}
  - {{name: b, endpoints: [{{address: 10.10.2.3:80}}]{b_extra}}}
route_configs:{ROUTES}"
    ));
    let mut w = World::new(cfg, mode, seed, legs);
    w.c.mode = Mode::Read;
    w
}

/// The responses in `got`: status, headers (lowercased names), body.
/// Status, headers (lowercased names), body.
type Response = (u16, Vec<(String, String)>, Vec<u8>);

fn responses(got: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    let mut buf = Bytes::copy_from_slice(got);
    while let Ok(Some((h, n))) = codec::parse_response(&buf, Limits::RESPONSE) {
        let len = match codec::response_body(b"GET", &h) {
            Ok(codec::Body::Length(l)) => l as usize,
            _ => 0,
        };
        if buf.len() < n + len {
            break;
        }
        let hs = h
            .headers
            .iter()
            .map(|x| {
                (
                    String::from_utf8_lossy(&x.name).to_ascii_lowercase(),
                    String::from_utf8_lossy(&x.value).into_owned(),
                )
            })
            .collect();
        out.push((h.status, hs, buf[n..n + len].to_vec()));
        buf = buf.slice(n + len..);
    }
    out
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn send(w: &mut World, id: ConnId, data: &[u8]) {
    w.c.conns
        .get_mut(&id)
        .expect("client conn")
        .out
        .extend_from_slice(data);
    w.c.pump(&mut w.client, id);
}

fn wait_responses(w: &mut World, id: ConnId, n: usize) -> Vec<Response> {
    w.run_until(30 * SECOND, |w| {
        responses(&w.client_conn(id).got).len() >= n
    });
    responses(&w.client_conn(id).got)
}

#[test]
fn pipelined_requests_are_routed_rewritten_and_share_a_pooled_connection() {
    let mut w = world(1, clean(), "");
    let id = w.connect(
        b"GET /api/x?q=1 HTTP/1.1\r\nHost: api.example.com\r\nConnection: keep-alive, x-hop\r\nX-Hop: secret\r\n\r\n\
          GET /api/y HTTP/1.1\r\nHost: api.example.com\r\nx-request-id: given\r\n\r\n",
        false,
    );
    let r = wait_responses(&mut w, id, 2);
    assert_eq!(r.len(), 2);
    for (status, hs, _) in &r {
        assert_eq!(*status, 200);
        assert_eq!(header(hs, "x-config"), Some("c"));
        assert_eq!(header(hs, "server"), Some("dataplane"));
        assert!(header(hs, "x-envoy-upstream-service-time").is_some());
    }
    let first = String::from_utf8_lossy(&r[0].2).into_owned();
    assert!(first.starts_with("GET /v1/x?q=1 HTTP/1.1\r\n"), "{first}");
    for want in [
        "host: api.example.com",
        "x-forwarded-proto: http",
        "x-envoy-original-path: /api/x?q=1",
        "x-added: 1",
        "x-envoy-expected-rq-timeout-ms: 15000",
        "x-request-id: ",
    ] {
        assert!(
            first.to_ascii_lowercase().contains(want),
            "no {want:?} in\n{first}"
        );
    }
    assert!(!first.to_ascii_lowercase().contains("x-hop"), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection"),
        "{first}"
    );
    let second = String::from_utf8_lossy(&r[1].2).into_owned();
    assert!(second.starts_with("GET /v1/y HTTP/1.1\r\n"), "{second}");
    assert!(second.contains("x-request-id: given"), "{second}");
    // One upstream connection, used twice.
    assert_eq!(w.u.accepted.len(), 1);
    assert_eq!(w.cluster_counter("a", "rq_total"), 2);
    assert_eq!(w.cluster_counter("a", "rq_reused"), 1);
    assert_eq!(w.listener_counter("web", "rq_2xx"), 2);
    // The client leaves; the pooled connection stays for the next one.
    w.client.close(id);
    w.run_until(10 * SECOND, |w| w.sessions() == 0);
    assert_eq!(
        w.cluster_counter("a", "cx_total") - w.cluster_counter("a", "cx_closed"),
        1
    );
}

#[test]
fn local_answers_no_route_redirect_and_direct_response() {
    let mut w = world(2, clean(), "");
    let id = w.connect(
        b"GET /x HTTP/1.1\r\nHost: nowhere.example.com\r\n\r\n\
          GET /moved?a HTTP/1.1\r\nHost: api.example.com\r\n\r\n\
          GET /teapot HTTP/1.1\r\nHost: API.example.com\r\n\r\n",
        false,
    );
    let r = wait_responses(&mut w, id, 3);
    assert_eq!(r[0].0, 404);
    assert_eq!(header(&r[0].1, "content-length"), Some("0"));
    assert_eq!(r[1].0, 302);
    assert_eq!(
        header(&r[1].1, "location"),
        Some("http://api.example.com/new?a")
    );
    assert_eq!(r[2].0, 418);
    assert_eq!(r[2].2, b"short and stout");
    assert_eq!(header(&r[2].1, "x-config"), Some("c"));
    assert!(w.u.accepted.is_empty(), "nothing went upstream");
    assert_eq!(w.listener_counter("web", "rq_no_route"), 1);
    assert_eq!(w.listener_counter("web", "rq_direct"), 2);
}

#[test]
fn smuggling_shapes_get_400_and_never_reach_the_upstream() {
    for req in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut w = world(3, clean(), "");
        let id = w.connect(req, false);
        w.run_until(10 * SECOND, |w| w.client_conn(id).eof);
        let r = responses(&w.client_conn(id).got);
        assert_eq!(r.len(), 1, "{:?}", String::from_utf8_lossy(req));
        assert_eq!(r[0].0, 400);
        assert_eq!(header(&r[0].1, "connection"), Some("close"));
        assert!(w.u.accepted.is_empty());
        assert_eq!(w.listener_counter("web", "rq_malformed"), 1);
    }
}

#[test]
fn a_large_body_crosses_lossy_links_by_reference_and_intact() {
    let lossy = Impair {
        drop_pct: 1.0,
        reorder_pct: 1.0,
        reorder_us: 2_000,
        delay_us: 100,
        ..Impair::default()
    };
    let body = pattern(7, 600_000);
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let mut w = world(4, [lossy.clone(), lossy], "");
    let id = w.connect(&req, false);
    let r = wait_responses(&mut w, id, 1);
    assert_eq!(r[0].0, 200);
    assert!(r[0].2.ends_with(&body), "the body came back whole");
    assert_eq!(w.listener_counter("web", "rq_total"), 1);
}

#[test]
fn a_pooled_connection_the_upstream_closed_is_not_used_again() {
    let mut w = world(5, clean(), "");
    let id = w.connect(b"GET /a HTTP/1.1\r\nHost: b\r\n\r\n", false);
    wait_responses(&mut w, id, 1);
    assert_eq!(w.u.accepted.len(), 1);
    let up = w.u.accepted[0];
    w.upstream.close(up);
    w.run_for(SECOND);
    send(&mut w, id, b"GET /b HTTP/1.1\r\nHost: b\r\n\r\n");
    let r = wait_responses(&mut w, id, 2);
    assert_eq!(r[1].0, 200);
    assert_eq!(
        w.u.accepted.len(),
        2,
        "a new connection for the second request"
    );
    w.client.close(id);
    w.run_until(10 * SECOND, |w| w.sessions() == 0);
}

/// Overload: past the mbuf threshold new connections are refused with a
/// RST, an idle keep-alive connection is closed at once, and a request in
/// progress is answered in full, with `connection: close`; below it again,
/// keep-alive and accepting come back.
#[test]
fn overload_refuses_new_connections_and_sheds_idle_keepalive_ones() {
    let cfg = config(&format!(
        "listeners:
  - {{name: web, address: 0.0.0.0:{LISTEN}, filter_chains: [{{http: {{route_config: r}}}}]}}
clusters:
  - {{name: a, endpoints: [{{address: 10.10.2.2:80}}]}}
  - {{name: b, endpoints: [{{address: 10.10.2.3:80}}]}}
route_configs:{ROUTES}
overload_manager:
  actions:
    - name: envoy.overload_actions.stop_accepting_connections
      triggers: [{{name: mbufs, threshold: {{value: 0.9}}}}]
    - name: envoy.overload_actions.disable_http_keepalive
      triggers: [{{name: mbufs, threshold: {{value: 0.95}}}}]"
    ));
    let mut w = World::new(cfg, Mode::HttpEcho, 31, clean());
    w.c.mode = Mode::Read;
    let get = b"GET /x HTTP/1.1\r\nHost: b\r\n\r\n";
    let idle = w.connect(get, false);
    assert_eq!(wait_responses(&mut w, idle, 1).len(), 1);
    // A request whose body has not all come yet.
    let busy = w.connect(
        b"POST /y HTTP/1.1\r\nHost: b\r\ncontent-length: 10\r\n\r\nabc",
        false,
    );
    w.run_for(SECOND / 10);
    assert!(responses(&w.client_conn(busy).got).is_empty());
    let (now, stats) = (w.now, w.apps.stats().clone());
    w.apps.check_overload(&mut w.proxy, now, 0.97);
    assert_eq!(stats.overload.mbufs_pressure.get(), 97);
    assert_eq!(stats.overload.stop_accepting_connections_active.get(), 1);
    assert_eq!(stats.overload.disable_http_keepalive_active.get(), 1);
    let refused = w.connect(get, false);
    w.run_until(5 * SECOND, |w| {
        w.client_conn(idle).eof && w.client_conn(refused).closed.is_some()
    });
    assert_eq!(w.client_conn(refused).closed, Some(CloseReason::Refused));
    assert_eq!(w.proxy.stats().overload_refused, 1);
    assert_eq!(responses(&w.client_conn(idle).got).len(), 1, "nothing more");
    assert_eq!(stats.overload.idle_connections_shed.get(), 1);
    assert_eq!(stats.overload.keepalive_disabled.get(), 1);
    // The request in progress completes, and its connection closes.
    send(&mut w, busy, b"defghij");
    w.run_until(5 * SECOND, |w| w.client_conn(busy).eof);
    let r = responses(&w.client_conn(busy).got);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, 200);
    assert!(r[0].2.ends_with(b"abcdefghij"));
    assert_eq!(header(&r[0].1, "connection"), Some("close"));
    // Pressure gone: accepting and keep-alive again.
    let now = w.now;
    w.apps.check_overload(&mut w.proxy, now + SECOND, 0.5);
    assert_eq!(stats.overload.stop_accepting_connections_active.get(), 0);
    let again = w.connect(get, false);
    let r = wait_responses(&mut w, again, 1);
    assert_eq!(header(&r[0].1, "connection"), None);
    assert!(!w.client_conn(again).eof);
}

#[test]
fn requests_past_the_limit_close_the_connection() {
    let mut w = world(6, clean(), ", max_requests_per_connection: 2");
    let id = w.connect(
        b"GET /a HTTP/1.1\r\nHost: b\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\nGET /c HTTP/1.1\r\nHost: b\r\n\r\n",
        false,
    );
    w.run_until(10 * SECOND, |w| w.client_conn(id).eof);
    let r = responses(&w.client_conn(id).got);
    assert_eq!(r.len(), 2, "the third request is not answered");
    assert_eq!(r[0].0, 200);
    assert_eq!(header(&r[0].1, "connection"), None);
    assert_eq!(header(&r[1].1, "connection"), Some("close"));
}

#[test]
fn a_normalized_path_is_routed_and_sent() {
    let mut w = world(7, clean(), ", normalize_path: true, merge_slashes: true");
    let id = w.connect(
        b"GET /api/a/../b//c?x=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
        false,
    );
    let r = wait_responses(&mut w, id, 1);
    assert_eq!(r[0].0, 200);
    let body = String::from_utf8_lossy(&r[0].2).into_owned();
    assert!(body.starts_with("GET /v1/b/c?x=1 HTTP/1.1\r\n"), "{body}");
}

#[test]
fn an_allowed_upgrade_becomes_a_tunnel_and_others_get_403() {
    let mut w = world(8, clean(), ", upgrade_configs: [{upgrade_type: websocket}]");
    let id = w.connect(
        b"GET /ws HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        false,
    );
    let r = wait_responses(&mut w, id, 1);
    assert_eq!(r[0].0, 101);
    assert_eq!(header(&r[0].1, "upgrade"), Some("websocket"));
    // What follows goes both ways as bytes, not HTTP.
    let head_len = w.client_conn(id).got.len();
    send(&mut w, id, b"\x81\x05hello, not http at all");
    w.run_until(10 * SECOND, |w| {
        w.client_conn(id).got.len() >= head_len + 24
    });
    assert_eq!(
        &w.client_conn(id).got[head_len..],
        b"\x81\x05hello, not http at all"
    );
    w.client.close(id);
    w.run_until(10 * SECOND, |w| w.sessions() == 0);
    w.assert_settled();

    let id = w.connect(
        b"GET /h2 HTTP/1.1\r\nHost: b\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        false,
    );
    w.run_until(10 * SECOND, |w| w.client_conn(id).eof);
    let r = responses(&w.client_conn(id).got);
    assert_eq!(r[0].0, 403);
}

#[test]
fn an_http_1_0_client_is_served_in_http_1_0_and_its_connection_not_pooled() {
    let mut w = world(9, clean(), "");
    let id = w.connect(
        b"GET /old HTTP/1.0\r\nHost: b\r\nConnection: keep-alive\r\n\r\n",
        false,
    );
    let r = wait_responses(&mut w, id, 1);
    assert_eq!(r[0].0, 200);
    let seen = String::from_utf8_lossy(&r[0].2).into_owned();
    assert!(seen.starts_with("GET /old HTTP/1.0\r\n"), "{seen}");
    assert!(!seen.to_ascii_lowercase().contains("connection"), "{seen}");
    // Not pooled: the upstream connection is closed once answered.
    w.run_until(10 * SECOND, |w| {
        w.cluster_counter("b", "cx_total") == w.cluster_counter("b", "cx_closed")
    });
}

#[test]
fn requests_past_max_requests_get_503_and_the_slot_comes_back() {
    let mut w = world_with(10, clean(), "", ", limits: {max_requests: 1}", Mode::Stall);
    let first = w.connect(b"GET /slow HTTP/1.1\r\nHost: b\r\n\r\n", false);
    w.run_until(10 * SECOND, |w| !w.u.accepted.is_empty());
    let second = w.connect(b"GET /more HTTP/1.1\r\nHost: b\r\n\r\n", false);
    let r = wait_responses(&mut w, second, 1);
    assert_eq!(r[0].0, 503);
    assert_eq!(
        r[0].2,
        b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
    );
    assert_eq!(w.cluster_counter("b", "overflows"), 1);
    // The first request's client leaves: its slot is free again.
    w.client.abort(first);
    w.client.close(second);
    w.run_until(10 * SECOND, |w| w.sessions() == 0);
    w.assert_settled();
}

#[test]
fn the_fault_filter_delays_then_aborts_as_configured() {
    let mut w = world(
        11,
        clean(),
        ", fault: {delay: {fixed_delay_ms: 700, percentage: 100}}",
    );
    let t0 = w.now;
    let id = w.connect(b"GET /late HTTP/1.1\r\nHost: b\r\n\r\n", false);
    let r = wait_responses(&mut w, id, 1);
    assert_eq!(r[0].0, 200);
    assert!(
        w.now.saturating_since(t0) >= Duration::from_millis(700),
        "not delayed"
    );
    assert_eq!(w.listener_counter("web", "rq_fault_delays"), 1);

    let mut w = world(
        12,
        clean(),
        ", fault: {delay: {fixed_delay_ms: 300, percentage: 100}, abort: {http_status: 418, percentage: 100}}",
    );
    let t0 = w.now;
    let id = w.connect(
        b"POST /x HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc",
        false,
    );
    let r = wait_responses(&mut w, id, 1);
    assert_eq!(r[0].0, 418);
    assert_eq!(r[0].2, b"fault filter abort");
    assert!(w.now.saturating_since(t0) >= Duration::from_millis(300));
    assert!(w.u.accepted.is_empty());
}

#[test]
fn a_request_body_that_does_not_come_in_time_gets_408() {
    let mut w = world(13, clean(), ", request_timeout_ms: 500");
    let id = w.connect(
        b"POST /slow HTTP/1.1\r\nHost: b\r\nContent-Length: 10\r\n\r\nabc",
        false,
    );
    w.run_until(10 * SECOND, |w| w.client_conn(id).eof);
    let got = String::from_utf8_lossy(&w.client_conn(id).got).into_owned();
    // The upstream answered nothing (its body is not in): the 408 is ours.
    assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    assert!(got.ends_with("request timeout"), "{got}");
    assert_eq!(w.listener_counter("web", "rq_timeouts"), 1);
}

#[test]
fn informational_heads_in_the_segment_of_the_answer_are_all_passed_on() {
    let mut w = world_with(14, clean(), "", "", Mode::Read);
    let id = w.connect(b"GET /x HTTP/1.1\r\nHost: b\r\n\r\n", false);
    w.run_until(10 * SECOND, |w| !w.u.accepted.is_empty());
    let up = w.u.accepted[0];
    w.u.conns.get_mut(&up).unwrap().out.extend_from_slice(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    );
    w.poke_upstream();
    w.run_until(10 * SECOND, |w| w.client_conn(id).got.ends_with(b"ok"));
    let got = String::from_utf8_lossy(&w.client_conn(id).got).into_owned();
    assert!(
        got.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"),
        "{got}"
    );
    assert!(got.contains("HTTP/1.1 200 OK\r\n"), "{got}");
}

#[test]
fn connect_tunnels_where_allowed_and_is_refused_elsewhere() {
    let mut w = world(15, clean(), ", upgrade_configs: [{upgrade_type: CONNECT}]");
    // The client's first tunnel bytes come with the request.
    let id = w.connect(
        b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\nearly",
        false,
    );
    w.run_until(10 * SECOND, |w| w.client_conn(id).got.ends_with(b"early"));
    let got = String::from_utf8_lossy(&w.client_conn(id).got).into_owned();
    assert!(
        got.starts_with("HTTP/1.1 200 Connection established\r\n"),
        "{got}"
    );
    assert!(
        !got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    let up = &w.u.conns[&w.u.accepted[0]];
    let seen = String::from_utf8_lossy(&up.got).into_owned();
    assert!(
        seen.starts_with("CONNECT db.internal:5432 HTTP/1.1\r\n"),
        "{seen}"
    );
    send(&mut w, id, b" and more");
    w.run_until(10 * SECOND, |w| {
        w.client_conn(id).got.ends_with(b" and more")
    });
    w.client.close(id);
    w.run_until(10 * SECOND, |w| w.sessions() == 0);
    w.assert_settled();

    // Not in upgrade_configs: 403; and a path request never takes the
    // connect route.
    let mut w = world(16, clean(), "");
    let id = w.connect(
        b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
    );
    w.run_until(10 * SECOND, |w| w.client_conn(id).eof);
    assert_eq!(responses(&w.client_conn(id).got)[0].0, 403);
    assert!(w.u.accepted.is_empty());
}
