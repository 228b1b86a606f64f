//! The data plane's counters under Envoy's stat names, for the HTTP admin
//! server's `/stats`, `/stats?format=json` and `/stats/prometheus`.
//!
//! Every value is read from the per-core counters when asked for (summed
//! here, on the admin thread); nothing on a worker changes for it. A stat
//! has Envoy's flat name (`cluster.web.upstream_cx_total`) and the
//! Prometheus family and labels Envoy's tag extraction gives that name
//! (`envoy_cluster_upstream_cx_total{envoy_cluster_name="web"}`). Counters
//! Envoy has no name for keep ours under the same prefix; the data plane's
//! own families (ports, cores, the stack) are `dataplane_*`, their
//! counters ending in `_total` as Prometheus' naming rules want.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use dataplane_config::Filter;
use std::collections::BTreeMap;

use dataplane_config::TrafficDirection;
use proxy::Counters;
use proxy::live::{ClusterLive, ListenerLive};
use proxy::metrics::{BUCKETS_MS, Histogram};

use crate::admin_http::Sources;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One stat: Envoy's flat name, and its Prometheus family and labels.
#[derive(Debug, Clone)]
pub struct Stat {
    pub name: String,
    pub family: String,
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
    pub kind: Kind,
    /// Envoy's "used" flag (for `usedonly`): written at least once. A
    /// counter is used once it is not zero; the server's own gauges are
    /// always set.
    pub used: bool,
}

/// Where a group of stats lives: the flat prefix, the family prefix and
/// the labels tag extraction takes out of the name.
struct Scope {
    text: String,
    family: &'static str,
    labels: Vec<(&'static str, String)>,
}

impl Scope {
    fn new(text: String, family: &'static str, labels: Vec<(&'static str, String)>) -> Scope {
        Scope {
            text,
            family,
            labels,
        }
    }
}

/// One histogram, merged over the cores.
pub struct Hist {
    pub name: String,
    pub family: String,
    pub labels: Vec<(&'static str, String)>,
    pub h: Histogram,
}

/// The quantiles `/stats` shows of a histogram, as Envoy's.
const QUANTILES: [f64; 10] = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0];

#[derive(Default)]
pub struct StatSet {
    pub stats: Vec<Stat>,
    pub hists: Vec<Hist>,
}

impl StatSet {
    fn push(&mut self, s: &Scope, suffix: &str, kind: Kind, value: u64) {
        self.stats.push(Stat {
            name: format!("{}{suffix}", s.text),
            family: format!("{}{}", s.family, suffix.replace('.', "_")),
            labels: s.labels.clone(),
            value,
            kind,
            used: value != 0,
        });
    }

    /// A gauge that is always "used" (Envoy sets it at start).
    fn set(&mut self, s: &Scope, suffix: &str, value: u64) {
        self.push(s, suffix, Kind::Gauge, value);
        self.stats.last_mut().expect("just pushed").used = true;
    }

    /// A stat whose family is not its name's: `name` under the scope's
    /// prefix, in `family`, with the scope's labels and one more that tag
    /// extraction takes out of the name.
    fn tagged(
        &mut self,
        s: &Scope,
        name: &str,
        family: &str,
        tag: Option<(&'static str, String)>,
        kind: Kind,
        value: u64,
    ) {
        let mut labels = s.labels.clone();
        labels.extend(tag);
        self.stats.push(Stat {
            name: format!("{}{name}", s.text),
            family: family.to_string(),
            labels,
            value,
            kind,
            used: value != 0,
        });
    }

    /// `<prefix>_rq_<N>xx`: Envoy's response class, which tag extraction
    /// turns into `..._rq_xx{envoy_response_code_class="N"}`.
    fn class(&mut self, s: &Scope, stem: &str, class: u8, value: u64) {
        let family = format!("{}{stem}_xx", s.family);
        let tag = ("envoy_response_code_class", class.to_string());
        let name = format!("{stem}_{class}xx");
        self.tagged(s, &name, &family, Some(tag), Kind::Counter, value);
    }

    /// A histogram of `per_core`, merged.
    fn hist<'a>(&mut self, s: &Scope, suffix: &str, per_core: impl Iterator<Item = &'a Histogram>) {
        self.hists.push(Hist {
            name: format!("{}{suffix}", s.text),
            family: format!("{}{suffix}", s.family),
            labels: s.labels.clone(),
            h: Histogram::merged(per_core),
        });
    }

    /// Every stat, in Envoy's order for `/stats` (by name).
    pub fn collect(src: &Sources<'_>) -> StatSet {
        let mut set = StatSet::default();
        set.server(src);
        set.proxy(src);
        set.istio(src);
        set.dataplane(src);
        set.stats.sort_by(|a, b| a.name.cmp(&b.name));
        set.hists.sort_by(|a, b| a.name.cmp(&b.name));
        set
    }

    fn server(&mut self, src: &Sources<'_>) {
        let s = &src.shared;
        let server = Scope::new("server.".into(), "envoy_server_", vec![]);
        self.set(&server, "state", s.server_state() as u64);
        self.set(
            &server,
            "live",
            u64::from(s.server_state() == ServerState::Live),
        );
        self.set(&server, "uptime", src.started.elapsed().as_secs());
        self.set(&server, "concurrency", src.workers.len() as u64);
        self.set(&server, "memory_physical_size", resident_bytes());
        let published = s.published.load();
        let lm = Scope::new(
            "listener_manager.".into(),
            "envoy_listener_manager_",
            vec![],
        );
        // The admin server starts once the workers run.
        self.set(&lm, "workers_started", 1);
        self.set(
            &lm,
            "total_listeners_active",
            published.listeners.len() as u64,
        );
        // Envoy's overload gauges: an action is active if it is on any
        // core, a resource's pressure is the highest of any core.
        if !src.cfg.overload_manager.actions.is_empty() {
            use dataplane_config::overload::{OverloadAction, Resource};
            let om = Scope::new("overload.".into(), "envoy_overload_", vec![]);
            let max = |f: &dyn Fn(&proxy::overload::OverloadCounters) -> u64| {
                src.workers
                    .iter()
                    .filter_map(|w| w.proxy_stats.as_ref())
                    .map(|p| f(&p.overload))
                    .max()
                    .unwrap_or(0)
            };
            for a in OverloadAction::ALL {
                let v = max(&|o| o.active(a).get());
                self.set(&om, &format!("{}.active", a.name()), v);
            }
            for r in Resource::ALL {
                let v = max(&|o| o.pressure(r).get());
                self.set(&om, &format!("{}.pressure", r.name()), v);
            }
        }
        let cm = Scope::new("cluster_manager.".into(), "envoy_cluster_manager_", vec![]);
        self.set(&cm, "active_clusters", published.clusters.len() as u64);
        for (scope, family, x) in [
            (
                "cluster_manager.cds.",
                "envoy_cluster_manager_cds_",
                &s.xds.cds,
            ),
            (
                "listener_manager.lds.",
                "envoy_listener_manager_lds_",
                &s.xds.lds,
            ),
            ("dataplane.xds.rds.", "dataplane_xds_rds_", &s.xds.rds),
            ("dataplane.xds.eds.", "dataplane_xds_eds_", &s.xds.eds),
        ] {
            let sc = Scope::new(scope.into(), family, vec![]);
            let ours = family.starts_with("dataplane");
            let t = if ours { "_total" } else { "" };
            for (name, v) in [
                ("update_attempt", &x.attempt),
                ("update_success", &x.success),
                ("update_rejected", &x.rejected),
            ] {
                self.push(&sc, &format!("{name}{t}"), Kind::Counter, v.load(Relaxed));
            }
        }
    }

    fn proxy(&mut self, src: &Sources<'_>) {
        let published = src.shared.published.load();
        for l in &published.listeners {
            self.listener(l);
        }
        for c in &published.clusters {
            self.cluster(c);
            if src.cfg.stats.endpoints {
                self.endpoints(c);
            }
        }
    }

    /// Each endpoint's counters (`stats.endpoints`).
    fn endpoints(&mut self, cl: &ClusterLive) {
        for e in &cl.endpoints {
            let s = Scope::new(
                format!("dataplane.endpoint.{}.{}.", cl.cfg.name, e.addr),
                "dataplane_endpoint_",
                vec![
                    ("envoy_cluster_name", cl.cfg.name.clone()),
                    ("endpoint", e.addr.to_string()),
                ],
            );
            sum(e.stats.iter()).for_each_at(proxy::metrics::ENDPOINT, |k, v| {
                if k == "cx_active" || k == "cx_connecting" {
                    self.push(&s, k, Kind::Gauge, v);
                } else if k.ends_with("_total") {
                    self.push(&s, k, Kind::Counter, v);
                } else {
                    self.push(&s, &format!("{k}_total"), Kind::Counter, v);
                }
            });
        }
    }

    fn listener(&mut self, l: &ListenerLive) {
        let c = sum(l.stats.iter());
        let addr = envoy_address(&l.cfg.address);
        let ls = Scope::new(
            format!("listener.{addr}."),
            "envoy_listener_",
            vec![("envoy_listener_address", addr.clone())],
        );
        let active = c.cx_total.get().saturating_sub(c.cx_closed.get());
        self.push(&ls, "downstream_cx_total", Kind::Counter, c.cx_total.get());
        self.push(
            &ls,
            "downstream_cx_destroy",
            Kind::Counter,
            c.cx_closed.get(),
        );
        self.push(&ls, "downstream_cx_active", Kind::Gauge, active);
        let prefix = l.cfg.stat_prefix().to_string();
        match l.cfg.filter() {
            Some(Filter::TcpProxy(_)) => {
                let t = Scope::new(
                    format!("tcp.{prefix}."),
                    "envoy_tcp_",
                    vec![("envoy_tcp_prefix", prefix)],
                );
                self.push(&t, "downstream_cx_total", Kind::Counter, c.cx_total.get());
                self.push(
                    &t,
                    "downstream_cx_rx_bytes_total",
                    Kind::Counter,
                    c.bytes_up.get(),
                );
                self.push(
                    &t,
                    "downstream_cx_tx_bytes_total",
                    Kind::Counter,
                    c.bytes_down.get(),
                );
                self.push(
                    &t,
                    "downstream_cx_no_route",
                    Kind::Counter,
                    c.no_upstream.get(),
                );
                self.push(&t, "idle_timeout", Kind::Counter, c.idle_timeouts.get());
                // Ours: refused for a circuit breaker, closed before any
                // upstream, ended by a reset.
                self.push(
                    &t,
                    "downstream_cx_overflow",
                    Kind::Counter,
                    c.overflows.get(),
                );
                self.push(&t, "downstream_cx_refused", Kind::Counter, c.refused.get());
                self.push(&t, "downstream_cx_reset", Kind::Counter, c.resets.get());
            }
            Some(Filter::Http(_)) => {
                let h = Scope::new(
                    format!("http.{prefix}."),
                    "envoy_http_",
                    vec![("envoy_http_conn_manager_prefix", prefix)],
                );
                self.push(&h, "downstream_cx_total", Kind::Counter, c.cx_total.get());
                self.push(&h, "downstream_cx_active", Kind::Gauge, active);
                self.push(
                    &h,
                    "downstream_cx_destroy",
                    Kind::Counter,
                    c.cx_closed.get(),
                );
                self.push(
                    &h,
                    "downstream_cx_rx_bytes_total",
                    Kind::Counter,
                    c.bytes_up.get(),
                );
                self.push(
                    &h,
                    "downstream_cx_tx_bytes_total",
                    Kind::Counter,
                    c.bytes_down.get(),
                );
                self.push(
                    &h,
                    "downstream_cx_idle_timeout",
                    Kind::Counter,
                    c.idle_timeouts.get(),
                );
                self.push(
                    &h,
                    "downstream_cx_protocol_error",
                    Kind::Counter,
                    c.rq_malformed.get(),
                );
                self.push(&h, "downstream_rq_total", Kind::Counter, c.rq_total.get());
                for (class, v) in classes(&c) {
                    self.class(&h, "downstream_rq", class, v);
                }
                self.push(&h, "no_route", Kind::Counter, c.rq_no_route.get());
                self.push(&h, "rq_direct_response", Kind::Counter, c.rq_direct.get());
                self.push(
                    &h,
                    "downstream_rq_timeout",
                    Kind::Counter,
                    c.rq_timeouts.get(),
                );
                self.push(
                    &h,
                    "fault.aborts_injected",
                    Kind::Counter,
                    c.rq_fault_aborts.get(),
                );
                self.push(
                    &h,
                    "fault.delays_injected",
                    Kind::Counter,
                    c.rq_fault_delays.get(),
                );
                self.push(
                    &h,
                    "downstream_cx_overflow",
                    Kind::Counter,
                    c.overflows.get(),
                );
                self.push(&h, "downstream_cx_reset", Kind::Counter, c.resets.get());
                self.hist(
                    &h,
                    "downstream_rq_time",
                    l.histograms.iter().map(|x| &x.downstream_rq_time),
                );
            }
            None => {}
        }
    }

    fn cluster(&mut self, cl: &ClusterLive) {
        let c = sum(cl.stats.iter());
        let s = Scope::new(
            format!("cluster.{}.", cl.cfg.name),
            "envoy_cluster_",
            vec![("envoy_cluster_name", cl.cfg.name.clone())],
        );
        let g = &cl.gauges;
        self.push(&s, "upstream_cx_total", Kind::Counter, c.cx_total.get());
        self.push(&s, "upstream_cx_destroy", Kind::Counter, c.cx_closed.get());
        self.push(
            &s,
            "upstream_cx_active",
            Kind::Gauge,
            u64::from(g.open.load(Relaxed)),
        );
        self.push(
            &s,
            "upstream_cx_connecting",
            Kind::Gauge,
            u64::from(g.pending.load(Relaxed)),
        );
        self.push(
            &s,
            "upstream_cx_connect_fail",
            Kind::Counter,
            c.connect_failures.get(),
        );
        self.push(
            &s,
            "upstream_cx_connect_timeout",
            Kind::Counter,
            c.connect_timeouts.get(),
        );
        self.push(&s, "upstream_cx_overflow", Kind::Counter, c.overflows.get());
        self.push(
            &s,
            "upstream_cx_none_healthy",
            Kind::Counter,
            c.no_upstream.get(),
        );
        self.push(
            &s,
            "upstream_cx_idle_timeout",
            Kind::Counter,
            c.idle_timeouts.get(),
        );
        self.push(
            &s,
            "upstream_cx_tx_bytes_total",
            Kind::Counter,
            c.bytes_up.get(),
        );
        self.push(
            &s,
            "upstream_cx_rx_bytes_total",
            Kind::Counter,
            c.bytes_down.get(),
        );
        self.push(&s, "upstream_cx_reset", Kind::Counter, c.resets.get());
        self.push(&s, "upstream_rq_total", Kind::Counter, c.rq_total.get());
        self.push(
            &s,
            "upstream_rq_active",
            Kind::Gauge,
            u64::from(g.requests.load(Relaxed)),
        );
        for (class, v) in classes(&c) {
            self.class(&s, "upstream_rq", class, v);
        }
        self.push(
            &s,
            "upstream_rq_timeout",
            Kind::Counter,
            c.rq_timeouts.get(),
        );
        self.push(&s, "upstream_rq_reused", Kind::Counter, c.rq_reused.get());
        self.push(
            &s,
            "upstream_rq_retried_stale",
            Kind::Counter,
            c.rq_retried_stale.get(),
        );
        self.push(
            &s,
            "outlier_detection.ejections_total",
            Kind::Counter,
            c.ejections.get(),
        );
        self.set(&s, "membership_total", cl.endpoints.len() as u64);
        self.set(&s, "membership_healthy", cl.endpoints.len() as u64);
        self.hist(
            &s,
            "upstream_rq_time",
            cl.histograms.iter().map(|x| &x.upstream_rq_time),
        );
        self.hist(
            &s,
            "upstream_cx_connect_ms",
            cl.histograms.iter().map(|x| &x.upstream_cx_connect_ms),
        );
        // Per response code: `cluster.<name>.upstream_rq_<code>`.
        for (code, n) in codes(cl) {
            let tag = ("envoy_response_code", code.to_string());
            let name = format!("upstream_rq_{code}");
            let family = "envoy_cluster_upstream_rq";
            self.tagged(&s, &name, family, Some(tag), Kind::Counter, n);
        }
    }

    /// Istio's standard metrics, with the labels the data plane knows: the
    /// reporter from the listeners' `traffic_direction`, the destination
    /// from Istio's cluster names (`outbound|80||svc.ns.svc.cluster.local`),
    /// and `unknown` for the peer labels (no peer metadata exchange yet).
    fn istio(&mut self, src: &Sources<'_>) {
        let published = src.shared.published.load();
        let uses = cluster_uses(&published.listeners, &published.route_clusters);
        for cl in &published.clusters {
            let Some(u) = uses.get(cl.cfg.name.as_str()) else {
                continue;
            };
            let unknown = |k: &'static str| (k, "unknown".to_string());
            let mut labels = vec![("reporter", u.reporter.to_string())];
            labels.extend(
                [
                    "source_workload",
                    "source_workload_namespace",
                    "source_principal",
                    "source_app",
                    "source_version",
                    "source_cluster",
                    "destination_workload",
                    "destination_workload_namespace",
                    "destination_principal",
                    "destination_app",
                    "destination_version",
                ]
                .map(unknown),
            );
            labels.extend(destination(&cl.cfg.name));
            labels.push(unknown("destination_cluster"));
            labels.push(unknown("connection_security_policy"));
            labels.push(("response_flags", "-".into()));
            let n = &cl.cfg.name;
            let scope = |protocol: &str| {
                let mut l = labels.clone();
                l.push(("request_protocol", protocol.to_string()));
                Scope::new("istio.".into(), "istio_", l)
            };
            if let Some(c) = &u.tcp {
                let s = scope("tcp");
                for (suffix, v) in [
                    ("tcp_sent_bytes_total", c.bytes_down.get()),
                    ("tcp_received_bytes_total", c.bytes_up.get()),
                    ("tcp_connections_opened_total", c.cx_total.get()),
                    ("tcp_connections_closed_total", c.cx_closed.get()),
                ] {
                    let family = format!("istio_{suffix}");
                    self.tagged(
                        &s,
                        &format!("{suffix}.{n}"),
                        &family,
                        None,
                        Kind::Counter,
                        v,
                    );
                }
            }
            if u.http {
                let s = scope("http");
                for (code, v) in codes(cl) {
                    let tag = ("response_code", code.to_string());
                    let name = format!("requests_total.{n}.{code}");
                    self.tagged(
                        &s,
                        &name,
                        "istio_requests_total",
                        Some(tag),
                        Kind::Counter,
                        v,
                    );
                }
                self.hists.push(Hist {
                    name: format!("istio.request_duration_milliseconds.{n}"),
                    family: "istio_request_duration_milliseconds".into(),
                    labels: s.labels,
                    h: Histogram::merged(cl.histograms.iter().map(|x| &x.upstream_rq_time)),
                });
            }
        }
    }

    /// Ports, mempools, worker loops and the network stack: ours.
    fn dataplane(&mut self, src: &Sources<'_>) {
        for (pc, (p, pools)) in src.cfg.ports.iter().zip(src.ports) {
            let s = Scope::new(
                format!("dataplane.port.{}.", pc.name),
                "dataplane_port_",
                vec![("port", pc.name.clone())],
            );
            let st = p.stats();
            for (k, v) in [
                ("rx_packets", st.rx_packets),
                ("tx_packets", st.tx_packets),
                ("rx_bytes", st.rx_bytes),
                ("tx_bytes", st.tx_bytes),
                ("rx_missed", st.rx_missed),
                ("rx_errors", st.rx_errors),
                ("tx_errors", st.tx_errors),
                ("rx_nombuf", st.rx_nombuf),
            ] {
                self.push(&s, &format!("{k}_total"), Kind::Counter, v);
            }
            self.set(&s, "link_up", u64::from(p.link().up));
            for (k, v) in p.xstats() {
                let name = format!("xstats.{k}");
                let tag = ("xstat", k);
                self.tagged(&s, &name, "dataplane_port_xstat", Some(tag), Kind::Gauge, v);
            }
            for m in pools {
                let ms = Scope::new(
                    format!("dataplane.mempool.{}.", m.name()),
                    "dataplane_mempool_",
                    vec![("mempool", m.name().to_string())],
                );
                self.set(&ms, "available", m.available() as u64);
                self.set(&ms, "in_use", m.in_use() as u64);
            }
        }
        for w in src.workers {
            let cpu = w.cpu.to_string();
            let ws = Scope::new(
                format!("dataplane.worker.{cpu}."),
                "dataplane_worker_",
                vec![("cpu", cpu.clone())],
            );
            w.loop_stats.counters.for_each(|k, v| {
                self.push(&ws, &format!("{k}_total"), Kind::Counter, v);
            });
            if let Some(st) = &w.stack_stats {
                let ss = Scope::new(
                    format!("dataplane.stack.{cpu}."),
                    "dataplane_stack_",
                    vec![("cpu", cpu.clone())],
                );
                st.frames
                    .for_each(|k, v| self.push(&ss, &format!("{k}_total"), Kind::Counter, v));
                st.tcp
                    .for_each(|k, v| self.push(&ss, &format!("{k}_total"), Kind::Counter, v));
                st.copies
                    .for_each(|k, v| self.push(&ss, &format!("{k}_total"), Kind::Counter, v));
                // Drops: one family, the reason a label.
                for d in netstack::DropReason::ALL {
                    let name = format!("drops.{}", d.name());
                    let tag = ("reason", d.name().to_string());
                    let family = "dataplane_stack_drops_total";
                    self.tagged(&ss, &name, family, Some(tag), Kind::Counter, st.dropped(d));
                }
            }
            if let Some(p) = &w.proxy_stats {
                p.overload.for_each(|k, v| {
                    let kind = if k.ends_with("_active") || k.ends_with("_pressure") {
                        Kind::Gauge
                    } else {
                        Kind::Counter
                    };
                    let name = match kind {
                        Kind::Counter => format!("overload_{k}_total"),
                        _ => format!("overload_{k}"),
                    };
                    self.push(&ws, &name, kind, v);
                });
                self.set(&ws, "proxy_sessions", p.sessions.get());
                self.push(
                    &ws,
                    "spans_dropped_total",
                    Kind::Counter,
                    p.spans_dropped.get(),
                );
            }
        }
        let dp = Scope::new("dataplane.".into(), "dataplane_", vec![]);
        self.set(&dp, "tsc_hz", src.tsc_hz);
        let t = &src.shared.tracing;
        let ts = Scope::new("dataplane.tracing.".into(), "dataplane_tracing_", vec![]);
        for (k, v) in [
            ("spans_sent_total", &t.spans_sent),
            ("spans_failed_total", &t.spans_failed),
            ("batches_sent_total", &t.batches_sent),
        ] {
            self.push(&ts, k, Kind::Counter, v.load(Relaxed));
        }
    }

    /// `/stats`: `name: value` lines, filtered; then the histograms'
    /// quantiles as Envoy writes them (`P50(interval,cumulative)`; no
    /// intervals are kept, so those are `nan`).
    pub fn text(&self, filter: &StatFilter) -> String {
        let mut out = String::new();
        for s in self.stats.iter().filter(|s| filter.keeps(s)) {
            let _ = writeln!(out, "{}: {}", s.name, s.value);
        }
        for h in self.hists.iter().filter(|h| filter.keeps_hist(h)) {
            if h.h.count() == 0 {
                let _ = writeln!(out, "{}: No recorded values", h.name);
                continue;
            }
            let qs: Vec<String> = QUANTILES
                .iter()
                .map(|q| {
                    let v = h.h.quantile_ms(q / 100.0).unwrap_or(f64::NAN);
                    format!("P{q}(nan,{v:.4})")
                })
                .collect();
            let _ = writeln!(out, "{}: {}", h.name, qs.join(" "));
        }
        out
    }

    /// `/stats?format=json`: `{"stats":[{"name":..,"value":..}]}`.
    pub fn json(&self, filter: &StatFilter) -> serde_json::Value {
        let stats: Vec<serde_json::Value> = self
            .stats
            .iter()
            .filter(|s| filter.keeps(s))
            .map(|s| serde_json::json!({"name": s.name, "value": s.value}))
            .collect();
        let computed: Vec<serde_json::Value> = self
            .hists
            .iter()
            .filter(|h| filter.keeps_hist(h))
            .map(|h| {
                let values: Vec<serde_json::Value> = QUANTILES
                    .iter()
                    .map(|q| serde_json::json!({"interval": null, "cumulative": h.h.quantile_ms(q / 100.0)}))
                    .collect();
                serde_json::json!({"name": h.name, "values": values})
            })
            .collect();
        let mut stats = stats;
        stats.push(serde_json::json!({"histograms": {
            "supported_quantiles": QUANTILES,
            "computed_quantiles": computed,
        }}));
        serde_json::json!({ "stats": stats })
    }

    /// `/stats/prometheus`: text exposition format 0.0.4, one `# HELP` and
    /// `# TYPE` per family, families in name order.
    pub fn prometheus(&self, filter: &StatFilter) -> String {
        let mut by_family: std::collections::BTreeMap<&str, Vec<&Stat>> = Default::default();
        for s in self.stats.iter().filter(|s| filter.keeps(s)) {
            by_family.entry(s.family.as_str()).or_default().push(s);
        }
        let mut out = String::new();
        for (family, stats) in by_family {
            let family = sanitize(family);
            let _ = writeln!(out, "# HELP {family} {}", help(&family));
            let _ = writeln!(out, "# TYPE {family} {}", stats[0].kind.name());
            for s in stats {
                out.push_str(&family);
                write_labels(&mut out, &s.labels, None);
                let _ = writeln!(out, " {}", s.value);
            }
        }
        // Histograms: cumulative buckets at Envoy's bounds, in ms.
        let mut by_family: BTreeMap<&str, Vec<&Hist>> = BTreeMap::new();
        for h in self.hists.iter().filter(|h| filter.keeps_hist(h)) {
            by_family.entry(h.family.as_str()).or_default().push(h);
        }
        for (family, hs) in by_family {
            let family = sanitize(family);
            let _ = writeln!(out, "# HELP {family} {}", help(&family));
            let _ = writeln!(out, "# TYPE {family} histogram");
            for h in hs {
                let counts = h.h.counts();
                let mut cum = 0u64;
                for (i, n) in counts.iter().enumerate() {
                    cum += n;
                    let le = BUCKETS_MS
                        .get(i)
                        .map_or("+Inf".to_string(), |b| format!("{b}"));
                    let _ = write!(out, "{family}_bucket");
                    write_labels(&mut out, &h.labels, Some(("le", &le)));
                    let _ = writeln!(out, " {cum}");
                }
                let _ = write!(out, "{family}_sum");
                write_labels(&mut out, &h.labels, None);
                let _ = writeln!(out, " {}", h.h.sum_ms());
                let _ = write!(out, "{family}_count");
                write_labels(&mut out, &h.labels, None);
                let _ = writeln!(out, " {cum}");
            }
        }
        out
    }
}

/// Prometheus labels: `{a="x",b="y"}` with values escaped; `extra` last.
pub fn write_labels(out: &mut String, labels: &[(&str, String)], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let all = labels.iter().map(|(k, v)| (*k, v.as_str())).chain(extra);
    for (k, v) in all {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for ch in v.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A metric name Prometheus accepts: `[a-zA-Z_:][a-zA-Z0-9_:]*`, anything
/// else becomes `_` (as Envoy does).
pub fn sanitize(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| match c {
            'a'..='z' | 'A'..='Z' | '_' | ':' => c,
            '0'..='9' if i > 0 => c,
            _ => '_',
        })
        .collect()
}

fn help(family: &str) -> String {
    let what = family
        .strip_prefix("envoy_")
        .map(|n| format!("Envoy's {n} statistic"))
        .unwrap_or_else(|| format!("the data plane's {family}"));
    format!("{what} (see docs/admin.md)")
}

/// `/stats` filters: `filter=<regex>` on the flat name, `usedonly`.
#[derive(Debug, Default)]
pub struct StatFilter {
    pub regex: Option<regex::Regex>,
    pub used_only: bool,
}

impl StatFilter {
    fn keeps(&self, s: &Stat) -> bool {
        (!self.used_only || s.used) && self.regex.as_ref().is_none_or(|r| r.is_match(&s.name))
    }

    fn keeps_hist(&self, h: &Hist) -> bool {
        (!self.used_only || h.h.count() != 0)
            && self.regex.as_ref().is_none_or(|r| r.is_match(&h.name))
    }
}

/// A listener address as Envoy writes it in stat names: `0.0.0.0_8080`.
pub fn envoy_address(a: &str) -> String {
    a.replace(':', "_")
}

/// Counters summed over the cores.
pub fn sum<'a>(per_core: impl Iterator<Item = &'a Counters>) -> Counters {
    let total = Counters::default();
    for c in per_core {
        total.add_from(c);
    }
    total
}

/// A cluster's responses by code, summed over the cores (codes a core
/// could not tell apart, past its table, are left out).
fn codes(cl: &ClusterLive) -> BTreeMap<u16, u64> {
    let mut m = BTreeMap::new();
    for h in cl.histograms.iter() {
        h.codes.for_each(|k, n| {
            if let Ok(code) = k {
                *m.entry(code).or_insert(0) += n;
            }
        });
    }
    m
}

/// How the listeners use a cluster, for Istio's metrics.
#[derive(Debug, Default)]
struct ClusterUse {
    reporter: &'static str,
    /// The counters of the `tcp_proxy` listeners to it, summed.
    tcp: Option<Counters>,
    http: bool,
}

/// Each cluster a listener reaches (by `tcp_proxy`, or through its route
/// configuration's routes), with the reporter its listener's direction
/// gives (`destination` for inbound; `source` otherwise).
fn cluster_uses<'a>(
    listeners: &'a [std::sync::Arc<ListenerLive>],
    route_clusters: &'a BTreeMap<String, Vec<String>>,
) -> BTreeMap<&'a str, ClusterUse> {
    let mut m: BTreeMap<&str, ClusterUse> = BTreeMap::new();
    for l in listeners {
        let reporter = match l.cfg.traffic_direction {
            TrafficDirection::Inbound => "destination",
            _ => "source",
        };
        let mut note = |cluster: &'a str, tcp: Option<&Counters>| {
            let u = m.entry(cluster).or_default();
            u.reporter = reporter;
            match tcp {
                Some(c) => u.tcp.get_or_insert_default().add_from(c),
                None => u.http = true,
            }
        };
        match l.cfg.filter() {
            Some(Filter::TcpProxy(t)) => note(&t.cluster, Some(&sum(l.stats.iter()))),
            Some(Filter::Http(h)) => {
                for c in route_clusters.get(&h.route_config).into_iter().flatten() {
                    note(c, None);
                }
            }
            None => {}
        }
    }
    m
}

/// Istio's destination labels from a cluster name:
/// `outbound|80||svc.ns.svc.cluster.local` (or `inbound|...`) gives the
/// service's host, name and namespace; any other name is the service.
fn destination(cluster: &str) -> Vec<(&'static str, String)> {
    let host = match cluster.rsplit_once('|') {
        Some((_, h)) if !h.is_empty() => h,
        _ => cluster,
    };
    let mut parts = host.split('.');
    let name = parts.next().unwrap_or(host).to_string();
    let ns = parts.next().unwrap_or("unknown").to_string();
    vec![
        ("destination_service", host.to_string()),
        ("destination_service_name", name),
        ("destination_service_namespace", ns),
    ]
}

fn classes(c: &Counters) -> [(u8, u64); 5] {
    [
        (1, c.rq_1xx.get()),
        (2, c.rq_2xx.get()),
        (3, c.rq_3xx.get()),
        (4, c.rq_4xx.get()),
        (5, c.rq_5xx.get()),
    ]
}

/// Resident set size of the process, from `/proc/self/statm`.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * rustix::param::page_size() as u64)
}

/// Envoy's `ServerInfo.State` numbers, as `server.state` reports them.
/// PRE_INITIALIZING (2) and INITIALIZING (3) are never reported: the admin
/// server starts with the configuration read and the workers running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    Live = 0,
    Draining = 1,
}

impl ServerState {
    pub fn name(self) -> &'static str {
        match self {
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
        }
    }
}
