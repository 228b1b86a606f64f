//! The proxy's counters: per listener, cluster and endpoint, one slot per
//! worker core, each declared once (`netstack::counters!`) with the levels
//! it means something at.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use netstack::{Counter, counters};

/// Scopes of a [`Counters`] field: the levels it is shown at.
pub const LISTENER: u32 = 1;
pub const CLUSTER: u32 = 2;
pub const ENDPOINT: u32 = 4;
/// A worker core's share of the proxying (summed over its listeners).
pub const CORE: u32 = 8;
const UPSTREAM: u32 = CLUSTER | ENDPOINT;
const ALL: u32 = LISTENER | CLUSTER | ENDPOINT;

counters! {
    /// Counters of one listener, cluster or endpoint on one core. Not every
    /// field means something at every level: each says where it does.
    pub struct Counters {
        /// Connections: accepted (listener) or opened upstream (cluster,
        /// endpoint). Active = total - closed (`cx_active` in the stats).
        cx_total: ALL | CORE,
        /// Of those, ended (shown only as part of `cx_active`).
        cx_closed: 0,
        /// Upstream handshakes not completed yet (gauge: opened - settled).
        cx_connecting: UPSTREAM,
        cx_connected: UPSTREAM,
        /// Client to upstream.
        bytes_up: ALL | CORE,
        /// Upstream to client.
        bytes_down: ALL | CORE,
        /// Upstream handshakes refused or reset.
        connect_failures: UPSTREAM,
        connect_timeouts: UPSTREAM,
        /// Client connections refused by a circuit breaker.
        overflows: LISTENER | CLUSTER,
        /// Client connections refused for want of an endpoint or a way to
        /// reach it (empty cluster, no route, connection table full).
        no_upstream: LISTENER | CLUSTER,
        /// Client connections closed before reaching an upstream (any of the
        /// reasons above, or draining).
        refused: LISTENER,
        /// Sessions ended by a reset from either side or a retransmission
        /// give-up.
        resets: ALL,
        idle_timeouts: ALL,
        /// Times an endpoint was ejected by outlier detection.
        ejections: UPSTREAM,
        /// HTTP requests: received (listener) or sent (cluster, endpoint).
        rq_total: ALL | CORE,
        /// HTTP responses by class: sent to clients (listener) or received
        /// from upstreams (cluster, endpoint).
        rq_1xx: ALL,
        rq_2xx: ALL,
        rq_3xx: ALL,
        rq_4xx: ALL,
        rq_5xx: ALL,
        /// HTTP requests refused as malformed (400, 431, 501, 505).
        rq_malformed: LISTENER,
        /// HTTP requests no route took (404, response flag NR).
        rq_no_route: LISTENER,
        /// HTTP requests answered by a route's redirect or direct response.
        rq_direct: LISTENER,
        /// HTTP requests past their route's timeout (504, flag UT).
        rq_timeouts: LISTENER | CLUSTER,
        /// HTTP requests sent on a pooled upstream connection.
        rq_reused: UPSTREAM,
        /// HTTP requests sent again on a new connection because the pooled
        /// one they went out on had been closed by the upstream.
        rq_retried_stale: UPSTREAM,
        /// HTTP requests aborted by the fault filter.
        rq_fault_aborts: LISTENER,
        /// HTTP requests delayed by the fault filter.
        rq_fault_delays: LISTENER,
    }
}

impl Counters {
    /// The counters that mean something at `scope` (one of [`LISTENER`],
    /// [`CLUSTER`], [`ENDPOINT`], [`CORE`]) by name, with `cx_active`
    /// derived.
    pub fn for_each_at(&self, scope: u32, mut f: impl FnMut(&'static str, u64)) {
        // Closed before total: read the other way round, a connection that
        // ends in between would make `cx_active` wrap.
        let closed = self.cx_closed.get();
        let total = self.cx_total.get();
        self.for_each_in(scope, |k, v| {
            f(k, v);
            if k == "cx_total" {
                f("cx_active", total.saturating_sub(closed));
            }
        });
    }

    /// The names `for_each_at(scope, ..)` yields, in its order.
    pub fn names_at(scope: u32) -> Vec<&'static str> {
        let mut v = Vec::new();
        Counters::default().for_each_at(scope, |k, _| v.push(k));
        v
    }

    /// Subtract one from a gauge kept as a counter.
    #[inline]
    pub(crate) fn dec(c: &Counter) {
        c.set(c.get().wrapping_sub(1));
    }
}

/// What the control thread reads of one core's proxy apps (the counters of
/// listeners, clusters and endpoints live with them, in `live`).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Set once this core has stopped listening (draining).
    pub drained: AtomicBool,
    /// Sessions in progress (client side accepted, not yet ended).
    pub sessions: Counter,
}

/// A cluster's connections over all cores, for its circuit breakers.
#[derive(Debug, Default)]
pub struct ClusterGauges {
    /// Upstream connections open or opening.
    pub open: AtomicU32,
    /// Of those, still in their handshake.
    pub pending: AtomicU32,
    /// HTTP requests in progress.
    pub requests: AtomicU32,
}

impl ClusterGauges {
    /// Take one unit of `g` if that keeps it within `max`.
    pub(crate) fn take(g: &AtomicU32, max: u32) -> bool {
        g.fetch_update(Relaxed, Relaxed, |v| (v < max).then_some(v + 1))
            .is_ok()
    }
}

/// One value per worker core, each on its own cache lines: a core writes
/// only its own, the control thread reads them all.
#[derive(Debug)]
pub struct PerCore<T>(Box<[Padded<T>]>);

#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(T);

impl<T: Default> PerCore<T> {
    pub fn new(cores: usize) -> PerCore<T> {
        PerCore((0..cores).map(|_| Padded(T::default())).collect())
    }
}

impl<T> PerCore<T> {
    /// Core `i`'s value (the last one for an index past the end, which a
    /// correct caller never passes).
    #[inline]
    pub fn get(&self, i: usize) -> &T {
        &self.0[i.min(self.0.len() - 1)].0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|p| &p.0)
    }
}

pub type CoreCounters = Arc<PerCore<Counters>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_shows_its_counters_and_cx_active() {
        let c = Counters::default();
        c.cx_total.add(3);
        c.cx_closed.inc();
        let names = |scope| {
            let mut v = Vec::new();
            c.for_each_at(scope, |k, x| v.push((k, x)));
            v
        };
        let l = names(LISTENER);
        assert!(l.contains(&("cx_active", 2)));
        assert!(l.iter().any(|(k, _)| *k == "refused"));
        assert!(!l.iter().any(|(k, _)| *k == "cx_connecting"));
        let e = names(ENDPOINT);
        assert!(e.iter().any(|(k, _)| *k == "ejections"));
        assert!(!e.iter().any(|(k, _)| *k == "overflows"));
        assert_eq!(Counters::NAMES.len(), Counters::SCOPES.len());
    }
}
