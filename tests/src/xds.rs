//! A scripted xDS management server for the tests: a tonic ADS server on
//! envoy-types, on a Unix socket (reachable from any network namespace:
//! Envoy in one, the agent in the host) or on loopback TCP.
//!
//! The test sets resources per type (`set`); every connected stream gets
//! them, as state of the world (whole LDS/CDS state, the subscribed EDS
//! names) or as Delta (what changed since the client's versions, and what
//! went). Every request received is recorded, so a test can assert ACKs,
//! NACKs and their `error_detail`. `stop` and `start_again` play a server
//! restart on the same address.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control_agent::bootstrap::any_from_yaml;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub node_id: String,
    pub delta: bool,
    pub type_url: String,
    pub version_info: String,
    pub response_nonce: String,
    pub error: Option<String>,
    pub names: Vec<String>,
    pub initial_versions: BTreeMap<String, String>,
}

impl Seen {
    pub fn is_nack(&self) -> bool {
        self.error.is_some()
    }
}

#[derive(Debug, Default)]
struct State {
    /// type → name → (version, resource).
    resources: HashMap<String, BTreeMap<String, (String, Any)>>,
    /// type → SotW version_info.
    versions: HashMap<String, u64>,
    seen: Vec<Seen>,
    nonce: u64,
    streams: u64,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
}

/// Where it listens.
#[derive(Debug, Clone)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

/// The server, run on its own thread and runtime.
pub struct XdsServer {
    shared: Shared,
    pub listen: Listen,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "XdsServer({:?})", self.listen)
    }
}

impl XdsServer {
    /// Serve on `listen` (a Unix socket path, or a loopback TCP port; port
    /// 0 picks one).
    pub fn start(listen: Listen) -> XdsServer {
        let (changed, _) = watch::channel(0);
        let shared = Shared {
            state: Arc::new(Mutex::new(State::default())),
            changed,
        };
        let mut s = XdsServer {
            shared,
            listen,
            stop: None,
            thread: None,
        };
        s.start_again();
        s
    }

    /// The address to give a client: `unix:/path` or `http://127.0.0.1:port`.
    pub fn uri(&self) -> String {
        match &self.listen {
            Listen::Unix(p) => format!("unix:{}", p.display()),
            Listen::Tcp(a) => format!("http://{a}"),
        }
    }

    /// An Envoy bootstrap whose ADS server is one of these on Unix socket
    /// `sock` (a pipe address reaches it from any namespace): node
    /// `node_id`, admin on 127.0.0.1:9901, Delta if `delta`. The agent runs
    /// the same file (`control-agent --bootstrap`).
    pub fn envoy_bootstrap(node_id: &str, sock: &std::path::Path, delta: bool) -> String {
        format!(
            r#"
node: {{id: {node_id}, cluster: {node_id}}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 9901}}}}}}
dynamic_resources:
  ads_config:
    api_type: {}
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{pipe: {{path: {}}}}}}}}}]}}]
"#,
            if delta { "DELTA_GRPC" } else { "GRPC" },
            sock.display()
        )
    }

    /// (Re)start serving on the same address, with the same resources.
    pub fn start_again(&mut self) {
        assert!(self.thread.is_none(), "already running");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = self.shared.clone();
        let listen = self.listen.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let svc = AggregatedDiscoveryServiceServer::new(Ads { shared })
                    .max_decoding_message_size(256 << 20)
                    .max_encoding_message_size(256 << 20);
                let router = tonic::transport::Server::builder().add_service(svc);
                let stop = async {
                    let _ = stop_rx.await;
                };
                match listen {
                    Listen::Unix(p) => {
                        let _ = std::fs::remove_file(&p);
                        let l = tokio::net::UnixListener::bind(&p).expect("bind xDS unix socket");
                        let _ = ready_tx.send(Listen::Unix(p));
                        let incoming = tokio_stream::wrappers::UnixListenerStream::new(l);
                        // Stopping drops every stream at once, as a crash
                        // would (a graceful stop waits for clients).
                        tokio::select! {
                            _ = router.serve_with_incoming(incoming) => {}
                            _ = stop => {}
                        }
                    }
                    Listen::Tcp(a) => {
                        let l = tokio::net::TcpListener::bind(a)
                            .await
                            .expect("bind xDS tcp");
                        let _ = ready_tx.send(Listen::Tcp(l.local_addr().unwrap()));
                        let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
                        tokio::select! {
                            _ = router.serve_with_incoming(incoming) => {}
                            _ = stop => {}
                        }
                    }
                }
            });
        });
        self.listen = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("xDS server started");
        self.stop = Some(stop_tx);
        self.thread = Some(thread);
    }

    /// Stop serving (streams end; the resources are kept).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Replace every resource of `type_url` (name → resource); resources
    /// whose bytes did not change keep their version.
    pub fn set(&self, type_url: &str, resources: Vec<(String, Any)>) {
        let mut st = self.shared.state.lock().unwrap();
        let v = {
            let e = st.versions.entry(type_url.to_owned()).or_insert(0);
            *e += 1;
            *e
        };
        let old = st.resources.remove(type_url).unwrap_or_default();
        let new: BTreeMap<String, (String, Any)> = resources
            .into_iter()
            .map(|(n, a)| {
                let ver = match old.get(&n) {
                    Some((ver, prev)) if *prev == a => ver.clone(),
                    _ => v.to_string(),
                };
                (n, (ver, a))
            })
            .collect();
        st.resources.insert(type_url.to_owned(), new);
        drop(st);
        self.shared.changed.send_modify(|g| *g += 1);
    }

    /// Add or replace some resources of `type_url`, keeping the others.
    pub fn upsert(&self, type_url: &str, resources: Vec<(String, Any)>) {
        let mut all: Vec<(String, Any)> = {
            let st = self.shared.state.lock().unwrap();
            st.resources
                .get(type_url)
                .map(|m| m.iter().map(|(n, (_, a))| (n.clone(), a.clone())).collect())
                .unwrap_or_default()
        };
        for (n, a) in resources {
            all.retain(|(m, _)| *m != n);
            all.push((n, a));
        }
        self.set(type_url, all);
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state.lock().unwrap().seen.clone()
    }

    /// Streams opened so far.
    pub fn streams(&self) -> u64 {
        self.shared.state.lock().unwrap().streams
    }

    /// Wait until a request matching `f` has been received; it.
    pub fn wait_for(&self, within: Duration, what: &str, f: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.seen().into_iter().rev().find(|s| f(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}; the server saw:\n{:#?}",
                self.seen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        self.stop();
        if let Listen::Unix(p) = &self.listen {
            let _ = std::fs::remove_file(p);
        }
    }
}

struct Ads {
    shared: Shared,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Shared {
    fn record(&self, s: Seen) {
        self.state.lock().unwrap().seen.push(s);
    }
    fn nonce(&self) -> String {
        let mut st = self.state.lock().unwrap();
        st.nonce += 1;
        st.nonce.to_string()
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut incoming = req.into_inner();
        let shared = self.shared.clone();
        shared.state.lock().unwrap().streams += 1;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut changed = shared.changed.subscribe();
            let mut node_id = String::new();
            // type → (subscribed names (empty: wildcard), version sent).
            let mut subs: BTreeMap<String, (Vec<String>, Option<String>)> = BTreeMap::new();
            loop {
                tokio::select! {
                    msg = incoming.next() => {
                        let Some(Ok(r)) = msg else { return };
                        if let Some(n) = &r.node { node_id = n.id.clone(); }
                        shared.record(Seen {
                            node_id: node_id.clone(),
                            delta: false,
                            type_url: r.type_url.clone(),
                            version_info: r.version_info.clone(),
                            response_nonce: r.response_nonce.clone(),
                            error: r.error_detail.as_ref().map(|e| e.message.clone()),
                            names: r.resource_names.clone(),
                            initial_versions: BTreeMap::new(),
                        });
                        let e = subs.entry(r.type_url.clone()).or_insert((Vec::new(), None));
                        let names_changed = e.0 != r.resource_names;
                        e.0 = r.resource_names.clone();
                        // A new subscription (or new names) gets the state
                        // now; an ACK/NACK of what we sent gets nothing.
                        if r.response_nonce.is_empty() || names_changed {
                            e.1 = None;
                        }
                    }
                    r = changed.changed() => { if r.is_err() { return } }
                }
                // Send each type whose version moved since we last sent it.
                for (ty, (names, sent)) in subs.iter_mut() {
                    let (version, resources) = {
                        let wanted: std::collections::HashSet<&String> = names.iter().collect();
                        let st = shared.state.lock().unwrap();
                        let v = st.versions.get(ty).copied().unwrap_or(0).to_string();
                        let all = st.resources.get(ty).cloned().unwrap_or_default();
                        let res: Vec<Any> = all
                            .into_iter()
                            .filter(|(n, _)| names.is_empty() || wanted.contains(n))
                            .map(|(_, (_, a))| a)
                            .collect();
                        (v, res)
                    };
                    if sent.as_deref() == Some(version.as_str()) {
                        continue;
                    }
                    if (ty == EDS || ty == RDS) && names.is_empty() {
                        continue; // EDS and RDS are never wildcard here
                    }
                    *sent = Some(version.clone());
                    let resp = DiscoveryResponse {
                        version_info: version,
                        resources,
                        type_url: ty.clone(),
                        nonce: shared.nonce(),
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let mut incoming = req.into_inner();
        let shared = self.shared.clone();
        shared.state.lock().unwrap().streams += 1;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut changed = shared.changed.subscribe();
            let mut node_id = String::new();
            // type → (wildcard, names subscribed, what the client has: name → version).
            let mut subs: BTreeMap<String, (bool, BTreeSet<String>, BTreeMap<String, String>)> =
                BTreeMap::new();
            loop {
                tokio::select! {
                    msg = incoming.next() => {
                        let Some(Ok(r)) = msg else { return };
                        if let Some(n) = &r.node { node_id = n.id.clone(); }
                        shared.record(Seen {
                            node_id: node_id.clone(),
                            delta: true,
                            type_url: r.type_url.clone(),
                            version_info: String::new(),
                            response_nonce: r.response_nonce.clone(),
                            error: r.error_detail.as_ref().map(|e| e.message.clone()),
                            names: r.resource_names_subscribe.clone(),
                            initial_versions: r.initial_resource_versions.clone().into_iter().collect(),
                        });
                        let first = !subs.contains_key(&r.type_url);
                        let e = subs.entry(r.type_url.clone()).or_insert((false, BTreeSet::new(), BTreeMap::new()));
                        if first {
                            e.0 = r.type_url != EDS && r.type_url != RDS && (r.resource_names_subscribe.is_empty()
                                || r.resource_names_subscribe.iter().any(|n| n == "*"));
                            e.2 = r.initial_resource_versions.clone().into_iter().collect();
                        }
                        for n in &r.resource_names_subscribe {
                            if n != "*" { e.1.insert(n.clone()); }
                        }
                        for n in &r.resource_names_unsubscribe {
                            e.1.remove(n);
                            e.2.remove(n);
                        }
                    }
                    r = changed.changed() => { if r.is_err() { return } }
                }
                for (ty, (wildcard, names, has)) in subs.iter_mut() {
                    let all = shared
                        .state
                        .lock()
                        .unwrap()
                        .resources
                        .get(ty)
                        .cloned()
                        .unwrap_or_default();
                    let wanted = |n: &String| *wildcard || names.contains(n);
                    let mut resources = Vec::new();
                    for (n, (ver, any)) in &all {
                        if wanted(n) && has.get(n) != Some(ver) {
                            resources.push(Resource {
                                name: n.clone(),
                                version: ver.clone(),
                                resource: Some(any.clone()),
                                ..Default::default()
                            });
                            has.insert(n.clone(), ver.clone());
                        }
                    }
                    // Gone from the server; or asked for by name and not
                    // there (said once, with an empty version held).
                    let mut removed: Vec<String> = has
                        .iter()
                        .filter(|(n, v)| !all.contains_key(*n) && !v.is_empty())
                        .map(|(n, _)| n.clone())
                        .collect();
                    for n in &removed {
                        has.remove(n);
                    }
                    for n in names.iter() {
                        if !all.contains_key(n) && !has.contains_key(n) {
                            has.insert(n.clone(), String::new());
                            removed.push(n.clone());
                        }
                    }
                    if resources.is_empty() && removed.is_empty() {
                        continue;
                    }
                    let system_version_info = {
                        let st = shared.state.lock().unwrap();
                        st.versions.get(ty).copied().unwrap_or(0).to_string()
                    };
                    let resp = DeltaDiscoveryResponse {
                        system_version_info,
                        resources,
                        type_url: ty.clone(),
                        removed_resources: removed,
                        nonce: shared.nonce(),
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

// === resources, in Envoy's YAML (protobuf JSON mapping) ===

/// A listener on `0.0.0.0:port` whose tcp_proxy goes to `cluster`.
pub fn listener(name: &str, port: u16, cluster: &str) -> (String, Any) {
    let y = format!(
        r#"
name: {name}
address: {{socket_address: {{address: 0.0.0.0, port_value: {port}}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: {name}
      cluster: "{cluster}"
"#
    );
    (
        name.into(),
        any_from_yaml("envoy.config.listener.v3.Listener", &y).unwrap(),
    )
}

/// An EDS cluster over ADS, with breakers too high to matter.
pub fn eds_cluster(name: &str) -> (String, Any) {
    let y = format!(
        r#"
name: "{name}"
type: EDS
connect_timeout: 1s
eds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}
circuit_breakers: {{thresholds: [{{max_connections: 100000, max_pending_requests: 100000}}]}}
"#
    );
    (
        name.into(),
        any_from_yaml("envoy.config.cluster.v3.Cluster", &y).unwrap(),
    )
}

/// An assignment of `endpoints` (`ip:port`) to `name`.
pub fn cla(name: &str, endpoints: &[&str]) -> (String, Any) {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|e| {
            let (a, p) = e.split_once(':').unwrap();
            format!(
                "    - endpoint: {{address: {{socket_address: {{address: {a}, port_value: {p}}}}}}}"
            )
        })
        .collect();
    let y = format!(
        "cluster_name: \"{name}\"\nendpoints:\n  - lb_endpoints:\n{}\n",
        eps.join("\n")
    );
    let y = if endpoints.is_empty() {
        format!("cluster_name: \"{name}\"\n")
    } else {
        y
    };
    (
        name.into(),
        any_from_yaml("envoy.config.endpoint.v3.ClusterLoadAssignment", &y).unwrap(),
    )
}
