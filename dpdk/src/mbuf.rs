//! Owned packet buffers.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use bytes::Bytes;
use dpdk_sys::rte_mbuf;

/// An owned DPDK packet buffer (possibly the head of a chain); freed on drop.
///
/// `repr(transparent)` over the raw pointer so that bursts can be received into
/// and sent from `[Mbuf]` storage without conversion.
///
/// Ownership rules that keep this sound:
/// - [`Mbuf::share`] is the only way to make a second handle, and it bumps the
///   reference count of every segment. So a head with refcount 1 has no other
///   handle anywhere in its chain, provided nothing shared was ever linked in,
///   which [`Mbuf::chain`] refuses.
/// - Header edits (lengths, links) and data writes need refcount 1, and data
///   writes also need the data not to be attached from elsewhere.
/// - No `&rte_mbuf` is ever made: fields are read through the raw pointer,
///   because another holder may change the refcount atomically meanwhile.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf {
    raw: NonNull<rte_mbuf>,
}

// SAFETY: an Mbuf is the owner of its reference to the buffer; freeing from
// any thread is allowed (without an lcore cache off EAL threads).
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
const INDIRECT: u64 = dpdk_sys::RTE_MBUF_F_INDIRECT;
const EXTERNAL: u64 = dpdk_sys::RTE_MBUF_F_EXTERNAL;

/// What keeps an external buffer alive: DPDK's shared-info block (which
/// must outlive the segment) next to the `Bytes` that own the memory.
struct ExternalHold {
    shinfo: dpdk_sys::rte_mbuf_ext_shared_info,
    bytes: Bytes,
}

/// DPDK's free callback for [`Mbuf::attach_external`]: the last segment
/// pointing at the memory is gone.
unsafe extern "C" fn release_external(_addr: *mut std::ffi::c_void, opaque: *mut std::ffi::c_void) {
    // SAFETY: `opaque` is the `Box<ExternalHold>` leaked when attaching; DPDK
    // calls this once, when the shared refcount reaches zero.
    drop(unsafe { Box::from_raw(opaque.cast::<ExternalHold>()) });
}

/// Read a header field of a segment pointer, without making a reference.
macro_rules! field {
    ($seg:expr, $f:ident) => {
        // SAFETY: `$seg` points at a valid mbuf we hold a reference to; a raw
        // place read of one field makes no reference to the header, and fields
        // other than `refcnt` are written only by a sole owner.
        unsafe { (*$seg).$f }
    };
}

/// Atomic view of a segment's reference count (what rte_mbuf_refcnt_read does).
#[inline]
fn seg_refcnt(seg: *mut rte_mbuf) -> u16 {
    // SAFETY: `refcnt` is a naturally aligned u16 inside a valid mbuf that DPDK
    // changes only atomically. Acquire pairs with the release decrement of a
    // holder that dropped its reference, so its accesses happen before ours.
    unsafe { AtomicU16::from_ptr(&raw mut (*seg).refcnt).load(Ordering::Acquire) }
}

/// True when nobody else can see this segment's header or bytes.
#[inline]
fn seg_unique(seg: *mut rte_mbuf) -> bool {
    if seg_refcnt(seg) != 1 {
        return false;
    }
    let flags = field!(seg, ol_flags);
    if flags & INDIRECT != 0 {
        return false; // bytes belong to another mbuf
    }
    if flags & EXTERNAL != 0 {
        let shinfo = field!(seg, shinfo);
        // SAFETY: an EXTERNAL mbuf has a valid shared-info block; its refcount
        // is changed only atomically.
        return !shinfo.is_null()
            && unsafe { AtomicU16::from_ptr(&raw mut (*shinfo).refcnt).load(Ordering::Acquire) }
                == 1;
    }
    true
}

impl Mbuf {
    /// # Safety
    /// `raw` must be a valid mbuf whose one reference the caller hands over.
    #[inline]
    pub(crate) unsafe fn from_raw(raw: NonNull<rte_mbuf>) -> Mbuf {
        Mbuf { raw }
    }

    #[inline]
    fn p(&self) -> *mut rte_mbuf {
        self.raw.as_ptr()
    }

    /// Header edits are seen by every handle made with [`Mbuf::share`], so
    /// they need the only one.
    #[inline]
    fn assert_sole_header(&self, op: &str) {
        assert!(
            seg_refcnt(self.p()) == 1,
            "Mbuf::{op} on a shared mbuf header"
        );
    }

    /// Every segment of the chain from `self` is uniquely ours.
    fn chain_unique(&self) -> bool {
        let mut seg = self.p();
        while !seg.is_null() {
            if !seg_unique(seg) {
                return false;
            }
            seg = field!(seg, next);
        }
        true
    }

    fn last_segment(&self) -> *mut rte_mbuf {
        let mut seg = self.p();
        loop {
            let next = field!(seg, next);
            if next.is_null() {
                return seg;
            }
            seg = next;
        }
    }

    /// Bytes in this segment.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(field!(self.p(), data_len))
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes in the whole chain.
    #[inline]
    pub fn pkt_len(&self) -> usize {
        field!(self.p(), pkt_len) as usize
    }

    /// Segments in the chain (1 for a single buffer).
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        field!(self.p(), nb_segs)
    }

    #[inline]
    pub fn headroom(&self) -> usize {
        usize::from(field!(self.p(), data_off))
    }

    /// Free bytes after the data of the last segment.
    #[inline]
    pub fn tailroom(&self) -> usize {
        let seg = self.last_segment();
        usize::from(field!(seg, buf_len))
            - usize::from(field!(seg, data_off))
            - usize::from(field!(seg, data_len))
    }

    /// This segment's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let p = self.p();
        let (addr, off, len) = (
            field!(p, buf_addr),
            field!(p, data_off),
            field!(p, data_len),
        );
        // SAFETY: buf_addr+data_off..+data_len lies inside the buffer and was
        // written (by the NIC, or through append/prepend which initialise); it
        // is not written while shared, and &self keeps our reference alive.
        unsafe {
            std::slice::from_raw_parts((addr as *const u8).add(usize::from(off)), usize::from(len))
        }
    }

    /// This segment's bytes, writable.
    ///
    /// # Panics
    /// If the buffer is shared (refcount above one, or data attached from
    /// another buffer still referenced elsewhere): another holder would see the
    /// write. Use [`Mbuf::try_data_mut`] on buffers that may be shared.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.try_data_mut()
            .expect("Mbuf::data_mut on a shared buffer")
    }

    /// This segment's bytes, writable, or `None` if the buffer is shared.
    #[inline]
    pub fn try_data_mut(&mut self) -> Option<&mut [u8]> {
        let p = self.p();
        if !seg_unique(p) {
            return None;
        }
        let (addr, off, len) = (
            field!(p, buf_addr),
            field!(p, data_off),
            field!(p, data_len),
        );
        // SAFETY: as in `data`, and no other holder can see these bytes.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                (addr as *mut u8).add(usize::from(off)),
                usize::from(len),
            )
        })
    }

    /// True when no other handle can see this segment's bytes.
    #[inline]
    pub fn is_unique(&self) -> bool {
        seg_unique(self.p())
    }

    /// Grow the tail of the last segment by `n` zeroed bytes; `None` (and no
    /// change) if it lacks tailroom.
    ///
    /// # Panics
    /// If the last segment is shared.
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        self.assert_sole_header("append");
        assert!(
            seg_unique(self.last_segment()),
            "Mbuf::append on a shared segment"
        );
        let n16 = u16::try_from(n).ok()?;
        // SAFETY: valid owned mbuf; DPDK checks tailroom and returns NULL,
        // changing nothing, if short.
        let p = unsafe { dpdk_sys::rte_pktmbuf_append(self.p(), n16) } as *mut u8;
        if p.is_null() {
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
    ///
    /// # Panics
    /// If the buffer is shared.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        assert!(self.is_unique(), "Mbuf::prepend on a shared buffer");
        let n16 = u16::try_from(n).ok()?;
        // SAFETY: valid owned mbuf; DPDK checks headroom.
        let p = unsafe { dpdk_sys::rte_pktmbuf_prepend(self.p(), n16) } as *mut u8;
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
        let Ok(n) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: valid owned mbuf with a header only we see; DPDK checks the length.
        !unsafe { dpdk_sys::rte_pktmbuf_adj(self.p(), n) }.is_null()
    }

    /// Drop `n` bytes from the end of the last segment. False if too long.
    pub fn trim(&mut self, n: usize) -> bool {
        self.assert_sole_header("trim");
        assert!(
            seg_refcnt(self.last_segment()) == 1,
            "Mbuf::trim on a shared segment"
        );
        let Ok(n) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: valid owned chain whose last header only we see; DPDK checks the length.
        unsafe { dpdk_sys::rte_pktmbuf_trim(self.p(), n) == 0 }
    }

    /// Shorten a single-segment buffer to `len` bytes (no-op if already
    /// shorter, or if it is a chain).
    pub fn truncate(&mut self, len: usize) {
        self.assert_sole_header("truncate");
        if self.nb_segs() == 1 && len < self.len() {
            let p = self.raw_mut();
            // SAFETY: sole owner of this header (checked above); raw place writes.
            unsafe {
                (*p).data_len = len as u16;
                (*p).pkt_len = len as u32;
            }
        }
    }

    #[inline]
    fn raw_mut(&mut self) -> *mut rte_mbuf {
        self.raw.as_ptr()
    }

    /// Link `tail` after this chain's last segment. Gives `tail` back if the
    /// chain would have too many segments.
    ///
    /// # Panics
    /// If either chain has a segment shared with another handle: linking would
    /// change what that handle sees and frees.
    pub fn chain(&mut self, tail: Mbuf) -> Result<(), Mbuf> {
        assert!(
            self.chain_unique() && tail.chain_unique(),
            "Mbuf::chain with a shared segment"
        );
        let t = tail.p();
        // SAFETY: both chains are valid and wholly ours; on success DPDK takes
        // over `tail`'s reference as part of this chain, on failure nothing changes.
        if unsafe { dpdk_sys::rte_pktmbuf_chain(self.p(), t) } == 0 {
            std::mem::forget(tail);
            Ok(())
        } else {
            Err(tail)
        }
    }

    /// Chain `bytes` after this chain as one more segment, without copying
    /// them: a fresh mbuf from this buffer's own pool is attached to the
    /// `Bytes`' memory as an external buffer, and the `Bytes` is released when
    /// the driver frees the segment after transmission.
    ///
    /// Gives `bytes` back when that cannot be done: empty or longer than an
    /// mbuf segment can say (64 KiB), pool empty, too many segments, or, in
    /// IOVA-as-PA mode, memory DPDK does not own (a device could not DMA it).
    ///
    /// The attached segment is only reachable as a tail of this chain, and
    /// nothing here writes a tail's data (appends find no tailroom in it), so
    /// `Bytes` memory stays read-only as `Bytes` promises.
    ///
    /// # Panics
    /// Like [`Mbuf::chain`], if a segment of this chain is shared.
    pub fn attach_external(&mut self, bytes: Bytes) -> Result<(), Bytes> {
        let Ok(len) = u16::try_from(bytes.len()) else {
            return Err(bytes);
        };
        if len == 0 {
            return Err(bytes);
        }
        let hold = Box::into_raw(Box::new(ExternalHold {
            shinfo: dpdk_sys::rte_mbuf_ext_shared_info {
                free_cb: Some(release_external),
                fcb_opaque: std::ptr::null_mut(),
                refcnt: 1,
            },
            bytes,
        }));
        // SAFETY: `hold` is a live allocation we own until the callback runs.
        let (shinfo, addr) = unsafe {
            (*hold).shinfo.fcb_opaque = hold.cast();
            (&raw mut (*hold).shinfo, (*hold).bytes.as_ptr().cast_mut())
        };
        let pool = field!(self.p(), pool);
        // SAFETY: the pool pointer of a valid mbuf is its live pool; `addr`
        // points at `len` bytes kept alive by `hold` until `release_external`;
        // on NULL nothing took `shinfo`, so it is still ours to reclaim.
        let seg = unsafe { dpdk_sys::dp_pktmbuf_attach_external(pool, addr.cast(), len, shinfo) };
        let Some(seg) = NonNull::new(seg) else {
            // SAFETY: not attached anywhere: we still own the only pointer.
            return Err(unsafe { Box::from_raw(hold) }.bytes);
        };
        // SAFETY: a fresh mbuf whose one reference we now own.
        let seg = unsafe { Mbuf::from_raw(seg) };
        self.chain(seg).map_err(|seg| {
            // Freeing the segment runs the callback, which frees the hold:
            // keep a handle on the bytes to give back first.
            // SAFETY: the hold lives until `seg` is dropped below.
            let bytes = unsafe { (*hold).bytes.clone() };
            drop(seg);
            bytes
        })
    }

    /// The bytes of every segment, in order.
    pub fn segments(&self) -> Segments<'_> {
        Segments {
            cur: Some(self.raw),
            _owner: std::marker::PhantomData,
        }
    }

    /// Copy a chain into its first segment when it fits (freeing the others).
    /// False, with nothing changed, if it does not fit or a segment is shared.
    pub fn linearize(&mut self) -> bool {
        if self.nb_segs() == 1 {
            return true;
        }
        if !self.chain_unique() {
            return false;
        }
        // SAFETY: valid chain, every segment ours alone.
        unsafe { dpdk_sys::rte_pktmbuf_linearize(self.p()) == 0 }
    }

    /// Reference count of this segment.
    #[inline]
    pub fn refcnt(&self) -> u16 {
        seg_refcnt(self.p())
    }

    /// Another handle to the same chain (refcount +1 on every segment). Both
    /// handles become read-only until one is dropped.
    ///
    /// # Panics
    /// If a segment's reference count is already at its maximum.
    pub fn share(&self) -> Mbuf {
        let mut seg = self.p();
        while !seg.is_null() {
            assert!(
                seg_refcnt(seg) < u16::MAX,
                "Mbuf::share: reference count would overflow"
            );
            seg = field!(seg, next);
        }
        // SAFETY: valid chain; rte_pktmbuf_refcnt_update bumps each segment atomically.
        unsafe { dpdk_sys::rte_pktmbuf_refcnt_update(self.p(), 1) };
        Mbuf { raw: self.raw }
    }

    /// Input port the NIC tagged.
    #[inline]
    pub fn port(&self) -> u16 {
        field!(self.p(), port)
    }

    /// The NIC's RSS hash, if it supplied one.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        let p = self.p();
        // SAFETY: `hash` is a union of plain integers, so reading `rss` through
        // the raw pointer is always defined; it is meaningful when RSS_HASH is set.
        let rss = unsafe { (*p).__bindgen_anon_2.hash.rss };
        (field!(p, ol_flags) & dpdk_sys::RTE_MBUF_F_RX_RSS_HASH as u64 != 0).then_some(rss)
    }

    /// The device's verdict on the IPv4 header checksum.
    #[inline]
    pub fn rx_ip_checksum(&self) -> RxChecksum {
        match field!(self.p(), ol_flags) & IP_MASK {
            f if f == IP_GOOD => RxChecksum::Good,
            f if f == IP_BAD => RxChecksum::Bad,
            _ => RxChecksum::Unknown,
        }
    }

    /// The device's verdict on the L4 checksum.
    #[inline]
    pub fn rx_l4_checksum(&self) -> RxChecksum {
        match field!(self.p(), ol_flags) & L4_MASK {
            f if f == L4_GOOD => RxChecksum::Good,
            f if f == L4_BAD => RxChecksum::Bad,
            _ => RxChecksum::Unknown,
        }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own one reference to a valid chain; free releases it.
        unsafe { dpdk_sys::rte_pktmbuf_free(self.p()) }
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
        let seg = self.cur?.as_ptr();
        self.cur = NonNull::new(field!(seg, next));
        let (addr, off, len) = (
            field!(seg, buf_addr),
            field!(seg, data_off),
            field!(seg, data_len),
        );
        // SAFETY: segments of a chain we borrow stay valid, and unwritten, for 'a.
        Some(unsafe {
            std::slice::from_raw_parts((addr as *const u8).add(usize::from(off)), usize::from(len))
        })
    }
}
