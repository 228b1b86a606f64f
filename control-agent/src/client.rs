//! Drives [`Xds`] over an ADS stream (gRPC over TCP or a Unix socket),
//! pushes its updates to the data plane, and keeps both ends in step:
//! - the stream is re-opened after any failure with jittered exponential
//!   back-off, resuming from the versions held;
//! - every second the does-not-exist timeout runs and the data plane is
//!   asked who it is: if it restarted (new instance) or someone else
//!   changed it (a generation we did not make), it gets everything again;
//! - STRICT_DNS hosts are looked up off the stream's task (`Resolver`).

use std::convert::Infallible;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane_config::{ProxyUpdate, Rejected};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use hyper_util::rt::TokioIo;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::dataplane::{DataPlane, Identity};
use crate::xds::{Mode, Outcome, Request, Xds, short};

const TICK: Duration = Duration::from_secs(1);
/// Longest the answer to a response waits for the DNS lookups of its
/// clusters. A resolver that does not answer takes 5 s per attempt and
/// server by default (resolv.conf(5)); the stream's ACKs should not.
const DNS_WAIT: Duration = Duration::from_secs(2);
/// Lookups at once (each holds one of tokio's blocking threads).
const DNS_PARALLEL: usize = 8;

/// Where the ADS server is.
#[derive(Debug, Clone)]
pub enum Target {
    /// `http://host:port`.
    Tcp(String),
    /// A Unix socket path (as istio-agent serves at `./etc/istio/proxy/XDS`).
    Unix(PathBuf),
}

impl Target {
    /// The gRPC endpoint to connect to. A bad address is the user's input
    /// (trying again would not fix it): check it at start-up.
    pub fn endpoint(&self) -> Result<Endpoint, Error> {
        let uri = match self {
            Target::Tcp(uri) => uri.as_str(),
            // Only the connector (below) uses the path.
            Target::Unix(_) => "http://localhost",
        };
        Endpoint::from_shared(uri.to_owned())
            .map(|e| {
                e.connect_timeout(Duration::from_secs(5))
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
            })
            .map_err(|source| Error::Address {
                uri: uri.to_owned(),
                source,
            })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(u) => write!(f, "{u}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Why the ADS client could not connect, or its stream ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not an address tonic can use.
    #[error("bad server address {uri:?}: {}", Causes(source))]
    Address {
        uri: String,
        source: tonic::transport::Error,
    },
    /// TCP, the Unix socket or HTTP/2 failed. Shown with its causes
    /// (tonic's own message is only "transport error").
    #[error("{}", Causes(.0))]
    Connect(#[source] tonic::transport::Error),
    /// The server refused the stream or it broke (a gRPC status).
    #[error("{0}")]
    Stream(#[source] Box<tonic::Status>),
}

impl Error {
    /// Whether connecting again may help: yes after a transport or stream
    /// error (the server may be restarting); not for a bad address.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::Address { .. })
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Error {
        Error::Stream(Box::new(s))
    }
}

/// An error and its causes, `: `-separated.
struct Causes<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub server: Option<Target>,
    /// Largest gRPC message either way.
    pub max_message_bytes: usize,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// Run until the process is stopped, or an error that connecting again
/// cannot fix (returned). Transport and stream errors are retried with
/// back-off, for ever; the data plane keeps what it has meanwhile.
pub async fn run(mut xds: Xds, opts: Options, dp: DataPlane) -> Result<Infallible, Error> {
    let mut sync = DataPlaneSync::default();
    let mut dns = Resolver::new();
    // The static clusters' hosts.
    dns.start(&mut xds);
    let Some(server) = opts.server.clone() else {
        // Static resources only: configure the data plane, then keep it so.
        // The first push has the STRICT_DNS clusters if their hosts
        // resolve in time, as it did when lookups were made in line.
        xds.mark_synced_without_server();
        dns.wait(&mut xds, DNS_WAIT).await;
        loop {
            idle(&mut xds, &dp, &mut sync, &mut dns, None).await;
        }
    };
    let mut delay = opts.backoff_base;
    let mut rng = Jitter::new();
    loop {
        let t0 = Instant::now();
        match connect(&server).await {
            Ok(channel) => {
                tracing::info!("connected to the ADS server {server} ({:?})", xds.mode());
                let r = match xds.mode() {
                    Mode::Sotw => {
                        stream::<SotwStream>(&mut xds, channel, &opts, &dp, &mut sync, &mut dns)
                            .await
                    }
                    Mode::Delta => {
                        stream::<DeltaStream>(&mut xds, channel, &opts, &dp, &mut sync, &mut dns)
                            .await
                    }
                };
                xds.on_stream_end();
                match r {
                    Ok(()) => tracing::warn!("the ADS server {server} closed the stream"),
                    Err(e) if !e.is_retryable() => return Err(e),
                    Err(e) => tracing::warn!("ADS stream to {server}: {e}"),
                }
                // A stream that lived a while was a success: start over.
                if t0.elapsed() > Duration::from_secs(10) {
                    delay = opts.backoff_base;
                }
            }
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => tracing::warn!("cannot connect to the ADS server {server}: {e}"),
        }
        let wait = rng.between(delay / 2, delay);
        tracing::info!("reconnecting in {:?}", wait);
        let until = tokio::time::Instant::now() + wait;
        idle(&mut xds, &dp, &mut sync, &mut dns, Some(until)).await;
        delay = (delay * 2).min(opts.backoff_max);
    }
}

/// With no stream (static resources only, or waiting to reconnect) until
/// `until` (for ever if `None`): keep the data plane configured, once a
/// second, and take DNS answers as they come.
async fn idle(
    xds: &mut Xds,
    dp: &DataPlane,
    sync: &mut DataPlaneSync,
    dns: &mut Resolver,
    until: Option<tokio::time::Instant>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)),
                if until.is_some() => return,
            _ = tick.tick() => {
                dns.retry(xds, Instant::now());
                sync.housekeeping(xds, dp, None).await;
            }
            r = dns.next() => {
                if dns.apply(xds, r) {
                    sync.push_resolved(xds, dp).await;
                }
            }
        }
    }
}

async fn connect(server: &Target) -> Result<Channel, Error> {
    let ep = server.endpoint()?;
    match server {
        Target::Tcp(_) => ep.connect().await.map_err(Error::Connect),
        Target::Unix(path) => {
            let path = path.clone();
            ep.connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }))
            .await
            .map_err(Error::Connect)
        }
    }
}

fn client(channel: Channel, opts: &Options) -> AggregatedDiscoveryServiceClient<Channel> {
    AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(opts.max_message_bytes)
        .max_encoding_message_size(opts.max_message_bytes)
}

/// One of the two ADS stream variants (state of the world, Delta): its
/// request and response types, how it is opened and how the state machine
/// takes its responses. Everything else about a stream is [`stream`]'s.
trait Variant {
    type Req: Send + 'static;
    type Resp;
    fn unwrap(r: Request) -> Option<Self::Req>;
    fn open(
        c: AggregatedDiscoveryServiceClient<Channel>,
        rx: ReceiverStream<Self::Req>,
    ) -> impl Future<Output = Result<tonic::Response<tonic::Streaming<Self::Resp>>, tonic::Status>> + Send;
    fn handle(xds: &mut Xds, resp: Self::Resp, now: Instant) -> (Outcome, &'static str, usize);
}

struct SotwStream;
struct DeltaStream;

impl Variant for SotwStream {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    fn unwrap(r: Request) -> Option<DiscoveryRequest> {
        match r {
            Request::Sotw(r) => Some(r),
            Request::Delta(_) => None,
        }
    }
    async fn open(
        mut c: AggregatedDiscoveryServiceClient<Channel>,
        rx: ReceiverStream<DiscoveryRequest>,
    ) -> Result<tonic::Response<tonic::Streaming<DiscoveryResponse>>, tonic::Status> {
        c.stream_aggregated_resources(rx).await
    }
    fn handle(
        xds: &mut Xds,
        resp: DiscoveryResponse,
        now: Instant,
    ) -> (Outcome, &'static str, usize) {
        let (ty, n) = (short(&resp.type_url), resp.resources.len());
        tracing::debug!(
            "{ty} response version {:?}: {n} resource(s)",
            resp.version_info
        );
        (xds.on_sotw(resp, now), ty, n)
    }
}

impl Variant for DeltaStream {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    fn unwrap(r: Request) -> Option<DeltaDiscoveryRequest> {
        match r {
            Request::Delta(r) => Some(r),
            Request::Sotw(_) => None,
        }
    }
    async fn open(
        mut c: AggregatedDiscoveryServiceClient<Channel>,
        rx: ReceiverStream<DeltaDiscoveryRequest>,
    ) -> Result<tonic::Response<tonic::Streaming<DeltaDiscoveryResponse>>, tonic::Status> {
        c.delta_aggregated_resources(rx).await
    }
    fn handle(
        xds: &mut Xds,
        resp: DeltaDiscoveryResponse,
        now: Instant,
    ) -> (Outcome, &'static str, usize) {
        let (ty, n) = (short(&resp.type_url), resp.resources.len());
        tracing::debug!(
            "{ty} delta {:?}: {n} resource(s), {} removed",
            resp.system_version_info,
            resp.removed_resources.len()
        );
        (xds.on_delta(resp, now), ty, n)
    }
}

/// Open one stream of variant `V` and serve it until it ends.
async fn stream<V: Variant>(
    xds: &mut Xds,
    channel: Channel,
    opts: &Options,
    dp: &DataPlane,
    sync: &mut DataPlaneSync,
    dns: &mut Resolver,
) -> Result<(), Error> {
    let (tx, rx) = mpsc::channel::<V::Req>(64);
    send(&tx, V::unwrap, xds.on_stream_start()).await;
    let stream = V::open(client(channel, opts), ReceiverStream::new(rx))
        .await?
        .into_inner();
    drive(xds, dp, sync, dns, &tx, stream, V::unwrap, V::handle).await
}

/// Queue `reqs` on the stream (those of its variant).
async fn send<Q>(tx: &mpsc::Sender<Q>, unwrap: fn(Request) -> Option<Q>, reqs: Vec<Request>) {
    for r in reqs.into_iter().filter_map(unwrap) {
        let _ = tx.send(r).await;
    }
}

/// Serve one open stream of either variant: each response is handled,
/// pushed to the data plane and answered (ACK/NACK and any new
/// subscription); DNS answers are handed to the state machine as they
/// come; once a second, housekeeping.
///
/// A response whose clusters name hosts being looked up is answered when
/// their lookups are in (so that a host that does not resolve NACKs them),
/// or `DNS_WAIT` after it arrived, or when the next response comes,
/// whichever is first: the stream is never left unread for DNS. Its
/// subscription changes go with its answer, as they did when lookups were
/// made in line.
#[allow(clippy::too_many_arguments)] // the stream's parts, one each
async fn drive<Q, P>(
    xds: &mut Xds,
    dp: &DataPlane,
    sync: &mut DataPlaneSync,
    dns: &mut Resolver,
    tx: &mpsc::Sender<Q>,
    mut stream: tonic::Streaming<P>,
    unwrap: fn(Request) -> Option<Q>,
    handle: fn(&mut Xds, P, Instant) -> (Outcome, &'static str, usize),
) -> Result<(), Error> {
    let mut tick = tokio::time::interval(TICK);
    // The answer to the last response, while it waits for DNS.
    let mut waiting: Option<Answer> = None;
    loop {
        let until = waiting
            .as_ref()
            .map_or_else(tokio::time::Instant::now, |a| a.until);
        tokio::select! {
            msg = stream.message() => {
                let Some(resp) = msg? else { return Ok(()) };
                let arrived = Instant::now();
                if let Some(a) = waiting.take() {
                    a.send(xds, dp, sync, tx, unwrap).await;
                }
                let (out, ty, n) = handle(xds, resp, arrived);
                dns.start(xds);
                let a = Answer {
                    requests: out.requests,
                    push: out.push,
                    arrived,
                    until: tokio::time::Instant::from_std(arrived + DNS_WAIT),
                    ty,
                    n,
                };
                if xds.awaits_dns() {
                    tracing::debug!("{ty} response: its answer waits for DNS lookups");
                    waiting = Some(a);
                } else {
                    a.send(xds, dp, sync, tx, unwrap).await;
                }
            }
            r = dns.next() => {
                let changed = dns.apply(xds, r);
                match waiting.take() {
                    Some(a) if !xds.awaits_dns() => a.send(xds, dp, sync, tx, unwrap).await,
                    Some(a) => waiting = Some(a), // pushed with its answer
                    None if changed => sync.push_resolved(xds, dp).await,
                    None => {}
                }
            }
            _ = tokio::time::sleep_until(until), if waiting.is_some() => {
                if let Some(a) = waiting.take() {
                    a.send(xds, dp, sync, tx, unwrap).await;
                }
            }
            _ = tick.tick() => {
                dns.retry(xds, Instant::now());
                // A push here is ACK-neutral while an answer waits for DNS.
                let reqs = sync.housekeeping(xds, dp, Some(Instant::now())).await;
                send(tx, unwrap, reqs).await;
            }
        }
    }
}

/// What a handled response still has to send.
#[derive(Debug)]
struct Answer {
    /// Subscription changes it led to.
    requests: Vec<Request>,
    push: bool,
    arrived: Instant,
    /// When it stops waiting for DNS.
    until: tokio::time::Instant,
    ty: &'static str,
    n: usize,
}

impl Answer {
    /// Push, and send the ACK or NACK (with the lookups still out, if any,
    /// left out of it) and the subscription changes.
    async fn send<Q>(
        self,
        xds: &mut Xds,
        dp: &DataPlane,
        sync: &mut DataPlaneSync,
        tx: &mpsc::Sender<Q>,
        unwrap: fn(Request) -> Option<Q>,
    ) {
        let (ty, n) = (self.ty, self.n);
        let left = xds.stop_waiting_for_dns();
        if !left.is_empty() {
            tracing::warn!(
                "{ty} response answered while the lookups of {left:?} are out: their clusters wait for them, and a failure is logged, not NACKed"
            );
        }
        let ack = sync.push(xds, dp, self.push).await;
        let ms = self.arrived.elapsed().as_secs_f64() * 1e3;
        if sync.pushed {
            tracing::info!(
                "{ty} response of {n} resource(s): served by the data plane {ms:.3} ms after it arrived"
            );
        } else {
            tracing::debug!("{ty} response of {n} resource(s) handled in {ms:.3} ms");
        }
        send(tx, unwrap, ack.into_iter().chain(self.requests).collect()).await;
        // The data plane hears of the verdict after the server does: its
        // /config_dump section takes a while to build for a large type.
        sync.report(xds, dp).await;
    }
}

/// What we know of the data plane.
#[derive(Debug, Default)]
struct DataPlaneSync {
    /// Who we configured last, and the generation our last update made.
    known: Option<Identity>,
    down: bool,
    /// The last `push` applied an update.
    pushed: bool,
    /// When someone else changed the data plane, lately (to tell a fight
    /// between two agents from an operator's one-off change).
    foreign: std::collections::VecDeque<Instant>,
    /// Not before then: the re-sync after a foreign change, while a fight
    /// goes on (each agent's push is the other's foreign change).
    resync_after: Option<Instant>,
}

/// Foreign changes within this window that make a fight.
const FIGHT_WINDOW: Duration = Duration::from_secs(60);
const FIGHT_CHANGES: usize = 3;
/// While a fight goes on, re-sync at most this often.
const FIGHT_BACKOFF: Duration = Duration::from_secs(30);

impl DataPlaneSync {
    /// Push what changed (if `push`), and return the ACK or NACK that the
    /// data plane's verdict decides.
    async fn push(&mut self, xds: &mut Xds, dp: &DataPlane, push: bool) -> Option<Request> {
        let u = if push { xds.update() } else { None };
        self.pushed = false;
        let result = match &u {
            None => Ok(Vec::new()),
            Some(u) => {
                let t0 = Instant::now();
                let r = dp.apply(u).await;
                match &r {
                    Ok(reply) => {
                        self.down = false;
                        self.pushed = true;
                        tracing::info!(
                            "data plane: applied {:?}{} {} in {} ms, {} rejected",
                            u.version,
                            if u.full { " in full" } else { "" },
                            applied_summary(u, &reply.rejected),
                            t0.elapsed().as_millis(),
                            reply.rejected.len()
                        );
                        // Our own change: not a reason to re-sync.
                        self.known = Some(Identity {
                            instance: reply.instance.clone(),
                            generation: reply.generation,
                        });
                    }
                    // Refused (it answered): not a reason to poll it into a
                    // full re-push every second.
                    Err(e) => self.down = e.is_retryable(),
                }
                r.map(|reply| reply.rejected).map_err(|e| e.to_string())
            }
        };
        xds.settle(u.as_ref(), result)
    }

    /// Hand the ACKs and NACKs to the data plane's admin stats, after the
    /// server has its answer. A data plane that is down gets the last ACKs
    /// again when back (`resync`).
    async fn report(&mut self, xds: &mut Xds, dp: &DataPlane) {
        let mut reports = xds.take_reports();
        if self.down {
            return;
        }
        // The dump of the resources in force goes with an ACK, built once
        // per type in a batch (with its last report).
        let mut last = std::collections::BTreeMap::new();
        for (i, r) in reports.iter().enumerate() {
            last.insert(r.ty, i);
        }
        for (i, r) in reports.iter_mut().enumerate() {
            if r.accepted && last.get(&r.ty) == Some(&i) {
                r.config_dump = crate::config_dump::section(xds, r.ty);
            }
            if let Err(e) = dp.report(r).await {
                tracing::debug!("cannot report {:?} to the data plane: {e}", r.ty);
            }
        }
    }

    /// DNS answers changed clusters: push them if the data plane is up
    /// (if not, it gets everything when back). Only when no response is
    /// being answered: then `settle` answers nothing.
    async fn push_resolved(&mut self, xds: &mut Xds, dp: &DataPlane) {
        if !self.down {
            let answer = self.push(xds, dp, true).await;
            debug_assert!(answer.is_none(), "a DNS push answered a response");
            self.report(xds, dp).await;
        }
    }

    /// Someone else changed the data plane at `t`: whether to configure it
    /// again now. Three such changes within a minute, each after ours, are
    /// a fight with another writer: said at WARN, and then re-configuring
    /// happens at most every `FIGHT_BACKOFF`.
    fn foreign_change(&mut self, t: Instant, dp: &DataPlane) -> bool {
        if self.resync_after.is_some_and(|at| t < at) {
            return false;
        }
        self.foreign.push_back(t);
        while self
            .foreign
            .front()
            .is_some_and(|&f| t.duration_since(f) > FIGHT_WINDOW)
        {
            self.foreign.pop_front();
        }
        if self.foreign.len() >= FIGHT_CHANGES {
            tracing::warn!(
                "the data plane at {} was changed by someone else {} times in {}s, each time after we configured it: another control-agent (or a script running `dataplane apply`) is configuring the same data plane, and each undoes the other's update. Run one control-agent per data plane (stop the other, or give each data plane its own --dataplane-socket). Re-configuring it at most every {}s meanwhile",
                dp.socket().display(),
                self.foreign.len(),
                FIGHT_WINDOW.as_secs(),
                FIGHT_BACKOFF.as_secs()
            );
            self.resync_after = Some(t + FIGHT_BACKOFF);
        } else {
            self.resync_after = None;
            tracing::info!("the data plane was changed by someone else: configuring it again");
        }
        true
    }

    /// Once a second: the does-not-exist timeout, and whether the data
    /// plane is the one we configured. Returns requests to send.
    async fn housekeeping(
        &mut self,
        xds: &mut Xds,
        dp: &DataPlane,
        now: Option<Instant>,
    ) -> Vec<Request> {
        let mut out = Vec::new();
        let mut push = false;
        if let Some(now) = now {
            let o = xds.on_timer(now);
            out.extend(o.requests);
            push |= o.push;
        }
        match dp.identity().await {
            Ok(id) => {
                let changed = self
                    .known
                    .as_ref()
                    .is_none_or(|k| k.instance != id.instance || k.generation != id.generation);
                let mut resync = changed || self.down;
                if self
                    .known
                    .as_ref()
                    .is_some_and(|k| k.instance != id.instance)
                {
                    tracing::info!("the data plane restarted: configuring it again");
                } else if changed && self.known.is_some() && !self.down {
                    resync = self.foreign_change(Instant::now(), dp);
                }
                if resync {
                    xds.resync();
                    push = true;
                }
                // While a fight waits, the change stays unseen, to be
                // looked at again at the next tick.
                if resync || !changed {
                    self.known = Some(id);
                    self.down = false;
                }
            }
            Err(e) => {
                if !self.down {
                    tracing::warn!(
                        "{e}; it keeps serving what it has, and gets everything again when back"
                    );
                }
                self.down = true;
            }
        }
        if push && !self.down {
            out.extend(self.push(xds, dp, true).await);
            // Answers nothing here (no response waits): the last ACKs again
            // for a data plane that restarted.
            self.report(xds, dp).await;
        }
        out
    }
}

// === impl Resolver ===

/// STRICT_DNS lookups, off the task that serves the ADS stream: a resolver
/// that takes seconds must not leave responses unread and answers unsent.
///
/// The state machine says which hosts to look up (`take_unresolved`, each
/// host once while its lookup is out); each lookup is a task of its own
/// (`lookup_host`, getaddrinfo on a blocking thread, at most
/// [`DNS_PARALLEL`] at once) that sends its answer back over a channel.
/// The loops that own the state machine `select!` on [`Resolver::next`]
/// and hand the answers to `on_resolved`. The channel is unbounded, but
/// holds at most one answer per host asked for.
#[derive(Debug)]
struct Resolver {
    tx: mpsc::UnboundedSender<Resolved>,
    rx: mpsc::UnboundedReceiver<Resolved>,
    slots: Arc<Semaphore>,
}

/// A lookup's answer: IPv4 addresses (the data plane is IPv4 only), or why
/// there are none.
#[derive(Debug)]
struct Resolved {
    host: String,
    port: u16,
    addrs: Result<Vec<SocketAddrV4>, String>,
}

impl Resolver {
    fn new() -> Resolver {
        let (tx, rx) = mpsc::unbounded_channel();
        Resolver {
            tx,
            rx,
            slots: Arc::new(Semaphore::new(DNS_PARALLEL)),
        }
    }

    /// Start the lookups `xds` asks for. Call it after every response.
    fn start(&self, xds: &mut Xds) {
        for (host, port) in xds.take_unresolved() {
            let (tx, slots) = (self.tx.clone(), self.slots.clone());
            tokio::spawn(async move {
                // Never closed: the semaphore lives as long as the resolver.
                let _slot = slots.acquire_owned().await;
                let addrs = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map(|it| {
                        it.filter_map(|a| match a {
                            SocketAddr::V4(v4) => Some(v4),
                            SocketAddr::V6(_) => None,
                        })
                        .collect()
                    })
                    .map_err(|e| e.to_string());
                // Fails only when the agent is stopping.
                let _ = tx.send(Resolved { host, port, addrs });
            });
        }
    }

    /// Look up again the hosts whose lookup failed and are due (the
    /// driver's one-second timer).
    fn retry(&self, xds: &mut Xds, now: Instant) {
        xds.retry_dns(now);
        self.start(xds);
    }

    /// The next answer (cancel-safe, for `select!`).
    async fn next(&mut self) -> Resolved {
        match self.rx.recv().await {
            Some(r) => r,
            // Not reached: `self.tx` keeps the channel open.
            None => std::future::pending().await,
        }
    }

    /// Give `xds` the answer `r` and any others already in; returns
    /// whether clusters changed (a push is due).
    fn apply(&mut self, xds: &mut Xds, r: Resolved) -> bool {
        let mut changed = xds.on_resolved(r.host, r.port, r.addrs);
        while let Ok(r) = self.rx.try_recv() {
            changed |= xds.on_resolved(r.host, r.port, r.addrs);
        }
        changed
    }

    /// Take the answers of the lookups out, for at most `limit`.
    async fn wait(&mut self, xds: &mut Xds, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while xds.resolving() {
            tokio::select! {
                r = self.next() => {
                    // Pushed in full by the first housekeeping.
                    let _ = self.apply(xds, r);
                }
                _ = tokio::time::sleep_until(until) => break,
            }
        }
    }
}

/// Randomness for back-off jitter (xorshift, seeded from the clock and pid).
#[derive(Debug)]
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Jitter(t ^ u64::from(std::process::id()).rotate_left(32) | 1)
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(if span == 0 { 0 } else { self.0 % span })
    }
}

/// What an update changed, rejected items left out: `(+L -l listeners,
/// +C -c clusters)`.
fn applied_summary(u: &ProxyUpdate, rejected: &[Rejected]) -> String {
    let out = |kind: &str| rejected.iter().filter(|r| r.kind == kind).count();
    let mut s = format!(
        "(+{} -{} listeners, +{} -{} clusters",
        u.listeners.len().saturating_sub(out("listener")),
        u.remove_listeners.len(),
        u.clusters.len().saturating_sub(out("cluster")),
        u.remove_clusters.len()
    );
    if !u.route_configs.is_empty() || !u.remove_route_configs.is_empty() {
        s.push_str(&format!(
            ", +{} -{} route configs",
            u.route_configs.len().saturating_sub(out("route_config")),
            u.remove_route_configs.len()
        ));
    }
    s.push(')');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::{self, Ignored};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use prost::Message;

    /// Regression (issue 18, point 0): rejected items were counted as added.
    #[test]
    fn the_applied_line_leaves_rejected_items_out() {
        let cluster = |n: &str| dataplane_config::ClusterConfig {
            name: n.into(),
            endpoints: Vec::new(),
            lb_policy: Default::default(),
            connect_timeout_ms: 1000,
            idle_timeout_ms: 0,
            limits: Default::default(),
            outlier_detection: Default::default(),
        };
        let u = ProxyUpdate {
            clusters: vec![cluster("a"), cluster("b"), cluster("c")],
            remove_listeners: vec!["old".into()],
            ..ProxyUpdate::default()
        };
        let rejected = vec![Rejected {
            kind: "cluster".into(),
            name: "b".into(),
            errors: Vec::new(),
        }];
        assert_eq!(
            applied_summary(&u, &rejected),
            "(+0 -1 listeners, +2 -0 clusters)"
        );
    }

    fn dns_cluster(name: &str, host: &str) -> translate::ClusterPlan {
        let y = format!(
            "{{name: {name}, type: STRICT_DNS, load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {host}, port_value: 80}}}}}}}}]}}]}}}}"
        );
        let bytes = crate::bootstrap::encode_yaml("envoy.config.cluster.v3.Cluster", &y).unwrap();
        translate::cluster(
            &Cluster::decode(bytes.as_slice()).unwrap(),
            &Ignored::default(),
        )
        .unwrap()
    }

    /// The lookups run in tasks and their answers come back over the
    /// channel (`localhost` is in /etc/hosts: no DNS server needed).
    #[tokio::test]
    async fn answers_come_back_over_the_channel() {
        let now = Instant::now();
        let mut xds = Xds::new(
            Mode::Sotw,
            Node::default(),
            Duration::from_secs(15),
            Arc::default(),
            now,
        );
        let plans = vec![dns_cluster("a", "localhost"), dns_cluster("b", "localhost")];
        xds.set_static(Vec::new(), plans, now);
        xds.mark_synced_without_server();
        let mut dns = Resolver::new();
        dns.start(&mut xds);
        assert!(xds.resolving());
        dns.wait(&mut xds, Duration::from_secs(10)).await;
        assert!(!xds.resolving(), "localhost did not resolve in 10 s");
        let u = xds.update().expect("the first push");
        let got: Vec<_> = u
            .clusters
            .iter()
            .map(|c| {
                (
                    &c.name[..],
                    c.endpoints.iter().map(|e| &e.address[..]).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [("a", vec!["127.0.0.1:80"]), ("b", vec!["127.0.0.1:80"])]
        );
    }
}
