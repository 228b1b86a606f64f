//! The overload manager end to end (issue 18, point 4): a burst of HTTP
//! keep-alive clients pushes a worker's connection table past its trigger
//! while a proxied L4 transfer runs. New connections are refused (RST, so
//! the kernel client sees ECONNREFUSED) and counted, idle keep-alive
//! connections are shed, responses say `connection: close`, the transfer
//! loses nothing, and once the pressure is gone the proxy accepts and keeps
//! connections alive again. Worker on CPU 1; clients and upstreams on CPU 0.

use std::time::Duration;

use e2e_tests::{
    Dataplane, Topology, http_upstream, python_upstream, require_root, serial, tcp_client,
    two_port_config, unique_prefix,
};

/// HTTP on 8080 to the Python HTTP upstream, L4 on 7007 to the Python
/// echo server; 2 000 connections per core (room for every client and its
/// upstream connection: none is refused for want of a slot), both overload
/// actions at 2 % of them.
fn config() -> String {
    let base = two_port_config("af_xdp", true);
    format!(
        "{base}
tcp:
  max_connections: 2000
listeners:
  - name: web
    address: \"10.10.1.1:8080\"
    filter_chains: [{{http: {{route_config: r}}}}]
  - {{name: echo, address: \"10.10.1.1:7007\", tcp_proxy: {{cluster: echo}}}}
clusters:
  - name: web
    endpoints: [{{address: \"10.10.2.2:8081\"}}]
  - name: echo
    endpoints: [{{address: \"10.10.2.2:7\"}}]
route_configs:
  - name: r
    virtual_hosts:
      - {{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: web}}}}]}}
overload_manager:
  refresh_interval_ms: 5
  actions:
    - name: envoy.overload_actions.stop_accepting_connections
      triggers: [{{name: connections, threshold: {{value: 0.02}}}}]
    - name: envoy.overload_actions.disable_http_keepalive
      triggers: [{{name: connections, threshold: {{value: 0.02}}}}]
"
    )
}

#[test]
fn past_its_trigger_the_proxy_refuses_sheds_idle_connections_and_loses_no_data() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("o"));
    let _http = http_upstream(&topo, "10.10.2.2", 8081, "web");
    let _echo = python_upstream(&topo, "echo", "10.10.2.2", 7);
    let dp = Dataplane::start(&topo, &config());
    // A proxied transfer that runs through the whole episode.
    let transfer = {
        let topo_prefix = topo.prefix.clone();
        std::thread::spawn(move || {
            e2e_tests::sh_output(&format!(
                "ip netns exec {topo_prefix}-cli taskset -c 0 /usr/bin/python3 {}/tests/scripts/tcp_client.py echo 10.10.1.1 7007 100000000",
                e2e_tests::root().display()
            ))
        })
    };
    // Python's start and the handshake, then the burst (the transfer takes
    // over a second).
    std::thread::sleep(Duration::from_millis(300));
    let r = tcp_client(&topo, "keepalive 10.10.1.1 8080 300 2 20");
    let out = transfer.join().expect("transfer thread");
    let echo = String::from_utf8_lossy(&out.stdout).into_owned();
    let t = dp.stats()["totals"].clone();
    eprintln!(
        "overload: clients {}; transfer {echo}; refused {}, activations {} / {}, idle shed {}, told to close {}",
        r,
        t["tcp_overload_refused"],
        t["overload_stop_accepting_connections_activations"],
        t["overload_disable_http_keepalive_activations"],
        t["overload_idle_connections_shed"],
        t["overload_keepalive_disabled"],
    );
    assert!(
        out.status.success() && echo.contains("\"ok\": true"),
        "the L4 transfer: {echo}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["ok"], true, "no connection ended otherwise: {r}");
    let refused = r["outcomes"]["refused"].as_u64().unwrap_or(0);
    assert!(refused > 0, "some connections refused: {r}");
    assert!(
        t["tcp_overload_refused"].as_u64().unwrap() >= refused,
        "each refusal counted: {t}"
    );
    assert!(
        r["outcomes"]["closed"].as_u64().unwrap_or(0) > 0,
        "some served, then closed: {r}"
    );
    assert!(
        t["overload_idle_connections_shed"].as_u64().unwrap()
            + t["overload_keepalive_disabled"].as_u64().unwrap()
            > 0,
        "{t}"
    );
    // The 20 connections left idle before the burst were shed.
    assert_eq!(r["outcomes"]["idle_closed"], 20, "{r}");
    assert!(
        t["overload_idle_connections_shed"].as_u64().unwrap() >= 20,
        "{t}"
    );
    assert_eq!(r["after"], "keepalive", "back to normal: {r}");
    // Off again, and Envoy's gauges say so.
    let out = topo.exec(
        "dut",
        "curl -sS -m 5 http://127.0.0.1:15000/stats/prometheus",
    );
    let prom = String::from_utf8_lossy(&out.stdout).into_owned();
    for action in ["stop_accepting_connections", "disable_http_keepalive"] {
        let line = format!("envoy_overload_envoy_overload_actions_{action}_active 0");
        assert!(prom.contains(&line), "{line} in {prom}");
    }
    assert!(
        prom.contains("envoy_overload_connections_pressure "),
        "{prom}"
    );
}
