//! Loss recovery: the SACK scoreboard, fast retransmit and fast recovery,
//! limited transmit.
//!
//! SACK blocks (RFC 2018) are merged into a bounded scoreboard whose holes
//! are retransmitted during recovery (after RFC 6675); three duplicate ACKs
//! enter fast recovery (RFC 5681 §3.2, RFC 6582), not while an RTO's
//! recovery point is outstanding (RFC 6582 §3.2 step 1), and earlier
//! duplicates let new segments out (Limited Transmit, RFC 3042).

use super::congestion::MAX_CWND;
use super::{Connection, Segment};
use crate::tcp::seq::Seq;

impl Connection {
    /// Merge the segment's SACK blocks that lie in (snd_una, snd_max] into
    /// the scoreboard; anything else is stale or bogus and ignored.
    pub(super) fn take_sack(&mut self, seg: &Segment) {
        for &(l, r) in seg.sack.iter().flatten() {
            if l.diff(self.snd_una) < 0 || r.diff(self.snd_max) > 0 || r.diff(l) <= 0 {
                continue;
            }
            self.scoreboard.push((l, r));
        }
        if self.scoreboard.len() > 1 {
            let base = self.snd_una;
            self.scoreboard.sort_by_key(|&(l, _)| l - base);
            let mut merged: Vec<(Seq, Seq)> = Vec::with_capacity(self.scoreboard.len());
            for &(l, r) in &self.scoreboard {
                match merged.last_mut() {
                    Some(last) if l.diff(last.1) <= 0 => {
                        if r.diff(last.1) > 0 {
                            last.1 = r;
                        }
                    }
                    _ => merged.push((l, r)),
                }
            }
            // Bounded: more blocks than this means a sender gone wrong or a
            // peer feeding garbage; keep the highest ones.
            if merged.len() > 64 {
                merged.drain(..merged.len() - 64);
            }
            self.scoreboard = merged;
        }
    }

    pub(super) fn sacked_bytes(&self) -> u32 {
        self.scoreboard.iter().map(|&(l, r)| r - l).sum()
    }

    /// The next hole at or after `from` below the highest SACKed byte, as
    /// `(start, end)`.
    pub(super) fn next_hole(&self, from: Seq) -> Option<(Seq, Seq)> {
        let top = self.scoreboard.last()?.1;
        let mut start = if from.diff(self.snd_una) < 0 {
            self.snd_una
        } else {
            from
        };
        for &(l, r) in &self.scoreboard {
            if start.diff(r) >= 0 {
                continue;
            }
            if start.diff(l) < 0 {
                return Some((start, l));
            }
            start = r;
        }
        (start.diff(top) < 0).then_some((start, top))
    }

    pub(super) fn on_dup_ack(&mut self) {
        self.stats.dup_acks_received += 1;
        self.dup_acks += 1;
        let mss = self.eff_mss();
        if self.recover.is_some() {
            self.cwnd = (self.cwnd + mss).min(MAX_CWND); // inflate while in recovery
            if self.sack_ok {
                // RFC 6675 in spirit: every ACK arriving during recovery
                // clocks out one more segment, the next hole first.
                self.hole_tokens += 1;
            }
        } else if self.dup_acks < 3 {
            // Limited transmit (RFC 3042): one new segment per early duplicate,
            // so that a small flight can still produce three.
            self.limited_transmit = self.dup_acks;
        } else if self.dup_acks == 3 && self.rto_recover.is_none_or(|r| self.snd_una.diff(r) > 0) {
            // RFC 5681 §3.2 / RFC 6582: enter fast recovery.
            self.ssthresh = self.on_congestion_event();
            self.cwnd = self.ssthresh + 3 * mss;
            self.recover = Some(self.snd_max);
            self.retransmit_now = true;
            self.rexmit_next = self.snd_una;
            self.stats.fast_retransmits += 1;
        }
    }
}
