//! The HTTP admin server end to end: Envoy's admin paths read with curl
//! from the data plane's namespace, `/stats/prometheus` checked by
//! Prometheus' own `promtool` and scraped by a real Prometheus server,
//! and Istio pilot-agent's readiness logic driven by a real
//! `control-agent` over xDS.

use std::time::{Duration, Instant};

use e2e_tests::cli_ok as cli;
use e2e_tests::xds::{CDS, EDS, LDS, Listen, XdsServer, cla, eds_cluster, listener};
use e2e_tests::{
    Agent, Dataplane, NGINX_BODY, Nginx, Topology, require_root, serial, two_port_config,
    unique_prefix,
};
use serde_json::Value;

const CONFIG: &str = r#"
listeners:
  - name: l4
    address: "0.0.0.0:8080"
    tcp_proxy: {cluster: nginx, stat_prefix: l4_in}
  - name: web
    address: "0.0.0.0:8081"
    filter_chains:
      - http: {route_config: routes, stat_prefix: ingress_http}
clusters:
  - name: nginx
    endpoints: [{address: "10.10.2.2:80"}]
route_configs:
  - name: routes
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {path: /missing}
            direct_response: {status: 503, body: gone}
          - match: {prefix: /}
            route: {cluster: nginx}
"#;

/// `METHOD path` on the admin server (from the data plane's namespace):
/// the status and the body.
fn admin(topo: &Topology, method: &str, path: &str) -> (u16, String) {
    let out = topo.exec(
        "dut",
        &format!(
            "curl -sS -g --path-as-is -m 5 -X {method} -w '\\n%{{http_code}}' 'http://127.0.0.1:15000{path}'"
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {path}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn get(topo: &Topology, path: &str) -> String {
    let (code, body) = admin(topo, "GET", path);
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// `name: value` lines of `/stats` into (name, value).
fn stat_lines(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn stat(topo: &Topology, name: &str) -> u64 {
    let text = get(
        topo,
        &format!("/stats?filter=^{}$", name.replace('.', "\\.")),
    );
    stat_lines(&text)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} in /stats: {text}"))
}

/// The value of the Prometheus sample `family{labels...}` that has every
/// one of `labels` (`k="v"` strings).
fn sample(prom: &str, family: &str, labels: &[&str]) -> Option<f64> {
    prom.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn envoy_admin_paths_stats_and_a_real_prometheus() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("adm"));
    let _nginx = Nginx::start(&topo, "a", "10.10.2.2:80", 1 << 20);
    let mut dp = Dataplane::start(
        &topo,
        &format!(
            "{}{CONFIG}stats: {{endpoints: true}}\n",
            two_port_config("af_xdp", true)
        ),
    );
    // Traffic on both paths.
    for _ in 0..3 {
        assert_eq!(
            cli(&topo, "curl -sS -m 5 http://10.10.1.1:8080/"),
            NGINX_BODY
        );
        assert_eq!(
            cli(&topo, "curl -sS -m 5 http://10.10.1.1:8081/"),
            NGINX_BODY
        );
    }
    cli(&topo, "curl -sS -m 5 http://10.10.1.1:8081/missing");

    // Ready, and the stats pilot-agent reads.
    assert_eq!(admin(&topo, "GET", "/ready"), (200, "LIVE\n".into()));
    let ready = stat_lines(&get(
        &topo,
        r"/stats?usedonly&filter=^(server\.state|listener_manager\.workers_started)",
    ));
    assert_eq!(
        ready,
        [
            ("listener_manager.workers_started".to_string(), 1),
            ("server.state".to_string(), 0)
        ]
    );
    // Envoy's names for what went through.
    assert_eq!(stat(&topo, "cluster.nginx.upstream_rq_2xx"), 3);
    assert_eq!(stat(&topo, "http.ingress_http.downstream_rq_2xx"), 3);
    assert_eq!(stat(&topo, "http.ingress_http.downstream_rq_5xx"), 1);
    assert_eq!(stat(&topo, "http.ingress_http.rq_direct_response"), 1);
    assert_eq!(stat(&topo, "tcp.l4_in.downstream_cx_total"), 3);
    assert_eq!(stat(&topo, "listener.0.0.0.0_8080.downstream_cx_total"), 3);
    assert!(stat(&topo, "cluster.nginx.upstream_cx_total") >= 4);
    // Static configuration: one CDS and one LDS success.
    assert_eq!(stat(&topo, "cluster_manager.cds.update_success"), 1);
    // usedonly leaves zero counters out.
    let used = get(&topo, "/stats?usedonly");
    assert!(!used.contains("upstream_cx_connect_fail:"), "{used}");
    assert!(get(&topo, "/stats").contains("cluster.nginx.upstream_cx_connect_fail: 0"));
    let bad = admin(&topo, "GET", "/stats?filter=(");
    assert_eq!(bad.0, 400, "{bad:?}");

    // JSON forms.
    let j: Value = serde_json::from_str(&get(&topo, "/stats?format=json")).unwrap();
    assert!(
        j["stats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "cluster.nginx.upstream_rq_total" && s["value"] == 3)
    );
    let info: Value = serde_json::from_str(&get(&topo, "/server_info")).unwrap();
    assert_eq!(info["state"], "LIVE");
    let clusters = get(&topo, "/clusters");
    assert!(
        clusters.contains("nginx::10.10.2.2:80::rq_total::3"),
        "{clusters}"
    );
    let cj: Value = serde_json::from_str(&get(&topo, "/clusters?format=json")).unwrap();
    assert_eq!(cj["cluster_statuses"][0]["name"], "nginx");
    let listeners = get(&topo, "/listeners");
    assert!(listeners.contains("l4::0.0.0.0:8080"), "{listeners}");
    let dump: Value = serde_json::from_str(&get(&topo, "/config_dump")).unwrap();
    assert!(dump["configs"].as_array().is_some_and(|c| !c.is_empty()));
    let mem: Value = serde_json::from_str(&get(&topo, "/memory")).unwrap();
    assert!(mem["allocated"].as_str().unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(admin(&topo, "GET", "/nope").0, 404);

    // Prometheus: Envoy's families and labels, checked by promtool.
    let prom = get(&topo, "/stats/prometheus");
    assert_eq!(
        sample(
            &prom,
            "envoy_cluster_upstream_rq_xx",
            &[
                r#"envoy_cluster_name="nginx""#,
                r#"envoy_response_code_class="2""#
            ]
        ),
        Some(3.0),
        "{prom}"
    );
    assert_eq!(
        sample(
            &prom,
            "envoy_http_downstream_rq_total",
            &[r#"envoy_http_conn_manager_prefix="ingress_http""#]
        ),
        Some(4.0)
    );
    assert_eq!(sample(&prom, "envoy_server_state", &[]), Some(0.0));
    // Per code, histograms at Envoy's buckets, and Istio's metrics.
    assert_eq!(
        sample(
            &prom,
            "envoy_cluster_upstream_rq",
            &[
                r#"envoy_cluster_name="nginx""#,
                r#"envoy_response_code="200""#
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &prom,
            "envoy_cluster_upstream_rq_time_bucket",
            &[r#"envoy_cluster_name="nginx""#, r#"le="+Inf""#]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &prom,
            "envoy_http_downstream_rq_time_count",
            &[r#"envoy_http_conn_manager_prefix="ingress_http""#]
        ),
        Some(4.0),
        "direct responses count too"
    );
    assert!(
        sample(
            &prom,
            "envoy_cluster_upstream_cx_connect_ms_count",
            &[r#"envoy_cluster_name="nginx""#]
        )
        .is_some_and(|n| n >= 4.0)
    );
    assert_eq!(
        sample(
            &prom,
            "istio_requests_total",
            &[
                r#"reporter="source""#,
                r#"destination_service="nginx""#,
                r#"response_code="200""#,
                r#"request_protocol="http""#
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &prom,
            "istio_tcp_connections_opened_total",
            &[r#"destination_service="nginx""#]
        ),
        Some(3.0)
    );
    assert!(
        sample(&prom, "istio_request_duration_milliseconds_count", &[]).is_some_and(|n| n == 3.0)
    );
    let text = get(&topo, "/stats?filter=upstream_rq_time");
    assert!(
        text.contains("cluster.nginx.upstream_rq_time: P0(nan,"),
        "{text}"
    );
    assert!(prom.contains("# TYPE envoy_cluster_upstream_cx_active gauge"));
    assert!(prom.contains("# HELP dataplane_worker_busy_cycles_total "));
    assert_eq!(
        sample(
            &prom,
            "dataplane_endpoint_rq_total",
            &[
                r#"envoy_cluster_name="nginx""#,
                r#"endpoint="10.10.2.2:80""#
            ]
        ),
        Some(3.0)
    );
    promtool_accepts(&topo, &prom);

    // `dataplane top` over the admin socket while requests flow.
    let bin = e2e_tests::dataplane_bin();
    let top = std::process::Command::new(&bin)
        .args(["top", "--once", "--interval", "1", "--socket"])
        .arg(&dp.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(900) {
        cli(&topo, "curl -sS -m 5 -o /dev/null http://10.10.1.1:8081/");
    }
    let top = top.wait_with_output().unwrap();
    let table = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&top.stderr)
    );
    for want in ["load%", "web", "nginx", "p99 ms"] {
        assert!(table.contains(want), "no {want:?} in\n{table}");
    }

    // A real Prometheus scrapes it and answers a rate query.
    prometheus_scrapes(&topo);

    // Mutating paths want POST.
    for p in [
        "/quitquitquit",
        "/healthcheck/fail",
        "/drain_listeners",
        "/logging",
    ] {
        let (code, body) = admin(&topo, "GET", p);
        assert_eq!(code, 405, "GET {p}: {body}");
    }
    assert_eq!(admin(&topo, "GET", "/ready").0, 200, "still running");
    // Health check failure: DRAINING, not ready; and back.
    assert_eq!(admin(&topo, "POST", "/healthcheck/fail").0, 200);
    assert_eq!(admin(&topo, "GET", "/ready"), (503, "DRAINING\n".into()));
    assert_eq!(stat(&topo, "server.state"), 1);
    assert_eq!(
        cli(&topo, "curl -sS -m 5 http://10.10.1.1:8081/"),
        NGINX_BODY,
        "still serving"
    );
    assert_eq!(admin(&topo, "POST", "/healthcheck/ok").0, 200);
    assert_eq!(admin(&topo, "GET", "/ready").0, 200);
    // Logging.
    let (code, body) = admin(&topo, "POST", "/logging?level=debug");
    assert_eq!(code, 200, "{body}");
    assert_eq!(admin(&topo, "POST", "/logging?level=loud").0, 400);
    // /quitquitquit: exits at once, cleanly.
    let t0 = Instant::now();
    assert_eq!(admin(&topo, "POST", "/quitquitquit").0, 200);
    let rc = dp.wait_exit(Duration::from_secs(10));
    assert_eq!(rc, Some(0), "{}", dp.log());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(dp.log().contains("/quitquitquit"));
}

/// `promtool check metrics` parses `prom` (exit 1 is a parse error). Its
/// lint findings may only be those Envoy's own output has, on Envoy's and
/// Istio's names (counters without `_total`, gauges with it, `_ms` and
/// milliseconds); the data plane's own families have none.
fn promtool_accepts(topo: &Topology, prom: &str) {
    let path = std::env::temp_dir().join(format!("prom-{}.txt", topo.prefix));
    std::fs::write(&path, prom).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", path.display()))
        .output()
        .expect("promtool (scripts/setup-host.sh installs Debian's prometheus)");
    let _ = std::fs::remove_file(&path);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out.status.code();
    assert!(
        matches!(code, Some(0) | Some(3)),
        "promtool: {code:?}\n{said}"
    );
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        let envoy_naming = (line.starts_with("envoy_") || line.starts_with("istio_"))
            && (line.contains(r#"should have "_total" suffix"#)
                || line.contains(r#"should not have "_total" suffix"#)
                || line.contains(r#"use base unit "seconds""#)
                || line.contains("should not contain abbreviated units"));
        assert!(
            envoy_naming,
            "promtool finding beyond Envoy's naming: {line}\n{said}"
        );
    }
}

/// A Prometheus server in the data plane's namespace scrapes it every
/// second; `rate()` of the HTTP request counter comes back positive while
/// requests go through.
fn prometheus_scrapes(topo: &Topology) {
    let dir = std::env::temp_dir().join(format!("prom-{}", topo.prefix));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n\
         scrape_configs:\n\
         - job_name: dataplane\n\
         \x20 metrics_path: /stats/prometheus\n\
         \x20 static_configs: [{targets: ['127.0.0.1:15000']}]\n",
    )
    .unwrap();
    let server = e2e_tests::Background::start(
        topo,
        "dut",
        &[
            "prometheus",
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            "--web.listen-address=127.0.0.1:19090",
            "--log.level=warn",
        ],
        None,
    );
    let query = "sum(rate(envoy_http_downstream_rq_total[5s]))";
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last;
    let ok = loop {
        // Requests keep flowing while Prometheus scrapes.
        cli(
            topo,
            "for i in 1 2 3 4 5; do curl -sS -m 5 -o /dev/null http://10.10.1.1:8081/; done",
        );
        let out = topo.exec(
            "dut",
            &format!("curl -sS -m 5 -G 'http://127.0.0.1:19090/api/v1/query' --data-urlencode 'query={query}'"),
        );
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
        let rate = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok());
        if rate.is_some_and(|r| r > 0.0) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(ok, "Prometheus never returned a positive {query}: {last}");

    // Every expression of the Grafana dashboard returns data.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(e2e_tests::root().join("docs/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 15);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut missing = exprs.clone();
    while !missing.is_empty() && Instant::now() < deadline {
        cli(
            topo,
            "for i in 1 2 3; do curl -sS -m 5 -o /dev/null http://10.10.1.1:8081/; curl -sS -m 5 -o /dev/null http://10.10.1.1:8080/; done",
        );
        missing.retain(|q| {
            let out = topo.exec(
                "dut",
                &format!(
                    "curl -sS -m 5 -G 'http://127.0.0.1:19090/api/v1/query' --data-urlencode 'query={q}'"
                ),
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            v["data"]["result"].as_array().is_none_or(|r| r.is_empty())
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        missing.is_empty(),
        "dashboard expressions without data: {missing:#?}"
    );
}

/// Istio pilot-agent's readiness decision, as `pkg/istio-agent` makes it:
/// `server.state` LIVE and `workers_started` 1, and (until it has once
/// been ready) at least one CDS and one LDS update accepted. Returns why
/// not.
fn pilot_agent_ready(topo: &Topology, once_ready: &mut bool) -> Result<(), String> {
    let st = stat_lines(&get(
        topo,
        r"/stats?usedonly&filter=^(server\.state|listener_manager\.workers_started)",
    ));
    let val = |s: &[(String, u64)], n: &str| s.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    let state = val(&st, "server.state").ok_or("server.state is not yet updated")?;
    let workers = val(&st, "listener_manager.workers_started")
        .ok_or("listener_manager.workers_started is not yet updated")?;
    if state != 0 {
        return Err(format!("server is not live, current state is: {state}"));
    }
    if workers != 1 {
        return Err("workers have not yet started".into());
    }
    if *once_ready {
        return Ok(());
    }
    let up = stat_lines(&get(
        topo,
        r"/stats?usedonly&filter=^(cluster_manager\.cds|listener_manager\.lds)\.(update_success|update_rejected)$",
    ));
    let cds = val(&up, "cluster_manager.cds.update_success").unwrap_or(0);
    let lds = val(&up, "listener_manager.lds.update_success").unwrap_or(0);
    if cds > 0 && lds > 0 {
        *once_ready = true;
        Ok(())
    } else {
        Err(format!("config not received from XDS server: {up:?}"))
    }
}

#[test]
fn istio_readiness_follows_xds_acks_and_health_checks() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("rdy"));
    let dp = Dataplane::start(&topo, &two_port_config("af_xdp", true));
    let mut once = false;
    // Nothing configured yet, no agent: not ready.
    let why = pilot_agent_ready(&topo, &mut once).unwrap_err();
    assert!(why.contains("config not received"), "{why}");

    let server = XdsServer::start(Listen::Unix(dp.dir.join("xds.sock")));
    server.set(CDS, vec![eds_cluster("web")]);
    server.set(EDS, vec![cla("web", &["10.10.2.2:7001"])]);
    server.set(LDS, vec![listener("web", 8080, "web")]);
    let uri = server.uri();
    let agent = Agent::start(&dp, &["--server", &uri, "--node-id", "n"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(why) = pilot_agent_ready(&topo, &mut once) {
        assert!(
            Instant::now() < deadline,
            "not ready after 20 s: {why}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(stat(&topo, "cluster_manager.cds.update_rejected"), 0);

    // A cluster the data plane cannot serve: NACKed, counted as rejected;
    // still ready (pilot-agent stops looking at updates once ready).
    let ring = (
        "ring".to_string(),
        control_agent::bootstrap::any_from_yaml(
            "envoy.config.cluster.v3.Cluster",
            "name: ring\ntype: STATIC\nlb_policy: RING_HASH\nload_assignment: {cluster_name: ring}\n",
        )
        .unwrap(),
    );
    server.upsert(CDS, vec![ring]);
    server.wait_for(Duration::from_secs(10), "CDS NACK", |r| {
        r.type_url == CDS && r.is_nack()
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while stat(&topo, "cluster_manager.cds.update_rejected") == 0 {
        assert!(
            Instant::now() < deadline,
            "NACK not counted\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pilot_agent_ready(&topo, &mut once).is_ok());

    // /config_dump holds what the agent accepted, as Envoy's dump does.
    let dump: Value = serde_json::from_str(&get(&topo, "/config_dump")).unwrap();
    let types: Vec<&str> = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["@type"].as_str())
        .collect();
    assert!(
        types.contains(&"type.googleapis.com/envoy.admin.v3.ClustersConfigDump")
            && types.contains(&"type.googleapis.com/envoy.admin.v3.ListenersConfigDump"),
        "{dump}"
    );
    // It reads as Envoy's own ConfigDump proto, nothing unknown, and holds
    // the accepted resources (not the rejected one).
    control_agent::config_dump::check(&dump.to_string())
        .unwrap_or_else(|e| panic!("{e}: {dump:#}"));
    let text = dump.to_string();
    assert!(
        text.contains(r#""name":"web""#) && !text.contains(r#""name":"ring""#),
        "{dump:#}"
    );

    // Health checks failing: not ready, whatever the configuration.
    assert_eq!(admin(&topo, "POST", "/healthcheck/fail").0, 200);
    let why = pilot_agent_ready(&topo, &mut once).unwrap_err();
    assert!(why.contains("not live"), "{why}");
    assert_eq!(admin(&topo, "POST", "/healthcheck/ok").0, 200);
    assert!(pilot_agent_ready(&topo, &mut once).is_ok());
    drop(agent);
    drop(server);
    drop(dp);
}

const TRACED: &str = r#"
listeners:
  - name: web
    address: "0.0.0.0:8081"
    traffic_direction: INBOUND
    filter_chains:
      - http: {route_config: routes, stat_prefix: inbound_http, tracing: {random_sampling: 100}}
clusters:
  - name: echo
    endpoints: [{address: "10.10.2.2:8081"}]
route_configs:
  - name: routes
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {path: /nothing}
            direct_response: {status: 503}
          - match: {prefix: /}
            route: {cluster: echo}
tracing:
  zipkin: {collector: "127.0.0.1:19411", service_name: mesh-node, flush_interval_ms: 100}
"#;

/// Header `name` as the echo upstream received it.
fn upstream_header(doc: &Value, name: &str) -> Option<String> {
    e2e_tests::echoed_header(doc, name).map(str::to_string)
}

#[test]
fn traces_propagate_and_sampled_spans_reach_a_zipkin_collector() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("trc"));
    let _echo = e2e_tests::http_upstream(&topo, "10.10.2.2", 8081, "echo");
    let spans_file = std::env::temp_dir().join(format!("spans-{}.jsonl", topo.prefix));
    let _ = std::fs::remove_file(&spans_file);
    let script = e2e_tests::root().join("tests/scripts/zipkin_collector.py");
    let _collector = e2e_tests::Background::start(
        &topo,
        "dut",
        &[
            "/usr/bin/python3",
            script.to_str().unwrap(),
            "127.0.0.1",
            "19411",
            spans_file.to_str().unwrap(),
        ],
        Some("ready"),
    );
    let _dp = Dataplane::start(
        &topo,
        &format!("{}{TRACED}", two_port_config("af_xdp", true)),
    );
    let req = |headers: &str| -> Value {
        let body = cli(
            &topo,
            &format!("curl -sS -m 5 {headers} http://10.10.1.1:8081/x"),
        );
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    // W3C context: continued; the upstream's parent is our span.
    let (t, p) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let w3c = req(&format!(
        "-H 'traceparent: 00-{t}-{p}-01' -H 'tracestate: k=v'"
    ));
    let tp = upstream_header(&w3c, "traceparent").expect("traceparent upstream");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", t, "01"), "{tp}");
    assert_ne!(parts[2], p, "a span of our own");
    let w3c_span = parts[2].to_string();
    assert_eq!(
        upstream_header(&w3c, "x-b3-parentspanid").as_deref(),
        Some(p)
    );
    assert_eq!(upstream_header(&w3c, "tracestate").as_deref(), Some("k=v"));
    // B3 with a 64-bit trace id.
    let b3 = req(
        "-H 'x-b3-traceid: 463ac35c9f6413ad' -H 'x-b3-spanid: a2fb4a1d1a96d312' -H 'x-b3-sampled: 1'",
    );
    assert_eq!(
        upstream_header(&b3, "x-b3-traceid").as_deref(),
        Some("463ac35c9f6413ad")
    );
    let b3_span = upstream_header(&b3, "x-b3-spanid").unwrap();
    // Not sampled by the caller: passed on as such, no span.
    let off = req(
        "-H 'x-b3-traceid: 1111111111111111' -H 'x-b3-spanid: 2222222222222222' -H 'x-b3-sampled: 0'",
    );
    assert_eq!(upstream_header(&off, "x-b3-sampled").as_deref(), Some("0"));
    // No context: a new trace, sampled at 100 %.
    let fresh = req("");
    let fresh_trace = upstream_header(&fresh, "x-b3-traceid").unwrap();
    assert_eq!(
        upstream_header(&fresh, "x-b3-sampled").as_deref(),
        Some("1")
    );
    assert!(upstream_header(&fresh, "x-b3-parentspanid").is_none());
    // A direct response is traced too.
    cli(
        &topo,
        "curl -sS -m 5 -o /dev/null http://10.10.1.1:8081/nothing",
    );

    // The collector receives the four sampled spans.
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans: Vec<Value> = loop {
        let text = std::fs::read_to_string(&spans_file).unwrap_or_default();
        let spans: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if spans.len() >= 4 || Instant::now() > deadline {
            break spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = std::fs::remove_file(&spans_file);
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let by_id = |id: &str| {
        spans
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no span {id} in {spans:#?}"))
    };
    let s = by_id(&w3c_span);
    assert_eq!(s["traceId"], t);
    assert_eq!(s["parentId"], p);
    assert_eq!(s["kind"], "SERVER");
    assert_eq!(s["name"], "ingress");
    assert_eq!(s["localEndpoint"]["serviceName"], "mesh-node");
    assert_eq!(s["tags"]["http.status_code"], "200");
    assert_eq!(s["tags"]["http.method"], "GET");
    assert_eq!(s["tags"]["http.url"], "http://10.10.1.1:8081/x");
    assert_eq!(s["tags"]["upstream_cluster"], "echo");
    assert!(s["duration"].as_u64().unwrap() > 0);
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let ts = s["timestamp"].as_u64().unwrap();
    assert!(now_us - ts < 60_000_000, "timestamp {ts} vs now {now_us}");
    let s = by_id(&b3_span);
    assert_eq!(
        (s["traceId"].as_str(), s["parentId"].as_str()),
        (Some("463ac35c9f6413ad"), Some("a2fb4a1d1a96d312"))
    );
    let fresh_span = spans
        .iter()
        .find(|s| s["traceId"] == fresh_trace.as_str() && s["tags"]["http.status_code"] == "200")
        .expect("the new trace's span");
    assert!(fresh_span.get("parentId").is_none());
    let direct = spans
        .iter()
        .find(|s| s["tags"]["http.status_code"] == "503")
        .expect("the direct response's span");
    assert_eq!(direct["tags"]["error"], "true");
    assert!(!spans.iter().any(|s| s["traceId"] == "1111111111111111"));
    assert_eq!(stat(&topo, "dataplane.tracing.spans_sent_total"), 4);
}
