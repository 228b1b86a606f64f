//! The control agent end to end: a scripted xDS server of the test suite
//! (tonic on envoy-types, `e2e_tests::xds`) drives the real `control-agent`,
//! which configures the real data plane; kernel clients in the client
//! namespace check what is served. Both protocol variants (state of the
//! world and Delta) run the same scenarios.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use control_agent::bootstrap::any_from_yaml;
use e2e_tests::xds::{CDS, EDS, LDS, Listen, RDS, XdsServer, cla, eds_cluster, listener};
use e2e_tests::{
    Agent, Background, Dataplane, NGINX_BODY, Nginx, Topology, http_upstream, python_upstream,
    require_root, serial, two_port_config, unique_prefix,
};
use envoy_types::pb::google::protobuf::Any;
use serde_json::Value;

// === harness ===

/// Dropped in this order: the agent, the server, the upstreams, the data
/// plane, then the namespaces.
struct Setup {
    agent: Agent,
    server: XdsServer,
    _a: Background,
    _b: Background,
    dp: Dataplane,
    topo: Topology,
}

/// Upstreams `A` (10.10.2.2:7001) and `B` (:7002) that say their name; a
/// data plane with no listeners; the xDS server on a Unix socket with
/// listener `web` :8080 → EDS cluster `web` → A; the agent in `mode`.
fn setup(tag: &str, delta: bool) -> Setup {
    let topo = Topology::up(&unique_prefix(tag));
    let a = python_upstream(&topo, "name A", "10.10.2.2", 7001);
    let b = python_upstream(&topo, "name B", "10.10.2.2", 7002);
    let dp = Dataplane::start(&topo, &two_port_config("af_xdp", true));
    let server = XdsServer::start(Listen::Unix(dp.dir.join("xds.sock")));
    server.set(CDS, vec![eds_cluster("web")]);
    server.set(EDS, vec![cla("web", &["10.10.2.2:7001"])]);
    server.set(LDS, vec![listener("web", 8080, "web")]);
    let uri = server.uri();
    let mut args = vec![
        "--server",
        &uri,
        "--node-id",
        "test-node",
        "--backoff-base-ms",
        "200",
        "--backoff-max-ms",
        "1000",
    ];
    if delta {
        args.push("--delta");
    }
    let agent = Agent::start(&dp, &args);
    let s = Setup {
        topo,
        dp,
        server,
        agent,
        _a: a,
        _b: b,
    };
    s.wait_who(8080, "A");
    s
}

/// The first line an upstream sends through the data plane on `port`
/// (`refused` if the connection fails).
fn who(topo: &Topology, port: u16) -> String {
    who_at(topo, "cli", "10.10.1.1", port)
}

/// The same from namespace `role` to `host:port`.
fn who_at(topo: &Topology, role: &str, host: &str, port: u16) -> String {
    let out = topo.exec(
        role,
        &format!(
            "timeout 3 python3 -c 'import socket; s=socket.create_connection((\"{host}\", {port}), timeout=2); print(s.makefile().readline().strip())' 2>/dev/null || echo refused"
        ),
    );
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if got.is_empty() {
        "refused".into()
    } else {
        got
    }
}

/// Wait up to 20 s until `port` answers `want`; `logs` for the failure.
fn wait_who(topo: &Topology, port: u16, want: &str, logs: &dyn Fn() -> String) {
    wait_who_at(topo, "cli", "10.10.1.1", port, want, logs)
}

fn wait_who_at(
    topo: &Topology,
    role: &str,
    host: &str,
    port: u16,
    want: &str,
    logs: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = who_at(topo, role, host, port);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{role}: {host}:{port} still answers {got:?}, not {want:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Setup {
    fn who(&self, port: u16) -> String {
        who(&self.topo, port)
    }

    fn wait_who(&self, port: u16, want: &str) {
        wait_who(&self.topo, port, want, &|| {
            format!(
                "agent log:\n{}\ndata plane log:\n{}",
                self.agent.log(),
                self.dp.log()
            )
        });
    }

    fn config(&self) -> Value {
        let out = std::process::Command::new(e2e_tests::dataplane_bin())
            .args(["show-config", "--socket"])
            .arg(&self.dp.socket)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn acks_without_nack(server: &XdsServer) {
    let nacks: Vec<_> = server.seen().into_iter().filter(|s| s.is_nack()).collect();
    assert!(nacks.is_empty(), "unexpected NACKs: {nacks:#?}");
}

// === scenarios ===

fn sync_add_and_remove(delta: bool) {
    let s = setup(if delta { "xd" } else { "xs" }, delta);
    // Initial sync: every type ACKed, node identity sent.
    for ty in [CDS, EDS, LDS] {
        s.server.wait_for(Duration::from_secs(5), "ACK", |r| {
            r.type_url == ty && !r.response_nonce.is_empty() && !r.is_nack()
        });
    }
    assert!(
        s.server
            .seen()
            .iter()
            .all(|r| r.node_id == "test-node" || r.node_id.is_empty())
    );
    assert_eq!(s.server.seen()[0].node_id, "test-node");
    assert!(s.server.seen().iter().all(|r| r.delta == delta));

    // Add a cluster and a listener.
    s.server.upsert(CDS, vec![eds_cluster("echo")]);
    s.server.upsert(EDS, vec![cla("echo", &["10.10.2.2:7002"])]);
    s.server.upsert(LDS, vec![listener("echo", 9000, "echo")]);
    s.wait_who(9000, "B");
    assert_eq!(s.who(8080), "A");

    // Move web's endpoint to B: EDS alone.
    s.server.upsert(EDS, vec![cla("web", &["10.10.2.2:7002"])]);
    s.wait_who(8080, "B");

    // Remove the listener and its cluster: the port refuses, the data
    // plane forgets both, the EDS subscription for it goes.
    s.server.set(LDS, vec![listener("web", 8080, "web")]);
    s.server.set(CDS, vec![eds_cluster("web")]);
    s.wait_who(9000, "refused");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = s.config();
        if c["clusters"].get("echo").is_none() && c["listeners"].get("echo").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "echo still configured: {c}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.who(8080), "B");
    if !delta {
        // The last EDS request names only what is still used.
        let last = s
            .server
            .seen()
            .into_iter()
            .rev()
            .find(|r| r.type_url == EDS)
            .unwrap();
        assert_eq!(last.names, ["web"], "{last:?}");
    }
    acks_without_nack(&s.server);
}

#[test]
fn sotw_initial_sync_then_clusters_and_listeners_come_and_go() {
    require_root();
    let _g = serial();
    sync_add_and_remove(false);
}

#[test]
fn delta_initial_sync_then_clusters_and_listeners_come_and_go() {
    require_root();
    let _g = serial();
    sync_add_and_remove(true);
}

fn invalid_is_nacked(delta: bool) {
    let s = setup(if delta { "nd" } else { "ns" }, delta);
    let acked = s.server.wait_for(Duration::from_secs(5), "LDS ACK", |r| {
        r.type_url == LDS && !r.response_nonce.is_empty() && !r.is_nack()
    });
    // One response: a good new listener, one with an HTTP/2 connection
    // manager (not supported yet), one on an address that is not ours (the data plane refuses
    // it), and the old one unchanged.
    let hcm = (
        "http".to_string(),
        any_from_yaml(
            "envoy.config.listener.v3.Listener",
            r#"
name: http
address: {socket_address: {address: 0.0.0.0, port_value: 8081}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: http
      codec_type: HTTP2
      route_config: {name: r}
"#,
        )
        .unwrap(),
    );
    let mut foreign = listener("foreign", 8082, "web");
    foreign.1 = any_from_yaml(
        "envoy.config.listener.v3.Listener",
        r#"
name: foreign
address: {socket_address: {address: 10.99.0.1, port_value: 8082}}
filter_chains:
- filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: f
      cluster: web
"#,
    )
    .unwrap();
    s.server
        .upsert(LDS, vec![listener("good", 9001, "web"), hcm, foreign]);
    let nack = s.server.wait_for(Duration::from_secs(10), "LDS NACK", |r| {
        r.type_url == LDS && r.is_nack()
    });
    let why = nack.error.clone().unwrap();
    assert!(
        why.contains("http: ") && why.contains("HTTP/2 is not supported yet"),
        "{why}"
    );
    assert!(
        why.contains("foreign: ") && why.contains("not the address of any port"),
        "{why}"
    );
    assert!(!why.contains("good"), "{why}");
    if !delta {
        assert_eq!(
            nack.version_info, acked.version_info,
            "a NACK keeps the last good version"
        );
    }
    // The good one is applied, the old one keeps serving.
    s.wait_who(9001, "A");
    assert_eq!(s.who(8080), "A");
    assert_eq!(s.who(8081), "refused");

    // A cluster the data plane cannot honour.
    let ring = (
        "ring".to_string(),
        any_from_yaml(
            "envoy.config.cluster.v3.Cluster",
            "name: ring\ntype: STATIC\nlb_policy: RING_HASH\nload_assignment: {cluster_name: ring}\n",
        )
        .unwrap(),
    );
    s.server.upsert(CDS, vec![ring]);
    let nack = s.server.wait_for(Duration::from_secs(10), "CDS NACK", |r| {
        r.type_url == CDS && r.is_nack()
    });
    let why = nack.error.unwrap();
    assert!(why.contains("ring: lb_policy RING_HASH"), "{why}");
    assert_eq!(s.who(8080), "A");
    // Fixed by the server: ACKed again.
    s.server.set(CDS, vec![eds_cluster("web")]);
    s.server
        .wait_for(Duration::from_secs(10), "CDS ACK after the fix", |r| {
            r.type_url == CDS
                && !r.is_nack()
                && !r.response_nonce.is_empty()
                && r.response_nonce.parse::<u64>().unwrap_or(0)
                    > nack.response_nonce.parse::<u64>().unwrap_or(0)
        });
}

#[test]
fn sotw_invalid_resources_are_nacked_by_name_and_the_rest_applies() {
    require_root();
    let _g = serial();
    invalid_is_nacked(false);
}

#[test]
fn delta_invalid_resources_are_nacked_by_name_and_the_rest_applies() {
    require_root();
    let _g = serial();
    invalid_is_nacked(true);
}

fn restart_and_reconnect(delta: bool) {
    let mut s = setup(if delta { "rd" } else { "rs" }, delta);
    let before = s.server.wait_for(Duration::from_secs(5), "CDS ACK", |r| {
        r.type_url == CDS && !r.response_nonce.is_empty() && !r.is_nack()
    });
    s.server.stop();
    // The data plane keeps serving while the server is gone.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.who(8080), "A");
    // What changed meanwhile arrives after the reconnect.
    s.server.upsert(CDS, vec![eds_cluster("echo")]);
    s.server.upsert(EDS, vec![cla("echo", &["10.10.2.2:7002"])]);
    s.server.upsert(LDS, vec![listener("echo", 9000, "echo")]);
    s.server.start_again();
    s.wait_who(9000, "B");
    assert!(s.server.streams() >= 2);
    // The new stream resumed from the versions held.
    let resumed = s
        .server
        .seen()
        .into_iter()
        .filter(|r| r.type_url == CDS && r.response_nonce.is_empty())
        .nth(1)
        .expect("a second stream's first CDS request");
    if delta {
        assert_eq!(
            resumed.initial_versions.keys().collect::<Vec<_>>(),
            ["web"],
            "{resumed:?}"
        );
    } else {
        assert_eq!(resumed.version_info, before.version_info, "{resumed:?}");
    }
    assert!(s.agent.log().contains("reconnecting in"));
    acks_without_nack(&s.server);
}

#[test]
fn sotw_server_restart_and_reconnect() {
    require_root();
    let _g = serial();
    restart_and_reconnect(false);
}

#[test]
fn delta_server_restart_and_reconnect() {
    require_root();
    let _g = serial();
    restart_and_reconnect(true);
}

#[test]
fn endpoint_churn_under_wrk_fails_no_request() {
    require_root();
    let _g = serial();
    let s = setup("xc", false);
    s.topo.exec("up", "ip addr add 10.10.2.3/24 dev up0");
    let _n1 = Nginx::start(&s.topo, "a", "10.10.2.2:80", 0);
    let _n2 = Nginx::start(&s.topo, "b", "10.10.2.3:80", 0);
    s.server.upsert(CDS, vec![eds_cluster("http")]);
    s.server.upsert(EDS, vec![cla("http", &["10.10.2.2:80"])]);
    s.server.upsert(LDS, vec![listener("http", 80, "http")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s
        .topo
        .exec("cli", "curl -sf -m 1 http://10.10.1.1/")
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "http never served:\n{}",
            s.agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Keep-alive and connection-per-request wrk at once, for 6 s, while
    // the endpoints flip every 200 ms.
    let wrk = |args: &str| {
        let ns = s.topo.ns("cli");
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "sh", "-c"])
            .arg(format!(
                "wrk -t1 -d6s --timeout 2s {args} http://10.10.1.1/"
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let keep = wrk("-c16");
    let close = wrk("-c8 -H 'Connection: close'");
    let sets: [&[&str]; 4] = [
        &["10.10.2.2:80", "10.10.2.3:80"],
        &["10.10.2.3:80"],
        &["10.10.2.2:80", "10.10.2.3:80"],
        &["10.10.2.2:80"],
    ];
    let t0 = Instant::now();
    let mut flips = 0;
    while t0.elapsed() < Duration::from_millis(5500) {
        s.server.upsert(EDS, vec![cla("http", sets[flips % 4])]);
        flips += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    for (what, child) in [("keep-alive", keep), ("close", close)] {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("Socket errors"), "{what}: {text}");
        assert!(!text.contains("Non-2xx"), "{what}: {text}");
        let reqs: u64 = text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(reqs > 1000, "{what}: only {reqs} requests: {text}");
        eprintln!("{what}: {reqs} requests, {flips} endpoint updates, no errors");
    }
    // Both endpoints served.
    let st = s.dp.stats();
    let c = st["proxy"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "http")
        .unwrap()
        .clone();
    assert!(c["cx_total"].as_u64().unwrap() > 1000, "{c}");
    acks_without_nack(&s.server);
    assert!(
        s.topo
            .exec("cli", "curl -sf -m 2 http://10.10.1.1/")
            .stdout
            .starts_with(NGINX_BODY.as_bytes())
    );
}

/// An HTTP listener on `port` whose routes come from RDS `routes`.
fn http_listener(name: &str, port: u16, routes: &str) -> (String, Any) {
    let y = format!(
        r#"
name: {name}
address: {{socket_address: {{address: 0.0.0.0, port_value: {port}}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {name}
      rds: {{route_config_name: "{routes}", config_source: {{ads: {{}}, resource_api_version: V3}}}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    );
    (
        name.into(),
        any_from_yaml("envoy.config.listener.v3.Listener", &y).unwrap(),
    )
}

/// Route configuration `name`: every request to `blue` and `green` by
/// weight.
fn split_routes(name: &str, blue: u32, green: u32) -> (String, Any) {
    let y = format!(
        r#"
name: "{name}"
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {{prefix: /}}
    route:
      weighted_clusters:
        clusters:
        - {{name: blue, weight: {blue}}}
        - {{name: green, weight: {green}}}
"#
    );
    (
        name.into(),
        any_from_yaml("envoy.config.route.v3.RouteConfiguration", &y).unwrap(),
    )
}

fn rq_total(dp: &Dataplane, cluster: &str) -> u64 {
    dp.stats()["proxy"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cluster)
        .and_then(|c| c["rq_total"].as_u64())
        .unwrap_or(0)
}

/// HTTP routes from RDS: weights moved 100/0 → 50/50 → 0/100 while wrk
/// runs, with no failed request; the 50/50 split within ±5 points over
/// 1 000 requests.
fn rds_weights_under_load(delta: bool) {
    require_root();
    let _g = serial();
    let s = setup(if delta { "xrd" } else { "xrs" }, delta);
    let _blue = http_upstream(&s.topo, "10.10.2.2", 8081, "blue");
    let _green = http_upstream(&s.topo, "10.10.2.2", 8082, "green");
    s.server
        .upsert(CDS, vec![eds_cluster("blue"), eds_cluster("green")]);
    s.server.upsert(
        EDS,
        vec![
            cla("blue", &["10.10.2.2:8081"]),
            cla("green", &["10.10.2.2:8082"]),
        ],
    );
    s.server.set(RDS, vec![split_routes("r80", 100, 0)]);
    s.server.upsert(LDS, vec![http_listener("http", 80, "r80")]);
    let upstream = |s: &Setup| -> String {
        let out = s.topo.exec("cli", "curl -sf -m 2 http://10.10.1.1/x");
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        doc["upstream"].as_str().unwrap_or("").to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while upstream(&s) != "blue" {
        assert!(
            Instant::now() < deadline,
            "the HTTP listener never served blue:\n{}",
            s.agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // 50/50 over 1 000 requests.
    s.server.set(RDS, vec![split_routes("r80", 50, 50)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(0..20).any(|_| upstream(&s) == "green") {
        assert!(Instant::now() < deadline, "50/50 never applied");
    }
    let (b0, g0) = (rq_total(&s.dp, "blue"), rq_total(&s.dp, "green"));
    let out = s
        .topo
        .exec("cli", "h2load --h1 -n 1000 -c 4 http://10.10.1.1/split");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1000 succeeded, 0 failed"), "{text}");
    let (b, g) = (rq_total(&s.dp, "blue") - b0, rq_total(&s.dp, "green") - g0);
    assert_eq!(b + g, 1000);
    assert!((450..=550).contains(&b), "50/50 split: blue {b}, green {g}");
    // Moved under load: keep-alive wrk, weights going 100/0 → 50/50 →
    // 0/100.
    s.server.set(RDS, vec![split_routes("r80", 100, 0)]);
    let ns = s.topo.ns("cli");
    let wrk = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "sh", "-c"])
        .arg("wrk -t1 -c8 -d6s --timeout 2s http://10.10.1.1/load")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    s.server.set(RDS, vec![split_routes("r80", 50, 50)]);
    std::thread::sleep(Duration::from_secs(2));
    s.server.set(RDS, vec![split_routes("r80", 0, 100)]);
    let out = wrk.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    assert!(text.contains("requests in"), "{text}");
    for _ in 0..10 {
        assert_eq!(upstream(&s), "green");
    }
    let nacks: Vec<_> = s
        .server
        .seen()
        .into_iter()
        .filter(|r| r.is_nack())
        .collect();
    assert!(nacks.is_empty(), "{nacks:?}");
}

#[test]
fn sotw_http_routes_over_rds_move_weights_under_load() {
    rds_weights_under_load(false);
}

#[test]
fn delta_http_routes_over_rds_move_weights_under_load() {
    rds_weights_under_load(true);
}

#[test]
fn the_data_plane_outlives_the_agent_and_its_restart_resyncs() {
    require_root();
    let _g = serial();
    let mut s = setup("xa", false);
    // Kill -9: the data plane keeps serving.
    s.agent.kill9();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.who(8080), "A");
    // Meanwhile the server drops `web` and adds `echo`.
    s.server.set(CDS, vec![eds_cluster("echo")]);
    s.server.set(EDS, vec![cla("echo", &["10.10.2.2:7002"])]);
    s.server.set(LDS, vec![listener("echo", 9000, "echo")]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.who(8080), "A", "nobody told the data plane yet");
    let uri = s.server.uri();
    let _agent = Agent::start(&s.dp, &["--server", &uri, "--node-id", "test-node-2"]);
    s.wait_who(9000, "B");
    // Re-synced in full: what the server no longer has is gone.
    s.wait_who(8080, "refused");
    let c = s.config();
    assert!(c["listeners"].get("web").is_none(), "{c}");
}

/// Regression (issue 18, point 0): two agents on one data plane undid
/// each other's updates for ever with only an INFO line. One of them now
/// says so at WARN, naming what to do, and both keep serving.
#[test]
fn two_agents_on_one_data_plane_are_told_apart_from_an_operator() {
    require_root();
    let _g = serial();
    let s = setup("x2", false);
    let uri = s.server.uri();
    let second = Agent::start(&s.dp, &["--server", &uri, "--node-id", "test-node-2"]);
    let warned = |log: &str| {
        log.contains("WARN")
            && log.contains("another control-agent")
            && log.contains("one control-agent per data plane")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !warned(&s.agent.log()) && !warned(&second.log()) {
        assert!(
            std::time::Instant::now() < deadline,
            "no warning within 30 s:\n--- first\n{}\n--- second\n{}",
            s.agent.log(),
            second.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // What both push is served all along.
    assert_eq!(s.who(8080), "A");
}

#[test]
fn a_restarted_data_plane_comes_up_with_the_last_applied_config() {
    require_root();
    let _g = serial();
    let topo = Topology::up(&unique_prefix("xp"));
    let _a = python_upstream(&topo, "name A", "10.10.2.2", 7001);
    let state = std::env::temp_dir().join(format!("dp-state-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&state);
    let cfg = format!(
        "{}  state_file: {}\n",
        two_port_config("af_xdp", true),
        state.display()
    );
    {
        let mut dp = Dataplane::start(&topo, &cfg);
        let sock = std::env::temp_dir().join(format!("xds-{}.sock", std::process::id()));
        let server = XdsServer::start(Listen::Unix(sock));
        server.set(CDS, vec![eds_cluster("web")]);
        server.set(EDS, vec![cla("web", &["10.10.2.2:7001"])]);
        server.set(LDS, vec![listener("web", 8080, "web")]);
        let uri = server.uri();
        let agent = Agent::start(&dp, &["--server", &uri, "--node-id", "test-node"]);
        wait_who(&topo, 8080, "A", &|| agent.log());
        // Saved within about a second of the update.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&state).is_ok_and(|t| t.contains("\"web\"")) {
            assert!(Instant::now() < deadline, "state file not written");
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(agent);
        drop(server);
        assert_eq!(dp.terminate(), Some(0), "{}", dp.log());
    }
    // No agent, no server: the new data plane serves what was applied.
    let dp = Dataplane::start(&topo, &cfg);
    wait_who(&topo, 8080, "A", &|| dp.log());
    assert!(
        dp.log().contains("listeners, clusters and routes from"),
        "{}",
        dp.log()
    );
    let _ = std::fs::remove_file(&state);
}

/// Resources from a YAML file with keys `listeners`, `clusters`,
/// `endpoints` (each a list in Envoy's JSON mapping).
fn resources(path: &str) -> [(&'static str, Vec<(String, Any)>); 3] {
    let text = std::fs::read_to_string(e2e_tests::root().join(path)).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let list = |key: &str, ty: &str, name: &str| -> Vec<(String, Any)> {
        doc[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let n = r[name].as_str().unwrap().to_string();
                (
                    n,
                    any_from_yaml(ty, &serde_json::to_string(r).unwrap()).unwrap(),
                )
            })
            .collect()
    };
    [
        (
            LDS,
            list("listeners", "envoy.config.listener.v3.Listener", "name"),
        ),
        (
            CDS,
            list("clusters", "envoy.config.cluster.v3.Cluster", "name"),
        ),
        (
            EDS,
            list(
                "endpoints",
                "envoy.config.endpoint.v3.ClusterLoadAssignment",
                "cluster_name",
            ),
        ),
    ]
}

#[test]
fn an_istio_gateway_configuration_is_served_without_nacks() {
    require_root();
    let _g = serial();
    let mut s = setup("xi", false);
    // One agent per data plane: this one goes, a gateway's comes.
    s.agent.kill9();
    for (ty, res) in resources("tests/fixtures/istio-router-tcp.yaml") {
        s.server.upsert(ty, res);
    }
    let uri = s.server.uri();
    let router = Agent::start(
        &s.dp,
        &[
            "--server",
            &uri,
            "--node-id",
            "router~10.10.1.1~istio-ingressgateway-7d4f.istio-system~istio-system.svc.cluster.local",
            "--node-cluster",
            "istio-ingressgateway.istio-system",
            "--node-metadata",
            "ISTIO_VERSION=1.24.0",
            "--node-metadata",
            "CLUSTER_ID=Kubernetes",
        ],
    );
    wait_who(&s.topo, 31400, "A", &|| router.log());
    let id =
        "router~10.10.1.1~istio-ingressgateway-7d4f.istio-system~istio-system.svc.cluster.local";
    for ty in [CDS, EDS, LDS] {
        s.server
            .wait_for(Duration::from_secs(10), "router ACK", |r| {
                r.node_id == id && r.type_url == ty && !r.response_nonce.is_empty() && !r.is_nack()
            });
    }
    std::thread::sleep(Duration::from_millis(500));
    acks_without_nack(&s.server);
    let c = s.config();
    assert!(
        c["clusters"]
            .get("outbound|9000||tcp-echo.istio-io-tcp-traffic-shifting.svc.cluster.local")
            .is_some(),
        "{c}"
    );
    let log = router.log();
    assert!(
        log.contains("ignoring network filter \"istio.stats\""),
        "{log}"
    );
    assert!(
        log.contains("ignoring cluster filter \"istio.metadata_exchange\""),
        "{log}"
    );
}

fn interop(delta: bool) {
    let topo = Topology::up(&unique_prefix(if delta { "ed" } else { "es" }));
    let _a = python_upstream(&topo, "name A", "10.10.2.2", 7001);
    let _b = python_upstream(&topo, "name B", "10.10.2.2", 7002);
    let dp = Dataplane::start(&topo, &two_port_config("af_xdp", true));
    let server = XdsServer::start(Listen::Unix(dp.dir.join("xds.sock")));
    server.set(CDS, vec![eds_cluster("web")]);
    server.set(EDS, vec![cla("web", &["10.10.2.2:7001"])]);
    server.set(LDS, vec![listener("web", 8080, "web")]);
    // One bootstrap file for both.
    let boot = dp.dir.join("envoy.yaml");
    std::fs::write(
        &boot,
        XdsServer::envoy_bootstrap("interop-node", &dp.dir.join("xds.sock"), delta),
    )
    .unwrap();
    let _envoy = e2e_tests::envoy(&topo, "up", &boot);
    let agent = Agent::start(&dp, &["--bootstrap", boot.to_str().unwrap()]);
    let logs = || agent.log();
    // Envoy in the upstream namespace, the data plane in front of it.
    let both = |port: u16, want: &str| {
        wait_who_at(&topo, "up", "127.0.0.1", port, want, &logs);
        wait_who(&topo, port, want, &logs);
    };
    both(8080, "A");
    server.upsert(EDS, vec![cla("web", &["10.10.2.2:7002"])]);
    both(8080, "B");
    server.upsert(CDS, vec![eds_cluster("echo")]);
    server.upsert(EDS, vec![cla("echo", &["10.10.2.2:7001"])]);
    server.upsert(LDS, vec![listener("echo", 9000, "echo")]);
    both(9000, "A");
    server.set(LDS, vec![listener("web", 8080, "web")]);
    both(9000, "refused");
    both(8080, "B");
    // Both ACKed everything; two streams (Envoy's and ours).
    let seen = server.seen();
    assert!(seen.iter().all(|r| r.delta == delta));
    assert!(server.streams() >= 2);
    let nacks: Vec<_> = seen.iter().filter(|r| r.is_nack()).collect();
    assert!(nacks.is_empty(), "{nacks:#?}");
}

#[test]
fn sotw_one_server_drives_envoy_and_the_data_plane_alike() {
    require_root();
    let _g = serial();
    interop(false);
}

#[test]
fn delta_one_server_drives_envoy_and_the_data_plane_alike() {
    require_root();
    let _g = serial();
    interop(true);
}

#[test]
fn one_static_bootstrap_runs_under_envoy_and_under_us() {
    require_root();
    let _g = serial();
    let topo = Topology::up(&unique_prefix("eb"));
    let _a = python_upstream(&topo, "name A", "10.10.2.2", 7001);
    let _b = python_upstream(&topo, "name B", "10.10.2.2", 7002);
    let dp = Dataplane::start(&topo, &two_port_config("af_xdp", true));
    let boot = dp.dir.join("static.yaml");
    std::fs::write(
        &boot,
        r#"
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 9901}}}
static_resources:
  listeners:
  - name: echo
    address: {socket_address: {address: 0.0.0.0, port_value: 9000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: echo
          cluster: pair
  clusters:
  - name: pair
    type: STATIC
    connect_timeout: 0.5s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: pair
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 10.10.2.2, port_value: 7001}}}
        - endpoint: {address: {socket_address: {address: 10.10.2.2, port_value: 7002}}}
"#,
    )
    .unwrap();
    let _envoy = e2e_tests::envoy(&topo, "up", &boot);
    let agent = Agent::start(&dp, &["--bootstrap", boot.to_str().unwrap()]);
    wait_who(&topo, 9000, "A", &|| agent.log());
    wait_who_at(&topo, "up", "127.0.0.1", 9000, "A", &|| agent.log());
    // Round robin over the same two endpoints under both.
    let mut ours = BTreeSet::new();
    let mut theirs = BTreeSet::new();
    for _ in 0..6 {
        ours.insert(who(&topo, 9000));
        theirs.insert(who_at(&topo, "up", "127.0.0.1", 9000));
    }
    let want: BTreeSet<String> = ["A".to_string(), "B".to_string()].into();
    assert_eq!(ours, want);
    assert_eq!(theirs, want);
}

// === differential: the same snapshot to Envoy and to us ===

const DIFF_LISTENER: &str = r#"
name: diff
address: {socket_address: {address: 0.0.0.0, port_value: 8090}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: diff
      normalize_path: true
      merge_slashes: true
      rds: {route_config_name: diff, config_source: {ads: {}, resource_api_version: V3}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;

/// Every matcher and action the data plane has, in one route
/// configuration (weighted splits are random: checked apart).
const DIFF_ROUTES: &str = r#"
name: diff
request_headers_to_add: [{header: {key: x-rc, value: "1"}}]
response_headers_to_add: [{header: {key: x-rc-resp, value: "1"}}]
response_headers_to_remove: [x-drop-me]
virtual_hosts:
- name: api
  domains: [api.test, "api.test:8090"]
  request_headers_to_add: [{header: {key: x-vh, value: api}}]
  routes:
  - match: {prefix: /v1/, headers: [{name: x-canary, string_match: {exact: "yes"}}]}
    route: {cluster: b, prefix_rewrite: /canary/}
  - match: {path_separated_prefix: /v1}
    route: {cluster: a, prefix_rewrite: /api}
  - match: {safe_regex: {regex: "/items/[0-9]+"}}
    route: {cluster: c, regex_rewrite: {pattern: {regex: "^/items/([0-9]+)$"}, substitution: "/item/\\1"}}
  - match: {prefix: /Case, case_sensitive: false}
    route: {cluster: c}
  - match: {prefix: /q, query_parameters: [{name: v, string_match: {exact: "2"}}]}
    route: {cluster: b}
  - match: {prefix: /hdr, headers: [{name: x-ver, string_match: {prefix: v}}, {name: x-no, present_match: true, invert_match: true}]}
    route: {cluster: c}
    request_headers_to_add: [{header: {key: x-route, value: hdr}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
    request_headers_to_remove: [x-ver]
  - match: {prefix: /method, headers: [{name: ":method", string_match: {exact: POST}}]}
    route: {cluster: b}
  - match: {prefix: /redirect}
    redirect: {path_redirect: /moved, response_code: FOUND}
  - match: {prefix: /https}
    redirect: {https_redirect: true, strip_query: true}
  - match: {path: /direct}
    direct_response: {status: 202, body: {inline_string: direct}}
  - match: {prefix: /host}
    route: {cluster: a, host_rewrite_literal: rewritten.test}
  - match: {prefix: /exact-timeout}
    route: {cluster: a, timeout: 3s}
  - match: {prefix: /}
    route: {cluster: a}
- name: wild
  domains: ["*.wild.test"]
  response_headers_to_add: [{header: {key: x-wild, value: "1"}}]
  routes:
  - match: {prefix: /}
    route: {cluster: b}
- name: pre
  domains: ["pre.*"]
  routes:
  - match: {prefix: /}
    route: {cluster: c}
- name: rest
  domains: ["*"]
  routes:
  - match: {prefix: /nowhere}
    direct_response: {status: 503}
  - match: {prefix: /}
    route: {cluster: a}
"#;

/// Hosts × paths × header sets: more than 300 requests.
fn diff_corpus() -> Vec<Value> {
    let hosts = [
        "api.test",
        "API.Test",
        "api.test:8090",
        "x.wild.test",
        "a.b.wild.test",
        "wild.test",
        "pre.host",
        "other.test",
    ];
    let paths = [
        "/",
        "/v1",
        "/v1/x?y=1",
        "/v1x",
        "/items/12",
        "/items/x",
        "/Case/A",
        "/case/b",
        "/q?v=2",
        "/q?v=3&v=2",
        "/hdr",
        "/redirect/a?b=1",
        "/https/x?q=1",
        "/direct",
        "/host/x",
        "/method",
        "/a/../b/./c",
        "//double//slash?x=//y",
        "/%61pi/%7e",
        "/nowhere",
        "/exact-timeout",
    ];
    let header_sets: [&[(&str, &str)]; 4] = [
        &[],
        &[("x-canary", "yes")],
        &[("x-ver", "v2"), ("x-route", "client")],
        &[("x-ver", "v2"), ("x-no", "1")],
    ];
    let mut out = Vec::new();
    for h in hosts {
        for p in paths {
            for (i, hs) in header_sets.iter().enumerate() {
                let method = if i == 3 && p == "/method" {
                    "POST"
                } else {
                    "GET"
                };
                out.push(serde_json::json!({
                    "method": method,
                    "host": h,
                    "path": p,
                    "headers": hs.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
                }));
            }
        }
    }
    out
}

/// What must agree between Envoy's answer and ours: the status, the
/// upstream that took it and the request it saw (method, path, headers but
/// the request id), the body of a local reply, the location and the
/// route's response headers.
fn comparable(r: &Value) -> Value {
    if r.get("error").is_some() {
        return r.clone();
    }
    let resp_headers: Vec<&Value> = r["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            ["location", "x-rc-resp", "x-wild", "x-drop-me"].contains(&h[0].as_str().unwrap_or(""))
        })
        .collect();
    let body = r["body"].as_str().unwrap_or("");
    let seen = match serde_json::from_str::<Value>(body) {
        Ok(doc) if doc.get("upstream").is_some() => {
            let mut hs: Vec<Value> = doc["headers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| {
                    !["x-request-id", "content-length"].contains(&h[0].as_str().unwrap_or(""))
                })
                .cloned()
                .collect();
            hs.sort_by_key(|h| h.to_string());
            serde_json::json!({
                "upstream": doc["upstream"],
                "method": doc["method"],
                "path": doc["path"],
                "headers": hs,
            })
        }
        _ => serde_json::json!({"local_body": body}),
    };
    serde_json::json!({"status": r["status"], "response_headers": resp_headers, "seen": seen})
}

fn run_corpus(topo: &Topology, role: &str, addr: &str, corpus: &std::path::Path) -> Vec<Value> {
    let script = e2e_tests::root().join("tests/scripts/http_corpus.py");
    let out = topo.exec(
        role,
        &format!(
            "python3 {} {addr} 8090 {}",
            script.display(),
            corpus.display()
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn http_routing_matches_envoys_on_one_snapshot() {
    require_root();
    let _g = serial();
    let topo = Topology::up(&unique_prefix("hd"));
    let _a = http_upstream(&topo, "10.10.2.2", 8081, "a");
    let _b = http_upstream(&topo, "10.10.2.2", 8082, "b");
    let _c = http_upstream(&topo, "10.10.2.2", 8083, "c");
    let dp = Dataplane::start(&topo, &two_port_config("af_xdp", true));
    let server = XdsServer::start(Listen::Unix(dp.dir.join("xds.sock")));
    server.set(
        CDS,
        vec![eds_cluster("a"), eds_cluster("b"), eds_cluster("c")],
    );
    server.set(
        EDS,
        vec![
            cla("a", &["10.10.2.2:8081"]),
            cla("b", &["10.10.2.2:8082"]),
            cla("c", &["10.10.2.2:8083"]),
        ],
    );
    server.set(
        RDS,
        vec![(
            "diff".into(),
            any_from_yaml("envoy.config.route.v3.RouteConfiguration", DIFF_ROUTES).unwrap(),
        )],
    );
    server.set(
        LDS,
        vec![(
            "diff".into(),
            any_from_yaml("envoy.config.listener.v3.Listener", DIFF_LISTENER).unwrap(),
        )],
    );
    let boot = dp.dir.join("envoy.yaml");
    std::fs::write(
        &boot,
        XdsServer::envoy_bootstrap("diff-node", &dp.dir.join("xds.sock"), false),
    )
    .unwrap();
    let _envoy = e2e_tests::envoy(&topo, "up", &boot);
    let agent = Agent::start(&dp, &["--bootstrap", boot.to_str().unwrap()]);
    // Both serve.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (role, addr) in [("up", "127.0.0.1"), ("cli", "10.10.1.1")] {
        while !topo
            .exec(
                role,
                &format!("curl -sf -m 1 -H 'Host: api.test' http://{addr}:8090/direct"),
            )
            .status
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "{role} never served:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let corpus = diff_corpus();
    assert!(corpus.len() >= 300, "{}", corpus.len());
    let file = dp.dir.join("corpus.json");
    std::fs::write(&file, serde_json::to_string(&corpus).unwrap()).unwrap();
    let envoy = run_corpus(&topo, "up", "127.0.0.1", &file);
    let ours = run_corpus(&topo, "cli", "10.10.1.1", &file);
    assert_eq!(envoy.len(), corpus.len());
    let mut differ = Vec::new();
    for ((req, e), o) in corpus.iter().zip(&envoy).zip(&ours) {
        let (e, o) = (comparable(e), comparable(o));
        if e != o {
            differ.push(format!("{req}\n  envoy: {e}\n  ours:  {o}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} requests differ from Envoy's answers:\n{}",
        differ.len(),
        corpus.len(),
        differ
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let nacks: Vec<_> = server.seen().into_iter().filter(|r| r.is_nack()).collect();
    assert!(nacks.is_empty(), "{nacks:#?}");

    // Smuggling shapes: ours answers 400 and closes, and nothing reaches an
    // upstream; Envoy's verdicts are printed beside ours.
    let cases = smuggling_corpus();
    let file = dp.dir.join("smuggling.json");
    std::fs::write(&file, serde_json::to_string(&cases).unwrap()).unwrap();
    let raw = |role: &str, addr: &str| -> Vec<Value> {
        let script = e2e_tests::root().join("tests/scripts/raw_corpus.py");
        let out = topo.exec(
            role,
            &format!(
                "python3 {} {addr} 8090 {}",
                script.display(),
                file.display()
            ),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let rq = |dp: &Dataplane| -> u64 { ["a", "b", "c"].iter().map(|c| rq_total(dp, c)).sum() };
    let before = rq(&dp);
    let envoy = raw("up", "127.0.0.1");
    let ours = raw("cli", "10.10.1.1");
    assert_eq!(rq(&dp), before, "a smuggling case reached an upstream");
    let mut table = String::from("smuggling corpus: envoy | ours | case\n");
    for ((c, e), o) in cases.iter().zip(&envoy).zip(&ours) {
        table.push_str(&format!(
            "  {:>4} | {:>4} | {c:?}\n",
            e["status"].as_u64().map_or("-".into(), |s| s.to_string()),
            o["status"].as_u64().map_or("-".into(), |s| s.to_string()),
        ));
    }
    eprintln!("{table}");
    for (c, o) in cases.iter().zip(&ours) {
        assert_eq!(o["status"], 400, "{c:?}: {o}\n{table}");
        assert!(o["closed"] == true || o["reset"] == true, "{c:?}: {o}");
    }
}

/// Request smuggling shapes (CL.TE, TE.CL, TE.TE obfuscations, duplicate
/// and malformed content-length, obs-fold, NUL, bare CR, bad names), each
/// a whole request on its own connection.
fn smuggling_corpus() -> Vec<String> {
    let h = "Host: api.test\r\n";
    let post = |hdrs: &str, body: &str| format!("POST /s HTTP/1.1\r\n{h}{hdrs}\r\n{body}");
    vec![
        post(
            "Content-Length: 13\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\nSMUGGLED",
        ),
        post(
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "8\r\nSMUGGLED\r\n0\r\n\r\n",
        ),
        post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
        post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
        post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
        post(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            "0\r\n\r\n",
        ),
        post("Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n"),
        post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
        post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        post("Content-Length: 5, 5\r\n", "hello"),
        post("Content-Length: +5\r\n", "hello"),
        post("Content-Length: 0x5\r\n", "hello"),
        post("Content-Length: 5 5\r\n", "hello"),
        post("Content-Length: -1\r\n", ""),
        format!("GET /s HTTP/1.1\r\n{h}X-A: a\r\n folded\r\n\r\n"),
        format!("GET /s HTTP/1.1\r\n{h}X-A: a\x00b\r\n\r\n"),
        format!("GET /s HTTP/1.1\r\n{h}X-A: a\rb\r\n\r\n"),
        format!("GET /s HTTP/1.1\r\n{h}X A: b\r\n\r\n"),
        format!("GET /s HTTP/1.1\r\n{h}: b\r\n\r\n"),
        "POST /s HTTP/1.0\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
        "GET /s HTTP/1.1\r\n\r\n".into(),
        format!("GET /s HTTP/1.1\r\n{h}Host: other.test\r\n\r\n"),
        format!("GET /s\rx HTTP/1.1\r\n{h}\r\n"),
    ]
}
