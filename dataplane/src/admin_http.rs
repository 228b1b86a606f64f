//! The HTTP admin server: Envoy's admin paths on a kernel TCP socket
//! (`admin.address`, default `127.0.0.1:15000`), for Istio's pilot-agent,
//! Prometheus and people.
//!
//! It runs on a thread of its own and never waits on the control loop
//! (which can block for seconds while it publishes an update): it reads
//! the per-core counters directly, and the listeners and clusters in force
//! from [`Published`], which the control thread swaps in after each update.
//! One request per connection, answered with `connection: close`; requests
//! are served one at a time, each within [`CLIENT_DEADLINE`].
//!
//! Paths that change the server's state (`/healthcheck/fail`,
//! `/quitquitquit`, ...) answer only POST, as Envoy's do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dataplane_config::admin::{XdsReport, XdsType};
use dataplane_config::{Config, Filter, ProxyState};
use proxy::Live;
use proxy::live::{ClusterLive, ListenerLive};
use proxy::metrics::ENDPOINT;
use serde_json::{Value, json};

use crate::envoy_stats::{self, ServerState, StatSet};
use crate::ports::PortPools;
use crate::stats::WorkerView;

/// Longest one client may take to send its request and read the answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// Largest request head accepted.
const MAX_HEAD: usize = 16 << 10;

/// The listeners and clusters in force, as the control thread last
/// published them.
#[derive(Debug, Default)]
pub struct Published {
    pub listeners: Vec<Arc<ListenerLive>>,
    pub clusters: Vec<Arc<ClusterLive>>,
    pub generation: u64,
    /// The clusters each route configuration's routes name (for Istio's
    /// metrics).
    pub route_clusters: BTreeMap<String, Vec<String>>,
    /// The whole configuration, for the `/config_dump` of a data plane run
    /// from its YAML. Not copied once the control agent hands over Envoy's
    /// dump: for a large configuration the copy costs milliseconds per
    /// update.
    pub state: Option<ProxyState>,
}

impl Published {
    pub fn of(live: &Live, with_state: bool) -> Published {
        let route_clusters = live
            .state
            .route_configs
            .values()
            .map(|rc| {
                let mut names: Vec<String> = rc
                    .virtual_hosts
                    .iter()
                    .flat_map(|v| &v.routes)
                    .filter_map(|r| r.route.as_ref())
                    .flat_map(|a| {
                        a.cluster
                            .iter()
                            .chain(a.weighted_clusters.iter().flatten().map(|w| &w.name))
                    })
                    .cloned()
                    .collect();
                names.sort();
                names.dedup();
                (rc.name.clone(), names)
            })
            .collect();
        Published {
            listeners: live.listeners.values().cloned().collect(),
            clusters: live.clusters.values().cloned().collect(),
            generation: live.generation(),
            route_clusters,
            state: with_state.then(|| live.state.clone()),
        }
    }
}

/// Outcomes of one xDS type, as Envoy counts them.
#[derive(Debug, Default)]
pub struct UpdateCounts {
    pub attempt: AtomicU64,
    pub success: AtomicU64,
    pub rejected: AtomicU64,
}

#[derive(Debug, Default)]
pub struct XdsCounts {
    pub cds: UpdateCounts,
    pub eds: UpdateCounts,
    pub lds: UpdateCounts,
    pub rds: UpdateCounts,
}

impl XdsCounts {
    pub fn of(&self, t: XdsType) -> &UpdateCounts {
        match t {
            XdsType::Cds => &self.cds,
            XdsType::Eds => &self.eds,
            XdsType::Lds => &self.lds,
            XdsType::Rds => &self.rds,
        }
    }
}

/// What the control thread and the admin server share.
#[derive(Debug, Default)]
pub struct Shared {
    pub published: ArcSwap<Published>,
    /// `/healthcheck/fail` (cleared by `/healthcheck/ok`): the server
    /// reports DRAINING, so health checkers take it out.
    pub health_failed: AtomicBool,
    /// Draining for SIGTERM or `/drain_listeners`.
    pub draining: AtomicBool,
    /// `/quitquitquit`: stop now, without draining.
    pub quit: AtomicBool,
    pub xds: XdsCounts,
    /// `/config_dump` sections the control agent handed over, by type
    /// (JSON text, served as it is; shared, so replacing one section does
    /// not copy the others).
    pub dump: ArcSwap<BTreeMap<XdsType, Arc<serde_json::value::RawValue>>>,
    /// The span exporter's counts.
    pub tracing: crate::zipkin::ExportCounts,
}

impl Shared {
    pub fn server_state(&self) -> ServerState {
        if self.health_failed.load(Relaxed) || self.draining.load(Relaxed) {
            ServerState::Draining
        } else {
            ServerState::Live
        }
    }

    /// Count the agent's verdict on one response and keep its dump.
    pub fn report(&self, r: XdsReport) {
        let c = self.xds.of(r.ty);
        c.attempt.fetch_add(1, Relaxed);
        if r.accepted {
            c.success.fetch_add(1, Relaxed);
            if let Some(d) = r.config_dump {
                let mut m = BTreeMap::clone(&self.dump.load());
                m.insert(r.ty, Arc::from(d));
                self.dump.store(Arc::new(m));
            }
        } else {
            c.rejected.fetch_add(1, Relaxed);
        }
    }

    /// A configuration that did not come over xDS (the YAML or the state
    /// file) counts as one accepted CDS and LDS update, so that readiness
    /// checks that wait for the first one pass.
    pub fn count_static(&self) {
        for c in [&self.xds.cds, &self.xds.lds] {
            c.attempt.fetch_add(1, Relaxed);
            c.success.fetch_add(1, Relaxed);
        }
    }
}

/// Everything a request may read.
pub struct Sources<'a> {
    pub cfg: &'a Config,
    pub ports: &'a [PortPools],
    pub workers: &'a [WorkerView],
    pub shared: &'a Shared,
    pub started: Instant,
    /// TSC ticks per second (the unit of the workers' cycle counters).
    pub tsc_hz: u64,
    pub instance: &'a str,
    /// Makes every worker stop accepting (`/drain_listeners`).
    pub drain: &'a AtomicBool,
    /// Ends the control loop (`/quitquitquit`).
    pub stop: &'a AtomicBool,
}

/// The bound admin socket.
#[derive(Debug)]
pub struct HttpAdmin {
    listener: TcpListener,
}

impl HttpAdmin {
    /// Bind `addr` (before EAL starts, so a taken port fails early).
    pub fn bind(addr: SocketAddr) -> Result<HttpAdmin, String> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            format!(
                "admin.address {addr}: cannot listen: {e}; give this data plane another admin.address, or null to turn the HTTP admin server off"
            )
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("admin.address {addr}: {e}"))?;
        Ok(HttpAdmin { listener })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serve until `done` is set (checked every 100 ms).
    pub fn serve(&self, src: &Sources<'_>, done: &AtomicBool) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        while !done.load(Relaxed) {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = serve_one(stream, src) {
                        tracing::debug!("admin HTTP connection: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
                    let t = Timespec {
                        tv_sec: 0,
                        tv_nsec: 100_000_000,
                    };
                    let _ = poll(&mut fds, Some(&t));
                }
                Err(e) => {
                    tracing::debug!("admin HTTP accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// One answer.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=UTF-8",
            body: body.into().into_bytes(),
        }
    }

    fn json(v: &Value) -> Reply {
        let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
        body.push(b'\n');
        Reply {
            status: 200,
            content_type: "application/json",
            body,
        }
    }
}

fn serve_one(mut stream: TcpStream, src: &Sources<'_>) -> std::io::Result<()> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    stream.set_nonblocking(false)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                break (String::new(), String::new());
            }
            Err(_) => break (String::new(), String::new()),
        }
    };
    let reply = if head.0.is_empty() {
        Reply::text(400, "malformed request\n")
    } else {
        answer(&head.0, &head.1, src)
    };
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = Vec::with_capacity(reply.body.len() + 160);
    let _ = write!(
        out,
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-cache, max-age=0\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    if head.0 != "HEAD" {
        out.extend_from_slice(&reply.body);
    }
    stream.set_write_timeout(Some(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
    ))?;
    stream.write_all(&out)
}

/// The paths, whether each changes state (POST only), and what it does.
const PATHS: &[(&str, bool, &str)] = &[
    ("/", false, "this list"),
    ("/help", false, "this list"),
    (
        "/ready",
        false,
        "200 LIVE when serving, else 503 and the state",
    ),
    (
        "/server_info",
        false,
        "version, state, uptime, options (JSON)",
    ),
    (
        "/stats",
        false,
        "every stat: filter=<regex>, usedonly, format=json|prometheus",
    ),
    (
        "/stats/prometheus",
        false,
        "every stat in Prometheus text format: filter=, usedonly",
    ),
    (
        "/config_dump",
        false,
        "the configuration in force (Envoy's ConfigDump JSON)",
    ),
    (
        "/clusters",
        false,
        "clusters and their endpoints with counters: format=json",
    ),
    (
        "/listeners",
        false,
        "listeners and their addresses: format=json",
    ),
    ("/memory", false, "memory use (JSON)"),
    (
        "/healthcheck/fail",
        true,
        "report DRAINING (health checks fail)",
    ),
    ("/healthcheck/ok", true, "report LIVE again"),
    (
        "/drain_listeners",
        true,
        "stop accepting; connections in progress finish",
    ),
    (
        "/logging",
        true,
        "set the log level: level=<trace|debug|info|warning|error|off> or <target>=<level>",
    ),
    ("/quitquitquit", true, "exit now, without draining"),
];

fn answer(method: &str, target: &str, src: &Sources<'_>) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = parse_query(query);
    let Some(&(_, mutates, _)) = PATHS.iter().find(|(p, _, _)| *p == path) else {
        return Reply::text(404, format!("invalid path {path:?}\n{}", help()));
    };
    if mutates && method != "POST" {
        return Reply::text(
            405,
            format!("Method {method} not allowed, POST required.\n"),
        );
    }
    if !mutates && !matches!(method, "GET" | "HEAD") {
        return Reply::text(405, format!("Method {method} not allowed, GET required.\n"));
    }
    let shared = src.shared;
    match path {
        "/" | "/help" => Reply::text(200, help()),
        "/ready" => {
            let st = shared.server_state();
            let code = if st == ServerState::Live { 200 } else { 503 };
            Reply::text(code, format!("{}\n", st.name()))
        }
        "/server_info" => Reply::json(&server_info(src)),
        "/stats" | "/stats/prometheus" => stats(path, &params, src),
        "/config_dump" => config_dump(src),
        "/clusters" => clusters(&params, src),
        "/listeners" => listeners(&params, src),
        "/memory" => {
            let rss = envoy_stats::resident_bytes().to_string();
            Reply::json(&json!({
                "allocated": rss,
                "heap_size": rss,
                "total_physical_bytes": rss,
                "pageheap_unmapped": "0",
                "pageheap_free": "0",
                "total_thread_cache": "0",
            }))
        }
        "/healthcheck/fail" => {
            shared.health_failed.store(true, Relaxed);
            tracing::info!("admin: /healthcheck/fail: reporting DRAINING");
            Reply::text(200, "OK\n")
        }
        "/healthcheck/ok" => {
            shared.health_failed.store(false, Relaxed);
            tracing::info!("admin: /healthcheck/ok: reporting LIVE");
            Reply::text(200, "OK\n")
        }
        "/drain_listeners" => {
            shared.draining.store(true, Relaxed);
            src.drain.store(true, Relaxed);
            tracing::info!("admin: /drain_listeners: listeners closed");
            Reply::text(200, "OK\n")
        }
        "/logging" => logging(&params),
        "/quitquitquit" => {
            tracing::info!("admin: /quitquitquit: stopping");
            shared.quit.store(true, Relaxed);
            src.stop.store(true, Relaxed);
            Reply::text(200, "OK\n")
        }
        _ => Reply::text(404, help()),
    }
}

fn help() -> String {
    let mut s = String::from("admin commands are:\n");
    for (p, post, what) in PATHS {
        let _ = writeln!(s, "  {p}{}: {what}", if *post { " (POST)" } else { "" });
    }
    s
}

/// `a=1&b&c=x%20y` → [(a, 1), (b, ""), (c, "x y")].
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(params: &'a [(String, String)], k: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(pk, _)| pk == k)
        .map(|(_, v)| v.as_str())
}

fn stats(path: &str, params: &[(String, String)], src: &Sources<'_>) -> Reply {
    let regex = match param(params, "filter").filter(|f| !f.is_empty()) {
        Some(f) => match regex::Regex::new(f) {
            Ok(r) => Some(r),
            Err(e) => return Reply::text(400, format!("Invalid regex: filter={f:?}: {e}\n")),
        },
        None => None,
    };
    let filter = envoy_stats::StatFilter {
        regex,
        used_only: param(params, "usedonly").is_some(),
    };
    let set = StatSet::collect(src);
    let format = if path == "/stats/prometheus" {
        "prometheus"
    } else {
        param(params, "format").unwrap_or("text")
    };
    match format {
        "prometheus" => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=UTF-8",
            body: set.prometheus(&filter).into_bytes(),
        },
        "json" => Reply::json(&set.json(&filter)),
        "text" => Reply::text(200, set.text(&filter)),
        other => Reply::text(
            400,
            format!("unknown format={other:?}; known: text, json, prometheus\n"),
        ),
    }
}

fn server_info(src: &Sources<'_>) -> Value {
    let up = format!("{}s", src.started.elapsed().as_secs());
    json!({
        "version": format!("dataplane/{} (DPDK {})", env!("CARGO_PKG_VERSION"), dpdk::version()),
        "state": src.shared.server_state().name(),
        "hot_restart_version": "disabled",
        "command_line_options": {
            "concurrency": src.workers.len(),
            "admin_address": src.cfg.admin.address.map(|a| a.to_string()),
            "admin_socket": src.cfg.admin.socket.display().to_string(),
            "drain_time": format!("{}s", src.cfg.drain_timeout_ms as f64 / 1000.0),
        },
        "node": {"id": src.instance},
        "uptime_current_epoch": up,
        "uptime_all_epochs": up,
    })
}

/// `/config_dump`: what the control agent handed over (Envoy's own
/// sections, in Envoy's order), or, when the data plane runs from its
/// YAML, its own model of listeners, clusters and route configurations.
fn config_dump(src: &Sources<'_>) -> Reply {
    let dump = src.shared.dump.load();
    if !dump.is_empty() {
        let order = [XdsType::Cds, XdsType::Eds, XdsType::Lds, XdsType::Rds];
        let parts: Vec<&str> = order
            .iter()
            .filter_map(|t| dump.get(t).map(|r| r.get()))
            .collect();
        return Reply {
            status: 200,
            content_type: "application/json",
            body: format!("{{\"configs\":[{}]}}\n", parts.join(",")).into_bytes(),
        };
    }
    let p = src.shared.published.load();
    let Some(state) = &p.state else {
        return Reply::json(&json!({ "configs": [] }));
    };
    Reply::json(&json!({
        "configs": [{
            "@type": "dataplane.ProxyState",
            "version_info": state.version,
            "generation": p.generation,
            "listeners": state.listeners.values().collect::<Vec<_>>(),
            "clusters": state.clusters.values().collect::<Vec<_>>(),
            "route_configs": state.route_configs.values().collect::<Vec<_>>(),
        }]
    }))
}

/// `/clusters`: Envoy's `cluster::host::stat::value` lines, or JSON.
fn clusters(params: &[(String, String)], src: &Sources<'_>) -> Reply {
    let p = src.shared.published.load();
    if param(params, "format") == Some("json") {
        let cs: Vec<Value> = p
            .clusters
            .iter()
            .map(|c| {
                let hosts: Vec<Value> = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let s = envoy_stats::sum(e.stats.iter());
                        let mut stats = Vec::new();
                        s.for_each_at(ENDPOINT, |k, v| {
                            stats.push(json!({"name": k, "value": v.to_string()}));
                        });
                        json!({
                            "address": socket_address(e.addr),
                            "stats": stats,
                            "health_status": {"eds_health_status": "HEALTHY"},
                            "weight": e.weight,
                        })
                    })
                    .collect();
                json!({
                    "name": c.cfg.name,
                    "added_via_api": true,
                    "circuit_breakers": {"thresholds": [{
                        "max_connections": c.cfg.limits.max_connections,
                        "max_pending_requests": c.cfg.limits.max_pending,
                        "max_requests": c.cfg.limits.max_requests,
                    }]},
                    "host_statuses": hosts,
                })
            })
            .collect();
        return Reply::json(&json!({ "cluster_statuses": cs }));
    }
    let mut out = String::new();
    for c in &p.clusters {
        let n = &c.cfg.name;
        let l = &c.cfg.limits;
        let _ = writeln!(
            out,
            "{n}::default_priority::max_connections::{}",
            l.max_connections
        );
        let _ = writeln!(
            out,
            "{n}::default_priority::max_pending_requests::{}",
            l.max_pending
        );
        let _ = writeln!(
            out,
            "{n}::default_priority::max_requests::{}",
            l.max_requests
        );
        let _ = writeln!(out, "{n}::added_via_api::true");
        for e in &c.endpoints {
            let s = envoy_stats::sum(e.stats.iter());
            let a = e.addr;
            s.for_each_at(ENDPOINT, |k, v| {
                let _ = writeln!(out, "{n}::{a}::{k}::{v}");
            });
            let _ = writeln!(out, "{n}::{a}::weight::{}", e.weight);
            let _ = writeln!(out, "{n}::{a}::health_flags::healthy");
        }
    }
    Reply::text(200, out)
}

/// An address as Envoy's `Address` JSON.
fn socket_address(a: std::net::SocketAddrV4) -> Value {
    json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})
}

/// `/listeners`: `name::address` lines, or JSON.
fn listeners(params: &[(String, String)], src: &Sources<'_>) -> Reply {
    let p = src.shared.published.load();
    if param(params, "format") == Some("json") {
        let ls: Vec<Value> = p
            .listeners
            .iter()
            .map(|l| {
                let kind = match l.cfg.filter() {
                    Some(Filter::TcpProxy(_)) => "tcp_proxy",
                    Some(Filter::Http(_)) => "http",
                    None => "",
                };
                json!({
                    "name": l.cfg.name,
                    "local_address": socket_address(l.addr),
                    "filter": kind,
                })
            })
            .collect();
        return Reply::json(&json!({ "listener_statuses": ls }));
    }
    let mut out = String::new();
    for l in &p.listeners {
        let _ = writeln!(out, "{}::{}", l.cfg.name, l.addr);
    }
    Reply::text(200, out)
}

/// `/logging`: `level=<l>` for everything, `<target>=<l>` for one module.
fn logging(params: &[(String, String)]) -> Reply {
    let level = |l: &str| -> Option<&'static str> {
        Some(match l {
            "trace" => "trace",
            "debug" => "debug",
            "info" => "info",
            "warning" | "warn" => "warn",
            "error" | "critical" => "error",
            "off" => "off",
            _ => return None,
        })
    };
    let Some(handle) = crate::LOG_FILTER.get() else {
        return Reply::text(400, "logging cannot be changed in this process\n");
    };
    if params.is_empty() {
        let cur = handle.with_current(|f| f.to_string()).unwrap_or_default();
        return Reply::text(200, format!("active loggers:\n  {cur}\n"));
    }
    let mut directives = Vec::new();
    for (k, v) in params {
        let Some(l) = level(v) else {
            return Reply::text(
                400,
                format!(
                    "unknown level {k}={v:?}; known: trace, debug, info, warning, error, critical, off\n"
                ),
            );
        };
        if k == "level" {
            directives.push(l.to_string());
        } else {
            directives.push(format!("{k}={l}"));
        }
    }
    let spec = directives.join(",");
    match tracing_subscriber::EnvFilter::try_new(&spec) {
        Ok(f) => match handle.reload(f) {
            Ok(()) => {
                tracing::info!("admin: log filter now {spec:?}");
                Reply::text(200, format!("active loggers:\n  {spec}\n"))
            }
            Err(e) => Reply::text(400, format!("cannot change the log filter: {e}\n")),
        },
        Err(e) => Reply::text(400, format!("bad logging parameters {spec:?}: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_split_and_decoded() {
        assert_eq!(
            parse_query("usedonly&filter=%5Ecluster%5C.&format=json"),
            vec![
                ("usedonly".into(), "".into()),
                ("filter".into(), "^cluster\\.".into()),
                ("format".into(), "json".into())
            ]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
