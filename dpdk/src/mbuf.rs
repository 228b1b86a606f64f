//! Owned packet buffers.

use std::ptr::NonNull;

use dpdk_sys::rte_mbuf;

/// An owned DPDK packet buffer (possibly the head of a chain); freed on drop.
///
/// `repr(transparent)` over the raw pointer so that bursts can be received into
/// and sent from `[Mbuf]` storage without conversion.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf {
    raw: NonNull<rte_mbuf>,
}

// SAFETY: an Mbuf is the unique owner of its reference to the buffer; freeing
// from any thread is allowed (without an lcore cache off EAL threads).
unsafe impl Send for Mbuf {}

/// RX checksum verdict the NIC left in the mbuf's offload flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxChecksum {
    /// The device did not check (or cannot): software must.
    Unknown,
    Good,
    Bad,
}

const IP_MASK: u64 = dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_MASK as u64;
const IP_GOOD: u64 = dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_GOOD as u64;
const IP_BAD: u64 = dpdk_sys::RTE_MBUF_F_RX_IP_CKSUM_BAD as u64;
const L4_MASK: u64 = dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_MASK as u64;
const L4_GOOD: u64 = dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_GOOD as u64;
const L4_BAD: u64 = dpdk_sys::RTE_MBUF_F_RX_L4_CKSUM_BAD as u64;
const SHARED_BUF: u64 = dpdk_sys::RTE_MBUF_F_INDIRECT | dpdk_sys::RTE_MBUF_F_EXTERNAL;

impl Mbuf {
    /// # Safety
    /// `raw` must be a valid mbuf whose one reference the caller hands over.
    #[inline]
    pub(crate) unsafe fn from_raw(raw: NonNull<rte_mbuf>) -> Mbuf {
        Mbuf { raw }
    }

    #[inline]
    fn m(&self) -> &rte_mbuf {
        // SAFETY: we own a reference to a valid mbuf; header fields are not
        // written by anyone else while we hold it (refcount only via atomics).
        unsafe { self.raw.as_ref() }
    }

    #[inline]
    fn m_mut(&mut self) -> &mut rte_mbuf {
        // SAFETY: as in `m`, and &mut self makes this handle's access exclusive.
        unsafe { self.raw.as_mut() }
    }

    /// Bytes in this segment.
    #[inline]
    pub fn len(&self) -> usize {
        self.m().data_len as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes in the whole chain.
    #[inline]
    pub fn pkt_len(&self) -> usize {
        self.m().pkt_len as usize
    }

    /// Segments in the chain (1 for a single buffer).
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.m().nb_segs
    }

    #[inline]
    pub fn headroom(&self) -> usize {
        self.m().data_off as usize
    }

    #[inline]
    pub fn tailroom(&self) -> usize {
        let m = self.m();
        m.buf_len as usize - m.data_off as usize - m.data_len as usize
    }

    /// This segment's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: buf_addr+data_off..+data_len lies inside the buffer and was
        // written (by the NIC, or through append/prepend which initialise).
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// This segment's bytes, writable.
    ///
    /// # Panics
    /// If the buffer is shared (refcount above one, or attached to another
    /// buffer's data): writing would change what another holder sees.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        assert!(self.is_unique(), "Mbuf::data_mut on a shared buffer");
        let m = self.m_mut();
        // SAFETY: as in `data`, and the buffer is not shared with any other holder.
        unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// Header edits (lengths, offsets, links) are seen by every handle made
    /// with [`Mbuf::share`], so they need the only one.
    #[inline]
    fn assert_sole_header(&self, op: &str) {
        assert!(self.refcnt() == 1, "Mbuf::{op} on a shared mbuf header");
    }

    /// True when no other handle can see this segment's bytes.
    #[inline]
    pub fn is_unique(&self) -> bool {
        self.refcnt() == 1 && self.m().ol_flags & SHARED_BUF == 0
    }

    /// Grow the tail of the last segment by `n` zeroed bytes; `None` if it
    /// lacks tailroom.
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        assert!(self.is_unique(), "Mbuf::append on a shared buffer");
        // SAFETY: valid owned mbuf; DPDK checks tailroom and returns NULL if short.
        let p = unsafe { dpdk_sys::rte_pktmbuf_append(self.raw.as_ptr(), n as u16) } as *mut u8;
        if p.is_null() || n > u16::MAX as usize {
            return None;
        }
        // SAFETY: DPDK reserved n bytes at p inside the last segment; they are
        // uninitialised, so zero them before handing out a slice (DPDK-NOTES trap 5).
        unsafe {
            std::ptr::write_bytes(p, 0, n);
            Some(std::slice::from_raw_parts_mut(p, n))
        }
    }

    /// Append a copy of `bytes`; false if there is not enough tailroom.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> bool {
        match self.append(bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Grow the front by `n` zeroed bytes; `None` if headroom is short.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        assert!(self.is_unique(), "Mbuf::prepend on a shared buffer");
        if n > u16::MAX as usize {
            return None;
        }
        // SAFETY: valid owned mbuf; DPDK checks headroom.
        let p = unsafe { dpdk_sys::rte_pktmbuf_prepend(self.raw.as_ptr(), n as u16) } as *mut u8;
        if p.is_null() {
            return None;
        }
        // SAFETY: n reserved (uninitialised) bytes at p: zero before exposing.
        unsafe {
            std::ptr::write_bytes(p, 0, n);
            Some(std::slice::from_raw_parts_mut(p, n))
        }
    }

    /// Drop `n` bytes from the front of the first segment. False if `n` is
    /// longer than the segment.
    pub fn adj(&mut self, n: usize) -> bool {
        self.assert_sole_header("adj");
        // SAFETY: valid owned mbuf; DPDK checks the length.
        n <= u16::MAX as usize
            && !unsafe { dpdk_sys::rte_pktmbuf_adj(self.raw.as_ptr(), n as u16) }.is_null()
    }

    /// Drop `n` bytes from the end of the last segment. False if too long.
    pub fn trim(&mut self, n: usize) -> bool {
        self.assert_sole_header("trim");
        // SAFETY: valid owned mbuf; DPDK checks the length.
        n <= u16::MAX as usize
            && unsafe { dpdk_sys::rte_pktmbuf_trim(self.raw.as_ptr(), n as u16) } == 0
    }

    /// Shorten a single-segment buffer to `len` bytes (no-op if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.assert_sole_header("truncate");
        if self.nb_segs() == 1 && len < self.len() {
            let m = self.m_mut();
            m.data_len = len as u16;
            m.pkt_len = len as u32;
        }
    }

    /// Link `tail` after this chain's last segment. Gives `tail` back if the
    /// chain would have too many segments.
    pub fn chain(&mut self, tail: Mbuf) -> Result<(), Mbuf> {
        self.assert_sole_header("chain");
        let t = tail.raw.as_ptr();
        // SAFETY: both valid; on success DPDK takes over `tail`'s reference as
        // part of this chain, on failure nothing changes.
        if unsafe { dpdk_sys::rte_pktmbuf_chain(self.raw.as_ptr(), t) } == 0 {
            std::mem::forget(tail);
            Ok(())
        } else {
            Err(tail)
        }
    }

    /// The bytes of every segment, in order.
    pub fn segments(&self) -> Segments<'_> {
        Segments {
            cur: Some(self.raw),
            _owner: std::marker::PhantomData,
        }
    }

    /// Copy a chain into one contiguous segment when it fits. False if it does
    /// not (too long for one buffer).
    pub fn linearize(&mut self) -> bool {
        // SAFETY: valid owned chain.
        unsafe { dpdk_sys::rte_pktmbuf_linearize(self.raw.as_ptr()) == 0 }
    }

    /// Reference count of this segment.
    #[inline]
    pub fn refcnt(&self) -> u16 {
        // SAFETY: `refcnt` is a naturally aligned u16 inside a valid mbuf that
        // DPDK changes only with atomic operations; a relaxed atomic load is
        // exactly rte_mbuf_refcnt_read, without the out-of-line wrapper call.
        unsafe {
            std::sync::atomic::AtomicU16::from_ptr(std::ptr::addr_of_mut!(
                (*self.raw.as_ptr()).refcnt
            ))
            .load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    /// Another handle to the same chain (refcount +1 on every segment). Both
    /// handles become read-only until one is dropped.
    pub fn share(&self) -> Mbuf {
        // SAFETY: valid chain; rte_pktmbuf_refcnt_update bumps each segment.
        unsafe { dpdk_sys::rte_pktmbuf_refcnt_update(self.raw.as_ptr(), 1) };
        Mbuf { raw: self.raw }
    }

    /// Input port the NIC tagged.
    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    /// The NIC's RSS hash, if it supplied one.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        let m = self.m();
        // SAFETY: `hash` is a union of plain integers, so reading `rss` is
        // always defined; it is meaningful when RSS_HASH is flagged.
        let rss = unsafe { m.__bindgen_anon_2.hash.rss };
        (m.ol_flags & dpdk_sys::RTE_MBUF_F_RX_RSS_HASH as u64 != 0).then_some(rss)
    }

    /// The device's verdict on the IPv4 header checksum.
    #[inline]
    pub fn rx_ip_checksum(&self) -> RxChecksum {
        match self.m().ol_flags & IP_MASK {
            f if f == IP_GOOD => RxChecksum::Good,
            f if f == IP_BAD => RxChecksum::Bad,
            _ => RxChecksum::Unknown,
        }
    }

    /// The device's verdict on the L4 checksum.
    #[inline]
    pub fn rx_l4_checksum(&self) -> RxChecksum {
        match self.m().ol_flags & L4_MASK {
            f if f == L4_GOOD => RxChecksum::Good,
            f if f == L4_BAD => RxChecksum::Bad,
            _ => RxChecksum::Unknown,
        }
    }

    /// Reset to an empty buffer with default headroom, keeping the memory.
    pub fn reset(&mut self) {
        assert!(self.is_unique(), "Mbuf::reset on a shared buffer");
        // SAFETY: valid owned mbuf; frees nothing (chained segments are not
        // touched by reset, so drop them first).
        unsafe {
            let next = (*self.raw.as_ptr()).next;
            if !next.is_null() {
                (*self.raw.as_ptr()).next = std::ptr::null_mut();
                dpdk_sys::rte_pktmbuf_free(next);
            }
            dpdk_sys::rte_pktmbuf_reset(self.raw.as_ptr());
        }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own one reference to a valid chain; free releases it.
        unsafe { dpdk_sys::rte_pktmbuf_free(self.raw.as_ptr()) }
    }
}

/// Free many buffers with one call.
pub fn free_bulk(bufs: &mut Vec<Mbuf>) {
    if bufs.is_empty() {
        return;
    }
    // SAFETY: Mbuf is repr(transparent) over the pointer; DPDK frees each
    // (chains included) and we then forget the handles by setting len to 0.
    unsafe {
        dpdk_sys::rte_pktmbuf_free_bulk(bufs.as_mut_ptr().cast(), bufs.len() as u32);
        bufs.set_len(0);
    }
}

/// Iterator over a chain's segments.
#[derive(Debug)]
pub struct Segments<'a> {
    cur: Option<NonNull<rte_mbuf>>,
    _owner: std::marker::PhantomData<&'a Mbuf>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let seg = self.cur?;
        // SAFETY: segments of a chain we borrow stay valid for 'a.
        unsafe {
            let m = seg.as_ref();
            self.cur = NonNull::new(m.next);
            Some(std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            ))
        }
    }
}
