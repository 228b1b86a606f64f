//! Test services on our own TCP stack (echo, discard, source), driven only by
//! the engine's events. They exist to exercise the stack against real clients.

use std::net::Ipv4Addr;

use bytes::Bytes;
use dataplane_config::{ServiceConfig, ServiceKind};
use hashbrown::HashMap;
use netstack::counters;
use netstack::tcp::{ConnId, Engine, Event};

use crate::app::{App, Cx};

/// Bytes the source service cycles through: byte `i` of a stream is `i % 251`,
/// so a client can check every byte.
const SOURCE_PERIOD: usize = 251;
const SOURCE_CHUNK: usize = 64 * 1024;

counters! {
    /// Service counters, readable from the admin thread.
    pub struct ServiceStats {
        accepted,
        echo_bytes,
        discard_bytes,
        source_bytes,
    }
}

#[derive(Debug)]
struct Conn {
    kind: ServiceKind,
    /// Echo: what the send buffer has not taken yet. While set, we stop
    /// reading, so the receive window closes instead of memory growing.
    held: Option<Bytes>,
    /// Source: stream offset.
    sent: u64,
    peer_closed: bool,
}

#[derive(Debug)]
pub struct Services {
    kinds: HashMap<u16, ServiceKind>,
    conns: HashMap<ConnId, Conn>,
    /// SOURCE_CHUNK + SOURCE_PERIOD bytes of the pattern; sends are slices.
    pattern: Bytes,
    stats: std::sync::Arc<ServiceStats>,
}

impl Services {
    /// Listen for every service on every address.
    pub fn new(
        cfg: &[ServiceConfig],
        addrs: &[Ipv4Addr],
        engine: &mut Engine,
        backlog: usize,
    ) -> Services {
        for s in cfg {
            for a in addrs {
                engine.listen(*a, s.port, backlog);
            }
        }
        let pattern: Vec<u8> = (0..SOURCE_CHUNK + SOURCE_PERIOD)
            .map(|i| (i % SOURCE_PERIOD) as u8)
            .collect();
        Services {
            kinds: cfg.iter().map(|s| (s.port, s.kind)).collect(),
            conns: HashMap::new(),
            pattern: Bytes::from(pattern),
            stats: Default::default(),
        }
    }

    pub fn stats(&self) -> &std::sync::Arc<ServiceStats> {
        &self.stats
    }

    /// Move as much as the connection allows, then close when done.
    fn pump(&mut self, e: &mut Engine, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match c.kind {
            ServiceKind::Echo => {
                loop {
                    let b = match c.held.take() {
                        Some(b) => b,
                        None => match e.recv(id) {
                            Some(b) => b,
                            None => break,
                        },
                    };
                    let n = e.send(id, b.clone());
                    self.stats.echo_bytes.add(n as u64);
                    if n < b.len() {
                        c.held = Some(b.slice(n..));
                        break; // wait for Writable
                    }
                }
                if c.peer_closed && c.held.is_none() {
                    e.close(id);
                }
            }
            ServiceKind::Discard => {
                while let Some(b) = e.recv(id) {
                    self.stats.discard_bytes.add(b.len() as u64);
                }
                if c.peer_closed {
                    e.close(id);
                }
            }
            ServiceKind::Source => {
                while e.recv(id).is_some() {}
                if c.peer_closed {
                    e.close(id);
                    return;
                }
                loop {
                    let start = (c.sent % SOURCE_PERIOD as u64) as usize;
                    let n = e.send(id, self.pattern.slice(start..start + SOURCE_CHUNK));
                    c.sent += n as u64;
                    self.stats.source_bytes.add(n as u64);
                    if n < SOURCE_CHUNK {
                        break; // wait for Writable
                    }
                }
            }
        }
    }
}

impl App for Services {
    /// Take the events of the services' listeners and connections; give
    /// back the others.
    fn handle(&mut self, cx: &mut Cx<'_>, ev: Event) -> Option<Event> {
        let e = &mut *cx.engine;
        match ev {
            Event::Incoming { listener } => {
                let Some(&kind) = self.kinds.get(&listener.1) else {
                    return Some(ev);
                };
                while let Some(id) = e.accept(listener.0, listener.1) {
                    self.stats.accepted.inc();
                    self.conns.insert(
                        id,
                        Conn {
                            kind,
                            held: None,
                            sent: 0,
                            peer_closed: false,
                        },
                    );
                    self.pump(e, id);
                }
            }
            Event::Readable(id) | Event::Writable(id) if self.conns.contains_key(&id) => {
                self.pump(e, id)
            }
            Event::PeerClosed(id) if self.conns.contains_key(&id) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.peer_closed = true;
                }
                self.pump(e, id);
            }
            Event::Closed(id, _) if self.conns.contains_key(&id) => {
                self.conns.remove(&id);
            }
            _ => return Some(ev),
        }
        None
    }
}
