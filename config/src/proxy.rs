//! Listeners and clusters: what the data plane proxies, from where to where.
//!
//! The model knows nothing of how it was loaded: YAML fills it today, the xDS
//! agent (translating Envoy listeners, clusters and endpoints) later.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};

use crate::http::HttpConfig;
use crate::{AddrError, parse_ipv4};

/// Where client connections are accepted, and what is done with them.
///
/// Written either with `filter_chains` or, as before filter chains existed,
/// with a `tcp_proxy` of its own (one chain with that filter); it is always
/// held and saved in the first form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ListenerInput")]
pub struct ListenerConfig {
    /// Unique; used in stats and logs.
    pub name: String,
    /// `address:port` to accept on. The address is one of the ports'
    /// addresses, or `0.0.0.0` for all of them.
    pub address: String,
    /// What is done with an accepted connection: exactly one chain (chains
    /// chosen by `match` come with TLS).
    pub filter_chains: Vec<FilterChainConfig>,
    /// Envoy's `traffic_direction`: `INBOUND` (to a workload of this node)
    /// or `OUTBOUND` (from one). Istio's metrics take their `reporter`
    /// from it (`destination` or `source`).
    #[serde(default, skip_serializing_if = "TrafficDirection::is_unspecified")]
    pub traffic_direction: TrafficDirection,
}

/// Which way a listener's traffic goes, as Envoy's `traffic_direction`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrafficDirection {
    #[default]
    Unspecified,
    Inbound,
    Outbound,
}

impl TrafficDirection {
    pub fn is_unspecified(&self) -> bool {
        *self == TrafficDirection::Unspecified
    }
}

/// A listener as written: either form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerInput {
    name: String,
    address: String,
    #[serde(default)]
    filter_chains: Vec<FilterChainConfig>,
    #[serde(default)]
    tcp_proxy: Option<TcpProxyConfig>,
    #[serde(default)]
    traffic_direction: TrafficDirection,
}

impl TryFrom<ListenerInput> for ListenerConfig {
    type Error = String;

    fn try_from(l: ListenerInput) -> Result<Self, String> {
        let filter_chains = match (l.tcp_proxy, l.filter_chains.is_empty()) {
            (Some(_), false) => {
                return Err(format!(
                    "listener {:?}: give `filter_chains` or `tcp_proxy` (the form before \
                     filter chains, one chain with that filter), not both",
                    l.name
                ));
            }
            (Some(t), true) => vec![FilterChainConfig::tcp_proxy(t)],
            (None, _) => l.filter_chains,
        };
        Ok(ListenerConfig {
            name: l.name,
            address: l.address,
            filter_chains,
            traffic_direction: l.traffic_direction,
        })
    }
}

impl ListenerConfig {
    /// A listener whose connections are spliced to `cluster`.
    pub fn tcp(name: &str, address: &str, cluster: &str) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            address: address.into(),
            filter_chains: vec![FilterChainConfig::tcp_proxy(TcpProxyConfig {
                cluster: cluster.into(),
                stat_prefix: String::new(),
            })],
            traffic_direction: TrafficDirection::Unspecified,
        }
    }

    /// The filter its connections get (that of its one chain), if valid.
    pub fn filter(&self) -> Option<Filter<'_>> {
        match self.filter_chains.as_slice() {
            [c] => c.filter(),
            _ => None,
        }
    }

    /// Its filter's `stat_prefix`, or else its name.
    pub fn stat_prefix(&self) -> &str {
        let p = match self.filter() {
            Some(Filter::TcpProxy(t)) => t.stat_prefix.as_str(),
            Some(Filter::Http(h)) => h.stat_prefix.as_str(),
            None => "",
        };
        if p.is_empty() { &self.name } else { p }
    }
}

/// What one filter chain does: exactly one of `tcp_proxy` and `http`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterChainConfig {
    /// Which connections take this chain (no conditions yet: every one).
    #[serde(rename = "match", default)]
    pub matcher: FilterChainMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_proxy: Option<TcpProxyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpConfig>,
}

impl FilterChainConfig {
    pub fn tcp_proxy(t: TcpProxyConfig) -> FilterChainConfig {
        FilterChainConfig {
            matcher: FilterChainMatch::default(),
            tcp_proxy: Some(t),
            http: None,
        }
    }

    pub fn http(h: HttpConfig) -> FilterChainConfig {
        FilterChainConfig {
            matcher: FilterChainMatch::default(),
            tcp_proxy: None,
            http: Some(h),
        }
    }

    pub fn filter(&self) -> Option<Filter<'_>> {
        match (&self.tcp_proxy, &self.http) {
            (Some(t), None) => Some(Filter::TcpProxy(t)),
            (None, Some(h)) => Some(Filter::Http(h)),
            _ => None,
        }
    }
}

/// A filter chain's conditions. None exist yet (server names, transport
/// protocol and the rest come with TLS); `{}` matches every connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterChainMatch {}

/// A filter chain's one network filter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Filter<'a> {
    TcpProxy(&'a TcpProxyConfig),
    Http(&'a HttpConfig),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProxyConfig {
    /// The cluster (by name) that connections are forwarded to.
    pub cluster: String,
    /// Envoy's `stat_prefix`: the admin stats' `tcp.<stat_prefix>.` (empty:
    /// the listener's name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stat_prefix: String,
}

/// A set of upstream endpoints and how connections are spread over them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique; used in stats, logs and by listeners.
    pub name: String,
    /// Static endpoints. A cluster may be empty (its connections are refused
    /// at once and counted), as an xDS cluster is until endpoints arrive.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// Upstream handshake deadline; past it the endpoint counts a failure
    /// and the client's connection is closed.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Close both sides of a proxied connection with no traffic either way
    /// this long; 0: never.
    #[serde(default)]
    pub idle_timeout_ms: u64,
    /// Circuit breakers, over all worker cores.
    #[serde(default)]
    pub limits: ClusterLimits,
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
}

fn default_connect_timeout() -> u64 {
    5_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest active connections relative to its
    /// weight (of two picked at random, as Envoy's LEAST_REQUEST does).
    LeastConnections,
    /// Weighted random.
    Random,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// `address:port` (IPv4).
    pub address: String,
    /// Relative share of new connections (1-128).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Circuit breaker thresholds. Past them a new client connection is refused
/// (closed at once) and counted as an overflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterLimits {
    /// Upstream connections open or opening.
    pub max_connections: u32,
    /// Upstream connections still in their handshake. HTTP requests wait
    /// for no connection but their own, so this also bounds the requests
    /// pending a connection (Envoy's `max_pending_requests`).
    pub max_pending: u32,
    /// HTTP requests in progress to the cluster (Envoy's `max_requests`);
    /// past it a request is answered 503 (flag UO).
    pub max_requests: u32,
}

impl Default for ClusterLimits {
    fn default() -> Self {
        // Far above Envoy's 1 024, which silently caps a busy proxy.
        ClusterLimits {
            max_connections: 100_000,
            max_pending: 10_000,
            max_requests: 100_000,
        }
    }
}

/// Passive health checking: endpoints that keep failing to connect are
/// ejected for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// Refused or timed-out connects in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// Ejection time, multiplied by the number of times the endpoint has
    /// been ejected.
    pub base_ejection_ms: u64,
    /// At most this share of a cluster's endpoints is ejected at once. If
    /// every endpoint is unhealthy anyway, all are used rather than none.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection_ms: 30_000,
            max_ejection_percent: 10,
        }
    }
}

/// Parse `a.b.c.d:port`; the error says why, in words for a config user.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddrV4, AddrError> {
    if s.starts_with('[') || s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(AddrError::Ipv6);
    }
    let (a, p) = s.rsplit_once(':').ok_or(AddrError::NoPort)?;
    let addr: Ipv4Addr = parse_ipv4(a)?;
    let port: u16 = p.parse().map_err(|_| AddrError::BadPort(p.to_owned()))?;
    if port == 0 {
        return Err(AddrError::PortZero);
    }
    Ok(SocketAddrV4::new(addr, port))
}
