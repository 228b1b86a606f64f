//! The proxy's live configuration: listeners and clusters that change while
//! connections run.
//!
//! The control thread owns [`Live`]: the [`ProxyState`] in force, and for
//! each listener, cluster and endpoint an immutable, shared description with
//! its counters (one slot per worker core) and, for clusters, the circuit
//! breakers' gauges. An accepted [`ProxyUpdate`] becomes one [`Update`]: the
//! new and replaced items, and the names removed. The same `Arc<Update>` goes
//! into every worker's [`Mailbox`]; each worker applies it between two
//! batches (RCU: nothing the worker reads changes under it) and publishes
//! the generation it has reached, which is when the control thread answers
//! "applied".
//!
//! An update costs in proportion to what it changes: unchanged clusters are
//! not rebuilt, and a replaced cluster keeps its counters and gauges (by
//! name) and its endpoints' counters (by address).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use dataplane_config::{
    Change, ClusterConfig, Config, Ipv4Net, ListenerConfig, ProxyState, ProxyUpdate, Rejected,
    parse_socket_addr,
};

use netstack::RouteTable;

use crate::http::router;
use crate::metrics::{ClusterGauges, ClusterHistograms, CoreCounters, ListenerHistograms, PerCore};

/// A listener as the workers see it.
#[derive(Debug)]
pub struct ListenerLive {
    pub cfg: ListenerConfig,
    pub addr: SocketAddrV4,
    pub stats: CoreCounters,
    pub histograms: Arc<PerCore<ListenerHistograms>>,
}

/// A cluster as the workers see it.
#[derive(Debug)]
pub struct ClusterLive {
    /// Its configuration (endpoints as given, for display).
    pub cfg: ClusterConfig,
    pub endpoints: Vec<EndpointLive>,
    pub gauges: Arc<ClusterGauges>,
    pub stats: CoreCounters,
    pub histograms: Arc<PerCore<ClusterHistograms>>,
}

#[derive(Debug, Clone)]
pub struct EndpointLive {
    pub addr: SocketAddrV4,
    pub weight: u32,
    /// The address of ours its connections leave from (`None`: no route).
    pub source: Option<Ipv4Addr>,
    pub stats: CoreCounters,
}

/// One accepted change, as every worker applies it.
#[derive(Debug, Default)]
pub struct Update {
    pub generation: u64,
    pub listeners: Vec<Arc<ListenerLive>>,
    pub clusters: Vec<Arc<ClusterLive>>,
    /// Route configurations, compiled (regexes included) on the control
    /// thread.
    pub route_tables: Vec<Arc<router::RouteTable>>,
    pub remove_listeners: Vec<String>,
    pub remove_clusters: Vec<String>,
    pub remove_route_configs: Vec<String>,
}

/// Updates on their way to one worker, and how far it has got.
#[derive(Debug)]
pub struct Mailbox {
    queue: ArrayQueue<Arc<Update>>,
    /// The generation of the last update this worker applied.
    pub applied: AtomicU64,
}

impl Mailbox {
    /// A mailbox holding a new worker's first update.
    pub fn with(first: Arc<Update>) -> Arc<Mailbox> {
        let queue = ArrayQueue::new(8);
        let _ = queue.push(first);
        Arc::new(Mailbox {
            queue,
            applied: AtomicU64::new(0),
        })
    }

    /// The next update for this worker, if one waits (a worker calls this
    /// between batches; it costs an atomic load when nothing waits).
    #[inline]
    pub fn take(&self) -> Option<Arc<Update>> {
        self.queue.pop()
    }
}

/// The ports' routes (the stack's own table), to find the address of ours
/// an upstream connection leaves from: that of the port its route uses.
#[derive(Debug, Clone)]
pub struct Routes {
    table: RouteTable,
    addrs: Vec<Ipv4Addr>,
}

impl Routes {
    pub fn new(cfg: &Config) -> Routes {
        let mut table = RouteTable::default();
        let mut addrs = Vec::new();
        for p in &cfg.ports {
            // Validated: the address parses, the gateway too.
            let Ok(net) = Ipv4Net::parse(&p.address) else {
                continue;
            };
            let gw = p.gateway.as_deref().and_then(|g| g.parse().ok());
            table.add_iface(addrs.len(), net.addr, net.prefix_len, gw);
            addrs.push(net.addr);
        }
        Routes { table, addrs }
    }

    pub fn source(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let (iface, _) = self.table.lookup(dst)?;
        self.addrs.get(iface).copied()
    }
}

/// The control thread's side: the state in force and its shared parts.
#[derive(Debug)]
pub struct Live {
    pub state: ProxyState,
    pub listeners: BTreeMap<String, Arc<ListenerLive>>,
    pub clusters: BTreeMap<String, Arc<ClusterLive>>,
    pub route_tables: BTreeMap<String, Arc<router::RouteTable>>,
    generation: u64,
    cores: usize,
    routes: Routes,
    /// Changed since last saved to the state file.
    pub dirty: bool,
    /// Per worker, updates its full mailbox could not take yet, in order.
    backlog: Vec<std::collections::VecDeque<Arc<Update>>>,
}

impl Live {
    /// The live form of `state` (checked already), for `cores` workers.
    pub fn new(state: ProxyState, cfg: &Config, cores: usize) -> Live {
        let mut live = Live {
            state: ProxyState::default(),
            listeners: BTreeMap::new(),
            clusters: BTreeMap::new(),
            route_tables: BTreeMap::new(),
            generation: 0,
            cores,
            routes: Routes::new(cfg),
            dirty: false,
            backlog: Vec::new(),
        };
        let ch = Change {
            version: state.version.clone(),
            listeners: state.listeners.into_values().collect(),
            clusters: state.clusters.into_values().collect(),
            route_configs: state.route_configs.into_values().collect(),
            ..Change::default()
        };
        live.build(&ch);
        live.state.apply(&ch);
        live
    }

    /// Everything in force, as the first update of a new worker.
    pub fn initial(&self) -> Arc<Update> {
        Arc::new(Update {
            generation: self.generation,
            listeners: self.listeners.values().cloned().collect(),
            clusters: self.clusters.values().cloned().collect(),
            route_tables: self.route_tables.values().cloned().collect(),
            ..Update::default()
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Check `u`, apply it to the state and build the workers' update.
    pub fn prepare(
        &mut self,
        u: ProxyUpdate,
        cfg: &Config,
    ) -> Result<(Arc<Update>, Vec<Rejected>), Vec<Rejected>> {
        let ch = self.state.check(u, cfg)?;
        let update = self.build(&ch);
        self.state.apply(&ch);
        self.dirty = true;
        Ok((update, ch.rejected))
    }

    fn build(&mut self, ch: &Change) -> Arc<Update> {
        self.generation += 1;
        let mut up = Update {
            generation: self.generation,
            remove_listeners: ch.remove_listeners.clone(),
            remove_clusters: ch.remove_clusters.clone(),
            remove_route_configs: ch.remove_route_configs.clone(),
            ..Update::default()
        };
        for n in &ch.remove_route_configs {
            self.route_tables.remove(n);
        }
        for r in &ch.route_configs {
            let t = Arc::new(router::RouteTable::new(r));
            self.route_tables.insert(r.name.clone(), t.clone());
            up.route_tables.push(t);
        }
        for n in &ch.remove_listeners {
            self.listeners.remove(n);
        }
        for n in &ch.remove_clusters {
            self.clusters.remove(n);
        }
        for l in &ch.listeners {
            let old = self.listeners.get(&l.name);
            let stats = old
                .map(|o| o.stats.clone())
                .unwrap_or_else(|| Arc::new(PerCore::new(self.cores)));
            let histograms = old
                .map(|o| o.histograms.clone())
                .unwrap_or_else(|| Arc::new(PerCore::new(self.cores)));
            let Ok(addr) = parse_socket_addr(&l.address) else {
                continue; // checked
            };
            let live = Arc::new(ListenerLive {
                cfg: l.clone(),
                addr,
                stats,
                histograms,
            });
            self.listeners.insert(l.name.clone(), live.clone());
            up.listeners.push(live);
        }
        for c in &ch.clusters {
            let old = self.clusters.get(&c.name);
            let old_eps: HashMap<SocketAddrV4, &EndpointLive> = old
                .map(|o| o.endpoints.iter().map(|e| (e.addr, e)).collect())
                .unwrap_or_default();
            let endpoints = c
                .endpoints
                .iter()
                .filter_map(|e| {
                    let addr = parse_socket_addr(&e.address).ok()?;
                    Some(EndpointLive {
                        addr,
                        weight: e.weight,
                        source: self.routes.source(*addr.ip()),
                        stats: old_eps
                            .get(&addr)
                            .map(|o| o.stats.clone())
                            .unwrap_or_else(|| Arc::new(PerCore::new(self.cores))),
                    })
                })
                .collect();
            let live = Arc::new(ClusterLive {
                cfg: c.clone(),
                endpoints,
                gauges: old.map(|o| o.gauges.clone()).unwrap_or_default(),
                stats: old
                    .map(|o| o.stats.clone())
                    .unwrap_or_else(|| Arc::new(PerCore::new(self.cores))),
                histograms: old
                    .map(|o| o.histograms.clone())
                    .unwrap_or_else(|| Arc::new(PerCore::new(self.cores))),
            });
            let unroutable: Vec<String> = live
                .endpoints
                .iter()
                .filter(|e| e.source.is_none())
                .map(|e| e.addr.to_string())
                .collect();
            if let Some(first) = unroutable.first() {
                tracing::warn!(
                    "cluster {}: no route to {} endpoint(s), e.g. {first} (no port's subnet holds them, no gateway): their connections will be refused",
                    c.name,
                    unroutable.len()
                );
            }
            self.clusters.insert(c.name.clone(), live.clone());
            up.clusters.push(live);
        }
        Arc::new(up)
    }

    /// Hand `update` to every worker and wait (up to `wait`) until each has
    /// applied it. An update never skips a worker: one whose mailbox stays
    /// full keeps it in a backlog, handed over by `flush_backlog`.
    pub fn publish(
        &mut self,
        update: &Arc<Update>,
        boxes: &[Arc<Mailbox>],
        wait: Duration,
    ) -> bool {
        let deadline = Instant::now() + wait;
        self.backlog.resize_with(boxes.len(), Default::default);
        for q in &mut self.backlog {
            q.push_back(update.clone());
        }
        // A worker takes its mail every loop; a full box means it is busy.
        while !self.flush_backlog(boxes) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let mut spins = 0u32;
        while boxes
            .iter()
            .any(|b| b.applied.load(Ordering::Acquire) < update.generation)
        {
            if Instant::now() >= deadline {
                return false;
            }
            spins += 1;
            if spins < 200 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        true
    }

    /// Move backlogged updates into the workers' mailboxes, in order; true
    /// when nothing is left waiting.
    pub fn flush_backlog(&mut self, boxes: &[Arc<Mailbox>]) -> bool {
        let mut all = true;
        for (q, b) in self.backlog.iter_mut().zip(boxes) {
            while let Some(u) = q.pop_front() {
                if let Err(back) = b.queue.push(u) {
                    q.push_front(back);
                    all = false;
                    break;
                }
            }
        }
        all
    }
}
