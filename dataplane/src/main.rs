//! `dataplane`: the per-node kernel-bypass data plane.
//!
//! The binary holds the wiring; the proxy logic is the `proxy` crate's.
//! - `main`: the CLI and its commands;
//! - `eal_args`, `ports`: EAL's arguments, the ports, their pools and how
//!   each port's traffic is steered to the core owning a connection;
//! - `launch`, `worker`: one worker per configured core, each owning one
//!   RX/TX queue pair on every port, its own network stack and its apps,
//!   in a run-to-completion loop;
//! - `control`, `admin`, `stats`: the main thread's control loop, which
//!   serves the admin socket (stats, live updates) until SIGINT/SIGTERM,
//!   drains, then stops the workers, closes the ports (detaching AF_XDP
//!   programs) and cleans EAL up.
#![forbid(unsafe_code)]

mod admin;
mod admin_http;
mod control;
mod eal_args;
mod envoy_stats;
mod launch;
mod ports;
mod stats;
mod top;
mod worker;
mod zipkin;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use dataplane_config::admin::{AdminRequest, ApplyReply, ClientError, ErrorKind};
use dataplane_config::{Config, ProxyState, ProxyUpdate};
use dpdk::{Eal, Mempool, Port};
use proxy::Live;

use crate::control::initial_state;

#[derive(Parser, Debug)]
#[command(
    name = "dataplane",
    version,
    about = "Kernel-bypass data plane on DPDK with a user-space network stack",
    long_about = "Kernel-bypass data plane on DPDK with a user-space network stack.\n\n\
Without a subcommand it runs: it starts DPDK's EAL, brings up the ports named in the config \
(DPDK virtual devices such as net_af_xdp, or PCI NICs bound to vfio-pci), runs one worker per \
configured core, answers ARP and ping on each port's address, and proxies TCP from the \
configured listeners to their clusters. SIGINT/SIGTERM drain it (listeners close, proxied \
connections get drain_timeout_ms) and stop it cleanly; a second signal stops it at once. \
Envoy's admin API (/ready, /stats/prometheus, /config_dump, /clusters, ...) is served on \
admin.address, 127.0.0.1:15000 by default (docs/admin.md). Without --config it uses the embedded default (see `dataplane default-config`), which \
matches the namespaces that `scripts/topology.sh up` builds.\n\n\
EAL arguments can be appended after `--`, e.g. `dataplane -c dp.yaml -- --log-level=lib.eal:debug`.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the data plane (the default).
    Run(RunArgs),
    /// Print a running data plane's counters (ports, cores, listeners, clusters, endpoints), read through its admin socket.
    Stats(StatsArgs),
    /// Change a running data plane's listeners and clusters: send an update
    /// (YAML or JSON, docs/config.md "Live updates") to its admin socket. It
    /// is checked and applied atomically by every worker, or rejected whole
    /// with every problem listed (exit 2).
    Apply(ApplyArgs),
    /// Print the listeners and clusters a running data plane has in force.
    ShowConfig(SocketArgs),
    /// A live table of a running data plane: per core its load (busy share
    /// of the loop), packets and drops per second and sessions; per
    /// listener and cluster requests and connections per second and p50/p99
    /// latency over the last interval. Ctrl-C ends it.
    Top(TopArgs),
    /// Print the embedded default configuration.
    DefaultConfig,
}

#[derive(Args, Debug)]
struct SocketArgs {
    /// Admin socket of the data plane to ask.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Take the admin socket path from this configuration file.
    #[arg(short, long, value_name = "FILE", conflicts_with = "socket")]
    config: Option<PathBuf>,
}

impl SocketArgs {
    fn path(self) -> Result<PathBuf, Failure> {
        Ok(match (self.socket, self.config) {
            (Some(s), _) => s,
            (None, c) => load_config(c.as_deref())?.admin.socket,
        })
    }
}

#[derive(Args, Debug)]
struct TopArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// Seconds between refreshes (rates are over this interval).
    #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
    interval: f64,
    /// Print one table (after one interval) and exit, for scripts.
    #[arg(long)]
    once: bool,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: give seconds between 0.1 and 3600")),
    }
}

#[derive(Args, Debug)]
struct ApplyArgs {
    /// The update: `version`, `full`, `listeners`, `clusters`,
    /// `remove_listeners`, `remove_clusters`.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    socket: SocketArgs,
}

#[derive(Args, Debug, Default)]
struct RunArgs {
    /// YAML configuration file (docs/config.md); the embedded default if absent.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration (and this host's CPUs) and exit: 0 if valid, 2 if not.
    #[arg(long)]
    check: bool,
    /// Extra EAL arguments, after `--`.
    #[arg(last = true, value_name = "EAL_ARGS")]
    eal_args: Vec<String>,
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Admin socket of the data plane to ask.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Take the admin socket path from this configuration file.
    #[arg(short, long, value_name = "FILE", conflicts_with = "socket")]
    config: Option<PathBuf>,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The log filter, which `POST /logging` replaces.
pub(crate) static LOG_FILTER: OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = OnceLock::new();

fn main() -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    let _ = LOG_FILTER.set(handle);
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Stats(a)) => cmd_stats(a),
        Some(Cmd::Apply(a)) => cmd_apply(a),
        Some(Cmd::ShowConfig(a)) => a.path().and_then(|p| {
            let v: serde_json::Value = admin::request(&p, &AdminRequest::Config)?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(())
        }),
        Some(Cmd::Top(a)) => {
            let interval = std::time::Duration::from_secs_f64(a.interval);
            a.socket.path().and_then(|p| top::run(&p, interval, a.once))
        }
        Some(Cmd::DefaultConfig) => {
            print!("{}", dataplane_config::DEFAULT_YAML);
            Ok(())
        }
        Some(Cmd::Run(a)) => cmd_run(a),
        None => cmd_run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("dataplane: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed, and so its exit code.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Bad configuration or input: exit 2.
    #[error("{0}")]
    Config(String),
    /// Anything else: exit 1.
    #[error("{0}")]
    Runtime(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Runtime(s)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Runtime(match e {
            ClientError::Unreachable { .. } => {
                format!("{e} (is it running? pass --socket or --config)")
            }
            e => e.to_string(),
        })
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, Failure> {
    let (text, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p)
                .map_err(|e| Failure::Config(format!("cannot read config {}: {e}", p.display())))?,
            p.display().to_string(),
        ),
        None => (
            dataplane_config::DEFAULT_YAML.to_string(),
            "embedded default".to_string(),
        ),
    };
    Config::from_yaml(&text).map_err(|e| Failure::Config(format!("{origin}: {e}")))
}

fn cmd_stats(a: StatsArgs) -> Result<(), Failure> {
    let socket = match (a.socket, a.config) {
        (Some(s), _) => s,
        (None, c) => load_config(c.as_deref())?.admin.socket,
    };
    let v: serde_json::Value = admin::request(&socket, &AdminRequest::Stats)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", stats::render(&v));
    }
    Ok(())
}

fn cmd_apply(a: ApplyArgs) -> Result<(), Failure> {
    let text = std::fs::read_to_string(&a.file)
        .map_err(|e| Failure::Config(format!("cannot read {}: {e}", a.file.display())))?;
    let update: ProxyUpdate = serde_saphyr::from_str(&text)
        .map_err(|e| Failure::Config(format!("{}: {e}", a.file.display())))?;
    let socket = a.socket.path()?;
    let r: ApplyReply = match admin::request(
        &socket,
        &AdminRequest::Apply {
            update: std::borrow::Cow::Owned(update),
        },
    ) {
        Ok(r) => r,
        // Its content was refused: bad input.
        Err(ClientError::Refused(e)) if e.kind == ErrorKind::Rejected => {
            return Err(Failure::Config(format!("{}: {e}", a.file.display())));
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "applied version {:?} (generation {}) in {} µs",
        r.version, r.generation, r.apply_us
    );
    for x in &r.rejected {
        println!("  rejected: {x}");
    }
    Ok(())
}

fn cmd_run(a: RunArgs) -> Result<(), Failure> {
    let cfg = load_config(a.config.as_deref())?;
    let online = eal_args::online_cpus();
    let host = eal_args::host_errors(&cfg, &online);
    if !host.is_empty() {
        return Err(Failure::Config(format!(
            "invalid configuration for this host:\n  - {}",
            host.join("\n  - ")
        )));
    }
    let state = initial_state(&cfg)?;
    if a.check {
        println!(
            "configuration OK: {} port(s), {} worker core(s) {:?}, admin socket {}, admin HTTP {}",
            cfg.ports.len(),
            cfg.workers.cores.len(),
            cfg.workers.cores,
            cfg.admin.socket.display(),
            cfg.admin
                .address
                .map_or("off".to_string(), |a| format!("http://{a}/"))
        );
        return Ok(());
    }

    // Stop on the first SIGINT/SIGTERM; a second one exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    }

    // Bind the admin socket and port before EAL so a clash fails fast.
    let admin = Admin {
        socket: admin::AdminServer::bind(&cfg.admin.socket, cfg.admin.max_request_bytes)
            .map_err(|e| Failure::Runtime(e.to_string()))?,
        http: cfg
            .admin
            .address
            .map(admin_http::HttpAdmin::bind)
            .transpose()?,
    };
    let mut eal_started = false;
    let result = run(
        &cfg,
        state,
        &online,
        &a.eal_args,
        &stop,
        &admin,
        &mut eal_started,
    );
    drop(admin);
    // Only our own leftovers: if EAL did not start here, the prefix may belong
    // to another running DPDK process.
    if eal_started {
        ports::cleanup_eal_files(&cfg);
    }
    result
}

/// The admin endpoints, bound before EAL starts.
struct Admin {
    socket: admin::AdminServer,
    http: Option<admin_http::HttpAdmin>,
}

fn run(
    cfg: &Config,
    state: ProxyState,
    online: &[u32],
    passthrough: &[String],
    stop: &Arc<AtomicBool>,
    admin: &Admin,
    eal_started: &mut bool,
) -> Result<(), Failure> {
    let started = Instant::now();
    let args = eal_args::build(cfg, online, passthrough);
    tracing::info!("starting EAL: {}", args[1..].join(" "));
    let eal =
        Eal::init(&args).map_err(|e| format!("{e} (EAL arguments: {})", args[1..].join(" ")))?;
    *eal_started = true;
    let lcores = eal.worker_lcores();
    if lcores.len() != cfg.workers.cores.len() {
        return Err(format!(
            "EAL started {} worker lcores, config asks for {}",
            lcores.len(),
            cfg.workers.cores.len()
        )
        .into());
    }
    let ports = ports::start(cfg, &eal, &lcores)?;
    let layouts = ports::steering(cfg, &ports, &random_secret::<40>()?);
    // Listeners and clusters, shared with the workers as updates.
    let live = Live::new(state, cfg, lcores.len());
    let (workers, handles) = launch::launch(cfg, &eal, &lcores, &ports, &layouts, &live)?;
    tracing::info!(
        "running: {} worker(s) on CPUs {:?}, mode {:?}; admin socket {}",
        lcores.len(),
        cfg.workers.cores,
        cfg.workers.mode,
        cfg.admin.socket.display()
    );

    let shared = admin_http::Shared::default();
    shared
        .published
        .store(Arc::new(admin_http::Published::of(&live, true)));
    if !live.state.listeners.is_empty() || !live.state.clusters.is_empty() {
        shared.count_static();
    }
    let instance = format!("{:016x}", u64::from_le_bytes(random_secret::<8>()?));
    let mut control = control::Control {
        cfg,
        ports: &ports,
        workers: &workers,
        live,
        started,
        tsc_hz: eal.tsc_hz(),
        instance: instance.clone(),
        shared: &shared,
        republish: false,
    };
    // Ends the admin and exporter threads once the control loop returns.
    let threads_done = AtomicBool::new(false);
    let mut failed = std::thread::scope(|s| {
        if let Some(http) = &admin.http {
            let src = admin_http::Sources {
                cfg,
                ports: &ports,
                workers: &workers.views,
                shared: &shared,
                started,
                tsc_hz: eal.tsc_hz(),
                instance: &instance,
                drain: &workers.drain,
                stop,
            };
            let done = &threads_done;
            let spawned = std::thread::Builder::new()
                .name("admin-http".into())
                .spawn_scoped(s, move || http.serve(&src, done));
            match spawned {
                Ok(_) => tracing::info!(
                    "admin HTTP server on http://{}/",
                    http.local_addr().map_or(String::new(), |a| a.to_string())
                ),
                Err(e) => tracing::warn!("cannot start the admin HTTP thread: {e}"),
            }
        }
        if let Some(z) = &cfg.tracing.zipkin
            && let Some(collector) = z.collector
        {
            let (views, counts, done) = (&workers.views, &shared.tracing, &threads_done);
            let node = instance.as_str();
            let spawned = std::thread::Builder::new()
                .name("zipkin".into())
                .spawn_scoped(s, move || {
                    zipkin::run(z, collector, views, node, counts, done)
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start the span exporter: {e}");
            }
        }
        let failed = control.run(&admin.socket, stop);
        threads_done.store(true, Ordering::Relaxed);
        failed
    });
    tracing::info!("stopping");
    workers.stop.store(true, Ordering::Relaxed);
    for h in handles {
        let lcore = h.lcore();
        let rc = h.join();
        if rc != 0 {
            failed.get_or_insert(format!("worker on lcore {lcore} failed (code {rc})"));
        }
    }
    let final_stats = control.snapshot();
    control.save_if_dirty();
    drop(control);
    drop(workers);
    // Close every port (stop + close: AF_XDP detaches its XDP program) before
    // any pool goes: a port's TX ring may hold buffers of another port's pool.
    let (ports, pools): (Vec<Port>, Vec<Vec<Arc<Mempool>>>) = ports.into_iter().unzip();
    drop(ports);
    drop(pools);
    drop(eal); // rte_eal_cleanup once the last DPDK object is gone
    tracing::info!(
        "stopped cleanly: rx {} tx {} packets",
        final_stats["totals"]["rx_packets"],
        final_stats["totals"]["tx_packets"]
    );
    match failed {
        Some(f) => Err(f.into()),
        None => Ok(()),
    }
}

/// `N` random bytes from the kernel.
pub(crate) fn random_secret<const N: usize>() -> Result<[u8; N], Failure> {
    use std::io::Read;
    let mut secret = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|e| format!("cannot read /dev/urandom for a secret key: {e}"))?;
    Ok(secret)
}
