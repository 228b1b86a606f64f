//! EAL's command line, built from the config.

use dataplane_config::Config;

/// True for a PCI address such as `0000:01:00.0` or `01:00.0`.
fn is_pci(dev: &str) -> bool {
    let name = dev.split(',').next().unwrap_or("");
    name.contains(':')
        && name.contains('.')
        && name
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
}

/// CPUs the kernel has online (`/sys/devices/system/cpu/online`, e.g. `0-1`).
pub fn online_cpus() -> Vec<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    parse_cpu_list(text.trim())
}

fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out
}

/// Problems with the config on this particular host (CPUs that do not exist).
pub fn host_errors(cfg: &Config, online: &[u32]) -> Vec<String> {
    let list = online
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut errs = Vec::new();
    for (field, cores) in [
        ("workers.cores", &cfg.workers.cores),
        ("workers.control_cores", &cfg.workers.control_cores),
    ] {
        for (i, c) in cores.iter().enumerate() {
            if !online.contains(c) {
                errs.push(format!(
                    "{field}[{i}] = {c}: CPU {c} is not online on this host (online: {list})"
                ));
            }
        }
    }
    errs
}

/// The EAL arguments: lcore 0 is the control thread, lcore i+1 the worker on
/// `workers.cores[i]`; then devices, memory, and the user's extra arguments.
pub fn build(cfg: &Config, online: &[u32], passthrough: &[String]) -> Vec<String> {
    let mut a = vec!["dataplane".to_string()];
    let control: Vec<u32> = if !cfg.workers.control_cores.is_empty() {
        cfg.workers.control_cores.clone()
    } else {
        let rest: Vec<u32> = online
            .iter()
            .copied()
            .filter(|c| !cfg.workers.cores.contains(c))
            .collect();
        if rest.is_empty() {
            online.to_vec()
        } else {
            rest
        }
    };
    let set = control
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut lcores = format!("0@({set})");
    for (i, c) in cfg.workers.cores.iter().enumerate() {
        lcores.push_str(&format!(",{}@{c}", i + 1));
    }
    a.extend(["--lcores".into(), lcores, "--main-lcore".into(), "0".into()]);
    a.extend(["--file-prefix".into(), cfg.eal.file_prefix.clone()]);
    if cfg.eal.in_memory {
        a.push("--in-memory".into());
    }
    if cfg.eal.no_huge {
        a.push("--no-huge".into());
    }
    if cfg.eal.memory_mb > 0 {
        a.extend(["-m".into(), cfg.eal.memory_mb.to_string()]);
    }
    let mut any_pci = false;
    for p in &cfg.ports {
        if is_pci(&p.device) {
            any_pci = true;
            a.extend(["-a".into(), p.device.clone()]);
        } else {
            a.push(format!("--vdev={}", p.device));
        }
    }
    if !any_pci {
        a.push("--no-pci".into());
        // Virtual devices copy from virtual addresses and never DMA: with
        // IOVA as VA any memory (not just DPDK's) can be attached to an mbuf,
        // so TCP payload from the process heap is sent without a copy too.
        let user_chose = cfg
            .eal
            .extra_args
            .iter()
            .chain(passthrough)
            .any(|x| x.starts_with("--iova-mode"));
        if !user_chose {
            a.push("--iova-mode=va".into());
        }
    }
    a.extend(cfg.eal.extra_args.iter().cloned());
    a.extend(passthrough.iter().cloned());
    a
}

/// The DPDK device name EAL gives a port: its device string up to the first comma.
pub fn device_name(device: &str) -> &str {
    device.split(',').next().unwrap_or(device).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcores_map_workers_and_keep_control_off_them() {
        let cfg = Config::default_config();
        let a = build(&cfg, &[0, 1], &["--log-level=7".into()]);
        let s = a.join(" ");
        assert!(s.contains("--lcores 0@(0),1@1"), "{s}");
        assert!(s.contains("--vdev=net_af_xdp0,iface=dp-c0"), "{s}");
        assert!(s.contains("--no-pci"));
        assert!(s.contains("--iova-mode=va"), "vdevs only: {s}");
        assert!(s.contains("--in-memory"));
        let chosen = build(&cfg, &[0, 1], &["--iova-mode=pa".into()]).join(" ");
        assert!(
            !chosen.contains("--iova-mode=va"),
            "the user's choice wins: {chosen}"
        );
        assert!(s.ends_with("--log-level=7"));
    }

    #[test]
    fn pci_devices_are_allowed_not_vdevs() {
        assert!(is_pci("0000:01:00.0"));
        assert!(is_pci("01:00.1,rx_queues=2"));
        assert!(!is_pci("net_af_xdp0,iface=eth0"));
        assert!(!is_pci("net_memif0,socket=/run/a:b.sock"));
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-1"), vec![0, 1]);
        assert_eq!(parse_cpu_list("0,2-4,7"), vec![0, 2, 3, 4, 7]);
        let cfg = Config::default_config();
        assert!(
            host_errors(&cfg, &[0])
                .iter()
                .any(|e| e.contains("workers.cores[0] = 1"))
        );
    }
}
