//! The HTTP/1.1 connection manager end to end: curl, wrk, h2load --h1 and
//! raw sockets in the client namespace, the data plane in between, nginx
//! and a Python HTTP upstream that reports what it received.

use std::time::Duration;

use e2e_tests::cli_ok as cli;
use e2e_tests::echoed_header as header;
use e2e_tests::{
    Dataplane, NGINX_BODY, Nginx, Topology, http_upstream, require_root, serial, two_port_config,
    unique_prefix,
};
use e2e_tests::{counter as n, stats_cluster as cluster, stats_listener as listener};
use serde_json::Value;

const CONFIG: &str = r#"
listeners:
  - name: web
    address: "0.0.0.0:8080"
    filter_chains:
      - http:
          route_config: routes
          normalize_path: true
          merge_slashes: true
clusters:
  - name: nginx
    endpoints: [{address: "10.10.2.2:80"}]
  - name: echo
    endpoints: [{address: "10.10.2.2:8081"}]
  - name: canary
    endpoints: [{address: "10.10.2.2:8082"}]
route_configs:
  - name: routes
    response_headers_to_add: [{key: x-route-config, value: routes}]
    virtual_hosts:
      - name: echo
        domains: [echo.test, "echo.test:8080"]
        routes:
          - match: {prefix: /, headers: [{name: x-canary, exact: "yes"}]}
            route: {cluster: canary}
          - match: {path_separated_prefix: /api}
            route: {cluster: echo, prefix_rewrite: /v1}
            request_headers_to_add: [{key: x-route, value: api}]
          - match: {prefix: /old/}
            redirect: {prefix_rewrite: /new/, response_code: 308}
          - match: {prefix: /}
            route: {cluster: echo}
      - name: default
        domains: ["*"]
        routes:
          - match: {path: /health}
            direct_response: {status: 200, body: ok}
          - match: {prefix: /}
            route: {cluster: nginx}
"#;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// One request over a raw socket from the client namespace: what came
/// back before the data plane closed (or 2 s passed).
fn raw(topo: &Topology, request: &str) -> String {
    let py = format!(
        "import socket,sys\ns=socket.create_connection(('10.10.1.1',8080))\ns.sendall({request:?}.encode('latin-1'))\ns.settimeout(2)\nout=b''\ntry:\n  while True:\n    b=s.recv(65536)\n    if not b: break\n    out+=b\nexcept socket.timeout:\n  pass\nexcept ConnectionResetError:\n  out+=b'[reset]'\nsys.stdout.write(out.decode('latin-1'))\n"
    );
    let file = std::env::temp_dir().join(format!("raw-{}.py", topo.prefix));
    std::fs::write(&file, py).unwrap();
    cli(topo, &format!("python3 {}", file.display()))
}

#[test]
fn real_clients_route_rewrite_and_stream_through_the_http_path() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("h"));
    let _nginx = Nginx::start(&topo, "a", "10.10.2.2:80", 8 << 20);
    let _echo = http_upstream(&topo, "10.10.2.2", 8081, "echo");
    let _canary = http_upstream(&topo, "10.10.2.2", 8082, "canary");
    let dp = Dataplane::start(
        &topo,
        &format!("{}{CONFIG}", two_port_config("af_xdp", true)),
    );

    // Default virtual host: nginx, and a direct response.
    assert_eq!(
        cli(&topo, "curl -sS -m 5 http://10.10.1.1:8080/"),
        NGINX_BODY
    );
    assert_eq!(
        cli(&topo, "curl -sS -m 5 http://10.10.1.1:8080/health"),
        "ok"
    );

    // Routed by host, path and header; rewritten; Envoy's headers added.
    let doc = json(&cli(
        &topo,
        "curl -sS -m 5 -H 'Host: echo.test' 'http://10.10.1.1:8080/api/a/../b//c?x=1'",
    ));
    assert_eq!(doc["upstream"], "echo");
    assert_eq!(doc["path"], "/v1/b/c?x=1", "normalized, merged, rewritten");
    assert_eq!(header(&doc, "x-envoy-original-path"), Some("/api/b/c?x=1"));
    assert_eq!(header(&doc, "x-route"), Some("api"));
    assert_eq!(header(&doc, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&doc, "host"), Some("echo.test"));
    assert_eq!(header(&doc, "x-request-id").map(str::len), Some(36));
    let doc = json(&cli(
        &topo,
        "curl -sS -m 5 -H 'Host: echo.test' -H 'x-canary: yes' http://10.10.1.1:8080/api",
    ));
    assert_eq!(doc["upstream"], "canary");
    // `/apix` is not under `/api` (a separated prefix).
    let doc = json(&cli(
        &topo,
        "curl -sS -m 5 -H 'Host: echo.test' http://10.10.1.1:8080/apix",
    ));
    assert_eq!(doc["path"], "/apix");

    // Response headers: ours, and the route configuration's.
    let head = cli(
        &topo,
        "curl -sS -m 5 -o /dev/null -D - -H 'Host: echo.test' http://10.10.1.1:8080/x",
    );
    let lower = head.to_ascii_lowercase();
    for want in [
        "x-envoy-upstream-service-time: ",
        "server: dataplane",
        "x-route-config: routes",
    ] {
        assert!(lower.contains(want), "no {want:?} in\n{head}");
    }
    // A redirect, answered locally.
    let head = cli(
        &topo,
        "curl -sS -m 5 -o /dev/null -D - -H 'Host: echo.test' 'http://10.10.1.1:8080/old/p?q'",
    );
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("location: http://echo.test/new/p?q"),
        "{head}"
    );

    // Bodies both ways, as streams: 8 MiB up (content-length and chunked),
    // 8 MiB down (nginx) and chunked down with a trailer.
    let file = std::env::temp_dir().join(format!("body-{}", topo.prefix));
    let sha = e2e_tests::sh(&format!(
        "head -c 8388608 /dev/urandom | tee {} | sha256sum",
        file.display()
    ));
    let sha = sha.split_whitespace().next().unwrap();
    for extra in ["", "-H 'Transfer-Encoding: chunked'"] {
        let doc = json(&cli(
            &topo,
            &format!(
                "curl -sS -m 30 -H 'Host: echo.test' {extra} --data-binary @{} http://10.10.1.1:8080/upload",
                file.display()
            ),
        ));
        assert_eq!(doc["body_len"], 8388608, "{extra}");
        assert_eq!(doc["body_sha256"], sha, "{extra}");
    }
    let _ = std::fs::remove_file(&file);
    let big = cli(
        &topo,
        "curl -sS -m 30 http://10.10.1.1:8080/big | sha256sum",
    );
    let nginx_sha = e2e_tests::sh(&format!(
        "sha256sum {}/big",
        std::env::temp_dir()
            .join(format!("nginx-{}-a", topo.prefix))
            .display()
    ));
    assert_eq!(
        big.split_whitespace().next(),
        nginx_sha.split_whitespace().next()
    );
    let chunked = cli(
        &topo,
        "curl -sS -m 30 -H 'Host: echo.test' http://10.10.1.1:8080/chunked/1000000 | wc -c",
    );
    assert_eq!(chunked.trim(), "1000000");

    // Load: keep-alive from wrk and h2load, every request answered 2xx.
    let out = cli(&topo, "wrk -t1 -c32 -d3s http://10.10.1.1:8080/");
    assert!(
        !out.contains("Socket errors") && !out.contains("Non-2xx"),
        "{out}"
    );
    let out = cli(
        &topo,
        "h2load --h1 -n 4000 -c 16 -m 1 -H ':authority: echo.test' http://10.10.1.1:8080/k",
    );
    assert!(out.contains("4000 succeeded, 0 failed, 0 errored"), "{out}");

    // Two host fields (what `h2load -H 'Host: …'` sends): 400, as RFC 9112
    // 3.2 says.
    let out = raw(&topo, "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");

    // An upstream that misbehaves: what can still be answered is, what
    // cannot is 503 (protocol error) or a cut connection, and the next
    // request is served as if nothing happened.
    let bad = |what: &str| {
        topo.exec(
            "cli",
            &format!(
                "curl -sS -m 10 -H 'Host: echo.test' -w '\\n%{{http_code}}' http://10.10.1.1:8080/bad/{what}"
            ),
        )
    };
    let ok = |what: &str| {
        let out = bad(what);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let protocol_error = "upstream connect error or disconnect/reset before headers. reset reason: protocol error\n503";
    assert_eq!(ok("garbage"), protocol_error);
    assert_eq!(ok("huge-headers"), protocol_error);
    assert_eq!(ok("continue"), "ok\n200");
    assert_eq!(ok("continue-at-once"), "ok\n200");
    assert_eq!(ok("slow-headers"), "ok\n200");
    assert_eq!(ok("slow-body"), "0123456789\n200");
    let body = ok("close-delimited");
    assert_eq!(body, format!("{}\n200", "y".repeat(5000)));
    let cut = bad("reset-mid");
    assert!(
        !cut.status.success(),
        "a body cut short must not look complete"
    );
    let doc = json(&cli(
        &topo,
        "curl -sS -m 5 -H 'Host: echo.test' http://10.10.1.1:8080/after",
    ));
    assert_eq!(doc["path"], "/after");

    // Smuggling shapes: 400 and the connection closes; nothing reaches an
    // upstream.
    let before = n(&cluster(&dp.stats(), "echo")["rq_total"]);
    for req in [
        "POST /api HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /api HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
        "GET /api HTTP/1.1\r\nHost: echo.test\r\nX: a\r\n folded\r\n\r\n",
        "POST /api HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let out = raw(&topo, req);
        if req.ends_with("zz\r\n") {
            // The head was fine and went out; the bad chunk resets.
            assert!(!out.contains(" 200 "), "{out}");
        } else {
            assert!(out.starts_with("HTTP/1.1 400"), "{req:?}: {out}");
        }
    }
    let s = dp.stats();
    assert!(n(&cluster(&s, "echo")["rq_total"]) <= before + 1);
    let l = listener(&s, "web");
    eprintln!("listener {l}");
    assert!(n(&l["rq_malformed"]) >= 3, "{l}");
    assert!(n(&l["rq_2xx"]) > 4000, "{l}");
    assert_eq!(n(&l["rq_5xx"]), 2, "the two protocol errors: {l}");
    let c = cluster(&s, "echo");
    assert!(
        n(&c["rq_reused"]) > 3000,
        "pooled upstream connections: {c}"
    );
    assert!(n(&c["cx_total"]) <= 64, "{c}");

    // Idle keep-alive connections go at once on SIGTERM.
    let mut dp = dp;
    dp.sigterm();
    assert_eq!(
        dp.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        dp.log()
    );
}
