//! `bench xds-scale`: a large xDS snapshot (by default 10 000 EDS clusters
//! with 100 000 endpoints, and one listener) from the test suite's scripted
//! ADS server, applied by control-agent + data plane, and by Envoy.
//!
//! Measured, per round and protocol variant (SotW, Delta):
//! - snapshot: from the moment the EDS response (the clusters' endpoints;
//!   the clusters themselves wait warming until then) arrives at the agent
//!   to the moment every worker serves the new state; also the CDS
//!   response's handling and the whole run from the agent's start;
//! - one-endpoint change (5 of them, different clusters): from arrival to
//!   served. In SotW the server sends every subscribed assignment again
//!   (as go-control-plane's snapshot cache does), in Delta only the one;
//! - memory per cluster: the data plane's resident growth, and the agent's
//!   resident size, divided by the number of clusters.
//!
//! Envoy (PyPI wheel, one worker) gets the same snapshot from the same
//! server: time from its start to all clusters active and none warming
//! (its admin stats), and its resident growth per cluster against an Envoy
//! given an empty snapshot.
//!
//! Pinning: the data plane's worker on CPU 1; its control thread, the
//! agent, the server and Envoy on CPU 0.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_tests::Topology;
use e2e_tests::xds::{CDS, EDS, LDS, Listen, XdsServer};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};
use serde_json::{Value, json};

use crate::{Proc, median, rss_bytes};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value_t = 10_000)]
    clusters: usize,
    #[arg(long, default_value_t = 10)]
    endpoints_per_cluster: usize,
    /// Rounds of each variant; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Leave Envoy out.
    #[arg(long)]
    no_envoy: bool,
    /// Where the JSON goes.
    #[arg(long, default_value = "bench/results/xds-scale.json")]
    out: PathBuf,
}

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn sock(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn cluster_name(i: usize) -> String {
    format!(
        "outbound|{}||svc-{i}.bench.svc.cluster.local",
        8000 + i % 1000
    )
}

fn eds_cluster(i: usize) -> (String, Any) {
    let c = Cluster {
        name: cluster_name(i),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                resource_api_version: ApiVersion::V3 as i32,
                ..Default::default()
            }),
            service_name: String::new(),
        }),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    };
    (c.name.clone(), any(&c))
}

/// Endpoints in the upstream subnet (so every one has a route), each
/// address:port unique: 10.10.2.2-251, ports from 10000.
fn cla(i: usize, per: usize, salt: usize) -> (String, Any) {
    let lb = (0..per)
        .map(|k| {
            let n = i * per + k + salt;
            LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(sock(
                        &format!("10.10.2.{}", 2 + n % 250),
                        10_000 + (n / 250) as u32 % 50_000,
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }
        })
        .collect();
    let a = ClusterLoadAssignment {
        cluster_name: cluster_name(i),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: lb,
            ..Default::default()
        }],
        ..Default::default()
    };
    (a.cluster_name.clone(), any(&a))
}

fn listener() -> (String, Any) {
    let y = format!(
        r#"
name: bench
address: {{socket_address: {{address: 0.0.0.0, port_value: 8080}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: bench
      cluster: "{}"
"#,
        cluster_name(0)
    );
    (
        "bench".into(),
        control_agent::bootstrap::any_from_yaml("envoy.config.listener.v3.Listener", &y)
            .expect("listener"),
    )
}

fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The time of day (seconds) of a log line (`2026-11-22T08:18:41.982960Z ...`).
fn log_time(line: &str) -> Option<f64> {
    let t = line
        .split_whitespace()
        .next()?
        .split('T')
        .nth(1)?
        .trim_end_matches('Z');
    let mut p = t.split(':');
    let (h, m, s): (f64, f64, f64) = (
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

/// "X response of N resource(s): served by the data plane T ms after it
/// arrived" lines of the agent's log: (type, resources, ms).
fn served_lines(log: &Path) -> Vec<(String, usize, f64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let i = l.find(" response of ")?;
            let ty = l[..i].rsplit(' ').next()?.to_string();
            let rest = &l[i + " response of ".len()..];
            let n: usize = rest.split_whitespace().next()?.parse().ok()?;
            let j = rest.find("data plane ")? + "data plane ".len();
            let ms: f64 = rest[j..].split_whitespace().next()?.parse().ok()?;
            Some((ty, n, ms))
        })
        .collect()
}

struct Bins {
    dataplane: PathBuf,
    agent: PathBuf,
}

pub fn run(a: Args) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me.parent().ok_or("exe dir")?;
    let bins = Bins {
        dataplane: dir.join("dataplane"),
        agent: dir.join("control-agent"),
    };
    for b in [&bins.dataplane, &bins.agent] {
        if !b.exists() {
            return Err(format!(
                "{} not built (cargo build --release --workspace)",
                b.display()
            ));
        }
    }
    let envoy = if a.no_envoy {
        None
    } else {
        Some(e2e_tests::envoy_bin())
    };
    let prefix = format!("xb{}", std::process::id() % 10_000);
    // Interrupted: what runs in the namespaces (the data plane, the agent,
    // Envoy) is stopped and the namespaces go.
    crate::proxy_compare::on_signal_tear_down(&prefix)?;
    let topo = Topology::up(&prefix);
    let work = std::env::temp_dir().join(format!("bench-xds-{prefix}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let _cleanup = Cleanup(work.clone());

    eprintln!(
        "building the snapshot: {} clusters, {} endpoints...",
        a.clusters,
        a.clusters * a.endpoints_per_cluster
    );
    let clusters: Vec<(String, Any)> = (0..a.clusters).map(eds_cluster).collect();
    let assignments: Vec<(String, Any)> = (0..a.clusters)
        .map(|i| cla(i, a.endpoints_per_cluster, 0))
        .collect();
    let bytes: usize = clusters
        .iter()
        .chain(&assignments)
        .map(|(_, x)| x.value.len())
        .sum();
    eprintln!(
        "snapshot: {:.1} MiB of protobuf",
        bytes as f64 / (1 << 20) as f64
    );

    let mut results = Vec::new();
    for round in 0..a.rounds {
        for delta in [false, true] {
            let r = run_ours(&a, &bins, &topo, &work, &clusters, &assignments, delta)?;
            eprintln!(
                "round {} {}: snapshot served {:.0} ms after the CDS response arrived ({:.0} ms after the EDS response; CDS handled in {:.0} ms); one-endpoint change {:.2} ms (median of 5); data plane +{:.0} B/cluster, agent +{:.0} B/cluster",
                round + 1,
                if delta { "delta" } else { "sotw" },
                r["snapshot_ms"].as_f64().unwrap_or(f64::NAN),
                r["eds_to_served_ms"].as_f64().unwrap_or(f64::NAN),
                r["cds_ms"].as_f64().unwrap_or(f64::NAN),
                r["one_endpoint_ms"].as_f64().unwrap_or(f64::NAN),
                r["dataplane_bytes_per_cluster"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                r["agent_bytes_per_cluster"].as_f64().unwrap_or(f64::NAN),
            );
            results.push(r);
        }
        if let Some(envoy) = &envoy {
            let r = run_envoy(&a, envoy, &topo, &work, &clusters, &assignments)?;
            eprintln!(
                "round {} envoy: snapshot served {:.0} ms after the server sent the clusters; +{:.0} B/cluster",
                round + 1,
                r["snapshot_ms"].as_f64().unwrap_or(f64::NAN),
                r["bytes_per_cluster"].as_f64().unwrap_or(f64::NAN)
            );
            results.push(r);
        }
    }
    let pick = |who: &str, k: &str| -> f64 {
        let v: Vec<f64> = results
            .iter()
            .filter(|r| r["who"] == who)
            .filter_map(|r| r[k].as_f64())
            .collect();
        median(v)
    };
    let mut summary = json!({});
    for who in ["sotw", "delta"] {
        summary[who] = json!({
            "snapshot_ms": pick(who, "snapshot_ms"),
            "eds_to_served_ms": pick(who, "eds_to_served_ms"),
            "cds_ms": pick(who, "cds_ms"),
            "one_endpoint_ms": pick(who, "one_endpoint_ms"),
            "dataplane_bytes_per_cluster": pick(who, "dataplane_bytes_per_cluster"),
            "agent_bytes_per_cluster": pick(who, "agent_bytes_per_cluster"),
        });
    }
    if envoy.is_some() {
        summary["envoy"] = json!({
            "snapshot_ms": pick("envoy", "snapshot_ms"),
            "bytes_per_cluster": pick("envoy", "bytes_per_cluster"),
        });
    }
    let doc = json!({
        "clusters": a.clusters,
        "endpoints": a.clusters * a.endpoints_per_cluster,
        "rounds": a.rounds,
        "snapshot_protobuf_bytes": bytes,
        "pinning": "data plane worker on CPU 1; its control thread, control-agent, the xDS server and Envoy on CPU 0",
        "medians": summary,
        "runs": results,
    });
    let out = e2e_tests::root().join(&a.out);
    if let Some(d) = out.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap_or_default())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&doc["medians"]).unwrap_or_default()
    );
    eprintln!("written to {}", out.display());
    Ok(())
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[allow(clippy::too_many_arguments)]
fn run_ours(
    a: &Args,
    bins: &Bins,
    topo: &Topology,
    work: &Path,
    clusters: &[(String, Any)],
    assignments: &[(String, Any)],
    delta: bool,
) -> Result<Value, String> {
    let who = if delta { "delta" } else { "sotw" };
    let dir = work.join(who);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let admin = dir.join("admin.sock");
    let p = &topo.prefix;
    let cfg = format!(
        "eal: {{file_prefix: bench-xds-{p}, in_memory: true}}\n\
         workers: {{cores: [1], control_cores: [0]}}\n\
         ports:\n\
         \x20 - {{name: client, device: \"net_af_xdp0,iface={p}-c0,busy_budget=0\", address: 10.10.1.1/24}}\n\
         \x20 - {{name: upstream, device: \"net_af_xdp1,iface={p}-u0,busy_budget=0\", address: 10.10.2.1/24}}\n\
         admin: {{socket: {}}}\n",
        admin.display()
    );
    std::fs::write(dir.join("dataplane.yaml"), cfg).map_err(|e| e.to_string())?;
    let dp = Proc::spawn(
        "process",
        Command::new("ip")
            .args(["netns", "exec", &topo.ns("dut")])
            .arg(&bins.dataplane)
            .arg("--config")
            .arg(dir.join("dataplane.yaml")),
        &dir.join("dataplane.log"),
    )?;
    wait_for(Duration::from_secs(30), "data plane admin socket", || {
        std::os::unix::net::UnixStream::connect(&admin).is_ok()
    })?;
    std::thread::sleep(Duration::from_millis(300));

    // Synced first on one cluster; then the snapshot arrives.
    let server = XdsServer::start(Listen::Unix(dir.join("xds.sock")));
    server.set(CDS, vec![clusters[0].clone()]);
    server.set(EDS, vec![assignments[0].clone()]);
    server.set(LDS, vec![listener()]);
    let log = dir.join("agent.log");
    let uri = server.uri();
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        topo.ns("dut"),
        "taskset".into(),
        "-c".into(),
        "0".into(),
        bins.agent.display().to_string(),
        "--server".into(),
        uri,
        "--node-id".into(),
        "bench".into(),
        "--dataplane-socket".into(),
        admin.display().to_string(),
    ];
    if delta {
        args.push("--delta".into());
    }
    let t0 = Instant::now();
    let agent = Proc::spawn(
        "process",
        Command::new("ip")
            .args(&args)
            .env("RUST_LOG", "info,control_agent::client=debug"),
        &log,
    )?;
    let tail = |p: &Path| {
        let t = std::fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    let fail = |e: String| {
        format!(
            "{e}\nagent log:\n{}\ndata plane log:\n{}",
            tail(&log),
            tail(&dir.join("dataplane.log"))
        )
    };
    wait_for(Duration::from_secs(30), "initial sync", || {
        served_lines(&log).iter().any(|(t, _, _)| t == "LDS")
    })
    .map_err(fail)?;
    let initial_ms = t0.elapsed().as_secs_f64() * 1e3;
    std::thread::sleep(Duration::from_millis(500));
    let dp_before = rss_bytes(dp.child.id());
    let agent_before = rss_bytes(agent.child.id());
    // The snapshot: endpoints ready at the server before the clusters that
    // ask for them.
    server.set(EDS, assignments.to_vec());
    server.set(CDS, clusters.to_vec());
    wait_for(Duration::from_secs(120), "snapshot served", || {
        served_lines(&log)
            .iter()
            .any(|(t, n, _)| t == "EDS" && *n + 1 >= a.clusters)
    })
    .map_err(fail)?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // From the CDS response's arrival to the workers serving the clusters
    // with their endpoints (the EDS response's push).
    let cds_arrived = text
        .lines()
        .find(|l| {
            (l.contains("CDS response version") || l.contains("CDS delta"))
                && (l.contains(&format!(": {} resource(s)", a.clusters))
                    || l.contains(&format!(": {} resource(s)", a.clusters - 1)))
        })
        .and_then(log_time);
    let eds_served = text
        .lines()
        .find(|l| {
            l.contains(&format!(
                "EDS response of {} resource(s): served",
                a.clusters
            )) || l.contains(&format!(
                "EDS response of {} resource(s): served",
                a.clusters - 1
            ))
        })
        .and_then(log_time);
    let snapshot = match (cds_arrived, eds_served) {
        (Some(a), Some(b)) => (b - a) * 1e3,
        _ => f64::NAN,
    };
    let eds_only = served_lines(&log)
        .iter()
        .find(|(t, n, _)| t == "EDS" && *n + 1 >= a.clusters)
        .map_or(f64::NAN, |l| l.2);
    let cds = text
        .lines()
        .find(|l| {
            l.contains(&format!(
                "CDS response of {} resource(s) handled in",
                a.clusters
            )) || l.contains(&format!(
                "CDS response of {} resource(s) handled in",
                a.clusters - 1
            ))
        })
        .and_then(|l| {
            l.split("handled in ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(f64::NAN);
    std::thread::sleep(Duration::from_millis(1500));
    let dp_after = rss_bytes(dp.child.id());
    let agent_after = rss_bytes(agent.child.id());

    // One-endpoint changes.
    let mut one = Vec::new();
    for (k, i) in [17usize, 1234, 4321, 7777, 9999].iter().enumerate() {
        let i = i % a.clusters;
        let before = served_lines(&log).len();
        server.upsert(EDS, vec![cla(i, a.endpoints_per_cluster, 1 + k)]);
        wait_for(
            Duration::from_secs(30),
            "one-endpoint change served",
            || served_lines(&log).len() > before,
        )?;
        if let Some(l) = served_lines(&log).get(before) {
            one.push(l.2);
        }
    }
    drop(agent);
    drop(server);
    drop(dp);
    Ok(json!({
        "who": who,
        "snapshot_ms": snapshot,
        "eds_to_served_ms": eds_only,
        "cds_ms": cds,
        "initial_sync_ms": initial_ms,
        "one_endpoint_ms": median(one.clone()),
        "one_endpoint_runs_ms": one,
        "dataplane_bytes_per_cluster": (dp_after - dp_before) / (a.clusters - 1) as f64,
        "agent_bytes_per_cluster": (agent_after - agent_before) / (a.clusters - 1) as f64,
    }))
}

fn run_envoy(
    a: &Args,
    envoy: &str,
    topo: &Topology,
    work: &Path,
    clusters: &[(String, Any)],
    assignments: &[(String, Any)],
) -> Result<Value, String> {
    let dir = work.join("envoy");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let server = XdsServer::start(Listen::Unix(dir.join("xds.sock")));
    server.set(CDS, vec![clusters[0].clone()]);
    server.set(EDS, vec![assignments[0].clone()]);
    server.set(LDS, vec![listener()]);
    let boot = dir.join("envoy.yaml");
    std::fs::write(
        &boot,
        XdsServer::envoy_bootstrap("bench-envoy", &dir.join("xds.sock"), false),
    )
    .map_err(|e| e.to_string())?;
    // Envoy's own address space (ip netns exec and taskset exec it).
    let proc = Proc::spawn(
        "process",
        Command::new("ip")
            .args(["netns", "exec", &topo.ns("up")])
            .args([
                "taskset",
                "-c",
                "0",
                envoy,
                "-c",
                boot.to_str().unwrap(),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "error",
            ]),
        &dir.join("envoy.log"),
    )?;
    let ns = topo.ns("up");
    let stat = |name: &str| -> Option<u64> {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-s", "-m", "2"])
            .arg(format!("http://127.0.0.1:9901/stats?filter=^{name}$"))
            .output()
            .ok()?;
        let t = String::from_utf8_lossy(&out.stdout);
        t.split(':').nth(1)?.trim().parse().ok()
    };
    let serving = |want: usize| {
        stat("cluster_manager.active_clusters").is_some_and(|n| n as usize >= want)
            && stat("cluster_manager.warming_clusters") == Some(0)
            && stat("listener_manager.total_listeners_active") == Some(1)
    };
    // + the static xds cluster.
    wait_for(Duration::from_secs(60), "Envoy synced", || serving(2))?;
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_bytes(proc.child.id());
    server.set(EDS, assignments.to_vec());
    let t0 = Instant::now();
    server.set(CDS, clusters.to_vec());
    wait_for(
        Duration::from_secs(300),
        "Envoy serving the snapshot",
        || serving(a.clusters + 1),
    )?;
    let took = t0.elapsed().as_secs_f64() * 1e3;
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss_bytes(proc.child.id());
    drop(proc);
    drop(server);
    Ok(json!({
        "who": "envoy",
        "snapshot_ms": took,
        "bytes_per_cluster": (after - before) / (a.clusters - 1) as f64,
        "rss_before": before,
        "rss_after": after,
    }))
}
