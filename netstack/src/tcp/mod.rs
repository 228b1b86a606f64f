//! TCP (RFC 9293), as a sans-IO core.
//!
//! [`Connection`] is one connection's state machine: it takes segments and
//! `now`, and yields segments and a wake-up time. It does no I/O and reads no
//! clock. Payload is `bytes::Bytes`: received data is handed out as the slices
//! it arrived in, and the send queue holds references that retransmissions
//! reuse, never copies.
//!
//! Slice 1 (this file set): handshake both ways, data transfer with
//! cumulative ACKs, RTO per RFC 6298 with a configurable minimum, NewReno fast
//! retransmit and recovery (RFC 5681/6582), window scaling and MSS options
//! (RFC 7323 §2), zero-window probing, FIN/half-close, TIME_WAIT, RST handling
//! with RFC 5961 challenge ACKs, and a retransmission limit.
//!
//! [`Engine`] is the per-core layer: 4-tuple demux, listeners and backlog,
//! SYN cookies past the backlog (RFC 4987), RFC 6528 ISNs, a timer wheel, and
//! an event queue.
//!
//! Also SACK (RFC 2018, recovery after RFC 6675) and Limited Transmit (RFC 3042).
//!
//! TODO (issue 3, later slices): timestamps (RFC 7323
//! §3-5) and the short TIME_WAIT they allow, RFC 6191 SYN in TIME_WAIT,
//! CUBIC, delayed ACKs, keepalive, RSS-aware ephemeral ports,
//! mbuf-backed `Bytes` (payload is copied out of the frame for now), and the
//! hookup to `Stack` and the data plane.

mod conn;
mod engine;
mod seq;
mod wheel;
pub mod wire;

pub use conn::{
    CloseReason, Congestion, ConnStats, Connection, Keepalive, Segment, State, TcpConfig,
};
pub use engine::{ConnId, Engine, EngineConfig, EngineStats, Event, FourTuple};
pub use seq::Seq;

#[cfg(test)]
mod prop;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_engine;
#[cfg(test)]
mod sim_smoltcp;
