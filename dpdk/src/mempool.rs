//! Packet-buffer pools.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::{Eal, Error, Mbuf};

/// A pool of packet buffers (`rte_pktmbuf_pool_create`).
///
/// Allocation and free are thread-safe in DPDK; the per-lcore cache is used
/// only on EAL lcore threads. Dropping the pool frees it if every buffer has
/// come back; if some are still out (held by a leaked [`Mbuf`]), the pool and
/// EAL are kept alive instead, so no buffer ever points at freed memory.
#[derive(Debug)]
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    name: String,
    eal: Option<Eal>,
}

// SAFETY: rte_mempool get/put are multi-producer/multi-consumer safe (ring
// mempool ops, the default), and the pool's metadata is immutable after creation.
unsafe impl Send for Mempool {}
// SAFETY: as above; &Mempool only allows alloc and counters, which are MT-safe.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a pool of `n` buffers with `data_room` bytes each (headroom
    /// included, see `RTE_MBUF_DEFAULT_BUF_SIZE`), a per-lcore cache of `cache`
    /// buffers, on NUMA `socket` (-1 for any).
    pub fn new(
        eal: &Eal,
        name: &str,
        n: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> crate::Result<Mempool> {
        let c_name = CString::new(name)
            .map_err(|_| Error::other("rte_pktmbuf_pool_create", "name contains NUL"))?;
        if cache > dpdk_sys::RTE_MEMPOOL_CACHE_MAX_SIZE {
            return Err(Error::other(
                format!("mempool {name}"),
                format!(
                    "cache size {cache} exceeds DPDK's maximum {}",
                    dpdk_sys::RTE_MEMPOOL_CACHE_MAX_SIZE
                ),
            ));
        }
        // SAFETY: EAL is initialised (we hold an Eal); name is NUL-terminated.
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(c_name.as_ptr(), n, cache, 0, data_room, socket)
        };
        let raw = NonNull::new(raw).ok_or_else(|| {
            Error::from_code(
                format!(
                    "rte_pktmbuf_pool_create({name}, n={n}, data_room={data_room}, socket={socket})"
                ),
                0,
            )
        })?;
        Ok(Mempool {
            raw,
            name: name.to_owned(),
            eal: Some(eal.clone()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Allocate one empty buffer (data length 0, default headroom).
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid for our lifetime.
        let m = unsafe { dpdk_sys::rte_pktmbuf_alloc(self.raw.as_ptr()) };
        // SAFETY: a non-null result is a fresh buffer we now own.
        NonNull::new(m).map(|p| unsafe { Mbuf::from_raw(p) })
    }

    /// Allocate exactly `n` buffers into `out` (appended), or none at all.
    pub fn alloc_bulk(&self, out: &mut Vec<Mbuf>, n: usize) -> bool {
        out.reserve(n);
        let spare = out.spare_capacity_mut();
        // SAFETY: Mbuf is repr(transparent) over NonNull<rte_mbuf>, so the spare
        // capacity is n writable `*mut rte_mbuf` slots; on success DPDK fills all n.
        let ok = unsafe {
            dpdk_sys::rte_pktmbuf_alloc_bulk(self.raw.as_ptr(), spare.as_mut_ptr().cast(), n as u32)
                == 0
        };
        if ok {
            // SAFETY: the n slots were initialised with valid owned buffers.
            unsafe { out.set_len(out.len() + n) };
        }
        ok
    }

    /// Buffers currently available (in the pool and the lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: valid pool.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Buffers currently handed out.
    pub fn in_use(&self) -> u32 {
        // SAFETY: valid pool.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        if self.in_use() == 0 {
            // SAFETY: no buffer of this pool is outstanding, and no queue uses it
            // (ports hold an Arc to their pools and are dropped first).
            unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) };
        } else {
            // Keep the pool's memory (and EAL) alive for the buffers still out.
            std::mem::forget(self.eal.take());
        }
    }
}
