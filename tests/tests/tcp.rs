//! Our TCP against the Linux kernel's, through DPDK: the data plane's test
//! services (echo, discard, source) exercised by kernel clients in the client
//! namespace, byte-exact with sha256, also under loss injected by nftables.

use e2e_tests::{
    Background, Dataplane, Impairer, Topology, require_root, serial, sh, tcp_client,
    two_port_config, two_worker_af_packet_config, unique_prefix,
};

const SERVICES: &str = "services:\n  - {kind: echo, port: 7}\n  - {kind: discard, port: 9}\n  - {kind: source, port: 19}\n";

/// Connections still held after waiting up to 5 s for them to close
/// (TIME_WAIT is 1 s; counters are published per timer tick).
fn connections_after_close(dp: &Dataplane) -> u64 {
    let mut left = u64::MAX;
    for _ in 0..50 {
        left = dp.total("tcp_connections");
        if left == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    left
}

fn start(topo: &Topology, driver: &str) -> Dataplane {
    Dataplane::start(
        topo,
        &format!("{}{SERVICES}", two_port_config(driver, true)),
    )
}

#[test]
fn kernel_clients_against_our_tcp_on_af_xdp() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("x"));
    let mut dp = start(&topo, "af_xdp");
    let r = tcp_client(&topo, "echo 10.10.1.1 7 8000000");
    assert_eq!(r["received"], 8_000_000);
    tcp_client(&topo, "source 10.10.1.1 19 8000000");
    tcp_client(&topo, "discard 10.10.1.1 9 3000000");
    // A closed port is refused with our RST, at once.
    let out = topo.exec("cli", "nc -z -w 3 10.10.1.1 8080");
    assert!(!out.status.success());
    let s = dp.stats();
    let svc = &s["workers"][0]["services"];
    assert_eq!(svc["echo_bytes"], 8_000_000);
    assert_eq!(svc["discard_bytes"], 3_000_000);
    assert!(svc["source_bytes"].as_u64().unwrap() >= 8_000_000);
    assert!(
        dp.total("tcp_resets_sent") >= 1,
        "the closed port answered with RST"
    );
    assert_eq!(dp.total("tcp_bad_checksum"), 0);
    // AF_XDP in DPDK 22.11 sends single buffers: payload is copied once, by
    // us, and counted; received payload is still kept by reference.
    assert!(dp.total("tcp_tx_copied_single_segment") > 1000);
    assert_eq!(dp.total("tcp_tx_zero_copy"), 0);
    assert!(dp.total("tcp_rx_zero_copy") > 1000);
    // No stuck connections: everything closes.
    assert_eq!(
        connections_after_close(&dp),
        0,
        "connections left open (TIME_WAIT is 1 s)"
    );
    assert_eq!(dp.terminate(), Some(0), "{}", dp.log());
}

#[test]
fn three_thousand_concurrent_kernel_connections() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("x"));
    let dp = start(&topo, "af_xdp");
    let r = tcp_client(&topo, "many 10.10.1.1 7 3000 2000");
    assert_eq!(r["good"], 3000, "{r}");
    assert!(dp.total("tcp_accepted") >= 3000);
    assert_eq!(dp.total("tcp_backlog_full"), 0);
}

#[test]
fn byte_exact_under_two_percent_loss_both_ways() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("x"));
    let dp = start(&topo, "af_xdp");
    // Loss on the kernel peer's side (AF_XDP transmits past our own qdisc).
    let rules = "nft add table inet chaos && \
        nft add chain inet chaos in '{ type filter hook input priority 0; }' && \
        nft add chain inet chaos out '{ type filter hook output priority 0; }' && \
        nft add rule inet chaos in ip protocol tcp numgen random mod 100 '<' 2 drop && \
        nft add rule inet chaos out ip protocol tcp numgen random mod 100 '<' 2 drop";
    let out = topo.exec("cli", rules);
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = tcp_client(&topo, "echo 10.10.1.1 7 4000000");
    assert_eq!(r["received"], 4_000_000);
    tcp_client(&topo, "source 10.10.1.1 19 4000000");
    // Totals are published when connections end (TIME_WAIT is 1 s).
    let mut retransmits = 0;
    for _ in 0..50 {
        retransmits = dp.total("tcp_retransmits");
        if dp.total("tcp_connections") == 0 && retransmits > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        dp.total("tcp_connections"),
        0,
        "no connection stuck after the transfers"
    );
    assert!(
        retransmits > 0,
        "2% loss must have been repaired by retransmission"
    );
    assert!(
        dp.total("tcp_fast_retransmits") > 0,
        "and fast retransmit did some of it"
    );
}

/// Reordering, duplication, delay and some loss from our seeded forwarder
/// between the kernel client and the data plane (both directions).
#[test]
fn byte_exact_through_reordering_duplication_and_delay() {
    let _serial = serial();
    require_root();
    let topo = Topology::up_impaired(&unique_prefix("i"));
    let dp = start(&topo, "af_xdp");
    let imp = Impairer::start(
        &topo,
        "--seed 7 --drop 0.01 --dup 0.02 --reorder 0.05 --delay-ms 1 --jitter-ms 0.5",
    );
    let r = tcp_client(&topo, "echo 10.10.1.1 7 3000000");
    assert_eq!(r["received"], 3_000_000);
    tcp_client(&topo, "source 10.10.1.1 19 3000000");
    assert_eq!(connections_after_close(&dp), 0, "no connection stuck");
    let s = imp.finish();
    for dir in ["a_to_b", "b_to_a"] {
        for k in ["dropped", "duplicated", "reordered", "delayed"] {
            assert!(s[dir][k].as_u64().unwrap_or(0) > 0, "{dir}.{k}: {s}");
        }
    }
    assert!(dp.total("tcp_retransmits") > 0, "the drops were repaired");
}

#[test]
fn kernel_clients_against_our_tcp_on_af_packet() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("p"));
    let mut dp = start(&topo, "af_packet");
    tcp_client(&topo, "echo 10.10.1.1 7 4000000");
    tcp_client(&topo, "source 10.10.1.1 19 2000000");
    // AF_PACKET takes chained mbufs: full-sized payload went out attached
    // behind the headers, never copied by us (the kernel client sends
    // full-sized segments, and the echo returns the very receive buffers).
    let s = dp.stats();
    let t = |k: &str| s["totals"][k].as_u64().unwrap_or(0);
    assert!(t("tcp_rx_zero_copy") > 1000, "{}", s["totals"]);
    assert!(t("tcp_tx_zero_copy") > 2000, "{}", s["totals"]);
    assert_eq!(t("tcp_tx_copied_single_segment"), 0);
    assert_eq!(t("tcp_tx_copied_unattachable"), 0, "{}", s["totals"]);
    assert!(
        t("tcp_tx_copied_bytes") < 6_000_000 / 20,
        "only short tails are copied: {}",
        s["totals"]
    );
    assert_eq!(dp.terminate(), Some(0), "{}", dp.log());
}

/// Issue 18, point 1: a kernel receiver that stops reading shuts our
/// window; we probe it (the kernel answers our one-byte data probes) and,
/// once it reads again, carry on from where we were: every byte in order,
/// no retransmission timeout.
#[test]
fn a_kernel_receiver_that_stops_reading_is_probed_and_resumed() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("x"));
    let mut dp = start(&topo, "af_xdp");
    let r = tcp_client(&topo, "stall 10.10.1.1 19 4000000 3");
    assert!(r["received"].as_u64().unwrap() >= 4_000_000, "{r}");
    assert!(
        r["seconds_after_stall"].as_f64().unwrap() < 5.0,
        "resumed at once: {r}"
    );
    assert_eq!(connections_after_close(&dp), 0);
    let probes = dp.total("tcp_zero_window_probes");
    // Back-off from an RTO of at least 50 ms (min_rto): 0.05 + 0.1 + ... s.
    assert!((1..=8).contains(&probes), "{probes} probes in 3 s");
    assert_eq!(dp.total("tcp_rto_expirations"), 0);
    assert_eq!(dp.terminate(), Some(0), "{}", dp.log());
}

#[test]
fn a_tiny_backlog_still_completes_kernel_handshakes_with_syn_cookies() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("x"));
    let dp = Dataplane::start(
        &topo,
        &format!(
            "{}{SERVICES}tcp: {{backlog: 1}}\n",
            two_port_config("af_xdp", true)
        ),
    );
    // Every SYN-ACK, cookie or not, as the kernel client saw it.
    let pcap = std::env::temp_dir().join(format!("syn-ack-{}.pcap", std::process::id()));
    let pcap_path = pcap.display().to_string();
    let mut dump = Background::start(
        &topo,
        "cli",
        &[
            "tcpdump",
            "-i",
            "cli0",
            "-U",
            "-w",
            &pcap_path,
            "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack != 0",
        ],
        None,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !pcap.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "tcpdump did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // 100 kB each way per connection, past what a 64 KiB window allows.
    let r = tcp_client(&topo, "many 10.10.1.1 7 500 100000 burst");
    assert_eq!(r["good"], 500, "{r}");
    dump.kill();
    let text = sh(&format!("tcpdump -nn -r {pcap_path} 2>/dev/null"));
    let _ = std::fs::remove_file(&pcap);
    let syn_acks: Vec<&str> = text.lines().collect();
    assert!(syn_acks.len() >= 500, "{} SYN-ACKs seen", syn_acks.len());
    // Cookies keep the kernel's options (issue 18, point 1): window
    // scaling, SACK and timestamps ride in the cookie SYN-ACK's TSval.
    for l in &syn_acks {
        assert!(
            l.contains("wscale") && l.contains("sackOK") && l.contains("TS val"),
            "a SYN-ACK without the options: {l}"
        );
    }
    assert!(
        dp.total("tcp_syn_cookies_sent") > 0,
        "the backlog overflowed"
    );
    assert!(
        dp.total("tcp_syn_cookies_accepted") > 0,
        "and cookies completed handshakes"
    );
    assert_eq!(dp.total("tcp_syn_cookies_invalid"), 0);
}

/// Two worker cores on a device without RSS (af_packet with two queue pairs:
/// the kernel spreads flows over them by a hash of its own). Software
/// steering passes each segment to the core that owns its connection; both
/// cores serve connections and none is lost or reset between them.
#[test]
fn two_workers_share_connections_through_software_steering() {
    let _serial = serial();
    require_root();
    let topo = Topology::up(&unique_prefix("s"));
    let cfg = two_worker_af_packet_config();
    let mut dp = Dataplane::start(&topo, &format!("{cfg}{SERVICES}"));
    let r = tcp_client(&topo, "many 10.10.1.1 7 1000 2000");
    assert_eq!(r["good"], 1000, "{r}");
    let r = tcp_client(&topo, "echo 10.10.1.1 7 4000000");
    assert_eq!(r["received"], 4_000_000);
    // A segment that met a core not owning its connection would reset a
    // live connection, and then a client above would have failed: every
    // one of the 1 000 and the echo completed. The RSTs seen here (one or
    // two in about one run in ten, with the data plane of before the proxy
    // crate change as with this one) most likely answer segments that
    // arrive after their connection ended, as Linux answers them:
    // af_packet's fanout can roll a flow's packets over to the other queue,
    // and a segment that takes the steering ring can then arrive after a
    // later one that came straight. Not yet proven: see the closing note
    // of issue 12. (The source run below adds more: its client closes
    // with data unread.)
    let early_resets = dp.total("tcp_resets_sent");
    assert!(
        early_resets <= 5,
        "{early_resets} RSTs for 1 002 connections: more than late segments explain"
    );
    tcp_client(&topo, "source 10.10.1.1 19 2000000");

    let s = dp.stats();
    let workers = s["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let accepted: Vec<u64> = workers
        .iter()
        .map(|w| w["services"]["accepted"].as_u64().unwrap())
        .collect();
    assert_eq!(accepted.iter().sum::<u64>(), 1002, "{accepted:?}");
    assert!(
        accepted.iter().all(|&n| n > 300),
        "both cores own connections: {accepted:?}"
    );
    let t = |k: &str| s["totals"][k].as_u64().unwrap_or(0);
    eprintln!(
        "accepted per core {accepted:?}, steered {} in {} (ring full {}), rx packets per core {:?}",
        t("steered_out"),
        t("steered_in"),
        t("steer_ring_full"),
        workers
            .iter()
            .map(|w| w["loop"]["rx_packets"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>()
    );
    assert!(t("steered_out") > 0, "{}", s["totals"]);
    assert_eq!(t("steered_out"), t("steered_in") + t("steer_ring_full"));
    assert_eq!(t("steer_ring_full"), 0);
    assert_eq!(connections_after_close(&dp), 0, "no connection stuck");
    assert_eq!(dp.terminate(), Some(0), "{}", dp.log());
}
