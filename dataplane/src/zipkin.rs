//! The span exporter: a thread of the control side that takes the spans
//! each worker queued (`ProxyStats::spans`, bounded) and sends them to a
//! Zipkin collector as v2 JSON over HTTP/1.1 (`POST /api/v2/spans`), as
//! Envoy's Zipkin tracer does with `collector_endpoint_version: HTTP_JSON`.
//! Spans are named and tagged as Envoy's: `ingress` or `egress`, kind
//! SERVER or CLIENT, `http.method`, `http.url`, `http.status_code`,
//! `upstream_cluster`, `guid:x-request-id`, ... A worker never waits for
//! it; a collector that is down costs the spans of that flush, counted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use dataplane_config::ZipkinConfig;
use proxy::http::trace::{Span, trace_hex};
use serde_json::{Map, Value, json};

use crate::stats::WorkerView;

/// Spans sent per request to the collector.
const BATCH: usize = 1000;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What the exporter counts (shown as `dataplane.tracing.*`).
#[derive(Debug, Default)]
pub struct ExportCounts {
    pub spans_sent: AtomicU64,
    /// Spans in batches the collector did not take (refused, unreachable,
    /// not 2xx).
    pub spans_failed: AtomicU64,
    pub batches_sent: AtomicU64,
}

/// Send what the workers queue every `flush_interval_ms` until `done`.
pub fn run(
    z: &ZipkinConfig,
    collector: SocketAddr,
    workers: &[WorkerView],
    node_id: &str,
    counts: &ExportCounts,
    done: &AtomicBool,
) {
    let every = Duration::from_millis(z.flush_interval_ms);
    let mut next = Instant::now() + every;
    loop {
        let last = done.load(Relaxed);
        if !last {
            let wait = next.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(Duration::from_millis(100)));
            if Instant::now() < next {
                continue;
            }
        }
        next = Instant::now() + every;
        let mut spans: Vec<Value> = Vec::new();
        for w in workers {
            let Some(p) = &w.proxy_stats else { continue };
            let epoch = w.loop_stats.epoch_unix_us.load(Relaxed);
            while let Some(s) = p.spans.pop() {
                spans.push(zipkin_json(&s, epoch, &z.service_name, node_id));
                if spans.len() == BATCH {
                    send(collector, &z.collector_endpoint, &spans, counts);
                    spans.clear();
                }
            }
        }
        if !spans.is_empty() {
            send(collector, &z.collector_endpoint, &spans, counts);
        }
        if last {
            return;
        }
    }
}

fn send(collector: SocketAddr, path: &str, spans: &[Value], counts: &ExportCounts) {
    let n = spans.len() as u64;
    match post(
        collector,
        path,
        &serde_json::to_vec(spans).unwrap_or_default(),
    ) {
        Ok(()) => {
            counts.spans_sent.fetch_add(n, Relaxed);
            counts.batches_sent.fetch_add(1, Relaxed);
        }
        Err(e) => {
            counts.spans_failed.fetch_add(n, Relaxed);
            tracing::debug!("zipkin collector {collector}: {e}; {n} span(s) lost");
        }
    }
}

/// One POST, `connection: close`; Ok for a 2xx answer.
fn post(collector: SocketAddr, path: &str, body: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&collector, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: {collector}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code = line.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "answered {:?}",
            line.lines().next().unwrap_or("")
        )))
    }
}

/// A span in Zipkin's v2 JSON model.
pub fn zipkin_json(s: &Span, epoch_unix_us: u64, service: &str, node_id: &str) -> Value {
    let mut tags = Map::new();
    let mut tag = |k: &str, v: String| {
        tags.insert(k.to_string(), Value::String(v));
    };
    tag("component", "proxy".into());
    tag("node_id", node_id.into());
    tag("http.method", s.method.clone());
    tag("http.url", s.url.clone());
    tag("http.protocol", "HTTP/1.1".into());
    tag("http.status_code", s.status.to_string());
    tag("upstream_cluster", s.upstream_cluster.clone());
    tag("upstream_cluster.name", s.upstream_cluster.clone());
    tag("guid:x-request-id", s.request_id.clone());
    tag("user_agent", s.user_agent.clone());
    tag("downstream_cluster", "-".into());
    tag("peer.address", s.peer.to_string());
    tag("response_flags", s.response_flags.into());
    if s.status >= 500 || s.status == 0 {
        tag("error", "true".into());
    }
    let mut v = json!({
        "traceId": trace_hex(s.ctx.trace),
        "id": format!("{:016x}", s.ctx.span),
        "name": if s.server { "ingress" } else { "egress" },
        "kind": if s.server { "SERVER" } else { "CLIENT" },
        "timestamp": epoch_unix_us + s.start_us,
        "duration": s.duration_us.max(1),
        "localEndpoint": {"serviceName": service},
        "remoteEndpoint": {"ipv4": s.peer.to_string()},
        "tags": tags,
    });
    if let Some(p) = s.ctx.parent {
        v["parentId"] = json!(format!("{p:016x}"));
    }
    v
}
