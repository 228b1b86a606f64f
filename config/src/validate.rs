//! Semantic validation: every error at once, each with path, value and reason.

use std::collections::HashMap;
use std::fmt;

use crate::{
    ClusterConfig, Config, Filter, IdleMode, Ipv4Net, ListenerConfig, parse_ipv4, parse_socket_addr,
};

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the field, e.g. `ports[1].address`.
    pub path: String,
    /// The offending value as written (empty when not applicable).
    pub value: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.path, self.reason)
        } else {
            write!(f, "{} = {}: {}", self.path, self.value, self.reason)
        }
    }
}

/// Every problem found, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration ({} error{}):",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

pub(crate) struct Errors(pub(crate) Vec<ConfigError>);

impl Errors {
    pub(crate) fn push(
        &mut self,
        path: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) {
        self.0.push(ConfigError {
            path: path.into(),
            value: value.to_string(),
            reason: reason.into(),
        });
    }
    pub(crate) fn check(
        &mut self,
        ok: bool,
        path: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) {
        if !ok {
            self.push(path, value, reason);
        }
    }
}

/// Largest number of worker cores (and so queue pairs per port) we accept.
pub const MAX_WORKERS: usize = 64;

impl Config {
    /// Check everything a running data plane relies on. Returns every problem.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut e = Errors(Vec::new());
        // One section after another; errors are reported in this order.
        self.validate_eal(&mut e);
        self.validate_workers(&mut e);
        self.validate_mempool(&mut e);
        self.validate_ports(&mut e);
        self.validate_ip_arp(&mut e);
        self.validate_tcp(&mut e);
        self.validate_services(&mut e);
        self.validate_proxy(&mut e);
        self.validate_admin(&mut e);
        self.validate_tracing(&mut e);
        self.validate_overload(&mut e);
        if e.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(e.0))
        }
    }

    /// `eal`: the file prefix and the memory options.
    fn validate_eal(&self, e: &mut Errors) {
        let p = &self.eal.file_prefix;
        e.check(
            !p.is_empty()
                && p.len() <= 64
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "eal.file_prefix",
            format!("{p:?}"),
            "must be 1-64 characters of letters, digits, '-' or '_'",
        );
        if self.eal.in_memory && self.eal.no_huge {
            e.push("eal.no_huge", "true", "cannot be combined with eal.in_memory: true (EAL refuses --no-huge with --in-memory); set one of them false");
        }
        if self.eal.no_huge && self.eal.memory_mb == 0 {
            e.push(
                "eal.memory_mb",
                "0",
                "must be set (e.g. 512) when eal.no_huge is true",
            );
        }
    }

    /// `workers`: the cores, the burst size and the idle policy.
    fn validate_workers(&self, e: &mut Errors) {
        let w = &self.workers;
        e.check(
            !w.cores.is_empty(),
            "workers.cores",
            "[]",
            "at least one worker core is needed",
        );
        e.check(
            w.cores.len() <= MAX_WORKERS,
            "workers.cores",
            w.cores.len(),
            format!("at most {MAX_WORKERS} worker cores"),
        );
        let mut seen = HashMap::new();
        for (i, c) in w.cores.iter().enumerate() {
            if let Some(j) = seen.insert(*c, i) {
                e.push(
                    format!("workers.cores[{i}]"),
                    c,
                    format!("core {c} is already listed at workers.cores[{j}]"),
                );
            }
        }
        e.check(
            (1..=256).contains(&w.burst_size),
            "workers.burst_size",
            w.burst_size,
            "must be between 1 and 256",
        );
        if w.idle.mode == IdleMode::Adaptive {
            e.check(
                w.idle.spin_polls > 0,
                "workers.idle.spin_polls",
                0,
                "must be at least 1 in adaptive mode",
            );
            e.check(
                (1..=100_000).contains(&w.idle.sleep_us),
                "workers.idle.sleep_us",
                w.idle.sleep_us,
                "must be between 1 and 100000 (100 ms) in adaptive mode",
            );
        }
    }

    /// `mempool`: the per-lcore cache.
    fn validate_mempool(&self, e: &mut Errors) {
        let m = &self.mempool;
        e.check(
            m.cache_size <= 512,
            "mempool.cache_size",
            m.cache_size,
            "must be at most 512 (DPDK's limit)",
        );
        e.check(
            m.cache_size <= m.mbufs_per_queue / 2,
            "mempool.cache_size",
            m.cache_size,
            format!(
                "must be at most half of mempool.mbufs_per_queue ({})",
                m.mbufs_per_queue
            ),
        );
    }

    /// `ports`, and the buffers each port needs from `mempool`.
    fn validate_ports(&self, e: &mut Errors) {
        let (m, w) = (&self.mempool, &self.workers);
        e.check(
            !self.ports.is_empty(),
            "ports",
            "[]",
            "at least one port is needed",
        );
        let mut names = HashMap::new();
        let mut devices = HashMap::new();
        let mut nets: Vec<(usize, Ipv4Net)> = Vec::new();
        let mut gateway_port = None;
        for (i, port) in self.ports.iter().enumerate() {
            let at = |f: &str| format!("ports[{i}].{f}");
            if port.name.is_empty() {
                e.push(at("name"), "\"\"", "must not be empty");
            } else if let Some(j) = names.insert(port.name.as_str(), i) {
                e.push(
                    at("name"),
                    &port.name,
                    format!("already used by ports[{j}]"),
                );
            }
            let dev = port.device.split(',').next().unwrap_or("").trim();
            if dev.is_empty() {
                e.push(
                    at("device"),
                    format!("{:?}", port.device),
                    "must name a DPDK device, e.g. net_af_xdp0,iface=eth1 or 0000:01:00.0",
                );
            } else if let Some(j) = devices.insert(dev.to_owned(), i) {
                e.push(
                    at("device"),
                    &port.device,
                    format!("device {dev} is already used by ports[{j}]"),
                );
            }
            match Ipv4Net::parse(&port.address) {
                Err(why) => e.push(at("address"), &port.address, why.to_string()),
                Ok(net) => {
                    if net.prefix_len == 0 || net.prefix_len > 31 {
                        e.push(
                            at("address"),
                            &port.address,
                            "prefix length must be 1-31 (a /32 has no on-link neighbour to reach)",
                        );
                    } else if net.addr.is_unspecified()
                        || net.addr.is_multicast()
                        || net.addr.is_broadcast()
                    {
                        e.push(at("address"), &port.address, "must be a unicast address");
                    } else if net.prefix_len < 31
                        && (net.addr == net.network() || net.addr == net.broadcast())
                    {
                        e.push(
                            at("address"),
                            &port.address,
                            "is the subnet's network or broadcast address",
                        );
                    }
                    for (j, other) in &nets {
                        if other.contains(net.addr) || net.contains(other.addr) {
                            e.push(
                                at("address"),
                                &port.address,
                                format!(
                                    "subnet overlaps ports[{j}].address ({}/{})",
                                    other.addr, other.prefix_len
                                ),
                            );
                        }
                    }
                    if let Some(gw) = &port.gateway {
                        match parse_ipv4(gw) {
                            Err(why) => e.push(at("gateway"), gw, why.to_string()),
                            Ok(g) if !net.contains(g) => e.push(
                                at("gateway"),
                                gw,
                                format!(
                                    "is not inside this port's subnet {}/{}",
                                    net.network(),
                                    net.prefix_len
                                ),
                            ),
                            Ok(g) if g == net.addr => {
                                e.push(at("gateway"), gw, "is this port's own address")
                            }
                            Ok(_) => {}
                        }
                    }
                    nets.push((i, net));
                }
            }
            if port.gateway.is_some() {
                if let Some(j) = gateway_port {
                    e.push(at("gateway"), port.gateway.as_deref().unwrap_or(""), format!("ports[{j}] already has the default gateway; only one default route is supported"));
                }
                gateway_port = Some(i);
            }
            e.check(
                (68..=9000).contains(&port.mtu),
                at("mtu"),
                port.mtu,
                "must be between 68 and 9000",
            );
            // One frame must fit one buffer: we do not enable scattered RX.
            let need = u32::from(port.mtu) + 14 + 4 + 128;
            e.check(
                u32::from(m.data_room) >= need,
                at("mtu"),
                port.mtu,
                format!("a frame of this MTU needs mempool.data_room >= {need} (MTU + 18 bytes of Ethernet + 128 headroom), it is {}", m.data_room),
            );
            for (f, v) in [
                ("rx_descriptors", port.rx_descriptors),
                ("tx_descriptors", port.tx_descriptors),
            ] {
                e.check(
                    v.is_power_of_two() && (64..=16384).contains(&v),
                    at(f),
                    v,
                    "must be a power of two between 64 and 16384",
                );
            }
            // The RX ring holds rx_descriptors buffers all the time; the TX ring
            // up to tx_descriptors; each lcore cache up to 1.5x cache_size; the
            // worker keeps a burst in hand.
            let need = u64::from(port.rx_descriptors)
                + u64::from(port.tx_descriptors)
                + u64::from(m.cache_size) * 3 / 2
                + u64::from(w.burst_size) * 2;
            e.check(
                u64::from(m.mbufs_per_queue) >= need,
                "mempool.mbufs_per_queue",
                m.mbufs_per_queue,
                format!(
                    "too small for ports[{i}]: needs at least {need} (rx_descriptors + tx_descriptors + 1.5 x cache_size + 2 x burst_size)"
                ),
            );
        }
    }

    /// `ip` and `arp`.
    fn validate_ip_arp(&self, e: &mut Errors) {
        e.check(self.ip.ttl > 0, "ip.ttl", self.ip.ttl, "must be at least 1");
        let a = &self.arp;
        e.check(
            a.entry_ttl_ms >= 1000,
            "arp.entry_ttl_ms",
            a.entry_ttl_ms,
            "must be at least 1000",
        );
        e.check(
            (10..=60_000).contains(&a.request_interval_ms),
            "arp.request_interval_ms",
            a.request_interval_ms,
            "must be between 10 and 60000",
        );
        e.check(
            (1..=100).contains(&a.max_requests),
            "arp.max_requests",
            a.max_requests,
            "must be between 1 and 100",
        );
        e.check(
            (1..=1024).contains(&a.max_pending_per_neighbor),
            "arp.max_pending_per_neighbor",
            a.max_pending_per_neighbor,
            "must be between 1 and 1024",
        );
        e.check(
            a.max_pending_total >= a.max_pending_per_neighbor,
            "arp.max_pending_total",
            a.max_pending_total,
            format!(
                "must be at least arp.max_pending_per_neighbor ({})",
                a.max_pending_per_neighbor
            ),
        );
        e.check(
            a.max_entries >= 1,
            "arp.max_entries",
            a.max_entries,
            "must be at least 1",
        );
    }

    /// `tcp`: timers, buffers and limits.
    fn validate_tcp(&self, e: &mut Errors) {
        let t = &self.tcp;
        e.check(
            (1..=60_000).contains(&t.min_rto_ms),
            "tcp.min_rto_ms",
            t.min_rto_ms,
            "must be between 1 and 60000",
        );
        e.check(
            t.time_wait_ms <= 240_000,
            "tcp.time_wait_ms",
            t.time_wait_ms,
            "must be at most 240000 (2 MSL)",
        );
        for (f, v) in [
            ("tcp.recv_buffer", t.recv_buffer),
            ("tcp.send_buffer", t.send_buffer),
        ] {
            e.check(
                (4096..=64 << 20).contains(&v),
                f,
                v,
                "must be between 4096 and 67108864 bytes",
            );
        }
        e.check(
            t.max_connections >= 1,
            "tcp.max_connections",
            t.max_connections,
            "must be at least 1",
        );
        e.check(
            t.max_buffered_bytes >= u64::from(t.recv_buffer.max(t.send_buffer)),
            "tcp.max_buffered_bytes",
            t.max_buffered_bytes,
            format!(
                "must be at least one connection's buffer (tcp.recv_buffer {}, tcp.send_buffer {})",
                t.recv_buffer, t.send_buffer
            ),
        );
        e.check(
            t.backlog >= 1,
            "tcp.backlog",
            t.backlog,
            "must be at least 1",
        );
        e.check(
            t.delayed_ack_ms == 0 || t.delayed_ack_ms < t.min_rto_ms.min(200),
            "tcp.delayed_ack_ms",
            t.delayed_ack_ms,
            format!(
                "must be 0 (off) or below tcp.min_rto_ms ({}) and 200 ms, or peers retransmit while we hold their ACK",
                t.min_rto_ms
            ),
        );
        if t.keepalive_idle_ms > 0 {
            e.check(
                t.keepalive_interval_ms >= 1,
                "tcp.keepalive_interval_ms",
                t.keepalive_interval_ms,
                "must be at least 1 when keepalive is on",
            );
            e.check(
                t.keepalive_probes >= 1,
                "tcp.keepalive_probes",
                t.keepalive_probes,
                "must be at least 1 when keepalive is on",
            );
        }
        e.check(
            t.user_timeout_ms == 0 || t.user_timeout_ms >= t.min_rto_ms,
            "tcp.user_timeout_ms",
            t.user_timeout_ms,
            format!(
                "must be 0 (off) or at least tcp.min_rto_ms ({})",
                t.min_rto_ms
            ),
        );
    }

    /// `services`: one port each.
    fn validate_services(&self, e: &mut Errors) {
        let mut ports = HashMap::new();
        for (i, s) in self.services.iter().enumerate() {
            e.check(
                s.port != 0,
                format!("services[{i}].port"),
                s.port,
                "must be 1-65535",
            );
            if let Some(j) = ports.insert(s.port, i) {
                e.push(
                    format!("services[{i}].port"),
                    s.port,
                    format!("already used by services[{j}]"),
                );
            }
        }
    }

    /// `tracing`: the Zipkin exporter.
    fn validate_tracing(&self, e: &mut Errors) {
        let Some(z) = &self.tracing.zipkin else {
            return;
        };
        e.check(
            z.collector.is_some(),
            "tracing.zipkin.collector",
            "(unset)",
            "must be the collector's address:port",
        );
        e.check(
            z.collector_endpoint.starts_with('/')
                && z.collector_endpoint.bytes().all(|b| b.is_ascii_graphic()),
            "tracing.zipkin.collector_endpoint",
            &z.collector_endpoint,
            "must be a path such as /api/v2/spans",
        );
        e.check(
            (1..=1 << 20).contains(&z.queue_size),
            "tracing.zipkin.queue_size",
            z.queue_size,
            "must be between 1 and 1048576",
        );
        e.check(
            (10..=60_000).contains(&z.flush_interval_ms),
            "tracing.zipkin.flush_interval_ms",
            z.flush_interval_ms,
            "must be between 10 and 60000",
        );
        e.check(
            !z.service_name.is_empty() && !z.service_name.contains(['"', '\\']),
            "tracing.zipkin.service_name",
            &z.service_name,
            "must be a non-empty name without quotes or backslashes",
        );
    }

    /// `overload_manager`: known actions and resources, thresholds in
    /// (0, 1].
    fn validate_overload(&self, e: &mut Errors) {
        use crate::overload::{OverloadAction, Resource};
        let o = &self.overload_manager;
        e.check(
            (1..=10_000).contains(&o.refresh_interval_ms),
            "overload_manager.refresh_interval_ms",
            o.refresh_interval_ms,
            "must be between 1 and 10000",
        );
        let actions = OverloadAction::ALL.map(|a| a.name()).join(", ");
        let resources = Resource::ALL.map(|r| r.name()).join(", ");
        for (i, a) in o.actions.iter().enumerate() {
            let p = format!("overload_manager.actions[{i}]");
            e.check(
                OverloadAction::from_name(&a.name).is_some(),
                format!("{p}.name"),
                &a.name,
                format!("is not an action this data plane takes (one of {actions})"),
            );
            e.check(
                !o.actions[..i].iter().any(|b| b.name == a.name),
                format!("{p}.name"),
                &a.name,
                "is configured twice; give one action all its triggers",
            );
            e.check(
                !a.triggers.is_empty(),
                format!("{p}.triggers"),
                "[]",
                "needs at least one trigger",
            );
            for (j, t) in a.triggers.iter().enumerate() {
                let tp = format!("{p}.triggers[{j}]");
                e.check(
                    Resource::from_name(&t.name).is_some(),
                    format!("{tp}.name"),
                    &t.name,
                    format!("is not a resource this data plane monitors (one of {resources})"),
                );
                if t.scaled.is_some() {
                    e.push(
                        format!("{tp}.scaled"),
                        "(set)",
                        "scaled triggers are not supported (no action here scales); use threshold",
                    );
                }
                match t.threshold {
                    Some(th) => e.check(
                        th.value > 0.0 && th.value <= 1.0,
                        format!("{tp}.threshold.value"),
                        th.value,
                        "must be a fraction in (0, 1]",
                    ),
                    None if t.scaled.is_none() => {
                        e.push(format!("{tp}.threshold"), "(unset)", "is required")
                    }
                    None => {}
                }
            }
        }
    }

    /// `admin`: the socket, the HTTP address and the state file.
    fn validate_admin(&self, e: &mut Errors) {
        let s = &self.admin.socket;
        e.check(
            s.is_absolute(),
            "admin.socket",
            s.display(),
            "must be an absolute path",
        );
        // sun_path holds 108 bytes including the NUL.
        e.check(
            s.as_os_str().len() < 108,
            "admin.socket",
            s.display(),
            "is longer than a Unix socket path may be (107 bytes)",
        );
        e.check(
            (64 << 10..=4 << 30).contains(&self.admin.max_request_bytes),
            "admin.max_request_bytes",
            self.admin.max_request_bytes,
            "must be between 65536 and 4294967296",
        );
        if let Some(a) = self.admin.address {
            e.check(
                a.ip().is_loopback() || self.admin.allow_non_loopback,
                "admin.address",
                a,
                "is not a loopback address: anyone who reaches it can read the configuration and stop the data plane; set admin.allow_non_loopback: true to serve it there anyway",
            );
        }
        if let Some(f) = &self.admin.state_file {
            e.check(
                f.is_absolute(),
                "admin.state_file",
                f.display(),
                "must be an absolute path",
            );
        }
    }
}

impl Config {
    /// Listeners, clusters and the drain timeout.
    fn validate_proxy(&self, e: &mut Errors) {
        let ours = self.port_addrs();
        let mut names = HashMap::new();
        let mut bound: HashMap<(std::net::Ipv4Addr, u16), usize> = HashMap::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let at = |f: &str| format!("listeners[{i}].{f}");
            if let Some(j) = names.insert(l.name.as_str(), i) {
                e.push(
                    at("name"),
                    &l.name,
                    format!("already used by listeners[{j}]"),
                );
            }
            if let Some(a) = self.check_listener(l, &ours, &at, e) {
                let ip = *a.ip();
                for (&(oip, oport), &j) in &bound {
                    if overlaps((ip, a.port()), (oip, oport)) {
                        e.push(
                            at("address"),
                            &l.address,
                            format!("overlaps listeners[{j}]"),
                        );
                    }
                }
                bound.insert((ip, a.port()), i);
            }
            match l.filter() {
                Some(Filter::TcpProxy(t)) => self.check_cluster_named(
                    &t.cluster,
                    &at("filter_chains[0].tcp_proxy.cluster"),
                    e,
                ),
                Some(Filter::Http(h))
                    if !h.route_config.is_empty()
                        && !self.route_configs.iter().any(|r| r.name == h.route_config) =>
                {
                    e.push(
                        at("filter_chains[0].http.route_config"),
                        &h.route_config,
                        "no route configuration of that name (route_configs[].name)",
                    );
                }
                Some(Filter::Http(_)) => {}
                None => {}
            }
        }
        let mut names = HashMap::new();
        for (i, r) in self.route_configs.iter().enumerate() {
            let at = |f: &str| format!("route_configs[{i}].{f}");
            if let Some(j) = names.insert(r.name.as_str(), i) {
                e.push(
                    at("name"),
                    &r.name,
                    format!("already used by route_configs[{j}]"),
                );
            }
            r.check_into(&at, e);
            for (path, c) in r.clusters() {
                if !c.is_empty() {
                    self.check_cluster_named(c, &at(&path), e);
                }
            }
        }
        let mut names = HashMap::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let at = |f: &str| format!("clusters[{i}].{f}");
            if let Some(j) = names.insert(c.name.as_str(), i) {
                e.push(
                    at("name"),
                    &c.name,
                    format!("already used by clusters[{j}]"),
                );
            }
            check_cluster(c, &at, e);
        }
        e.check(
            self.drain_timeout_ms <= 3_600_000,
            "drain_timeout_ms",
            self.drain_timeout_ms,
            "must be at most 3600000 (an hour)",
        );
    }

    fn check_cluster_named(&self, name: &str, path: &str, e: &mut Errors) {
        if !self.clusters.iter().any(|c| c.name == name) {
            e.push(path, name, "no cluster of that name (clusters[].name)");
        }
    }

    /// The ports' own addresses.
    pub(crate) fn port_addrs(&self) -> Vec<std::net::Ipv4Addr> {
        self.ports
            .iter()
            .filter_map(|p| Ipv4Net::parse(&p.address).ok().map(|n| n.addr))
            .collect()
    }

    /// One listener's own fields (not its name's uniqueness, its overlap
    /// with other listeners or its cluster): the address, if usable.
    pub(crate) fn check_listener(
        &self,
        l: &ListenerConfig,
        ours: &[std::net::Ipv4Addr],
        at: &dyn Fn(&str) -> String,
        e: &mut Errors,
    ) -> Option<std::net::SocketAddrV4> {
        check_listener_fields(l, at, e);
        let before = e.0.len();
        match parse_socket_addr(&l.address) {
            Err(why) => {
                e.push(at("address"), &l.address, why.to_string());
                None
            }
            Ok(a) => {
                let ip = *a.ip();
                if !ip.is_unspecified() && !ours.contains(&ip) {
                    e.push(
                        at("address"),
                        &l.address,
                        format!(
                            "{ip} is not the address of any port (ports[].address), nor 0.0.0.0"
                        ),
                    );
                }
                if let Some(s) = self.services.iter().position(|s| s.port == a.port()) {
                    e.push(
                        at("address"),
                        &l.address,
                        format!("port {} is taken by services[{s}]", a.port()),
                    );
                }
                (e.0.len() == before).then_some(a)
            }
        }
    }
}

impl ListenerConfig {
    /// The checks the data plane makes of this listener alone: all but its
    /// name being unique, its cluster existing, and its address belonging
    /// to a port and overlapping no other listener (only the data plane
    /// knows those). A control plane runs them before it accepts a
    /// listener, so that a refusal lands on the listener itself.
    pub fn check(&self) -> Result<(), Vec<ConfigError>> {
        let mut e = Errors(Vec::new());
        check_listener_fields(self, &|f: &str| f.to_owned(), &mut e);
        if let Err(why) = parse_socket_addr(&self.address) {
            e.push("address", &self.address, why.to_string());
        }
        if e.0.is_empty() { Ok(()) } else { Err(e.0) }
    }
}

/// A listener's name and filter chain.
fn check_listener_fields(l: &ListenerConfig, at: &dyn Fn(&str) -> String, e: &mut Errors) {
    e.check(!l.name.is_empty(), at("name"), "\"\"", "must not be empty");
    match l.filter_chains.as_slice() {
        [] => e.push(
            at("filter_chains"),
            "[]",
            "needs one filter chain (or the listener's own tcp_proxy)",
        ),
        [c] => match c.filter() {
            Some(Filter::TcpProxy(t)) => e.check(
                !t.cluster.is_empty(),
                at("filter_chains[0].tcp_proxy.cluster"),
                "\"\"",
                "must not be empty",
            ),
            Some(Filter::Http(h)) => h.check(&|f| at(&format!("filter_chains[0].http.{f}")), e),
            None => e.push(
                at("filter_chains[0]"),
                "",
                "needs exactly one of tcp_proxy and http",
            ),
        },
        more => e.push(
            at("filter_chains"),
            format!("{} chains", more.len()),
            "one filter chain per listener (matching between chains comes with TLS)",
        ),
    }
}

/// Whether two listening addresses take the same connections: the same
/// port, and the same address or either one `0.0.0.0`.
pub(crate) fn overlaps(a: (std::net::Ipv4Addr, u16), b: (std::net::Ipv4Addr, u16)) -> bool {
    a.1 == b.1 && (a.0 == b.0 || a.0.is_unspecified() || b.0.is_unspecified())
}

impl ClusterConfig {
    /// The checks the data plane makes of this cluster alone (all but its
    /// name being unique), each error naming the field (`connect_timeout_ms`,
    /// `endpoints[0].weight`, ...). A control plane runs them before it
    /// accepts a cluster, so that a refusal lands on the cluster itself.
    pub fn check(&self) -> Result<(), Vec<ConfigError>> {
        let mut e = Errors(Vec::new());
        check_cluster(self, &|f: &str| f.to_owned(), &mut e);
        if e.0.is_empty() { Ok(()) } else { Err(e.0) }
    }
}

/// One cluster's fields, whatever else is configured.
pub(crate) fn check_cluster(c: &ClusterConfig, at: &dyn Fn(&str) -> String, e: &mut Errors) {
    e.check(!c.name.is_empty(), at("name"), "\"\"", "must not be empty");
    let mut seen = HashMap::new();
    for (k, ep) in c.endpoints.iter().enumerate() {
        let at = |f: &str| at(&format!("endpoints[{k}].{f}"));
        match parse_socket_addr(&ep.address) {
            Err(why) => e.push(at("address"), &ep.address, why.to_string()),
            Ok(a) => {
                if let Some(j) = seen.insert(a, k) {
                    e.push(
                        at("address"),
                        &ep.address,
                        format!("already listed as endpoints[{j}]"),
                    );
                }
            }
        }
        e.check(
            (1..=128).contains(&ep.weight),
            at("weight"),
            ep.weight,
            "must be between 1 and 128",
        );
    }
    e.check(
        (1..=600_000).contains(&c.connect_timeout_ms),
        at("connect_timeout_ms"),
        c.connect_timeout_ms,
        "must be between 1 and 600000",
    );
    e.check(
        c.limits.max_connections >= 1,
        at("limits.max_connections"),
        c.limits.max_connections,
        "must be at least 1",
    );
    e.check(
        c.limits.max_pending >= 1,
        at("limits.max_pending"),
        c.limits.max_pending,
        "must be at least 1",
    );
    e.check(
        c.limits.max_requests >= 1,
        at("limits.max_requests"),
        c.limits.max_requests,
        "must be at least 1",
    );
    let o = &c.outlier_detection;
    e.check(
        o.consecutive_failures >= 1,
        at("outlier_detection.consecutive_failures"),
        o.consecutive_failures,
        "must be at least 1",
    );
    e.check(
        (1..=3_600_000).contains(&o.base_ejection_ms),
        at("outlier_detection.base_ejection_ms"),
        o.base_ejection_ms,
        "must be between 1 and 3600000",
    );
    e.check(
        o.max_ejection_percent <= 100,
        at("outlier_detection.max_ejection_percent"),
        o.max_ejection_percent,
        "must be a percentage, 0-100",
    );
}

#[cfg(test)]
mod tests {
    use crate::{Config, DEFAULT_YAML};

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::from_yaml(DEFAULT_YAML).unwrap();
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.ports[0].address, "10.10.1.1/24");
        assert_eq!(c.workers.cores, vec![1]);
    }

    #[test]
    fn reports_every_error_with_path_value_and_reason() {
        let y = r#"
workers: { cores: [1, 1], burst_size: 0 }
ports:
  - name: a
    device: net_af_xdp0,iface=x
    address: 10.0.0.1/24
    gateway: 10.9.0.1
  - name: a
    device: net_af_xdp0,iface=y
    address: fe80::1/64
  - name: c
    device: net_tap0
    address: 10.0.0.7/16
    mtu: 20
    rx_descriptors: 1000
"#;
        let err = Config::from_yaml(y).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "workers.cores[1]",
            "workers.burst_size",
            "ports[0].gateway",
            "ports[1].name",
            "ports[1].device",
            "ports[1].address",
            "ports[2].address",
            "ports[2].mtu",
            "ports[2].rx_descriptors",
        ] {
            assert!(paths.contains(&want), "missing {want} in {err}");
        }
        let v6 = err.0.iter().find(|e| e.path == "ports[1].address").unwrap();
        assert_eq!(v6.value, "fe80::1/64");
        assert!(v6.reason.contains("IPv6 is not supported"), "{v6}");
        let text = err.to_string();
        assert!(
            text.contains(
                "ports[0].gateway = 10.9.0.1: is not inside this port's subnet 10.0.0.0/24"
            ),
            "{text}"
        );
    }

    #[test]
    fn listeners_and_clusters_are_checked_field_by_field() {
        let y = r#"
ports: [{name: a, device: net_tap0, address: 10.0.0.1/24}]
services: [{kind: echo, port: 7}]
listeners:
  - {name: web, address: "10.0.0.1:80", tcp_proxy: {cluster: backend}}
  - {name: web, address: "0.0.0.0:80", tcp_proxy: {cluster: nope}}
  - {name: v6, address: "[fe80::1]:80", tcp_proxy: {cluster: backend}}
  - {name: other, address: "10.9.9.9:81", tcp_proxy: {cluster: backend}}
  - {name: svc, address: "10.0.0.1:7", tcp_proxy: {cluster: backend}}
clusters:
  - name: backend
    lb_policy: least_connections
    endpoints:
      - {address: "10.0.1.2:8080", weight: 3}
      - {address: "10.0.1.2:8080"}
      - {address: "fe80::2", weight: 0}
    connect_timeout_ms: 0
    outlier_detection: {consecutive_failures: 0, max_ejection_percent: 101}
"#;
        let err = Config::from_yaml(y).unwrap_err();
        let text = err.to_string();
        for want in [
            "listeners[1].name = web: already used by listeners[0]",
            "listeners[1].address = 0.0.0.0:80: overlaps listeners[0]",
            "listeners[1].filter_chains[0].tcp_proxy.cluster = nope: no cluster of that name",
            "listeners[2].address = [fe80::1]:80: IPv6 is not supported yet",
            "listeners[3].address = 10.9.9.9:81: 10.9.9.9 is not the address of any port",
            "listeners[4].address = 10.0.0.1:7: port 7 is taken by services[0]",
            "clusters[0].endpoints[1].address = 10.0.1.2:8080: already listed as endpoints[0]",
            "clusters[0].endpoints[2].address = fe80::2: IPv6 is not supported yet",
            "clusters[0].endpoints[2].weight = 0: must be between 1 and 128",
            "clusters[0].connect_timeout_ms = 0",
            "clusters[0].outlier_detection.consecutive_failures = 0",
            "clusters[0].outlier_detection.max_ejection_percent = 101",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert_eq!(err.0.len(), 12, "{text}");
        // A good one, with the defaults.
        let ok = "ports: [{name: a, device: net_tap0, address: 10.0.0.1/24}]\nlisteners: [{name: l, address: \"0.0.0.0:80\", tcp_proxy: {cluster: c}}]\nclusters: [{name: c, endpoints: [{address: \"10.0.1.2:80\"}]}]\n";
        let c = Config::from_yaml(ok).unwrap();
        let cl = &c.clusters[0];
        assert_eq!((cl.connect_timeout_ms, cl.endpoints[0].weight), (5000, 1));
        assert_eq!(cl.lb_policy, crate::LbPolicy::RoundRobin);
        assert_eq!(cl.outlier_detection.consecutive_failures, 5);
        assert_eq!(c.drain_timeout_ms, 5000);
    }

    #[test]
    fn tcp_limits_are_checked_against_each_other() {
        let y = "ports: [{name: a, device: net_tap0, address: 10.0.0.1/24}]\ntcp: {max_buffered_bytes: 100000, recv_buffer: 262144, delayed_ack_ms: 60}\n";
        let text = Config::from_yaml(y).unwrap_err().to_string();
        assert!(
            text.contains(
                "tcp.max_buffered_bytes = 100000: must be at least one connection's buffer"
            ),
            "{text}"
        );
        assert!(text.contains("tcp.delayed_ack_ms = 60"), "{text}");
    }

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let err = Config::from_yaml("ports: []\nworkrs: {}\n").unwrap_err();
        assert!(err.to_string().contains("workrs"), "{err}");
    }

    #[test]
    fn wrong_type_is_rejected() {
        let err =
            Config::from_yaml("ports:\n  - {name: a, device: x, address: 10.0.0.1/24, mtu: big}\n")
                .unwrap_err();
        assert!(
            err.to_string().contains("mtu") || err.to_string().contains("big"),
            "{err}"
        );
    }

    #[test]
    fn small_pool_names_the_minimum() {
        let y = "mempool: {mbufs_per_queue: 1000, cache_size: 0}\nports:\n  - {name: a, device: x, address: 10.0.0.1/24}\n";
        let err = Config::from_yaml(y).unwrap_err();
        assert!(err.to_string().contains("needs at least 2112"), "{err}");
    }

    #[test]
    fn no_huge_with_in_memory_is_rejected() {
        let y = "eal: {no_huge: true, in_memory: true, memory_mb: 256}\nports:\n  - {name: a, device: x, address: 10.0.0.1/24}\n";
        let err = Config::from_yaml(y).unwrap_err();
        assert_eq!(err.0[0].path, "eal.no_huge");
    }

    #[test]
    fn overload_actions_and_triggers_are_checked() {
        let y = r#"
ports: [{name: a, device: net_tap0, address: 10.0.0.1/24}]
overload_manager:
  refresh_interval_ms: 0
  actions:
    - name: envoy.overload_actions.shrink_heap
      triggers: [{name: mbufs, threshold: {value: 0.9}}]
    - name: envoy.overload_actions.disable_http_keepalive
      triggers:
        - {name: envoy.resource_monitors.fixed_heap, threshold: {value: 0.9}}
        - {name: mbufs, threshold: {value: 1.5}}
        - {name: connections, scaled: {scaling_threshold: 0.8, saturation_threshold: 0.9}}
        - {name: connections}
    - name: envoy.overload_actions.disable_http_keepalive
      triggers: []
"#;
        let text = Config::from_yaml(y).unwrap_err().to_string();
        for want in [
            "overload_manager.refresh_interval_ms = 0: must be between 1 and 10000",
            "overload_manager.actions[0].name = envoy.overload_actions.shrink_heap: is not an action this data plane takes (one of envoy.overload_actions.stop_accepting_connections, envoy.overload_actions.disable_http_keepalive)",
            "overload_manager.actions[1].triggers[0].name = envoy.resource_monitors.fixed_heap: is not a resource this data plane monitors (one of mbufs, buffered_bytes, connections)",
            "overload_manager.actions[1].triggers[1].threshold.value = 1.5: must be a fraction in (0, 1]",
            "overload_manager.actions[1].triggers[2].scaled = (set): scaled triggers are not supported",
            "overload_manager.actions[1].triggers[3].threshold = (unset): is required",
            "overload_manager.actions[2].name = envoy.overload_actions.disable_http_keepalive: is configured twice",
            "overload_manager.actions[2].triggers = []: needs at least one trigger",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
