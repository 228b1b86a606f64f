//! Drives [`Xds`] over an ADS stream (gRPC over TCP or a Unix socket),
//! pushes its updates to the data plane, and keeps both ends in step:
//! - the stream is re-opened after any failure with jittered exponential
//!   back-off, resuming from the versions held;
//! - every second the does-not-exist timeout runs and the data plane is
//!   asked who it is: if it restarted (new instance) or someone else
//!   changed it (a generation we did not make), it gets everything again.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::dataplane::{DataPlane, Identity};
use crate::xds::{Mode, Outcome, Request, Xds, short};

const TICK: Duration = Duration::from_secs(1);

/// Where the ADS server is.
#[derive(Debug, Clone)]
pub enum Target {
    /// `http://host:port`.
    Tcp(String),
    /// A Unix socket path (as istio-agent serves at `./etc/istio/proxy/XDS`).
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(u) => write!(f, "{u}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
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

/// Run until the process is stopped.
pub async fn run(mut xds: Xds, opts: Options, dp: DataPlane) {
    let mut sync = DataPlaneSync::default();
    let Some(server) = opts.server.clone() else {
        // Static resources only: configure the data plane, then keep it so.
        xds.mark_synced_without_server();
        loop {
            sync.housekeeping(&mut xds, &dp, None).await;
            tokio::time::sleep(TICK).await;
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
                    Mode::Sotw => sotw(&mut xds, channel, &opts, &dp, &mut sync).await,
                    Mode::Delta => delta(&mut xds, channel, &opts, &dp, &mut sync).await,
                };
                match r {
                    Ok(()) => tracing::warn!("the ADS server {server} closed the stream"),
                    Err(e) => tracing::warn!("ADS stream to {server}: {e}"),
                }
                // A stream that lived a while was a success: start over.
                if t0.elapsed() > Duration::from_secs(10) {
                    delay = opts.backoff_base;
                }
            }
            Err(e) => tracing::warn!("cannot connect to the ADS server {server}: {e}"),
        }
        let wait = rng.between(delay / 2, delay);
        tracing::info!("reconnecting in {:?}", wait);
        let until = Instant::now() + wait;
        while Instant::now() < until {
            sync.housekeeping(&mut xds, &dp, None).await;
            tokio::time::sleep(TICK.min(until.saturating_duration_since(Instant::now()))).await;
        }
        delay = (delay * 2).min(opts.backoff_max);
    }
}

async fn connect(server: &Target) -> Result<Channel, String> {
    let ep = |uri: &str| {
        Endpoint::from_shared(uri.to_owned())
            .map(|e| {
                e.connect_timeout(Duration::from_secs(5))
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
            })
            .map_err(|e| format!("bad server address {uri:?}: {e}"))
    };

    match server {
        Target::Tcp(uri) => ep(uri)?.connect().await.map_err(|e| format!("{e}")),
        Target::Unix(path) => {
            let path = path.clone();
            ep("http://localhost")?
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(s))
                    }
                }))
                .await
                .map_err(|e| format!("{e}"))
        }
    }
}

fn client(channel: Channel, opts: &Options) -> AggregatedDiscoveryServiceClient<Channel> {
    AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(opts.max_message_bytes)
        .max_encoding_message_size(opts.max_message_bytes)
}

async fn sotw(
    xds: &mut Xds,
    channel: Channel,
    opts: &Options,
    dp: &DataPlane,
    sync: &mut DataPlaneSync,
) -> Result<(), String> {
    let unwrap = |r| match r {
        Request::Sotw(r) => Some(r),
        Request::Delta(_) => None,
    };
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(64);
    send(&tx, unwrap, xds.on_stream_start()).await;
    let stream = client(channel, opts)
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("{e}"))?
        .into_inner();
    drive(
        xds,
        dp,
        sync,
        &tx,
        stream,
        unwrap,
        |xds, resp: DiscoveryResponse, now| {
            let (ty, n) = (short(&resp.type_url), resp.resources.len());
            tracing::debug!(
                "{ty} response version {:?}: {n} resource(s)",
                resp.version_info
            );
            (xds.on_sotw(resp, now), ty, n)
        },
    )
    .await
}

async fn delta(
    xds: &mut Xds,
    channel: Channel,
    opts: &Options,
    dp: &DataPlane,
    sync: &mut DataPlaneSync,
) -> Result<(), String> {
    let unwrap = |r| match r {
        Request::Delta(r) => Some(r),
        Request::Sotw(_) => None,
    };
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    send(&tx, unwrap, xds.on_stream_start()).await;
    let stream = client(channel, opts)
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("{e}"))?
        .into_inner();
    drive(
        xds,
        dp,
        sync,
        &tx,
        stream,
        unwrap,
        |xds, resp: DeltaDiscoveryResponse, now| {
            let (ty, n) = (short(&resp.type_url), resp.resources.len());
            tracing::debug!(
                "{ty} delta {:?}: {n} resource(s), {} removed",
                resp.system_version_info,
                resp.removed_resources.len()
            );
            (xds.on_delta(resp, now), ty, n)
        },
    )
    .await
}

/// Queue `reqs` on the stream (those of its variant).
async fn send<Q>(tx: &mpsc::Sender<Q>, unwrap: fn(Request) -> Option<Q>, reqs: Vec<Request>) {
    for r in reqs.into_iter().filter_map(unwrap) {
        let _ = tx.send(r).await;
    }
}

/// Serve one open stream of either variant: each response is handled,
/// pushed to the data plane and answered (ACK/NACK and any new
/// subscription); once a second, housekeeping.
async fn drive<Q, P>(
    xds: &mut Xds,
    dp: &DataPlane,
    sync: &mut DataPlaneSync,
    tx: &mpsc::Sender<Q>,
    mut stream: tonic::Streaming<P>,
    unwrap: fn(Request) -> Option<Q>,
    handle: fn(&mut Xds, P, Instant) -> (Outcome, &'static str, usize),
) -> Result<(), String> {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(resp) = msg.map_err(|e| format!("{e}"))? else { return Ok(()) };
                let arrived = Instant::now();
                let (out, ty, n) = handle(xds, resp, arrived);
                let ack = sync.push(xds, dp, out.push).await;
                let ms = arrived.elapsed().as_secs_f64() * 1e3;
                if sync.pushed {
                    tracing::info!("{ty} response of {n} resource(s): served by the data plane {ms:.3} ms after it arrived");
                } else {
                    tracing::debug!("{ty} response of {n} resource(s) handled in {ms:.3} ms");
                }
                send(tx, unwrap, ack.into_iter().chain(out.requests).collect()).await;
            }
            _ = tick.tick() => {
                let reqs = sync.housekeeping(xds, dp, Some(Instant::now())).await;
                send(tx, unwrap, reqs).await;
            }
        }
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
}

impl DataPlaneSync {
    /// Push what changed (if `push`), and return the ACK or NACK that the
    /// data plane's verdict decides.
    async fn push(&mut self, xds: &mut Xds, dp: &DataPlane, push: bool) -> Option<Request> {
        resolve(xds).await;
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
                            "data plane: applied {:?}{} (+{} -{} listeners, +{} -{} clusters) in {} ms, {} rejected",
                            u.version,
                            if u.full { " in full" } else { "" },
                            u.listeners.len(),
                            u.remove_listeners.len(),
                            u.clusters.len(),
                            u.remove_clusters.len(),
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
                let changed = match &self.known {
                    None => true,
                    Some(k) => k.instance != id.instance || k.generation != id.generation,
                };
                if changed || self.down {
                    if self
                        .known
                        .as_ref()
                        .is_some_and(|k| k.instance != id.instance)
                    {
                        tracing::info!("the data plane restarted: configuring it again");
                    } else if self.known.is_some() && !self.down {
                        tracing::info!(
                            "the data plane was changed by someone else: configuring it again"
                        );
                    }
                    xds.resync();
                    push = true;
                }
                self.known = Some(id);
                self.down = false;
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
        }
        out
    }
}

/// Resolve the hosts `xds` asks for: DNS is I/O, so it is done here and
/// the answers handed back to the state machine.
async fn resolve(xds: &mut Xds) {
    for (host, port) in xds.take_unresolved() {
        let addrs = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map(|it| {
                it.filter_map(|a| match a {
                    std::net::SocketAddr::V4(v4) => Some(v4),
                    std::net::SocketAddr::V6(_) => None,
                })
                .collect()
            })
            .map_err(|e| e.to_string());
        xds.on_resolved(host, port, addrs);
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
