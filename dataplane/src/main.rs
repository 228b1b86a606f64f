//! `dataplane`: the per-node kernel-bypass data plane.
//!
//! The main thread starts EAL, brings the ports up, launches one worker per
//! configured core (each owning one RX/TX queue pair on every port and its own
//! network stack), then serves the admin socket until SIGINT/SIGTERM, after
//! which it stops the workers, closes the ports (detaching AF_XDP programs)
//! and cleans EAL up.
#![forbid(unsafe_code)]

mod admin;
mod eal_args;
mod lb;
mod live;
mod proxy;
mod service;
mod stats;
mod worker;

use std::io::IsTerminal;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use dataplane_config::{
    Config, Ipv4Net, ProxyState, ProxyUpdate, RxChecksumPolicy, SteeringMode, WorkerMode,
    parse_ipv4,
};
use dpdk::{Eal, Mempool, Port, PortConfig};
use netstack::{ArpParams, EthernetAddress, IfaceConfig, Stack, StackConfig, ZeroCopyConfig};
use serde::Deserialize;
use serde_json::json;

use crate::worker::{Apps, Engine, LoopStats, Worker};

/// How long an update waits for every worker to confirm it.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);
/// Saves of the state file are at most this frequent.
const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Frames in flight from one worker to another (software steering).
const STEER_RING: usize = 4096;

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
connections get drain_timeout_ms) and stop it cleanly; a second signal stops it at once. Without --config it uses the embedded default (see `dataplane default-config`), which \
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Stats(a)) => cmd_stats(a),
        Some(Cmd::Apply(a)) => cmd_apply(a),
        Some(Cmd::ShowConfig(a)) => a.path().and_then(|p| {
            let v = admin::request(&p, &json!({"cmd": "config"}))?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(())
        }),
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

enum Failure {
    /// Bad configuration: exit 2.
    Config(String),
    /// Anything else: exit 1.
    Runtime(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Runtime(s)
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
    let v = admin::request(&socket, &json!({"cmd": "stats"}))?;
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
    let v = admin::request_raw(&socket, &json!({"cmd": "apply", "update": update}))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(Failure::Config(format!("{}: {err}", a.file.display())));
    }
    println!(
        "applied version {:?} (generation {}) in {} µs",
        v["version"].as_str().unwrap_or(""),
        v["generation"],
        v["apply_us"]
    );
    Ok(())
}

/// The listeners and clusters to start with: the state file's, if there is
/// one, else the configuration's.
fn initial_state(cfg: &Config) -> Result<ProxyState, Failure> {
    let Some(path) = cfg.admin.state_file.as_ref().filter(|p| p.exists()) else {
        return Ok(ProxyState::from_config(cfg));
    };
    let bad = |why: String| {
        Failure::Config(format!(
            "admin.state_file {}: {why}; fix or remove it to start from the configuration's listeners and clusters",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let saved: ProxyState = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let update = ProxyUpdate {
        version: saved.version,
        full: true,
        listeners: saved.listeners.into_values().collect(),
        clusters: saved.clusters.into_values().collect(),
        ..ProxyUpdate::default()
    };
    let change = ProxyState::default().check(update, cfg).map_err(|r| {
        bad(r
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("; "))
    })?;
    let mut state = ProxyState::default();
    state.apply(&change);
    tracing::info!(
        "listeners and clusters from {} (version {:?}): {} listener(s), {} cluster(s)",
        path.display(),
        state.version,
        state.listeners.len(),
        state.clusters.len()
    );
    Ok(state)
}

/// Write the state in force to `path` (atomically: a temporary file, then
/// rename).
fn save_state(path: &Path, state: &ProxyState) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, json)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
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
            "configuration OK: {} port(s), {} worker core(s) {:?}, admin socket {}",
            cfg.ports.len(),
            cfg.workers.cores.len(),
            cfg.workers.cores,
            cfg.admin.socket.display()
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

    // Bind the admin socket before EAL so a clash fails fast.
    let admin = admin::AdminServer::bind(&cfg.admin.socket, cfg.admin.max_request_bytes)?;
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
        cleanup_eal_files(&cfg);
    }
    result
}

fn run(
    cfg: &Config,
    state: ProxyState,
    online: &[u32],
    passthrough: &[String],
    stop: &Arc<AtomicBool>,
    admin: &admin::AdminServer,
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
    let nq = cfg.workers.cores.len() as u16;

    // Ports: one pool per (port, queue), on the NUMA socket of the queue's worker.
    let mut ports = Vec::new();
    for (pi, pc) in cfg.ports.iter().enumerate() {
        let name = eal_args::device_name(&pc.device);
        let mut pools = Vec::new();
        for (q, &lcore) in lcores.iter().enumerate() {
            let pool = Mempool::new(
                &eal,
                &format!("dp{pi}q{q}"),
                cfg.mempool.mbufs_per_queue,
                cfg.mempool.cache_size,
                cfg.mempool.data_room,
                eal.lcore_socket(lcore),
            )
            .map_err(|e| format!("ports[{pi}] ({}): mempool: {e} (are hugepages reserved? see scripts/setup-host.sh)", pc.name))?;
            pools.push(Arc::new(pool));
        }
        let pcfg = PortConfig {
            queues: nq,
            rx_descriptors: pc.rx_descriptors,
            tx_descriptors: pc.tx_descriptors,
            mtu: (pc.mtu != 1500).then_some(pc.mtu),
            promiscuous: pc.promiscuous,
            ..PortConfig::default()
        };
        let port = Port::start(&eal, name, &pcfg, &pools)
            .map_err(|e| format!("ports[{pi}] ({}): {e}", pc.name))?;
        let caps = port.capabilities_of();
        tracing::info!(
            "port {} ({}, driver {}): mac {} link {} queues {} rss {} tx offloads: multi-seg {} ipv4-cksum {} l4-cksum {} tso {}; rx checksum offload {}",
            pc.name,
            name,
            caps.driver,
            fmt_mac(port.mac()),
            if port.link().up { "up" } else { "down" },
            nq,
            port.rss_enabled(),
            caps.tx_multi_segs(),
            caps.tx_ipv4_cksum(),
            caps.tx_l4_cksum(),
            caps.tx_tso(),
            caps.rx_ipv4_cksum(),
        );
        ports.push((port, pools));
    }

    // With several workers, a TCP connection's packets must all reach the
    // core that owns it. The device's RSS decides where they arrive when it
    // has RSS; otherwise (or when told) the receiving core passes each
    // segment on to the owner by the same Toeplitz function, with a key of
    // our own. Either way active opens choose their ports by it.
    let several_stacks = nq > 1 && cfg.workers.mode == WorkerMode::Stack;
    // Random, so that nobody can aim many flows at one core.
    let soft_key = random_secret::<40>()?;
    let mut layouts = Vec::new(); // per port: (key, reta, in software)
    for (pi, (port, _)) in ports.iter().enumerate() {
        let pc = &cfg.ports[pi];
        let hw = (pc.steering == SteeringMode::Auto)
            .then(|| port.rss_layout())
            .flatten();
        let layout = match hw {
            _ if !several_stacks => None,
            Some(l) => Some((l.key, l.reta, false)),
            None => {
                tracing::info!(
                    "ports[{pi}] ({}): {} on driver {}: software steering over {nq} workers",
                    pc.name,
                    if pc.steering == SteeringMode::Software {
                        "asked for"
                    } else {
                        "no RSS"
                    },
                    port.capabilities_of().driver
                );
                let reta = (0..128).map(|i| i % nq).collect();
                Some((soft_key.to_vec(), reta, true))
            }
        };
        layouts.push(layout);
    }
    let soft = layouts.iter().flatten().any(|l| l.2);
    let mut steer_links = if soft {
        worker::SteerLinks::mesh(usize::from(nq), STEER_RING)
    } else {
        Vec::new()
    };
    steer_links.reverse(); // popped in worker order below

    // Workers.
    let worker_stop = Arc::new(AtomicBool::new(false));
    let drain = Arc::new(AtomicBool::new(false));
    // Listeners and clusters, shared with the workers as updates.
    let mut live = live::Live::new(state, cfg, lcores.len());
    let mut mailboxes = Vec::new();
    let mut handles = Vec::new();
    let mut views = Vec::new();
    for (wi, &lcore) in lcores.iter().enumerate() {
        let q = wi as u16;
        let rx = ports
            .iter()
            .map(|(p, _)| p.rx_queue(q).expect("queue taken once"))
            .collect();
        let tx = ports
            .iter()
            .map(|(p, _)| {
                p.tx_queue(q, usize::from(cfg.workers.burst_size))
                    .expect("queue taken once")
            })
            .collect();
        let seed = random_secret::<8>()?;
        let (engine, apps) = match cfg.workers.mode {
            WorkerMode::Stack => {
                let mut stack_cfg = stack_config(cfg, &ports);
                let mut steering = Vec::new();
                for (ifc, l) in stack_cfg.ifaces.iter_mut().zip(&layouts) {
                    let Some((key, reta, in_software)) = l else {
                        continue;
                    };
                    let st = netstack::rss::Steering::new(key.clone(), reta.clone(), q);
                    if *in_software {
                        ifc.soft_steering = Some(st.clone());
                    }
                    steering.push((ifc.addr, st));
                }
                let addrs: Vec<Ipv4Addr> = stack_cfg.ifaces.iter().map(|i| i.addr).collect();
                let mut stack = Stack::new(stack_cfg);
                stack.enable_tcp(tcp_config(cfg, steering)?, netstack::Instant::ZERO);
                let tcp = stack.tcp().expect("enabled above");
                let backlog = cfg.tcp.backlog as usize;
                let services = service::Services::new(&cfg.services, &addrs, tcp, backlog);
                let proxy = proxy::Proxy::new(wi, &addrs, backlog, u64::from_le_bytes(seed));
                let apps = Apps {
                    services: Some(services),
                    proxy: Some(proxy),
                };
                (Engine::Stack(Box::new(stack)), apps)
            }
            WorkerMode::L2Reflect => (Engine::L2Reflect, Apps::default()),
        };
        let service_stats = apps.services.as_ref().map(|s| s.stats().clone());
        let proxy_stats = apps.proxy.as_ref().map(|p| p.stats().clone());
        let stack_stats = match &engine {
            Engine::Stack(s) => Some(s.stats().clone()),
            Engine::L2Reflect => None,
        };
        let loop_stats = Arc::new(LoopStats::default());
        let mailbox = live::Mailbox::with(live.initial());
        mailboxes.push(mailbox.clone());
        let w = Worker {
            rx,
            tx,
            pool: ports[0].1[wi].clone(),
            engine,
            apps,
            steer: steer_links.pop(),
            burst: cfg.workers.burst_size,
            idle: cfg.workers.idle.clone(),
            stats: loop_stats.clone(),
            stop: worker_stop.clone(),
            drain: drain.clone(),
            mailbox,
            tsc_hz: eal.tsc_hz(),
        };
        match eal.launch(lcore, move || w.run()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                // Workers already running must stop, or joining them hangs.
                worker_stop.store(true, Ordering::Relaxed);
                return Err(
                    format!("launching the worker on CPU {}: {e}", cfg.workers.cores[wi]).into(),
                );
            }
        }
        views.push(stats::WorkerView {
            lcore,
            cpu: cfg.workers.cores[wi],
            loop_stats,
            stack_stats,
            service_stats,
            proxy_stats,
        });
    }
    tracing::info!(
        "running: {} worker(s) on CPUs {:?}, mode {:?}; admin socket {}",
        lcores.len(),
        cfg.workers.cores,
        cfg.workers.mode,
        cfg.admin.socket.display()
    );

    // Control loop: admin requests, stop signal, worker health. On the first
    // signal the proxy drains: listeners close, sessions get
    // drain_timeout_ms to finish, then the workers stop (resetting what is
    // left). A second signal exits at once.
    let tsc_hz = eal.tsc_hz();
    let mut failed = None;
    let mut drain_until = None;
    let mut saved_at = Instant::now();
    // Tells a control agent that this is a new process (it then pushes
    // everything again).
    let instance = format!("{:016x}", u64::from_le_bytes(random_secret::<8>()?));
    loop {
        admin.serve_pending(&mut |cmd, line| match cmd {
            "stats" => stats::snapshot(cfg, &ports, &views, &live, started.elapsed(), tsc_hz),
            "config" => {
                let mut v = serde_json::to_value(&live.state).unwrap_or_default();
                v["generation"] = json!(live.generation());
                v
            }
            "apply" => {
                let mut v = apply_update(cfg, &mut live, &mailboxes, line);
                v["instance"] = json!(instance);
                v
            }
            "ping" => json!({
                "instance": instance,
                "generation": live.generation(),
                "version": live.state.version,
            }),
            other => {
                json!({"error": format!("unknown cmd {other:?}; known: stats, config, apply, ping")})
            }
        });
        if let Some(path) = &cfg.admin.state_file
            && live.dirty
            && saved_at.elapsed() >= STATE_SAVE_INTERVAL
        {
            saved_at = Instant::now();
            live.dirty = false;
            if let Err(e) = save_state(path, &live.state) {
                tracing::warn!("cannot save the proxy state: {e}");
            }
        }
        if let Some(v) = views
            .iter()
            .find(|v| v.loop_stats.exited.load(Ordering::Relaxed))
        {
            failed = Some(format!("worker on CPU {} stopped unexpectedly", v.cpu));
            break;
        }
        if stop.load(Ordering::Relaxed) {
            let active = stats::proxy_sessions(&views);
            match drain_until {
                _ if live.listeners.is_empty() && active == 0 => break,
                None => {
                    tracing::info!(
                        "draining: listeners closed; {active} proxied connection(s) get up to {} ms to finish (signal again to stop now)",
                        cfg.drain_timeout_ms
                    );
                    drain.store(true, Ordering::Relaxed);
                    drain_until =
                        Some(Instant::now() + Duration::from_millis(cfg.drain_timeout_ms));
                }
                Some(_) if active == 0 && stats::proxy_drained(&views) => {
                    tracing::info!("drained: no proxied connection left");
                    break;
                }
                Some(t) if Instant::now() >= t => {
                    tracing::warn!("drain timeout: resetting {active} proxied connection(s)");
                    break;
                }
                Some(_) => {}
            }
        }
        live.flush_backlog(&mailboxes);
        admin.wait(Duration::from_millis(20));
    }
    tracing::info!("stopping");
    worker_stop.store(true, Ordering::Relaxed);
    for h in handles {
        let lcore = h.lcore();
        let rc = h.join();
        if rc != 0 {
            failed.get_or_insert(format!("worker on lcore {lcore} failed (code {rc})"));
        }
    }
    let final_stats = stats::snapshot(cfg, &ports, &views, &live, started.elapsed(), tsc_hz);
    if let Some(path) = &cfg.admin.state_file
        && live.dirty
        && let Err(e) = save_state(path, &live.state)
    {
        tracing::warn!("cannot save the proxy state: {e}");
    }
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

/// Check and apply the update in `line` (`{"cmd": "apply", "update": {...}}`)
/// and answer when every worker serves it.
fn apply_update(
    cfg: &Config,
    live: &mut live::Live,
    mailboxes: &[Arc<live::Mailbox>],
    line: &[u8],
) -> serde_json::Value {
    #[derive(Deserialize)]
    struct Apply {
        update: Option<ProxyUpdate>,
    }
    let t0 = Instant::now();
    let update = match serde_json::from_slice::<Apply>(line) {
        Ok(Apply { update: Some(u) }) => u,
        Ok(Apply { update: None }) => return json!({"error": "missing \"update\""}),
        Err(e) => return json!({"error": format!("update: {e}")}),
    };
    let version = update.version.clone();
    let (u, rejected) = match live.prepare(update, cfg) {
        Ok(ok) => ok,
        Err(rejected) => {
            let lines: Vec<String> = rejected.iter().map(|r| format!("\n  - {r}")).collect();
            return json!({
                "error": format!("update rejected, nothing changed:{}", lines.concat()),
                "rejected": rejected,
            });
        }
    };
    let served = live.publish(&u, mailboxes, PUBLISH_WAIT);
    let took = t0.elapsed();
    if !served {
        tracing::warn!(
            "update {version:?} (generation {}) not confirmed by every worker within {PUBLISH_WAIT:?}; they apply it when they run again",
            u.generation
        );
    }
    tracing::debug!(
        "update {version:?} applied in {} µs: +{} listener(s) -{}, +{} cluster(s) -{}",
        took.as_micros(),
        u.listeners.len(),
        u.remove_listeners.len(),
        u.clusters.len(),
        u.remove_clusters.len()
    );
    json!({
        "applied": served,
        "version": version,
        "generation": u.generation,
        "apply_us": took.as_micros() as u64,
        "rejected": rejected,
    })
}

/// `N` random bytes from the kernel.
fn random_secret<const N: usize>() -> Result<[u8; N], Failure> {
    use std::io::Read;
    let mut secret = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|e| format!("cannot read /dev/urandom for a secret key: {e}"))?;
    Ok(secret)
}

/// The TCP engine's settings, with a fresh secret for ISNs and the
/// connection table (RFC 6528).
fn tcp_config(
    cfg: &Config,
    steering: Vec<(Ipv4Addr, netstack::rss::Steering)>,
) -> Result<netstack::tcp::EngineConfig, Failure> {
    let secret = random_secret::<16>()?;
    let t = &cfg.tcp;
    Ok(netstack::tcp::EngineConfig {
        tcp: netstack::tcp::TcpConfig {
            // What one segment can carry on the smallest port MTU (IPv4 and
            // TCP headers without options: options come out of it, RFC 6691).
            mss: cfg
                .ports
                .iter()
                .map(|p| p.mtu)
                .min()
                .unwrap_or(1500)
                .saturating_sub(40)
                .max(536),
            min_rto: Duration::from_millis(t.min_rto_ms),
            time_wait: Duration::from_millis(t.time_wait_ms),
            recv_buffer: t.recv_buffer,
            send_buffer: t.send_buffer,
            delayed_ack: Duration::from_millis(t.delayed_ack_ms),
            keepalive: ms_or_off(t.keepalive_idle_ms).map(|idle| netstack::tcp::Keepalive {
                idle,
                interval: Duration::from_millis(t.keepalive_interval_ms),
                probes: t.keepalive_probes,
            }),
            user_timeout: ms_or_off(t.user_timeout_ms),
            idle_timeout: ms_or_off(t.idle_timeout_ms),
            timestamps: t.timestamps,
            congestion: match t.congestion {
                dataplane_config::CongestionControl::Reno => netstack::tcp::Congestion::Reno,
                dataplane_config::CongestionControl::Cubic => netstack::tcp::Congestion::Cubic,
            },
            ..netstack::tcp::TcpConfig::default()
        },
        max_connections: t.max_connections as usize,
        max_buffered: usize::try_from(t.max_buffered_bytes).unwrap_or(usize::MAX),
        secret,
        steering,
        ..netstack::tcp::EngineConfig::default()
    })
}

/// A duration in milliseconds where 0 means "off".
fn ms_or_off(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn stack_config(cfg: &Config, ports: &[(Port, Vec<Arc<Mempool>>)]) -> StackConfig {
    let ifaces = cfg
        .ports
        .iter()
        .zip(ports)
        .map(|(pc, (port, _))| {
            // Validated already: these parse.
            let net = Ipv4Net::parse(&pc.address).unwrap_or(Ipv4Net {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix_len: 32,
            });
            IfaceConfig {
                mac: EthernetAddress(port.mac()),
                addr: net.addr,
                prefix_len: net.prefix_len,
                gateway: pc.gateway.as_deref().and_then(|g| parse_ipv4(g).ok()),
                trust_rx_checksum: pc.rx_checksum == RxChecksumPolicy::Offload,
                tx_chain: port.capabilities_of().tx_multi_segs(),
                soft_steering: None,
            }
        })
        .collect();
    let a = &cfg.arp;
    StackConfig {
        ifaces,
        ttl: cfg.ip.ttl,
        arp: ArpParams {
            entry_ttl: Duration::from_millis(a.entry_ttl_ms),
            request_interval: Duration::from_millis(a.request_interval_ms),
            max_requests: a.max_requests,
            max_pending_per_neighbor: a.max_pending_per_neighbor as usize,
            max_pending_total: a.max_pending_total as usize,
            max_entries: a.max_entries as usize,
        },
        zero_copy: ZeroCopyConfig {
            rx_hold_limit: rx_hold_limit(cfg),
            ..ZeroCopyConfig::default()
        },
    }
}

/// Received buffers TCP payload may hold at once on one core: half of what
/// the smallest of its RX pools has beyond the descriptors of its rings, so
/// that data waiting to be read never starves reception.
fn rx_hold_limit(cfg: &Config) -> usize {
    let spare = cfg
        .ports
        .iter()
        .map(|p| {
            cfg.mempool
                .mbufs_per_queue
                .saturating_sub(u32::from(p.rx_descriptors) + u32::from(p.tx_descriptors))
        })
        .min()
        .unwrap_or(0);
    (spare / 2) as usize
}

/// Remove what EAL may leave on disk for our prefix (nothing with
/// `in_memory`): hugepage files and the runtime directory.
fn cleanup_eal_files(cfg: &Config) {
    let prefix = &cfg.eal.file_prefix;
    if let Ok(dir) = std::fs::read_dir("/dev/hugepages") {
        for e in dir.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}map_"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(prefix));
}

pub(crate) fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
