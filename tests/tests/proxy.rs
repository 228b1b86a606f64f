//! The L4 proxy end to end: kernel clients (curl, wrk, Python) in the client
//! namespace, the data plane in between, real upstreams (nginx with our own
//! configuration, Python echo/sink servers) in the upstream namespace.

use std::time::{Duration, Instant};

use e2e_tests::cli_ok;
use e2e_tests::{
    Dataplane, NGINX_BODY, Nginx, Topology, python_upstream, require_root, serial, tcp_client,
    two_port_config, two_worker_af_packet_config, unique_prefix,
};
use e2e_tests::{counter as n, stats_cluster as cluster, stats_listener as listener};

/// The data plane on af_xdp with `proxy` (listeners and clusters YAML).
fn start(topo: &Topology, proxy: &str) -> Dataplane {
    Dataplane::start(topo, &format!("{}{proxy}", two_port_config("af_xdp", true)))
}

/// Wait up to 5 s for every proxied connection to end and every TCP
/// connection to leave (TIME_WAIT is 1 s); the proxy's active count.
fn settle(dp: &Dataplane, listener_name: &str) -> u64 {
    let mut active = u64::MAX;
    for _ in 0..50 {
        let s = dp.stats();
        active = n(&listener(&s, listener_name)["cx_active"]);
        if active == 0 && n(&s["totals"]["tcp_connections"]) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    active
}

/// wrk's summary: (requests, socket errors, non-2xx).
fn wrk(topo: &Topology, args: &str) -> (u64, String, bool) {
    let out = cli_ok(topo, &format!("wrk {args}"));
    let requests = out
        .lines()
        .find_map(|l| l.trim().split(" requests in ").next()?.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{out}"));
    let errors = out
        .lines()
        .find(|l| l.contains("Socket errors"))
        .unwrap_or("")
        .to_string();
    (requests, errors, out.contains("Non-2xx"))
}

/// Port 7007 proxied to the Python echo server on the upstream side.
const ECHO: &str = r#"
listeners:
  - {name: echo, address: "10.10.1.1:7007", tcp_proxy: {cluster: echo}}
clusters:
  - name: echo
    endpoints: [{address: "10.10.2.2:7"}]
"#;

const WEB: &str = r#"
listeners:
  - {name: web, address: "0.0.0.0:8080", tcp_proxy: {cluster: nginx}}
clusters:
  - name: nginx
    endpoints: [{address: "10.10.2.2:80"}]
"#;

#[test]
fn curl_and_wrk_through_the_proxy_to_nginx() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let _nginx = Nginx::start(&topo, "a", "10.10.2.2:80", 0);
    let mut dp = start(&topo, WEB);

    let body = cli_ok(&topo, "curl -sS -m 5 http://10.10.1.1:8080/");
    assert_eq!(body, NGINX_BODY);

    // Keep-alive: 64 connections, many requests each.
    let (reqs, errors, non2xx) = wrk(&topo, "-t1 -c64 -d3s http://10.10.1.1:8080/");
    assert!(reqs > 3000, "{reqs} requests in 3 s");
    assert!(errors.is_empty() && !non2xx, "{errors}");
    // A connection per request: nginx closes first, so its TIME_WAIT takes
    // our next SYN on the same port (timestamps grow per address pair).
    let (closes, errors, non2xx) = wrk(
        &topo,
        "-t1 -c16 -d3s -H 'Connection: close' http://10.10.1.1:8080/",
    );
    assert!(closes > 1000, "{closes} connections in 3 s");
    assert!(errors.is_empty() && !non2xx, "{errors}");
    // A session ends when both of its sides are done, not when the side in
    // TIME_WAIT leaves it (1 s): its circuit-breaker slot is free at once.
    std::thread::sleep(Duration::from_millis(200));
    let s = dp.stats();
    assert_eq!(n(&listener(&s, "web")["cx_active"]), 0);
    assert_eq!(n(&cluster(&s, "nginx")["open"]), 0);
    assert!(
        n(&s["totals"]["tcp_connections"]) > 0,
        "TIME_WAITs still held"
    );

    assert_eq!(settle(&dp, "web"), 0, "sessions left open");
    let s = dp.stats();
    let l = listener(&s, "web");
    let c = cluster(&s, "nginx");
    let ep = &c["endpoints"][0];
    eprintln!("listener {l}\ncluster {c}");
    // Every client connection (1 curl + 64 + one per close-request) had an
    // upstream, and byte counts agree at every level.
    assert!(n(&l["cx_total"]) >= 65 + closes, "{l}");
    assert_eq!(l["cx_total"], c["cx_total"]);
    assert_eq!(c["cx_total"], ep["cx_total"]);
    assert_eq!(c["cx_connected"], c["cx_total"]);
    for k in ["refused", "overflows", "no_upstream"] {
        assert_eq!(n(&l[k]), 0, "{k}: {l}");
    }
    // wrk stops with requests in flight: its kernel resets those
    // connections, and the reset is passed on. Nothing else resets.
    assert!(n(&l["resets"]) <= 64 + 16, "{l}");
    assert_eq!(l["bytes_down"], ep["bytes_down"]);
    assert!(n(&l["bytes_down"]) > (reqs + closes) * NGINX_BODY.len() as u64);
    assert_eq!(c["open"], 0);
    assert_eq!(c["pending"], 0);
    let table = e2e_tests::sh(&format!(
        "{} stats --socket {}",
        e2e_tests::dataplane_bin().display(),
        dp.socket.display()
    ));
    assert!(
        table.contains("listener web 0.0.0.0:8080 -> nginx: cx_total"),
        "{table}"
    );
    assert_eq!(dp.terminate(), Some(0), "{}", dp.log());
}

const BULK: &str = r#"
listeners:
  - {name: web, address: "10.10.1.1:8080", tcp_proxy: {cluster: nginx}}
  - {name: sink, address: "10.10.1.1:9000", tcp_proxy: {cluster: sink}}
clusters:
  - name: nginx
    endpoints: [{address: "10.10.2.2:80"}]
  - name: sink
    endpoints: [{address: "10.10.2.2:9000"}]
"#;

const MIB_256: u64 = 256 << 20;

/// 256 MiB down from nginx and 256 MiB up to a sink that answers the sha256
/// of what it got, both checked.
fn transfer_both_ways(topo: &Topology, nginx: &Nginx) {
    let t0 = Instant::now();
    let got = cli_ok(
        topo,
        "curl -sS -m 300 http://10.10.1.1:8080/big | sha256sum",
    );
    assert_eq!(
        got.split_whitespace().next(),
        Some(nginx.big_sha256.as_str())
    );
    let down = t0.elapsed();
    let r = tcp_client(topo, &format!("upload 10.10.1.1 9000 {MIB_256}"));
    assert_eq!(r["ok"], true, "{r}");
    eprintln!(
        "256 MiB down in {:.1} s, up in {:.1} s",
        down.as_secs_f64(),
        r["seconds"].as_f64().unwrap_or(0.0)
    );
}

#[test]
fn sha256_exact_256_mib_each_way() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let nginx = Nginx::start(&topo, "a", "10.10.2.2:80", MIB_256);
    let _sink = python_upstream(&topo, "sink", "10.10.2.2", 9000);
    let dp = start(&topo, BULK);
    transfer_both_ways(&topo, &nginx);
    assert_eq!(settle(&dp, "web"), 0);
    let s = dp.stats();
    assert!(n(&listener(&s, "web")["bytes_down"]) >= MIB_256);
    assert!(n(&listener(&s, "sink")["bytes_up"]) == MIB_256);
    assert_eq!(n(&s["totals"]["tcp_buffered_bytes"]), 0);
    // Received payload is passed on by reference: (almost) every full
    // segment of the 512 MiB was kept, not copied, on its way in.
    let kept = n(&s["totals"]["tcp_rx_zero_copy"]);
    assert!(kept > 2 * MIB_256 / 1448 * 9 / 10, "{kept}");
}

#[test]
fn sha256_exact_256_mib_each_way_under_loss_on_both_legs() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let nginx = Nginx::start(&topo, "a", "10.10.2.2:80", MIB_256);
    let _sink = python_upstream(&topo, "sink", "10.10.2.2", 9000);
    let dp = start(&topo, BULK);
    // 1 % of TCP frames dropped each way at both kernel peers: on the
    // client's leg and on the upstream's (AF_XDP transmits past our own
    // qdisc, so the rules sit on the kernel side).
    let rules = "nft add table inet chaos && \
        nft add chain inet chaos in '{ type filter hook input priority 0; }' && \
        nft add chain inet chaos out '{ type filter hook output priority 0; }' && \
        nft add rule inet chaos in ip protocol tcp numgen random mod 100 '<' 1 drop && \
        nft add rule inet chaos out ip protocol tcp numgen random mod 100 '<' 1 drop";
    for ns in ["cli", "up"] {
        let out = topo.exec(ns, rules);
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    transfer_both_ways(&topo, &nginx);
    assert_eq!(settle(&dp, "web"), 0);
    let s = dp.stats();
    assert!(n(&s["totals"]["tcp_retransmits"]) > 0, "loss was injected");
    let l = listener(&s, "web");
    assert_eq!(n(&l["resets"]), 0, "{l}");
}

#[test]
fn five_thousand_concurrent_connections_through_the_proxy() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let _echo = python_upstream(&topo, "echo", "10.10.2.2", 7);
    let dp = start(&topo, ECHO);
    let r = tcp_client(&topo, "many 10.10.1.1 7007 5000 2000");
    assert_eq!(r["good"], 5000, "{r}");
    assert_eq!(settle(&dp, "echo"), 0);
    let s = dp.stats();
    let l = listener(&s, "echo");
    assert_eq!(n(&l["cx_total"]), 5000, "{l}");
    assert_eq!(n(&l["bytes_up"]), 5000 * 2000);
    assert_eq!(n(&l["bytes_down"]), 5000 * 2000);
    assert_eq!(n(&l["refused"]) + n(&l["resets"]), 0, "{l}");
    assert_eq!(n(&s["totals"]["tcp_backlog_full"]), 0);
}

/// Seconds until curl's connection to `url` ended, and curl's exit code.
fn curl_time(topo: &Topology, url: &str) -> (f64, i32) {
    let out = topo.exec(
        "cli",
        &format!("curl -s -m 10 -o /dev/null -w '%{{time_total}}' {url}"),
    );
    let t = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(99.0);
    (t, out.status.code().unwrap_or(-1))
}

#[test]
fn an_upstream_that_is_down_closes_the_client_within_the_connect_timeout() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let dp = start(
        &topo,
        r#"
listeners:
  - {name: refusing, address: "10.10.1.1:8081", tcp_proxy: {cluster: refusing}}
  - {name: silent, address: "10.10.1.1:8082", tcp_proxy: {cluster: silent}}
  - {name: empty, address: "10.10.1.1:8083", tcp_proxy: {cluster: empty}}
clusters:
  - name: refusing   # the host is there, the port is closed: RST
    connect_timeout_ms: 500
    endpoints: [{address: "10.10.2.2:81"}]
  - name: silent     # nobody has the address: no answer at all
    connect_timeout_ms: 500
    endpoints: [{address: "10.10.2.77:80"}]
  - name: empty
"#,
    );
    let (t, code) = curl_time(&topo, "http://10.10.1.1:8081/");
    assert!(
        code != 0 && t < 0.4,
        "refused upstream: curl exit {code} after {t} s"
    );
    let (t, code) = curl_time(&topo, "http://10.10.1.1:8082/");
    assert!(
        code != 0 && (0.45..1.0).contains(&t),
        "silent upstream: curl exit {code} after {t} s (connect timeout 0.5 s)"
    );
    let (t, code) = curl_time(&topo, "http://10.10.1.1:8083/");
    assert!(
        code != 0 && t < 0.4,
        "empty cluster: curl exit {code} after {t} s"
    );
    let s = dp.stats();
    assert_eq!(n(&cluster(&s, "refusing")["connect_failures"]), 1);
    assert_eq!(n(&cluster(&s, "silent")["connect_timeouts"]), 1);
    assert_eq!(n(&cluster(&s, "empty")["no_upstream"]), 1);
    for l in ["refusing", "silent", "empty"] {
        assert_eq!(n(&listener(&s, l)["refused"]), 1, "{l}");
        assert_eq!(n(&listener(&s, l)["cx_active"]), 0, "{l}");
    }
}

#[test]
fn a_killed_endpoint_is_ejected_and_the_other_serves() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let out = topo.exec("up", "ip addr add 10.10.2.3/24 dev up0");
    assert!(out.status.success());
    let _a = Nginx::start(&topo, "a", "10.10.2.2:80", 0);
    let mut b = Nginx::start(&topo, "b", "10.10.2.3:80", 0);
    let dp = start(
        &topo,
        r#"
listeners:
  - {name: web, address: "10.10.1.1:8080", tcp_proxy: {cluster: pair}}
clusters:
  - name: pair
    endpoints: [{address: "10.10.2.2:80"}, {address: "10.10.2.3:80"}]
"#,
    );
    // A connection per request, so that each one is balanced; endpoint b
    // dies a second into the run.
    let load = {
        let prefix = topo.prefix.clone();
        std::thread::spawn(move || {
            e2e_tests::sh_output(&format!(
                "ip netns exec {prefix}-cli wrk -t1 -c8 -d4s -H 'Connection: close' http://10.10.1.1:8080/"
            ))
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    b.kill();
    let out = load.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    let s = dp.stats();
    let c = cluster(&s, "pair");
    let (ea, eb) = (&c["endpoints"][0], &c["endpoints"][1]);
    eprintln!("a {ea}\nb {eb}");
    assert!(
        n(&eb["cx_connected"]) > 100,
        "b served before it died: {eb}"
    );
    assert_eq!(n(&eb["ejections"]), 1, "{eb}");
    // Five refused connects in a row eject it (default
    // consecutive_failures); connects already under way when that happens
    // (at most one per wrk connection) fail too.
    let failed = n(&eb["connect_failures"]);
    assert!((5..=5 + 8).contains(&failed), "{eb}");
    assert_eq!(n(&ea["connect_failures"]), 0);
    // Afterwards everything goes to a, and succeeds.
    let before = n(&ea["cx_total"]);
    for _ in 0..30 {
        assert_eq!(
            cli_ok(&topo, "curl -sS -m 5 http://10.10.1.1:8080/"),
            NGINX_BODY
        );
    }
    let s = dp.stats();
    let c = cluster(&s, "pair");
    assert_eq!(n(&c["endpoints"][0]["cx_total"]), before + 30);
    assert_eq!(
        n(&c["endpoints"][1]["connect_failures"]),
        failed,
        "ejected: not tried again"
    );
}

#[test]
fn past_max_connections_clients_are_refused_and_counted() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let _hold = python_upstream(&topo, "hold", "10.10.2.2", 9100);
    let _echo = python_upstream(&topo, "echo", "10.10.2.2", 7);
    let mut dp = start(
        &topo,
        r#"
listeners:
  - {name: hold, address: "10.10.1.1:9100", tcp_proxy: {cluster: hold}}
  - {name: echo, address: "10.10.1.1:7007", tcp_proxy: {cluster: echo}}
clusters:
  - name: hold
    limits: {max_connections: 10}
    endpoints: [{address: "10.10.2.2:9100"}]
  - name: echo
    endpoints: [{address: "10.10.2.2:7"}]
"#,
    );
    let r = tcp_client(&topo, "hold 10.10.1.1 9100 25 1.5");
    assert_eq!(
        (r["open"].as_u64(), r["closed"].as_u64()),
        (Some(10), Some(15)),
        "{r}"
    );
    let s = dp.stats();
    let c = cluster(&s, "hold");
    assert_eq!(n(&c["overflows"]), 15, "{c}");
    assert_eq!(n(&listener(&s, "hold")["refused"]), 15);
    // The limit is per cluster: another cluster serves meanwhile, and the
    // limit frees up as connections end.
    assert_eq!(tcp_client(&topo, "echo 10.10.1.1 7007 100000")["ok"], true);
    assert_eq!(settle(&dp, "hold"), 0);
    let r = tcp_client(&topo, "hold 10.10.1.1 9100 10 0.5");
    assert_eq!(r["open"], 10, "{r}");
    assert_eq!(dp.terminate(), Some(0), "{}", dp.log());
}

#[test]
fn two_workers_proxy_through_software_steering() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let _echo = python_upstream(&topo, "echo", "10.10.2.2", 7);
    let cfg = two_worker_af_packet_config();
    let mut dp = Dataplane::start(
        &topo,
        &format!("{cfg}{}", ECHO.replace("10.10.1.1:7007", "0.0.0.0:7007")),
    );
    let r = tcp_client(&topo, "many 10.10.1.1 7007 1000 2000");
    assert_eq!(r["good"], 1000, "{r}");
    assert_eq!(settle(&dp, "echo"), 0, "no session left behind");
    let s = dp.stats();
    let per_core: Vec<u64> = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| n(&w["proxy"]["cx_total"]))
        .collect();
    eprintln!(
        "sessions per core {per_core:?}, steered {}",
        s["totals"]["steered_out"]
    );
    assert_eq!(per_core.iter().sum::<u64>(), 1000);
    assert!(
        per_core.iter().all(|&c| c > 300),
        "both cores proxy: {per_core:?}"
    );
    let l = listener(&s, "echo");
    assert_eq!(n(&l["resets"]) + n(&l["refused"]), 0, "{l}");
    assert_eq!(n(&s["totals"]["steer_ring_full"]), 0);
    assert_eq!(dp.terminate(), Some(0), "{}", dp.log());
}

#[test]
fn sigterm_stops_accepting_and_lets_sessions_finish() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let _echo = python_upstream(&topo, "echo", "10.10.2.2", 7);
    let mut dp = start(&topo, &format!("drain_timeout_ms: 20000\n{ECHO}"));
    // A session that echoes a line, waits for a flag file, echoes another.
    let flag = dp.dir.join("go");
    let script = format!(
        "import socket, os, time\n\
         s = socket.create_connection(('10.10.1.1', 7007), timeout=30)\n\
         s.sendall(b'one'); assert s.recv(3) == b'one'\n\
         print('connected', flush=True)\n\
         while not os.path.exists('{}'): time.sleep(0.05)\n\
         s.sendall(b'two'); assert s.recv(3) == b'two'\n\
         s.shutdown(socket.SHUT_WR); assert s.recv(1) == b''\n\
         print('done', flush=True)\n",
        flag.display()
    );
    let py = dp.dir.join("session.py");
    std::fs::write(&py, script).unwrap();
    let mut session = e2e_tests::Background::start(
        &topo,
        "cli",
        &["/usr/bin/python3", &py.display().to_string()],
        Some("connected"),
    );
    dp.sigterm();
    // Listeners go at once: a new connection is refused...
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let out = topo.exec("cli", "nc -z -w 2 10.10.1.1 7007");
        if !out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...while the session carries on, and the process waits for it.
    assert_eq!(
        dp.wait_exit(Duration::from_millis(500)),
        None,
        "exited before draining"
    );
    std::fs::write(&flag, "").unwrap();
    assert_eq!(
        dp.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        dp.log()
    );
    assert!(dp.log().contains("drained"), "{}", dp.log());
    session.kill();
}

#[test]
fn an_upstream_that_closes_first_still_gets_every_byte_and_the_fin() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let record = std::env::temp_dir().join(format!("finfirst-{}.txt", topo.prefix));
    let _ = std::fs::remove_file(&record);
    // The client sends 200 kB and its FIN at once. The upstream reads
    // nothing for 1.5 s (with tiny receive buffers) and sends its FIN after
    // 0.5 s; the upstream side's send queue is small. So most of the
    // client's bytes wait, held and unread in the client side's receive
    // queue, while that side completes its close (the client's FIN came
    // first: CLOSE_WAIT, then LAST_ACK, CLOSED).
    let _up = python_upstream(
        &topo,
        &format!("finfirst {}", record.display()),
        "10.10.2.2",
        9200,
    );
    let dp = start(
        &topo,
        r#"
tcp: {send_buffer: 16384}
listeners:
  - {name: ff, address: "10.10.1.1:9200", tcp_proxy: {cluster: ff}}
clusters:
  - name: ff
    endpoints: [{address: "10.10.2.2:9200"}]
"#,
    );
    let script = dp.dir.join("client.py");
    std::fs::write(
        &script,
        "import hashlib, os, socket\n\
         s = socket.create_connection(('10.10.1.1', 9200), timeout=30)\n\
         data = os.urandom(200_000)\n\
         s.sendall(data)\n\
         s.shutdown(socket.SHUT_WR)\n\
         assert s.recv(1) == b''  # the upstream's FIN, passed on\n\
         print(hashlib.sha256(data).hexdigest(), len(data))\n",
    )
    .unwrap();
    let sent = cli_ok(&topo, &format!("/usr/bin/python3 {}", script.display()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        if !text.is_empty() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = std::fs::remove_file(&record);
    assert_eq!(
        got.trim(),
        sent.trim(),
        "the upstream got every byte, then EOF"
    );
    assert_eq!(settle(&dp, "ff"), 0, "the session ended");
    let l = listener(&dp.stats(), "ff");
    assert_eq!(n(&l["bytes_up"]), 200_000);
    assert_eq!(n(&l["resets"]), 0, "{l}");
}
