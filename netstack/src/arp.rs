//! The neighbour cache: learned entries with expiry, and bounded queues of
//! packets waiting for a neighbour to answer.
//!
//! A learned entry is not simply forgotten when it expires, which would
//! make the next packet wait (or be dropped) for a new resolution: as
//! Linux's STALE → DELAY → PROBE, an entry in use is re-confirmed shortly
//! before it expires (requests sent while packets keep using the known
//! address), stays usable while the re-confirmation is under way, and is
//! removed only when the neighbour stops answering. An entry unused for a
//! whole TTL past its expiry is forgotten.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use hashbrown::HashMap;
use smoltcp::wire::EthernetAddress;

use crate::Instant;
use crate::iface::ArpParams;
use crate::stats::DropReason;

type Key = (usize, Ipv4Addr);

#[derive(Debug)]
enum Entry<F> {
    Reachable {
        mac: EthernetAddress,
        expires: Instant,
        /// A re-confirmation under way: requests sent, next one due.
        refresh: Option<(u32, Instant)>,
    },
    Incomplete {
        requests: u32,
        next_request: Instant,
        pending: VecDeque<F>,
    },
}

/// What a timer poll asks the stack to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Send (another) ARP request.
    Request(usize, Ipv4Addr),
    /// Gave up on a neighbour; this many packets were dropped.
    Unresolved(usize),
    /// A known neighbour answered none of its re-confirmation requests: it
    /// is forgotten (the next packet for it resolves it anew).
    Lost,
}

#[derive(Debug)]
pub(crate) struct ArpCache<F> {
    entries: HashMap<Key, Entry<F>, foldhash::fast::RandomState>,
    /// Keys of incomplete entries and of entries being re-confirmed: the
    /// only ones with timers, so polling never scans the learned entries.
    timed: Vec<Key>,
    pending_total: usize,
    last_sweep: Option<Instant>,
    p: ArpParams,
}

impl<F> ArpCache<F> {
    pub(crate) fn new(p: ArpParams) -> Self {
        ArpCache {
            entries: HashMap::with_capacity_and_hasher(
                p.max_entries.min(1 << 16),
                Default::default(),
            ),
            timed: Vec::new(),
            pending_total: 0,
            last_sweep: None,
            p,
        }
    }

    /// The neighbour's MAC if known, and whether the caller must send a
    /// request to re-confirm it now (it expires soon, or has expired, and
    /// no re-confirmation is under way). A known neighbour stays usable
    /// while it is re-confirmed; one unused for a whole TTL past its expiry
    /// is forgotten, so the caller resolves it again.
    #[inline]
    pub(crate) fn lookup(
        &mut self,
        now: Instant,
        iface: usize,
        ip: Ipv4Addr,
    ) -> Option<(EthernetAddress, bool)> {
        let key = (iface, ip);
        let lead = self.refresh_lead();
        let ttl = self.p.entry_ttl;
        let interval = self.p.request_interval;
        match self.entries.get_mut(&key) {
            Some(Entry::Reachable {
                mac,
                expires,
                refresh,
            }) => {
                if refresh.is_none() && now >= *expires + ttl {
                    self.entries.remove(&key);
                    return None;
                }
                if refresh.is_none() && now + lead >= *expires {
                    *refresh = Some((1, now + interval));
                    let mac = *mac;
                    // A key may still be listed from an earlier timer
                    // (learned again since); the list is short.
                    if !self.timed.contains(&key) {
                        self.timed.push(key);
                    }
                    return Some((mac, true));
                }
                Some((*mac, false))
            }
            _ => None,
        }
    }

    /// How long before an entry in use expires its re-confirmation starts:
    /// the time every request may take, so that an answer comes before the
    /// entry goes stale (at most half the TTL).
    fn refresh_lead(&self) -> Duration {
        (self.p.request_interval * self.p.max_requests).min(self.p.entry_ttl / 2)
    }

    /// Hold `frame` until `ip` resolves. `Ok(true)`: this is a new neighbour
    /// and the caller must send the first request now.
    pub(crate) fn enqueue(
        &mut self,
        now: Instant,
        iface: usize,
        ip: Ipv4Addr,
        frame: F,
    ) -> Result<bool, DropReason> {
        if self.pending_total >= self.p.max_pending_total {
            return Err(DropReason::ArpPendingFull);
        }
        let key = (iface, ip);
        if let Some(Entry::Incomplete { pending, .. }) = self.entries.get_mut(&key) {
            if pending.len() >= self.p.max_pending_per_neighbor {
                return Err(DropReason::ArpPendingFull);
            }
            pending.push_back(frame);
            self.pending_total += 1;
            return Ok(false);
        }
        if !self.entries.contains_key(&key) && !self.make_room(now) {
            return Err(DropReason::ArpTableFull);
        }
        let mut pending = VecDeque::with_capacity(self.p.max_pending_per_neighbor.min(8));
        pending.push_back(frame);
        self.pending_total += 1;
        self.entries.insert(
            key,
            Entry::Incomplete {
                requests: 1,
                next_request: now + self.p.request_interval,
                pending,
            },
        );
        self.timed.push(key);
        Ok(true)
    }

    /// Record `ip` at `mac`. With `create` false only an existing entry is
    /// updated (RFC 826's merge for ARP not addressed to us). Returns the
    /// packets that were waiting for it, to be sent now.
    pub(crate) fn learn(
        &mut self,
        now: Instant,
        iface: usize,
        ip: Ipv4Addr,
        mac: EthernetAddress,
        create: bool,
    ) -> Option<VecDeque<F>> {
        let key = (iface, ip);
        let fresh = Entry::Reachable {
            mac,
            expires: now + self.p.entry_ttl,
            refresh: None,
        };
        if let Some(e) = self.entries.get_mut(&key) {
            return match std::mem::replace(e, fresh) {
                Entry::Incomplete { pending, .. } => {
                    self.pending_total -= pending.len();
                    self.timed.retain(|k| *k != key);
                    Some(pending)
                }
                Entry::Reachable { .. } => None,
            };
        }
        if create && self.make_room(now) {
            self.entries.insert(key, fresh);
        }
        None
    }

    /// Advance timers; `out` receives what is due (cleared first).
    pub(crate) fn poll(&mut self, now: Instant, out: &mut Vec<Due>) {
        out.clear();
        let mut i = 0;
        while i < self.timed.len() {
            let key = self.timed[i];
            let (requests, next_request) = match self.entries.get_mut(&key) {
                Some(Entry::Incomplete {
                    requests,
                    next_request,
                    ..
                }) => (requests, next_request),
                Some(Entry::Reachable {
                    refresh: Some((requests, next_request)),
                    ..
                }) => (requests, next_request),
                // Resolved or re-confirmed since: no timer left.
                _ => {
                    self.timed.swap_remove(i);
                    continue;
                }
            };
            if *next_request > now {
                i += 1;
                continue;
            }
            if *requests >= self.p.max_requests {
                // Unanswered: the neighbour is gone (a known one is
                // resolved anew by the next packet for it).
                match self.entries.remove(&key) {
                    Some(Entry::Incomplete { pending, .. }) => {
                        self.pending_total -= pending.len();
                        out.push(Due::Unresolved(pending.len()));
                    }
                    _ => out.push(Due::Lost),
                }
                self.timed.swap_remove(i);
                continue;
            }
            *requests += 1;
            *next_request = now + self.p.request_interval;
            out.push(Due::Request(key.0, key.1));
            i += 1;
        }
    }

    /// When the next request or give-up is due.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.timed
            .iter()
            .filter_map(|k| match self.entries.get(k) {
                Some(Entry::Incomplete { next_request, .. })
                | Some(Entry::Reachable {
                    refresh: Some((_, next_request)),
                    ..
                }) => Some(*next_request),
                _ => None,
            })
            .min()
    }

    /// Make room for one entry: sweep expired entries (at most once per
    /// request interval, so a full table does not turn every miss into a
    /// scan), else evict one learned entry. Evicting beats refusing: a host
    /// that fills the table with spoofed senders then costs real neighbours a
    /// re-resolution, not their reachability. Incomplete entries (which hold
    /// packets) are never evicted; they are bounded by `max_pending_total`.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.entries.len() < self.p.max_entries {
            return true;
        }
        let due = self
            .last_sweep
            .is_none_or(|t| now.saturating_since(t) >= self.p.request_interval);
        if due {
            self.last_sweep = Some(now);
            // Only what `lookup` would forget too: entries unused for a TTL
            // past their expiry (not one being re-confirmed, still in use).
            let ttl = self.p.entry_ttl;
            self.entries.retain(|_, e| {
                !matches!(e, Entry::Reachable { expires, refresh: None, .. } if *expires + ttl <= now)
            });
            self.timed.retain(|k| self.entries.contains_key(k));
        }
        if self.entries.len() < self.p.max_entries {
            return true;
        }
        let victim = self
            .entries
            .iter()
            .find(|(_, e)| matches!(e, Entry::Reachable { .. }))
            .map(|(k, _)| *k);
        victim.is_some_and(|k| self.entries.remove(&k).is_some())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Default for ArpParams {
    fn default() -> Self {
        ArpParams {
            entry_ttl: Duration::from_secs(60),
            request_interval: Duration::from_secs(1),
            max_requests: 3,
            max_pending_per_neighbor: 8,
            max_pending_total: 1024,
            max_entries: 4096,
        }
    }
}
