//! Proxy logic on one worker core's TCP engine, with no DPDK: it builds and
//! tests on simulated time, like the engine under it.
//!
//! Layers:
//! - **app** ([`App`], [`Apps`]): what the worker loop drives. Each app is a
//!   sans-IO user of the core's `netstack::tcp::Engine`: it takes the
//!   engine's events and `now` and acts through the engine. The worker holds
//!   a list of them; HTTP will be one more.
//! - **upstream** ([`Upstreams`]): what every app shares on the core:
//!   clusters, load balancing, circuit breakers, outlier detection, connect
//!   deadlines, behind `acquire` / `connected` / `release`.
//! - **apps**: [`TcpProxy`], the L4 splice; [`Services`], the test services
//!   (echo, discard, source).
//! - **live** ([`Live`], [`Update`], [`Mailbox`]): the configuration in
//!   force on the control thread, and the immutable updates every worker
//!   applies between batches.
//! - **metrics** ([`Counters`]): per-core counters of listeners, clusters
//!   and endpoints, each named once.
//!
//! Invariants:
//! - Nothing here reads a clock or does I/O: `now` comes in, and the engine
//!   is the only way out.
//! - Nothing is shared between cores but the counters (one writer each) and
//!   the circuit breakers' gauges (atomics); configuration arrives as
//!   `Arc`ed snapshots.
//! - Network input never panics here: every event names a connection that
//!   is looked up, and one that is not found is handed back or ignored.
#![forbid(unsafe_code)]

pub mod app;
pub mod http;
pub mod listeners;
pub mod live;
pub mod metrics;
pub mod overload;
pub mod services;
mod slab;
pub mod tcp_proxy;
pub mod upstream;

#[cfg(test)]
mod sim;

use std::net::Ipv4Addr;
use std::time::Duration;

use dataplane_config::Config;
use netstack::tcp::{Congestion, EngineConfig, Keepalive, TcpConfig};

pub use app::{App, Apps, Cx};
pub use live::{Live, Mailbox, Update};
pub use metrics::{ClusterGauges, Counters, ProxyStats};
pub use services::{ServiceStats, Services};
pub use tcp_proxy::TcpProxy;
pub use upstream::{ConnectError, Outcome, Pick, Upstream, Upstreams};

/// The TCP engine's settings from the configuration (`tcp:` and the ports'
/// MTUs), with `secret` for ISNs and the connection table (RFC 6528) and
/// the RSS `steering` of each port address.
pub fn engine_config(
    cfg: &Config,
    secret: [u8; 16],
    steering: Vec<(Ipv4Addr, netstack::rss::Steering)>,
) -> EngineConfig {
    let t = &cfg.tcp;
    EngineConfig {
        tcp: TcpConfig {
            // What one segment can carry on the smallest port MTU (IPv4 and
            // TCP headers without options: options come out of it, RFC 6691).
            mss: cfg
                .ports
                .iter()
                .map(|p| p.mtu)
                .min()
                .unwrap_or(1500)
                .saturating_sub(40)
                .max(536),
            min_rto: Duration::from_millis(t.min_rto_ms),
            time_wait: Duration::from_millis(t.time_wait_ms),
            recv_buffer: t.recv_buffer,
            send_buffer: t.send_buffer,
            delayed_ack: Duration::from_millis(t.delayed_ack_ms),
            keepalive: ms_or_off(t.keepalive_idle_ms).map(|idle| Keepalive {
                idle,
                interval: Duration::from_millis(t.keepalive_interval_ms),
                probes: t.keepalive_probes,
            }),
            user_timeout: ms_or_off(t.user_timeout_ms),
            idle_timeout: ms_or_off(t.idle_timeout_ms),
            timestamps: t.timestamps,
            congestion: match t.congestion {
                dataplane_config::CongestionControl::Reno => Congestion::Reno,
                dataplane_config::CongestionControl::Cubic => Congestion::Cubic,
            },
            ..TcpConfig::default()
        },
        max_connections: t.max_connections as usize,
        max_buffered: usize::try_from(t.max_buffered_bytes).unwrap_or(usize::MAX),
        secret,
        steering,
        ..EngineConfig::default()
    }
}

/// A duration in milliseconds where 0 means "off".
fn ms_or_off(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}
