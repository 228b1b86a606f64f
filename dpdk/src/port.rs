//! Ethernet ports and their per-core queues.

use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex};

use crate::{Eal, Error, Mbuf, Mempool};

use dpdk_sys as sys;

/// How to bring a port up.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// RX/TX queue pairs (one per worker core).
    pub queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// Set the MTU before start (None keeps the device default).
    pub mtu: Option<u16>,
    /// Spread flows over queues with RSS when the device offers it and there
    /// is more than one queue.
    pub rss: bool,
    /// 40-byte Toeplitz key, or None for the device default.
    pub rss_key: Option<Vec<u8>>,
    /// TX offloads to enable if the device offers them (`RTE_ETH_TX_OFFLOAD_*`);
    /// those it lacks are left off, see [`Port::enabled_tx_offloads`].
    pub tx_offloads: u64,
    /// RX offloads to enable if offered (`RTE_ETH_RX_OFFLOAD_*`).
    pub rx_offloads: u64,
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mtu: None,
            rss: true,
            rss_key: None,
            tx_offloads: TX_MULTI_SEGS | TX_IPV4_CKSUM | TX_TCP_CKSUM | TX_UDP_CKSUM,
            rx_offloads: RX_IPV4_CKSUM | RX_TCP_CKSUM | RX_UDP_CKSUM,
            promiscuous: false,
        }
    }
}

pub const TX_MULTI_SEGS: u64 = sys::RTE_ETH_TX_OFFLOAD_MULTI_SEGS as u64;
pub const TX_IPV4_CKSUM: u64 = sys::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM as u64;
pub const TX_TCP_CKSUM: u64 = sys::RTE_ETH_TX_OFFLOAD_TCP_CKSUM as u64;
pub const TX_UDP_CKSUM: u64 = sys::RTE_ETH_TX_OFFLOAD_UDP_CKSUM as u64;
pub const TX_TCP_TSO: u64 = sys::RTE_ETH_TX_OFFLOAD_TCP_TSO as u64;
pub const RX_IPV4_CKSUM: u64 = sys::RTE_ETH_RX_OFFLOAD_IPV4_CKSUM as u64;
pub const RX_TCP_CKSUM: u64 = sys::RTE_ETH_RX_OFFLOAD_TCP_CKSUM as u64;
pub const RX_UDP_CKSUM: u64 = sys::RTE_ETH_RX_OFFLOAD_UDP_CKSUM as u64;
const RSS_WANTED: u64 = (sys::RTE_ETH_RSS_IP | sys::RTE_ETH_RSS_TCP | sys::RTE_ETH_RSS_UDP) as u64;

/// What a device can do (from `rte_eth_dev_info_get`).
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rx_offloads: u64,
    pub tx_offloads: u64,
    /// RSS hash types supported (0: no RSS).
    pub rss_offloads: u64,
    pub reta_size: u16,
    pub rss_key_size: u8,
    pub min_mtu: u16,
    pub max_mtu: u16,
}

impl Capabilities {
    pub fn tx_multi_segs(&self) -> bool {
        self.tx_offloads & TX_MULTI_SEGS != 0
    }
    pub fn tx_tso(&self) -> bool {
        self.tx_offloads & TX_TCP_TSO != 0
    }
    pub fn tx_ipv4_cksum(&self) -> bool {
        self.tx_offloads & TX_IPV4_CKSUM != 0
    }
    pub fn tx_l4_cksum(&self) -> bool {
        self.tx_offloads & (TX_TCP_CKSUM | TX_UDP_CKSUM) == (TX_TCP_CKSUM | TX_UDP_CKSUM)
    }
    pub fn rx_ipv4_cksum(&self) -> bool {
        self.rx_offloads & RX_IPV4_CKSUM != 0
    }
    pub fn rx_l4_cksum(&self) -> bool {
        self.rx_offloads & (RX_TCP_CKSUM | RX_UDP_CKSUM) == (RX_TCP_CKSUM | RX_UDP_CKSUM)
    }
    pub fn rss(&self) -> bool {
        self.rss_offloads != 0
    }
}

/// A device's RSS set-up, as [`Port::rss_layout`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RssLayout {
    pub key: Vec<u8>,
    pub reta: Vec<u16>,
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Basic counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Dropped by the device because no RX descriptor was free.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// A started Ethernet port. Clone-free: hand out queues, keep this for control.
///
/// The device is stopped and closed (for AF_XDP: the XDP program detached)
/// when the `Port` and every queue taken from it are dropped.
#[derive(Debug)]
pub struct Port {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    id: u16,
    name: String,
    caps: Capabilities,
    tx_offloads: u64,
    rx_offloads: u64,
    rss_enabled: bool,
    queues: u16,
    /// Serialises control-path calls (stats, link, xstats) from admin threads.
    control: Mutex<Taken>,
    // Field order matters for drop: pools outlive the device.
    _pools: Vec<Arc<Mempool>>,
    _eal: Eal,
}

#[derive(Debug)]
struct Taken {
    rx: Vec<bool>,
    tx: Vec<bool>,
}

// SAFETY: the port id is a plain index; control calls go through the mutex,
// and the data path is only reachable through the single-owner queue handles.
unsafe impl Send for Shared {}
// SAFETY: see Send.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: no queue handle is left (each holds an Arc to us), so no core
        // is polling the device.
        unsafe {
            let _ = sys::rte_eth_dev_stop(self.id);
            let _ = sys::rte_eth_dev_close(self.id);
        }
    }
}

impl Port {
    /// Find the port EAL created for device `name` (the part of a `--vdev` or
    /// PCI argument before the first comma, e.g. `net_af_xdp0`, `0000:01:00.0`).
    pub fn lookup(_eal: &Eal, name: &str) -> crate::Result<u16> {
        let c = CString::new(name).map_err(|_| Error::other("port lookup", "name contains NUL"))?;
        let mut id = 0u16;
        // SAFETY: EAL is initialised; c is NUL-terminated; id is a valid out pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        if rc != 0 {
            let known = Self::all_names();
            let known = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            return Err(Error::other(
                format!("port {name}"),
                format!(
                    "EAL has no such device (ports it created: {known}); if it was given as --vdev/-a, \
                     its driver refused the arguments: see the EAL/PMD messages logged above"
                ),
            ));
        }
        Ok(id)
    }

    /// Names of every port EAL probed.
    pub fn all_names() -> Vec<String> {
        let mut out = Vec::new();
        let mut id = 0u16;
        loop {
            // SAFETY: iterates ethdev's port table; returns >= RTE_MAX_ETHPORTS at the end.
            id = unsafe { sys::dp_eth_find_next(id) };
            if u32::from(id) >= sys::RTE_MAX_ETHPORTS {
                return out;
            }
            out.push(port_name(id));
            id += 1;
        }
    }

    /// Device capabilities, before configuring it.
    pub fn capabilities(_eal: &Eal, id: u16) -> crate::Result<Capabilities> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid out pointer; DPDK validates the id.
        let rc = unsafe { sys::rte_eth_dev_info_get(id, &mut info) };
        if rc != 0 {
            return Err(Error::from_code(
                format!("rte_eth_dev_info_get(port {id})"),
                rc,
            ));
        }
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: driver_name is a static string of the PMD.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(Capabilities {
            driver,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rx_offloads: info.rx_offload_capa,
            tx_offloads: info.tx_offload_capa,
            rss_offloads: info.flow_type_rss_offloads,
            reta_size: info.reta_size,
            rss_key_size: info.hash_key_size,
            min_mtu: info.min_mtu,
            max_mtu: info.max_mtu,
        })
    }

    /// Configure device `name` with `cfg.queues` queue pairs, queue `i`
    /// receiving into `pools[i]`, and start it.
    pub fn start(
        eal: &Eal,
        name: &str,
        cfg: &PortConfig,
        pools: &[Arc<Mempool>],
    ) -> crate::Result<Port> {
        let id = Self::lookup(eal, name)?;
        let caps = Self::capabilities(eal, id)?;
        let fail = |what: &str, rc: i32| Error::from_code(format!("port {name}: {what}"), rc);
        let q = cfg.queues;
        if q == 0 || q > caps.max_rx_queues || q > caps.max_tx_queues {
            return Err(Error::other(
                format!("port {name}"),
                format!(
                    "{q} queue pairs asked, device {} offers {} RX / {} TX (for AF_XDP on veth, raise channels with `ethtool -L IF rx N tx N`)",
                    caps.driver, caps.max_rx_queues, caps.max_tx_queues
                ),
            ));
        }
        if pools.len() != q as usize {
            return Err(Error::other(
                format!("port {name}"),
                "need one mempool per queue",
            ));
        }

        let mut conf = sys::rte_eth_conf::default();
        let tx_offloads = cfg.tx_offloads & caps.tx_offloads;
        let rx_offloads = cfg.rx_offloads & caps.rx_offloads;
        conf.txmode.offloads = tx_offloads;
        conf.rxmode.offloads = rx_offloads;
        let rss_enabled = cfg.rss && q > 1 && caps.rss();
        let mut key = cfg.rss_key.clone().unwrap_or_default();
        if rss_enabled {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = RSS_WANTED & caps.rss_offloads;
            if !key.is_empty() {
                conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
                conf.rx_adv_conf.rss_conf.rss_key_len = key.len() as u8;
            }
        }
        // SAFETY: valid id and conf; key outlives the call (DPDK copies it).
        let rc = unsafe { sys::rte_eth_dev_configure(id, q, q, &conf) };
        if rc != 0 {
            return Err(fail("rte_eth_dev_configure", rc));
        }
        // From here a failure must close the device again: a half set-up
        // AF_XDP port keeps its XDP program on the interface and blackholes it.
        let guard = CloseOnError(Some(id));
        let (mut nrx, mut ntx) = (cfg.rx_descriptors, cfg.tx_descriptors);
        // SAFETY: valid id and out pointers.
        let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nrx, &mut ntx) };
        if rc != 0 {
            return Err(fail("rte_eth_dev_adjust_nb_rx_tx_desc", rc));
        }
        if let Some(mtu) = cfg.mtu {
            // SAFETY: valid id.
            let rc = unsafe { sys::rte_eth_dev_set_mtu(id, mtu) };
            if rc != 0 {
                return Err(fail(&format!("set MTU {mtu}"), rc));
            }
        }
        // SAFETY: valid id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 {
            sys::SOCKET_ID_ANY
        } else {
            socket
        } as u32;
        for (i, pool) in pools.iter().enumerate() {
            // SAFETY: valid id/queue; NULL confs pick the device defaults with
            // the port-level offloads configured above; the pool outlives the
            // port (Shared keeps it).
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(
                    id,
                    i as u16,
                    nrx,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if rc != 0 {
                return Err(fail(&format!("rx queue {i} setup"), rc));
            }
            // SAFETY: as above.
            let rc =
                unsafe { sys::rte_eth_tx_queue_setup(id, i as u16, ntx, socket, std::ptr::null()) };
            if rc != 0 {
                return Err(fail(&format!("tx queue {i} setup"), rc));
            }
        }
        if cfg.promiscuous {
            // SAFETY: valid id. Not every PMD supports it; ignore failure.
            unsafe { sys::rte_eth_promiscuous_enable(id) };
        }
        // SAFETY: configured above.
        let rc = unsafe { sys::rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(fail("start", rc));
        }
        guard.disarm();
        Ok(Port {
            shared: Arc::new(Shared {
                id,
                name: name.to_owned(),
                caps,
                tx_offloads,
                rx_offloads,
                rss_enabled,
                queues: q,
                control: Mutex::new(Taken {
                    rx: vec![false; q as usize],
                    tx: vec![false; q as usize],
                }),
                _pools: pools.to_vec(),
                _eal: eal.clone(),
            }),
        })
    }

    pub fn id(&self) -> u16 {
        self.shared.id
    }

    /// How the device spreads received packets over queues, read back from
    /// it: the Toeplitz key and the redirection table (entry `i` names the
    /// queue of hashes `≡ i` modulo its length). `None` without RSS.
    pub fn rss_layout(&self) -> Option<RssLayout> {
        if !self.shared.rss_enabled {
            return None;
        }
        let id = self.shared.id;
        let caps = &self.shared.caps;
        let mut key = vec![0u8; usize::from(caps.rss_key_size.max(40))];
        let mut conf = sys::rte_eth_rss_conf {
            rss_key: key.as_mut_ptr(),
            rss_key_len: key.len() as u8,
            ..Default::default()
        };
        // SAFETY: valid port id; `conf.rss_key` points at `rss_key_len` bytes.
        if unsafe { sys::rte_eth_dev_rss_hash_conf_get(id, &mut conf) } != 0 {
            return None;
        }
        key.truncate(usize::from(conf.rss_key_len));
        let size = usize::from(caps.reta_size);
        let group = sys::RTE_ETH_RETA_GROUP_SIZE as usize;
        let mut groups = vec![sys::rte_eth_rss_reta_entry64::default(); size.div_ceil(group)];
        for g in &mut groups {
            g.mask = u64::MAX;
        }
        if size == 0 {
            return None;
        }
        // SAFETY: `groups` covers `reta_size` entries, as the call requires.
        let rc =
            unsafe { sys::rte_eth_dev_rss_reta_query(id, groups.as_mut_ptr(), caps.reta_size) };
        if rc != 0 {
            return None;
        }
        let reta = groups.iter().flat_map(|g| g.reta).take(size).collect();
        Some(RssLayout { key, reta })
    }
    pub fn name(&self) -> &str {
        &self.shared.name
    }
    pub fn capabilities_of(&self) -> &Capabilities {
        &self.shared.caps
    }
    pub fn enabled_tx_offloads(&self) -> u64 {
        self.shared.tx_offloads
    }
    pub fn enabled_rx_offloads(&self) -> u64 {
        self.shared.rx_offloads
    }
    pub fn rss_enabled(&self) -> bool {
        self.shared.rss_enabled
    }
    pub fn queues(&self) -> u16 {
        self.shared.queues
    }

    /// Take the RX handle of queue `q`; `None` if out of range or already taken.
    pub fn rx_queue(&self, q: u16) -> Option<RxQueue> {
        let mut t = self.shared.control.lock().unwrap();
        let slot = t.rx.get_mut(q as usize)?;
        if std::mem::replace(slot, true) {
            return None;
        }
        Some(RxQueue {
            id: self.shared.id,
            q,
            _port: self.shared.clone(),
        })
    }

    /// Take the TX handle of queue `q`, batching up to `batch` packets per burst.
    pub fn tx_queue(&self, q: u16, batch: usize) -> Option<TxQueue> {
        let mut t = self.shared.control.lock().unwrap();
        let slot = t.tx.get_mut(q as usize)?;
        if std::mem::replace(slot, true) {
            return None;
        }
        let batch = batch.clamp(1, 512);
        Some(TxQueue {
            id: self.shared.id,
            q,
            multi_segs: self.shared.tx_offloads & TX_MULTI_SEGS != 0,
            unsendable: 0,
            batch,
            pending: Vec::with_capacity(batch),
            sent: 0,
            dropped: 0,
            _port: self.shared.clone(),
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        let mut a = sys::rte_ether_addr::default();
        let _g = self.shared.control.lock().unwrap();
        // SAFETY: valid id and out pointer.
        unsafe { sys::rte_eth_macaddr_get(self.shared.id, &mut a) };
        a.addr_bytes
    }

    pub fn link(&self) -> Link {
        let mut l = sys::rte_eth_link::default();
        let _g = self.shared.control.lock().unwrap();
        // SAFETY: valid id and out pointer; does not wait.
        unsafe { sys::rte_eth_link_get_nowait(self.shared.id, &mut l) };
        link_from(&l)
    }

    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        let _g = self.shared.control.lock().unwrap();
        // SAFETY: valid id and out pointer.
        unsafe { sys::rte_eth_stats_get(self.shared.id, &mut s) };
        PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Driver-specific extended counters, by name.
    pub fn xstats(&self) -> Vec<(String, u64)> {
        let id = self.shared.id;
        let _g = self.shared.control.lock().unwrap();
        // SAFETY: a NULL/0 query returns the count.
        let n = unsafe { sys::rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0) };
        if n <= 0 {
            return Vec::new();
        }
        let mut names = vec![sys::rte_eth_xstat_name::default(); n as usize];
        let mut vals = vec![sys::rte_eth_xstat::default(); n as usize];
        // SAFETY: both arrays hold n entries.
        let (a, b) = unsafe {
            (
                sys::rte_eth_xstats_get_names(id, names.as_mut_ptr(), n as u32),
                sys::rte_eth_xstats_get(id, vals.as_mut_ptr(), n as u32),
            )
        };
        if a != n || b != n {
            return Vec::new();
        }
        vals.iter()
            .filter_map(|v| {
                let name = names.get(v.id as usize)?;
                // SAFETY: DPDK writes NUL-terminated names into the fixed array.
                let s = unsafe { CStr::from_ptr(name.name.as_ptr()) }
                    .to_string_lossy()
                    .into_owned();
                Some((s, v.value))
            })
            .collect()
    }
}

/// Closes a configured device unless disarmed.
struct CloseOnError(Option<u16>);

impl CloseOnError {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnError {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            // SAFETY: the device was configured by us and no queue handle exists.
            unsafe { sys::rte_eth_dev_close(id) };
        }
    }
}

fn port_name(id: u16) -> String {
    let mut buf = [0 as std::ffi::c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf is RTE_ETH_NAME_MAX_LEN long, as DPDK requires.
    let rc = unsafe { sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
    if rc != 0 {
        return format!("port{id}");
    }
    // SAFETY: NUL-terminated on success.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn link_from(l: &sys::rte_eth_link) -> Link {
    Link {
        up: l.link_status() != 0,
        speed_mbps: l.link_speed,
        full_duplex: l.link_duplex() != 0,
    }
}

// === impl RxQueue ===

/// The receive side of one queue; owned by one core.
#[derive(Debug)]
pub struct RxQueue {
    id: u16,
    q: u16,
    _port: Arc<Shared>,
}

impl RxQueue {
    /// Receive up to `max` packets, appended to `out`. Returns how many.
    #[inline]
    pub fn burst(&mut self, out: &mut Vec<Mbuf>, max: u16) -> usize {
        out.reserve(max as usize);
        let spare = out.spare_capacity_mut();
        // SAFETY: this handle is the only user of (port, queue) — &mut self and
        // single issue of handles; `spare` has room for `max` pointers and Mbuf
        // is repr(transparent) over the pointer.
        let n = unsafe { sys::rte_eth_rx_burst(self.id, self.q, spare.as_mut_ptr().cast(), max) }
            as usize;
        // SAFETY: DPDK wrote n owned mbufs.
        unsafe { out.set_len(out.len() + n) };
        n
    }

    pub fn port_id(&self) -> u16 {
        self.id
    }
    pub fn queue(&self) -> u16 {
        self.q
    }
}

// === impl TxQueue ===

/// The transmit side of one queue, with a batch buffer; owned by one core.
#[derive(Debug)]
pub struct TxQueue {
    id: u16,
    q: u16,
    /// The device takes chained mbufs; if not, chains are linearised first.
    multi_segs: bool,
    /// Chains that could not be linearised for a single-segment device.
    unsendable: u64,
    batch: usize,
    pending: Vec<Mbuf>,
    sent: u64,
    dropped: u64,
    _port: Arc<Shared>,
}

impl TxQueue {
    /// Queue a packet; sends a burst when the batch is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) {
        self.pending.push(m);
        if self.pending.len() >= self.batch {
            self.flush();
        }
    }

    /// Send everything queued. What the ring cannot take is dropped and
    /// counted: a full ring never blocks the core.
    #[inline]
    pub fn flush(&mut self) -> usize {
        let mut v = std::mem::take(&mut self.pending);
        let n = self.send(&mut v);
        self.pending = v;
        n
    }

    /// Send `bufs` directly (bypassing the batch buffer), leaving it empty.
    /// Returns how many the device took; the rest are freed and counted.
    #[inline]
    pub fn send(&mut self, bufs: &mut Vec<Mbuf>) -> usize {
        if !self.multi_segs && bufs.iter().any(|m| m.nb_segs() > 1) {
            // Without MULTI_SEGS a driver may send only the head segment and
            // leak the rest: copy chains into one buffer, or drop them.
            let before = bufs.len();
            bufs.retain_mut(Mbuf::linearize);
            self.unsendable += (before - bufs.len()) as u64;
        }
        let len = bufs.len();
        if len == 0 {
            return 0;
        }
        // SAFETY: single owner of (port, queue); bufs holds len owned mbufs.
        let n =
            unsafe { sys::rte_eth_tx_burst(self.id, self.q, bufs.as_mut_ptr().cast(), len as u16) }
                as usize;
        // SAFETY: the first n now belong to the driver: forget them, then free
        // the unsent tail through its own handles.
        unsafe {
            bufs.set_len(0);
            if n < len {
                sys::rte_pktmbuf_free_bulk(bufs.as_mut_ptr().add(n).cast(), (len - n) as u32);
            }
        }
        self.sent += n as u64;
        self.dropped += (len - n) as u64;
        n
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
    /// Packets the device accepted.
    pub fn sent(&self) -> u64 {
        self.sent
    }
    /// Packets dropped because the TX ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
    /// Chained packets dropped because the device takes single segments only
    /// and the chain did not fit one buffer.
    pub fn unsendable(&self) -> u64 {
        self.unsendable
    }
    pub fn port_id(&self) -> u16 {
        self.id
    }
}

impl Drop for TxQueue {
    fn drop(&mut self) {
        self.flush();
    }
}
