//! `overload_manager`: what each worker core does when its resources run
//! short, in the shape of Envoy's bootstrap `overload_manager` (actions
//! with threshold triggers), over the resources a core of this data plane
//! can run out of.

use serde::{Deserialize, Serialize};

/// `overload_manager`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadManagerConfig {
    /// How often each worker compares its resources with the triggers
    /// (Envoy's `refresh_interval`, 1 s there; a core fills its buffers in
    /// milliseconds, and the check costs well under a microsecond).
    pub refresh_interval_ms: u64,
    pub actions: Vec<OverloadActionConfig>,
}

impl Default for OverloadManagerConfig {
    fn default() -> Self {
        OverloadManagerConfig {
            refresh_interval_ms: 10,
            actions: Vec::new(),
        }
    }
}

/// One action and what sets it off: any of its triggers (Envoy's `actions[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadActionConfig {
    /// `envoy.overload_actions.stop_accepting_connections` or
    /// `envoy.overload_actions.disable_http_keepalive`.
    pub name: String,
    pub triggers: Vec<OverloadTrigger>,
}

/// A resource and the pressure (0-1) at or above which the action is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadTrigger {
    /// `mbufs`, `buffered_bytes` or `connections` (see [`Resource`]).
    pub name: String,
    /// Envoy's `threshold`; its `scaled` triggers are refused (no action
    /// here scales).
    pub threshold: Option<Threshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub value: f64,
}

/// What a worker core can run out of; its pressure is a fraction of the
/// limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Buffers in use in the core's mempools (the fullest of them) over
    /// `mempool.mbufs_per_queue`. The RX rings' own buffers count: an idle
    /// core already holds `ports[].rx_descriptors` of each pool.
    Mbufs,
    /// Payload bytes the core's connections hold over
    /// `tcp.max_buffered_bytes`.
    BufferedBytes,
    /// Connections in the core's table over `tcp.max_connections`.
    Connections,
}

impl Resource {
    pub const ALL: [Resource; 3] = [
        Resource::Mbufs,
        Resource::BufferedBytes,
        Resource::Connections,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Resource::Mbufs => "mbufs",
            Resource::BufferedBytes => "buffered_bytes",
            Resource::Connections => "connections",
        }
    }

    pub fn from_name(n: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == n)
    }
}

/// What the overload manager can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverloadAction {
    /// New connections to every listener are refused with a RST at the
    /// SYN (and at a SYN cookie's ACK). Envoy stops calling accept() and
    /// lets the kernel's queue fill; with no kernel queue here, a
    /// handshake completed and left waiting would hold the very table slot
    /// and buffers that ran short.
    StopAcceptingConnections,
    /// HTTP/1.1 client connections between requests are closed at once,
    /// and responses in progress say `connection: close` (Envoy's action
    /// does the latter only; idle connections are what a core can shed
    /// without touching a request).
    DisableHttpKeepalive,
}

impl OverloadAction {
    pub const ALL: [OverloadAction; 2] = [
        OverloadAction::StopAcceptingConnections,
        OverloadAction::DisableHttpKeepalive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OverloadAction::StopAcceptingConnections => {
                "envoy.overload_actions.stop_accepting_connections"
            }
            OverloadAction::DisableHttpKeepalive => "envoy.overload_actions.disable_http_keepalive",
        }
    }

    pub fn from_name(n: &str) -> Option<OverloadAction> {
        OverloadAction::ALL.into_iter().find(|a| a.name() == n)
    }
}

impl OverloadManagerConfig {
    /// Every (action, resource, threshold) of a valid configuration.
    pub fn triggers(&self) -> Vec<(OverloadAction, Resource, f64)> {
        let mut v = Vec::new();
        for a in &self.actions {
            let Some(action) = OverloadAction::from_name(&a.name) else {
                continue;
            };
            for t in &a.triggers {
                if let (Some(r), Some(th)) = (Resource::from_name(&t.name), t.threshold) {
                    v.push((action, r, th.value));
                }
            }
        }
        v
    }
}
