//! What runs on a core's TCP engine: a list of apps the worker drives.
//!
//! An [`App`] is a sans-IO user of the engine (the L4 splice, the test
//! services, later the HTTP connection manager): it takes the engine's
//! events and `now`, and acts through the engine. [`Apps`] holds the list
//! and what they share on the core: the upstream connector and the counters
//! the control thread reads. The worker calls [`Apps::handle_events`] after
//! each batch, [`Apps::tick`] on its timer, [`Apps::apply`] between batches
//! and [`Apps::drain`] / [`Apps::abort_all`] on the way out.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use netstack::Instant;
use netstack::tcp::{ConnId, Engine, Event};

use dataplane_config::overload::{OverloadAction, OverloadManagerConfig};

use crate::live::Update;
use crate::metrics::ProxyStats;
use crate::overload::{Overload, Pressures};
use crate::upstream::{ConnectError, Pick, Upstream, Upstreams};

/// What an app is handed with each call: the core's engine, its upstream
/// connector, the core's proxy counters, and the time.
#[derive(Debug)]
pub struct Cx<'a> {
    pub engine: &'a mut Engine,
    pub upstreams: &'a mut Upstreams,
    /// Sessions in progress and whether this core drains, shared by the
    /// apps and read by the control thread.
    pub stats: &'a ProxyStats,
    pub now: Instant,
    /// The index of the app being called (the owner of what it acquires).
    app: usize,
}

impl Cx<'_> {
    /// An upstream connection to `cluster`, owned by the calling app (its
    /// connect timeout comes back to it: [`App::connect_timeout`]).
    pub fn acquire(&mut self, cluster: &str) -> Result<Upstream, ConnectError> {
        self.upstreams
            .acquire(cluster, self.now, self.engine, self.app)
    }

    /// A new connection to the endpoint of `p` (see [`Upstreams::pick`]),
    /// owned by the calling app.
    pub fn connect(&mut self, p: Pick) -> Result<Upstream, ConnectError> {
        self.upstreams.connect(p, self.now, self.engine, self.app)
    }
}

/// One user of the core's TCP engine.
pub trait App: std::fmt::Debug + Send {
    /// Handle `ev` if it names one of this app's listeners or connections;
    /// otherwise give it back for the next app.
    #[must_use]
    fn handle(&mut self, cx: &mut Cx<'_>, ev: Event) -> Option<Event>;

    /// Run due timers. Called at least every millisecond, and cheap when
    /// nothing is due.
    fn tick(&mut self, _cx: &mut Cx<'_>) {}

    /// The handshake of `conn`, an upstream connection this app acquired,
    /// passed its cluster's connect timeout: the app releases it with
    /// [`crate::Outcome::ConnectTimeout`].
    fn connect_timeout(&mut self, _cx: &mut Cx<'_>, _conn: ConnId) {}

    /// When `tick` next has something to do (a simulation jumps there; the
    /// worker ticks on its own period anyway).
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// First half of an update, before the clusters change: stop accepting
    /// on the listeners it removes (connections whose handshake completed
    /// are still taken, on the clusters as they were).
    fn retire(&mut self, _cx: &mut Cx<'_>, _u: &Update) {}

    /// Second half of an update, once the connector has its clusters: take
    /// the new and changed listeners.
    fn apply(&mut self, _cx: &mut Cx<'_>, _u: &Update) {}

    /// Stop accepting; sessions carry on.
    fn drain(&mut self, _cx: &mut Cx<'_>) {}

    /// Reset every connection (the worker stops).
    fn abort_all(&mut self, _cx: &mut Cx<'_>) {}

    /// An overload action went on or off on this core (the engine refuses
    /// new connections itself; apps act on the others).
    fn overload(&mut self, _cx: &mut Cx<'_>, _action: OverloadAction, _on: bool) {}
}

/// The apps of one core, in the order events are offered to them, and the
/// upstream connector they share.
#[derive(Debug)]
pub struct Apps {
    apps: Vec<Box<dyn App>>,
    upstreams: Upstreams,
    stats: Arc<ProxyStats>,
    overload: Overload,
}

impl Apps {
    /// No apps yet, for worker `core`; `seed` varies the load balancers'
    /// random choices per core.
    pub fn new(core: usize, seed: u64) -> Apps {
        Apps {
            apps: Vec::new(),
            upstreams: Upstreams::new(core, seed),
            stats: Arc::new(ProxyStats::default()),
            overload: Overload::new(&OverloadManagerConfig::default()),
        }
    }

    /// The overload manager's actions and triggers (`overload_manager`).
    pub fn set_overload(&mut self, cfg: &OverloadManagerConfig) {
        self.overload = Overload::new(cfg);
    }

    /// Whether [`Apps::check_overload`] has something to do now.
    #[inline]
    pub fn overload_due(&self, now: Instant) -> bool {
        self.overload.due(now)
    }

    /// Measure this core's pressures (`mbufs` from the worker, the rest
    /// from the engine) and carry out the actions that went on or off.
    pub fn check_overload(&mut self, e: &mut Engine, now: Instant, mbufs: f64) {
        let c = e.config();
        let p = Pressures {
            mbufs,
            buffered_bytes: e.stats().buffered as f64 / c.max_buffered.max(1) as f64,
            connections: e.len() as f64 / c.max_connections.max(1) as f64,
        };
        let changes = self.overload.update(now, &p, &self.stats.overload);
        for (action, on) in changes {
            tracing::warn!(
                "overload: {} {} (mbufs {:.0} %, buffered bytes {:.0} %, connections {:.0} %)",
                action.name(),
                if on { "on" } else { "off" },
                p.mbufs * 100.0,
                p.buffered_bytes * 100.0,
                p.connections * 100.0
            );
            if action == OverloadAction::StopAcceptingConnections {
                e.set_refusing(on);
            }
            let (mut cx, apps) = self.cx(e, now);
            for (i, app) in apps.iter_mut().enumerate() {
                cx.app = i;
                app.overload(&mut cx, action, on);
            }
        }
    }

    /// Room for `n` spans per core (`tracing.zipkin.queue_size`); before
    /// the stats are handed out.
    pub fn set_span_queue(&mut self, n: usize) {
        self.stats = Arc::new(ProxyStats::new(n));
    }

    /// Offer events to `app` after those added before it.
    pub fn push(&mut self, app: Box<dyn App>) {
        self.apps.push(app);
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// Sessions and draining, as the control thread reads them.
    pub fn stats(&self) -> &Arc<ProxyStats> {
        &self.stats
    }

    fn cx<'a>(&'a mut self, e: &'a mut Engine, now: Instant) -> (Cx<'a>, &'a mut [Box<dyn App>]) {
        (
            Cx {
                engine: e,
                upstreams: &mut self.upstreams,
                stats: &self.stats,
                now,
                app: 0,
            },
            &mut self.apps,
        )
    }

    /// Give `ev` to the first app that owns it. A listener nobody owns has
    /// its connections reset; other events of nobody's are dropped.
    pub fn handle(&mut self, e: &mut Engine, now: Instant, ev: Event) {
        let (mut cx, apps) = self.cx(e, now);
        let mut ev = ev;
        for (i, app) in apps.iter_mut().enumerate() {
            cx.app = i;
            match app.handle(&mut cx, ev) {
                Some(back) => ev = back,
                None => return,
            }
        }
        if let Event::Incoming { listener } = ev {
            while let Some(id) = cx.engine.accept(listener.0, listener.1) {
                cx.engine.abort(id);
            }
        }
    }

    /// Every event the engine has queued, to its app. Returns how many.
    pub fn handle_events(&mut self, e: &mut Engine, now: Instant) -> usize {
        let mut n = 0;
        while let Some(ev) = e.poll_event() {
            self.handle(e, now, ev);
            n += 1;
        }
        n
    }

    /// Expired handshakes to their owners, then the apps' own timers.
    pub fn tick(&mut self, e: &mut Engine, now: Instant) {
        let expired = self.upstreams.expired(now, e);
        let (mut cx, apps) = self.cx(e, now);
        for (owner, conn) in expired {
            if let Some(app) = apps.get_mut(owner) {
                cx.app = owner;
                app.connect_timeout(&mut cx, conn);
            }
        }
        for (i, app) in apps.iter_mut().enumerate() {
            cx.app = i;
            app.tick(&mut cx);
        }
    }

    /// The soonest of the apps' and the connector's deadlines.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.apps
            .iter()
            .filter_map(|a| a.poll_timeout())
            .chain(self.upstreams.poll_timeout())
            .min()
    }

    /// Apply one configuration update. Sessions carry on whatever it
    /// changes: a removed listener stops accepting, a removed cluster or
    /// endpoint takes no new connections, and both are forgotten once
    /// their last session ends.
    pub fn apply(&mut self, e: &mut Engine, now: Instant, u: &Update) {
        let (mut cx, apps) = self.cx(e, now);
        for (i, app) in apps.iter_mut().enumerate() {
            cx.app = i;
            app.retire(&mut cx, u);
        }
        cx.upstreams.apply(u);
        for (i, app) in apps.iter_mut().enumerate() {
            cx.app = i;
            app.apply(&mut cx, u);
        }
    }

    /// Stop accepting (once); sessions carry on. Sets `drained` when done.
    pub fn drain(&mut self, e: &mut Engine, now: Instant) {
        if self.stats.drained.load(Relaxed) {
            return;
        }
        let (mut cx, apps) = self.cx(e, now);
        for (i, app) in apps.iter_mut().enumerate() {
            cx.app = i;
            app.drain(&mut cx);
        }
        self.stats.drained.store(true, Relaxed);
    }

    pub fn abort_all(&mut self, e: &mut Engine, now: Instant) {
        let (mut cx, apps) = self.cx(e, now);
        for (i, app) in apps.iter_mut().enumerate() {
            cx.app = i;
            app.abort_all(&mut cx);
        }
    }
}
