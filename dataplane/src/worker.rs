//! The per-core run-to-completion loop: timers → RX burst → bounded
//! processing → TX flush, with configurable idle back-off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use dataplane_config::{IdleConfig, IdleMode};
use dpdk::{Mbuf, Mempool, RxQueue, TxQueue};
use netstack::{DropReason, FramePool, Instant, Stack, Transmit, counters};

use proxy::{Apps, Mailbox, Update};

/// How often stack timers (ARP retries) are run.
const TIMER_TICK_US: u64 = 1_000;
/// Rounds of events → users → flush per poll.
const APP_ROUNDS: usize = 3;

counters! {
    /// Loop counters of one worker, readable from the admin thread.
    pub struct LoopCounters {
        /// Polls (loop iterations) that received at least one packet.
        busy_polls,
        /// Polls that found every RX queue empty.
        idle_polls,
        /// TSC cycles spent in busy polls (RX, processing and TX of real work).
        busy_cycles,
        /// TSC cycles spent in idle polls, not counting sleeps.
        idle_cycles,
        /// Sleeps taken by adaptive idle back-off.
        sleeps,
        rx_packets,
        tx_packets,
        /// Packets dropped because a TX ring was full.
        tx_ring_full,
        /// Chained packets dropped: the device takes single segments only and
        /// the chain did not fit one buffer.
        tx_unsendable,
        /// Received buffers shared by the driver, copied before being answered.
        rx_copied,
        /// Software steering: frames for another core dropped because the ring
        /// to it was full.
        steer_ring_full,
    }
}

/// What the control thread reads of one worker's loop.
#[derive(Debug, Default)]
pub struct LoopStats {
    pub counters: LoopCounters,
    /// Set when the loop has returned.
    pub exited: AtomicBool,
    /// Wall-clock time (µs since the Unix epoch) of this worker's clock
    /// origin, so that the exporter can date its spans.
    pub epoch_unix_us: std::sync::atomic::AtomicU64,
}

impl std::ops::Deref for LoopStats {
    type Target = LoopCounters;
    fn deref(&self) -> &LoopCounters {
        &self.counters
    }
}

/// What a worker forwards with.
pub enum Engine {
    Stack(Box<Stack<Mbuf>>),
    /// Swap MACs and send back out of the same port (benchmark mode).
    L2Reflect,
}

/// Frames on their way between two cores (software steering): the port
/// index and the frame. Bounded, lock-free; one producer and one consumer.
pub type SteerRing = ArrayQueue<(usize, Mbuf)>;

/// A worker's rings to and from every other worker.
pub struct SteerLinks {
    /// `to[c]`: frames for worker `c` (`None` for this worker itself).
    pub to: Vec<Option<Arc<SteerRing>>>,
    /// Rings from the other workers, drained every poll.
    pub from: Vec<Arc<SteerRing>>,
}

impl SteerLinks {
    /// Rings for `n` workers, `capacity` frames each: the links of each.
    pub fn mesh(n: usize, capacity: usize) -> Vec<SteerLinks> {
        let rings: Vec<Vec<Option<Arc<SteerRing>>>> = (0..n)
            .map(|from| {
                (0..n)
                    .map(|to| (from != to).then(|| Arc::new(ArrayQueue::new(capacity))))
                    .collect()
            })
            .collect();
        (0..n)
            .map(|me| SteerLinks {
                to: rings[me].clone(),
                from: rings.iter().filter_map(|row| row[me].clone()).collect(),
            })
            .collect()
    }
}

/// Everything one core owns.
pub struct Worker {
    pub rx: Vec<RxQueue>,
    pub tx: Vec<TxQueue>,
    /// Buffers for packets the stack originates (ARP requests).
    pub pool: Arc<Mempool>,
    /// This core's pools, one per port (the overload manager's `mbufs`).
    pub pools: Vec<Arc<Mempool>>,
    pub engine: Engine,
    /// The users of the stack's TCP: the proxy and the test services (none
    /// in L2 reflect mode).
    pub apps: Apps,
    /// Rings to the other workers, when a port is steered in software.
    pub steer: Option<SteerLinks>,
    pub burst: u16,
    pub idle: IdleConfig,
    pub stats: Arc<LoopStats>,
    pub stop: Arc<AtomicBool>,
    /// Set by the control thread on SIGTERM: the proxy stops accepting and
    /// lets its sessions finish.
    pub drain: Arc<AtomicBool>,
    /// Configuration updates for the proxy, applied between batches.
    pub mailbox: Arc<Mailbox>,
    pub tsc_hz: u64,
}

pub(crate) struct Tx<'a>(&'a mut [TxQueue]);

impl Transmit<Mbuf> for Tx<'_> {
    #[inline]
    fn transmit(&mut self, iface: usize, frame: Mbuf) {
        self.0[iface].push(frame);
    }
}

pub(crate) struct Pool<'a>(&'a Mempool);

impl FramePool for Pool<'_> {
    type Frame = Mbuf;
    #[inline]
    fn alloc(&mut self) -> Option<Mbuf> {
        self.0.alloc()
    }
}

impl Worker {
    /// Run until `stop` is set. Returns 0.
    pub fn run(mut self) -> i32 {
        let tsc0 = dpdk::eal::rdtsc();
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.stats
            .epoch_unix_us
            .store(unix_now.as_micros() as u64, Relaxed);
        let ticks_per_us = (self.tsc_hz / 1_000_000).max(1);
        let sleep = Duration::from_micros(u64::from(self.idle.sleep_us));
        let mut rxbuf: Vec<Mbuf> = Vec::with_capacity(usize::from(self.burst));
        let mut empty_polls: u32 = 0;
        let mut next_tick = 0u64;
        let s = self.stats.clone();
        // Tells the control thread this loop is over, also if it panics.
        let _exited = ExitFlag(self.stats.clone());
        if self.idle.mode == IdleMode::Adaptive {
            // The kernel may stretch a sleep by the thread's timer slack
            // (50 µs by default), which would double the back-off's cost in
            // latency.
            if let Err(e) = set_timer_slack(Duration::from_micros(1)) {
                tracing::debug!("timer slack left at its default: {e}");
            }
        }

        while !self.stop.load(Relaxed) {
            let t0 = dpdk::eal::rdtsc();
            let now = Instant::from_micros((t0 - tsc0) / ticks_per_us);

            // 0. configuration updates, between two batches
            if let Some(u) = self.mailbox.take() {
                self.apply(&u, now);
            }

            // 1. timers
            if let Engine::Stack(stack) = &mut self.engine
                && now.as_micros() >= next_tick
            {
                let (mut pool, mut tx) = (Pool(&self.pool), Tx(&mut self.tx));
                stack.poll(now, &mut pool, &mut tx);
                if let Some(e) = stack.tcp() {
                    if self.drain.load(Relaxed) {
                        self.apps.drain(e, now);
                    }
                    self.apps.tick(e, now);
                    if self.apps.overload_due(now) {
                        let mbufs = mbuf_pressure(&self.pools);
                        self.apps.check_overload(e, now, mbufs);
                    }
                }
                run_apps(stack, &mut self.apps, now, &mut pool, &mut tx);
                next_tick = now.as_micros() + TIMER_TICK_US;
            }

            // 2-3. RX bursts, each processed to completion
            let mut got = 0usize;
            for (port, rxq) in self.rx.iter_mut().enumerate() {
                let n = rxq.burst(&mut rxbuf, self.burst);
                if n == 0 {
                    continue;
                }
                got += n;
                match &mut self.engine {
                    Engine::Stack(stack) => {
                        let (mut pool, mut tx) = (Pool(&self.pool), Tx(&mut self.tx));
                        for m in rxbuf.drain(..) {
                            // The stack answers in place; a buffer the driver
                            // shares (external multi-packet RX) is copied first.
                            let m = if m.is_unique() {
                                m
                            } else {
                                s.rx_copied.inc();
                                match copy_frame(&self.pool, &m) {
                                    Some(c) => c,
                                    None => {
                                        stack.stats().record_drop(DropReason::NoBuffer);
                                        continue;
                                    }
                                }
                            };
                            stack.receive(now, port, m, &mut pool, &mut tx);
                        }
                        run_apps(stack, &mut self.apps, now, &mut pool, &mut tx);
                        if let Some(links) = &self.steer {
                            pass_on(stack, links, &s);
                        }
                    }
                    Engine::L2Reflect => {
                        rxbuf.retain_mut(|m| m.try_data_mut().map(swap_macs).is_some());
                        self.tx[port].send(&mut rxbuf);
                    }
                }
            }

            // Frames other cores received for this one (software steering).
            let mut handed = 0;
            if let (Engine::Stack(stack), Some(links)) = (&mut self.engine, &self.steer) {
                let (mut pool, mut tx) = (Pool(&self.pool), Tx(&mut self.tx));
                for ring in &links.from {
                    for _ in 0..self.burst {
                        let Some((port, m)) = ring.pop() else { break };
                        stack.receive_handoff(now, port, m, &mut pool, &mut tx);
                        handed += 1usize;
                    }
                }
                if handed > 0 {
                    run_apps(stack, &mut self.apps, now, &mut pool, &mut tx);
                    pass_on(stack, links, &s);
                }
            }

            // 4. TX flush
            if got + handed > 0 {
                self.flush_tx();
                s.rx_packets.add(got as u64);
                s.busy_polls.inc();
                s.busy_cycles.add(dpdk::eal::rdtsc() - t0);
                empty_polls = 0;
                continue;
            }

            // Idle: flush what timers produced, then maybe back off.
            self.flush_tx();
            s.idle_polls.inc();
            s.idle_cycles.add(dpdk::eal::rdtsc() - t0);
            if self.idle.mode == IdleMode::Adaptive {
                empty_polls = empty_polls.saturating_add(1);
                if empty_polls >= self.idle.spin_polls {
                    s.sleeps.inc();
                    std::thread::sleep(sleep);
                }
            }
        }
        // Proxied connections are reset rather than left to time out.
        if let Engine::Stack(stack) = &mut self.engine
            && let Some(e) = stack.tcp()
        {
            let now = Instant::from_micros((dpdk::eal::rdtsc() - tsc0) / ticks_per_us);
            self.apps.abort_all(e, now);
            let (mut pool, mut tx) = (Pool(&self.pool), Tx(&mut self.tx));
            stack.flush_tcp(now, &mut pool, &mut tx);
            self.flush_tx();
        }
        // Queues flush on drop; the stack frees what waits for ARP.
        drop(self.engine);
        drop(self.tx);
        0
    }

    /// Apply `u` and every update queued behind it, then say how far this
    /// worker has got.
    #[cold]
    fn apply(&mut self, u: &Update, now: Instant) {
        let mut generation = u.generation;
        if let Engine::Stack(stack) = &mut self.engine {
            let (mut pool, mut tx) = (Pool(&self.pool), Tx(&mut self.tx));
            if let Some(e) = stack.tcp()
                && !self.apps.is_empty()
            {
                self.apps.apply(e, now, u);
                while let Some(next) = self.mailbox.take() {
                    self.apps.apply(e, now, &next);
                    generation = next.generation;
                }
            }
            run_apps(stack, &mut self.apps, now, &mut pool, &mut tx);
        }
        self.flush_tx();
        if self.apps.is_empty() {
            // Nothing here uses the configuration (L2 reflect).
            while let Some(next) = self.mailbox.take() {
                generation = next.generation;
            }
        }
        self.mailbox
            .applied
            .store(generation, std::sync::atomic::Ordering::Release);
    }

    /// Send what is batched and publish the queues' totals.
    #[inline]
    fn flush_tx(&mut self) {
        let (mut sent, mut dropped, mut unsendable) = (0, 0, 0);
        for txq in &mut self.tx {
            if txq.pending() > 0 {
                txq.flush();
            }
            sent += txq.sent();
            dropped += txq.dropped();
            unsendable += txq.unsendable();
        }
        self.stats.tx_packets.set(sent);
        self.stats.tx_ring_full.set(dropped);
        self.stats.tx_unsendable.set(unsendable);
    }
}

/// Set this thread's timer slack (`/proc/<tid>/timerslack_ns`, Linux 4.6+).
fn set_timer_slack(slack: Duration) -> std::io::Result<()> {
    // /proc/thread-self -> "<pid>/task/<tid>"
    let link = std::fs::read_link("/proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .ok_or_else(|| std::io::Error::other("no thread id in /proc/thread-self"))?;
    std::fs::write(
        format!("/proc/{tid}/timerslack_ns"),
        slack.as_nanos().to_string(),
    )
}

struct ExitFlag(Arc<LoopStats>);

impl Drop for ExitFlag {
    fn drop(&mut self) {
        self.0.exited.store(true, Relaxed);
    }
}

/// Let the apps react to TCP events, then send what they produced. What they do may raise more events (a send that fills a queue,
/// a close): a few rounds take those too; the rest wait for the next poll.
fn run_apps(
    stack: &mut Stack<Mbuf>,
    apps: &mut Apps,
    now: Instant,
    pool: &mut Pool<'_>,
    tx: &mut Tx<'_>,
) {
    for _ in 0..APP_ROUNDS {
        let Some(e) = stack.tcp() else { return };
        let handled = apps.handle_events(e, now);
        stack.flush_tcp(now, pool, tx);
        if handled == 0 {
            return;
        }
    }
}

/// Move the frames the stack set aside for other cores onto their rings; a
/// full ring drops the frame (counted; TCP retransmits).
fn pass_on(stack: &mut Stack<Mbuf>, links: &SteerLinks, s: &LoopStats) {
    for h in stack.take_handoffs() {
        match links.to.get(usize::from(h.core)).and_then(Option::as_ref) {
            Some(ring) if ring.push((h.iface, h.frame)).is_ok() => {}
            _ => s.steer_ring_full.inc(),
        }
    }
}

/// The fullest of `pools`: buffers in use over the pool's size.
fn mbuf_pressure(pools: &[Arc<Mempool>]) -> f64 {
    pools
        .iter()
        .map(|p| {
            let used = p.in_use();
            f64::from(used) / f64::from((used + p.available()).max(1))
        })
        .fold(0.0, f64::max)
}

/// A private copy of a single-segment frame, from `pool`.
fn copy_frame(pool: &Mempool, m: &Mbuf) -> Option<Mbuf> {
    let mut c = pool.alloc()?;
    c.extend_from_slice(m.data()).then_some(c)
}

/// Swap destination and source MAC addresses in place.
#[inline]
fn swap_macs(frame: &mut [u8]) {
    if frame.len() >= 12 {
        let (dst, rest) = frame.split_at_mut(6);
        dst.swap_with_slice(&mut rest[..6]);
    }
}
