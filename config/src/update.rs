//! Live changes to the proxy's listeners and clusters.
//!
//! A running data plane takes a [`ProxyUpdate`] on its admin socket (the
//! control agent sends one per xDS change; an operator may send one by hand).
//! [`ProxyState`] is the set in force; [`ProxyState::check`] judges an update
//! item by item against it, in time proportional to the update (not to the
//! state), and returns the [`Change`] to apply or every rejection with its
//! field, value and reason.
//!
//! Unlike a configuration file, a live state may name a cluster that does not
//! exist (yet): xDS sends clusters and listeners separately, and Envoy too
//! keeps a `tcp_proxy` listener whose cluster is gone. Its connections are
//! refused and counted as `no_upstream` until the cluster arrives.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::http::RouteConfig;
use crate::validate::{Errors, check_cluster, overlaps};
use crate::{ClusterConfig, Config, ConfigError, ListenerConfig, parse_socket_addr};

/// Listeners and clusters to add, replace or remove, as one atomic step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyUpdate {
    /// Opaque label of the resulting state, reported in stats and answers.
    pub version: String,
    /// `listeners`, `clusters` and `route_configs` are the whole state: whatever else is in
    /// force is removed. Otherwise they are added or replaced (by name) and
    /// the `remove_*` names go.
    #[serde(default)]
    pub full: bool,
    /// Apply the items that pass and report the others (what an xDS client
    /// does: one bad resource must not hold back the rest). Otherwise one
    /// bad item rejects the whole update.
    #[serde(default)]
    pub partial: bool,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    #[serde(default)]
    pub route_configs: Vec<RouteConfig>,
    #[serde(default)]
    pub remove_listeners: Vec<String>,
    #[serde(default)]
    pub remove_clusters: Vec<String>,
    #[serde(default)]
    pub remove_route_configs: Vec<String>,
}

/// One listener or cluster of an update that was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// `listener`, `cluster` or `route_config`.
    pub kind: String,
    pub name: String,
    /// Each with the field's path inside the update, e.g. `clusters[3].connect_timeout_ms`.
    pub errors: Vec<RejectedField>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedField {
    pub path: String,
    pub value: String,
    pub reason: String,
}

impl From<ConfigError> for RejectedField {
    fn from(e: ConfigError) -> Self {
        RejectedField {
            path: e.path,
            value: e.value,
            reason: e.reason,
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}:", self.kind, self.name)?;
        for (i, e) in self.errors.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            if e.value.is_empty() {
                write!(f, "{sep}{}: {}", e.path, e.reason)?;
            } else {
                write!(f, "{sep}{} = {}: {}", e.path, e.value, e.reason)?;
            }
        }
        Ok(())
    }
}

/// A checked update: what to add or replace and what to remove. Every item
/// in it is valid against the state it was checked on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub version: String,
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
    pub route_configs: Vec<RouteConfig>,
    pub remove_listeners: Vec<String>,
    pub remove_clusters: Vec<String>,
    pub remove_route_configs: Vec<String>,
    /// Items left out (only with `partial`).
    pub rejected: Vec<Rejected>,
}

/// The listeners and clusters in force, with the index that lets an update
/// be checked without walking them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyState {
    pub version: String,
    pub listeners: BTreeMap<String, ListenerConfig>,
    pub clusters: BTreeMap<String, ClusterConfig>,
    #[serde(default)]
    pub route_configs: BTreeMap<String, RouteConfig>,
    /// Listening port → (address, listener name).
    #[serde(skip)]
    by_port: HashMap<u16, Vec<(Ipv4Addr, String)>>,
}

impl ProxyState {
    /// The state a configuration file starts with (validated already).
    pub fn from_config(cfg: &Config) -> ProxyState {
        let mut s = ProxyState {
            version: String::new(),
            listeners: cfg
                .listeners
                .iter()
                .map(|l| (l.name.clone(), l.clone()))
                .collect(),
            clusters: cfg
                .clusters
                .iter()
                .map(|c| (c.name.clone(), c.clone()))
                .collect(),
            route_configs: cfg
                .route_configs
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect(),
            by_port: HashMap::new(),
        };
        s.reindex();
        s
    }

    /// The whole state as one full update: how a saved state (the state
    /// file) is checked and brought back in force.
    pub fn to_update(&self) -> ProxyUpdate {
        ProxyUpdate {
            version: self.version.clone(),
            full: true,
            partial: false,
            listeners: self.listeners.values().cloned().collect(),
            clusters: self.clusters.values().cloned().collect(),
            route_configs: self.route_configs.values().cloned().collect(),
            ..ProxyUpdate::default()
        }
    }

    /// Rebuild the port index (after deserializing a saved state).
    pub fn reindex(&mut self) {
        self.by_port.clear();
        for l in self.listeners.values() {
            if let Ok(a) = parse_socket_addr(&l.address) {
                self.by_port
                    .entry(a.port())
                    .or_default()
                    .push((*a.ip(), l.name.clone()));
            }
        }
    }

    /// Judge `u` against this state and `cfg`'s ports and services. Costs in
    /// proportion to `u` (a `full` update is as big as the state anyway).
    pub fn check(&self, u: ProxyUpdate, cfg: &Config) -> Result<Change, Vec<Rejected>> {
        let mut rejected = Vec::new();
        let mut clusters = Vec::new();
        let mut seen = HashMap::new();
        for (i, c) in u.clusters.into_iter().enumerate() {
            let at = |f: &str| format!("clusters[{i}].{f}");
            let mut e = Errors(Vec::new());
            check_cluster(&c, &at, &mut e);
            if let Some(j) = seen.insert(c.name.clone(), i) {
                e.push(
                    at("name"),
                    &c.name,
                    format!("already used by clusters[{j}]"),
                );
            }
            if e.0.is_empty() {
                clusters.push(c);
            } else {
                rejected.push(rejection("cluster", &c.name, e));
            }
        }
        // Named clusters stay, valid or not (an invalid one keeps its old version).
        let kept_cluster: HashSet<&str> = seen.keys().map(String::as_str).collect();
        let remove_clusters: Vec<String> = if u.full {
            self.clusters
                .keys()
                .filter(|n| !kept_cluster.contains(n.as_str()))
                .cloned()
                .collect()
        } else {
            u.remove_clusters
        };

        let mut route_configs = Vec::new();
        let mut seen = HashMap::new();
        for (i, r) in u.route_configs.into_iter().enumerate() {
            let at = |f: &str| format!("route_configs[{i}].{f}");
            let mut e = Errors(Vec::new());
            r.check_into(&at, &mut e);
            if let Some(j) = seen.insert(r.name.clone(), i) {
                e.push(
                    at("name"),
                    &r.name,
                    format!("already used by route_configs[{j}]"),
                );
            }
            if e.0.is_empty() {
                route_configs.push(r);
            } else {
                rejected.push(rejection("route_config", &r.name, e));
            }
        }
        let remove_route_configs: Vec<String> = if u.full {
            self.route_configs
                .keys()
                .filter(|n| !seen.contains_key(n.as_str()))
                .cloned()
                .collect()
        } else {
            u.remove_route_configs
        };

        // Listeners: the addresses of those that stay must not overlap.
        let ours = cfg.port_addrs();
        let upserted: HashSet<&str> = u.listeners.iter().map(|l| l.name.as_str()).collect();
        let removed: HashSet<&str> = if u.full {
            self.listeners
                .keys()
                .map(String::as_str)
                .filter(|n| !upserted.contains(n))
                .collect()
        } else {
            u.remove_listeners.iter().map(String::as_str).collect()
        };
        let mut listeners = Vec::new();
        let mut seen = HashMap::new();
        let mut taken: HashMap<u16, Vec<(Ipv4Addr, usize)>> = HashMap::new();
        for (i, l) in u.listeners.iter().enumerate() {
            let at = |f: &str| format!("listeners[{i}].{f}");
            let mut e = Errors(Vec::new());
            if let Some(j) = seen.insert(l.name.clone(), i) {
                e.push(
                    at("name"),
                    &l.name,
                    format!("already used by listeners[{j}]"),
                );
            }
            if let Some(a) = cfg.check_listener(l, &ours, &at, &mut e) {
                let here = (*a.ip(), a.port());
                for (ip, name) in self.by_port.get(&a.port()).into_iter().flatten() {
                    // Free only if removed (a listener re-sent may still be
                    // rejected and keep its address); itself never clashes.
                    let gone = removed.contains(name.as_str()) || *name == l.name;
                    if !gone && overlaps(here, (*ip, a.port())) {
                        e.push(
                            at("address"),
                            &l.address,
                            format!("overlaps listener {name:?}, which stays"),
                        );
                    }
                }
                for &(ip, j) in taken.get(&a.port()).into_iter().flatten() {
                    if overlaps(here, (ip, a.port())) {
                        e.push(
                            at("address"),
                            &l.address,
                            format!("overlaps listeners[{j}]"),
                        );
                    }
                }
                if e.0.is_empty() {
                    taken.entry(a.port()).or_default().push((*a.ip(), i));
                }
            }
            if e.0.is_empty() {
                listeners.push(l.clone());
            } else {
                rejected.push(rejection("listener", &l.name, e));
            }
        }
        // A rejected listener keeps its old version, if any: it is neither
        // replaced nor (in a full update) removed.
        let remove_listeners: Vec<String> = removed
            .into_iter()
            .filter(|n| {
                !rejected
                    .iter()
                    .any(|r| r.kind == "listener" && r.name == *n)
            })
            .map(str::to_owned)
            .collect();
        let remove_clusters = remove_clusters
            .into_iter()
            .filter(|n| !rejected.iter().any(|r| r.kind == "cluster" && r.name == *n))
            .collect();
        let remove_route_configs = remove_route_configs
            .into_iter()
            .filter(|n| {
                !rejected
                    .iter()
                    .any(|r| r.kind == "route_config" && r.name == *n)
            })
            .collect();
        if !rejected.is_empty() && !u.partial {
            return Err(rejected);
        }
        Ok(Change {
            version: u.version,
            listeners,
            clusters,
            route_configs,
            remove_listeners,
            remove_clusters,
            remove_route_configs,
            rejected,
        })
    }

    /// Make `ch` (checked against this state) the state.
    pub fn apply(&mut self, ch: &Change) {
        for n in &ch.remove_listeners {
            if let Some(l) = self.listeners.remove(n) {
                self.unindex(&l);
            }
        }
        for n in &ch.remove_clusters {
            self.clusters.remove(n);
        }
        for l in &ch.listeners {
            if let Some(old) = self.listeners.insert(l.name.clone(), l.clone()) {
                self.unindex(&old);
            }
            if let Ok(a) = parse_socket_addr(&l.address) {
                self.by_port
                    .entry(a.port())
                    .or_default()
                    .push((*a.ip(), l.name.clone()));
            }
        }
        for c in &ch.clusters {
            self.clusters.insert(c.name.clone(), c.clone());
        }
        for n in &ch.remove_route_configs {
            self.route_configs.remove(n);
        }
        for r in &ch.route_configs {
            self.route_configs.insert(r.name.clone(), r.clone());
        }
        self.version = ch.version.clone();
    }

    fn unindex(&mut self, l: &ListenerConfig) {
        if let Ok(a) = parse_socket_addr(&l.address)
            && let Some(v) = self.by_port.get_mut(&a.port())
        {
            v.retain(|(_, n)| *n != l.name);
            if v.is_empty() {
                self.by_port.remove(&a.port());
            }
        }
    }
}

fn rejection(kind: &str, name: &str, e: Errors) -> Rejected {
    Rejected {
        kind: kind.into(),
        name: name.into(),
        errors: e.0.into_iter().map(RejectedField::from).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EndpointConfig;

    fn cfg() -> Config {
        Config::from_yaml(
            "ports: [{name: a, device: net_null0, address: 10.0.0.1/24}]\nservices: [{kind: echo, port: 7}]\n",
        )
        .unwrap()
    }

    fn listener(name: &str, addr: &str, cluster: &str) -> ListenerConfig {
        ListenerConfig::tcp(name, addr, cluster)
    }

    fn cluster(name: &str, eps: &[&str]) -> ClusterConfig {
        let mut c: ClusterConfig = serde_saphyr::from_str(&format!("name: {name}")).unwrap();
        c.endpoints = eps
            .iter()
            .map(|a| EndpointConfig {
                address: a.to_string(),
                weight: 1,
            })
            .collect();
        c
    }

    fn apply(s: &mut ProxyState, u: ProxyUpdate) -> Result<Change, Vec<Rejected>> {
        let ch = s.check(u, &cfg())?;
        s.apply(&ch);
        Ok(ch)
    }

    #[test]
    fn a_delta_adds_replaces_and_removes_by_name() {
        let mut s = ProxyState::default();
        apply(
            &mut s,
            ProxyUpdate {
                version: "1".into(),
                listeners: vec![listener("l", "0.0.0.0:80", "c")],
                clusters: vec![cluster("c", &["10.0.0.2:80"]), cluster("d", &[])],
                ..Default::default()
            },
        )
        .unwrap();
        apply(
            &mut s,
            ProxyUpdate {
                version: "2".into(),
                clusters: vec![cluster("c", &["10.0.0.3:80"])],
                remove_clusters: vec!["d".into(), "never-there".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.version, "2");
        assert_eq!(s.clusters.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(s.clusters["c"].endpoints[0].address, "10.0.0.3:80");
        assert_eq!(s.listeners.len(), 1);
    }

    /// Regression: a data plane restarted from its state file lost the
    /// route configurations (RDS) it had saved.
    #[test]
    fn a_saved_state_comes_back_whole_routes_included() {
        let mut s = ProxyState::default();
        let rc: RouteConfig = serde_saphyr::from_str(
            "name: r\nvirtual_hosts: [{name: v, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: c}}]}]\n",
        )
        .unwrap();
        apply(
            &mut s,
            ProxyUpdate {
                version: "7".into(),
                listeners: vec![listener("l", "0.0.0.0:80", "c")],
                clusters: vec![cluster("c", &["10.0.0.2:80"])],
                route_configs: vec![rc],
                ..Default::default()
            },
        )
        .unwrap();
        let saved: ProxyState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        let mut back = ProxyState::default();
        apply(&mut back, saved.to_update()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.route_configs.len(), 1);
    }

    #[test]
    fn a_full_update_removes_what_it_does_not_name() {
        let mut s = ProxyState::default();
        let two = ProxyUpdate {
            full: true,
            listeners: vec![
                listener("a", "0.0.0.0:80", "c"),
                listener("b", "0.0.0.0:81", "c"),
            ],
            clusters: vec![cluster("c", &[]), cluster("d", &[])],
            ..Default::default()
        };
        apply(&mut s, two).unwrap();
        let ch = apply(
            &mut s,
            ProxyUpdate {
                full: true,
                listeners: vec![listener("b", "0.0.0.0:81", "c")],
                clusters: vec![cluster("c", &[])],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ch.remove_listeners, ["a"]);
        assert_eq!(ch.remove_clusters, ["d"]);
        // Port 80 is free again.
        apply(
            &mut s,
            ProxyUpdate {
                listeners: vec![listener("e", "10.0.0.1:80", "c")],
                ..Default::default()
            },
        )
        .unwrap();
    }

    #[test]
    fn bad_items_are_named_and_partial_keeps_the_good_ones() {
        let mut s = ProxyState::default();
        apply(
            &mut s,
            ProxyUpdate {
                listeners: vec![listener("web", "0.0.0.0:80", "c")],
                ..Default::default()
            },
        )
        .unwrap();
        let mut bad = cluster("bad", &["10.0.0.9:80"]);
        bad.connect_timeout_ms = 0;
        let u = ProxyUpdate {
            listeners: vec![
                listener("clash", "10.0.0.1:80", "c"),
                listener("svc", "0.0.0.0:7", "c"),
                listener("ok", "0.0.0.0:8080", "nowhere"),
            ],
            clusters: vec![bad, cluster("good", &[])],
            ..Default::default()
        };
        let all_or_nothing = s.check(u.clone(), &cfg()).unwrap_err();
        let said: Vec<String> = all_or_nothing.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            said,
            [
                "cluster \"bad\": clusters[0].connect_timeout_ms = 0: must be between 1 and 600000",
                "listener \"clash\": listeners[0].address = 10.0.0.1:80: overlaps listener \"web\", which stays",
                "listener \"svc\": listeners[1].address = 0.0.0.0:7: port 7 is taken by services[0]",
            ]
        );
        let ch = apply(&mut s, ProxyUpdate { partial: true, ..u }).unwrap();
        assert_eq!(ch.rejected.len(), 3);
        assert_eq!(s.clusters.keys().collect::<Vec<_>>(), ["good"]);
        assert_eq!(s.listeners.keys().collect::<Vec<_>>(), ["ok", "web"]);
    }

    #[test]
    fn an_address_is_free_only_once_its_listener_is_removed() {
        let mut s = ProxyState::default();
        apply(
            &mut s,
            ProxyUpdate {
                listeners: vec![listener("a", "0.0.0.0:80", "c")],
                ..Default::default()
            },
        )
        .unwrap();
        // `a` tries to move onto a service's port (rejected, it stays on
        // 80): `b` cannot have 80 in the same update.
        let u = ProxyUpdate {
            partial: true,
            listeners: vec![
                listener("a", "0.0.0.0:7", "c"),
                listener("b", "10.0.0.1:80", "c"),
            ],
            ..Default::default()
        };
        let ch = apply(&mut s, u).unwrap();
        assert_eq!(ch.rejected.len(), 2, "{:?}", ch.rejected);
        assert_eq!(s.listeners["a"].address, "0.0.0.0:80");
        assert!(!s.listeners.contains_key("b"));
    }

    #[test]
    fn a_listener_may_move_to_an_address_another_one_leaves() {
        let mut s = ProxyState::default();
        apply(
            &mut s,
            ProxyUpdate {
                listeners: vec![listener("old", "0.0.0.0:80", "c")],
                ..Default::default()
            },
        )
        .unwrap();
        apply(
            &mut s,
            ProxyUpdate {
                listeners: vec![listener("new", "10.0.0.1:80", "c")],
                remove_listeners: vec!["old".into()],
                ..Default::default()
            },
        )
        .unwrap();
        // Replacing a listener in place does not clash with itself.
        apply(
            &mut s,
            ProxyUpdate {
                listeners: vec![listener("new", "0.0.0.0:80", "d")],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            s.listeners["new"].filter(),
            Some(crate::Filter::TcpProxy(&crate::TcpProxyConfig {
                cluster: "d".into(),
                stat_prefix: String::new(),
            }))
        );
    }
}
