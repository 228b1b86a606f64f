//! Fuzz target body for the translation of arbitrary xDS resources, shared
//! by the cargo-fuzz target `xds_resource` in `control-agent/fuzz` and the
//! test that replays its saved corpus on every `cargo test`.
//!
//! The input's first byte picks the type (Listener, Cluster,
//! RouteConfiguration, ClusterLoadAssignment); the rest is the resource's
//! protobuf encoding. The body panics on a broken invariant and on nothing
//! else:
//! - a resource is translated or refused with a reason, never a panic;
//! - what the agent accepts (and so ACKs), the data plane accepts too: a
//!   translated cluster, route configuration or assignment passes the data
//!   plane's own check of an update, so a NACK can only land on the
//!   resource at fault. Listeners are held to the same, except for their
//!   address, which only the data plane can judge (its ports).
//!
//! Seeds: `control-agent/fuzz/seeds/*.yaml` (Envoy's YAML, named by type),
//! encoded into the corpus by the ignored test `write_seed_corpus`.

use std::sync::OnceLock;

use dataplane_config::{ClusterConfig, Config, ProxyState, ProxyUpdate, Rejected};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::Message;

use crate::translate::{self, Ignored};

/// The resource types, in the order of the input's first byte.
pub const TYPES: [&str; 4] = [
    "envoy.config.listener.v3.Listener",
    "envoy.config.cluster.v3.Cluster",
    "envoy.config.route.v3.RouteConfiguration",
    "envoy.config.endpoint.v3.ClusterLoadAssignment",
];

/// A data plane configuration for the checks: one port, every address.
fn base() -> &'static Config {
    static BASE: OnceLock<Config> = OnceLock::new();
    BASE.get_or_init(|| {
        Config::from_yaml("ports: [{name: a, device: net_null0, address: 10.0.0.1/24}]\n")
            .expect("the fuzzing base configuration is valid")
    })
}

/// The data plane's verdict on `u`, against an empty state.
fn data_plane_check(u: ProxyUpdate) -> Result<(), Vec<Rejected>> {
    ProxyState::default().check(u, base()).map(|_| ())
}

/// Run one input (see the module's text).
pub fn xds_resource(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let ignored = Ignored::default();
    match kind % 4 {
        0 => {
            let Ok(l) = Listener::decode(bytes) else {
                return;
            };
            let Ok(Some(plan)) = translate::listener(&l, &ignored) else {
                return;
            };
            let u = ProxyUpdate {
                listeners: vec![plan.cfg.clone()],
                route_configs: plan.inline_routes().cloned().into_iter().collect(),
                ..ProxyUpdate::default()
            };
            if let Err(rejected) = data_plane_check(u) {
                for r in &rejected {
                    for e in &r.errors {
                        assert!(
                            e.path.ends_with(".address"),
                            "the agent accepted listener {:?} that the data plane refuses: {r}",
                            l.name
                        );
                    }
                }
            }
        }
        1 => {
            let Ok(c) = Cluster::decode(bytes) else {
                return;
            };
            let Ok(plan) = translate::cluster(&c, &ignored) else {
                return;
            };
            let u = ProxyUpdate {
                clusters: vec![plan.cfg],
                ..ProxyUpdate::default()
            };
            data_plane_check(u).unwrap_or_else(|r| {
                panic!(
                    "the agent accepted cluster {:?} that the data plane refuses: {r:?}",
                    c.name
                )
            });
        }
        2 => {
            let Ok(rc) = RouteConfiguration::decode(bytes) else {
                return;
            };
            let Ok(routes) = translate::hcm::route_config(&rc, &ignored) else {
                return;
            };
            let u = ProxyUpdate {
                route_configs: vec![routes],
                ..ProxyUpdate::default()
            };
            data_plane_check(u).unwrap_or_else(|r| {
                panic!(
                    "the agent accepted routes {:?} that the data plane refuses: {r:?}",
                    rc.name
                )
            });
        }
        _ => {
            let Ok(cla) = ClusterLoadAssignment::decode(bytes) else {
                return;
            };
            let Ok(endpoints) = translate::endpoints(&cla) else {
                return;
            };
            let mut c: ClusterConfig =
                serde_json::from_str(r#"{"name":"c"}"#).expect("a cluster with defaults");
            c.endpoints = endpoints;
            let u = ProxyUpdate {
                clusters: vec![c],
                ..ProxyUpdate::default()
            };
            data_plane_check(u).unwrap_or_else(|r| {
                panic!(
                    "the agent accepted endpoints of {:?} that the data plane refuses: {r:?}",
                    cla.cluster_name
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn dir(sub: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(sub)
    }

    /// The corpus cargo-fuzz saved, replayed through the same body.
    #[test]
    fn the_saved_fuzz_corpus_replays() {
        let mut n = 0;
        for entry in std::fs::read_dir(dir("corpus/xds_resource")).expect("the corpus") {
            let path = entry.expect("an entry").path();
            let data = std::fs::read(&path).expect("readable");
            if std::panic::catch_unwind(|| super::xds_resource(&data)).is_err() {
                panic!("{} fails", path.display());
            }
            n += 1;
        }
        assert!(n >= 50, "only {n} saved inputs");
    }

    /// Encode the seeds (Envoy's YAML) into the corpus. Run by hand after
    /// adding one: `cargo test -p control-agent write_seed_corpus -- --ignored`.
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        for entry in std::fs::read_dir(dir("seeds")).expect("the seeds") {
            let path = entry.expect("an entry").path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let kind = ["listener", "cluster", "route", "endpoints"]
                .iter()
                .position(|k| name.starts_with(k))
                .unwrap_or_else(|| panic!("{name}: which type?"));
            let text = std::fs::read_to_string(&path).unwrap();
            let mut data = vec![kind as u8];
            data.extend(
                crate::bootstrap::encode_yaml(super::TYPES[kind], &text)
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
            );
            super::xds_resource(&data);
            std::fs::write(
                dir("corpus/xds_resource").join(format!("seed-{name}")),
                data,
            )
            .unwrap();
        }
    }
}
