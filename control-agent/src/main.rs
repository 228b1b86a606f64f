//! `control-agent`: configures a running data plane from an xDS server (or
//! an Envoy bootstrap file). See `docs/control-agent.md`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use control_agent::client::{self, Target};
use control_agent::dataplane::DataPlane;
use control_agent::translate::{self, Ignored};
use control_agent::xds::{Mode, Xds};
use control_agent::{bootstrap, node};
use dataplane_config::ProxyUpdate;

#[derive(Parser, Debug)]
#[command(
    name = "control-agent",
    version,
    about = "Configure the data plane from an xDS (ADS) server or an Envoy bootstrap file",
    long_about = "Configure the data plane from an xDS (ADS) server or an Envoy bootstrap file.\n\n\
It connects to an aggregated discovery service (Istio's istiod, istio-agent's Unix socket, any \
go-control-plane server), speaks state-of-the-world or incremental (Delta) ADS, translates \
listeners (tcp_proxy, and http_connection_manager with an inline route_config), clusters (STATIC, EDS, STRICT_DNS) and endpoints into the data plane's \
model, and pushes each change to the data plane's admin socket, which applies it atomically \
without dropping connections. The data plane's verdict becomes the ACK or NACK. A resource we \
cannot honour is NACKed with the reason; Istio's telemetry filters are ignored (counted).\n\n\
If the agent stops, the data plane keeps serving what it has; a restarted agent re-syncs it. \
SIGINT/SIGTERM stop the agent.\n\n\
Exit status, as the data plane's: 0 when stopped by a signal (or --check passed), 2 for bad \
input (flags, an unreadable or invalid bootstrap, static resources that do not translate), 1 \
for a failure at run time. An unreachable ADS server or data plane is retried, never fatal.",
    after_help = "Examples:\n  control-agent --server http://istiod.istio-system:15010 \\\n      --node-id router~10.0.0.5~gw-1.istio-system~istio-system.svc.cluster.local\n  control-agent --server unix:/etc/istio/proxy/XDS --delta --node-id ...\n  control-agent --bootstrap envoy.yaml        # static_resources, and ads_config if any\n  control-agent --bootstrap envoy.yaml --check  # print the translation and exit"
)]
struct Cli {
    /// The ADS server: http://HOST:PORT, or unix:/PATH. Overrides the
    /// bootstrap's ads_config.
    #[arg(long, value_name = "URI")]
    server: Option<String>,
    /// An Envoy v3 bootstrap (YAML or JSON): node, static_resources,
    /// dynamic_resources.ads_config.
    #[arg(long, value_name = "FILE")]
    bootstrap: Option<PathBuf>,
    /// Use incremental (Delta) ADS instead of state of the world (a
    /// bootstrap whose ads_config.api_type is DELTA_GRPC selects it too).
    #[arg(long)]
    delta: bool,
    /// Node id sent to the server (overrides the bootstrap's node.id).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Node cluster (service cluster) sent to the server.
    #[arg(long, value_name = "NAME")]
    node_cluster: Option<String>,
    /// Node metadata entry, KEY=VALUE (VALUE as JSON if it parses, else a
    /// string). Repeat for more.
    #[arg(long, value_name = "KEY=VALUE")]
    node_metadata: Vec<String>,
    /// The data plane's admin socket.
    #[arg(long, value_name = "PATH", default_value = "/run/dataplane/admin.sock")]
    dataplane_socket: PathBuf,
    /// Largest gRPC message either way (tonic's default is 4 MiB; a
    /// response with 10 000 clusters is larger).
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    max_message_bytes: usize,
    /// A subscribed resource the server has not sent within this long is
    /// taken as absent (Envoy's initial_fetch_timeout).
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    resource_timeout_ms: u64,
    /// First reconnect delay; doubles up to --backoff-max-ms, each wait
    /// jittered between half and all of it.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    backoff_base_ms: u64,
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    backoff_max_ms: u64,
    /// Translate the bootstrap's static resources, print the data plane
    /// update (JSON) and exit: 0 if everything translates, 2 if not (or if
    /// the bootstrap does not parse).
    #[arg(long, requires = "bootstrap")]
    check: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // clap exits 2 itself on a bad flag (0 for --help and --version).
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
enum Error {
    // === bad input: exit 2 ===
    #[error("cannot read {}: {source}", path.display())]
    ReadBootstrap {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Does not parse, or its ads_config cannot be used.
    #[error("{}: {source}", path.display())]
    Bootstrap {
        path: PathBuf,
        source: bootstrap::Error,
    },
    #[error("the bootstrap's static resources do not translate:\n  - {}", .0.join("\n  - "))]
    StaticResources(Vec<String>),
    #[error(
        "nothing to do: give --server (an ADS server) and/or --bootstrap (an Envoy bootstrap file)"
    )]
    NothingToDo,
    #[error("--server unix: needs a path, like unix:/etc/istio/proxy/XDS")]
    ServerPath,
    #[error(
        "--server https://: TLS to the xDS server is not supported yet; use http:// (e.g. istiod's plaintext port 15010) or istio-agent's Unix socket"
    )]
    ServerTls,
    #[error("--server {0:?}: expected http://HOST:PORT, HOST:PORT or unix:/PATH")]
    ServerForm(String),
    /// From --server or the bootstrap's ads_config.
    #[error(transparent)]
    ServerAddress(client::Error),
    #[error("{0} (set --node-id or the bootstrap's node.id)")]
    NodeId(String),
    #[error("--node-metadata {0:?}: expected KEY=VALUE")]
    NodeMetadata(String),
    // === at run time: exit 1 ===
    #[error("cannot print the update: {0}")]
    Print(#[source] serde_json::Error),
    #[error("tokio: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("signal handler: {0}")]
    Signal(#[source] std::io::Error),
    /// The ADS client met an error that connecting again cannot fix.
    #[error("the ADS client stopped: {0}")]
    Ads(#[source] client::Error),
}

impl Error {
    /// The data plane's convention: 2 for bad input (the command line, the
    /// bootstrap), 1 for a failure at run time.
    fn exit_code(&self) -> u8 {
        match self {
            Error::ReadBootstrap { .. }
            | Error::Bootstrap { .. }
            | Error::StaticResources(_)
            | Error::NothingToDo
            | Error::ServerPath
            | Error::ServerTls
            | Error::ServerForm(_)
            | Error::ServerAddress(_)
            | Error::NodeId(_)
            | Error::NodeMetadata(_) => 2,
            Error::Print(_) | Error::Runtime(_) | Error::Signal(_) | Error::Ads(_) => 1,
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let ignored = Arc::new(Ignored::default());
    let boot = match &cli.bootstrap {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| Error::ReadBootstrap {
                path: p.clone(),
                source,
            })?;
            Some(bootstrap::parse(&text).map_err(|source| Error::Bootstrap {
                path: p.clone(),
                source,
            })?)
        }
        None => None,
    };
    // Static resources: every one must translate (a bootstrap is not
    // partially accepted, as in Envoy).
    let (mut listeners, mut clusters, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(s) = boot.as_ref().and_then(|b| b.static_resources.as_ref()) {
        for (i, l) in s.listeners.iter().enumerate() {
            match translate::listener(l, &ignored) {
                Ok(Some(p)) if p.rds().is_some() => errors.push(format!(
                    "static_resources.listeners[{i}] {:?}: rds in static_resources is not supported (RDS works for listeners from LDS); give route_config inline",
                    l.name
                )),
                Ok(Some(l)) => listeners.push(l),
                Ok(None) => {}
                Err(e) => errors.push(format!("static_resources.listeners[{i}] {:?}: {e}", l.name)),
            }
        }
        let ads_cluster = boot.as_ref().and_then(bootstrap::ads_cluster);
        for (i, c) in s.clusters.iter().enumerate() {
            if ads_cluster.as_deref() == Some(c.name.as_str()) {
                continue; // the agent's own connection to the server
            }
            match translate::cluster(c, &ignored) {
                Ok(p) => clusters.push(p),
                Err(e) => errors.push(format!("static_resources.clusters[{i}] {:?}: {e}", c.name)),
            }
        }
    }
    if !errors.is_empty() {
        return Err(Error::StaticResources(errors));
    }
    if cli.check {
        let u = ProxyUpdate {
            version: "bootstrap".into(),
            full: true,
            listeners: listeners.iter().map(|p| p.cfg.clone()).collect(),
            clusters: clusters.iter().map(|c| c.cfg.clone()).collect(),
            route_configs: listeners
                .iter()
                .filter_map(|p| p.inline_routes().cloned())
                .collect(),
            ..ProxyUpdate::default()
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&u).map_err(Error::Print)?
        );
        return Ok(());
    }

    let server = match (&cli.server, &boot, &cli.bootstrap) {
        (Some(s), _, _) => Some(parse_target(s)?),
        (None, Some(b), Some(path)) => {
            bootstrap::ads_server(b).map_err(|source| Error::Bootstrap {
                path: path.clone(),
                source,
            })?
        }
        _ => return Err(Error::NothingToDo),
    };
    if let Some(s) = &server {
        s.endpoint().map_err(Error::ServerAddress)?;
    }
    let mut node = boot
        .as_ref()
        .and_then(|b| b.node.clone())
        .unwrap_or_default();
    if let Some(id) = &cli.node_id {
        node.id = id.clone();
    }
    if let Some(c) = &cli.node_cluster {
        node.cluster = c.clone();
    }
    if server.is_some() {
        node::check_id(&node.id).map_err(Error::NodeId)?;
    }
    let mut metadata = BTreeMap::new();
    for kv in &cli.node_metadata {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::NodeMetadata(kv.clone()))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
        metadata.insert(k.to_owned(), v);
    }
    let mut n = node::build(&node.id, &node.cluster, &metadata);
    if metadata.is_empty() {
        n.metadata = node.metadata.clone();
    }
    n.locality = node.locality.clone();
    let mode = if cli.delta || boot.as_ref().is_some_and(bootstrap::wants_delta) {
        Mode::Delta
    } else {
        Mode::Sotw
    };
    // The state machine reads no clock: its time starts here.
    let now = Instant::now();
    let mut xds = Xds::new(
        mode,
        n,
        Duration::from_millis(cli.resource_timeout_ms),
        ignored,
        now,
    );
    xds.set_static(listeners, clusters, now);
    let opts = client::Options {
        server: server.clone(),
        max_message_bytes: cli.max_message_bytes,
        backoff_base: Duration::from_millis(cli.backoff_base_ms.max(1)),
        backoff_max: Duration::from_millis(cli.backoff_max_ms.max(cli.backoff_base_ms).max(1)),
    };
    tracing::info!(
        "control-agent: server {}, mode {mode:?}, node {:?}, data plane {}",
        server
            .as_ref()
            .map_or("none (static resources only)".into(), |s| s.to_string()),
        xds_node_id(&cli, &boot),
        cli.dataplane_socket.display()
    );
    let dp = DataPlane::new(&cli.dataplane_socket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(Error::Signal)?;
        tokio::select! {
            r = client::run(xds, opts, dp) => match r {
                Ok(never) => match never {},
                Err(e) => return Err(Error::Ads(e)),
            },
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; the data plane keeps its configuration"),
            _ = term.recv() => tracing::info!("terminated; the data plane keeps its configuration"),
        }
        Ok(())
    })
}

fn xds_node_id(
    cli: &Cli,
    boot: &Option<envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap>,
) -> String {
    cli.node_id
        .clone()
        .or_else(|| {
            boot.as_ref()
                .and_then(|b| b.node.as_ref())
                .map(|n| n.id.clone())
        })
        .unwrap_or_default()
}

fn parse_target(s: &str) -> Result<Target, Error> {
    if let Some(p) = s.strip_prefix("unix:") {
        let p = p.trim_start_matches("//");
        if p.is_empty() {
            return Err(Error::ServerPath);
        }
        return Ok(Target::Unix(p.into()));
    }
    if s.starts_with("http://") {
        return Ok(Target::Tcp(s.to_owned()));
    }
    if s.starts_with("https://") {
        return Err(Error::ServerTls);
    }
    if s.contains(':') {
        return Ok(Target::Tcp(format!("http://{s}")));
    }
    Err(Error::ServerForm(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(args: &[&str]) -> Result<(), Error> {
        let cli = Cli::try_parse_from(std::iter::once("control-agent").chain(args.iter().copied()))
            .expect("flags parse");
        run(cli)
    }

    #[test]
    fn bad_input_exits_2_before_anything_runs() {
        let cases: [(&[&str], &str); 7] = [
            (&[], "nothing to do"),
            (&["--server", "istiod"], "expected http://HOST:PORT"),
            (&["--server", "unix:"], "needs a path"),
            (&["--server", "https://istiod:15012"], "TLS"),
            (&["--server", "http://bad host:1"], "bad server address"),
            (&["--server", "h:1", "--node-id", "sidecar~x"], "node.id"),
            (
                &["--server", "h:1", "--node-id", "n", "--node-metadata", "k"],
                "expected KEY=VALUE",
            ),
        ];
        for (args, want) in cases {
            let e = run_with(args).expect_err("bad input");
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
            assert!(e.to_string().contains(want), "{args:?}: {e}");
        }
        let e = run_with(&["--bootstrap", "/nonexistent/envoy.yaml", "--check"]).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(
            e.to_string()
                .contains("cannot read /nonexistent/envoy.yaml"),
            "{e}"
        );
    }

    #[test]
    fn failures_at_run_time_exit_1() {
        let io = || std::io::Error::other("x");
        assert_eq!(Error::Runtime(io()).exit_code(), 1);
        assert_eq!(Error::Signal(io()).exit_code(), 1);
        let bad = Target::Tcp("http://bad host:1".into())
            .endpoint()
            .unwrap_err();
        assert!(!bad.is_retryable());
        assert_eq!(Error::Ads(bad).exit_code(), 1);
    }
}
