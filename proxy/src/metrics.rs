//! The proxy's counters: per listener, cluster and endpoint, one slot per
//! worker core, each declared once (`netstack::counters!`) with the levels
//! it means something at.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering::Relaxed};

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
#[derive(Debug)]
pub struct ProxyStats {
    /// Set once this core has stopped listening (draining).
    pub drained: AtomicBool,
    /// Sessions in progress (client side accepted, not yet ended).
    pub sessions: Counter,
    /// Sampled requests' spans, for the exporter thread (bounded: a full
    /// queue drops the span and counts it).
    pub spans: crossbeam_queue::ArrayQueue<crate::http::trace::Span>,
    pub spans_dropped: Counter,
    /// What this core's overload manager measured and did.
    pub overload: crate::overload::OverloadCounters,
}

impl ProxyStats {
    /// With room for `span_queue` spans.
    pub fn new(span_queue: usize) -> ProxyStats {
        ProxyStats {
            drained: AtomicBool::new(false),
            sessions: Counter::default(),
            spans: crossbeam_queue::ArrayQueue::new(span_queue.max(1)),
            spans_dropped: Counter::default(),
            overload: Default::default(),
        }
    }
}

impl Default for ProxyStats {
    /// Room for one span: without an exporter (`Apps::set_span_queue`)
    /// spans have nowhere to go, and a queue of thousands would only hold
    /// memory (the queue allocates its slots up front).
    fn default() -> Self {
        ProxyStats::new(1)
    }
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

/// Envoy's default histogram bucket bounds (`stats_config`'s
/// `histogram_bucket_settings` unset), in milliseconds.
pub const BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
const BUCKETS_US: [u64; 19] = {
    let mut b = [0u64; 19];
    let mut i = 0;
    while i < 19 {
        b[i] = (BUCKETS_MS[i] * 1000.0) as u64;
        i += 1;
    }
    b
};

/// Whether histograms and response-code tables record (`stats.histograms`;
/// set once at start, before the workers run).
pub static HISTOGRAMS: AtomicBool = AtomicBool::new(true);

/// A latency histogram one core writes (Envoy's bucket bounds, counts per
/// bucket, not cumulative) and the admin thread reads and merges: a
/// record is a short scan and two single-writer counter bumps, no lock
/// and no allocation.
#[derive(Debug, Default)]
pub struct Histogram {
    /// `counts[i]`: samples in `(BUCKETS_MS[i-1], BUCKETS_MS[i]]`; the last,
    /// samples above every bound.
    counts: [Counter; 20],
    sum_us: Counter,
}

impl Histogram {
    #[inline]
    pub fn record_us(&self, us: u64) {
        if !HISTOGRAMS.load(Relaxed) {
            return;
        }
        let i = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(19);
        self.counts[i].inc();
        self.sum_us.add(us);
    }

    /// Every core's samples in one histogram (off the hot path).
    pub fn merged<'a>(per_core: impl IntoIterator<Item = &'a Histogram>) -> Histogram {
        let h = Histogram::default();
        per_core.into_iter().for_each(|c| h.add_from(c));
        h
    }

    /// Add `other`'s samples to this one (merging cores off the hot path).
    pub fn add_from(&self, other: &Histogram) {
        for (a, b) in self.counts.iter().zip(&other.counts) {
            a.add(b.get());
        }
        self.sum_us.add(other.sum_us.get());
    }

    /// Samples per bucket (the last one above every bound).
    pub fn counts(&self) -> [u64; 20] {
        std::array::from_fn(|i| self.counts[i].get())
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(Counter::get).sum()
    }

    pub fn sum_ms(&self) -> f64 {
        self.sum_us.get() as f64 / 1000.0
    }

    /// The `q` quantile (0..=1) in ms, interpolated within its bucket;
    /// `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile_of(&self.counts(), q)
    }
}

/// The `q` quantile (0..=1) in ms of samples counted per bucket of
/// [`BUCKETS_MS`] (the last count above every bound), interpolated
/// within its bucket; `None` without samples.
pub fn quantile_of(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lo = if i == 0 { 0.0 } else { BUCKETS_MS[i - 1] };
            let hi = BUCKETS_MS.get(i).copied().unwrap_or(lo * 2.0);
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some(lo + (hi - lo) * within);
        }
        below += n;
    }
    Some(BUCKETS_MS[18])
}

/// HTTP responses by status code, as one core sees them: a small table
/// of the codes met (16 of them; more than that count under their class,
/// `other`).
#[derive(Debug, Default)]
pub struct CodeCounts {
    codes: [AtomicU16; 16],
    counts: [Counter; 16],
    /// By class (index `code / 100`, 0 and 6+ folded into 0).
    other: [Counter; 6],
}

impl CodeCounts {
    #[inline]
    pub fn inc(&self, code: u16) {
        if !HISTOGRAMS.load(Relaxed) {
            return;
        }
        for (k, n) in self.codes.iter().zip(&self.counts) {
            let have = k.load(Relaxed);
            if have == code {
                n.inc();
                return;
            }
            if have == 0 {
                // One writer: the code is set before its count moves.
                k.store(code, Relaxed);
                n.inc();
                return;
            }
        }
        let class = usize::from(code / 100);
        self.other[if class < 6 { class } else { 0 }].inc();
    }

    /// Each code met and its count; then, if any overflowed, each class
    /// (`1`..`5`, as `Err`) and its count.
    pub fn for_each(&self, mut f: impl FnMut(Result<u16, u16>, u64)) {
        for (k, n) in self.codes.iter().zip(&self.counts) {
            let code = k.load(Relaxed);
            if code != 0 {
                f(Ok(code), n.get());
            }
        }
        for (class, n) in self.other.iter().enumerate() {
            if n.get() != 0 {
                f(Err(class as u16), n.get());
            }
        }
    }
}

/// A listener's HTTP histograms on one core.
#[derive(Debug, Default)]
pub struct ListenerHistograms {
    /// From the request's first byte to its response's last (Envoy's
    /// `http.<prefix>.downstream_rq_time`).
    pub downstream_rq_time: Histogram,
}

/// A cluster's latency histograms and response codes on one core.
#[derive(Debug, Default)]
pub struct ClusterHistograms {
    /// From the request's start upstream (connection wait included) to its
    /// response's last byte (`cluster.<name>.upstream_rq_time`).
    pub upstream_rq_time: Histogram,
    /// TCP handshakes (`cluster.<name>.upstream_cx_connect_ms`).
    pub upstream_cx_connect_ms: Histogram,
    /// Responses received, by code (`cluster.<name>.upstream_rq_<code>`).
    pub codes: CodeCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_bucket_merge_and_estimate_quantiles() {
        let h = Histogram::default();
        for us in [100, 500, 501, 2_000, 7_000_000_000] {
            h.record_us(us);
        }
        let c = h.counts();
        assert_eq!((c[0], c[1], c[2], c[19]), (2, 1, 1, 1));
        let m = Histogram::default();
        m.add_from(&h);
        m.add_from(&h);
        assert_eq!(m.count(), 10);
        assert!((m.sum_ms() - 2.0 * 7_000_003.101).abs() < 1e-6);
        // The median of 100 samples of 2 ms lies in (1, 5].
        let q = Histogram::default();
        (0..100).for_each(|_| q.record_us(2_000));
        let p50 = q.quantile_ms(0.5).unwrap();
        assert!(p50 > 1.0 && p50 <= 5.0, "{p50}");
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn response_codes_fill_a_small_table_then_their_class() {
        let c = CodeCounts::default();
        for code in 200..220 {
            c.inc(code);
        }
        c.inc(200);
        c.inc(503);
        let mut seen = Vec::new();
        c.for_each(|k, n| seen.push((k, n)));
        assert_eq!(seen[0], (Ok(200), 2));
        assert_eq!(seen.len(), 16 + 2);
        assert!(seen.contains(&(Err(2), 4)) && seen.contains(&(Err(5), 1)));
    }

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
