//! The xDS client's state: what the management server sent, what was
//! accepted, what the data plane has. No I/O here: responses come in, and
//! out come the requests to send (ACK, NACK, subscription changes) and the
//! data-plane updates to push. `client.rs` drives it over a gRPC stream.
//! No clock either: what needs the time takes `now` from the driver, so
//! the timeouts can be tested on virtual time.
//!
//! Protocol rules kept (Envoy's "xDS REST and gRPC protocol"):
//! - per type: the last accepted `version_info` and the last `nonce`; an ACK
//!   names the new version and the nonce; a NACK keeps the previous version,
//!   names the nonce and says in `error_detail` which resources failed and
//!   why. Valid resources of a response are applied even when others fail;
//! - LDS and CDS are wildcard subscriptions and, in state-of-the-world,
//!   full state (a resource absent from a response is deleted); EDS is
//!   subscribed by name, for the clusters that use it, and an assignment
//!   goes when no cluster refers to it any more (RDS would too, but the HTTP
//!   connection manager that uses it is rejected until the L7 work);
//! - warming: EDS is requested after the clusters that need it, listeners
//!   after the first clusters are warm, and a cluster reaches the data plane
//!   only with its endpoints (or once the does-not-exist timeout says there
//!   are none);
//! - on a new stream, subscriptions are sent again with the versions held
//!   (Delta: `initial_resource_versions`), so the server can skip what we
//!   have.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane_config::admin::{XdsReport, XdsType};
use dataplane_config::http::RouteConfig;
use dataplane_config::{ClusterConfig, EndpointConfig, ListenerConfig, ProxyUpdate, Rejected};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use prost::Message;

use crate::translate::{self, ClusterPlan, Ignored, ListenerPlan, hcm};

pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// gRPC INVALID_ARGUMENT, the code Envoy puts in a NACK.
const INVALID_ARGUMENT: i32 = 3;

/// One request to send, in either protocol variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Sotw(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sotw,
    Delta,
}

/// Per resource type.
#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    /// Last accepted `version_info` (SotW) / `system_version_info` (Delta).
    version: String,
    /// Last nonce received on the current stream.
    nonce: String,
    /// Delta: version of each resource held.
    versions: BTreeMap<String, String>,
    /// Last NACK's message (for stats and logs).
    last_error: Option<String>,
}

/// A resource rejected, to be named in a NACK.
#[derive(Debug, Clone)]
struct Failure {
    name: String,
    reason: String,
}

/// What one response led to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub requests: Vec<Request>,
    /// Set when the data plane should get an update.
    pub push: bool,
}

#[derive(Debug)]
pub struct Xds {
    mode: Mode,
    node: Node,
    lds: TypeState,
    cds: TypeState,
    eds: TypeState,
    rds: TypeState,
    /// Resources from the bootstrap: never replaced or removed by xDS.
    static_listeners: BTreeMap<String, ListenerPlan>,
    static_clusters: BTreeMap<String, ClusterPlan>,
    /// Accepted from the server.
    listeners: BTreeMap<String, Option<ListenerPlan>>,
    clusters: BTreeMap<String, ClusterPlan>,
    /// Accepted assignments by EDS name.
    assignments: HashMap<String, Vec<EndpointConfig>>,
    /// EDS name → the clusters (static or not) that use it.
    eds_users: HashMap<String, BTreeSet<String>>,
    /// SotW: a hash of each accepted resource's bytes → its name, per type,
    /// so that a response repeating what we have costs a hash, not a
    /// decode and a translation.
    unchanged: HashMap<String, HashMap<u64, String>>,
    /// EDS names subscribed, with when (for the does-not-exist timeout).
    eds_wanted: BTreeMap<String, Instant>,
    /// EDS names the server has not sent within the timeout (or said are
    /// gone): their clusters warm up with no endpoints.
    eds_missing: BTreeSet<String>,
    /// Accepted route configurations by RDS name.
    routes: BTreeMap<String, RouteConfig>,
    /// RDS names the listeners use, with when they were first wanted.
    rds_wanted: BTreeMap<String, Instant>,
    /// RDS names not sent within the timeout (or said to be gone): their
    /// listeners are pushed anyway, and answer 404 (NR) until it comes.
    rds_missing: BTreeSet<String>,
    /// RDS names whose route configuration may differ from the pushed one.
    dirty_routes: BTreeSet<String>,
    /// Resolved STRICT_DNS hosts.
    dns: HashMap<(String, u16), Vec<std::net::SocketAddrV4>>,
    /// Hosts a cluster names that are not resolved yet: the driver
    /// resolves them (DNS is I/O) and hands the answers to `on_resolved`.
    dns_wanted: BTreeSet<(String, u16)>,
    /// Hosts taken by the driver (`take_unresolved`) and not answered
    /// yet: not asked for again meanwhile, so that each host has at most
    /// one lookup out.
    dns_asked: BTreeSet<(String, u16)>,
    /// Hosts whose last lookup failed, while a cluster names them: failures
    /// in a row, and when to ask again (`retry_dns`; none yet: at the next
    /// call, from then).
    dns_retry: BTreeMap<(String, u16), (u32, Option<Instant>)>,
    /// What the data plane has (as we pushed it).
    pushed_listeners: BTreeMap<String, ListenerConfig>,
    pushed_clusters: BTreeMap<String, ClusterConfig>,
    /// Route configurations pushed: listeners' inline ones, by
    /// `hcm::inline_name`.
    pushed_routes: BTreeMap<String, RouteConfig>,
    /// Names whose desired state may differ from the pushed one.
    dirty_listeners: BTreeSet<String>,
    dirty_clusters: BTreeSet<String>,
    /// The next push must be full (first one, or the data plane restarted).
    full_push: bool,
    /// The first full push has been made: the data plane's state is ours.
    synced: bool,
    started: Instant,
    does_not_exist: Duration,
    pub ignored: Arc<Ignored>,
    /// Counters for the agent's own stats.
    pub acks: u64,
    pub nacks: u64,
    /// The ACK or NACK waiting for the data plane's verdict.
    pending: Option<Pending>,
    /// A CDS response has been handled (listeners may follow once warm).
    cds_handled: bool,
    /// Names the data plane rejected: pushed again when the server sends
    /// them again, even unchanged (the cause may be gone).
    rejected_listeners: BTreeSet<String>,
    rejected_clusters: BTreeSet<String>,
    /// ACKs and NACKs not yet reported to the data plane (for its admin
    /// stats: `cluster_manager.cds.update_success`, ...).
    reports: Vec<XdsReport>,
    /// The last ACK of each type, reported again to a data plane that
    /// restarted (its counts start from zero).
    last_acks: BTreeMap<XdsType, XdsReport>,
    /// Accepted resources as sent, by type URL and name (for the data
    /// plane's `/config_dump`; not assignments, which the dump leaves
    /// out); what is no longer held is left out when read (`held_raw`).
    raw: HashMap<String, BTreeMap<String, RawResource>>,
}

impl Xds {
    /// A client that starts at `now` (the does-not-exist timeouts of the
    /// first subscriptions count from it).
    pub fn new(
        mode: Mode,
        node: Node,
        does_not_exist: Duration,
        ignored: Arc<Ignored>,
        now: Instant,
    ) -> Xds {
        Xds {
            mode,
            node,
            lds: TypeState::default(),
            cds: TypeState::default(),
            eds: TypeState::default(),
            rds: TypeState::default(),
            static_listeners: BTreeMap::new(),
            static_clusters: BTreeMap::new(),
            listeners: BTreeMap::new(),
            clusters: BTreeMap::new(),
            assignments: HashMap::new(),
            eds_users: HashMap::new(),
            unchanged: HashMap::new(),
            eds_wanted: BTreeMap::new(),
            eds_missing: BTreeSet::new(),
            routes: BTreeMap::new(),
            rds_wanted: BTreeMap::new(),
            rds_missing: BTreeSet::new(),
            dirty_routes: BTreeSet::new(),
            dns: HashMap::new(),
            dns_wanted: BTreeSet::new(),
            dns_asked: BTreeSet::new(),
            dns_retry: BTreeMap::new(),
            pushed_listeners: BTreeMap::new(),
            pushed_clusters: BTreeMap::new(),
            pushed_routes: BTreeMap::new(),
            dirty_listeners: BTreeSet::new(),
            dirty_clusters: BTreeSet::new(),
            full_push: true,
            synced: false,
            started: now,
            does_not_exist,
            ignored,
            acks: 0,
            nacks: 0,
            pending: None,
            cds_handled: false,
            rejected_listeners: BTreeSet::new(),
            rejected_clusters: BTreeSet::new(),
            reports: Vec::new(),
            last_acks: BTreeMap::new(),
            raw: HashMap::new(),
        }
    }

    /// The accepted resources of `type_url` still held, as the server sent
    /// them, with the type's last accepted version.
    pub fn held_raw(&self, type_url: &str) -> (String, Vec<(&str, &RawResource)>) {
        let held = |n: &str| match type_url {
            LDS => self.listeners.get(n).is_some_and(Option::is_some),
            CDS => self.clusters.contains_key(n),
            EDS => self.assignments.contains_key(n),
            RDS => self.routes.contains_key(n),
            _ => false,
        };
        let version = match type_url {
            LDS => &self.lds.version,
            CDS => &self.cds.version,
            EDS => &self.eds.version,
            _ => &self.rds.version,
        };
        let list = self
            .raw
            .get(type_url)
            .into_iter()
            .flatten()
            .filter(|(n, _)| held(n))
            .map(|(n, r)| (n.as_str(), r))
            .collect();
        (version.clone(), list)
    }

    /// The verdicts to report to the data plane since the last call.
    pub fn take_reports(&mut self) -> Vec<XdsReport> {
        std::mem::take(&mut self.reports)
    }

    /// Resources of the bootstrap's `static_resources` (translated already);
    /// the EDS names they use are wanted from `now`.
    pub fn set_static(
        &mut self,
        listeners: Vec<ListenerPlan>,
        clusters: Vec<ClusterPlan>,
        now: Instant,
    ) {
        for l in listeners {
            self.dirty_listeners.insert(l.cfg.name.clone());
            self.static_listeners.insert(l.cfg.name.clone(), l);
        }
        for c in clusters {
            self.dirty_clusters.insert(c.cfg.name.clone());
            if let Some(e) = &c.eds {
                self.eds_wanted.entry(e.clone()).or_insert(now);
                self.eds_users
                    .entry(e.clone())
                    .or_default()
                    .insert(c.cfg.name.clone());
            }
            // No response waits for these: a failure is logged (`on_resolved`).
            self.want_dns(&c);
            self.static_clusters.insert(c.cfg.name.clone(), c);
        }
    }

    /// Static mode (no server): the data plane may be given what we have.
    pub fn mark_synced_without_server(&mut self) {
        self.synced = true;
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn ty(&mut self, type_url: &str) -> Option<&mut TypeState> {
        match type_url {
            LDS => Some(&mut self.lds),
            CDS => Some(&mut self.cds),
            EDS => Some(&mut self.eds),
            RDS => Some(&mut self.rds),
            _ => None,
        }
    }

    // === subscriptions ===

    /// The requests that open a stream: CDS at once; EDS for the clusters
    /// held; LDS if it was subscribed before (a reconnect), else after the
    /// clusters warm. Nonces belong to a stream and start empty.
    pub fn on_stream_start(&mut self) -> Vec<Request> {
        for t in [&mut self.lds, &mut self.cds, &mut self.eds, &mut self.rds] {
            t.nonce.clear();
        }
        self.cds.subscribed = true;
        let mut out = vec![self.request(CDS, None, true)];
        if !self.eds_wanted.is_empty() {
            self.eds.subscribed = true;
            out.push(self.request(EDS, None, true));
        }
        if self.lds.subscribed {
            out.push(self.request(LDS, None, true));
        }
        if !self.rds_wanted.is_empty() {
            self.rds.subscribed = true;
            out.push(self.request(RDS, None, true));
        }
        out
    }

    /// A request for `type_url`: the current subscription, the version held
    /// and the last nonce, with `error` for a NACK. `initial` marks the
    /// first request of a stream (Delta: carries the versions held).
    fn request(&self, type_url: &str, error: Option<String>, initial: bool) -> Request {
        let t = match type_url {
            LDS => &self.lds,
            CDS => &self.cds,
            RDS => &self.rds,
            _ => &self.eds,
        };
        let names: Vec<String> = match type_url {
            EDS => self.eds_wanted.keys().cloned().collect(),
            RDS => self.rds_wanted.keys().cloned().collect(),
            _ => Vec::new(), // wildcard
        };
        let error_detail = error.map(|message| Status {
            code: INVALID_ARGUMENT,
            message,
            details: Vec::new(),
        });
        match self.mode {
            Mode::Sotw => Request::Sotw(DiscoveryRequest {
                version_info: t.version.clone(),
                node: Some(self.node.clone()),
                resource_names: names,
                type_url: type_url.into(),
                response_nonce: t.nonce.clone(),
                error_detail,
                ..Default::default()
            }),
            Mode::Delta => Request::Delta(DeltaDiscoveryRequest {
                node: initial.then(|| self.node.clone()),
                type_url: type_url.into(),
                resource_names_subscribe: if initial { names } else { Vec::new() },
                initial_resource_versions: if initial {
                    t.versions.clone().into_iter().collect()
                } else {
                    Default::default()
                },
                response_nonce: if initial {
                    String::new()
                } else {
                    t.nonce.clone()
                },
                error_detail,
                ..Default::default()
            }),
        }
    }

    /// The EDS names the clusters need now; subscribe to new ones and drop
    /// the rest (and their assignments); a new name's does-not-exist
    /// timeout counts from `now`. Returns the request to send, if the
    /// subscription changed.
    fn resubscribe_eds(&mut self, now: Instant) -> Option<Request> {
        let needed: BTreeSet<String> = self
            .clusters
            .values()
            .chain(self.static_clusters.values())
            .filter_map(|c| c.eds.clone())
            .collect();
        let old: BTreeSet<String> = self.eds_wanted.keys().cloned().collect();
        if needed == old {
            return None;
        }
        let added: Vec<String> = needed.difference(&old).cloned().collect();
        let removed: Vec<String> = old.difference(&needed).cloned().collect();
        for n in &added {
            self.eds_wanted.insert(n.clone(), now);
        }
        for n in &removed {
            self.eds_wanted.remove(n);
            self.assignments.remove(n);
            self.eds_missing.remove(n);
            self.eds.versions.remove(n);
        }
        if !removed.is_empty()
            && let Some(m) = self.unchanged.get_mut(EDS)
        {
            let gone: std::collections::HashSet<&String> = removed.iter().collect();
            m.retain(|_, n| !gone.contains(n));
        }
        self.eds.subscribed = true;
        Some(match self.mode {
            Mode::Sotw => self.request(EDS, None, false),
            Mode::Delta => Request::Delta(DeltaDiscoveryRequest {
                type_url: EDS.into(),
                resource_names_subscribe: added,
                resource_names_unsubscribe: removed,
                ..Default::default()
            }),
        })
    }

    /// The RDS names the listeners use now; subscribe to new ones and drop
    /// the rest (and their route configurations). Returns the request to
    /// send, if the subscription changed.
    fn resubscribe_rds(&mut self, now: Instant) -> Option<Request> {
        let needed: BTreeSet<String> = self
            .listeners
            .values()
            .flatten()
            .chain(self.static_listeners.values())
            .filter_map(|l| l.rds().map(str::to_owned))
            .collect();
        let old: BTreeSet<String> = self.rds_wanted.keys().cloned().collect();
        if needed == old {
            return None;
        }
        for n in needed.difference(&old) {
            self.rds_wanted.insert(n.clone(), now);
        }
        for n in old.difference(&needed) {
            self.rds_wanted.remove(n);
            self.routes.remove(n);
            self.rds_missing.remove(n);
            self.rds.versions.remove(n);
            self.dirty_routes.insert(n.clone());
            if let Some(m) = self.unchanged.get_mut(RDS) {
                m.retain(|_, x| x != n);
            }
        }
        self.rds.subscribed = true;
        Some(match self.mode {
            Mode::Sotw => self.request(RDS, None, false),
            Mode::Delta => Request::Delta(DeltaDiscoveryRequest {
                type_url: RDS.into(),
                resource_names_subscribe: needed.difference(&old).cloned().collect(),
                resource_names_unsubscribe: old.difference(&needed).cloned().collect(),
                ..Default::default()
            }),
        })
    }

    /// The listeners whose routes come from RDS name `rds` need pushing.
    fn dirty_rds_users(&mut self, rds: &str) {
        let users: Vec<String> = self
            .listeners
            .iter()
            .filter_map(|(n, l)| {
                l.as_ref()
                    .filter(|l| l.rds() == Some(rds))
                    .map(|_| n.clone())
            })
            .chain(
                self.static_listeners
                    .iter()
                    .filter(|(_, l)| l.rds() == Some(rds))
                    .map(|(n, _)| n.clone()),
            )
            .collect();
        self.dirty_listeners.extend(users);
        self.dirty_routes.insert(rds.to_owned());
    }

    /// Whether a listener can be pushed: its routes are in (or given up on).
    fn listener_warm(&self, l: &ListenerPlan) -> bool {
        l.rds()
            .is_none_or(|n| self.routes.contains_key(n) || self.rds_missing.contains(n))
    }

    /// Clusters are warm when every EDS name they use has arrived or timed
    /// out.
    fn clusters_warm(&self) -> bool {
        self.eds_wanted
            .keys()
            .all(|n| self.assignments.contains_key(n) || self.eds_missing.contains(n))
    }

    /// Subscribe to listeners once the first clusters are warm.
    fn maybe_start_lds(&mut self, out: &mut Vec<Request>) {
        if !self.lds.subscribed && self.cds_handled && self.clusters_warm() {
            self.lds.subscribed = true;
            out.push(self.request(LDS, None, true));
        }
    }

    /// Run the does-not-exist timeout; `now` from the caller's clock. Call
    /// it regularly (the driver does once a second): nothing else expires
    /// a resource.
    pub fn on_timer(&mut self, now: Instant) -> Outcome {
        let mut out = Outcome::default();
        let mut expired = Vec::new();
        for (n, since) in &self.eds_wanted {
            if !self.assignments.contains_key(n)
                && !self.eds_missing.contains(n)
                && now.duration_since(*since) >= self.does_not_exist
            {
                expired.push(n.clone());
            }
        }
        for n in expired {
            tracing::warn!(
                "EDS {n:?}: not received within {:?}; its clusters are used with no endpoints until it arrives",
                self.does_not_exist
            );
            self.eds_missing.insert(n.clone());
            self.dirty_eds(&n);
            out.push = true;
        }
        let expired: Vec<String> = self
            .rds_wanted
            .iter()
            .filter(|(n, since)| {
                !self.routes.contains_key(*n)
                    && !self.rds_missing.contains(*n)
                    && now.duration_since(**since) >= self.does_not_exist
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in expired {
            tracing::warn!(
                "RDS {n:?}: not received within {:?}; its listeners are used, answering 404 (NR) until it arrives",
                self.does_not_exist
            );
            self.rds_missing.insert(n.clone());
            self.dirty_rds_users(&n);
            out.push = true;
        }
        // The server sent no clusters at all in time: go on with listeners.
        if !self.lds.subscribed
            && self.cds.subscribed
            && now.duration_since(self.started) >= self.does_not_exist
            && self.clusters_warm()
        {
            tracing::warn!(
                "no clusters received within {:?}; asking for listeners anyway",
                self.does_not_exist
            );
            self.lds.subscribed = true;
            out.requests.push(self.request(LDS, None, true));
        }
        if self.lds.subscribed
            && self.lds.version.is_empty()
            && !self.synced
            && now.duration_since(self.started) >= self.does_not_exist * 2
        {
            tracing::warn!(
                "no listeners received in time; configuring the data plane with what there is"
            );
            self.synced = true;
            out.push = true;
        }
        out.push &= self.synced;
        out
    }

    /// The clusters that use assignment `eds` need pushing.
    fn dirty_eds(&mut self, eds: &str) {
        if let Some(users) = self.eds_users.get(eds) {
            self.dirty_clusters.extend(users.iter().cloned());
        }
    }

    /// Keep `eds_users` in step when a (dynamic) cluster changes.
    fn reindex(&mut self, name: &str, old: Option<&ClusterPlan>, new: Option<&ClusterPlan>) {
        if let Some(e) = old.and_then(|p| p.eds.as_ref())
            && let Some(users) = self.eds_users.get_mut(e)
        {
            users.remove(name);
            if users.is_empty() {
                self.eds_users.remove(e);
            }
        }
        if let Some(e) = new.and_then(|p| p.eds.as_ref()) {
            self.eds_users
                .entry(e.clone())
                .or_default()
                .insert(name.to_owned());
        }
    }

    // === responses ===

    /// A state-of-the-world response, received at `now`. Then push (if
    /// `push`) and `settle`, which makes its ACK or NACK.
    pub fn on_sotw(&mut self, r: DiscoveryResponse, now: Instant) -> Outcome {
        let type_url = r.type_url.clone();
        let Some(t) = self.ty(&type_url) else {
            tracing::warn!("response for type {type_url:?}, which we never asked for: ignored");
            return Outcome::default();
        };
        t.nonce = r.nonce.clone();
        let mut resources = Vec::with_capacity(r.resources.len());
        let mut failures = Vec::new();
        // Resources identical to ones already taken are not decoded again.
        let known = self.unchanged.remove(&type_url).unwrap_or_default();
        let mut seen = HashMap::with_capacity(r.resources.len());
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut raw = Vec::new();
        for (i, any) in r.resources.iter().enumerate() {
            let h = hash_bytes(&any.value);
            if let Some(n) = known.get(&h) {
                names.insert(n.clone());
                seen.insert(h, n.clone());
                continue;
            }
            match decode_named(&type_url, any) {
                Ok(x) => {
                    names.insert(x.name().to_owned());
                    seen.insert(h, x.name().to_owned());
                    if type_url != EDS {
                        raw.push((x.name().to_owned(), String::new(), any.clone()));
                    }
                    resources.push(x);
                }
                Err(reason) => failures.push(Failure {
                    name: format!("resources[{i}]"),
                    reason,
                }),
            }
        }
        // A resource that did not decode might be one we hold: delete
        // nothing on the strength of this response then.
        let full_state = (type_url == LDS || type_url == CDS) && failures.is_empty();
        let removed: Vec<String> = if full_state {
            let held: Vec<String> = match type_url.as_str() {
                LDS => self.listeners.keys().cloned().collect(),
                _ => self.clusters.keys().cloned().collect(),
            };
            held.into_iter().filter(|n| !names.contains(n)).collect()
        } else {
            Vec::new()
        };
        let out = self.finish(&type_url, r.version_info, resources, removed, failures, now);
        if let Some(p) = self.pending.as_mut().filter(|p| p.type_url == type_url) {
            p.raw = raw;
        }
        // Remember only what was accepted (a rejected one is looked at
        // again when it comes back).
        let failed: BTreeSet<&str> = self
            .pending
            .as_ref()
            .map(|p| p.failures.iter().map(|f| f.name.as_str()).collect())
            .unwrap_or_default();
        seen.retain(|_, n| !failed.contains(n.as_str()));
        if type_url == EDS {
            // A SotW EDS response may carry only some assignments: the
            // others stay as they were, while still subscribed.
            seen.retain(|_, n| self.eds_wanted.contains_key(n));
            let fresh: std::collections::HashSet<String> = seen.values().cloned().collect();
            for (h, n) in known {
                if !fresh.contains(&n) && self.assignments.contains_key(&n) {
                    seen.insert(h, n);
                }
            }
        } else if type_url == RDS {
            // The same for route configurations.
            seen.retain(|_, n| self.rds_wanted.contains_key(n));
            let fresh: std::collections::HashSet<String> = seen.values().cloned().collect();
            for (h, n) in known {
                if !fresh.contains(&n) && self.routes.contains_key(&n) {
                    seen.insert(h, n);
                }
            }
        }
        self.unchanged.insert(type_url, seen);
        out
    }

    /// A Delta response, received at `now`. Then push (if `push`) and
    /// `settle`, which makes its ACK or NACK.
    pub fn on_delta(&mut self, r: DeltaDiscoveryResponse, now: Instant) -> Outcome {
        let type_url = r.type_url.clone();
        let Some(t) = self.ty(&type_url) else {
            tracing::warn!("response for type {type_url:?}, which we never asked for: ignored");
            return Outcome::default();
        };
        t.nonce = r.nonce.clone();
        let mut resources = Vec::new();
        let mut failures = Vec::new();
        let mut versions = Vec::new();
        let mut raw = Vec::new();
        for res in &r.resources {
            let Some(any) = &res.resource else {
                failures.push(Failure {
                    name: res.name.clone(),
                    reason: "resource body missing".into(),
                });
                continue;
            };
            match decode_named(&type_url, any) {
                Ok(x) if x.name() != res.name => failures.push(Failure {
                    name: res.name.clone(),
                    reason: format!("the resource inside is named {:?}", x.name()),
                }),
                Ok(x) => {
                    versions.push((res.name.clone(), res.version.clone()));
                    if type_url != EDS {
                        raw.push((res.name.clone(), res.version.clone(), any.clone()));
                    }
                    resources.push(x);
                }
                Err(reason) => failures.push(Failure {
                    name: res.name.clone(),
                    reason,
                }),
            }
        }
        let removed = r.removed_resources.clone();
        let ok_names: BTreeSet<&str> = resources.iter().map(|r| r.name()).collect();
        let failed: BTreeSet<String> = failures.iter().map(|f| f.name.clone()).collect();
        let t = self.ty(&type_url).expect("known type");
        let mut replaced = BTreeMap::new();
        for (n, v) in versions {
            if ok_names.contains(n.as_str()) && !failed.contains(&n) {
                let old = t.versions.insert(n.clone(), v);
                replaced.entry(n).or_insert(old);
            }
        }
        for n in &removed {
            t.versions.remove(n);
        }
        let out = self.finish(
            &type_url,
            r.system_version_info,
            resources,
            removed,
            failures,
            now,
        );
        if let Some(p) = self.pending.as_mut().filter(|p| p.type_url == type_url) {
            p.replaced = replaced;
            p.raw = raw;
        }
        out
    }

    /// Delta: the resources of `p` named in `names` are not in force after
    /// all: their versions go back to what was (or out of the list).
    fn restore_versions<'a>(&mut self, p: &Pending, names: impl Iterator<Item = &'a str>) {
        let Some(t) = self.ty(&p.type_url) else {
            return;
        };
        for n in names {
            match p.replaced.get(n) {
                Some(Some(old)) => {
                    t.versions.insert(n.to_owned(), old.clone());
                }
                Some(None) => {
                    t.versions.remove(n);
                }
                None => {}
            }
        }
    }

    /// Apply decoded resources and removals of one response; build the ACK
    /// or NACK.
    fn finish(
        &mut self,
        type_url: &str,
        version: String,
        resources: Vec<Resource>,
        removed: Vec<String>,
        mut failures: Vec<Failure>,
        now: Instant,
    ) -> Outcome {
        let mut out = Outcome::default();
        // Unresolved hosts of this response's clusters: its answer waits.
        let mut dns = BTreeSet::new();
        match type_url {
            LDS => {
                for r in resources {
                    let Resource::Listener(l) = r else { continue };
                    if self.static_listeners.contains_key(&l.name) {
                        failures.push(Failure {
                            name: l.name.clone(),
                            reason: "a static listener of the bootstrap has this name".into(),
                        });
                        continue;
                    }
                    match translate::listener(&l, &self.ignored) {
                        Ok(Some(t)) if t.rds().is_some_and(|n| n.starts_with("inline:")) => {
                            failures.push(Failure {
                                name: l.name.clone(),
                                reason: "rds.route_config_name: names starting with \"inline:\" are reserved for inline route configurations".into(),
                            });
                        }
                        Ok(t) => {
                            if self.listeners.get(&l.name) != Some(&t)
                                || self.rejected_listeners.contains(&l.name)
                            {
                                self.listeners.insert(l.name.clone(), t);
                                self.dirty_listeners.insert(l.name.clone());
                            }
                        }
                        // The old version, if any, stays.
                        Err(reason) => failures.push(Failure {
                            name: l.name.clone(),
                            reason,
                        }),
                    }
                }
                for n in removed {
                    if self.listeners.remove(&n).is_some() {
                        self.dirty_listeners.insert(n);
                    }
                }
                if !self.synced {
                    self.synced = true;
                    self.full_push = true;
                }
                if let Some(req) = self.resubscribe_rds(now) {
                    out.requests.push(req);
                }
            }
            RDS => {
                for r in resources {
                    let Resource::Routes(rc) = r else { continue };
                    if !self.rds_wanted.contains_key(&rc.name) {
                        continue; // not (or no longer) asked for
                    }
                    match translate::hcm::route_config(&rc, &self.ignored) {
                        Ok(t) => {
                            self.rds_missing.remove(&rc.name);
                            if self.routes.get(&rc.name) != Some(&t) {
                                self.routes.insert(rc.name.clone(), t);
                                self.dirty_rds_users(&rc.name);
                            }
                        }
                        // The old version, if any, stays.
                        Err(reason) => failures.push(Failure {
                            name: rc.name.clone(),
                            reason,
                        }),
                    }
                }
                // Delta only: the server says these do not exist.
                for n in removed {
                    if self.rds_wanted.contains_key(&n) {
                        self.routes.remove(&n);
                        self.rds_missing.insert(n.clone());
                        self.dirty_rds_users(&n);
                    }
                }
            }
            CDS => {
                self.cds_handled = true;
                for r in resources {
                    let Resource::Cluster(c) = r else { continue };
                    if self.static_clusters.contains_key(&c.name) {
                        failures.push(Failure {
                            name: c.name.clone(),
                            reason: "a static cluster of the bootstrap has this name".into(),
                        });
                        continue;
                    }
                    match translate::cluster(&c, &self.ignored) {
                        Ok(plan) => {
                            dns.extend(self.want_dns(&plan));
                            if self.clusters.get(&c.name) != Some(&plan)
                                || self.rejected_clusters.contains(&c.name)
                            {
                                let old = self.clusters.insert(c.name.clone(), plan);
                                let new = self.clusters.get(&c.name).cloned();
                                self.reindex(&c.name, old.as_ref(), new.as_ref());
                                self.dirty_clusters.insert(c.name.clone());
                            }
                        }
                        Err(reason) => failures.push(Failure {
                            name: c.name.clone(),
                            reason,
                        }),
                    }
                }
                for n in removed {
                    if let Some(old) = self.clusters.remove(&n) {
                        self.reindex(&n, Some(&old), None);
                        self.dirty_clusters.insert(n);
                    }
                }
                if let Some(req) = self.resubscribe_eds(now) {
                    out.requests.push(req);
                }
            }
            _ => {
                for r in resources {
                    let Resource::Assignment(cla) = r else {
                        continue;
                    };
                    if !self.eds_wanted.contains_key(&cla.cluster_name) {
                        continue; // not (or no longer) asked for
                    }
                    match translate::endpoints(&cla) {
                        Ok(eps) => {
                            self.eds_missing.remove(&cla.cluster_name);
                            if self.assignments.get(&cla.cluster_name) != Some(&eps) {
                                self.assignments.insert(cla.cluster_name.clone(), eps);
                                self.dirty_eds(&cla.cluster_name);
                            }
                        }
                        Err(reason) => failures.push(Failure {
                            name: cla.cluster_name.clone(),
                            reason,
                        }),
                    }
                }
                // Delta only: the server says these do not exist.
                for n in removed {
                    if self.eds_wanted.contains_key(&n) {
                        self.assignments.remove(&n);
                        self.eds_missing.insert(n.clone());
                        self.dirty_eds(&n);
                    }
                }
            }
        }
        self.maybe_start_lds(&mut out.requests);
        out.push = self.synced;
        // The ACK or NACK goes after the data plane's verdict (`settle`),
        // and after the DNS answers of its clusters (`awaits_dns`).
        self.pending = Some(Pending {
            type_url: type_url.to_owned(),
            version,
            failures,
            replaced: BTreeMap::new(),
            dns,
            raw: Vec::new(),
        });
        out
    }

    // === DNS (STRICT_DNS clusters) ===

    /// Ask for the hosts of `p` that are not resolved (unless a lookup is
    /// out already); returns them all, for the response to wait for.
    fn want_dns(&mut self, p: &ClusterPlan) -> Vec<(String, u16)> {
        let mut unresolved = Vec::new();
        for (host, port, _) in &p.dns {
            let key = (host.clone(), *port);
            if self.dns.contains_key(&key) {
                continue;
            }
            if !self.dns_asked.contains(&key) {
                self.dns_wanted.insert(key.clone());
            }
            unresolved.push(key);
        }
        unresolved
    }

    /// Ask again for hosts whose lookup failed, with back-off (1 s, 2 s,
    /// 4 s ... up to 60 s after each failure), while a cluster names them:
    /// a resolver that was not ready when a cluster arrived does not leave
    /// it without endpoints for good. Call it on the driver's timer, then
    /// `take_unresolved`.
    pub fn retry_dns(&mut self, now: Instant) {
        if self.dns_retry.is_empty() {
            return; // the usual case: no scan of the clusters
        }
        let named: BTreeSet<(String, u16)> = self
            .clusters
            .values()
            .chain(self.static_clusters.values())
            .flat_map(|p| p.dns.iter().map(|(h, pt, _)| (h.clone(), *pt)))
            .collect();
        self.dns_retry.retain(|k, _| named.contains(k));
        for (key, (failures, next)) in &mut self.dns_retry {
            let backoff = Duration::from_secs(1 << (*failures).clamp(1, 7).saturating_sub(1))
                .min(Duration::from_secs(60));
            match next {
                None => *next = Some(now + backoff),
                Some(at) if now >= *at => {
                    if !self.dns_asked.contains(key) && !self.dns.contains_key(key) {
                        tracing::debug!("looking up {} again ({failures} failure(s))", key.0);
                        self.dns_wanted.insert(key.clone());
                    }
                    *next = Some(now + backoff);
                }
                Some(_) => {}
            }
        }
    }

    /// Hosts to look up. Call it after every response (and once at the
    /// start, for the static clusters), and hand each answer to
    /// `on_resolved`; a host is not returned again while its lookup is out.
    #[must_use]
    pub fn take_unresolved(&mut self) -> Vec<(String, u16)> {
        let hosts = std::mem::take(&mut self.dns_wanted);
        self.dns_asked.extend(hosts.iter().cloned());
        hosts.into_iter().collect()
    }

    /// Whether lookups taken by `take_unresolved` are still out.
    pub fn resolving(&self) -> bool {
        !self.dns_asked.is_empty()
    }

    /// Whether the answer to the response being handled waits for DNS:
    /// its clusters name hosts whose lookups are out. Until they are in
    /// (`on_resolved`) or the driver stops waiting (`stop_waiting_for_dns`),
    /// `settle` answers nothing, so that a host that does not resolve
    /// NACKs the clusters that name it.
    pub fn awaits_dns(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| !p.dns.is_empty())
    }

    /// Answer the response being handled without the lookups still out
    /// (returned): their clusters wait for them, and a failure is logged,
    /// not NACKed.
    pub fn stop_waiting_for_dns(&mut self) -> Vec<(String, u16)> {
        self.pending
            .as_mut()
            .map(|p| std::mem::take(&mut p.dns).into_iter().collect())
            .unwrap_or_default()
    }

    /// A host's addresses, or why it did not resolve. A failure NACKs the
    /// clusters that name it if the response being handled waits for this
    /// host (`awaits_dns`); otherwise it is logged, and they wait until
    /// the server sends them again. Resolved once: the clusters that name
    /// it later use the same answer. Returns whether clusters changed:
    /// then push (`update`), which is ACK-neutral when no response is
    /// being answered.
    #[must_use]
    pub fn on_resolved(
        &mut self,
        host: String,
        port: u16,
        addrs: Result<Vec<std::net::SocketAddrV4>, String>,
    ) -> bool {
        let key = (host, port);
        self.dns_asked.remove(&key);
        let users: Vec<String> = self
            .clusters
            .iter()
            .chain(self.static_clusters.iter())
            .filter(|(_, p)| p.dns.iter().any(|(h, pt, _)| *h == key.0 && *pt == key.1))
            .map(|(n, _)| n.clone())
            .collect();
        let waiting = self
            .pending
            .as_mut()
            .and_then(|p| p.dns.remove(&key).then_some(p));
        match addrs {
            Ok(a) => {
                self.dns_retry.remove(&key);
                self.dns.insert(key, a);
                let changed = !users.is_empty();
                self.dirty_clusters.extend(users);
                changed
            }
            Err(e) => {
                let retry = self.dns_retry.entry(key.clone()).or_insert((0, None));
                *retry = (retry.0 + 1, None);
                let reason = format!("cannot resolve {}: {e}", key.0);
                match waiting {
                    Some(p) => p.failures.extend(users.into_iter().map(|name| Failure {
                        name,
                        reason: reason.clone(),
                    })),
                    None => tracing::warn!("{reason} (clusters {users:?} wait for it)"),
                }
                false
            }
        }
    }

    /// The endpoints of a STRICT_DNS plan from the answers held; `None`
    /// while a host is not resolved.
    fn dns_endpoints(&self, p: &ClusterPlan) -> Option<Vec<EndpointConfig>> {
        let mut eps: BTreeMap<std::net::SocketAddrV4, u32> = BTreeMap::new();
        for (host, port, weight) in &p.dns {
            for a in self.dns.get(&(host.clone(), *port))? {
                *eps.entry(*a).or_default() += weight;
            }
        }
        Some(
            eps.into_iter()
                .map(|(a, w)| EndpointConfig {
                    address: a.to_string(),
                    weight: w.clamp(1, 128),
                })
                .collect(),
        )
    }

    // === the data plane ===

    /// The update that brings the data plane to the desired state, from
    /// what changed since the last push (everything, when a full push is
    /// due). `None` when nothing changed.
    pub fn update(&mut self) -> Option<ProxyUpdate> {
        if !self.synced {
            return None;
        }
        let full = self.full_push;
        if full {
            self.dirty_listeners = self
                .listeners
                .keys()
                .chain(self.static_listeners.keys())
                .chain(self.pushed_listeners.keys())
                .cloned()
                .collect();
            self.dirty_clusters = self
                .clusters
                .keys()
                .chain(self.static_clusters.keys())
                .chain(self.pushed_clusters.keys())
                .cloned()
                .collect();
            self.dirty_routes = self
                .routes
                .keys()
                .chain(self.pushed_routes.keys())
                .filter(|n| !n.starts_with("inline:"))
                .cloned()
                .collect();
        }
        let mut u = ProxyUpdate {
            version: self.version_label(),
            full,
            partial: true,
            ..ProxyUpdate::default()
        };
        for n in &self.dirty_clusters {
            let exists = self.static_clusters.contains_key(n) || self.clusters.contains_key(n);
            match self.desired_cluster(n) {
                // Warming (its new assignment has not come): the data plane
                // keeps what it has meanwhile, as Envoy does.
                None if exists => {}
                Some(c) if full || self.pushed_clusters.get(n) != Some(&c) => u.clusters.push(c),
                Some(_) => {}
                None if self.pushed_clusters.contains_key(n) => u.remove_clusters.push(n.clone()),
                None => {}
            }
        }
        for n in &self.dirty_listeners {
            let want = self
                .static_listeners
                .get(n)
                .or_else(|| self.listeners.get(n).and_then(Option::as_ref));
            match want {
                // Warming (its RDS routes have not come): the data plane
                // keeps what it has meanwhile, as Envoy does (a full push
                // carries the old version).
                Some(l) if !self.listener_warm(l) => {
                    if full && let Some(old) = self.pushed_listeners.get(n) {
                        u.listeners.push(old.clone());
                        if let Some(r) = self.pushed_routes.get(&hcm::inline_name(n)) {
                            u.route_configs.push(r.clone());
                        }
                    }
                }
                Some(l) if full || self.pushed_listeners.get(n) != Some(&l.cfg) => {
                    u.listeners.push(l.cfg.clone())
                }
                Some(_) => {}
                None if self.pushed_listeners.contains_key(n) => u.remove_listeners.push(n.clone()),
                None => {}
            }
            // Its inline route configuration goes with it (in the same
            // update, so the listener never names one that is not there).
            // A warming listener's old version keeps its old one.
            if want.is_some_and(|l| !self.listener_warm(l)) {
                continue;
            }
            let rname = hcm::inline_name(n);
            match want.and_then(ListenerPlan::inline_routes) {
                Some(r) if full || self.pushed_routes.get(&rname) != Some(r) => {
                    u.route_configs.push(r.clone())
                }
                Some(_) => {}
                None if self.pushed_routes.contains_key(&rname) => {
                    u.remove_route_configs.push(rname)
                }
                None => {}
            }
        }
        // Route configurations from RDS (inline ones went with their
        // listeners above).
        for n in &self.dirty_routes {
            if n.starts_with("inline:") {
                continue;
            }
            let wanted = self.rds_wanted.contains_key(n);
            match self.routes.get(n).filter(|_| wanted) {
                Some(r) if full || self.pushed_routes.get(n) != Some(r) => {
                    u.route_configs.push(r.clone())
                }
                Some(_) => {}
                // Wanted, but said to be gone: the data plane keeps the
                // version it has.
                None if wanted => {
                    if full && let Some(r) = self.pushed_routes.get(n) {
                        u.route_configs.push(r.clone());
                    }
                }
                None if self.pushed_routes.contains_key(n) => {
                    u.remove_route_configs.push(n.clone())
                }
                None => {}
            }
        }
        let empty = u.listeners.is_empty()
            && u.clusters.is_empty()
            && u.route_configs.is_empty()
            && u.remove_listeners.is_empty()
            && u.remove_clusters.is_empty()
            && u.remove_route_configs.is_empty();
        if empty && !full {
            self.dirty_clusters.clear();
            self.dirty_listeners.clear();
            self.dirty_routes.clear();
            return None;
        }
        Some(u)
    }

    /// A cluster as the data plane should have it: `None` if it does not
    /// exist or is still warming (waiting for its endpoints).
    fn desired_cluster(&self, name: &str) -> Option<ClusterConfig> {
        let p = self
            .static_clusters
            .get(name)
            .or_else(|| self.clusters.get(name))?;
        if !p.dns.is_empty() {
            return Some(ClusterConfig {
                endpoints: self.dns_endpoints(p)?,
                ..p.cfg.clone()
            });
        }
        let Some(eds) = &p.eds else {
            return Some(p.cfg.clone());
        };
        let eps = match self.assignments.get(eds) {
            Some(e) => e.clone(),
            None if self.eds_missing.contains(eds) => Vec::new(),
            None => return None, // warming
        };
        Some(ClusterConfig {
            endpoints: eps,
            ..p.cfg.clone()
        })
    }

    /// The label of what an update pushed now serves: each type's version
    /// in force, and for the response being answered (if nothing in it was
    /// rejected) its own version: its resources are in this update, and its
    /// ACK comes after the push.
    fn version_label(&self) -> String {
        // A response with rejections is NACKed: its version does not
        // become the one in force, so it does not label the update either.
        let v = |t: &TypeState, url: &str| match &self.pending {
            Some(p) if p.type_url == url && p.failures.is_empty() => p.version.clone(),
            _ => t.version.clone(),
        };
        let (l, c, e) = (v(&self.lds, LDS), v(&self.cds, CDS), v(&self.eds, EDS));
        if l.is_empty() && c.is_empty() && e.is_empty() {
            return "bootstrap".into();
        }
        let r = v(&self.rds, RDS);
        if r.is_empty() {
            format!("lds:{l} cds:{c} eds:{e}")
        } else {
            format!("lds:{l} cds:{c} eds:{e} rds:{r}")
        }
    }

    /// The data plane took `u` (except `rejected`), or could not be
    /// reached (`Err`). Records what it has, and returns the ACK or NACK
    /// of the response being handled, if any and unless it waits for DNS
    /// (`awaits_dns`). Call it after every push, and after every response
    /// even when nothing was pushed (`u` = `None`).
    pub fn settle(
        &mut self,
        u: Option<&ProxyUpdate>,
        result: Result<Vec<Rejected>, String>,
    ) -> Option<Request> {
        let mut dp_failures = Vec::new();
        match (u, result) {
            (Some(u), Ok(rejected)) => {
                let bad =
                    |kind: &str, n: &str| rejected.iter().any(|r| r.kind == kind && r.name == n);
                if u.full {
                    // What the data plane rejected, it kept as it was.
                    self.pushed_listeners.retain(|n, _| bad("listener", n));
                    self.pushed_clusters.retain(|n, _| bad("cluster", n));
                    self.pushed_routes.retain(|n, _| bad("route_config", n));
                }
                for n in &u.remove_route_configs {
                    self.pushed_routes.remove(n);
                }
                for r in &u.route_configs {
                    if !bad("route_config", &r.name) {
                        self.pushed_routes.insert(r.name.clone(), r.clone());
                    }
                }
                for n in &u.remove_listeners {
                    self.pushed_listeners.remove(n);
                }
                for n in &u.remove_clusters {
                    self.pushed_clusters.remove(n);
                }
                for l in &u.listeners {
                    if bad("listener", &l.name) {
                        self.rejected_listeners.insert(l.name.clone());
                    } else {
                        self.rejected_listeners.remove(&l.name);
                        self.pushed_listeners.insert(l.name.clone(), l.clone());
                    }
                }
                for c in &u.clusters {
                    if bad("cluster", &c.name) {
                        self.rejected_clusters.insert(c.name.clone());
                    } else {
                        self.rejected_clusters.remove(&c.name);
                        self.pushed_clusters.insert(c.name.clone(), c.clone());
                    }
                }
                for r in rejected {
                    // Looked at again when the server sends it again.
                    for m in self.unchanged.values_mut() {
                        m.retain(|_, n| *n != r.name);
                    }
                    // An inline route configuration is its listener's.
                    let (kind, name) = match r.name.strip_prefix("inline:") {
                        Some(l) if r.kind == "route_config" => {
                            ("listener".to_string(), l.to_string())
                        }
                        _ => (r.kind.clone(), r.name.clone()),
                    };
                    if kind == "listener" {
                        self.rejected_listeners.insert(name.clone());
                    }
                    dp_failures.push((
                        kind,
                        Failure {
                            name,
                            reason: format!("rejected by the data plane: {r}"),
                        },
                    ));
                }
                self.full_push = false;
                self.dirty_clusters.clear();
                self.dirty_listeners.clear();
                self.dirty_routes.clear();
            }
            (Some(_), Err(e)) => {
                // Not applied: NACKed, and pushed in full once possible.
                tracing::warn!("cannot configure the data plane: {e}; will retry");
                self.full_push = true;
                let kind = match self.pending.as_ref().map(|p| p.type_url.as_str()) {
                    Some(LDS) => "listener",
                    Some(RDS) => "route_config",
                    _ => "cluster",
                };
                dp_failures.push((
                    kind.to_string(),
                    Failure {
                        name: "(data plane)".into(),
                        reason: e,
                    },
                ));
            }
            (None, _) => {}
        }
        let p = self.pending.as_mut()?;
        for (kind, f) in dp_failures {
            let of_this_type = match p.type_url.as_str() {
                LDS => kind == "listener",
                RDS => kind == "route_config",
                _ => kind == "cluster",
            };
            if of_this_type {
                p.failures.push(f);
            } else {
                tracing::warn!("{}: {}", f.name, f.reason);
            }
        }
        if !p.dns.is_empty() {
            // Answered once its lookups are in: a push meanwhile (the
            // watchdog's) is ACK-neutral.
            return None;
        }
        let p = self.pending.take()?;
        let failed: BTreeSet<&str> = p.failures.iter().map(|f| f.name.as_str()).collect();
        let now = std::time::SystemTime::now();
        let raw = self.raw.entry(p.type_url.clone()).or_default();
        for (name, version, any) in &p.raw {
            if !failed.contains(name.as_str()) {
                let version = if version.is_empty() {
                    &p.version
                } else {
                    version
                };
                raw.insert(
                    name.clone(),
                    RawResource {
                        version: version.clone(),
                        any: any.clone(),
                        updated: now,
                    },
                );
            }
        }
        // Rejected here or by the data plane: not in force, so not listed
        // in the next stream's initial_resource_versions (the server then
        // sends them again, and they are judged again).
        self.restore_versions(&p, p.failures.iter().map(|f| f.name.as_str()));
        Some(self.ack_or_nack(&p.type_url, p.version, p.failures))
    }

    fn ack_or_nack(&mut self, type_url: &str, version: String, failures: Vec<Failure>) -> Request {
        let accepted = failures.is_empty();
        let r = XdsReport {
            ty: xds_type(type_url),
            accepted,
            version: version.clone(),
            config_dump: None,
        };
        if accepted {
            self.last_acks.insert(r.ty, r.clone());
        }
        self.reports.push(r);
        let t = self.ty(type_url).expect("known type");
        if accepted {
            t.version = version;
            t.last_error = None;
            self.acks += 1;
            self.request(type_url, None, false)
        } else {
            let msg = failures
                .iter()
                .map(|f| format!("{}: {}", f.name, f.reason))
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!("NACK {} version {version:?}: {msg}", short(type_url));
            t.last_error = Some(msg.clone());
            self.nacks += 1;
            self.request(type_url, Some(msg), false)
        }
    }

    /// The stream ended: a response not answered yet cannot be answered on
    /// the next one (its nonce belongs to this one). The server sends it
    /// again to the versions held.
    pub fn on_stream_end(&mut self) {
        if let Some(p) = self.pending.take() {
            tracing::debug!(
                "{} version {:?}: not answered before the stream ended",
                short(&p.type_url),
                p.version
            );
            self.restore_versions(&p, p.replaced.keys().map(String::as_str));
        }
    }

    /// The data plane restarted (or was unreachable): push everything, and
    /// report the last ACKs again (a new process counts from zero).
    pub fn resync(&mut self) {
        self.full_push = true;
        self.reports.extend(self.last_acks.values().cloned());
    }

    pub fn status(&self) -> serde_json::Value {
        let t = |t: &TypeState| {
            serde_json::json!({
                "subscribed": t.subscribed,
                "version": t.version,
                "last_error": t.last_error,
            })
        };
        serde_json::json!({
            "lds": t(&self.lds),
            "cds": t(&self.cds),
            "eds": t(&self.eds),
            "rds": t(&self.rds),
            "listeners": self.pushed_listeners.len(),
            "route_configs": self.pushed_routes.len(),
            "clusters": self.pushed_clusters.len(),
            "acks": self.acks,
            "nacks": self.nacks,
            "ignored": self.ignored.count.load(std::sync::atomic::Ordering::Relaxed),
            "synced": self.synced,
        })
    }
}

/// The ACK/NACK waiting for the data plane's answer.
#[derive(Debug)]
struct Pending {
    type_url: String,
    version: String,
    failures: Vec<Failure>,
    /// Delta: the versions this response's resources replaced (`None`: it
    /// had none), put back for those that end up rejected, so that a new
    /// stream's `initial_resource_versions` lists only what is in force.
    replaced: BTreeMap<String, Option<String>>,
    /// Hosts its clusters name whose lookups are out: answered once they
    /// are in, or the driver stops waiting.
    dns: BTreeSet<(String, u16)>,
    /// Its decoded resources as sent (name, version, body): kept for
    /// `/config_dump` once accepted.
    raw: Vec<(String, String, Any)>,
}

/// An accepted resource as the server sent it.
#[derive(Debug, Clone)]
pub struct RawResource {
    pub version: String,
    pub any: Any,
    pub updated: std::time::SystemTime,
}

fn hash_bytes(b: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// The admin stats' name for a type URL (one of the four we subscribe to).
fn xds_type(type_url: &str) -> XdsType {
    match type_url {
        LDS => XdsType::Lds,
        EDS => XdsType::Eds,
        RDS => XdsType::Rds,
        _ => XdsType::Cds,
    }
}

pub fn short(type_url: &str) -> &'static str {
    match type_url {
        LDS => "LDS",
        CDS => "CDS",
        EDS => "EDS",
        RDS => "RDS",
        _ => "?",
    }
}

#[derive(Debug)]
enum Resource {
    Listener(Box<Listener>),
    Cluster(Box<Cluster>),
    Assignment(ClusterLoadAssignment),
    Routes(Box<RouteConfiguration>),
}

impl Resource {
    fn name(&self) -> &str {
        match self {
            Resource::Listener(l) => &l.name,
            Resource::Cluster(c) => &c.name,
            Resource::Assignment(a) => &a.cluster_name,
            Resource::Routes(r) => &r.name,
        }
    }
}

fn decode_named(type_url: &str, any: &Any) -> Result<Resource, String> {
    if any.type_url != type_url {
        return Err(format!(
            "type {:?} in a {} response",
            any.type_url,
            short(type_url)
        ));
    }
    let bytes = any.value.as_slice();
    let r = match type_url {
        LDS => Listener::decode(bytes).map(|l| Resource::Listener(Box::new(l))),
        CDS => Cluster::decode(bytes).map(|c| Resource::Cluster(Box::new(c))),
        RDS => RouteConfiguration::decode(bytes).map(|r| Resource::Routes(Box::new(r))),
        _ => ClusterLoadAssignment::decode(bytes).map(Resource::Assignment),
    };
    r.map_err(|e| format!("cannot decode: {e}"))
}

#[cfg(test)]
mod tests {
    //! The state machine on virtual time: `now` is a base instant plus
    //! offsets, so timeouts are driven without sleeping.

    use super::*;
    use crate::bootstrap::any_from_yaml;

    const TIMEOUT: Duration = Duration::from_secs(15);

    fn xds(t0: Instant) -> Xds {
        Xds::new(Mode::Sotw, Node::default(), TIMEOUT, Arc::default(), t0)
    }

    fn sotw(type_url: &str, version: &str, yaml: &[&str]) -> DiscoveryResponse {
        let full_name = type_url.rsplit('/').next().unwrap();
        DiscoveryResponse {
            version_info: version.into(),
            resources: yaml
                .iter()
                .map(|y| any_from_yaml(full_name, y).unwrap())
                .collect(),
            type_url: type_url.into(),
            nonce: format!("n-{version}"),
            ..Default::default()
        }
    }

    /// The SotW requests of `reqs` as (type, names, version, NACK message).
    fn summary(reqs: &[Request]) -> Vec<(&'static str, Vec<String>, String, Option<String>)> {
        reqs.iter()
            .map(|r| match r {
                Request::Sotw(r) => (
                    short(&r.type_url),
                    r.resource_names.clone(),
                    r.version_info.clone(),
                    r.error_detail.as_ref().map(|e| e.message.clone()),
                ),
                Request::Delta(_) => panic!("a Delta request on a SotW stream: {r:?}"),
            })
            .collect()
    }

    const EDS_CLUSTER: &str = "{name: web, type: EDS, eds_cluster_config: {eds_config: {ads: {}}}}";
    const LISTENER: &str = r#"
name: l
address: {socket_address: {address: 0.0.0.0, port_value: 80}}
filter_chains:
- filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: s
      cluster: web
"#;

    #[test]
    fn an_assignment_that_never_comes_times_out_on_the_callers_clock() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut x = xds(t0);
        assert_eq!(
            summary(&x.on_stream_start()),
            [("CDS", vec![], "".into(), None)]
        );

        // The cluster comes at 1 s and wants its assignment from then on.
        let out = x.on_sotw(sotw(CDS, "c1", &[EDS_CLUSTER]), at(1));
        assert_eq!(
            summary(&out.requests),
            [("EDS", vec!["web".to_string()], "".into(), None)]
        );
        assert!(!out.push, "nothing goes to the data plane before listeners");
        let ack = x.settle(None, Ok(Vec::new())).expect("the CDS answer");
        assert_eq!(summary(&[ack]), [("CDS", vec![], "c1".into(), None)]);

        // Not yet: the timeout counts from the subscription, not the start.
        for now in [at(2), at(15), at(16) - Duration::from_millis(1)] {
            let o = x.on_timer(now);
            assert!(o.requests.is_empty() && !o.push, "{now:?}: {o:?}");
        }
        assert!(x.eds_missing.is_empty());

        // Expired: the cluster is warm with no endpoints, and listeners are
        // asked for.
        let o = x.on_timer(at(16));
        assert_eq!(summary(&o.requests), [("LDS", vec![], "".into(), None)]);
        assert!(!o.push, "still no listeners: nothing to push");
        assert!(x.eds_missing.contains("web"));
        // Expiry is once: a later tick changes nothing (before 30 s, when
        // the listeners' own timeout would push what there is).
        let o = x.on_timer(at(29));
        assert!(o.requests.is_empty() && !o.push, "{o:?}");

        // The first listeners make the first (full) push, with the cluster
        // empty rather than held back.
        let out = x.on_sotw(sotw(LDS, "l1", &[LISTENER]), at(17));
        assert!(out.push);
        let u = x.update().expect("the first push");
        assert!(u.full);
        assert_eq!(u.listeners.len(), 1);
        let web: Vec<_> = u
            .clusters
            .iter()
            .map(|c| (&c.name[..], c.endpoints.len()))
            .collect();
        assert_eq!(web, [("web", 0)]);
        let ack = x.settle(Some(&u), Ok(Vec::new())).expect("the LDS answer");
        assert_eq!(summary(&[ack]), [("LDS", vec![], "l1".into(), None)]);

        // The assignment arriving late fills the cluster in.
        let out = x.on_sotw(
            sotw(
                EDS,
                "e1",
                &["{cluster_name: web, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}}]}]}"],
            ),
            at(40),
        );
        assert!(out.push);
        let u = x.update().expect("the endpoints");
        assert!(!u.full);
        assert_eq!(u.clusters[0].endpoints.len(), 1);
        assert!(x.eds_missing.is_empty());
    }

    const HTTP_LISTENER: &str = r#"
name: h
address: {socket_address: {address: 0.0.0.0, port_value: 8080}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: h
      rds: {route_config_name: "8080", config_source: {ads: {}}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;
    const ROUTES_8080: &str = "{name: '8080', virtual_hosts: [{name: all, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: web}}]}]}";

    #[test]
    fn an_rds_listener_warms_until_its_routes_come_then_both_go_in_one_push() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut x = xds(t0);
        x.on_stream_start();
        x.on_sotw(sotw(CDS, "c1", &["{name: web, type: STATIC}"]), at(1));
        x.settle(None, Ok(Vec::new())).expect("CDS ACK");
        let out = x.on_sotw(sotw(LDS, "l1", &[HTTP_LISTENER, LISTENER]), at(2));
        assert_eq!(
            summary(&out.requests),
            [("RDS", vec!["8080".to_string()], "".into(), None)],
            "the listener's routes are asked for"
        );
        // The first push: the TCP listener, not the warming HTTP one.
        let u = x.update().expect("first push");
        let names: Vec<&str> = u.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["l"]);
        assert!(u.route_configs.is_empty());
        let ack = x.settle(Some(&u), Ok(Vec::new())).expect("LDS ACK");
        assert_eq!(summary(&[ack]), [("LDS", vec![], "l1".into(), None)]);

        // The routes come: the listener and its routes go in one update.
        let out = x.on_sotw(sotw(RDS, "r1", &[ROUTES_8080]), at(3));
        assert!(out.push);
        let u = x.update().expect("the routes and their listener");
        assert_eq!(u.route_configs.len(), 1);
        assert_eq!(u.route_configs[0].name, "8080");
        assert_eq!(u.listeners.len(), 1);
        assert_eq!(u.listeners[0].name, "h");
        assert!(u.version.ends_with("rds:r1"), "{}", u.version);
        let ack = x.settle(Some(&u), Ok(Vec::new())).expect("RDS ACK");
        assert_eq!(
            summary(&[ack]),
            [("RDS", vec!["8080".to_string()], "r1".into(), None)]
        );

        // A route configuration the data plane would refuse is NACKed on
        // RDS, naming it; the old one stays.
        let bad = "{name: '8080', virtual_hosts: [{name: all, domains: ['a.*.b'], routes: []}]}";
        let out = x.on_sotw(sotw(RDS, "r2", &[bad]), at(4));
        assert!(x.update().is_none(), "nothing changed: {out:?}");
        let nack = x.settle(None, Ok(Vec::new())).expect("RDS NACK");
        let s = summary(&[nack]);
        assert_eq!(s[0].2, "r1", "a NACK keeps the version in force");
        assert!(
            s[0].3
                .as_deref()
                .unwrap_or("")
                .contains("8080: virtual_hosts[0].domains[0] = a.*.b"),
            "{s:?}"
        );

        // The listener goes: its routes are dropped and unsubscribed.
        let out = x.on_sotw(sotw(LDS, "l2", &[LISTENER]), at(5));
        assert_eq!(summary(&out.requests), [("RDS", vec![], "r1".into(), None)]);
        let u = x.update().expect("removal");
        assert_eq!(u.remove_listeners, ["h"]);
        assert_eq!(u.remove_route_configs, ["8080"]);
    }

    #[test]
    fn an_rds_name_that_never_comes_lets_its_listener_answer_404() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut x = xds(t0);
        x.on_stream_start();
        x.on_sotw(sotw(CDS, "c1", &["{name: web, type: STATIC}"]), at(1));
        x.settle(None, Ok(Vec::new()));
        x.on_sotw(sotw(LDS, "l1", &[HTTP_LISTENER]), at(2));
        let u = x.update().expect("first (full) push");
        assert!(u.listeners.is_empty(), "warming");
        x.settle(Some(&u), Ok(Vec::new()));
        assert!(!x.on_timer(at(3)).push);
        let o = x.on_timer(at(2) + TIMEOUT);
        assert!(o.push);
        let u = x.update().expect("the listener without its routes");
        assert_eq!(u.listeners[0].name, "h");
        assert!(u.route_configs.is_empty());
    }

    #[test]
    fn a_silent_server_gets_listeners_asked_for_then_the_data_plane_what_there_is() {
        let t0 = Instant::now();
        let mut x = xds(t0);
        let static_cluster = translate::cluster(
            &Cluster::decode(
                crate::bootstrap::encode_yaml("envoy.config.cluster.v3.Cluster", "{name: s}")
                    .unwrap()
                    .as_slice(),
            )
            .unwrap(),
            &Ignored::default(),
        )
        .unwrap();
        x.set_static(Vec::new(), vec![static_cluster], t0);
        x.on_stream_start();
        assert!(x.update().is_none(), "not synced before listeners");

        let o = x.on_timer(t0 + TIMEOUT - Duration::from_millis(1));
        assert!(o.requests.is_empty() && !o.push, "{o:?}");
        let o = x.on_timer(t0 + TIMEOUT);
        assert_eq!(summary(&o.requests), [("LDS", vec![], "".into(), None)]);
        assert!(!o.push);

        let o = x.on_timer(t0 + TIMEOUT * 2 - Duration::from_millis(1));
        assert!(o.requests.is_empty() && !o.push, "{o:?}");
        let o = x.on_timer(t0 + TIMEOUT * 2);
        assert!(o.requests.is_empty() && o.push, "{o:?}");
        let u = x.update().expect("what there is");
        assert!(u.full);
        assert_eq!(
            u.clusters.iter().map(|c| &c.name[..]).collect::<Vec<_>>(),
            ["s"]
        );
    }

    fn dns_cluster(name: &str, host: &str) -> String {
        format!(
            "{{name: {name}, type: STRICT_DNS, load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {host}, port_value: 80}}}}}}}}]}}]}}}}"
        )
    }

    fn key(host: &str) -> (String, u16) {
        (host.to_owned(), 80)
    }

    #[test]
    fn a_host_that_does_not_resolve_nacks_the_clusters_that_name_it() {
        let t0 = Instant::now();
        let mut x = xds(t0);
        x.on_stream_start();
        let out = x.on_sotw(
            sotw(CDS, "c1", &[&dns_cluster("db", "db.invalid"), EDS_CLUSTER]),
            t0,
        );
        assert_eq!(x.take_unresolved(), [key("db.invalid")]);
        assert!(x.awaits_dns() && x.resolving());
        // The EDS subscription is there to send with the answer.
        assert_eq!(summary(&out.requests)[0].0, "EDS");
        // Nothing answers the response while its lookup is out.
        assert!(x.settle(None, Ok(Vec::new())).is_none());

        let changed = x.on_resolved("db.invalid".into(), 80, Err("no such host".into()));
        assert!(!changed);
        assert!(!x.awaits_dns() && !x.resolving());
        let nack = x.settle(None, Ok(Vec::new())).expect("the CDS answer");
        assert_eq!(
            summary(&[nack]),
            [(
                "CDS",
                vec![],
                "".into(),
                Some("db: cannot resolve db.invalid: no such host".into())
            )]
        );
    }

    #[test]
    fn one_lookup_per_host_and_answers_that_come_late_change_no_answer() {
        let t0 = Instant::now();
        let mut x = xds(t0);
        x.mark_synced_without_server(); // so that updates are made
        x.on_stream_start();
        let _ = x.on_sotw(sotw(CDS, "c1", &[&dns_cluster("a", "h1")]), t0);
        assert_eq!(x.take_unresolved(), [key("h1")]);
        // The driver stops waiting (DNS_WAIT, or the next response).
        assert_eq!(x.stop_waiting_for_dns(), [key("h1")]);
        let u = x.update();
        let ack = x.settle(u.as_ref(), Ok(Vec::new())).expect("the answer");
        assert_eq!(summary(&[ack]), [("CDS", vec![], "c1".into(), None)]);
        assert!(
            u.is_none_or(|u| u.clusters.is_empty()),
            "a waits for its host"
        );

        // Another cluster with the same host: no second lookup, but this
        // response waits for the one out.
        let _ = x.on_sotw(
            sotw(
                CDS,
                "c2",
                &[&dns_cluster("a", "h1"), &dns_cluster("b", "h1")],
            ),
            t0,
        );
        assert!(x.take_unresolved().is_empty());
        assert!(x.awaits_dns());
        assert!(x.settle(None, Ok(Vec::new())).is_none());
        let addr: std::net::SocketAddrV4 = "10.0.0.1:80".parse().unwrap();
        assert!(x.on_resolved("h1".into(), 80, Ok(vec![addr])));
        let u = x.update().expect("a and b, resolved");
        let mut names: Vec<_> = u.clusters.iter().map(|c| &c.name[..]).collect();
        names.sort_unstable();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(u.clusters[0].endpoints[0].address, "10.0.0.1:80");
        let ack = x.settle(Some(&u), Ok(Vec::new())).expect("the answer");
        assert_eq!(summary(&[ack]), [("CDS", vec![], "c2".into(), None)]);

        // Answered already: a late success is pushed ACK-neutrally, a late
        // failure is logged and changes nothing.
        let _ = x.on_sotw(
            sotw(
                CDS,
                "c3",
                &[
                    &dns_cluster("a", "h1"),
                    &dns_cluster("b", "h1"),
                    &dns_cluster("c", "h2"),
                    &dns_cluster("d", "h3"),
                ],
            ),
            t0,
        );
        assert_eq!(x.take_unresolved(), [key("h2"), key("h3")]);
        assert_eq!(x.stop_waiting_for_dns(), [key("h2"), key("h3")]);
        let u = x.update();
        assert!(x.settle(u.as_ref(), Ok(Vec::new())).is_some());
        assert!(x.on_resolved("h2".into(), 80, Ok(vec![addr])));
        let u = x.update().expect("c");
        assert_eq!(u.clusters.len(), 1);
        assert!(x.settle(Some(&u), Ok(Vec::new())).is_none(), "ACK-neutral");
        assert!(!x.on_resolved("h3".into(), 80, Err("timed out".into())));
        assert!(x.update().is_none());
        assert!(x.settle(None, Ok(Vec::new())).is_none());
        assert!(!x.resolving());
        assert_eq!((x.acks, x.nacks), (3, 0));
    }

    #[test]
    fn a_stream_that_ends_drops_the_answer_it_owed() {
        let t0 = Instant::now();
        let mut x = xds(t0);
        x.on_stream_start();
        let _ = x.on_sotw(sotw(CDS, "c1", &[&dns_cluster("a", "h1")]), t0);
        let _ = x.take_unresolved();
        x.on_stream_end();
        assert!(!x.awaits_dns());
        // The lookup is still out: not asked again on the next stream.
        assert!(x.resolving());
        x.on_stream_start();
        assert!(x.take_unresolved().is_empty());
        assert!(!x.on_resolved("h1".into(), 80, Err("timed out".into())));
        assert!(x.settle(None, Ok(Vec::new())).is_none());
    }
}

#[cfg(test)]
mod regressions {
    //! Defects found by independent checks (issue 18, point 0).

    use envoy_types::pb::envoy::service::discovery::v3::Resource as DeltaResource;

    use super::*;
    use crate::bootstrap::any_from_yaml;

    const TIMEOUT: Duration = Duration::from_secs(15);
    const GOOD: &str = "{name: good, type: EDS, eds_cluster_config: {eds_config: {ads: {}}}}";
    /// Envoy takes a 20-minute connect timeout; the data plane's limit is 10.
    const TOO_SLOW: &str = "{name: slow, type: EDS, connect_timeout: 1200s, eds_cluster_config: {eds_config: {ads: {}}}}";
    const GOOD_V2_TOO_SLOW: &str = "{name: good, type: EDS, connect_timeout: 1200s, eds_cluster_config: {eds_config: {ads: {}}}}";

    fn cluster(yaml: &str, version: &str) -> DeltaResource {
        let any = any_from_yaml("envoy.config.cluster.v3.Cluster", yaml).unwrap();
        let name = yaml
            .split("name: ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        DeltaResource {
            name: name.into(),
            version: version.into(),
            resource: Some(any),
            ..Default::default()
        }
    }

    fn delta_cds(nonce: &str, resources: Vec<DeltaResource>) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: nonce.into(),
            type_url: CDS.into(),
            nonce: nonce.into(),
            resources,
            ..Default::default()
        }
    }

    /// The CDS request a new stream starts with: its initial versions.
    fn initial_cds_versions(x: &mut Xds) -> BTreeMap<String, String> {
        x.on_stream_start()
            .into_iter()
            .find_map(|r| match r {
                Request::Delta(d) if d.type_url == CDS => {
                    Some(d.initial_resource_versions.into_iter().collect())
                }
                _ => None,
            })
            .expect("a CDS request")
    }

    /// The NACK message of `r`, if it is one.
    fn nack(r: &Request) -> Option<String> {
        match r {
            Request::Delta(d) => d.error_detail.as_ref().map(|e| e.message.clone()),
            Request::Sotw(s) => s.error_detail.as_ref().map(|e| e.message.clone()),
        }
    }

    #[test]
    fn a_cluster_the_data_plane_cannot_hold_is_nacked_on_cds() {
        let t0 = Instant::now();
        let mut x = Xds::new(Mode::Delta, Node::default(), TIMEOUT, Arc::default(), t0);
        x.on_stream_start();
        x.on_delta(
            delta_cds("1", vec![cluster(GOOD, "g1"), cluster(TOO_SLOW, "s1")]),
            t0,
        );
        let answer = x.settle(None, Ok(Vec::new())).expect("answered");
        let msg = nack(&answer).expect("a NACK on CDS");
        assert!(
            msg.contains("slow") && msg.contains("connect_timeout_ms = 1200000"),
            "{msg}"
        );
        assert!(!msg.contains("good"), "{msg}");
    }

    #[test]
    fn delta_lists_only_resources_in_force_after_a_nack() {
        let t0 = Instant::now();
        let mut x = Xds::new(Mode::Delta, Node::default(), TIMEOUT, Arc::default(), t0);
        x.on_stream_start();
        x.on_delta(delta_cds("1", vec![cluster(GOOD, "g1")]), t0);
        assert!(nack(&x.settle(None, Ok(Vec::new())).unwrap()).is_none());
        // An update of `good` and a new `slow`, both refused.
        x.on_delta(
            delta_cds(
                "2",
                vec![cluster(GOOD_V2_TOO_SLOW, "g2"), cluster(TOO_SLOW, "s1")],
            ),
            t0,
        );
        assert!(nack(&x.settle(None, Ok(Vec::new())).unwrap()).is_some());
        // The management server restarts: we hold good at g1, and no slow.
        x.on_stream_end();
        let held = initial_cds_versions(&mut x);
        assert_eq!(
            held,
            BTreeMap::from([("good".to_string(), "g1".to_string())])
        );
    }

    #[test]
    fn an_unanswered_response_is_not_claimed_on_the_next_stream() {
        let t0 = Instant::now();
        let mut x = Xds::new(Mode::Delta, Node::default(), TIMEOUT, Arc::default(), t0);
        x.on_stream_start();
        x.on_delta(delta_cds("1", vec![cluster(GOOD, "g1")]), t0);
        // The stream ends before the answer.
        x.on_stream_end();
        assert!(initial_cds_versions(&mut x).is_empty());
    }

    /// From a review: a host whose lookup failed was never looked up again,
    /// so a STRICT_DNS cluster that arrived before its resolver was ready
    /// stayed without endpoints for good.
    #[test]
    fn a_failed_lookup_is_tried_again_with_back_off() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut x = Xds::new(Mode::Sotw, Node::default(), TIMEOUT, Arc::default(), t0);
        x.on_stream_start();
        let dns = "{name: d, type: STRICT_DNS, load_assignment: {cluster_name: d, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: later.example, port_value: 80}}}}]}]}}";
        let cds = DiscoveryResponse {
            version_info: "c1".into(),
            resources: vec![any_from_yaml("envoy.config.cluster.v3.Cluster", dns).unwrap()],
            type_url: CDS.into(),
            nonce: "n1".into(),
            ..Default::default()
        };
        x.on_sotw(cds, t0);
        let host = ("later.example".to_string(), 80);
        assert_eq!(x.take_unresolved(), vec![host.clone()]);
        assert!(!x.on_resolved(host.0.clone(), 80, Err("not yet".into())));
        assert!(x.take_unresolved().is_empty());
        x.retry_dns(at(0));
        x.retry_dns(at(900));
        assert!(x.take_unresolved().is_empty(), "not before 1 s");
        x.retry_dns(at(1000));
        assert_eq!(x.take_unresolved(), vec![host.clone()], "asked again");
        assert!(!x.on_resolved(host.0.clone(), 80, Err("still not".into())));
        x.retry_dns(at(1100));
        x.retry_dns(at(3000));
        assert!(
            x.take_unresolved().is_empty(),
            "2 s after the second failure"
        );
        x.retry_dns(at(3100));
        assert_eq!(x.take_unresolved(), vec![host.clone()]);
        let ok = "10.0.0.7:80".parse().unwrap();
        assert!(
            x.on_resolved(host.0.clone(), 80, Ok(vec![ok])),
            "the cluster changes"
        );
        x.retry_dns(at(600_000));
        assert!(x.take_unresolved().is_empty(), "resolved: no more lookups");
    }

    #[test]
    fn the_update_is_labelled_with_the_version_it_serves() {
        let t0 = Instant::now();
        let mut x = Xds::new(Mode::Sotw, Node::default(), TIMEOUT, Arc::default(), t0);
        x.on_stream_start();
        let static_cluster = "{name: web, type: STATIC, load_assignment: {cluster_name: web, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 80}}}}]}]}}";
        let any = |ty: &str, y: &str| any_from_yaml(ty, y).unwrap();
        let resp = |url: &str, ty: &str, v: &str, y: &str| DiscoveryResponse {
            version_info: v.into(),
            resources: vec![any(ty, y)],
            type_url: url.into(),
            nonce: format!("n-{v}"),
            ..Default::default()
        };
        x.on_sotw(
            resp(CDS, "envoy.config.cluster.v3.Cluster", "c1", static_cluster),
            t0,
        );
        x.settle(None, Ok(Vec::new()));
        let listener = "{name: l, address: {socket_address: {address: 0.0.0.0, port_value: 80}}, filter_chains: [{filters: [{name: envoy.filters.network.tcp_proxy, typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: s, cluster: web}}]}]}";
        let out = x.on_sotw(
            resp(LDS, "envoy.config.listener.v3.Listener", "l1", listener),
            t0,
        );
        assert!(out.push);
        let u = x.update().expect("an update");
        assert_eq!(
            u.version, "lds:l1 cds:c1 eds:",
            "the LDS version it carries"
        );
    }
}
