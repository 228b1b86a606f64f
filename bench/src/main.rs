//! Benchmarks that run our data plane and a reference side by side, in the
//! same run, and print numbers and ratios.
//!
//! `bench l2-reflect`: the raw RX→TX loop. A memif pair joins a generator
//! (`dpdk-testpmd --forward-mode=flowgen`, CPU 0) to the device under test on
//! CPU 1, which is in turn `dpdk-testpmd --forward-mode=macswap
//! --record-core-cycles` and our `dataplane` in `l2_reflect` mode. The
//! generator's core limits the packet rate, so what is compared is the work per
//! packet: busy TSC cycles (polls that received something) per received packet.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod http_load;
mod proxy_compare;
mod tcp_idle;
mod tcp_service;
mod xds_scale;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Benchmarks: our data plane against references, in the same run"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Busy cycles per packet of the raw RX→TX loop (L2 reflect) vs dpdk-testpmd macswap, on memif.
    L2Reflect(L2Args),
    /// TCP engine cost per segment with few vs many idle connections (should be flat).
    TcpIdle(tcp_idle::Args),
    /// Bulk and request/response of the test services on our TCP vs the kernel's, same link and core.
    TcpService(tcp_service::Args),
    /// (internal) Load for tcp-service, run in the client namespace.
    #[command(hide = true)]
    TcpLoad(tcp_service::LoadArgs),
    /// (internal) Echo/discard/source on the kernel's TCP for tcp-service.
    #[command(hide = true)]
    TcpKernelServer,
    /// Proxies side by side: direct, this data plane, Envoy, HAProxy, nginx (throughput, latency, CPU and memory per connection).
    ProxyCompare(proxy_compare::Args),
    /// (internal) Open-loop HTTP load at a fixed rate, latency from the scheduled send time.
    #[command(hide = true)]
    HttpRate(http_load::RateArgs),
    /// A large xDS snapshot (10 000 clusters, 100 000 endpoints) through control-agent into the data plane, and into Envoy: time to serve, one-endpoint change, memory per cluster.
    XdsScale(xds_scale::Args),
    /// (internal) Hold N idle connections until stdin closes.
    #[command(hide = true)]
    HoldConns(http_load::HoldArgs),
}

#[derive(clap::Args, Debug)]
struct L2Args {
    /// Runs of each device under test (alternating); medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds each run forwards.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// CPU for the generator (and both DUTs' control threads).
    #[arg(long, default_value_t = 0)]
    gen_cpu: u32,
    /// CPU for the device under test's forwarding core.
    #[arg(long, default_value_t = 1)]
    dut_cpu: u32,
    /// The dataplane binary (default: next to this one).
    #[arg(long)]
    dataplane: Option<PathBuf>,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::L2Reflect(a) => l2_reflect(a),
        Cmd::TcpIdle(a) => tcp_idle::run(a),
        Cmd::TcpService(a) => tcp_service::run(a),
        Cmd::TcpLoad(a) => tcp_service::load(a),
        Cmd::TcpKernelServer => tcp_service::kernel_server(),
        Cmd::ProxyCompare(a) => proxy_compare::run(a),
        Cmd::XdsScale(a) => xds_scale::run(a),
        Cmd::HttpRate(a) => http_load::rate(a),
        Cmd::HoldConns(a) => http_load::hold(a),
    };
    if let Err(e) = r {
        eprintln!("bench: error: {e}");
        std::process::exit(1);
    }
}

/// A child process, interrupted (then killed) on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(what: &str, cmd: &mut Command, log: &Path) -> Result<Proc, String> {
        let f = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(f))
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        Ok(Proc {
            child,
            log: log.into(),
        })
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGINT and wait (testpmd prints its forward stats on the way out).
    fn interrupt(&mut self) -> String {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            self.interrupt();
        }
    }
}

struct Sample {
    cycles_per_packet: f64,
    mpps: f64,
}

/// Resident memory of process `pid`, bytes (0 if it is gone).
fn rss_bytes(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        * 1024.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn l2_reflect(a: L2Args) -> Result<(), String> {
    let work = std::env::temp_dir().join(format!("bench-l2-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let dataplane = a.dataplane.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .join("dataplane")
    });
    if !dataplane.exists() {
        return Err(format!(
            "{} not found: cargo build --release -p dataplane",
            dataplane.display()
        ));
    }
    // An abstract-namespace memif socket: nothing to clean up on disk.
    let sock = format!("/run/bench-l2-{}.sock", std::process::id());
    println!(
        "L2 reflect on memif, {} runs x {} s each. Generator: dpdk-testpmd flowgen (64-byte frames) on CPU {}. \
         Device under test: forwarding core on CPU {}, control thread on CPU {}.",
        a.runs, a.seconds, a.gen_cpu, a.dut_cpu, a.gen_cpu
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..a.runs {
        let t = run_testpmd(&a, &work, &sock)?;
        println!(
            "  run {}: testpmd macswap   {:7.1} cycles/pkt at {:5.2} Mpps",
            run + 1,
            t.cycles_per_packet,
            t.mpps
        );
        theirs.push(t);
        let o = run_ours(&a, &work, &sock, &dataplane)?;
        println!(
            "  run {}: dataplane reflect {:7.1} cycles/pkt at {:5.2} Mpps",
            run + 1,
            o.cycles_per_packet,
            o.mpps
        );
        ours.push(o);
    }
    let mo = median(ours.iter().map(|s| s.cycles_per_packet).collect());
    let mt = median(theirs.iter().map(|s| s.cycles_per_packet).collect());
    let ratio = mo / mt;
    println!();
    println!(
        "| device under test (CPU {}) | busy cycles/packet (median) | Mpps (median) |",
        a.dut_cpu
    );
    println!("|---|---|---|");
    println!(
        "| dpdk-testpmd macswap | {mt:.1} | {:.2} |",
        median(theirs.iter().map(|s| s.mpps).collect())
    );
    println!(
        "| dataplane l2_reflect | {mo:.1} | {:.2} |",
        median(ours.iter().map(|s| s.mpps).collect())
    );
    println!();
    println!(
        "ratio dataplane / testpmd = {ratio:.3} (target <= 1.10: {})",
        if ratio <= 1.10 { "met" } else { "NOT met" }
    );
    if let Some(p) = &a.json {
        let doc = json!({
            "bench": "l2-reflect",
            "runs": a.runs, "seconds": a.seconds, "gen_cpu": a.gen_cpu, "dut_cpu": a.dut_cpu,
            "testpmd_cycles_per_packet": theirs.iter().map(|s| s.cycles_per_packet).collect::<Vec<_>>(),
            "dataplane_cycles_per_packet": ours.iter().map(|s| s.cycles_per_packet).collect::<Vec<_>>(),
            "median_testpmd": mt, "median_dataplane": mo, "ratio": ratio,
        });
        std::fs::write(p, serde_json::to_vec_pretty(&doc).unwrap()).map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn generator(a: &L2Args, work: &Path, sock: &str) -> Result<Proc, String> {
    let mut c = Command::new("dpdk-testpmd");
    c.args([
        "--lcores",
        &format!("0@{0},1@{0}", a.gen_cpu),
        "--main-lcore",
        "0",
    ])
    .args([
        "--file-prefix",
        "bench-gen",
        "--in-memory",
        "--no-pci",
        "--log-level=user1:warning",
    ])
    .arg(format!("--vdev=net_memif0,role=server,socket={sock}"))
    .args([
        "--",
        "--forward-mode=flowgen",
        "--nb-cores=1",
        "--stats-period",
        "1",
    ]);
    let mut g = Proc::spawn("generator (testpmd flowgen)", &mut c, &work.join("gen.log"))?;
    std::thread::sleep(Duration::from_millis(1500));
    if !g.alive() {
        return Err(format!("generator exited:\n{}", g.interrupt()));
    }
    Ok(g)
}

fn run_testpmd(a: &L2Args, work: &Path, sock: &str) -> Result<Sample, String> {
    let _gen = generator(a, work, sock)?;
    let mut c = Command::new("dpdk-testpmd");
    c.args([
        "--lcores",
        &format!("0@{},1@{}", a.gen_cpu, a.dut_cpu),
        "--main-lcore",
        "0",
    ])
    .args(["--file-prefix", "bench-dut", "--in-memory", "--no-pci"])
    .arg(format!("--vdev=net_memif0,role=client,socket={sock}"))
    .args([
        "--",
        "--forward-mode=macswap",
        "--record-core-cycles",
        "--nb-cores=1",
        "--stats-period",
        "1",
    ]);
    let mut dut = Proc::spawn("testpmd macswap", &mut c, &work.join("dut.log"))?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(a.seconds));
    let out = dut.interrupt();
    let secs = t0.elapsed().as_secs_f64();
    // "CPU cycles/packet=175.88 (total cycles=9726574434 / total macswap packets=55301152) at 2000 MHz Clock"
    let line = out
        .lines()
        .find(|l| l.contains("CPU cycles/packet="))
        .ok_or_else(|| format!("testpmd printed no cycles/packet line:\n{out}"))?;
    let num = |key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()?
            .parse()
            .ok()
    };
    let cycles = num("total cycles=").ok_or("cannot parse testpmd's total cycles")?;
    let packets = num("packets=").ok_or("cannot parse testpmd's packets")?;
    Ok(Sample {
        cycles_per_packet: cycles / packets,
        mpps: packets / secs / 1e6,
    })
}

fn run_ours(a: &L2Args, work: &Path, sock: &str, bin: &Path) -> Result<Sample, String> {
    let _gen = generator(a, work, sock)?;
    let admin = work.join("admin.sock");
    let cfg = work.join("dp.yaml");
    std::fs::write(
        &cfg,
        format!(
            "eal: {{file_prefix: bench-dp, in_memory: true}}\n\
             workers: {{cores: [{}], control_cores: [{}], mode: l2_reflect, burst_size: 32, idle: {{mode: busy}}}}\n\
             ports:\n  - {{name: memif, device: \"net_memif0,role=client,socket={sock}\", address: 10.99.0.1/24}}\n\
             admin: {{socket: {}}}\n",
            a.dut_cpu,
            a.gen_cpu,
            admin.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut c = Command::new(bin);
    c.arg("--config").arg(&cfg);
    let mut dut = Proc::spawn("dataplane l2_reflect", &mut c, &work.join("dp.log"))?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(a.seconds));
    let out = Command::new(bin)
        .args(["stats", "--json", "--socket"])
        .arg(&admin)
        .output()
        .map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    let log = dut.interrupt();
    if !out.status.success() {
        return Err(format!(
            "dataplane stats failed: {}\n{log}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let l = &v["workers"][0]["loop"];
    let cycles = l["busy_cycles"].as_f64().unwrap_or(0.0);
    let packets = l["rx_packets"].as_f64().unwrap_or(0.0);
    if packets == 0.0 {
        return Err(format!("dataplane received nothing:\n{log}"));
    }
    Ok(Sample {
        cycles_per_packet: cycles / packets,
        mpps: packets / secs / 1e6,
    })
}
