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
    .unwrap()
    .cfg;
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
      codec_type: HTTP2
      route_config: {name: r}
"#;
    let e = translate::listener(&listener(hcm), &ig).unwrap_err();
    assert!(e.contains("HTTP/2 is not supported yet"), "{e}");
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
    let l = translate::listener(&l, &ig).unwrap().unwrap().cfg;
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

/// What Istio puts in a sidecar's outbound HTTP listener, with an inline
/// route configuration using every matcher and action the data plane has.
const ISTIO_HCM: &str = r#"
name: web
address: {socket_address: {address: 0.0.0.0, port_value: 8080}}
filter_chains:
- filters:
  - name: istio.metadata_exchange
    typed_config:
      "@type": type.googleapis.com/udpa.type.v1.TypedStruct
      type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: outbound_0.0.0.0_8080
      use_remote_address: false
      normalize_path: true
      merge_slashes: true
      path_with_escaped_slashes_action: KEEP_UNCHANGED
      stream_idle_timeout: 0s
      common_http_protocol_options: {idle_timeout: 60s, max_requests_per_connection: 100}
      upgrade_configs: [{upgrade_type: websocket}]
      tracing: {client_sampling: {value: 100}}
      access_log:
      - name: envoy.access_loggers.file
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
          path: /dev/stdout
      http_filters:
      - name: istio.metadata_exchange
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/io.istio.http.peer_metadata.Config
      - name: envoy.filters.http.fault
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
          abort: {http_status: 503, percentage: {numerator: 25, denominator: HUNDRED}}
      - name: envoy.filters.http.cors
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
      - name: istio.stats
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/stats.PluginConfig
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
      route_config:
        name: "8080"
        validate_clusters: false
        virtual_hosts:
        - name: reviews.default.svc.cluster.local:8080
          domains: [reviews.default.svc.cluster.local, "reviews:8080", "10.96.0.7"]
          routes:
          - match:
              prefix: /api
              case_sensitive: false
              headers: [{name: end-user, string_match: {exact: jason}}, {name: ":method", exact_match: GET}]
              query_parameters: [{name: v, string_match: {prefix: "2"}}]
            route:
              weighted_clusters:
                clusters:
                - {name: "outbound|8080|v1|reviews", weight: 90}
                - {name: "outbound|8080|v2|reviews", weight: 10}
              timeout: 3s
              prefix_rewrite: /v1/api
              retry_policy: {retry_on: "connect-failure,refused-stream,unavailable", num_retries: 2}
              hash_policy: [{header: {header_name: x-user}}]
            request_headers_to_add: [{header: {key: x-canary, value: "1"}, append: false}]
          - match: {safe_regex: {regex: "/old/.*"}}
            redirect: {https_redirect: true, response_code: PERMANENT_REDIRECT}
          - match: {path: /ping}
            direct_response: {status: 200, body: {inline_string: pong}}
          - match: {prefix: /}
            route: {cluster: "outbound|8080||reviews", timeout: 0s}
"#;

#[test]
fn an_istio_http_listener_becomes_an_http_chain_and_its_route_configuration() {
    let ig = Ignored::default();
    let plan = translate::listener(&listener(ISTIO_HCM), &ig)
        .unwrap()
        .unwrap();
    let Some(dataplane_config::Filter::Http(h)) = plan.cfg.filter() else {
        panic!("not an http listener: {:?}", plan.cfg);
    };
    assert_eq!(h.route_config, "inline:web");
    assert!(h.normalize_path && h.merge_slashes && !h.use_remote_address);
    assert_eq!(h.stream_idle_timeout_ms, 0);
    assert_eq!(h.idle_timeout_ms, 60_000);
    assert_eq!(h.max_requests_per_connection, 100);
    assert_eq!(h.upgrade_configs[0].upgrade_type, "websocket");
    let abort = h.fault.as_ref().unwrap().abort.as_ref().unwrap();
    assert_eq!((abort.http_status, abort.percentage), (503, 25.0));
    let r = plan.inline_routes().expect("inline routes");
    assert_eq!(r.name, "inline:web");
    let v = &r.virtual_hosts[0];
    assert_eq!(v.domains.len(), 3);
    let api = &v.routes[0];
    assert_eq!(api.matcher.prefix.as_deref(), Some("/api"));
    assert!(!api.matcher.case_sensitive);
    assert_eq!(api.matcher.headers[0].exact.as_deref(), Some("jason"));
    assert_eq!(api.matcher.headers[1].name, ":method");
    assert_eq!(api.matcher.query_parameters[0].prefix.as_deref(), Some("2"));
    let a = api.route.as_ref().unwrap();
    let w = a.weighted_clusters.as_ref().unwrap();
    assert_eq!((w[0].weight, w[1].weight), (90, 10));
    assert_eq!(a.timeout_ms, 3_000);
    assert_eq!(a.prefix_rewrite.as_deref(), Some("/v1/api"));
    assert_eq!(
        api.request_headers_to_add[0].append_action,
        dataplane_config::http::AppendAction::OverwriteIfExistsOrAdd
    );
    let red = v.routes[1].redirect.as_ref().unwrap();
    assert!(red.https_redirect);
    assert_eq!(red.response_code, 308);
    assert_eq!(
        v.routes[2]
            .direct_response
            .as_ref()
            .unwrap()
            .body
            .as_deref(),
        Some("pong")
    );
    assert_eq!(v.routes[3].route.as_ref().unwrap().timeout_ms, 0);
    // Telemetry, tracing, access logs, retries and hashing were ignored,
    // each counted.
    assert!(ig.count.load(std::sync::atomic::Ordering::Relaxed) >= 6);
}

#[test]
fn http_features_the_data_plane_lacks_are_refused_with_the_field() {
    let ig = Ignored::default();
    let cases = [
        (
            "abort: {http_status: 503,",
            "delay: {header_delay: {}, percentage: {numerator: 5}}\n          abort: {http_status: 503,",
            "only fixed_delay is supported",
        ),
        (
            "- name: envoy.filters.http.cors\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
            "- name: envoy.filters.http.ext_authz\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "envoy.filters.http.ext_authz",
        ),
        (
            "prefix: /api\n",
            "prefix: /api\n              grpc: {}\n",
            "grpc: not supported",
        ),
        (
            "timeout: 3s",
            "timeout: 3s\n              cors: {allow_origin_string_match: [{exact: x}]}",
            "cors",
        ),
        (
            "{name: \"outbound|8080|v1|reviews\", weight: 90}",
            "{name: \"outbound|8080|v1|reviews\", weight: 90, request_headers_to_add: [{header: {key: a, value: b}}]}",
            "only name and weight",
        ),
        (
            "value: \"1\"",
            "value: \"%DOWNSTREAM_REMOTE_ADDRESS%\"",
            "substitution is not supported",
        ),
        (
            "domains: [reviews.default.svc.cluster.local,",
            "domains: [\"a.*.b\", reviews.default.svc.cluster.local,",
            "a wildcard may only be",
        ),
        // Found by fuzzing: accepted (ACKed) here, refused by the data
        // plane when pushed.
        (
            "upgrade_configs: [{upgrade_type: websocket}]",
            "upgrade_configs: [{upgrade_type: \"websock=t\"}]",
            "upgrade_configs[0].upgrade_type = websock=t: must be a protocol token",
        ),
    ];
    for (from, to, want) in cases {
        assert!(ISTIO_HCM.contains(from), "{from}");
        let y = ISTIO_HCM.replace(from, to);
        let got = match serde_saphyr::from_str::<serde_json::Value>(&y) {
            Ok(_) => match std::panic::catch_unwind(|| listener(&y)) {
                Ok(l) => match translate::listener(&l, &ig) {
                    Ok(p) => format!("accepted: {p:?}"),
                    Err(e) => e,
                },
                Err(_) => format!("does not decode: {y}"),
            },
            Err(e) => format!("bad yaml: {e}"),
        };
        assert!(got.contains(want), "{want}: {got}");
    }
}
