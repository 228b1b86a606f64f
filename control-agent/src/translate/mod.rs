//! Envoy v3 resources → the data plane's configuration model.
//!
//! Each resource is judged on its own, as Envoy does: a resource either
//! translates, or it is rejected with a reason precise enough to act on
//! (which field, which value, why). What we do not support is rejected when
//! ignoring it would change what a connection does (HTTP filters, TLS,
//! weighted clusters, priorities, hashing policies...). What only observes
//! (Istio's stats and metadata-exchange filters, access logs, TypedStruct
//! wrapped telemetry) is ignored, each time counted and logged once per
//! filter name, so that Istio can drive us without endless NACKs.
//!
//! Where Envoy has a default, the translation takes Envoy's (connect timeout
//! 5 s, circuit breakers 1024, outlier detection off unless configured), so
//! the same resources mean the same under Envoy and under us.

pub mod hcm;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use dataplane_config::{
    ClusterConfig, ClusterLimits, EndpointConfig, LbPolicy, ListenerConfig, OutlierDetection,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HealthStatus, TransportSocket, address, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use prost::Message;

pub const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
pub const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const RAW_BUFFER: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
const TYPED_STRUCTS: [&str; 2] = [
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// Network filters that only observe the connection: Istio's telemetry and
/// peer-metadata exchange. They are dropped (counted, logged once).
const TELEMETRY_FILTERS: [&str; 5] = [
    "istio.stats",
    "istio.metadata_exchange",
    "istio.alpn",
    "envoy.filters.network.peer_metadata",
    "envoy.filters.network.upstream.metadata_exchange",
];

/// Listener filters that only inspect (their results matter only to
/// filter-chain matches on TLS or ALPN, which are rejected on their own).
const INSPECTORS: [&str; 2] = [
    "envoy.filters.listener.tls_inspector",
    "envoy.filters.listener.http_inspector",
];

/// Envoy's defaults where a field is absent.
const ENVOY_CONNECT_TIMEOUT_MS: u64 = 5_000;
const ENVOY_MAX_CONNECTIONS: u32 = 1024;
const ENVOY_MAX_PENDING: u32 = 1024;
const ENVOY_MAX_REQUESTS: u32 = 1024;
/// Our weights are 1-128; larger ones are scaled down, keeping ratios.
const MAX_WEIGHT: u32 = 128;

/// Things ignored on purpose, counted.
#[derive(Debug, Default)]
pub struct Ignored {
    pub count: AtomicU64,
    logged: Mutex<HashSet<String>>,
}

impl Ignored {
    fn note(&self, what: &str, why: &str) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut seen = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < 1000 && seen.insert(what.to_owned()) {
            tracing::warn!("ignoring {what}: {why} (logged once; see the ignored counter)");
        }
    }
}

/// A translated listener: `None` when it is valid but accepts nothing by
/// itself (`bind_to_port: false`).
pub type ListenerResult = Result<Option<ListenerPlan>, String>;

/// A listener, and for an HTTP one where its routes come from.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerPlan {
    pub cfg: ListenerConfig,
    pub routes: Option<hcm::Routes>,
}

impl ListenerPlan {
    /// Its inline route configuration, if it has one.
    pub fn inline_routes(&self) -> Option<&dataplane_config::http::RouteConfig> {
        match &self.routes {
            Some(hcm::Routes::Inline(r)) => Some(r),
            _ => None,
        }
    }

    /// The RDS name its routes come from, if they do.
    pub fn rds(&self) -> Option<&str> {
        match &self.routes {
            Some(hcm::Routes::Rds(n)) => Some(n),
            _ => None,
        }
    }
}

/// What a listener's one filter chain does.
enum NetworkFilter {
    /// The cluster and the stat prefix.
    TcpProxy(String, String),
    Http(Box<(dataplane_config::http::HttpConfig, hcm::Routes)>),
}

/// A translated cluster, without its endpoints when they come from EDS.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPlan {
    pub cfg: ClusterConfig,
    /// The ClusterLoadAssignment to subscribe to (EDS clusters).
    pub eds: Option<String>,
    /// Host names to resolve (STRICT_DNS clusters): (host, port, weight).
    pub dns: Vec<(String, u16, u32)>,
}

// === listeners ===

pub fn listener(l: &Listener, ignored: &Ignored) -> ListenerResult {
    if l.name.is_empty() {
        return Err("name is empty; a dynamic listener needs a unique name".into());
    }
    if l.api_listener.is_some() {
        return Err("api_listener is not supported (only socket listeners)".into());
    }
    if l.use_original_dst.is_some_and(|v| v.value) {
        return Err("use_original_dst: true is not supported: it relies on iptables REDIRECT, and the data plane receives connections on their own address".into());
    }
    if !l.additional_addresses.is_empty() {
        return Err("additional_addresses is not supported yet (one address per listener)".into());
    }
    if l.filter_chain_matcher.is_some() {
        return Err("filter_chain_matcher is not supported; use filter_chains with filter_chain_match on destination_port".into());
    }
    for lf in &l.listener_filters {
        if INSPECTORS.contains(&lf.name.as_str()) {
            continue;
        }
        return Err(format!(
            "listener_filters: {:?} is not supported (it changes what reaches the filter chain)",
            lf.name
        ));
    }
    let addr = socket_address(l.address.as_ref(), "address")?;
    if l.bind_to_port.is_some_and(|v| !v.value) {
        ignored.note(
            &format!("listener {:?} (bind_to_port: false)", l.name),
            "it only takes connections handed over by another listener's use_original_dst, which is not supported",
        );
        return Ok(None);
    }
    // The chains that can take a connection to this listener's port.
    let mut chains: Vec<&FilterChain> = Vec::new();
    for (i, fc) in l.filter_chains.iter().enumerate() {
        if let Some(m) = &fc.filter_chain_match {
            if let Some(p) = m.destination_port
                && p.value != u32::from(addr.port())
            {
                ignored.note(
                    &format!("listener {:?} filter_chains[{i}]", l.name),
                    "its destination_port never matches the listener's own port",
                );
                continue;
            }
            let unsupported = [
                (!m.prefix_ranges.is_empty(), "prefix_ranges"),
                (
                    !m.direct_source_prefix_ranges.is_empty(),
                    "direct_source_prefix_ranges",
                ),
                (!m.source_prefix_ranges.is_empty(), "source_prefix_ranges"),
                (!m.source_ports.is_empty(), "source_ports"),
                (m.source_type != 0, "source_type"),
                (
                    !m.server_names.is_empty(),
                    "server_names (needs TLS inspection, which arrives with the TLS work)",
                ),
                (
                    !m.transport_protocol.is_empty() && m.transport_protocol != "raw_buffer",
                    "transport_protocol (needs TLS inspection, which arrives with the TLS work)",
                ),
                (
                    !m.application_protocols.is_empty(),
                    "application_protocols (needs ALPN inspection)",
                ),
                (!m.address_suffix.is_empty(), "address_suffix"),
            ];
            if let Some((_, what)) = unsupported.iter().find(|(on, _)| *on) {
                return Err(format!(
                    "filter_chains[{i}].filter_chain_match.{what} is not supported"
                ));
            }
        }
        chains.push(fc);
    }
    let chain = match (chains.as_slice(), &l.default_filter_chain) {
        ([one], _) => *one,
        ([], Some(d)) => d,
        ([], None) => {
            return Err(format!(
                "no filter chain matches connections to port {}",
                addr.port()
            ));
        }
        _ => {
            return Err(format!(
                "{} filter chains match connections to port {}; choosing between them is not supported",
                chains.len(),
                addr.port()
            ));
        }
    };
    if let Some(ts) = &chain.transport_socket
        && !is_raw_buffer(ts)
    {
        return Err(format!(
            "filter chain transport_socket {:?} (TLS termination) arrives with the TLS work",
            ts.name
        ));
    }
    let mut plan = match network_filters(&l.name, &chain.filters, ignored)? {
        NetworkFilter::TcpProxy(cluster, stat_prefix) => {
            let mut cfg = ListenerConfig::tcp(&l.name, &addr.to_string(), &cluster);
            if let Some(dataplane_config::FilterChainConfig {
                tcp_proxy: Some(t), ..
            }) = cfg.filter_chains.first_mut()
            {
                t.stat_prefix = stat_prefix;
            }
            ListenerPlan { cfg, routes: None }
        }
        NetworkFilter::Http(b) => {
            let (h, routes) = *b;
            ListenerPlan {
                cfg: ListenerConfig {
                    name: l.name.clone(),
                    address: addr.to_string(),
                    filter_chains: vec![dataplane_config::FilterChainConfig::http(h)],
                    traffic_direction: Default::default(),
                },
                routes: Some(routes),
            }
        }
    };
    // Envoy's enum: 0 unspecified, 1 inbound, 2 outbound.
    plan.cfg.traffic_direction = match l.traffic_direction {
        1 => dataplane_config::TrafficDirection::Inbound,
        2 => dataplane_config::TrafficDirection::Outbound,
        _ => dataplane_config::TrafficDirection::Unspecified,
    };
    // What the data plane would refuse of the listener itself is refused
    // now, on LDS (whether its address fits the data plane's ports, only
    // the data plane can tell).
    plan.cfg.check().map_err(|errors| {
        let e: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("the data plane cannot hold it: {}", e.join("; "))
    })?;
    Ok(Some(plan))
}

/// The chain's terminal filter (`tcp_proxy` or the HTTP connection
/// manager); every other filter must be telemetry.
fn network_filters(
    listener: &str,
    filters: &[Filter],
    ignored: &Ignored,
) -> Result<NetworkFilter, String> {
    let mut terminal = None;
    for (i, f) in filters.iter().enumerate() {
        let any = match &f.config_type {
            Some(filter::ConfigType::TypedConfig(a)) => Some(a),
            Some(filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(format!(
                    "filters[{i}] {:?}: config_discovery (ECDS) is not supported",
                    f.name
                ));
            }
            None => None,
        };
        let type_url = any.map(|a| a.type_url.as_str()).unwrap_or("");
        if TELEMETRY_FILTERS.contains(&f.name.as_str())
            || (TYPED_STRUCTS.contains(&type_url) && f.name.starts_with("istio."))
        {
            ignored.note(
                &format!("network filter {:?}", f.name),
                "telemetry only; the data plane keeps its own counters",
            );
            continue;
        }
        if type_url == HCM || f.name == "envoy.filters.network.http_connection_manager" {
            let Some(any) = any else {
                return Err(format!(
                    "filters[{i}] http_connection_manager has no typed_config"
                ));
            };
            if i + 1 != filters.len() {
                return Err(format!(
                    "filters[{i}]: http_connection_manager must be the last filter of the chain"
                ));
            }
            let h = envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager::decode(any.value.as_slice())
                .map_err(|e| format!("filters[{i}] http_connection_manager: cannot decode: {e}"))?;
            let (cfg, routes) = hcm::hcm(&h, listener, ignored)
                .map_err(|e| format!("filters[{i}] http_connection_manager.{e}"))?;
            terminal = Some(NetworkFilter::Http(Box::new((cfg, routes))));
            continue;
        }
        if type_url == TCP_PROXY || f.name == "envoy.filters.network.tcp_proxy" {
            let Some(any) = any else {
                return Err(format!("filters[{i}] tcp_proxy has no typed_config"));
            };
            if i + 1 != filters.len() {
                return Err(format!(
                    "filters[{i}]: tcp_proxy must be the last filter of the chain"
                ));
            }
            let tp = TcpProxy::decode(any.value.as_slice())
                .map_err(|e| format!("filters[{i}] tcp_proxy: cannot decode: {e}"))?;
            terminal = Some(NetworkFilter::TcpProxy(
                tcp_proxy(&tp, ignored).map_err(|e| format!("filters[{i}] tcp_proxy.{e}"))?,
                tp.stat_prefix.clone(),
            ));
            continue;
        }
        return Err(format!(
            "filters[{i}]: network filter {:?} ({}) is not supported; only tcp_proxy, http_connection_manager and Istio's telemetry filters are",
            f.name,
            if type_url.is_empty() {
                "no typed_config"
            } else {
                type_url
            }
        ));
    }
    terminal.ok_or_else(|| {
        format!(
            "listener {listener:?}: its filter chain has no tcp_proxy or http_connection_manager filter"
        )
    })
}

fn tcp_proxy(tp: &TcpProxy, ignored: &Ignored) -> Result<String, String> {
    let cluster = match &tp.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => c.clone(),
        Some(ClusterSpecifier::Cluster(_)) | None => {
            return Err("cluster: missing".into());
        }
        Some(ClusterSpecifier::WeightedClusters(_)) => {
            return Err("weighted_clusters is not supported yet; name one cluster".into());
        }
    };
    if tp.tunneling_config.is_some() {
        return Err("tunneling_config (HTTP CONNECT tunnelling) is not supported".into());
    }
    if tp.metadata_match.is_some() {
        return Err("metadata_match (subset load balancing) is not supported".into());
    }
    if !tp.hash_policy.is_empty() {
        return Err("hash_policy is not supported (no hashing load balancer yet)".into());
    }
    if !tp.access_log.is_empty() {
        ignored.note(
            "tcp_proxy access_log",
            "access logging is not done by the data plane",
        );
    }
    Ok(cluster)
}

// === clusters ===

pub fn cluster(c: &Cluster, ignored: &Ignored) -> Result<ClusterPlan, String> {
    if c.name.is_empty() {
        return Err("name is empty".into());
    }
    let kind = match &c.cluster_discovery_type {
        None => cluster::DiscoveryType::Static,
        Some(cluster::ClusterDiscoveryType::Type(t)) => cluster::DiscoveryType::try_from(*t)
            .map_err(|_| format!("type: unknown discovery type {t}"))?,
        Some(cluster::ClusterDiscoveryType::ClusterType(ct)) => {
            return Err(format!(
                "cluster_type {:?} (custom cluster) is not supported",
                ct.name
            ));
        }
    };
    let lb_policy = if kind == cluster::DiscoveryType::OriginalDst {
        LbPolicy::RoundRobin // CLUSTER_PROVIDED: there are no endpoints to pick from
    } else {
        lb_policy(c)?
    };
    if !c.health_checks.is_empty() {
        return Err(
            "health_checks (active health checking) is not supported yet; outlier_detection is"
                .into(),
        );
    }
    if let Some(ts) = &c.transport_socket
        && !is_raw_buffer(ts)
    {
        return Err(format!(
            "transport_socket {:?} (upstream TLS) arrives with the TLS work",
            ts.name
        ));
    }
    for m in &c.transport_socket_matches {
        let raw = m.transport_socket.as_ref().is_none_or(is_raw_buffer);
        if !raw {
            return Err(format!(
                "transport_socket_matches {:?} (upstream TLS for matching endpoints) arrives with the TLS work",
                m.name
            ));
        }
    }
    for f in &c.filters {
        if TELEMETRY_FILTERS.contains(&f.name.as_str()) {
            ignored.note(&format!("cluster filter {:?}", f.name), "telemetry only");
        } else {
            return Err(format!(
                "filters: upstream network filter {:?} is not supported",
                f.name
            ));
        }
    }
    let connect_timeout_ms = match &c.connect_timeout {
        None => ENVOY_CONNECT_TIMEOUT_MS,
        Some(d) => duration_ms(d).ok_or_else(|| {
            format!(
                "connect_timeout: {} is not a positive duration",
                fmt_duration(d)
            )
        })?,
    };
    let mut limits = ClusterLimits {
        max_connections: ENVOY_MAX_CONNECTIONS,
        max_pending: ENVOY_MAX_PENDING,
        max_requests: ENVOY_MAX_REQUESTS,
    };
    if let Some(cb) = &c.circuit_breakers {
        // Priority DEFAULT (0) only: we have no priorities.
        if let Some(t) = cb.thresholds.iter().find(|t| t.priority == 0) {
            if let Some(v) = t.max_connections {
                limits.max_connections = v.value;
            }
            if let Some(v) = t.max_pending_requests {
                limits.max_pending = v.value;
            }
            if let Some(v) = t.max_requests {
                limits.max_requests = v.value;
            }
        }
    }
    let outlier = match &c.outlier_detection {
        // Envoy does no outlier detection unless configured.
        None => OutlierDetection {
            consecutive_failures: u32::MAX,
            ..OutlierDetection::default()
        },
        Some(o) => {
            // A refused or timed-out connect is what tcp_proxy reports as a
            // 5xx-class (gateway) failure.
            let d = OutlierDetection::default();
            OutlierDetection {
                consecutive_failures: o
                    .consecutive_5xx
                    .map(|v| v.value)
                    .or(o.consecutive_gateway_failure.map(|v| v.value))
                    .unwrap_or(5),
                base_ejection_ms: o
                    .base_ejection_time
                    .as_ref()
                    .map(|d| duration_ms(d).ok_or_else(|| format!("outlier_detection.base_ejection_time: {} is not a positive duration", fmt_duration(d))))
                    .transpose()?
                    .unwrap_or(d.base_ejection_ms),
                max_ejection_percent: o
                    .max_ejection_percent
                    .map(|v| v.value)
                    .unwrap_or(d.max_ejection_percent),
            }
        }
    };
    let mut cfg = ClusterConfig {
        name: c.name.clone(),
        endpoints: Vec::new(),
        lb_policy,
        connect_timeout_ms,
        idle_timeout_ms: 0,
        limits,
        outlier_detection: outlier,
    };
    let mut plan = ClusterPlan {
        cfg: cfg.clone(),
        eds: None,
        dns: Vec::new(),
    };
    match kind {
        cluster::DiscoveryType::Static => {
            // No load_assignment: no endpoints (Istio's BlackHoleCluster).
            if let Some(cla) = &c.load_assignment {
                cfg.endpoints = endpoints(cla).map_err(|e| format!("load_assignment.{e}"))?;
            }
            plan.cfg = cfg;
        }
        cluster::DiscoveryType::Eds => {
            let name = c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| c.name.clone());
            if let Some(src) = c.eds_cluster_config.as_ref().and_then(|e| e.eds_config.as_ref())
                && src.config_source_specifier.is_some()
                && !matches!(
                    src.config_source_specifier,
                    Some(envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Ads(_))
                )
            {
                return Err("eds_cluster_config.eds_config: only ads is supported as the EDS source".into());
            }
            plan.eds = Some(name);
        }
        cluster::DiscoveryType::StrictDns | cluster::DiscoveryType::LogicalDns => {
            let cla = c
                .load_assignment
                .as_ref()
                .ok_or("type STRICT_DNS needs load_assignment")?;
            for (pi, p) in cla.endpoints.iter().enumerate() {
                if p.priority != 0 {
                    return Err(format!(
                        "load_assignment.endpoints[{pi}].priority {}: priorities are not supported yet",
                        p.priority
                    ));
                }
                for (ei, e) in p.lb_endpoints.iter().enumerate() {
                    let at = format!("load_assignment.endpoints[{pi}].lb_endpoints[{ei}]");
                    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                        return Err(format!("{at}: needs endpoint.address"));
                    };
                    let (host, port) =
                        socket_parts(ep.address.as_ref(), &format!("{at}.endpoint.address"))?;
                    plan.dns
                        .push((host, port, e.load_balancing_weight.map_or(1, |w| w.value)));
                }
            }
            if kind == cluster::DiscoveryType::LogicalDns {
                plan.dns.truncate(1);
            }
        }
        cluster::DiscoveryType::OriginalDst => {
            // Istio sends PassthroughCluster to every proxy. Only listeners
            // that redirect with iptables use it (and those are rejected);
            // named by a tcp_proxy, its connections are refused.
            ignored.note(
                &format!("cluster {:?} (type ORIGINAL_DST)", c.name),
                "it needs iptables REDIRECT; it is kept with no endpoints",
            );
        }
    }
    // What the data plane would refuse once the cluster is pushed (after
    // its endpoints arrive) is refused now, on the cluster: a NACK on CDS,
    // not on an innocent EDS response later.
    plan.cfg.check().map_err(|errors| {
        let e: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("the data plane cannot hold it: {}", e.join("; "))
    })?;
    Ok(plan)
}

fn lb_policy(c: &Cluster) -> Result<LbPolicy, String> {
    if let Some(p) = &c.load_balancing_policy {
        // The first policy we know wins, as in Envoy.
        for pol in &p.policies {
            let t = pol
                .typed_extension_config
                .as_ref()
                .and_then(|t| t.typed_config.as_ref())
                .map(|a| a.type_url.rsplit('/').next().unwrap_or(""))
                .unwrap_or("");
            let known = match t {
                "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin" => {
                    LbPolicy::RoundRobin
                }
                "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest" => {
                    LbPolicy::LeastConnections
                }
                "envoy.extensions.load_balancing_policies.random.v3.Random" => LbPolicy::Random,
                _ => continue,
            };
            return Ok(known);
        }
        return Err(
            "load_balancing_policy: none of its policies is round_robin, least_request or random"
                .into(),
        );
    }
    match cluster::LbPolicy::try_from(c.lb_policy) {
        Ok(cluster::LbPolicy::RoundRobin) => Ok(LbPolicy::RoundRobin),
        Ok(cluster::LbPolicy::LeastRequest) => Ok(LbPolicy::LeastConnections),
        Ok(cluster::LbPolicy::Random) => Ok(LbPolicy::Random),
        Ok(p) => Err(format!(
            "lb_policy {}: not supported yet; ROUND_ROBIN, LEAST_REQUEST and RANDOM are",
            p.as_str_name()
        )),
        Err(_) => Err(format!("lb_policy: unknown value {}", c.lb_policy)),
    }
}

// === endpoints ===

/// The endpoints of an assignment: priority 0, those not known to be
/// unhealthy (degraded ones only if there is no healthy one, as Envoy).
/// Weights above 128 are scaled down (ratios kept); repeated addresses add
/// up.
pub fn endpoints(cla: &ClusterLoadAssignment) -> Result<Vec<EndpointConfig>, String> {
    let mut healthy: BTreeMap<SocketAddrV4, u64> = BTreeMap::new();
    let mut degraded: BTreeMap<SocketAddrV4, u64> = BTreeMap::new();
    for (pi, p) in cla.endpoints.iter().enumerate() {
        if p.priority != 0 {
            return Err(format!(
                "endpoints[{pi}].priority {}: priority failover is not supported yet",
                p.priority
            ));
        }
        for (ei, e) in p.lb_endpoints.iter().enumerate() {
            let at = format!("endpoints[{pi}].lb_endpoints[{ei}]");
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                return Err(format!(
                    "{at}: named endpoints (endpoint_name) are not supported"
                ));
            };
            let addr = socket_address(ep.address.as_ref(), &format!("{at}.endpoint.address"))?;
            if addr.ip().is_unspecified() {
                return Err(format!(
                    "{at}.endpoint.address {addr}: not an address to connect to"
                ));
            }
            let weight = u64::from(e.load_balancing_weight.map_or(1, |w| w.value));
            if weight == 0 {
                return Err(format!("{at}.load_balancing_weight: must be at least 1"));
            }
            let into = match HealthStatus::try_from(e.health_status) {
                Ok(HealthStatus::Unknown | HealthStatus::Healthy) | Err(_) => &mut healthy,
                Ok(HealthStatus::Degraded) => &mut degraded,
                Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout) => {
                    continue;
                }
            };
            *into.entry(addr).or_default() += weight;
        }
    }
    let chosen = if healthy.is_empty() {
        degraded
    } else {
        healthy
    };
    let max = chosen.values().copied().max().unwrap_or(1);
    Ok(chosen
        .into_iter()
        .map(|(a, w)| EndpointConfig {
            address: a.to_string(),
            weight: if max > u64::from(MAX_WEIGHT) {
                ((w * u64::from(MAX_WEIGHT)).div_ceil(max)).max(1) as u32
            } else {
                w as u32
            },
        })
        .collect())
}

// === helpers ===

/// A transport socket that is plain TCP (no config, or raw buffer).
fn is_raw_buffer(ts: &TransportSocket) -> bool {
    match &ts.config_type {
        None => true,
        Some(transport_socket::ConfigType::TypedConfig(a)) => a.type_url == RAW_BUFFER,
    }
}

/// Host (or IP) and port of a socket address.
fn socket_parts(a: Option<&Address>, at: &str) -> Result<(String, u16), String> {
    let sa = match a.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(address::Address::Pipe(p)) => {
            return Err(format!(
                "{at}: pipe {:?} is not supported (TCP only)",
                p.path
            ));
        }
        Some(address::Address::EnvoyInternalAddress(_)) => {
            return Err(format!("{at}: internal addresses are not supported"));
        }
        None => return Err(format!("{at}: missing")),
    };
    if sa.protocol != socket_address::Protocol::Tcp as i32 {
        return Err(format!("{at}.protocol: only TCP is supported"));
    }
    if !sa.resolver_name.is_empty() {
        return Err(format!(
            "{at}.resolver_name: custom resolvers are not supported"
        ));
    }
    let port = match &sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) if (1..=65535).contains(p) => *p as u16,
        Some(socket_address::PortSpecifier::PortValue(p)) => {
            return Err(format!("{at}.port_value: {p} is not a port (1-65535)"));
        }
        Some(socket_address::PortSpecifier::NamedPort(n)) => {
            return Err(format!(
                "{at}.named_port {n:?}: named ports are not supported"
            ));
        }
        None => return Err(format!("{at}.port_value: missing")),
    };
    Ok((sa.address.clone(), port))
}

fn socket_address(a: Option<&Address>, at: &str) -> Result<SocketAddrV4, String> {
    let (host, port) = socket_parts(a, at)?;
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(format!("{at}.address {host}: IPv6 is not supported yet"));
    }
    let ip: Ipv4Addr = host
        .parse()
        .map_err(|_| format!("{at}.address {host:?}: not an IPv4 address"))?;
    Ok(SocketAddrV4::new(ip, port))
}

fn duration_ms(d: &PbDuration) -> Option<u64> {
    if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) {
        return None;
    }
    Some((d.seconds as u64).saturating_mul(1000) + (d.nanos as u64).div_ceil(1_000_000))
}

fn fmt_duration(d: &PbDuration) -> String {
    format!("{}.{:09}s", d.seconds, d.nanos)
}
