//! A user-space network stack for one worker core.
//!
//! Layers, bottom up:
//! - **frame** ([`Frame`], [`FramePool`]): what the stack needs from a packet
//!   buffer. `dpdk::Mbuf` implements it (feature `dpdk`); [`HeapFrame`] is the
//!   in-memory buffer that tests and simulations use.
//! - **wire**: packet formats are smoltcp's `wire` module (`new_checked` on
//!   everything that came off the wire); only its formats, not its sockets.
//! - **iface** ([`Stack`]): Ethernet, ARP (reply, resolve our next hops with a
//!   bounded queue of packets waiting for resolution, entry expiry), IPv4
//!   (header and checksum checks per the port's offloads, fragments counted and
//!   dropped), ICMP echo, and a static route table.
//! - **stats** ([`Stats`]): one counter per outcome and per drop reason, written
//!   by the owning core only, readable from any thread.
//!
//! Invariants:
//! - The stack does no I/O and never reads a clock: the caller passes `now` and
//!   a [`Transmit`] sink, and asks [`Stack::poll_at`] when to call back.
//! - Nothing in it panics on network input; every frame it refuses is counted
//!   under exactly one [`DropReason`].
//! - Per-packet work is independent of the number of neighbours or routes
//!   beyond a hash lookup and a short route scan. It allocates only for TCP
//!   payload: the small refcount block of a `Bytes` (whether the payload stays
//!   in its buffer or is copied) and, when attached on TX, its holder.
//! - TCP payload is passed by reference where the thresholds of
//!   [`ZeroCopyConfig`] and the device allow, and every copy is counted in
//!   [`CopyCounters`].
#![forbid(unsafe_code)]

mod arp;
mod frame;
pub mod fuzzing;
mod iface;
mod route;
pub mod rss;
mod stats;
pub mod tcp;
pub mod time;

/// Simulated links for tests, here and in other crates (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(feature = "dpdk")]
mod dpdk;

pub use frame::{Frame, FramePool, HeapFrame, HeapPool, RxChecksum};
pub use iface::{ArpParams, Handoff, IfaceConfig, Stack, StackConfig, Transmit, ZeroCopyConfig};
pub use route::{Route, RouteTable};
pub use stats::{CopyCounters, Counter, DropReason, FrameCounters, Stats};
pub use time::Instant;

/// Re-exported wire types callers need to build configs.
pub use smoltcp::wire::EthernetAddress;

#[cfg(test)]
mod tests;
