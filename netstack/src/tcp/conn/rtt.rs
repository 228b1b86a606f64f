//! RTT estimation, the retransmission timeout, and our timestamp clock.
//!
//! SRTT, RTTVAR and the RTO per RFC 6298 §2.2-2.3, bounded by the
//! configured floor and ceiling. Samples come from a timed segment (Karn's
//! rule) or from an echoed timestamp (RFC 7323 §4.1), whose clock, with a
//! per-connection offset, ticks in milliseconds.

use std::time::Duration;

use super::Connection;
use crate::Instant;

impl Connection {
    pub(super) fn rtt_sample(&mut self, r: Duration) {
        // RFC 6298 §2.2-2.3
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + err / 4;
                self.srtt = Some(srtt * 7 / 8 + r / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        let g = Duration::from_micros(1);
        self.rto = (srtt + g.max(self.rttvar * 4)).clamp(self.cfg.min_rto, self.cfg.max_rto);
    }

    pub(super) fn tsval(&self) -> u32 {
        self.ts_now.wrapping_add(self.ts_offset)
    }

    /// Our timestamp clock at `now`.
    pub(super) fn ts_at(&self, now: Instant) -> u32 {
        ((now.as_micros() / 1000) as u32).wrapping_add(self.ts_offset)
    }
}
