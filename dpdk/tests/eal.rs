//! The safe layer against a real EAL: mempool, mbuf operations, a loopback
//! port (net_ring), queue ownership, stats, and lcore launch.
//!
//! EAL starts once per process, so everything runs in one test function; the
//! binary holds no other test. No hugepages are needed (`--no-huge`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use dpdk::{Eal, EalError, Mempool, Port, PortConfig};

#[test]
fn safe_layer_against_a_real_eal() {
    let prefix = format!("dpdk-test-{}", std::process::id());
    let args = [
        "dpdk-test",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--file-prefix",
        &prefix,
        "--lcores",
        "0@(0-1),1@(0-1)",
        "--vdev=net_ring0",
        "--log-level=lib.eal:error",
    ];
    let eal = Eal::init(&args).expect("EAL starts without hugepages");
    assert!(
        matches!(Eal::init(&args), Err(EalError::AlreadyStarted)),
        "a second start must be refused"
    );
    assert_eq!(eal.worker_lcores(), vec![1]);

    let pool = Arc::new(Mempool::new(&eal, "t0", 1023, 0, 2176, -1).expect("mempool"));
    mbufs(&pool);
    port(&eal, &pool);
    launch(&eal);
    assert_eq!(pool.in_use(), 0, "every buffer came back");
    drop(pool);
    drop(eal);
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}

fn mbufs(pool: &Mempool) {
    let mut m = pool.alloc().unwrap();
    assert_eq!(
        (m.len(), m.pkt_len(), m.nb_segs(), m.headroom()),
        (0, 0, 1, 128)
    );
    assert_eq!(pool.in_use(), 1);
    let room = m.tailroom();
    assert_eq!(
        m.append(4).unwrap(),
        &[0, 0, 0, 0],
        "appended bytes are zeroed"
    );
    assert!(m.extend_from_slice(b"payload"));
    assert_eq!(m.prepend(2).unwrap(), &[0, 0], "prepended bytes are zeroed");
    m.data_mut()[..2].copy_from_slice(b"hd");
    assert_eq!(m.data(), b"hd\0\0\0\0payload");
    assert_eq!(m.tailroom(), room - 11);
    assert!(m.adj(2));
    assert!(m.trim(3));
    assert_eq!(m.data(), b"\0\0\0\0payl");
    m.truncate(5);
    assert_eq!(m.data(), b"\0\0\0\0p");
    assert!(!m.adj(100), "cannot strip more than there is");
    assert!(m.append(room + 1).is_none(), "no room is not a crash");
    assert!(m.prepend(200).is_none());

    // Chains.
    let mut tail = pool.alloc().unwrap();
    assert!(tail.extend_from_slice(b"-tail"));
    m.chain(tail).map_err(|_| "chain").unwrap();
    assert_eq!((m.nb_segs(), m.pkt_len(), m.len()), (2, 10, 5));
    let segs: Vec<&[u8]> = m.segments().collect();
    assert_eq!(segs, vec![&b"\0\0\0\0p"[..], &b"-tail"[..]]);
    assert!(m.linearize());
    assert_eq!((m.nb_segs(), m.data()), (1, &b"\0\0\0\0p-tail"[..]));
    assert_eq!(pool.in_use(), 1, "linearize freed the second segment");

    // Shared segments are never linked into (or linearised out of) a chain.
    let lone = pool.alloc().unwrap();
    let lone2 = lone.share();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut head = pool.alloc().unwrap();
        let _ = head.chain(lone2);
    }));
    assert!(r.is_err(), "chaining a shared segment must be refused");
    assert_eq!(
        lone.refcnt(),
        1,
        "the refused tail was freed once, not twice"
    );
    drop(lone);
    let mut c = pool.alloc().unwrap();
    assert!(c.extend_from_slice(b"a"));
    let mut t = pool.alloc().unwrap();
    assert!(t.extend_from_slice(b"b"));
    c.chain(t).map_err(|_| "chain").unwrap();
    let c2 = c.share();
    assert!(!c.linearize(), "a shared chain is not rewritten");
    assert_eq!(c.nb_segs(), 2);
    drop((c, c2));
    // An oversized append changes nothing (no u16 wrap-around).
    let mut big = pool.alloc().unwrap();
    assert!(big.append(65536 + 10).is_none());
    assert_eq!(big.len(), 0);
    drop(big);

    // Reference counts: shared buffers are read-only.
    let shared = m.share();
    assert_eq!((m.refcnt(), shared.refcnt()), (2, 2));
    assert!(!m.is_unique());
    assert_eq!(shared.data(), m.data());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.data_mut()[0] = 1;
    }));
    assert!(r.is_err(), "writing a shared buffer must be refused");
    drop(shared);
    assert!(m.is_unique());
    m.data_mut()[0] = 1;
    drop(m);

    external(pool);

    let mut v = Vec::new();
    assert!(pool.alloc_bulk(&mut v, 64));
    assert_eq!((v.len(), pool.in_use()), (64, 64));
    assert!(!pool.alloc_bulk(&mut v, 2000), "all or nothing");
    assert_eq!(v.len(), 64);
    dpdk::mbuf::free_bulk(&mut v);
    assert_eq!(pool.in_use(), 0);
}

/// Owner of `Bytes` memory that records when it is released.
struct Watched(Vec<u8>, Arc<AtomicBool>);

impl AsRef<[u8]> for Watched {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.1.store(true, Ordering::SeqCst);
    }
}

/// `Bytes` chained as external segments: no copy, released with the segment.
fn external(pool: &Mempool) {
    let released = Arc::new(AtomicBool::new(false));
    let payload = Bytes::from_owner(Watched(b"external payload".to_vec(), released.clone()));
    let mut head = pool.alloc().unwrap();
    assert!(head.extend_from_slice(b"hdr:"));
    head.attach_external(payload.slice(9..)).expect("attach");
    let segs: Vec<&[u8]> = head.segments().collect();
    assert_eq!(segs, vec![&b"hdr:"[..], &b"payload"[..]]);
    assert_eq!(
        segs[1].as_ptr(),
        payload[9..].as_ptr(),
        "the segment points at the Bytes' memory: no copy"
    );
    assert_eq!((head.nb_segs(), head.pkt_len(), pool.in_use()), (2, 11, 2));
    drop(payload);
    assert!(
        !released.load(Ordering::SeqCst),
        "the segment holds the bytes"
    );
    assert!(head.append(1).is_none(), "no tailroom in borrowed memory");
    drop(head);
    assert!(
        released.load(Ordering::SeqCst),
        "freeing the chain releases them"
    );
    assert_eq!(pool.in_use(), 0);

    // Linearising copies out and releases the external memory at once.
    released.store(false, Ordering::SeqCst);
    let mut head = pool.alloc().unwrap();
    let payload = Bytes::from_owner(Watched(b"abc".to_vec(), released.clone()));
    head.attach_external(payload).expect("attach");
    assert!(head.linearize());
    assert!(released.load(Ordering::SeqCst));
    assert_eq!((head.nb_segs(), head.data()), (1, &b"abc"[..]));
    drop(head);

    let mut head = pool.alloc().unwrap();
    let empty = head.attach_external(Bytes::new());
    assert!(empty.is_err(), "nothing to attach");
    let huge = head.attach_external(Bytes::from(vec![0; 70_000]));
    assert_eq!(huge.map_err(|b| b.len()), Err(70_000), "given back whole");
    assert_eq!(head.nb_segs(), 1);
}

fn port(eal: &Eal, pool: &Arc<Mempool>) {
    let id = Port::lookup(eal, "net_ring0").unwrap();
    let caps = Port::capabilities(eal, id).unwrap();
    assert_eq!(caps.driver, "net_ring");
    let err = Port::lookup(eal, "net_nope0").unwrap_err().to_string();
    assert!(
        err.contains("EAL has no such device") && err.contains("net_ring0"),
        "{err}"
    );

    let cfg = PortConfig {
        queues: 1,
        rx_descriptors: 256,
        tx_descriptors: 256,
        ..PortConfig::default()
    };
    let p = Port::start(eal, "net_ring0", &cfg, std::slice::from_ref(pool)).unwrap();
    assert!(p.link().up);
    let mut rx = p.rx_queue(0).unwrap();
    assert!(p.rx_queue(0).is_none(), "a queue is handed out once");
    assert!(p.rx_queue(1).is_none());
    let mut tx = p.tx_queue(0, 4).unwrap();
    assert!(p.tx_queue(0, 4).is_none());

    // net_ring loops TX back to RX.
    for i in 0..6u8 {
        let mut m = pool.alloc().unwrap();
        assert!(m.extend_from_slice(&[i; 60]));
        tx.push(m); // a full batch of 4 goes out by itself
    }
    assert_eq!(tx.pending(), 2);
    tx.flush();
    assert_eq!((tx.sent(), tx.dropped(), tx.pending()), (6, 0, 0));
    let mut got = Vec::new();
    assert_eq!(rx.burst(&mut got, 32), 6);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.data(), &[i as u8; 60]);
    }
    let st = p.stats();
    assert_eq!((st.tx_packets, st.rx_packets), (6, 6));
    assert!(!p.xstats().is_empty());
    got.clear();
    drop((rx, tx));
    drop(p);
}

fn launch(eal: &Eal) {
    assert!(
        eal.launch(0, || 0).is_err(),
        "the main lcore is not a worker"
    );
    assert!(eal.launch(4000, || 0).is_err(), "no such lcore");
    assert_eq!(eal.lcore_socket(4000), -1);
    let e2 = eal.clone();
    let from_other_thread =
        std::thread::spawn(move || e2.launch(1, || 0).err().map(|e| e.to_string()))
            .join()
            .unwrap();
    assert!(from_other_thread.unwrap().contains("only the main lcore"));
    let h = eal.launch(1, || 7).unwrap();
    assert_eq!(h.lcore(), 1);
    assert_eq!(h.join(), 7);
    let h = eal.launch(1, || panic!("worker panics")).unwrap();
    assert_eq!(
        h.join(),
        -1,
        "a panic on an lcore is reported, not unwound into C"
    );
    assert!(dpdk::eal::current_lcore() == Some(0));
}
