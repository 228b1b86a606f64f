//! The receive side: the receive queue, reassembly and the window.
//!
//! In-order data is handed to the user as the `Bytes` it arrived in;
//! out-of-order data is kept by stream offset, without overlaps and within
//! bounds, and reported in SACK blocks, the latest arrival first (RFC 2018
//! §4). The window we advertise never moves its right edge left (RFC 9293
//! §3.8.6.2.2).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::Connection;
use crate::tcp::seq::Seq;

/// Out-of-order pieces held per connection (each may be a whole mbuf).
pub(super) const MAX_OOO_SEGMENTS: usize = 512;

/// In-order data ready for the user, and out-of-order data keyed by stream
/// offset (bytes since the SYN, so no wrap-around in the keys).
#[derive(Debug, Default)]
pub(super) struct RecvQueue {
    pub(super) ready: VecDeque<Bytes>,
    pub(super) ready_len: u32,
    pub(super) ooo: BTreeMap<u64, Bytes>,
    pub(super) ooo_len: u32,
    /// Stream offset of the next in-order byte.
    pub(super) next: u64,
    /// Offset of the latest out-of-order arrival: its block is reported first.
    last_ooo: Option<u64>,
}

impl RecvQueue {
    /// Insert data at stream offset `off`; returns bytes newly in order.
    pub(super) fn insert(&mut self, off: u64, data: Bytes) -> u32 {
        if data.is_empty() {
            return 0;
        }
        if off > self.next {
            self.insert_out_of_order(off, data);
            return 0;
        }
        let before = self.next;
        self.push_in_order(off, data);
        // Pull whatever out-of-order data now connects.
        while let Some((&o, _)) = self.ooo.first_key_value() {
            if o > self.next {
                break;
            }
            let (o, b) = self.ooo.pop_first().expect("non-empty");
            self.ooo_len -= b.len() as u32;
            self.push_in_order(o, b);
        }
        (self.next - before) as u32
    }

    /// Keep out-of-order data without overlaps and within bounds: a peer
    /// sending overlapping or tiny segments must not make us hold more than
    /// the window's bytes, or more than `MAX_OOO_SEGMENTS` pieces.
    fn insert_out_of_order(&mut self, mut off: u64, mut data: Bytes) {
        // Trim what the pieces before already hold (possibly several, one
        // after another), so no two stored pieces overlap or share a key.
        while let Some((&po, pb)) = self.ooo.range(..=off).next_back() {
            let pend = po + pb.len() as u64;
            if pend <= off {
                break;
            }
            if pend >= off + data.len() as u64 {
                return; // nothing new
            }
            let _ = data.split_to((pend - off) as usize);
            off = pend;
        }
        // Trim what the piece after already holds.
        if let Some((&no, _)) = self.ooo.range(off + 1..).next()
            && no < off + data.len() as u64
        {
            data.truncate((no - off) as usize);
        }
        if data.is_empty() || self.ooo.len() >= MAX_OOO_SEGMENTS {
            return;
        }
        self.last_ooo = Some(off);
        self.ooo_len += data.len() as u32;
        self.ooo.insert(off, data);
    }

    /// Out-of-order data as merged `[start, end)` offset ranges, the one
    /// holding the latest arrival first (RFC 2018 §4), at most three.
    pub(super) fn sack_blocks(&self) -> [Option<(u64, u64)>; 3] {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (&o, b) in &self.ooo {
            let end = o + b.len() as u64;
            match ranges.last_mut() {
                Some(last) if o <= last.1 => last.1 = last.1.max(end),
                _ => ranges.push((o, end)),
            }
        }
        if let Some(l) = self.last_ooo
            && let Some(i) = ranges.iter().position(|r| r.0 <= l && l < r.1)
        {
            let r = ranges.remove(i);
            ranges.insert(0, r);
        }
        let mut out = [None; 3];
        for (slot, r) in out.iter_mut().zip(ranges) {
            *slot = Some(r);
        }
        out
    }

    fn push_in_order(&mut self, off: u64, mut data: Bytes) {
        let skip = self.next.saturating_sub(off);
        if skip >= data.len() as u64 {
            return; // entirely old
        }
        let _ = data.split_to(skip as usize);
        self.next += data.len() as u64;
        self.ready_len += data.len() as u32;
        self.ready.push_back(data);
    }
}

// === window ===

impl Connection {
    /// Offset in the peer's byte stream of sequence number `s` (>= rcv_nxt
    /// - window, so no ambiguity).
    pub(super) fn stream_offset(&self, s: Seq) -> u64 {
        let delta = i64::from(s.diff(self.rcv_nxt));
        let base = self.recvq.next as i64;
        (base + delta).max(0) as u64
    }

    pub(super) fn free_window(&self) -> u32 {
        let used = self.recvq.ready_len + self.recvq.ooo_len;
        let max = if self.rcv_shift == 0 {
            u32::from(u16::MAX)
        } else {
            u32::from(u16::MAX) << self.rcv_shift
        };
        self.cfg.recv_buffer.saturating_sub(used).min(max)
    }

    pub(super) fn advertised_window(&self) -> u32 {
        self.rcv_adv - self.rcv_nxt
    }
}
