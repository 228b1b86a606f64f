//! `dataplane top`: a live table of what a running data plane does, from
//! its admin socket's stats document read every interval: per core, how
//! busy its loop is, packets and drops per second and the sessions it
//! holds; per listener and cluster, requests and connections per second,
//! and latency quantiles over the last interval (from the histograms'
//! bucket deltas).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use dataplane_config::admin::AdminRequest;
use proxy::metrics::quantile_of;
use serde_json::Value;

use crate::Failure;

/// Refresh until interrupted (or once, after one interval, with `once`).
pub fn run(socket: &Path, interval: Duration, once: bool) -> Result<(), Failure> {
    let fetch = || -> Result<(Value, Instant), Failure> {
        let v: Value = crate::admin::request(socket, &AdminRequest::Stats)?;
        Ok((v, Instant::now()))
    };
    let mut prev = fetch()?;
    let tty = std::io::stdout().is_terminal() && !once;
    loop {
        std::thread::sleep(interval);
        let cur = fetch()?;
        let dt = cur.1.duration_since(prev.1).as_secs_f64().max(1e-3);
        let table = render(&prev.0, &cur.0, dt);
        let mut out = std::io::stdout().lock();
        if tty {
            // Home and clear, then the table.
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let _ = write!(out, "{table}");
        let _ = out.flush();
        if once {
            return Ok(());
        }
        prev = cur;
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Per second, from two readings `dt` seconds apart.
fn rate(a: &Value, b: &Value, dt: f64) -> f64 {
    u(b).saturating_sub(u(a)) as f64 / dt
}

/// The `q` quantile (ms) of the samples between two bucket readings.
fn quantile(a: &Value, b: &Value, q: f64) -> Option<f64> {
    let (a, b) = (a.as_array()?, b.as_array()?);
    let d: Vec<u64> = b
        .iter()
        .enumerate()
        .map(|(i, x)| u(x).saturating_sub(a.get(i).map_or(0, u)))
        .collect();
    quantile_of(&d, q)
}

fn ms(q: Option<f64>) -> String {
    q.map_or("-".into(), |v| format!("{v:.2}"))
}

/// The item of `list` named `name` in reading `doc`.
fn find<'a>(doc: &'a Value, list: &str, key: &str, name: &str) -> &'a Value {
    doc["proxy"][list]
        .as_array()
        .and_then(|v| v.iter().find(|x| x[key] == name))
        .unwrap_or(&Value::Null)
}

/// The table for two readings `dt` seconds apart.
pub fn render(a: &Value, b: &Value, dt: f64) -> String {
    let mut out = String::new();
    let hz = b["tsc_hz"].as_f64().unwrap_or(1.0).max(1.0);
    let _ = writeln!(
        out,
        "dataplane top: uptime {:.0} s, {} worker(s), over the last {dt:.1} s",
        u(&b["uptime_ms"]) as f64 / 1000.0,
        b["workers"].as_array().map_or(0, Vec::len)
    );
    let _ = writeln!(
        out,
        "\n{:>4} {:>6} {:>7} {:>10} {:>10} {:>9} {:>9}",
        "CPU", "lcore", "load%", "rx pkt/s", "tx pkt/s", "drops/s", "sessions"
    );
    let empty = Vec::new();
    let wa = a["workers"].as_array().unwrap_or(&empty);
    for (i, w) in b["workers"].as_array().unwrap_or(&empty).iter().enumerate() {
        let p = wa.get(i).unwrap_or(&Value::Null);
        let busy = u(&w["loop"]["busy_cycles"]).saturating_sub(u(&p["loop"]["busy_cycles"]));
        let drops: u64 = netstack::DropReason::ALL
            .iter()
            .map(|d| u(&w["stack"][d.name()]).saturating_sub(u(&p["stack"][d.name()])))
            .sum();
        let sessions = u(&w["proxy"]["cx_active"]);
        let _ = writeln!(
            out,
            "{:>4} {:>6} {:>7.1} {:>10.0} {:>10.0} {:>9.0} {:>9}",
            u(&w["cpu"]),
            u(&w["lcore"]),
            busy as f64 / hz / dt * 100.0,
            rate(&p["loop"]["rx_packets"], &w["loop"]["rx_packets"], dt),
            rate(&p["loop"]["tx_packets"], &w["loop"]["tx_packets"], dt),
            drops as f64 / dt,
            sessions
        );
    }
    let listeners = b["proxy"]["listeners"].as_array().unwrap_or(&empty);
    if !listeners.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<20} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "listener", "rq/s", "cx/s", "active", "5xx/s", "p50 ms", "p99 ms"
        );
    }
    for l in listeners {
        let name = l["name"].as_str().unwrap_or("");
        let p = find(a, "listeners", "name", name);
        let h = "downstream_rq_time_buckets";
        let _ = writeln!(
            out,
            "{:<20} {:>9.1} {:>8.1} {:>8} {:>8.1} {:>8} {:>8}",
            name,
            rate(&p["rq_total"], &l["rq_total"], dt),
            rate(&p["cx_total"], &l["cx_total"], dt),
            u(&l["cx_active"]),
            rate(&p["rq_5xx"], &l["rq_5xx"], dt),
            ms(quantile(&p[h], &l[h], 0.5)),
            ms(quantile(&p[h], &l[h], 0.99)),
        );
    }
    let clusters = b["proxy"]["clusters"].as_array().unwrap_or(&empty);
    if !clusters.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<20} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8}",
            "cluster", "rq/s", "cx/s", "open", "fails/s", "p50 ms", "p99 ms"
        );
    }
    for c in clusters {
        let name = c["name"].as_str().unwrap_or("");
        let p = find(a, "clusters", "name", name);
        let fails = |v: &Value| u(&v["connect_failures"]) + u(&v["connect_timeouts"]);
        let h = "upstream_rq_time_buckets";
        let _ = writeln!(
            out,
            "{:<20} {:>9.1} {:>8.1} {:>8} {:>9.1} {:>8} {:>8}",
            name,
            rate(&p["rq_total"], &c["rq_total"], dt),
            rate(&p["cx_total"], &c["cx_total"], dt),
            u(&c["open"]),
            fails(c).saturating_sub(fails(p)) as f64 / dt,
            ms(quantile(&p[h], &c[h], 0.5)),
            ms(quantile(&p[h], &c[h], 0.99)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rates_load_and_interval_quantiles() {
        let mut buckets = vec![0u64; 20];
        let a = json!({
            "tsc_hz": 1_000_000_000u64, "uptime_ms": 1000,
            "workers": [{"cpu": 1, "lcore": 1, "loop": {"busy_cycles": 0, "rx_packets": 0, "tx_packets": 0},
                         "stack": {"rx_frames": 0, "eth_truncated": 0}, "proxy": {"cx_active": 0}}],
            "proxy": {"listeners": [{"name": "web", "rq_total": 100, "cx_total": 10, "cx_active": 1, "rq_5xx": 0,
                                     "downstream_rq_time_buckets": buckets.clone()}],
                      "clusters": []}
        });
        buckets[2] = 100; // (1, 5] ms
        buckets[4] = 1; // (10, 25] ms
        let b = json!({
            "tsc_hz": 1_000_000_000u64, "uptime_ms": 3000,
            "workers": [{"cpu": 1, "lcore": 1, "loop": {"busy_cycles": 500_000_000u64, "rx_packets": 2000, "tx_packets": 1000},
                         "stack": {"rx_frames": 9, "eth_truncated": 4}, "proxy": {"cx_active": 3}}],
            "proxy": {"listeners": [{"name": "web", "rq_total": 301, "cx_total": 12, "cx_active": 3, "rq_5xx": 2,
                                     "downstream_rq_time_buckets": buckets}],
                      "clusters": []}
        });
        let t = render(&a, &b, 2.0);
        // 0.5 s busy of 2 s: 25 %; 2000 packets in 2 s.
        assert!(t.contains("   25.0"), "{t}");
        assert!(t.contains("1000"), "{t}");
        assert!(t.contains("2"), "drops per second: {t}");
        let web = t.lines().find(|l| l.starts_with("web")).unwrap();
        let cols: Vec<&str> = web.split_whitespace().collect();
        assert_eq!(cols[1], "100.5", "{web}");
        let p50: f64 = cols[5].parse().unwrap();
        assert!((1.0..=5.0).contains(&p50), "{web}");
        let p99: f64 = cols[6].parse().unwrap();
        assert!((1.0..=25.0).contains(&p99), "{web}");
    }
}
