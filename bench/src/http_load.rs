//! Client-side tools of the proxy comparison, run in the client namespace:
//!
//! - `http-rate`: an open-loop HTTP/1.1 load at a fixed request rate, with
//!   latency measured from each request's *scheduled* send time, so a stall
//!   counts against every request it delays (no coordinated omission). The
//!   schedule is kept by a timerfd (nanosecond timeouts; epoll's are whole
//!   milliseconds, which would batch the requests). Requests go out on
//!   keep-alive connections; when all are busy the request waits, its clock
//!   already running.
//! - `hold-conns`: open N connections and hold them idle until stdin closes.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct RateArgs {
    /// `address:port` of the HTTP server (or the proxy in front of it).
    #[arg(long)]
    addr: SocketAddr,
    /// Requests per second, sent on a fixed schedule.
    #[arg(long)]
    rate: f64,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Keep-alive connections to spread the requests over.
    #[arg(long, default_value_t = 64)]
    conns: usize,
}

const TIMER: Token = Token(usize::MAX);

struct Conn {
    s: MioStream,
    /// Scheduled send time of the request in flight.
    busy: Option<Instant>,
    buf: Vec<u8>,
}

/// Length of the first complete HTTP response in `b`, if there is one
/// (headers and a `Content-Length` body).
fn response_len(b: &[u8]) -> Option<usize> {
    let end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&b[..end]).ok()?;
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    })?;
    (b.len() >= end + len).then_some(end + len)
}

pub fn rate(a: RateArgs) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let mut poll = Poll::new().map_err(io)?;
    let mut conns = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        let s = TcpStream::connect(a.addr).map_err(|e| format!("connect {}: {e}", a.addr))?;
        s.set_nodelay(true).map_err(io)?;
        s.set_nonblocking(true).map_err(io)?;
        let mut s = MioStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .map_err(io)?;
        conns.push(Conn {
            s,
            busy: None,
            buf: Vec::with_capacity(4096),
        });
    }
    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )
    .map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)
        .map_err(io)?;
    let arm = |d: Duration| {
        let d = d.max(Duration::from_nanos(1)); // zero would disarm it
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            },
        };
        timerfd_settime(&timer, TimerfdTimerFlags::empty(), &spec).map(|_| ())
    };

    let req = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", a.addr);
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let total = (a.rate * a.seconds as f64) as u64;
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| e.to_string())?;
    let mut idle: VecDeque<usize> = (0..a.conns).collect();
    let mut waiting: VecDeque<Instant> = VecDeque::new();
    let (mut scheduled, mut completed, mut errors) = (0u64, 0u64, 0u64);
    let mut events = Events::with_capacity(1024);
    let mut rbuf = vec![0u8; 64 * 1024];
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.seconds) + Duration::from_secs(5);
    arm(Duration::ZERO).map_err(|e| e.to_string())?;

    let send = |c: &mut Conn, due: Instant, req: &[u8]| -> bool {
        c.busy = Some(due);
        c.s.write_all(req).is_ok() // one small write into an empty socket buffer
    };

    while completed + errors < total && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(io)?;
        for ev in &events {
            if ev.token() == TIMER {
                let mut sink = [0u8; 8];
                let _ = rustix::io::read(&timer, &mut sink);
                continue;
            }
            let i = ev.token().0;
            let c = &mut conns[i];
            loop {
                match c.s.read(&mut rbuf) {
                    Ok(0) => return Err(format!("server closed connection {i}")),
                    Ok(n) => c.buf.extend_from_slice(&rbuf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("connection {i}: {e}")),
                }
            }
            while let Some(len) = response_len(&c.buf) {
                c.buf.drain(..len);
                if let Some(due) = c.busy.take() {
                    completed += 1;
                    let _ = hist.record(due.elapsed().as_micros().max(1) as u64);
                }
                match waiting.pop_front() {
                    Some(due) => {
                        if !send(c, due, req.as_bytes()) {
                            errors += 1;
                        }
                    }
                    None => idle.push_back(i),
                }
            }
        }
        // Every request whose time has come goes out (or waits for a
        // connection, its clock running).
        let now = Instant::now();
        while scheduled < total {
            let due = t0 + interval.mul_f64(scheduled as f64);
            if due > now {
                arm(due - now).map_err(|e| e.to_string())?;
                break;
            }
            scheduled += 1;
            match idle.pop_front() {
                Some(i) => {
                    if !send(&mut conns[i], due, req.as_bytes()) {
                        errors += 1;
                    }
                }
                None => waiting.push_back(due),
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "scheduled": scheduled,
            "completed": completed,
            "errors": errors,
            "unanswered": total - completed - errors,
            "seconds": secs,
            "p50_us": hist.value_at_quantile(0.5),
            "p99_us": hist.value_at_quantile(0.99),
            "p999_us": hist.value_at_quantile(0.999),
            "max_us": hist.max(),
        })
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct HoldArgs {
    #[arg(long)]
    addr: SocketAddr,
    /// Connections to open and hold.
    #[arg(long)]
    n: usize,
    /// Send one `GET /` on each and read its response (a content-length
    /// one) before holding it: an idle HTTP keep-alive connection.
    #[arg(long)]
    request: bool,
}

/// Open `n` connections, say "ready", and hold them until stdin closes.
pub fn hold(a: HoldArgs) -> Result<(), String> {
    let mut held = Vec::with_capacity(a.n);
    for i in 0..a.n {
        let mut s = TcpStream::connect_timeout(&a.addr, Duration::from_secs(10))
            .map_err(|e| format!("connection {i} to {}: {e}", a.addr))?;
        if a.request {
            one_request(&mut s).map_err(|e| format!("connection {i} to {}: {e}", a.addr))?;
        }
        held.push(s);
    }
    println!("ready {}", held.len());
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

/// `GET /` and its whole response, read by its content-length.
fn one_request(s: &mut TcpStream) -> Result<(), String> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the response ended".into());
        }
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("a response without content-length")?;
        if got.len() >= end + 4 + len {
            return Ok(());
        }
    }
}
