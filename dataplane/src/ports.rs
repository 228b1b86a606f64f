//! Ports: one mempool per (port, queue) on the NUMA socket of the queue's
//! worker, the ports started with one queue pair per worker, how each
//! port's traffic is steered to the core that owns a connection, and the
//! network stack's view of the ports.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dataplane_config::{Config, Ipv4Net, RxChecksumPolicy, SteeringMode, WorkerMode, parse_ipv4};
use dpdk::{Eal, Mempool, Port, PortConfig};
use netstack::{ArpParams, EthernetAddress, IfaceConfig, StackConfig, ZeroCopyConfig};

use crate::Failure;

/// A started port and its pools, one per worker queue.
pub type PortPools = (Port, Vec<Arc<Mempool>>);

/// How a port's traffic reaches the core that owns a connection: the RSS
/// key and redirection table, and whether the cores apply them in software.
pub type Layout = (Vec<u8>, Vec<u16>, bool);

/// Start every configured port with one queue pair per worker lcore.
pub fn start(cfg: &Config, eal: &Eal, lcores: &[u32]) -> Result<Vec<PortPools>, Failure> {
    let nq = lcores.len() as u16;
    let mut ports = Vec::new();
    for (pi, pc) in cfg.ports.iter().enumerate() {
        let name = crate::eal_args::device_name(&pc.device);
        let mut pools = Vec::new();
        for (q, &lcore) in lcores.iter().enumerate() {
            let pool = Mempool::new(
                eal,
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
        let port = Port::start(eal, name, &pcfg, &pools)
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
    Ok(ports)
}

/// With several workers, a TCP connection's packets must all reach the
/// core that owns it. The device's RSS decides where they arrive when it
/// has RSS; otherwise (or when told) the receiving core passes each
/// segment on to the owner by the same Toeplitz function, with a key of
/// our own (`soft_key`, random so that nobody can aim many flows at one
/// core). Either way active opens choose their ports by it. Per port.
pub fn steering(cfg: &Config, ports: &[PortPools], soft_key: &[u8]) -> Vec<Option<Layout>> {
    let nq = cfg.workers.cores.len() as u16;
    let several_stacks = nq > 1 && cfg.workers.mode == WorkerMode::Stack;
    let mut layouts = Vec::new();
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
    layouts
}

/// The network stack of one worker: an interface per port.
pub fn stack_config(cfg: &Config, ports: &[PortPools]) -> StackConfig {
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
pub fn cleanup_eal_files(cfg: &Config) {
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

pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
