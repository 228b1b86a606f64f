//! The neighbour cache: learned entries with expiry, and bounded queues of
//! packets waiting for a neighbour to answer.

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
}

#[derive(Debug)]
pub(crate) struct ArpCache<F> {
    entries: HashMap<Key, Entry<F>, foldhash::fast::RandomState>,
    /// Keys of incomplete entries: the only ones with timers, so polling never
    /// scans the learned entries.
    incomplete: Vec<Key>,
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
            incomplete: Vec::new(),
            pending_total: 0,
            last_sweep: None,
            p,
        }
    }

    /// The neighbour's MAC if known and fresh. An expired entry is forgotten,
    /// so the caller resolves it again.
    #[inline]
    pub(crate) fn lookup(
        &mut self,
        now: Instant,
        iface: usize,
        ip: Ipv4Addr,
    ) -> Option<EthernetAddress> {
        match self.entries.get(&(iface, ip)) {
            Some(Entry::Reachable { mac, expires }) if *expires > now => Some(*mac),
            Some(Entry::Reachable { .. }) => {
                self.entries.remove(&(iface, ip));
                None
            }
            _ => None,
        }
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
        self.incomplete.push(key);
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
        };
        if let Some(e) = self.entries.get_mut(&key) {
            return match std::mem::replace(e, fresh) {
                Entry::Incomplete { pending, .. } => {
                    self.pending_total -= pending.len();
                    self.incomplete.retain(|k| *k != key);
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
        while i < self.incomplete.len() {
            let key = self.incomplete[i];
            let Some(Entry::Incomplete {
                requests,
                next_request,
                pending,
            }) = self.entries.get_mut(&key)
            else {
                self.incomplete.swap_remove(i);
                continue;
            };
            if *next_request > now {
                i += 1;
                continue;
            }
            if *requests >= self.p.max_requests {
                let n = pending.len();
                self.pending_total -= n;
                self.entries.remove(&key);
                self.incomplete.swap_remove(i);
                out.push(Due::Unresolved(n));
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
        self.incomplete
            .iter()
            .filter_map(|k| match self.entries.get(k) {
                Some(Entry::Incomplete { next_request, .. }) => Some(*next_request),
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
            self.entries
                .retain(|_, e| !matches!(e, Entry::Reachable { expires, .. } if *expires <= now));
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
