//! Envoy resources (in Envoy's YAML) through the translation: what is
//! taken, what is refused and why, what is ignored.

use control_agent::bootstrap::{self, encode_yaml};
use control_agent::translate::{self, Ignored};
use dataplane_config::LbPolicy;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use prost::Message;
use std::sync::atomic::Ordering;

fn listener(y: &str) -> Listener {
    Listener::decode(
        encode_yaml("envoy.config.listener.v3.Listener", y)
            .unwrap()
            .as_slice(),
    )
    .unwrap()
}

fn cluster(y: &str) -> Cluster {
    Cluster::decode(
        encode_yaml("envoy.config.cluster.v3.Cluster", y)
            .unwrap()
            .as_slice(),
    )
    .unwrap()
}

fn cla(y: &str) -> ClusterLoadAssignment {
    ClusterLoadAssignment::decode(
        encode_yaml("envoy.config.endpoint.v3.ClusterLoadAssignment", y)
            .unwrap()
            .as_slice(),
    )
    .unwrap()
}

const TCP: &str = r#"
name: l
address: {socket_address: {address: 0.0.0.0, port_value: 80}}
filter_chains:
- FILTER_CHAIN_MATCH
  filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: s
      cluster: c
"#;

#[test]
fn a_tcp_proxy_listener_becomes_a_listener() {
    let ig = Ignored::default();
    let l = translate::listener(
        &listener(&TCP.replace("- FILTER_CHAIN_MATCH\n  ", "- ")),
        &ig,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (l.name.as_str(), l.address.as_str(), cluster_of(&l)),
        ("l", "0.0.0.0:80", "c")
    );
    // A chain matching the listener's own port is the same.
    let m = TCP.replace(
        "FILTER_CHAIN_MATCH",
        "filter_chain_match: {destination_port: 80}",
    );
    assert!(translate::listener(&listener(&m), &ig).unwrap().is_some());
}

#[test]
fn what_changes_meaning_is_refused_with_the_reason() {
    let ig = Ignored::default();
    let cases = [
        (
            "filter_chain_match: {transport_protocol: tls}",
            "transport_protocol",
        ),
        (
            "filter_chain_match: {server_names: [a.example]}",
            "server_names",
        ),
        (
            "filter_chain_match: {destination_port: 81}",
            "no filter chain matches connections to port 80",
        ),
        (
            "filter_chain_match: {prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}",
            "prefix_ranges",
        ),
    ];
    for (m, want) in cases {
        let y = TCP.replace("FILTER_CHAIN_MATCH", m);
        let e = translate::listener(&listener(&y), &ig).unwrap_err();
        assert!(e.contains(want), "{m}: {e}");
    }
    let hcm = r#"
name: h
address: {socket_address: {address: 0.0.0.0, port_value: 80}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: h
      route_config: {name: r}
"#;
    let e = translate::listener(&listener(hcm), &ig).unwrap_err();
    assert!(
        e.contains("HTTP connection manager arrives with the L7 work"),
        "{e}"
    );
    let weighted = TCP.replace("- FILTER_CHAIN_MATCH\n  ", "- ").replace(
        "cluster: c",
        "weighted_clusters: {clusters: [{name: a, weight: 1}, {name: b, weight: 1}]}",
    );
    let e = translate::listener(&listener(&weighted), &ig).unwrap_err();
    assert!(e.contains("weighted_clusters is not supported"), "{e}");
    let v6 = TCP
        .replace("- FILTER_CHAIN_MATCH\n  ", "- ")
        .replace("0.0.0.0", "\"::\"");
    assert!(
        translate::listener(&listener(&v6), &ig)
            .unwrap_err()
            .contains("IPv6")
    );
    let ring = cluster("name: r\ntype: STATIC\nlb_policy: RING_HASH\n");
    let e = translate::cluster(&ring, &ig).unwrap_err();
    assert_eq!(
        e,
        "lb_policy RING_HASH: not supported yet; ROUND_ROBIN, LEAST_REQUEST and RANDOM are"
    );
    let tls = cluster(
        "name: t\ntype: STATIC\ntransport_socket: {name: envoy.transport_sockets.tls, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext}}\n",
    );
    assert!(
        translate::cluster(&tls, &ig)
            .unwrap_err()
            .contains("upstream TLS")
    );
}

#[test]
fn clusters_take_envoys_defaults_and_their_own_settings() {
    let ig = Ignored::default();
    let p = translate::cluster(
        &cluster("name: d\ntype: EDS\neds_cluster_config: {eds_config: {ads: {}}}\n"),
        &ig,
    )
    .unwrap();
    assert_eq!(p.eds.as_deref(), Some("d"));
    assert_eq!(p.cfg.connect_timeout_ms, 5000);
    assert_eq!(
        (p.cfg.limits.max_connections, p.cfg.limits.max_pending),
        (1024, 1024)
    );
    assert_eq!(
        p.cfg.outlier_detection.consecutive_failures,
        u32::MAX,
        "off unless configured"
    );
    let p = translate::cluster(
        &cluster(
            r#"
name: s
type: STATIC
connect_timeout: 0.25s
lb_policy: RANDOM
circuit_breakers: {thresholds: [{priority: HIGH, max_connections: 1}, {max_connections: 7, max_pending_requests: 3}]}
outlier_detection: {consecutive_5xx: 2, base_ejection_time: 4s, max_ejection_percent: 50}
load_assignment:
  cluster_name: s
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}}]}]
"#,
        ),
        &ig,
    )
    .unwrap();
    let c = p.cfg;
    assert_eq!((c.connect_timeout_ms, c.lb_policy), (250, LbPolicy::Random));
    assert_eq!((c.limits.max_connections, c.limits.max_pending), (7, 3));
    let o = c.outlier_detection;
    assert_eq!(
        (
            o.consecutive_failures,
            o.base_ejection_ms,
            o.max_ejection_percent
        ),
        (2, 4000, 50)
    );
    assert_eq!(c.endpoints[0].address, "10.0.0.1:80");
}

#[test]
fn assignments_keep_healthy_endpoints_and_scale_weights() {
    let eps = translate::endpoints(&cla(
        r#"
cluster_name: c
endpoints:
- lb_endpoints:
  - {endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}, load_balancing_weight: 1000}
  - {endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 80}}}, load_balancing_weight: 10}
  - {endpoint: {address: {socket_address: {address: 10.0.0.3, port_value: 80}}}, health_status: UNHEALTHY}
  - {endpoint: {address: {socket_address: {address: 10.0.0.4, port_value: 80}}}, health_status: DRAINING}
  - {endpoint: {address: {socket_address: {address: 10.0.0.5, port_value: 80}}}, health_status: DEGRADED}
"#,
    ))
    .unwrap();
    let got: Vec<(&str, u32)> = eps.iter().map(|e| (e.address.as_str(), e.weight)).collect();
    assert_eq!(got, [("10.0.0.1:80", 128), ("10.0.0.2:80", 2)]);
    // Degraded ones serve only when nothing healthy is left.
    let eps = translate::endpoints(&cla(
        "cluster_name: c\nendpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.5, port_value: 80}}}, health_status: DEGRADED}]}]\n",
    ))
    .unwrap();
    assert_eq!(eps.len(), 1);
    let e = translate::endpoints(&cla(
        "cluster_name: c\nendpoints: [{priority: 1, lb_endpoints: []}]\n",
    ))
    .unwrap_err();
    assert!(e.contains("priority"), "{e}");
}

#[test]
fn istio_router_resources_translate_with_telemetry_ignored() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/istio-router-tcp.yaml"
    ))
    .unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let ig = Ignored::default();
    let y = |v: &serde_json::Value| serde_json::to_string(v).unwrap();
    let l = listener(&y(&doc["listeners"][0]));
    let l = translate::listener(&l, &ig).unwrap().unwrap();
    assert_eq!(l.address, "0.0.0.0:31400");
    assert_eq!(
        cluster_of(&l),
        "outbound|9000||tcp-echo.istio-io-tcp-traffic-shifting.svc.cluster.local"
    );
    for c in doc["clusters"].as_array().unwrap() {
        translate::cluster(&cluster(&y(c)), &ig).unwrap_or_else(|e| panic!("{}: {e}", c["name"]));
    }
    let eps = translate::endpoints(&cla(&y(&doc["endpoints"][0]))).unwrap();
    assert_eq!(eps.len(), 1, "the UNHEALTHY one is left out");
    // istio.stats, the access log, istio.metadata_exchange, PassthroughCluster.
    assert_eq!(ig.count.load(Ordering::Relaxed), 4);
}

#[test]
fn a_bootstrap_with_an_unknown_field_names_it() {
    let e = bootstrap::parse("static_resources: {clusters: [{name: a, conect_timeout: 1s}]}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("conect_timeout"), "{e}");
    let e = bootstrap::parse("static_resources: {listeners: [{name: a, filter_chains: [{filters: [{name: x, typed_config: {\"@type\": type.googleapis.com/no.such.Type}}]}]}]}\n").unwrap_err().to_string();
    assert!(e.contains("no.such.Type"), "{e}");
}

/// The cluster of a `tcp_proxy` listener.
fn cluster_of(l: &dataplane_config::ListenerConfig) -> &str {
    match l.filter() {
        Some(dataplane_config::Filter::TcpProxy(t)) => &t.cluster,
        other => panic!("not a tcp_proxy listener: {other:?}"),
    }
}
