//! The send side: the send queue and segmentation.
//!
//! The queue holds the user's `Bytes` from `snd_una` on and segments are
//! slices of them, so retransmissions reuse the same buffers. What
//! `poll_transmit` emits once synchronized is chosen here, in this order:
//! fast retransmit and NewReno partial-ACK retransmissions (RFC 6582), SACK
//! hole retransmissions (RFC 6675), new data within the peer's window and
//! cwnd plus what Limited Transmit allows (RFC 3042), with sender-side silly
//! window avoidance (RFC 9293 §3.8.6.2.1) and zero-window probes, a lone
//! FIN, keepalives (RFC 1122 §4.2.3.6), and pure ACKs. Options come out of
//! the MSS (RFC 6691); every segment is stamped when timestamps are on (RFC
//! 7323 §3.2).

use std::collections::VecDeque;

use bytes::Bytes;

use super::{Connection, Segment};
use crate::Instant;
use crate::tcp::seq::Seq;

/// Bytes three SACK blocks take in a segment's options (2 + 3 x 8, padded).
const SACK_OPTION_ROOM: u32 = 28;

/// Bytes from `snd_una` on: sent-unacknowledged, then unsent. Chunks are the
/// `Bytes` the user queued; segments are slices of them (no copy).
#[derive(Debug, Default)]
pub(super) struct SendQueue {
    pub(super) chunks: VecDeque<Bytes>,
    pub(super) len: u32,
}

impl SendQueue {
    pub(super) fn push(&mut self, b: Bytes) {
        self.len += b.len() as u32;
        self.chunks.push_back(b);
    }

    /// Up to `max` bytes starting `offset` bytes in, not crossing a chunk.
    pub(super) fn slice(&self, mut offset: u32, max: u32) -> Bytes {
        for c in &self.chunks {
            let n = c.len() as u32;
            if offset < n {
                let end = n.min(offset + max);
                return c.slice(offset as usize..end as usize);
            }
            offset -= n;
        }
        Bytes::new()
    }

    pub(super) fn consume(&mut self, mut n: u32) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            let flen = front.len() as u32;
            if n >= flen {
                n -= flen;
                self.chunks.pop_front();
            } else {
                let _ = front.split_to(n as usize);
                n = 0;
            }
        }
    }
}

// === segments out ===

impl Connection {
    /// Option bytes every segment spends on timestamps (10, padded to 12).
    pub(super) fn ts_room(&self) -> u32 {
        if self.ts_ok { 12 } else { 0 }
    }

    pub(super) fn eff_mss(&self) -> u32 {
        self.peer_mss.min(u32::from(self.cfg.mss)).max(64)
    }

    /// Sequence number our FIN takes: fixed once sent, else after all
    /// queued data.
    fn fin_seq(&self) -> Seq {
        self.snd_fin
            .unwrap_or_else(|| self.data_seq0() + self.sendq.len)
    }

    /// Sequence number of the first queued byte (snd_una, past the SYN).
    pub(super) fn data_seq0(&self) -> Seq {
        if !self.syn_acked {
            self.iss + 1
        } else {
            self.snd_una
        }
    }

    /// Queued bytes not yet sent.
    pub(super) fn unsent(&self) -> u32 {
        let sent = self.snd_nxt.diff(self.data_seq0()).max(0) as u32;
        self.sendq.len.saturating_sub(sent)
    }

    pub(super) fn sent_syn(&mut self, now: Instant, syn: Segment) -> Segment {
        if self.snd_max != self.iss {
            self.stats.retransmits += 1;
        } else {
            self.rtt_probe = Some((self.iss, now));
        }
        self.snd_nxt = self.iss + 1;
        self.snd_max = self.snd_nxt;
        self.rto_at.get_or_insert(now + self.rto);
        self.ack_pending = false;
        self.count_out(syn)
    }

    pub(super) fn transmit_synchronized(&mut self, now: Instant) -> Option<Segment> {
        // Leave room for SACK blocks when we have out-of-order data to report
        // (RFC 6691: the MSS counts payload, options come out of it).
        let sack_room = if self.sack_ok && !self.recvq.ooo.is_empty() {
            SACK_OPTION_ROOM
        } else {
            0
        };
        let mss = self
            .eff_mss()
            .saturating_sub(sack_room + self.ts_room())
            .max(64);
        // Fast retransmit / NewReno partial ACK: resend the first unacked segment.
        if self.retransmit_now {
            self.retransmit_now = false;
            let seq = self.snd_una;
            let off = seq - self.data_seq0();
            let payload = self.sendq.slice(off, mss);
            let fin = payload.is_empty() && self.fin_queued && self.fin_seq() == seq;
            if !payload.is_empty() || fin {
                return Some(self.resend(seq, payload, fin));
            }
        }
        // SACK recovery: each token retransmits the next hole below the
        // highest SACKed byte.
        if self.hole_tokens > 0 && self.recover.is_some() {
            if let Some((start, end)) = self.next_hole(self.rexmit_next) {
                let off = start - self.data_seq0();
                let payload = self.sendq.slice(off, mss.min(end - start));
                if !payload.is_empty() {
                    self.hole_tokens -= 1;
                    self.stats.sack_retransmits += 1;
                    return Some(self.resend(start, payload, false));
                }
            }
            self.hole_tokens = 0; // no hole left: the ACK clock drives new data
        }
        let in_flight = self.snd_nxt - self.snd_una;
        let allowance = if self.recover.is_none() {
            self.limited_transmit * mss
        } else {
            0
        };
        let usable = self
            .snd_wnd
            .min(self.cwnd + allowance)
            .saturating_sub(in_flight);
        let unsent = self.unsent();
        if unsent > 0 && self.snd_wnd == 0 && self.persist_at.is_none() && self.rto_at.is_none() {
            // Nothing else would wake us if the window update got lost.
            self.persist_at = Some(now + self.persist_interval());
        }
        let probe = std::mem::take(&mut self.probe_now) && unsent > 0 && self.snd_wnd == 0;
        if probe && self.snd_nxt == self.snd_una {
            return Some(self.send_probe());
        }
        if unsent > 0 && usable > 0 {
            let max = usable.min(mss);
            let seq = self.snd_nxt;
            let off = seq - self.data_seq0();
            let payload = self.sendq.slice(off, max);
            let n = payload.len() as u32;
            debug_assert!(n > 0, "unsent data must be sliceable at snd_nxt");
            // Silly window avoidance (RFC 9293 §3.8.6.2.1) judges what is
            // available, not this slice: a segment stops at the end of the
            // user's chunk (no copy), which must not hold it back while a
            // full segment's worth is queued behind it.
            let avail = unsent.min(usable);
            if n > 0 && (avail >= mss || avail == unsent || in_flight == 0) {
                let mut s = self.ack_segment(seq);
                s.payload = payload;
                s.fin = self.fin_queued && n == unsent;
                return Some(self.sent_new(now, s));
            }
        }
        // A FIN alone, once all data is out.
        if self.fin_queued && unsent == 0 && self.snd_nxt == self.fin_seq() {
            let mut s = self.ack_segment(self.snd_nxt);
            s.fin = true;
            return Some(self.sent_new(now, s));
        }
        if std::mem::take(&mut self.keepalive_now) {
            // RFC 1122 §4.2.3.6: one byte below snd_una, which the peer must
            // answer with an ACK; no payload (ours never carry garbage).
            self.stats.keepalives_sent += 1;
            let s = self.ack_segment(self.snd_una + u32::MAX);
            return Some(self.count_out(s));
        }
        if self.ack_pending || self.dup_acks_owed > 0 {
            self.dup_acks_owed = self.dup_acks_owed.saturating_sub(1);
            // snd_max, not snd_nxt: after a timeout snd_nxt goes back, and a
            // sequence number below the peer's rcv_nxt would make the peer
            // discard this ACK as unacceptable.
            let s = self.ack_segment(self.snd_max);
            return Some(self.count_out(s));
        }
        None
    }

    /// A zero-window probe: the byte at `snd_una`, one past the shut
    /// window's edge, always the same byte (RFC 9293 §3.8.6.1). A data
    /// segment, so that a Linux peer answers it without the rate limit it
    /// puts on answers to pure ACKs outside the window. The persist timer
    /// alone drives it: no retransmission timer (a shut window is not
    /// loss), no RTT sample, not a retransmission.
    fn send_probe(&mut self) -> Segment {
        let seq = self.snd_una;
        let mut s = self.ack_segment(seq);
        s.payload = self.sendq.slice(seq - self.data_seq0(), 1);
        s.fin = s.payload.is_empty() && self.fin_queued;
        self.stats.zero_window_probes += 1;
        self.probe_out = true;
        self.rtt_probe = None;
        self.snd_nxt = seq + s.seq_len();
        if self.snd_nxt.diff(self.snd_max) > 0 {
            self.snd_max = self.snd_nxt;
        }
        self.count_out(s)
    }

    /// Resend `payload` (and FIN) at `seq` out of the normal order (fast
    /// retransmit, SACK holes): no RTT sample from it (Karn), and the hole
    /// walk moves past it.
    fn resend(&mut self, seq: Seq, payload: Bytes, fin: bool) -> Segment {
        self.stats.retransmits += 1;
        self.rtt_probe = None;
        let end = seq + payload.len() as u32;
        if end.diff(self.rexmit_next) > 0 {
            self.rexmit_next = end;
        }
        let mut s = self.ack_segment(seq);
        s.payload = payload;
        s.fin = fin;
        self.count_out(s)
    }

    /// Bookkeeping for a segment carrying new (or go-back-N resent) sequence space.
    fn sent_new(&mut self, now: Instant, s: Segment) -> Segment {
        let end = s.seq + s.seq_len();
        if s.fin {
            self.snd_fin = Some(end + u32::MAX); // end - 1
        }
        if s.seq.diff(self.snd_max) < 0 {
            self.stats.retransmits += 1;
        } else if self.rtt_probe.is_none() && !s.payload.is_empty() {
            self.rtt_probe = Some((s.seq, now));
        }
        if self.snd_max == self.snd_una {
            self.progress_at = Some(now); // the flight starts
        }
        self.last_activity = now;
        self.snd_nxt = end;
        if end.diff(self.snd_max) > 0 {
            self.snd_max = end;
        }
        self.rto_at.get_or_insert(now + self.rto);
        self.count_out(s)
    }

    /// A segment with ACK, our window, and `seq`; clears the pending ACK.
    pub(super) fn ack_segment(&mut self, seq: Seq) -> Segment {
        let free = self.free_window();
        // Never move the right edge left.
        let edge = self.rcv_nxt + free;
        if edge.diff(self.rcv_adv) > 0 {
            self.rcv_adv = edge;
        }
        let wnd = (self.rcv_adv - self.rcv_nxt) >> self.rcv_shift;
        self.ack_pending = false;
        self.unacked_segments = 0;
        self.delack_at = None;
        self.last_ack_sent = self.rcv_nxt;
        let mut sack = [None; 3];
        if self.sack_ok && !self.recvq.ooo.is_empty() {
            let (base, nxt) = (self.recvq.next, self.rcv_nxt);
            sack = self
                .recvq
                .sack_blocks()
                .map(|b| b.map(|(l, r)| (nxt + (l - base) as u32, nxt + (r - base) as u32)));
        }
        Segment {
            seq,
            ack: Some(self.rcv_nxt),
            window: wnd.min(u32::from(u16::MAX)) as u16,
            sack,
            ..Default::default()
        }
    }

    /// Every segment leaves through here: counted, and stamped when
    /// timestamps are on (all but RSTs, RFC 7323 §3.2).
    pub(super) fn count_out(&mut self, mut s: Segment) -> Segment {
        self.stats.segments_sent += 1;
        if self.ts_ok && !s.rst {
            s.timestamp = Some((self.tsval(), self.ts_recent));
        }
        s
    }
}
