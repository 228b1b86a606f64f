//! Congestion control: how the window grows and shrinks.
//!
//! NewReno (RFC 5681, growth counted in bytes per RFC 3465) or CUBIC (RFC
//! 9438, with its Reno-friendly region and fast convergence), chosen by
//! [`Congestion`]. Slow start and loss recovery are common to both and live
//! with the ACK processing and in `recovery`.

use std::time::Duration;

use super::{Congestion, Connection};
use crate::Instant;

/// Congestion window ceiling: far above any window, far below overflow.
pub(super) const MAX_CWND: u32 = 1 << 30;
/// CUBIC's constants (RFC 9438 §4.1): growth factor (MSS/s³) and decrease.
const CUBIC_C: f64 = 0.4;
const CUBIC_BETA: f64 = 0.7;

/// CUBIC's state: the window at the last loss (bytes), the time the curve
/// takes to climb back to it, the epoch's start, and the Reno estimate.
#[derive(Debug, Clone, Default)]
pub(super) struct Cubic {
    pub(super) w_max: f64,
    k: f64,
    epoch: Option<Instant>,
    w_est: f64,
}

impl Connection {
    /// A loss was detected (three duplicate ACKs or a timeout): the new
    /// slow-start threshold, and CUBIC's memory of where it happened.
    pub(super) fn on_congestion_event(&mut self) -> u32 {
        let mss = self.eff_mss();
        let flight = self.snd_max - self.snd_una;
        match self.cfg.congestion {
            Congestion::Reno => (flight / 2).max(2 * mss),
            Congestion::Cubic => {
                let c = &mut self.cubic;
                let cwnd = f64::from(self.cwnd);
                // Fast convergence (RFC 9438 §4.7): losing again below the last
                // maximum means another flow wants room; give some up.
                c.w_max = if cwnd < c.w_max {
                    cwnd * (1.0 + CUBIC_BETA) / 2.0
                } else {
                    cwnd
                };
                c.epoch = None;
                ((f64::from(flight.min(self.cwnd)) * CUBIC_BETA) as u32).max(2 * mss)
            }
        }
    }

    /// Window growth above ssthresh for `acked` newly acknowledged bytes.
    pub(super) fn congestion_avoidance(&mut self, now: Instant, acked: u32) {
        let mss = self.eff_mss();
        if self.cfg.congestion == Congestion::Reno {
            // One MSS per window acknowledged, counting bytes (RFC 3465), so
            // that a delayed-ACK peer does not halve the growth.
            let inc = (u64::from(mss) * u64::from(acked) / u64::from(self.cwnd.max(1))).max(1);
            self.cwnd = (u64::from(self.cwnd) + inc).min(u64::from(MAX_CWND)) as u32;
            return;
        }
        let (m, cwnd) = (f64::from(mss), f64::from(self.cwnd));
        let c = &mut self.cubic;
        let epoch = *c.epoch.get_or_insert_with(|| {
            // A new epoch (RFC 9438 §4.2): K is when the cubic curve gets
            // back to w_max, starting from the current window.
            if cwnd < c.w_max {
                c.k = ((c.w_max - cwnd) / m / CUBIC_C).cbrt();
            } else {
                c.k = 0.0;
                c.w_max = cwnd;
            }
            c.w_est = cwnd;
            now
        });
        let rtt = self.srtt.unwrap_or(Duration::from_millis(1)).as_secs_f64();
        let t = now.saturating_since(epoch).as_secs_f64();
        let w_cubic = |t: f64| c.w_max + CUBIC_C * (t - c.k).powi(3) * m;
        // Reno-friendly estimate (§4.3), α = 3(1-β)/(1+β).
        let alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
        c.w_est += alpha * m * f64::from(acked) / cwnd;
        let next = if w_cubic(t) < c.w_est {
            c.w_est
        } else {
            // Concave/convex regions (§4.4-4.5): aim at where the curve will
            // be one RTT from now, at most 1.5× the window.
            let target = w_cubic(t + rtt).clamp(cwnd, 1.5 * cwnd);
            cwnd + (target - cwnd) / cwnd * f64::from(acked)
        };
        self.cwnd = (next as u32).clamp(self.cwnd, MAX_CWND);
    }
}
