//! One core's view of a cluster: which endpoint a new connection goes to,
//! and passive health (outlier ejection). No I/O, no clock: `now` comes in.
//!
//! Each worker core keeps its own copy, as Envoy's workers keep their own
//! load balancers: counts of active connections and connect failures are
//! the core's own, so nothing here is shared or locked.
//!
//! Endpoints keep their index for as long as a connection uses them: one
//! that leaves the cluster is only marked `removed` (no new connections)
//! until its last connection ends, and its slot is reused after that.

use std::net::{Ipv4Addr, SocketAddrV4};

use dataplane_config::{LbPolicy, OutlierDetection};
use hashbrown::HashMap;
use netstack::Instant;

use crate::live::ClusterLive;
use crate::metrics::CoreCounters;

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddrV4,
    pub weight: u32,
    /// The address of ours its connections leave from (`None`: no route).
    pub source: Option<Ipv4Addr>,
    pub stats: CoreCounters,
    /// Connections to it open or opening on this core.
    pub active: u32,
    /// No longer in the cluster: kept only for its connections.
    pub removed: bool,
    /// Refused or timed-out connects in a row.
    consecutive_failures: u32,
    /// Times it has been ejected (the ejection time grows with it).
    ejections: u32,
    ejected_until: Option<Instant>,
    /// Smooth weighted round robin's running weight.
    current: i64,
}

impl Endpoint {
    pub fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }
}

/// What `connect_failed` did to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Kept,
    Ejected,
    /// It reached the failure threshold, but `max_ejection_percent` of the
    /// cluster is already out.
    EjectionRefused,
}

#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    outlier: OutlierDetection,
    endpoints: Vec<Endpoint>,
    /// Endpoints in the cluster (not `removed`).
    live: usize,
    rng: u64,
}

impl Balancer {
    pub fn new(c: &ClusterLive, seed: u64) -> Balancer {
        let mut b = Balancer {
            policy: c.cfg.lb_policy,
            outlier: c.cfg.outlier_detection.clone(),
            endpoints: Vec::new(),
            live: 0,
            rng: seed | 1,
        };
        b.update(c);
        b
    }

    /// Take `c`'s policy and endpoints. An endpoint that stays (same
    /// address) keeps its connection count and health; one that goes is
    /// marked removed. Costs in proportion to the cluster's size.
    pub fn update(&mut self, c: &ClusterLive) {
        self.policy = c.cfg.lb_policy;
        self.outlier = c.cfg.outlier_detection.clone();
        let mut old: HashMap<SocketAddrV4, usize> = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.removed)
            .map(|(i, e)| (e.addr, i))
            .collect();
        let mut free = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.removed && e.active == 0)
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
            .into_iter();
        for ep in &c.endpoints {
            if let Some(i) = old.remove(&ep.addr) {
                let e = &mut self.endpoints[i];
                e.weight = ep.weight.max(1);
                e.source = ep.source;
                e.stats = ep.stats.clone();
                continue;
            }
            let e = Endpoint {
                addr: ep.addr,
                weight: ep.weight.max(1),
                source: ep.source,
                stats: ep.stats.clone(),
                active: 0,
                removed: false,
                consecutive_failures: 0,
                ejections: 0,
                ejected_until: None,
                current: 0,
            };
            match free.next() {
                Some(i) => self.endpoints[i] = e,
                None => self.endpoints.push(e),
            }
        }
        for (_, i) in old {
            self.endpoints[i].removed = true;
        }
        // Trailing slots nobody uses can go.
        while self
            .endpoints
            .last()
            .is_some_and(|e| e.removed && e.active == 0)
        {
            self.endpoints.pop();
        }
        self.live = self.endpoints.iter().filter(|e| !e.removed).count();
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: cheap, and good enough to spread connections.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The endpoint for a new connection, by the cluster's policy among the
    /// endpoints not ejected; if every endpoint is ejected, among all of
    /// them (serving with suspect endpoints beats refusing everything).
    /// `None` only for an empty cluster. Counts the connection as active.
    pub fn pick(&mut self, now: Instant) -> Option<usize> {
        if self.live == 0 {
            return None;
        }
        let any_healthy = self.endpoints.iter().any(|e| !e.removed && !e.ejected(now));
        let usable = |e: &Endpoint| !e.removed && (!any_healthy || !e.ejected(now));
        let i = match self.policy {
            LbPolicy::RoundRobin => {
                // Smooth weighted round robin (as nginx): every usable
                // endpoint gains its weight, the richest is picked and pays
                // the total. Interleaves instead of sending bursts.
                let mut total = 0i64;
                let mut best: Option<(usize, i64)> = None;
                for (i, e) in self.endpoints.iter_mut().enumerate() {
                    if !usable(e) {
                        continue;
                    }
                    e.current += i64::from(e.weight);
                    total += i64::from(e.weight);
                    if best.is_none_or(|(_, c)| e.current > c) {
                        best = Some((i, e.current));
                    }
                }
                let (b, _) = best?;
                self.endpoints[b].current -= total;
                b
            }
            LbPolicy::Random => {
                let total: u64 = self
                    .endpoints
                    .iter()
                    .filter(|e| usable(e))
                    .map(|e| u64::from(e.weight))
                    .sum();
                let mut r = self.next_random() % total.max(1);
                let mut pick = 0;
                for (i, e) in self.endpoints.iter().enumerate() {
                    if !usable(e) {
                        continue;
                    }
                    pick = i;
                    if r < u64::from(e.weight) {
                        break;
                    }
                    r -= u64::from(e.weight);
                }
                pick
            }
            LbPolicy::LeastConnections => {
                // Power of two choices over the usable endpoints, by active
                // connections per unit of weight.
                let n = self.endpoints.iter().filter(|e| usable(e)).count() as u64;
                let (ka, kb) = (self.next_random() % n, self.next_random() % n);
                let nth_usable = |k: u64| {
                    self.endpoints
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| usable(e))
                        .nth(k as usize)
                        .map_or(0, |(i, _)| i)
                };
                let (a, b) = (nth_usable(ka), nth_usable(kb));
                let load = |i: usize| {
                    let e = &self.endpoints[i];
                    u64::from(e.active) * 128 / u64::from(e.weight)
                };
                if load(b) < load(a) { b } else { a }
            }
        };
        self.endpoints[i].active += 1;
        Some(i)
    }

    /// A connection to endpoint `i` has ended (whatever the reason).
    pub fn release(&mut self, i: usize) {
        if let Some(e) = self.endpoints.get_mut(i) {
            e.active = e.active.saturating_sub(1);
        }
    }

    /// The upstream handshake to `i` completed.
    pub fn connect_succeeded(&mut self, i: usize) {
        if let Some(e) = self.endpoints.get_mut(i) {
            e.consecutive_failures = 0;
        }
    }

    /// The upstream handshake to `i` was refused or timed out.
    pub fn connect_failed(&mut self, i: usize, now: Instant) -> Verdict {
        let total = self.live;
        let out = self
            .endpoints
            .iter()
            .filter(|e| !e.removed && e.ejected(now))
            .count();
        let Some(e) = self.endpoints.get_mut(i) else {
            return Verdict::Kept;
        };
        e.consecutive_failures += 1;
        if e.consecutive_failures < self.outlier.consecutive_failures || e.ejected(now) {
            return Verdict::Kept;
        }
        // One more ejected must stay within the share allowed; as in Envoy,
        // one endpoint may always be ejected whatever the share.
        if out > 0 && (out + 1) * 100 > total * self.outlier.max_ejection_percent as usize {
            return Verdict::EjectionRefused;
        }
        e.ejections += 1;
        e.consecutive_failures = 0;
        let ms = self.outlier.base_ejection_ms * u64::from(e.ejections);
        e.ejected_until = Some(now + std::time::Duration::from_millis(ms));
        Verdict::Ejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::EndpointLive;
    use crate::metrics::PerCore;
    use dataplane_config::{ClusterConfig, ClusterLimits, EndpointConfig};
    use std::sync::Arc;

    fn live(c: ClusterConfig) -> ClusterLive {
        ClusterLive {
            endpoints: c
                .endpoints
                .iter()
                .map(|e| EndpointLive {
                    addr: e.address.parse().unwrap(),
                    weight: e.weight,
                    source: None,
                    stats: Arc::new(PerCore::new(1)),
                })
                .collect(),
            cfg: c,
            gauges: Default::default(),
            stats: Arc::new(PerCore::new(1)),
            histograms: Arc::new(PerCore::new(1)),
        }
    }

    fn cluster(policy: LbPolicy, weights: &[u32], max_ejection_percent: u32) -> ClusterLive {
        live(ClusterConfig {
            name: "c".into(),
            endpoints: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| EndpointConfig {
                    address: format!("10.0.0.{}:80", i + 1),
                    weight: w,
                })
                .collect(),
            lb_policy: policy,
            connect_timeout_ms: 1000,
            idle_timeout_ms: 0,
            limits: ClusterLimits::default(),
            outlier_detection: OutlierDetection {
                consecutive_failures: 3,
                base_ejection_ms: 1000,
                max_ejection_percent,
            },
        })
    }

    fn counts(b: &mut Balancer, n: usize, now: Instant) -> Vec<usize> {
        let mut c = vec![0; b.endpoints().len()];
        for _ in 0..n {
            let i = b.pick(now).unwrap();
            c[i] += 1;
            b.release(i);
        }
        c
    }

    #[test]
    fn weighted_round_robin_is_exact_and_interleaved() {
        let now = Instant::from_millis(1);
        let mut b = Balancer::new(&cluster(LbPolicy::RoundRobin, &[5, 1, 1], 50), 1);
        let seq: Vec<usize> = (0..7)
            .map(|_| {
                let i = b.pick(now).unwrap();
                b.release(i);
                i
            })
            .collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0], "smooth: no run of five");
        assert_eq!(counts(&mut b, 700, now), [500, 100, 100]);
    }

    #[test]
    fn weighted_random_follows_the_weights() {
        let now = Instant::from_millis(1);
        let mut b = Balancer::new(&cluster(LbPolicy::Random, &[3, 1], 50), 7);
        let c = counts(&mut b, 40_000, now);
        assert!((29_000..31_000).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn least_connections_avoids_the_loaded_endpoint() {
        let now = Instant::from_millis(1);
        let mut b = Balancer::new(&cluster(LbPolicy::LeastConnections, &[1, 1], 50), 3);
        // Endpoint 0 holds 100 connections; new ones go to endpoint 1
        // whenever it is one of the two sampled.
        b.endpoints[0].active = 100;
        let mut to_one = 0;
        for _ in 0..1000 {
            let i = b.pick(now).unwrap();
            to_one += usize::from(i == 1);
            b.release(i);
        }
        assert!(to_one > 700, "{to_one} of 1000 went to the idle endpoint");
    }

    #[test]
    fn failures_eject_for_growing_times_within_the_share_allowed() {
        let mut now = Instant::from_millis(1);
        let mut b = Balancer::new(&cluster(LbPolicy::RoundRobin, &[1, 1, 1, 1], 50), 1);
        assert_eq!(b.connect_failed(0, now), Verdict::Kept);
        assert_eq!(b.connect_failed(0, now), Verdict::Kept);
        b.connect_succeeded(0); // a success resets the run
        for _ in 0..2 {
            assert_eq!(b.connect_failed(0, now), Verdict::Kept);
        }
        assert_eq!(b.connect_failed(0, now), Verdict::Ejected);
        assert!(
            counts(&mut b, 30, now)[0] == 0,
            "ejected: no new connections"
        );
        for _ in 0..2 {
            b.connect_failed(1, now);
        }
        assert_eq!(b.connect_failed(1, now), Verdict::Ejected, "2 of 4 = 50%");
        for _ in 0..2 {
            b.connect_failed(2, now);
        }
        assert_eq!(
            b.connect_failed(2, now),
            Verdict::EjectionRefused,
            "a third would pass 50%"
        );
        // Back after base × 1; ejected again, it stays out base × 2.
        now = now + std::time::Duration::from_millis(1000);
        assert!(!b.endpoints()[0].ejected(now));
        for _ in 0..3 {
            b.connect_failed(0, now);
        }
        assert!(b.endpoints()[0].ejected(now + std::time::Duration::from_millis(1500)));
        assert!(!b.endpoints()[0].ejected(now + std::time::Duration::from_millis(2000)));
    }

    #[test]
    fn one_endpoint_may_always_be_ejected() {
        let now = Instant::from_millis(1);
        // 10 % of two endpoints is less than one.
        let mut b = Balancer::new(&cluster(LbPolicy::RoundRobin, &[1, 1], 10), 1);
        for _ in 0..2 {
            b.connect_failed(1, now);
        }
        assert_eq!(b.connect_failed(1, now), Verdict::Ejected);
        assert_eq!(counts(&mut b, 10, now), [10, 0]);
        for _ in 0..2 {
            b.connect_failed(0, now);
        }
        assert_eq!(b.connect_failed(0, now), Verdict::EjectionRefused);
    }

    #[test]
    fn an_update_keeps_the_state_of_endpoints_that_stay() {
        let now = Instant::from_millis(1);
        let mut b = Balancer::new(&cluster(LbPolicy::RoundRobin, &[1, 1, 1], 100), 1);
        let held = b.pick(now).unwrap(); // endpoint 0, still connected
        assert_eq!(held, 0);
        for _ in 0..3 {
            b.connect_failed(2, now);
        }
        assert!(b.endpoints()[2].ejected(now));
        // 10.0.0.1 leaves, 10.0.0.3 stays (ejected), 10.0.0.9 arrives.
        let mut c = cluster(LbPolicy::RoundRobin, &[1, 1, 1], 100);
        c.endpoints[0].addr = "10.0.0.9:80".parse().unwrap();
        b.update(&c);
        let eps = b.endpoints();
        assert!(
            eps[0].removed && eps[0].active == 1,
            "kept for its connection"
        );
        assert!(eps[2].ejected(now), "health survives the update");
        assert_eq!(eps[3].addr.to_string(), "10.0.0.9:80");
        let picked = counts(&mut b, 20, now);
        assert_eq!(picked, [0, 10, 0, 10], "never the removed or the ejected");
        // Once its connection ends, the removed slot is reused.
        b.release(held);
        let mut c2 = cluster(LbPolicy::RoundRobin, &[1], 100);
        c2.endpoints[0].addr = "10.0.0.7:80".parse().unwrap();
        c2.endpoints.extend(c.endpoints.iter().cloned());
        b.update(&c2);
        assert_eq!(b.endpoints()[0].addr.to_string(), "10.0.0.7:80");
        assert_eq!(b.endpoints().len(), 4);
    }

    #[test]
    fn with_every_endpoint_ejected_all_are_used() {
        let now = Instant::from_millis(1);
        let mut b = Balancer::new(&cluster(LbPolicy::RoundRobin, &[1, 1], 100), 1);
        for i in 0..2 {
            for _ in 0..3 {
                b.connect_failed(i, now);
            }
        }
        assert!(b.endpoints().iter().all(|e| e.ejected(now)));
        assert_eq!(counts(&mut b, 10, now), [5, 5], "panic mode: all of them");
        b.update(&cluster(LbPolicy::RoundRobin, &[], 100));
        assert!(
            Balancer::new(&cluster(LbPolicy::Random, &[], 10), 1)
                .pick(now)
                .is_none()
        );
    }
}
