//! Starting the workers: each gets queue `i` of every port, its own network
//! stack and TCP engine, the apps that run on it (the L4 proxy and the test
//! services, from the `proxy` crate), a mailbox for configuration updates,
//! and its EAL lcore.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dataplane_config::{Config, WorkerMode};
use dpdk::Eal;
use dpdk::eal::LcoreJoin;
use netstack::Stack;
use proxy::http::hcm::HttpProxy;
use proxy::{Apps, Live, Mailbox, Services, TcpProxy};

use crate::Failure;
use crate::ports::{Layout, PortPools, stack_config};
use crate::stats::WorkerView;
use crate::worker::{Engine, LoopStats, SteerLinks, Worker};

/// Frames in flight from one worker to another (software steering).
const STEER_RING: usize = 4096;

/// The running workers, as the control loop sees them.
pub struct Workers {
    pub views: Vec<WorkerView>,
    pub mailboxes: Vec<Arc<Mailbox>>,
    /// Ends every worker loop.
    pub stop: Arc<AtomicBool>,
    /// Makes every worker stop accepting (SIGTERM).
    pub drain: Arc<AtomicBool>,
}

/// Build and launch one worker per lcore; their join handles come apart
/// from what the control loop reads. On failure the workers already
/// running are told to stop.
pub fn launch(
    cfg: &Config,
    eal: &Eal,
    lcores: &[u32],
    ports: &[PortPools],
    layouts: &[Option<Layout>],
    live: &Live,
) -> Result<(Workers, Vec<LcoreJoin>), Failure> {
    let nq = lcores.len();
    let soft = layouts.iter().flatten().any(|l| l.2);
    let mut steer_links = if soft {
        SteerLinks::mesh(nq, STEER_RING)
    } else {
        Vec::new()
    };
    steer_links.reverse(); // popped in worker order below
    let mut handles = Vec::new();
    let mut w = Workers {
        views: Vec::new(),
        mailboxes: Vec::new(),
        stop: Arc::new(AtomicBool::new(false)),
        drain: Arc::new(AtomicBool::new(false)),
    };
    // Process-wide, before any worker runs.
    proxy::metrics::HISTOGRAMS.store(cfg.stats.histograms, Ordering::Relaxed);
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
        let seed = u64::from_le_bytes(crate::random_secret::<8>()?);
        let mut apps = Apps::new(wi, seed);
        apps.set_overload(&cfg.overload_manager);
        if let Some(z) = &cfg.tracing.zipkin {
            apps.set_span_queue(z.queue_size as usize);
        }
        let mut service_stats = None;
        let engine = match cfg.workers.mode {
            WorkerMode::Stack => {
                let mut stack_cfg = stack_config(cfg, ports);
                let mut steering = Vec::new();
                for (ifc, l) in stack_cfg.ifaces.iter_mut().zip(layouts) {
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
                let secret = crate::random_secret::<16>()?;
                stack.enable_tcp(
                    proxy::engine_config(cfg, secret, steering),
                    netstack::Instant::ZERO,
                );
                let tcp = stack.tcp().expect("enabled above");
                let backlog = cfg.tcp.backlog as usize;
                let services = Services::new(&cfg.services, &addrs, tcp, backlog);
                service_stats = Some(services.stats().clone());
                // The proxy is offered events first; the services get the rest.
                apps.push(Box::new(TcpProxy::new(wi, &addrs, backlog)));
                apps.push(Box::new(HttpProxy::new(wi, &addrs, backlog)));
                apps.push(Box::new(services));
                Engine::Stack(Box::new(stack))
            }
            WorkerMode::L2Reflect => Engine::L2Reflect,
        };
        let proxy_stats = (!apps.is_empty()).then(|| apps.stats().clone());
        let stack_stats = match &engine {
            Engine::Stack(s) => Some(s.stats().clone()),
            Engine::L2Reflect => None,
        };
        let loop_stats = Arc::new(LoopStats::default());
        let mailbox = Mailbox::with(live.initial());
        w.mailboxes.push(mailbox.clone());
        let worker = Worker {
            rx,
            tx,
            pool: ports[0].1[wi].clone(),
            pools: ports.iter().map(|p| p.1[wi].clone()).collect(),
            engine,
            apps,
            steer: steer_links.pop(),
            burst: cfg.workers.burst_size,
            idle: cfg.workers.idle.clone(),
            stats: loop_stats.clone(),
            stop: w.stop.clone(),
            drain: w.drain.clone(),
            mailbox,
            tsc_hz: eal.tsc_hz(),
        };
        match eal.launch(lcore, move || worker.run()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                // Workers already running must stop, or joining them hangs.
                w.stop.store(true, Ordering::Relaxed);
                return Err(
                    format!("launching the worker on CPU {}: {e}", cfg.workers.cores[wi]).into(),
                );
            }
        }
        w.views.push(WorkerView {
            lcore,
            cpu: cfg.workers.cores[wi],
            loop_stats,
            stack_stats,
            service_stats,
            proxy_stats,
        });
    }
    Ok((w, handles))
}
