//! The data plane's configuration model: serde types and validation only.
//!
//! No DPDK and no protobuf here: the data plane loads this from YAML, and the
//! xDS agent (`control-agent`) fills the same types from Envoy resources.
//! Whatever loaded it, [`Config::validate`] is the one gate, and it reports
//! every problem at once, each with the field's path, the offending value and
//! the reason.
//!
//! Units are in field names (`_ms`, `_us`); every field but `ports` has a
//! default, documented in `docs/config.md`. The `tcp` section's defaults that
//! the TCP stack has too are taken from `netstack` (built without DPDK).
#![forbid(unsafe_code)]

pub mod admin;
pub mod fuzzing;
pub mod http;
pub mod overload;
mod proxy;
mod update;
mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use proxy::{
    ClusterConfig, ClusterLimits, EndpointConfig, Filter, FilterChainConfig, FilterChainMatch,
    LbPolicy, ListenerConfig, OutlierDetection, TcpProxyConfig, TrafficDirection,
    parse_socket_addr,
};
pub use update::{Change, ProxyState, ProxyUpdate, Rejected, RejectedField};
pub use validate::{ConfigError, ConfigErrors};

/// The default configuration compiled into the binary.
pub const DEFAULT_YAML: &str = include_str!("../default.yaml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub eal: EalConfig,
    #[serde(default)]
    pub workers: WorkersConfig,
    #[serde(default)]
    pub mempool: MempoolConfig,
    pub ports: Vec<PortConfig>,
    #[serde(default)]
    pub ip: IpConfig,
    #[serde(default)]
    pub arp: ArpConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub tcp: TcpSettings,
    /// Test services on our own TCP stack, listening on every port address.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Where client connections are accepted and which cluster they go to.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// Route configurations, named by listeners' HTTP filter chains.
    #[serde(default)]
    pub route_configs: Vec<http::RouteConfig>,
    /// On SIGTERM listeners stop accepting, and established connections get
    /// this long to finish before they are closed.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_ms: u64,
    /// Where sampled requests' spans go (`http.tracing` samples them).
    #[serde(default)]
    pub tracing: TracingConfig,
    /// What the workers measure beyond their counters.
    #[serde(default)]
    pub stats: StatsConfig,
    /// What each worker does when its buffers or connection table run
    /// short (nothing unless actions are configured).
    #[serde(default)]
    pub overload_manager: overload::OverloadManagerConfig,
}

/// `stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsConfig {
    /// Latency histograms (`downstream_rq_time`, `upstream_rq_time`,
    /// `upstream_cx_connect_ms`) and counts per response code. Off saves a
    /// few nanoseconds per request and loses those stats (and Istio's
    /// `response_code` label).
    pub histograms: bool,
    /// Each endpoint's counters in `/stats` and Prometheus too
    /// (`dataplane_endpoint_*{envoy_cluster_name,endpoint}`); off by
    /// default, as Envoy keeps per-host stats to `/clusters`: with many
    /// endpoints they dwarf everything else.
    pub endpoints: bool,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            histograms: true,
            endpoints: false,
        }
    }
}

/// `tracing`: the span exporter, a thread of the control side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    pub zipkin: Option<ZipkinConfig>,
}

/// Zipkin v2 JSON over HTTP/1.1, as Envoy's Zipkin tracer sends it
/// (`collector_endpoint_version: HTTP_JSON`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZipkinConfig {
    /// The collector's `address:port`, reached over the kernel's network
    /// stack (from the data plane's namespace).
    pub collector: Option<SocketAddr>,
    /// Envoy's `collector_endpoint`.
    pub collector_endpoint: String,
    /// The spans' `localEndpoint.serviceName` (Envoy's service cluster).
    pub service_name: String,
    /// Spans each worker queues for the exporter; more are dropped and
    /// counted (`dataplane.tracing.spans_dropped`).
    pub queue_size: u32,
    /// How often the exporter sends what is queued.
    pub flush_interval_ms: u64,
}

impl Default for ZipkinConfig {
    fn default() -> Self {
        ZipkinConfig {
            collector: None,
            collector_endpoint: "/api/v2/spans".into(),
            service_name: "dataplane".into(),
            queue_size: 4096,
            flush_interval_ms: 1000,
        }
    }
}

fn default_drain_timeout() -> u64 {
    5_000
}

/// The user-space TCP stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSettings {
    /// Floor of the retransmission timeout; keep it above peers' delayed-ACK
    /// time (Linux: 40 ms).
    pub min_rto_ms: u64,
    pub time_wait_ms: u64,
    /// Bytes buffered per connection and direction.
    pub recv_buffer: u32,
    pub send_buffer: u32,
    /// Connections per worker core.
    pub max_connections: u32,
    /// Payload bytes all connections of one worker core hold at most (queued
    /// to send, or received and not yet read).
    pub max_buffered_bytes: u64,
    /// Handshakes in progress or awaiting accept, per listener and core.
    pub backlog: u32,
    /// Longest an ACK for in-order data is held back (every second segment
    /// is acknowledged at once); 0 acknowledges every segment.
    pub delayed_ack_ms: u64,
    /// Quiet time before keepalive probes start; 0: no keepalive.
    pub keepalive_idle_ms: u64,
    pub keepalive_interval_ms: u64,
    /// Unanswered probes before the connection is reset.
    pub keepalive_probes: u32,
    /// Reset a connection whose sent data sees no progress this long; 0: off.
    pub user_timeout_ms: u64,
    /// Reset a connection with no traffic either way this long; 0: off.
    pub idle_timeout_ms: u64,
    /// Congestion control: `cubic` (RFC 9438) or `reno` (NewReno).
    pub congestion: CongestionControl,
    /// Offer timestamps (RFC 7323): PAWS, and new SYNs accepted in
    /// TIME_WAIT by a newer timestamp (RFC 6191).
    pub timestamps: bool,
}

/// Congestion control algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CongestionControl {
    Reno,
    Cubic,
}

/// What the TCP stack has a default for is taken from it (`TcpConfig::DEFAULT`,
/// `EngineConfig::DEFAULT`), so the two cannot drift apart; the rest exists
/// only here. Durations the stack keeps as `None` (off) are 0 here.
impl Default for TcpSettings {
    fn default() -> Self {
        let tcp = netstack::tcp::TcpConfig::DEFAULT;
        let engine = netstack::tcp::EngineConfig::DEFAULT;
        TcpSettings {
            min_rto_ms: ms(tcp.min_rto),
            time_wait_ms: ms(tcp.time_wait),
            recv_buffer: tcp.recv_buffer,
            send_buffer: tcp.send_buffer,
            max_connections: u32::try_from(engine.max_connections).unwrap_or(u32::MAX),
            // Differs from the engine's `max_buffered` (1 GiB): not taken from it.
            max_buffered_bytes: 512 << 20,
            backlog: 1024,
            delayed_ack_ms: ms(tcp.delayed_ack),
            keepalive_idle_ms: tcp.keepalive.map_or(0, |k| ms(k.idle)),
            keepalive_interval_ms: 10_000,
            keepalive_probes: 9,
            user_timeout_ms: tcp.user_timeout.map_or(0, ms),
            idle_timeout_ms: tcp.idle_timeout.map_or(0, ms),
            congestion: match tcp.congestion {
                netstack::tcp::Congestion::Reno => CongestionControl::Reno,
                netstack::tcp::Congestion::Cubic => CongestionControl::Cubic,
            },
            timestamps: tcp.timestamps,
        }
    }
}

/// A duration in whole milliseconds, as the `_ms` fields hold them.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A test service answered by the data plane itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub kind: ServiceKind,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// Send back every byte received (RFC 862).
    Echo,
    /// Read and drop everything (RFC 863).
    Discard,
    /// Send bytes until the client closes (like chargen, RFC 864).
    Source,
}

/// How DPDK's EAL is started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EalConfig {
    /// `--file-prefix`: separates this process's shared files from other DPDK
    /// processes on the host. Each concurrent instance needs its own.
    pub file_prefix: String,
    /// `--in-memory`: no hugepage or runtime files on disk, so nothing is left
    /// behind even after a crash. Turn off only to attach secondary processes
    /// (dpdk-pdump, dpdk-proc-info).
    pub in_memory: bool,
    /// `--no-huge -m memory_mb`: run on ordinary memory (slower, for hosts
    /// without hugepages).
    pub no_huge: bool,
    /// Memory to reserve in MiB (`-m`); 0 lets EAL decide (needs `no_huge: false`).
    pub memory_mb: u32,
    /// Extra EAL arguments, appended verbatim (also possible after `--` on the
    /// command line).
    pub extra_args: Vec<String>,
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            file_prefix: "dataplane".into(),
            in_memory: true,
            no_huge: false,
            memory_mb: 0,
            extra_args: vec![],
        }
    }
}

/// Worker cores and their loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// CPU ids to run one worker each on. Each worker owns one RX/TX queue pair
    /// on every port.
    pub cores: Vec<u32>,
    /// CPUs the control thread (admin socket, signals) may run on; empty: every
    /// CPU not in `cores`, or all CPUs if that leaves none.
    pub control_cores: Vec<u32>,
    /// Packets per RX burst and per TX batch.
    pub burst_size: u16,
    pub idle: IdleConfig,
    /// `stack`: the network stack (normal operation). `l2_reflect`: swap MACs
    /// and send every frame back out of the port it came in on, with no stack:
    /// a benchmark of the raw RX→TX loop, like `dpdk-testpmd --forward-mode=macswap`.
    pub mode: WorkerMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerMode {
    #[default]
    Stack,
    L2Reflect,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            cores: vec![1],
            control_cores: vec![],
            burst_size: 32,
            idle: IdleConfig::default(),
            mode: WorkerMode::Stack,
        }
    }
}

/// What a worker does when its queues are empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdleConfig {
    pub mode: IdleMode,
    /// Consecutive empty polls before sleeping (adaptive mode).
    pub spin_polls: u32,
    /// Sleep per idle round after that (adaptive mode), in microseconds.
    pub sleep_us: u32,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            mode: IdleMode::Adaptive,
            spin_polls: 512,
            sleep_us: 50,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdleMode {
    /// Poll continuously: lowest latency, one full core per worker.
    Busy,
    /// Poll under load; after `spin_polls` empty polls sleep `sleep_us`
    /// between polls until traffic returns.
    Adaptive,
}

/// Packet buffer pools: one per (port, queue), on the worker's NUMA socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolConfig {
    /// Buffers per RX queue's pool. Best as 2^n - 1.
    pub mbufs_per_queue: u32,
    /// Per-lcore cache (0..=512).
    pub cache_size: u32,
    /// Bytes per buffer including DPDK's 128-byte headroom.
    pub data_room: u16,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            mbufs_per_queue: 8191,
            cache_size: 256,
            data_room: 2176,
        }
    }
}

/// One Ethernet port and the IPv4 interface on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Name used in stats and logs.
    pub name: String,
    /// The DPDK device: a virtual device string as for `--vdev`
    /// (`net_af_xdp0,iface=eth1`, `net_af_packet0,iface=eth1`,
    /// `net_memif0,role=server,socket=/run/memif.sock`, `net_tap0,iface=tap0`)
    /// or a PCI address bound to vfio-pci (`0000:01:00.0`).
    pub device: String,
    /// This interface's IPv4 address and prefix, `10.0.0.1/24`. The prefix is
    /// the connected route.
    pub address: String,
    /// Next hop for the default route (must be inside `address`'s subnet). At
    /// most one port may have one.
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    #[serde(default = "default_desc")]
    pub rx_descriptors: u16,
    #[serde(default = "default_desc")]
    pub tx_descriptors: u16,
    /// How RX checksums are checked: `verify` always in software; `offload`
    /// trusts the device's verdict where it gives one and verifies otherwise.
    #[serde(default)]
    pub rx_checksum: RxChecksumPolicy,
    /// Receive frames for any destination MAC.
    #[serde(default)]
    pub promiscuous: bool,
    /// With several workers, how each TCP connection's packets reach the core
    /// that owns it: `auto` uses the device's RSS when it has it and software
    /// steering otherwise; `software` always steers in software (for devices
    /// that report RSS but do not really spread flows, such as net_tap here).
    #[serde(default)]
    pub steering: SteeringMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SteeringMode {
    #[default]
    Auto,
    Software,
}

fn default_mtu() -> u16 {
    1500
}
fn default_desc() -> u16 {
    1024
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RxChecksumPolicy {
    Verify,
    #[default]
    Offload,
}

/// An IPv4 address with a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Net {
    /// Parse `a.b.c.d/len`. The error says why, in words for a config user.
    pub fn parse(s: &str) -> Result<Ipv4Net, AddrError> {
        let (a, p) = s.split_once('/').ok_or(AddrError::NoPrefix)?;
        let addr = parse_ipv4(a)?;
        let prefix_len: u8 = p.parse().map_err(|_| AddrError::BadPrefix(p.to_owned()))?;
        if prefix_len > 32 {
            return Err(AddrError::PrefixTooLong(prefix_len));
        }
        Ok(Ipv4Net { addr, prefix_len })
    }

    pub fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len)
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
}

/// Why an address in the configuration does not parse, in words for a
/// config user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("IPv6 is not supported yet; use an IPv4 address")]
    Ipv6,
    #[error("{0:?} is not an IPv4 address")]
    NotIpv4(String),
    #[error("expected IPv4 address with prefix length, like 10.0.0.1/24")]
    NoPrefix,
    #[error("prefix length {0:?} is not a number 0-32")]
    BadPrefix(String),
    #[error("prefix length {0} is larger than 32")]
    PrefixTooLong(u8),
    #[error("expected IPv4 address and port, like 10.0.0.1:8080")]
    NoPort,
    #[error("port {0:?} is not a number 1-65535")]
    BadPort(String),
    #[error("port 0 is not a port to connect or listen on")]
    PortZero,
}

/// Parse a bare IPv4 address, saying plainly when it is IPv6.
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, AddrError> {
    if s.contains(':') && s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(AddrError::Ipv6);
    }
    s.parse().map_err(|_| AddrError::NotIpv4(s.to_owned()))
}

/// IPv4 behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpConfig {
    /// TTL of packets we originate.
    pub ttl: u8,
}

impl Default for IpConfig {
    fn default() -> Self {
        IpConfig { ttl: 64 }
    }
}

/// Neighbour resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArpConfig {
    /// How long a learned entry is used before it must be confirmed again.
    pub entry_ttl_ms: u64,
    /// Gap between ARP requests for one unresolved neighbour.
    pub request_interval_ms: u64,
    /// Requests sent before giving up and dropping what waits for the neighbour.
    pub max_requests: u32,
    /// Packets held per unresolved neighbour; more are dropped and counted.
    pub max_pending_per_neighbor: u32,
    /// Packets held for all unresolved neighbours of one core.
    pub max_pending_total: u32,
    /// Entries per core; when full, new neighbours are not cached (counted).
    pub max_entries: u32,
}

impl Default for ArpConfig {
    fn default() -> Self {
        ArpConfig {
            entry_ttl_ms: 60_000,
            request_interval_ms: 1_000,
            max_requests: 3,
            max_pending_per_neighbor: 8,
            max_pending_total: 1024,
            max_entries: 4096,
        }
    }
}

/// The local admin socket and the HTTP admin server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The HTTP admin server (Envoy's admin paths: `/ready`, `/stats`,
    /// `/stats/prometheus`, `/config_dump`, `/clusters`, ...) on a kernel
    /// TCP socket, served by a thread of its own. Default `127.0.0.1:15000`
    /// (Envoy's port under Istio); `null` turns it off. Anyone who can
    /// reach it can stop the data plane (`POST /quitquitquit`), so an
    /// address other than loopback needs `allow_non_loopback: true`.
    pub address: Option<SocketAddr>,
    /// Accept an `address` that is not a loopback address.
    pub allow_non_loopback: bool,
    /// Unix socket path (created mode 0600; a stale socket is replaced).
    pub socket: PathBuf,
    /// Largest request accepted on the socket. A configuration update of
    /// 10 000 clusters and 100 000 endpoints is about 12 MiB of JSON.
    pub max_request_bytes: u64,
    /// Where the listeners and clusters in force are saved (as JSON, at
    /// most once a second and on exit) after each update. If the file
    /// exists at start, it replaces `listeners` and `clusters` of this
    /// configuration, so a restart without the control agent serves what
    /// was last applied. Unset: nothing is saved.
    pub state_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket: PathBuf::from("/run/dataplane/admin.sock"),
            address: Some(SocketAddr::from(([127, 0, 0, 1], 15000))),
            allow_non_loopback: false,
            max_request_bytes: 256 << 20,
            state_file: None,
        }
    }
}

impl Config {
    /// Parse YAML and validate. Syntax and type errors come from the parser
    /// with their location; semantic errors are all collected.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigErrors> {
        let cfg: Config = serde_saphyr::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: "(file)".into(),
                value: String::new(),
                reason: e.to_string(),
            }])
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The embedded default.
    pub fn default_config() -> Config {
        Config::from_yaml(DEFAULT_YAML).expect("embedded default config is valid")
    }
}
