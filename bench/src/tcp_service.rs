//! `bench tcp-service`: bulk throughput and request/response rate of the
//! data plane's test services (echo, discard, source) on our TCP, against the
//! same services on the kernel's TCP, on the same link and the same pinned
//! core, driven by the same kernel clients, alternating within one run.
//!
//! Topology: `scripts/topology.sh` namespaces (`<p>-cli` ↔ `<p>-dut`). Ours:
//! the data plane on the DUT veth (AF_XDP), worker on `--server-cpu`. The
//! kernel's: the DUT veth gets the same address in the kernel and
//! `bench tcp-kernel-server` (one epoll thread, the same three services)
//! runs pinned to `--server-cpu`. The load (`bench tcp-load`) runs in the
//! client namespace pinned to `--client-cpu`.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream as MioStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};

use e2e_tests::{Topology, sh, sh_output};

use crate::{Proc, median};

const ADDR: &str = "10.10.1.1";
/// The source service's stream: byte `i` is `i % 251` (as the data plane's).
const SOURCE_PERIOD: usize = 251;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rounds (ours and the kernel's alternately); medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of each measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent connections of the request/response test.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Request (and response) size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// CPU of the server (our worker, or the kernel server's thread).
    #[arg(long, default_value_t = 1)]
    server_cpu: u32,
    /// CPU of the clients (and of the data plane's control thread).
    #[arg(long, default_value_t = 0)]
    client_cpu: u32,
    /// Namespace prefix of the topology this builds (and removes).
    #[arg(long, default_value = "bts")]
    prefix: String,
    /// The dataplane binary (default: next to this one).
    #[arg(long)]
    dataplane: Option<PathBuf>,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Measurement names, in print order: (key, unit, greater is better).
const METRICS: [(&str, &str, bool); 5] = [
    ("down_gbps", "Gbit/s", true),
    ("up_gbps", "Gbit/s", true),
    ("rr_per_s", "req/s", true),
    ("rr_p50_us", "µs", false),
    ("rr_p99_us", "µs", false),
];

pub fn run(a: Args) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me.parent().ok_or("no parent directory")?;
    let dataplane = a.dataplane.clone().unwrap_or_else(|| dir.join("dataplane"));
    if !dataplane.exists() {
        return Err(format!(
            "{} not found: cargo build --release -p dataplane",
            dataplane.display()
        ));
    }
    let work = std::env::temp_dir().join(format!("bench-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    // Removed on drop, also when a measurement fails.
    let topo = Topology::up(&a.prefix);
    println!(
        "TCP services, ours vs the kernel's: {} rounds x {} s per measurement. Server (our worker, \
         or the kernel server thread) pinned to CPU {}; clients pinned to CPU {}. Link: veth, \
         AF_XDP for ours. rr = {} connections, {}-byte echo ping-pong.",
        a.runs, a.seconds, a.server_cpu, a.client_cpu, a.conns, a.size
    );
    let mut results: HashMap<&str, Vec<Value>> = HashMap::new();
    for round in 0..a.runs {
        // Alternate which goes first, so drift over the run hits both.
        let order: [&str; 2] = if round % 2 == 0 {
            ["ours", "kernel"]
        } else {
            ["kernel", "ours"]
        };
        for who in order {
            let r = if who == "ours" {
                let _dp = start_ours(&a, &topo, &dataplane, &work)?;
                measure(&a, &topo, &me)?
            } else {
                let _k = start_kernel(&a, &topo, &me, &work)?;
                measure(&a, &topo, &me)?
            };
            println!("  round {} {who:6}: {}", round + 1, brief(&r));
            results.entry(who).or_default().push(r);
        }
    }
    let med =
        |who: &str, k: &str| median(results[who].iter().filter_map(|r| r[k].as_f64()).collect());
    println!();
    println!(
        "| measurement (medians of {}) | our TCP (DPDK, CPU {}) | kernel TCP (CPU {}) | ours / kernel |",
        a.runs, a.server_cpu, a.server_cpu
    );
    println!("|---|---|---|---|");
    let mut doc = json!({
        "bench": "tcp-service", "runs": a.runs, "seconds": a.seconds, "conns": a.conns,
        "size": a.size, "server_cpu": a.server_cpu, "client_cpu": a.client_cpu,
        "samples": results,
    });
    for (k, unit, higher) in METRICS {
        let (o, t) = (med("ours", k), med("kernel", k));
        let ratio = o / t;
        println!(
            "| {k} ({unit}, {} is better) | {o:.2} | {t:.2} | {ratio:.2} |",
            if higher { "higher" } else { "lower" }
        );
        doc["medians"][k] = json!({"ours": o, "kernel": t, "ratio": ratio});
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&doc).unwrap()).map_err(|e| e.to_string())?;
    }
    drop(topo);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn brief(r: &Value) -> String {
    METRICS
        .iter()
        .map(|(k, _, _)| format!("{k} {:.2}", r[k].as_f64().unwrap_or(f64::NAN)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn start_ours(a: &Args, t: &Topology, bin: &Path, work: &Path) -> Result<Proc, String> {
    let admin = work.join("admin.sock");
    let cfg = work.join("dp.yaml");
    std::fs::write(
        &cfg,
        format!(
            "eal: {{file_prefix: bench-tcp, in_memory: true}}\n\
             workers: {{cores: [{}], control_cores: [{}], burst_size: 32, idle: {{mode: busy}}}}\n\
             ports:\n  - {{name: client, device: \"net_af_xdp0,iface={p}-c0\", address: {ADDR}/24}}\n\
             admin: {{socket: {}}}\n\
             services: [{{kind: echo, port: 7}}, {{kind: discard, port: 9}}, {{kind: source, port: 19}}]\n",
            a.server_cpu,
            a.client_cpu,
            admin.display(),
            p = t.prefix,
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &t.ns("dut")])
        .arg(bin)
        .arg("--config")
        .arg(&cfg);
    let mut p = Proc::spawn("dataplane", &mut c, &work.join("dp.log"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new(bin)
            .args(["stats", "--json", "--socket"])
            .arg(&admin)
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(p);
        }
        if !p.alive() || Instant::now() > deadline {
            return Err(format!("dataplane did not start:\n{}", p.interrupt()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kernel server on the DUT veth, with the address the data plane had
/// (removed again when the returned guard drops).
struct KernelServer {
    _proc: Proc,
    ns: String,
    ifname: String,
}

impl Drop for KernelServer {
    fn drop(&mut self) {
        let _ = sh_output(&format!(
            "ip -n {} addr del {ADDR}/24 dev {}",
            self.ns, self.ifname
        ));
    }
}

fn start_kernel(a: &Args, t: &Topology, me: &Path, work: &Path) -> Result<KernelServer, String> {
    let (ns, ifname) = (t.ns("dut"), format!("{}-c0", t.prefix));
    sh(&format!("ip -n {ns} addr add {ADDR}/24 dev {ifname}"));
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns, "taskset", "-c"])
        .arg(a.server_cpu.to_string())
        .arg(me)
        .arg("tcp-kernel-server");
    let guard = KernelServer {
        _proc: Proc::spawn("kernel server", &mut c, &work.join("kernel.log"))?,
        ns,
        ifname,
    };
    // Ready when the echo port answers from the client's side.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listening = || {
        t.exec("cli", &format!("nc -z -w 1 {ADDR} 7"))
            .status
            .success()
    };
    while !listening() {
        if Instant::now() > deadline {
            return Err("kernel server did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(guard)
}

/// Run the three loads from the client namespace; one JSON object.
fn measure(a: &Args, t: &Topology, me: &Path) -> Result<Value, String> {
    let mut out = json!({});
    for mode in ["down", "up", "rr"] {
        let o = Command::new("ip")
            .args(["netns", "exec", &t.ns("cli"), "taskset", "-c"])
            .arg(a.client_cpu.to_string())
            .arg(me)
            .args(["tcp-load", "--mode", mode, "--host", ADDR])
            .args(["--seconds", &a.seconds.to_string()])
            .args(["--conns", &a.conns.to_string()])
            .args(["--size", &a.size.to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!(
                "tcp-load {mode} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        let v: Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
        for (k, x) in v.as_object().into_iter().flatten() {
            out[k] = x.clone();
        }
    }
    Ok(out)
}

// === the load generator (runs in the client namespace) ===

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// down: read from source (19); up: write to discard (9); rr: echo (7)
    /// ping-pong over --conns connections.
    #[arg(long)]
    mode: String,
    #[arg(long)]
    host: String,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 32)]
    conns: usize,
    #[arg(long, default_value_t = 64)]
    size: usize,
}

pub fn load(a: LoadArgs) -> Result<(), String> {
    let dur = Duration::from_secs(a.seconds);
    let addr = |port: u16| -> Result<SocketAddr, String> {
        format!("{}:{port}", a.host)
            .parse()
            .map_err(|e| format!("--host: {e}"))
    };
    let v = match a.mode.as_str() {
        "down" => {
            let mut s = TcpStream::connect(addr(19)?).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 256 * 1024];
            let (t0, mut n, mut at) = (Instant::now(), 0u64, 0usize);
            while t0.elapsed() < dur {
                let got = s.read(&mut buf).map_err(|e| e.to_string())?;
                if got == 0 {
                    return Err("source closed early".into());
                }
                // The stream is checked, so a fast wrong answer cannot win.
                for (i, &b) in buf[..got].iter().enumerate() {
                    if usize::from(b) != (at + i) % SOURCE_PERIOD {
                        return Err(format!("source byte {} is wrong", n + i as u64));
                    }
                }
                at = (at + got) % SOURCE_PERIOD;
                n += got as u64;
            }
            json!({"down_gbps": n as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e9})
        }
        "up" => {
            let mut s = TcpStream::connect(addr(9)?).map_err(|e| e.to_string())?;
            let buf = vec![0x5au8; 256 * 1024];
            let (t0, mut n) = (Instant::now(), 0u64);
            while t0.elapsed() < dur {
                s.write_all(&buf).map_err(|e| e.to_string())?;
                n += buf.len() as u64;
            }
            json!({"up_gbps": n as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e9})
        }
        "rr" => rr(addr(7)?, a.conns, a.size, dur)?,
        m => return Err(format!("--mode {m}: expected down, up or rr")),
    };
    println!("{v}");
    Ok(())
}

/// Closed-loop ping-pong on `conns` connections: each sends `size` bytes,
/// waits for all of them back, and goes again.
fn rr(addr: SocketAddr, conns: usize, size: usize, dur: Duration) -> Result<Value, String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut socks = Vec::new();
    for i in 0..conns {
        let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut s = MioStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        socks.push(s);
    }
    let req = vec![0x42u8; size];
    let mut got = vec![0usize; conns];
    let mut sent_at = vec![Instant::now(); conns];
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    let t0 = Instant::now();
    for (i, s) in socks.iter_mut().enumerate() {
        s.write_all(&req).map_err(|e| e.to_string())?;
        sent_at[i] = Instant::now();
    }
    let mut events = Events::with_capacity(1024);
    let mut done = 0u64;
    while t0.elapsed() < dur {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for ev in &events {
            let i = ev.token().0;
            loop {
                match socks[i].read(&mut buf) {
                    Ok(0) => return Err("echo closed early".into()),
                    Ok(n) => got[i] += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            if got[i] >= size {
                got[i] -= size;
                done += 1;
                let _ = hist.record(sent_at[i].elapsed().as_micros() as u64);
                socks[i].write_all(&req).map_err(|e| e.to_string())?;
                sent_at[i] = Instant::now();
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(json!({
        "rr_per_s": done as f64 / secs,
        "rr_p50_us": hist.value_at_quantile(0.5),
        "rr_p99_us": hist.value_at_quantile(0.99),
    }))
}

// === the kernel server (runs in the DUT namespace) ===

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Echo,
    Discard,
    Source,
}

struct Conn {
    s: MioStream,
    kind: Kind,
    /// Echo: bytes read and not yet written back.
    pending: Vec<u8>,
    /// Source: stream offset.
    at: usize,
}

/// One thread, epoll (mio), the same three services as the data plane's.
pub fn kernel_server() -> Result<(), String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut listeners = Vec::new();
    for (i, (port, kind)) in [(7, Kind::Echo), (9, Kind::Discard), (19, Kind::Source)]
        .into_iter()
        .enumerate()
    {
        let mut l = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .map_err(|e| format!("bind {port}: {e}"))?;
        poll.registry()
            .register(&mut l, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        listeners.push((l, kind));
    }
    let pattern: Vec<u8> = (0..256 * 1024 + SOURCE_PERIOD)
        .map(|i| (i % SOURCE_PERIOD) as u8)
        .collect();
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next = listeners.len();
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(1024);
    loop {
        poll.poll(&mut events, None).map_err(|e| e.to_string())?;
        for ev in &events {
            let t = ev.token().0;
            if let Some((l, kind)) = listeners.get(t) {
                while let Ok((mut s, _)) = l.accept() {
                    let _ = s.set_nodelay(true);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    poll.registry()
                        .register(&mut s, Token(next), interest)
                        .map_err(|e| e.to_string())?;
                    conns.insert(
                        next,
                        Conn {
                            s,
                            kind: *kind,
                            pending: Vec::new(),
                            at: 0,
                        },
                    );
                    next += 1;
                }
                continue;
            }
            let Some(c) = conns.get_mut(&t) else { continue };
            if serve(c, &mut buf, &pattern).is_err() {
                conns.remove(&t);
            }
        }
    }
}

/// Do all the work a connection can do now; `Err` when it is finished.
fn serve(c: &mut Conn, buf: &mut [u8], pattern: &[u8]) -> std::io::Result<()> {
    let closed = || std::io::Error::from(ErrorKind::ConnectionAborted);
    loop {
        match c.kind {
            Kind::Source => match c.s.write(&pattern[c.at..c.at + 256 * 1024]) {
                Ok(n) => c.at = (c.at + n) % SOURCE_PERIOD,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            },
            Kind::Echo | Kind::Discard => {
                // Echo writes back what it holds before reading more.
                while !c.pending.is_empty() {
                    match c.s.write(&c.pending) {
                        Ok(n) => {
                            c.pending.drain(..n);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
                match c.s.read(buf) {
                    Ok(0) => return Err(closed()),
                    Ok(n) if c.kind == Kind::Echo => c.pending.extend_from_slice(&buf[..n]),
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
    }
}
