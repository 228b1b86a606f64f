//! `bench tcp-idle`: does the TCP engine's cost per segment stay flat as idle
//! connections pile up? Two engines in one thread, no I/O: one active
//! connection exchanges small segments while N others sit established and
//! idle. Reports ns per request/ACK exchange (4 segment handlings) for each N.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant as Wall};

use bytes::Bytes;
use netstack::Instant;
use netstack::tcp::{ConnId, Connection, Engine, EngineConfig, Event, TcpConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Idle connection counts to compare.
    #[arg(long, value_delimiter = ',', default_value = "100,100000")]
    idle: Vec<usize>,
    /// Exchanges measured per run.
    #[arg(long, default_value_t = 200_000)]
    exchanges: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

struct Pair {
    a: Engine,
    b: Engine,
    now: Instant,
    /// The last server connection that became readable.
    readable: Option<ConnId>,
}

impl Pair {
    fn new(max: usize) -> Pair {
        let now = Instant::from_millis(1);
        let tcp = TcpConfig {
            recv_buffer: 16 * 1024,
            send_buffer: 16 * 1024,
            ..TcpConfig::default()
        };
        let cfg = |k| EngineConfig {
            tcp: tcp.clone(),
            max_connections: max + 10,
            secret: [k; 16],
            ..EngineConfig::default()
        };
        let mut b = Engine::new(cfg(2), now);
        b.listen(SERVER, 80, max + 10);
        Pair {
            a: Engine::new(cfg(1), now),
            b,
            now,
            readable: None,
        }
    }

    /// Deliver everything both ways until quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some((t, s)) = self.a.poll_transmit(self.now) {
                self.b.handle_segment(self.now, t.remote, t.local, s);
                moved = true;
            }
            while let Some((t, s)) = self.b.poll_transmit(self.now) {
                self.a.handle_segment(self.now, t.remote, t.local, s);
                moved = true;
            }
            while let Some(ev) = self.b.poll_event() {
                match ev {
                    Event::Incoming { listener } => {
                        while self.b.accept(listener.0, listener.1).is_some() {}
                    }
                    Event::Readable(id) => self.readable = Some(id),
                    _ => {}
                }
            }
            while self.a.poll_event().is_some() {}
            if !moved {
                return;
            }
        }
    }

    /// Open `n` connections (16 000 per client address: ephemeral ports).
    fn open(&mut self, n: usize) -> Vec<ConnId> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let local = Ipv4Addr::new(10, 2, (i / 16_000) as u8, 1);
            ids.push(
                self.a
                    .connect(self.now, local, (SERVER, 80))
                    .expect("connect"),
            );
            if i % 1000 == 999 {
                self.pump();
            }
        }
        self.pump();
        ids
    }
}

/// ns per exchange: client sends 64 bytes, server reads them; both ACK paths run.
fn measure(idle: usize, exchanges: usize) -> f64 {
    let mut p = Pair::new(idle + 1);
    let ids = p.open(idle + 1);
    assert_eq!(p.b.len(), idle + 1, "all connections established");
    let active = ids[idle / 2];
    let server_id = {
        // The server side of `active`: find it through the first exchange.
        p.a.send(active, Bytes::from_static(&[0; 64]));
        p.pump();
        p.readable.expect("server saw the data")
    };
    while p.b.recv(server_id).is_some() {}
    let payload = Bytes::from_static(&[7; 64]);
    let t0 = Wall::now();
    for i in 0..exchanges {
        p.a.send(active, payload.clone());
        p.pump();
        while p.b.recv(server_id).is_some() {}
        if i % 1024 == 0 {
            p.now = p.now + Duration::from_micros(50);
            p.a.handle_timeout(p.now);
            p.b.handle_timeout(p.now);
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / exchanges as f64;
    assert!(
        p.a.connection(active)
            .is_some_and(Connection::is_established)
    );
    ns
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(a: Args) -> Result<(), String> {
    println!(
        "TCP engine, one active connection among N idle ones (two engines, one thread, no I/O; \
         run pinned, e.g. taskset -c 1). size_of::<Connection>() = {} bytes plus buffered data.",
        std::mem::size_of::<Connection>()
    );
    let mut base = None;
    for &n in &a.idle {
        let runs: Vec<f64> = (0..a.runs).map(|_| measure(n, a.exchanges)).collect();
        let m = median(runs.clone());
        let ratio = base.map(|b: f64| m / b).unwrap_or(1.0);
        base.get_or_insert(m);
        println!(
            "  idle {n:>7}: {m:7.0} ns per exchange (median of {}: {}), ratio to first {ratio:.2}",
            a.runs,
            runs.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}
