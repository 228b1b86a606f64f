//! The stats document served on the admin socket, and its table rendering.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use dataplane_config::{Config, Filter};
use dpdk::{Mempool, Port};
use netstack::Stats;
use serde_json::{Map, Value, json};

use proxy::metrics::{CLUSTER, CORE, ENDPOINT, LISTENER};
use proxy::{Counters, Live, ProxyStats, ServiceStats};

use crate::worker::LoopStats;

/// What the control thread keeps of each worker.
pub struct WorkerView {
    pub lcore: u32,
    pub cpu: u32,
    pub loop_stats: Arc<LoopStats>,
    pub stack_stats: Option<Arc<Stats>>,
    pub service_stats: Option<Arc<ServiceStats>>,
    pub proxy_stats: Option<Arc<ProxyStats>>,
}

/// Proxied connections in progress over all cores (client sides accepted
/// and not yet ended).
pub fn proxy_sessions(workers: &[WorkerView]) -> u64 {
    workers
        .iter()
        .flat_map(|w| w.proxy_stats.iter())
        .map(|p| p.sessions.get())
        .fold(0u64, u64::wrapping_add)
}

/// Whether every core has stopped listening (so no session can start).
pub fn proxy_drained(workers: &[WorkerView]) -> bool {
    workers
        .iter()
        .filter_map(|w| w.proxy_stats.as_ref())
        .all(|p| p.drained.load(Relaxed))
}

/// The counters of `scope` (`proxy::metrics::LISTENER`, ...), each summed
/// over `counters` (one per core; there is always at least one, so every
/// name is there).
fn sum<'a>(counters: impl Iterator<Item = &'a Counters>, scope: u32) -> Map<String, Value> {
    let mut m = Map::new();
    let mut add = |k: &str, v: u64| {
        let e = m.entry(k).or_insert(json!(0u64));
        *e = json!(e.as_u64().unwrap_or(0).wrapping_add(v));
    };
    for c in counters {
        c.for_each_at(scope, &mut add);
    }
    m
}

/// A histogram merged over the cores: its samples per bucket of
/// `proxy::metrics::BUCKETS_MS` (the last, above them all).
fn buckets<'a>(per_core: impl Iterator<Item = &'a proxy::metrics::Histogram>) -> Value {
    json!(proxy::metrics::Histogram::merged(per_core).counts())
}

/// Listeners, clusters and endpoints in force, each summed over the cores.
fn proxy_json(live: &Live) -> Value {
    let listeners: Vec<Value> = live
        .listeners
        .values()
        .map(|l| {
            let mut m = sum(l.stats.iter(), LISTENER);
            m.insert("name".into(), json!(l.cfg.name));
            m.insert("address".into(), json!(l.cfg.address));
            match l.cfg.filter() {
                Some(Filter::TcpProxy(t)) => m.insert("cluster".into(), json!(t.cluster)),
                Some(Filter::Http(h)) => m.insert("route_config".into(), json!(h.route_config)),
                None => None,
            };
            m.insert(
                "downstream_rq_time_buckets".into(),
                buckets(l.histograms.iter().map(|h| &h.downstream_rq_time)),
            );
            Value::Object(m)
        })
        .collect();
    let clusters: Vec<Value> = live
        .clusters
        .values()
        .map(|c| {
            let mut m = sum(c.stats.iter(), CLUSTER);
            m.insert("name".into(), json!(c.cfg.name));
            m.insert("open".into(), json!(c.gauges.open.load(Relaxed)));
            m.insert("pending".into(), json!(c.gauges.pending.load(Relaxed)));
            m.insert("requests".into(), json!(c.gauges.requests.load(Relaxed)));
            m.insert(
                "upstream_rq_time_buckets".into(),
                buckets(c.histograms.iter().map(|h| &h.upstream_rq_time)),
            );
            let eps: Vec<Value> = c
                .endpoints
                .iter()
                .map(|e| {
                    let mut em = sum(e.stats.iter(), ENDPOINT);
                    em.insert("address".into(), json!(e.addr.to_string()));
                    em.insert("weight".into(), json!(e.weight));
                    Value::Object(em)
                })
                .collect();
            m.insert("endpoints".into(), json!(eps));
            Value::Object(m)
        })
        .collect();
    json!({
        "version": live.state.version,
        "generation": live.generation(),
        "listeners": listeners,
        "clusters": clusters,
    })
}

pub fn snapshot(
    cfg: &Config,
    ports: &[(Port, Vec<Arc<Mempool>>)],
    workers: &[WorkerView],
    live: &Live,
    uptime: Duration,
    tsc_hz: u64,
) -> Value {
    let mut totals = Map::new();
    let mut add = |k: &str, v: u64| {
        let e = totals.entry(k.to_string()).or_insert(json!(0));
        *e = json!(e.as_u64().unwrap_or(0) + v);
    };
    let mut wj = Vec::new();
    for (wi, w) in workers.iter().enumerate() {
        let mut lp = Map::new();
        w.loop_stats.counters.for_each(|k, v| {
            lp.insert(k.to_string(), json!(v));
        });
        let lp = Value::Object(lp);
        for (k, v) in lp.as_object().into_iter().flatten() {
            add(k, v.as_u64().unwrap_or(0));
        }
        let mut stack = Map::new();
        if let Some(s) = &w.stack_stats {
            s.for_each(|k, v| {
                stack.insert(k.to_string(), json!(v));
                add(k, v);
            });
        }
        let services = w.service_stats.as_ref().map(|s| {
            let mut m = Map::new();
            s.for_each(|k, v| {
                m.insert(k.to_string(), json!(v));
            });
            Value::Object(m)
        });
        // This core's overload manager; pressures are per core, not summed.
        let overload = w.proxy_stats.as_ref().map(|p| {
            let mut m = Map::new();
            p.overload.for_each(|k, v| {
                m.insert(k.to_string(), json!(v));
                if !k.ends_with("_pressure") {
                    add(&format!("overload_{k}"), v);
                }
            });
            Value::Object(m)
        });
        // This core's share of the proxying.
        let proxy = w
            .proxy_stats
            .as_ref()
            .map(|_| Value::Object(sum(live.listeners.values().map(|l| l.stats.get(wi)), CORE)));
        wj.push(json!({"lcore": w.lcore, "cpu": w.cpu, "loop": lp, "stack": stack, "services": services, "proxy": proxy, "overload": overload}));
    }
    let pj: Vec<Value> = cfg
        .ports
        .iter()
        .zip(ports)
        .map(|(pc, (p, pools))| {
            let s = p.stats();
            let caps = p.capabilities_of();
            let link = p.link();
            json!({
                "name": pc.name,
                "device": pc.device,
                "driver": caps.driver,
                "address": pc.address,
                "mac": crate::ports::fmt_mac(p.mac()),
                "link": {"up": link.up, "speed_mbps": link.speed_mbps},
                "queues": p.queues(),
                "rss": p.rss_enabled(),
                "offloads": {
                    "tx_multi_segs": caps.tx_multi_segs(),
                    "tx_ipv4_cksum": caps.tx_ipv4_cksum(),
                    "tx_l4_cksum": caps.tx_l4_cksum(),
                    "tx_tso": caps.tx_tso(),
                    "rx_ipv4_cksum": caps.rx_ipv4_cksum(),
                    "rx_l4_cksum": caps.rx_l4_cksum(),
                },
                "stats": {
                    "rx_packets": s.rx_packets, "tx_packets": s.tx_packets,
                    "rx_bytes": s.rx_bytes, "tx_bytes": s.tx_bytes,
                    "rx_missed": s.rx_missed, "rx_errors": s.rx_errors,
                    "tx_errors": s.tx_errors, "rx_nombuf": s.rx_nombuf,
                },
                "xstats": p.xstats().into_iter().map(|(k, v)| (k, json!(v))).collect::<Map<String, Value>>(),
                "mempools": pools.iter().map(|m| json!({"name": m.name(), "available": m.available(), "in_use": m.in_use()})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "dpdk": dpdk::version(),
        "uptime_ms": uptime.as_millis() as u64,
        "tsc_hz": tsc_hz,
        "mode": format!("{:?}", cfg.workers.mode),
        "ports": pj,
        "workers": wj,
        "totals": totals,
        "proxy": proxy_json(live),
    })
}

/// A human-readable table: ports, then per-core counters (non-zero drops only).
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    out.push_str(&format!(
        "uptime {:.1}s, DPDK {}\n",
        u(&v["uptime_ms"]) as f64 / 1000.0,
        v["dpdk"].as_str().unwrap_or("?")
    ));
    for p in v["ports"].as_array().into_iter().flatten() {
        let s = &p["stats"];
        out.push_str(&format!(
            "port {} ({}, {}) {} mac {} link {}: rx {} pkts / {} B, tx {} pkts / {} B, missed {}, nombuf {}\n",
            p["name"].as_str().unwrap_or(""),
            p["device"].as_str().unwrap_or(""),
            p["driver"].as_str().unwrap_or(""),
            p["address"].as_str().unwrap_or(""),
            p["mac"].as_str().unwrap_or(""),
            if p["link"]["up"].as_bool() == Some(true) { "up" } else { "down" },
            u(&s["rx_packets"]),
            u(&s["rx_bytes"]),
            u(&s["tx_packets"]),
            u(&s["tx_bytes"]),
            u(&s["rx_missed"]),
            u(&s["rx_nombuf"]),
        ));
    }
    for w in v["workers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "worker lcore {} (CPU {}):\n",
            u(&w["lcore"]),
            u(&w["cpu"])
        ));
        let mut line = |m: &Value| {
            for (k, val) in m.as_object().into_iter().flatten() {
                let n = u(val);
                // Frame outcomes always; the rest (drops, loop and TCP
                // counters) when not zero.
                let is_drop = !netstack::FrameCounters::NAMES.contains(&k.as_str());
                if n != 0 || !is_drop {
                    out.push_str(&format!("  {k:<28} {n}\n"));
                }
            }
        };
        line(&w["loop"]);
        line(&w["stack"]);
        if w["proxy"].is_object() {
            out.push_str(&format!(
                "  proxy: {} connections ({} active), {} B up, {} B down\n",
                u(&w["proxy"]["cx_total"]),
                u(&w["proxy"]["cx_active"]),
                u(&w["proxy"]["bytes_up"]),
                u(&w["proxy"]["bytes_down"]),
            ));
        }
    }
    // Zero counters are left out, except connections.
    let fields = |m: &Value, keys: &[&str]| {
        keys.iter()
            .filter(|k| u(&m[**k]) != 0 || k.starts_with("cx_total") || k.starts_with("cx_active"))
            .map(|k| format!("{k} {}", u(&m[*k])))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (listener, cluster, endpoint) = (
        Counters::names_at(LISTENER),
        Counters::names_at(CLUSTER),
        Counters::names_at(ENDPOINT),
    );
    for l in v["proxy"]["listeners"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "listener {} {} -> {}: {}\n",
            l["name"].as_str().unwrap_or(""),
            l["address"].as_str().unwrap_or(""),
            l["cluster"].as_str().unwrap_or(""),
            fields(l, &listener)
        ));
    }
    for c in v["proxy"]["clusters"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "cluster {} (open {}, pending {}): {}\n",
            c["name"].as_str().unwrap_or(""),
            u(&c["open"]),
            u(&c["pending"]),
            fields(c, &cluster)
        ));
        for e in c["endpoints"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  endpoint {} (weight {}): {}\n",
                e["address"].as_str().unwrap_or(""),
                u(&e["weight"]),
                fields(e, &endpoint)
            ));
        }
    }
    out
}
