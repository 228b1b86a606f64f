//! The overload manager of one worker core (Envoy's `overload_manager`):
//! on its refresh interval it measures the core's pressures (mbufs,
//! buffered bytes, connection table), turns each configured action on
//! while any of its triggers is at or over its threshold, and off when none
//! is. Sans-IO: the worker supplies the mbuf pressure (the pools are
//! DPDK's), [`crate::Apps`] the rest and carries the actions out.

use std::time::Duration;

use dataplane_config::overload::{OverloadAction, OverloadManagerConfig, Resource};
use netstack::{Instant, counters};

counters! {
    /// What one core's overload manager measured and did.
    pub struct OverloadCounters {
        /// 1 while new connections are refused (gauge).
        stop_accepting_connections_active,
        /// 1 while HTTP keep-alive is disabled (gauge).
        disable_http_keepalive_active,
        /// Times each action went on.
        stop_accepting_connections_activations,
        disable_http_keepalive_activations,
        /// Pressures as last measured, in percent of the limit (gauges).
        mbufs_pressure,
        buffered_bytes_pressure,
        connections_pressure,
        /// HTTP client connections closed between requests by
        /// disable_http_keepalive.
        idle_connections_shed,
        /// HTTP client connections told `connection: close` on their
        /// response in progress (or their first) by disable_http_keepalive.
        keepalive_disabled,
        /// Idle pooled upstream connections closed by disable_http_keepalive.
        upstream_idle_closed,
    }
}

impl OverloadCounters {
    /// Action `a`'s on/off gauge.
    pub fn active(&self, a: OverloadAction) -> &netstack::Counter {
        match a {
            OverloadAction::StopAcceptingConnections => &self.stop_accepting_connections_active,
            OverloadAction::DisableHttpKeepalive => &self.disable_http_keepalive_active,
        }
    }

    fn activations(&self, a: OverloadAction) -> &netstack::Counter {
        match a {
            OverloadAction::StopAcceptingConnections => {
                &self.stop_accepting_connections_activations
            }
            OverloadAction::DisableHttpKeepalive => &self.disable_http_keepalive_activations,
        }
    }

    /// Resource `r`'s pressure gauge (percent).
    pub fn pressure(&self, r: Resource) -> &netstack::Counter {
        match r {
            Resource::Mbufs => &self.mbufs_pressure,
            Resource::BufferedBytes => &self.buffered_bytes_pressure,
            Resource::Connections => &self.connections_pressure,
        }
    }
}

/// A core's pressures, each a fraction of its limit (may pass 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressures {
    pub mbufs: f64,
    pub buffered_bytes: f64,
    pub connections: f64,
}

impl Pressures {
    fn of(&self, r: Resource) -> f64 {
        match r {
            Resource::Mbufs => self.mbufs,
            Resource::BufferedBytes => self.buffered_bytes,
            Resource::Connections => self.connections,
        }
    }
}

#[derive(Debug)]
pub struct Overload {
    triggers: Vec<(OverloadAction, Resource, f64)>,
    refresh: Duration,
    next: Instant,
    active: Vec<OverloadAction>,
}

impl Overload {
    pub fn new(cfg: &OverloadManagerConfig) -> Overload {
        Overload {
            triggers: cfg.triggers(),
            refresh: Duration::from_millis(cfg.refresh_interval_ms.max(1)),
            next: Instant::ZERO,
            active: Vec::new(),
        }
    }

    /// Whether any action is configured.
    pub fn enabled(&self) -> bool {
        !self.triggers.is_empty()
    }

    /// Whether the pressures should be measured now.
    pub fn due(&self, now: Instant) -> bool {
        self.enabled() && now >= self.next
    }

    pub fn is_active(&self, a: OverloadAction) -> bool {
        self.active.contains(&a)
    }

    /// Compare `p` with the triggers; the actions that went on (`true`) or
    /// off (`false`), in [`OverloadAction::ALL`]'s order.
    pub fn update(
        &mut self,
        now: Instant,
        p: &Pressures,
        stats: &OverloadCounters,
    ) -> Vec<(OverloadAction, bool)> {
        self.next = now + self.refresh;
        for r in Resource::ALL {
            stats
                .pressure(r)
                .set((p.of(r) * 100.0).clamp(0.0, 1e9) as u64);
        }
        let mut changes = Vec::new();
        for a in OverloadAction::ALL {
            let on = self
                .triggers
                .iter()
                .any(|&(ta, r, th)| ta == a && p.of(r) >= th);
            if on == self.is_active(a) {
                continue;
            }
            if on {
                self.active.push(a);
                stats.activations(a).inc();
            } else {
                self.active.retain(|&x| x != a);
            }
            stats.active(a).set(u64::from(on));
            changes.push((a, on));
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane_config::overload::{OverloadActionConfig, OverloadTrigger, Threshold};

    fn cfg() -> OverloadManagerConfig {
        let t = |name: &str, value| OverloadTrigger {
            name: name.into(),
            threshold: Some(Threshold { value }),
            scaled: None,
        };
        OverloadManagerConfig {
            refresh_interval_ms: 10,
            actions: vec![
                OverloadActionConfig {
                    name: OverloadAction::StopAcceptingConnections.name().into(),
                    triggers: vec![t("mbufs", 0.8), t("connections", 0.9)],
                },
                OverloadActionConfig {
                    name: OverloadAction::DisableHttpKeepalive.name().into(),
                    triggers: vec![t("mbufs", 0.95)],
                },
            ],
        }
    }

    #[test]
    fn actions_follow_their_triggers_in_order_of_pressure() {
        let mut o = Overload::new(&cfg());
        let s = OverloadCounters::default();
        let t0 = Instant::from_millis(1);
        assert!(o.due(t0));
        let p = |mbufs, connections| Pressures {
            mbufs,
            connections,
            buffered_bytes: 0.0,
        };
        assert!(o.update(t0, &p(0.5, 0.5), &s).is_empty());
        assert!(!o.due(t0 + Duration::from_millis(9)));
        assert!(o.due(t0 + Duration::from_millis(10)));
        // Either trigger of the first action sets it off.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(
            o.update(t1, &p(0.5, 0.9), &s),
            vec![(OverloadAction::StopAcceptingConnections, true)]
        );
        assert_eq!(s.connections_pressure.get(), 90);
        // Higher: the second too; nothing repeats while they stay on.
        assert_eq!(
            o.update(t1, &p(0.96, 0.9), &s),
            vec![(OverloadAction::DisableHttpKeepalive, true)]
        );
        assert!(o.update(t1, &p(0.97, 0.95), &s).is_empty());
        assert_eq!(s.stop_accepting_connections_active.get(), 1);
        // Back under: both off, counted once each.
        assert_eq!(
            o.update(t1, &p(0.1, 0.1), &s),
            vec![
                (OverloadAction::StopAcceptingConnections, false),
                (OverloadAction::DisableHttpKeepalive, false)
            ]
        );
        assert_eq!(s.stop_accepting_connections_active.get(), 0);
        assert_eq!(s.stop_accepting_connections_activations.get(), 1);
        assert_eq!(s.disable_http_keepalive_activations.get(), 1);
    }

    #[test]
    fn nothing_configured_is_never_due() {
        let o = Overload::new(&OverloadManagerConfig::default());
        assert!(!o.enabled());
        assert!(!o.due(Instant::from_millis(100)));
    }
}
