//! What the stack needs from a packet buffer.

use bytes::Bytes;

/// The device's verdict on a received checksum (from RX offload flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxChecksum {
    /// Not checked by the device: software must.
    Unknown,
    Good,
    Bad,
}

/// An Ethernet frame the stack may read and rewrite in place: one contiguous
/// buffer, to which [`Frame::attach`] may chain payload by reference.
///
/// `Send + 'static` because received payload is handed out as `Bytes` that
/// keep the frame alive (no copy), and `Bytes` may travel.
pub trait Frame: Send + 'static {
    /// The frame's bytes, starting at the Ethernet header.
    fn data(&self) -> &[u8];
    /// Writable bytes. Received frames are uniquely owned.
    fn data_mut(&mut self) -> &mut [u8];
    /// Shorten to `len` bytes (no-op if already shorter).
    fn truncate(&mut self, len: usize);
    /// Grow by `n` zeroed bytes at the end; `None` if the buffer lacks room.
    fn append(&mut self, n: usize) -> Option<&mut [u8]>;
    /// The device's IPv4 header checksum verdict.
    fn rx_ipv4_checksum(&self) -> RxChecksum {
        RxChecksum::Unknown
    }
    /// The device's TCP/UDP checksum verdict.
    fn rx_l4_checksum(&self) -> RxChecksum {
        RxChecksum::Unknown
    }
    /// Send `payload` after this frame's bytes without copying it (a chained
    /// segment). False when this buffer cannot, and the caller copies.
    fn attach(&mut self, _payload: &Bytes) -> bool {
        false
    }
}

/// A source of empty frames for packets the stack originates (ARP requests).
pub trait FramePool {
    type Frame: Frame;
    fn alloc(&mut self) -> Option<Self::Frame>;
}

/// An in-memory frame: a `Vec` with fixed capacity, as a stand-in for an mbuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapFrame {
    buf: Vec<u8>,
    cap: usize,
    /// Verdict to report, to test offload paths.
    pub ip_checksum: RxChecksum,
    /// Accept [`Frame::attach`], as a multi-segment device's mbufs do.
    pub chains: bool,
    /// What was attached: sent after `buf`.
    pub tail: Option<Bytes>,
}

impl HeapFrame {
    /// Room of an mbuf's data area after headroom.
    pub const DEFAULT_CAPACITY: usize = 2048;

    pub fn new(bytes: &[u8]) -> HeapFrame {
        HeapFrame {
            buf: bytes.to_vec(),
            cap: Self::DEFAULT_CAPACITY.max(bytes.len()),
            ip_checksum: RxChecksum::Unknown,
            chains: false,
            tail: None,
        }
    }
    pub fn empty(cap: usize) -> HeapFrame {
        HeapFrame {
            buf: Vec::with_capacity(cap),
            cap,
            ip_checksum: RxChecksum::Unknown,
            chains: false,
            tail: None,
        }
    }
    /// The whole frame as sent: the buffer, then any attached payload.
    pub fn into_vec(mut self) -> Vec<u8> {
        if let Some(t) = self.tail.take() {
            self.buf.extend_from_slice(&t);
        }
        self.buf
    }
}

impl Frame for HeapFrame {
    fn data(&self) -> &[u8] {
        &self.buf
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
    fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }
    fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        let old = self.buf.len();
        if old + n > self.cap {
            return None;
        }
        self.buf.resize(old + n, 0);
        Some(&mut self.buf[old..])
    }
    fn rx_ipv4_checksum(&self) -> RxChecksum {
        self.ip_checksum
    }
    fn attach(&mut self, payload: &Bytes) -> bool {
        if !self.chains || self.tail.is_some() {
            return false;
        }
        self.tail = Some(payload.clone());
        true
    }
}

/// A pool of [`HeapFrame`]s with a fixed budget, to exercise exhaustion.
#[derive(Debug, Clone)]
pub struct HeapPool {
    pub remaining: usize,
    /// Frames from this pool accept attached payload.
    pub chains: bool,
}

impl HeapPool {
    pub fn new(budget: usize) -> HeapPool {
        HeapPool {
            remaining: budget,
            chains: false,
        }
    }
}

impl FramePool for HeapPool {
    type Frame = HeapFrame;
    fn alloc(&mut self) -> Option<HeapFrame> {
        self.remaining = self.remaining.checked_sub(1)?;
        let mut f = HeapFrame::empty(HeapFrame::DEFAULT_CAPACITY);
        f.chains = self.chains;
        Some(f)
    }
}
