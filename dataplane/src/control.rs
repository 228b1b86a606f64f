//! The control loop on the main thread: admin requests (stats, the
//! configuration in force, live updates), the state file, worker health,
//! and draining on the first SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane_config::admin::{
    AdminError, AdminRequest, ApplyReply, ConfigReply, ErrorKind, PingReply,
};
use dataplane_config::{Config, ProxyState, ProxyUpdate};
use proxy::{Live, Mailbox};
use serde_json::Value;

use crate::Failure;
use crate::admin::AdminServer;
use crate::admin_http::{Published, Shared};
use crate::launch::Workers;
use crate::ports::PortPools;
use crate::stats;

/// How long an update waits for every worker to confirm it.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);
/// Saves of the state file are at most this frequent.
const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// What the control loop reads and answers about.
pub struct Control<'a> {
    pub cfg: &'a Config,
    pub ports: &'a [PortPools],
    pub workers: &'a Workers,
    pub live: Live,
    pub started: Instant,
    pub tsc_hz: u64,
    /// Tells a control agent that this is a new process (it then pushes
    /// everything again).
    pub instance: String,
    /// What the HTTP admin server reads: republished after each update.
    pub shared: &'a Shared,
    /// An update was applied since the last publish to `shared`.
    pub republish: bool,
}

impl Control<'_> {
    /// Serve until stopped: admin requests, the state file, worker health.
    /// On the first signal the proxy drains: listeners close, sessions get
    /// `drain_timeout_ms` to finish; then this returns (the caller stops
    /// the workers, resetting what is left). A second signal exits at once.
    /// Returns why it stopped if a worker failed.
    pub fn run(&mut self, admin: &AdminServer, stop: &AtomicBool) -> Option<String> {
        let (cfg, workers) = (self.cfg, self.workers);
        let views = &workers.views;
        let mut drain_until = None;
        let mut saved_at = Instant::now();
        loop {
            admin.serve_pending(&mut |req| self.answer(req));
            if self.republish {
                // After the replies: at 10 000 clusters a snapshot costs
                // about a millisecond, which an update's answer need not
                // wait for; several updates in one round share it.
                self.republish = false;
                let with_state = self.shared.dump.load().is_empty();
                self.shared
                    .published
                    .store(Arc::new(Published::of(&self.live, with_state)));
            }
            if let Some(path) = &cfg.admin.state_file
                && self.live.dirty
                && saved_at.elapsed() >= STATE_SAVE_INTERVAL
            {
                saved_at = Instant::now();
                self.live.dirty = false;
                if let Err(e) = save_state(path, &self.live.state) {
                    tracing::warn!("cannot save the proxy state: {e}");
                }
            }
            if let Some(v) = views
                .iter()
                .find(|v| v.loop_stats.exited.load(Ordering::Relaxed))
            {
                return Some(format!("worker on CPU {} stopped unexpectedly", v.cpu));
            }
            if self.shared.quit.load(Ordering::Relaxed) {
                return None;
            }
            if stop.load(Ordering::Relaxed) {
                self.shared.draining.store(true, Ordering::Relaxed);
                let active = stats::proxy_sessions(views);
                match drain_until {
                    _ if self.live.listeners.is_empty() && active == 0 => return None,
                    None => {
                        tracing::info!(
                            "draining: listeners closed; {active} proxied connection(s) get up to {} ms to finish (signal again to stop now)",
                            cfg.drain_timeout_ms
                        );
                        workers.drain.store(true, Ordering::Relaxed);
                        drain_until =
                            Some(Instant::now() + Duration::from_millis(cfg.drain_timeout_ms));
                    }
                    Some(_) if active == 0 && stats::proxy_drained(views) => {
                        tracing::info!("drained: no proxied connection left");
                        return None;
                    }
                    Some(t) if Instant::now() >= t => {
                        tracing::warn!("drain timeout: resetting {active} proxied connection(s)");
                        return None;
                    }
                    Some(_) => {}
                }
            }
            self.live.flush_backlog(&workers.mailboxes);
            admin.wait(Duration::from_millis(20));
        }
    }

    /// The stats document.
    pub fn snapshot(&self) -> Value {
        stats::snapshot(
            self.cfg,
            self.ports,
            &self.workers.views,
            &self.live,
            self.started.elapsed(),
            self.tsc_hz,
        )
    }

    fn answer(&mut self, req: AdminRequest<'static>) -> Result<Value, AdminError> {
        let json = |v: Result<Value, serde_json::Error>| {
            v.map_err(|e| AdminError::new(ErrorKind::Internal, format!("encoding the reply: {e}")))
        };
        match req {
            AdminRequest::Stats => Ok(self.snapshot()),
            AdminRequest::Config => json(serde_json::to_value(ConfigReply {
                state: self.live.state.clone(),
                generation: self.live.generation(),
            })),
            AdminRequest::Apply { update } => {
                let reply = apply_update(
                    self.cfg,
                    &mut self.live,
                    &self.workers.mailboxes,
                    update.into_owned(),
                    &self.instance,
                )?;
                self.republish = true;
                json(serde_json::to_value(reply))
            }
            AdminRequest::XdsReport { report } => {
                self.shared.report(report.into_owned());
                Ok(Value::Object(Default::default()))
            }
            AdminRequest::Ping => json(serde_json::to_value(PingReply {
                instance: self.instance.clone(),
                generation: self.live.generation(),
                version: self.live.state.version.clone(),
            })),
        }
    }

    /// Save the state file one last time if it changed.
    pub fn save_if_dirty(&self) {
        if let Some(path) = &self.cfg.admin.state_file
            && self.live.dirty
            && let Err(e) = save_state(path, &self.live.state)
        {
            tracing::warn!("cannot save the proxy state: {e}");
        }
    }
}

/// Check and apply `update`, and answer when every worker serves it.
fn apply_update(
    cfg: &Config,
    live: &mut Live,
    mailboxes: &[Arc<Mailbox>],
    update: ProxyUpdate,
    instance: &str,
) -> Result<ApplyReply, AdminError> {
    let t0 = Instant::now();
    let version = update.version.clone();
    let (u, rejected) = live.prepare(update, cfg).map_err(|rejected| {
        let lines: Vec<String> = rejected.iter().map(|r| format!("\n  - {r}")).collect();
        AdminError {
            error: format!("update rejected, nothing changed:{}", lines.concat()),
            kind: ErrorKind::Rejected,
            rejected,
        }
    })?;
    let served = live.publish(&u, mailboxes, PUBLISH_WAIT);
    let took = t0.elapsed();
    if !served {
        tracing::warn!(
            "update {version:?} (generation {}) not confirmed by every worker within {PUBLISH_WAIT:?}; they apply it when they run again",
            u.generation
        );
    }
    tracing::debug!(
        "update {version:?} applied in {} µs: +{} listener(s) -{}, +{} cluster(s) -{}",
        took.as_micros(),
        u.listeners.len(),
        u.remove_listeners.len(),
        u.clusters.len(),
        u.remove_clusters.len()
    );
    Ok(ApplyReply {
        applied: served,
        version,
        generation: u.generation,
        apply_us: took.as_micros() as u64,
        rejected,
        instance: instance.to_owned(),
    })
}

/// The listeners and clusters to start with: the state file's, if there is
/// one, else the configuration's.
pub fn initial_state(cfg: &Config) -> Result<ProxyState, Failure> {
    let Some(path) = cfg.admin.state_file.as_ref().filter(|p| p.exists()) else {
        return Ok(ProxyState::from_config(cfg));
    };
    let bad = |why: String| {
        Failure::Config(format!(
            "admin.state_file {}: {why}; fix or remove it to start from the configuration's listeners and clusters",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let saved: ProxyState = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let change = ProxyState::default()
        .check(saved.to_update(), cfg)
        .map_err(|r| {
            bad(r
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("; "))
        })?;
    let mut state = ProxyState::default();
    state.apply(&change);
    tracing::info!(
        "listeners, clusters and routes from {} (version {:?}): {} listener(s), {} cluster(s), {} route configuration(s)",
        path.display(),
        state.version,
        state.listeners.len(),
        state.clusters.len(),
        state.route_configs.len()
    );
    Ok(state)
}

/// Why the state file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {source}")]
struct SaveError {
    at: PathBuf,
    source: std::io::Error,
}

/// Write the state in force to `path` (atomically: a temporary file, then
/// rename).
fn save_state(path: &Path, state: &ProxyState) -> Result<(), SaveError> {
    let err = |at: &Path| {
        let at = at.to_owned();
        move |source| SaveError { at, source }
    };
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err(dir))?;
    }
    let json = serde_json::to_vec(state).map_err(|e| err(path)(e.into()))?;
    std::fs::write(&tmp, json)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(err(path))
}
