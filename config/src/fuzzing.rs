//! Fuzz target bodies for what the data plane reads from people and from
//! the control agent: the configuration file and the admin socket's
//! requests. Shared by the cargo-fuzz targets in `config/fuzz` and the test
//! that replays their saved corpora on every `cargo test`.
//!
//! Both panic on a broken invariant and on nothing else:
//! - input is accepted or refused with at least one error naming a field
//!   (or the file) and a reason, never a panic;
//! - what is accepted stays valid when saved and loaded back (a
//!   configuration through JSON, as `show-config` prints it; the state in
//!   force through the state file's JSON and its full-update check);
//! - an update that is not `partial` is applied whole or not at all.

use std::sync::OnceLock;

use crate::admin::AdminRequest;
use crate::{Config, ConfigError, ProxyState};

fn check_error(e: &ConfigError) {
    assert!(!e.path.is_empty(), "an error names its field: {e:?}");
    assert!(!e.reason.is_empty(), "an error says why: {e:?}");
}

/// Arbitrary text as the data plane's YAML configuration.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_yaml(text) {
        Ok(cfg) => {
            let json = serde_json::to_string(&cfg).expect("a valid configuration serializes");
            let back: Config = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("a saved configuration does not load: {e}\n{json}"));
            back.validate()
                .unwrap_or_else(|e| panic!("a saved configuration is not valid: {e}\n{json}"));
            assert_eq!(back, cfg, "a configuration changes when saved and loaded");
            let state = ProxyState::from_config(&cfg);
            ProxyState::default()
                .check(state.to_update(), &cfg)
                .unwrap_or_else(|r| panic!("a valid configuration's state is refused: {r:?}"));
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without a reason");
            errors.0.iter().for_each(check_error);
        }
    }
}

/// The configuration the admin requests are judged against: two ports, a
/// service, a listener and a cluster of the embedded default's kind.
fn base() -> &'static Config {
    static BASE: OnceLock<Config> = OnceLock::new();
    BASE.get_or_init(|| {
        Config::from_yaml(
            "ports:\n\
             - {name: a, device: net_null0, address: 10.0.0.1/24}\n\
             - {name: b, device: net_null1, address: 10.0.1.1/24}\n\
             services: [{kind: echo, port: 7}]\n\
             listeners: [{name: l, address: '0.0.0.0:80', tcp_proxy: {cluster: c}}]\n\
             clusters: [{name: c, endpoints: [{address: '10.0.1.2:80'}]}]\n",
        )
        .expect("the fuzzing base configuration is valid")
    })
}

/// Arbitrary bytes as one request line on the admin socket; an `apply` is
/// checked and applied to the base configuration's state.
pub fn admin_request(data: &[u8]) {
    let req = match AdminRequest::parse(data) {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.error.is_empty(), "refused without a reason");
            return;
        }
    };
    let AdminRequest::Apply { update } = req else {
        return;
    };
    let update = update.into_owned();
    let cfg = base();
    let mut state = ProxyState::from_config(cfg);
    let before = state.clone();
    let partial = update.partial;
    match state.check(update, cfg) {
        Ok(change) => {
            assert!(partial || change.rejected.is_empty(), "all or nothing");
            for r in &change.rejected {
                assert!(!r.errors.is_empty(), "{r}: rejected without a reason");
                r.errors
                    .iter()
                    .for_each(|e| assert!(!e.path.is_empty() && !e.reason.is_empty(), "{r}"));
            }
            state.apply(&change);
            // Saved to the state file and loaded back at restart, it is the
            // same state, and it passes the check again.
            let saved: ProxyState =
                serde_json::from_slice(&serde_json::to_vec(&state).expect("serializes"))
                    .expect("the saved state loads");
            let change = ProxyState::default()
                .check(saved.to_update(), cfg)
                .unwrap_or_else(|r| panic!("the state in force does not pass again: {r:?}"));
            let mut back = ProxyState::default();
            back.apply(&change);
            assert_eq!(back, state, "the state changes across a restart");
        }
        Err(rejected) => {
            assert!(!rejected.is_empty(), "refused without a reason");
            for r in &rejected {
                assert!(!r.errors.is_empty(), "{r}: rejected without a reason");
            }
            assert_eq!(state, before, "a refused update changed nothing");
        }
    }
}

#[cfg(test)]
mod tests {
    /// The corpora cargo-fuzz saved (config/fuzz/corpus), replayed through
    /// the same bodies.
    #[test]
    fn the_saved_fuzz_corpora_replay() {
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 2] = [
            ("config_yaml", super::config_yaml),
            ("admin_request", super::admin_request),
        ];
        for (target, run) in targets {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus")
                .join(target);
            let n = netstack::testing::replay_fuzz_corpus(&dir, run);
            assert!(
                n >= 50,
                "{target}: only {n} saved inputs in {}",
                dir.display()
            );
        }
    }
}
