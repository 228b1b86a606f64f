//! The binary's command line, without DPDK: config checking and the stats client.

use e2e_tests::{dataplane_bin, sh_output};

#[test]
fn check_accepts_the_embedded_default() {
    let out = sh_output(&format!("{} --check", dataplane_bin().display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn check_reports_every_error_with_field_value_and_reason() {
    let dir = std::env::temp_dir().join(format!("dp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "workers: {cores: [1], burst_size: 999}\nports:\n  - {name: a, device: net_tap0, address: 2001:db8::1/64}\n  - {name: b, device: net_tap1, address: 10.0.0.1/24, mtu: 50}\nadmin: {socket: relative.sock}\n",
    )
    .unwrap();
    let out = sh_output(&format!(
        "{} --check --config {}",
        dataplane_bin().display(),
        bad.display()
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "workers.burst_size = 999: must be between 1 and 256",
        "ports[0].address = 2001:db8::1/64: IPv6 is not supported yet",
        "ports[1].mtu = 50",
        "admin.socket = relative.sock: must be an absolute path",
        "(4 errors)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_refuses_a_non_loopback_admin_address_unless_allowed() {
    let dir = std::env::temp_dir().join(format!("dp-cli-adm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base =
        "workers: {cores: [1]}\nports:\n  - {name: a, device: net_null0, address: 10.0.0.1/24}\n";
    let run = |admin: &str| {
        let f = dir.join("c.yaml");
        std::fs::write(&f, format!("{base}admin: {admin}\n")).unwrap();
        sh_output(&format!(
            "{} --check --config {}",
            dataplane_bin().display(),
            f.display()
        ))
    };
    let out = run("{socket: /run/dp-adm.sock, address: \"0.0.0.0:15000\"}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("admin.address = 0.0.0.0:15000: is not a loopback address")
            && err.contains("allow_non_loopback: true"),
        "{err}"
    );
    let out =
        run("{socket: /run/dp-adm.sock, address: \"0.0.0.0:15000\", allow_non_loopback: true}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin HTTP http://0.0.0.0:15000/"));
    let out = run("{socket: /run/dp-adm.sock, address: null}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin HTTP off"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stats_without_a_running_data_plane_says_so() {
    let out = sh_output(&format!(
        "{} stats --socket /nonexistent/dp.sock",
        dataplane_bin().display()
    ));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot reach the data plane's admin socket /nonexistent/dp.sock")
    );
}

#[test]
fn help_explains_the_commands() {
    let out = sh_output(&format!("{} --help", dataplane_bin().display()));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["--config", "--check", "stats", "default-config", "EAL"] {
        assert!(text.contains(want), "--help lacks {want}:\n{text}");
    }
}

#[test]
fn admin_socket_path_holding_a_file_is_never_replaced() {
    let dir = std::env::temp_dir().join(format!("dp-cli-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let victim = dir.join("not-a-socket");
    std::fs::write(&victim, "precious").unwrap();
    let cfg = dir.join("dp.yaml");
    let yaml = dataplane_config_with_socket(&victim);
    std::fs::write(&cfg, yaml).unwrap();
    let out = sh_output(&format!(
        "{} --config {}",
        dataplane_bin().display(),
        cfg.display()
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn dataplane_config_with_socket(path: &std::path::Path) -> String {
    format!(
        "workers: {{cores: [1]}}\nports:\n  - {{name: a, device: net_null0, address: 10.0.0.1/24}}\nadmin: {{socket: {}}}\n",
        path.display()
    )
}
