//! Timers: retransmission, persist, delayed ACK, keepalive, TIME_WAIT, user
//! and idle timeouts.
//!
//! Each timer is an `Option<Instant>` on the connection (or derived from its
//! state), gathered by `poll_timeout` and run by `handle_timeout`. This
//! file holds the deadlines that are computed rather than stored, the RTO's
//! expiry (RFC 6298 §5.4-5.6 back-off, RFC 5681 §3.1 window reduction) and
//! the entry into TIME_WAIT.

use super::{CloseReason, Connection, State};
use crate::Instant;

/// SYN (or SYN-ACK) transmissions before a handshake is given up.
const MAX_SYN_RETRIES: u32 = 6;

impl Connection {
    /// Connections that can idle: synchronized, not yet closing on our side.
    fn can_idle(&self) -> bool {
        matches!(self.state, State::Established | State::CloseWait)
    }

    pub(super) fn keepalive_at(&self) -> Option<Instant> {
        let k = self.cfg.keepalive?;
        let quiet = self.can_idle() && self.snd_max == self.snd_una && self.unsent() == 0;
        quiet.then(|| self.last_activity + k.idle + k.interval * self.keepalives_unanswered)
    }

    pub(super) fn user_timeout_at(&self) -> Option<Instant> {
        Some(self.progress_at? + self.cfg.user_timeout?)
    }

    pub(super) fn idle_timeout_at(&self) -> Option<Instant> {
        let t = self.cfg.idle_timeout?;
        self.can_idle().then(|| self.last_activity + t)
    }

    pub(super) fn on_rto(&mut self, now: Instant) {
        if self.snd_max == self.snd_una {
            self.rto_at = None;
            return;
        }
        self.stats.rto_expirations += 1;
        // A closed peer window is persistence, not loss: probes go on as long
        // as the peer answers them.
        if self.persist_at.is_none() {
            self.timeouts_in_a_row += 1;
        }
        let limit = if self.syn_acked {
            self.cfg.max_retransmits
        } else {
            MAX_SYN_RETRIES.min(self.cfg.max_retransmits)
        };
        if self.timeouts_in_a_row > limit {
            self.reset_and_finish(CloseReason::TimedOut);
            return;
        }
        // RFC 5681 §3.1 eq. 4 and RFC 6298 §5.4-5.6: back off and go back to
        // the first unacknowledged byte.
        let mss = self.eff_mss();
        self.ssthresh = self.on_congestion_event();
        self.cwnd = mss;
        self.recover = None;
        self.rto_recover = Some(self.snd_max);
        self.dup_acks = 0;
        self.limited_transmit = 0;
        self.rtt_probe = None;
        // The receiver may have reneged (RFC 2018 §8): start over from snd_una.
        self.scoreboard.clear();
        self.hole_tokens = 0;
        self.snd_nxt = self.snd_una;
        self.rto = (self.rto * 2).min(self.cfg.max_rto);
        self.rto_at = Some(now + self.rto);
    }

    pub(super) fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.rto_at = None;
        self.persist_at = None;
        self.time_wait_at = Some(now + self.cfg.time_wait);
    }
}
