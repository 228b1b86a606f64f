//! End to end: the real binary on AF_XDP (and AF_PACKET) ports in namespaces,
//! kernel peers pinging it, malformed frames thrown at it, and a clean stop.

use std::time::Duration;

use e2e_tests::{
    Dataplane, Topology, netns_exists, require_root, serial, sh_output, two_port_config,
    unique_prefix,
};

fn ping(topo: &Topology, role: &str, dst: &str, count: u32) -> String {
    let out = topo.exec(role, &format!("ping -c {count} -i 0.2 -W 2 {dst}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ping {dst} from {role} failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn af_xdp_ping_arp_malformed_frames_and_clean_sigterm() {
    let _serial = serial();
    require_root();
    let prefix = unique_prefix("x");
    let topo = Topology::up(&prefix);
    // Hugepage files on disk (not --in-memory) so that their removal is shown.
    let mut dp = Dataplane::start(&topo, &two_port_config("af_xdp", false));
    assert!(
        topo.xdp_attached(&format!("{prefix}-c0")),
        "AF_XDP program should be attached while running"
    );
    assert!(
        !dp.eal_leftovers().is_empty(),
        "EAL should hold hugepage files while running (test is meaningless otherwise)"
    );

    // 1. The data plane resolves the client itself: the client knows our MAC
    //    statically and never ARPs, so the echo reply has to wait for our ARP.
    let mac = dp.port_mac(0);
    let out = topo.exec(
        "cli",
        &format!("ip neigh replace 10.10.1.1 lladdr {mac} dev cli0 nud permanent"),
    );
    assert!(out.status.success());
    let text = ping(&topo, "cli", "10.10.1.1", 3);
    assert!(text.contains("3 received"), "{text}");
    assert!(
        dp.total("arp_requests_tx") >= 1,
        "the data plane should have ARPed for 10.10.1.2"
    );
    assert!(
        dp.total("arp_replies_rx") >= 1,
        "and learned it from the kernel's reply"
    );
    assert_eq!(dp.total("arp_requests_rx"), 0, "the client never asked");
    let neigh = topo.exec("cli", "ip neigh show 10.10.1.1");
    assert!(String::from_utf8_lossy(&neigh.stdout).contains(&mac));

    // 2. The other port, with ordinary dynamic ARP from the kernel peer.
    ping(&topo, "up", "10.10.2.1", 3);
    assert!(dp.total("arp_requests_rx") >= 1);
    let echo_before = dp.total("icmp_echo_tx");

    // 3. Malformed frames: each counted under its reason; nothing answered.
    let tx_before = dp.total("tx_frames");
    let before = dp.stats()["totals"].clone();
    let out = topo.exec(
        "cli",
        &format!(
            "/usr/bin/python3 {}/tests/scripts/malformed.py cli0 {mac} 5",
            e2e_tests::root().display()
        ),
    );
    assert!(
        out.status.success(),
        "malformed.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Frames cross a veth and an AF_XDP ring: give them a moment.
    let mut after = dp.stats()["totals"].clone();
    for _ in 0..50 {
        let done = expected.as_object().unwrap().iter().all(|(k, n)| {
            after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0) >= n.as_u64().unwrap()
        });
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        after = dp.stats()["totals"].clone();
    }
    for (k, n) in expected.as_object().unwrap() {
        let got = after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
        assert_eq!(
            got,
            n.as_u64().unwrap(),
            "counter {k}: expected +{n}, got +{got}"
        );
    }
    assert_eq!(
        dp.total("tx_frames"),
        tx_before,
        "nothing malformed may be answered"
    );
    // Without harm: the stack still answers.
    ping(&topo, "cli", "10.10.1.1", 2);
    assert_eq!(dp.total("icmp_echo_tx"), echo_before + 2);

    // 4. SIGTERM: clean exit, XDP detached, no hugepage or runtime files, socket gone.
    let code = dp.terminate();
    assert_eq!(code, Some(0), "exit status after SIGTERM:\n{}", dp.log());
    assert!(dp.log().contains("stopped cleanly"), "{}", dp.log());
    for ifc in ["c0", "u0"] {
        assert!(
            !topo.xdp_attached(&format!("{prefix}-{ifc}")),
            "XDP program left on {prefix}-{ifc}"
        );
    }
    assert_eq!(
        dp.eal_leftovers(),
        Vec::<String>::new(),
        "EAL files left behind"
    );
    assert!(!dp.socket.exists(), "admin socket left behind");
    drop(dp);
    let names = [topo.ns("cli"), topo.ns("dut"), topo.ns("up")];
    drop(topo);
    for ns in names {
        assert!(!netns_exists(&ns), "namespace {ns} left behind");
    }
}

#[test]
fn af_packet_fallback_answers_ping() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let mut dp = Dataplane::start(&topo, &two_port_config("af_packet", true));
    let s = dp.stats();
    assert_eq!(s["ports"][0]["driver"], "net_af_packet");
    assert_eq!(
        s["ports"][0]["offloads"]["tx_multi_segs"], true,
        "af_packet takes chained mbufs"
    );
    ping(&topo, "cli", "10.10.1.1", 3);
    ping(&topo, "up", "10.10.2.1", 3);
    assert!(dp.total("icmp_echo_tx") >= 6);
    assert_eq!(dp.terminate(), Some(0), "{}", dp.log());
    assert_eq!(dp.eal_leftovers(), Vec::<String>::new());
}

#[test]
fn second_instance_on_the_same_admin_socket_is_refused() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("s"));
    let dp = Dataplane::start(&topo, &two_port_config("af_xdp", true));
    let cfg = dp.dir.join("dataplane.yaml");
    let out = sh_output(&format!(
        "{} --config {}",
        e2e_tests::dataplane_bin().display(),
        cfg.display()
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("in use by another running data plane"),
        "{err}"
    );
    // The first one is unharmed.
    ping(&topo, "cli", "10.10.1.1", 1);
}
