//! The listeners one app owns on one core: the engine addresses they are
//! bound to, and slots that keep their index while sessions refer to them.
//!
//! The L4 splice and the HTTP connection manager keep their listeners the
//! same way; each keeps its own `X` beside every listener. Updates arrive in
//! two halves (`retire`, then `apply`, as [`crate::App`] has them), and a
//! listener stops accepting by taking the connections whose handshake
//! completed: those are handed back for the app to open.

use std::net::Ipv4Addr;
use std::sync::Arc;

use hashbrown::HashMap;
use netstack::tcp::{ConnId, Engine};

use crate::live::{ListenerLive, Update};
use crate::slab::Slab;

#[derive(Debug)]
pub struct Listener<X> {
    pub live: Arc<ListenerLive>,
    /// What the owning app keeps beside it.
    pub extra: X,
    /// The engine listeners it owns (each port's address for `0.0.0.0`).
    bound: Vec<(Ipv4Addr, u16)>,
    sessions: u32,
    /// No longer configured (or no longer this app's): kept only for its
    /// sessions' counters.
    removed: bool,
}

#[derive(Debug)]
pub struct Listeners<X> {
    port_addrs: Vec<Ipv4Addr>,
    backlog: usize,
    /// Bound `(address, port)` → listener slot.
    bound: HashMap<(Ipv4Addr, u16), u32>,
    slots: Slab<Listener<X>>,
    by_name: HashMap<String, u32>,
}

/// Connections accepted on a listener that stopped accepting: (listener
/// slot, connection), for the app to open.
pub type Accepted = Vec<(u32, ConnId)>;

impl<X> Listeners<X> {
    /// `port_addrs` are the addresses a `0.0.0.0` listener binds.
    pub fn new(port_addrs: &[Ipv4Addr], backlog: usize) -> Listeners<X> {
        Listeners {
            port_addrs: port_addrs.to_vec(),
            backlog,
            bound: HashMap::new(),
            slots: Slab::new(),
            by_name: HashMap::new(),
        }
    }

    /// The listener bound to `addr`, if it is one of these.
    pub fn bound_to(&self, addr: (Ipv4Addr, u16)) -> Option<u32> {
        self.bound.get(&addr).copied()
    }

    fn bind(&mut self, e: &mut Engine, li: u32) {
        let sa = self.slots[li].live.addr;
        let addrs: Vec<Ipv4Addr> = if sa.ip().is_unspecified() {
            self.port_addrs.clone()
        } else {
            vec![*sa.ip()]
        };
        for a in addrs {
            e.listen(a, sa.port(), self.backlog);
            self.bound.insert((a, sa.port()), li);
            self.slots[li].bound.push((a, sa.port()));
        }
    }

    /// Stop accepting on listener `li`: connections that completed their
    /// handshake are taken (into `out`), later SYNs and handshakes in
    /// progress are reset.
    fn unbind(&mut self, e: &mut Engine, li: u32, out: &mut Accepted) {
        let bound = std::mem::take(&mut self.slots[li].bound);
        for (a, p) in bound {
            while let Some(id) = e.accept(a, p) {
                out.push((li, id));
            }
            e.unlisten(a, p);
            self.bound.remove(&(a, p));
        }
    }

    /// First half of an update: the listeners it removes, and those that
    /// are no longer this app's (`mine` says which are), stop accepting.
    /// Returns them and what they had accepted; once the app has opened
    /// those, it calls [`Listeners::removed`] for each.
    pub fn retire(
        &mut self,
        e: &mut Engine,
        u: &Update,
        mine: impl Fn(&ListenerLive) -> bool,
    ) -> (Vec<u32>, Accepted) {
        let others = u.listeners.iter().filter(|l| !mine(l)).map(|l| &l.cfg.name);
        let mut retired = Vec::new();
        let mut accepted = Vec::new();
        for name in u.remove_listeners.iter().chain(others) {
            if let Some(li) = self.by_name.remove(name) {
                self.unbind(e, li, &mut accepted);
                retired.push(li);
            }
        }
        (retired, accepted)
    }

    /// Listener `li`, retired, is forgotten with its last session.
    pub fn removed(&mut self, li: u32) {
        self.slots[li].removed = true;
        self.forget_if_unused(li);
    }

    /// Second half of an update: new and changed listeners that are this
    /// app's (`extra` gives what the app keeps for one, `None`: not its).
    /// Listeners that move release their old addresses first, so that
    /// another may take them in the same update; nothing binds once
    /// `drained`. Returns what moved listeners had accepted.
    pub fn apply(
        &mut self,
        e: &mut Engine,
        u: &Update,
        drained: bool,
        extra: impl Fn(&ListenerLive) -> Option<X>,
    ) -> Accepted {
        let mut accepted = Vec::new();
        let mut to_bind = Vec::new();
        for l in &u.listeners {
            let Some(x) = extra(l) else {
                continue;
            };
            match self.by_name.get(&l.cfg.name) {
                Some(&li) => {
                    if self.slots[li].live.addr != l.addr {
                        self.unbind(e, li, &mut accepted);
                        to_bind.push(li);
                    }
                    let s = &mut self.slots[li];
                    s.live = l.clone();
                    s.extra = x;
                }
                None => {
                    let li = self.slots.insert(Listener {
                        live: l.clone(),
                        extra: x,
                        bound: Vec::new(),
                        sessions: 0,
                        removed: false,
                    });
                    self.by_name.insert(l.cfg.name.clone(), li);
                    to_bind.push(li);
                }
            }
        }
        if !drained {
            for li in to_bind {
                self.bind(e, li);
            }
        }
        accepted
    }

    /// Stop accepting on every listener; returns what they had accepted.
    pub fn drain(&mut self, e: &mut Engine) -> Accepted {
        let all: Vec<u32> = self.by_name.values().copied().collect();
        let mut accepted = Vec::new();
        for li in all {
            self.unbind(e, li, &mut accepted);
        }
        accepted
    }

    /// A session of listener `li` begins.
    pub fn session_started(&mut self, li: u32) {
        self.slots[li].sessions += 1;
    }

    /// A session of listener `li` ended: a removed listener goes with its
    /// last one.
    pub fn session_ended(&mut self, li: u32) {
        self.slots[li].sessions -= 1;
        self.forget_if_unused(li);
    }

    fn forget_if_unused(&mut self, li: u32) {
        if self
            .slots
            .get(li)
            .is_some_and(|l| l.removed && l.sessions == 0)
        {
            self.slots.remove(li);
        }
    }
}

impl<X> std::ops::Index<u32> for Listeners<X> {
    type Output = Listener<X>;
    fn index(&self, li: u32) -> &Listener<X> {
        &self.slots[li]
    }
}
