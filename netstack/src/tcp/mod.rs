//! TCP (RFC 9293), as a sans-IO core.
//!
//! [`Connection`] is one connection's state machine: it takes segments and
//! `now`, and yields segments and a wake-up time. It does no I/O and reads no
//! clock. Payload is `bytes::Bytes`: received data is handed out as the slices
//! it arrived in, and the send queue holds references that retransmissions
//! reuse, never copies.
//!
//! [`Connection`] implements the handshake both ways, data transfer, RTO per
//! RFC 6298 with a configurable floor, NewReno (RFC 5681/6582) or CUBIC (RFC
//! 9438), SACK (RFC 2018, recovery after RFC 6675), Limited Transmit (RFC
//! 3042), window scaling, timestamps and PAWS (RFC 7323), zero-window
//! probing, delayed ACK, FIN/half-close, TIME_WAIT (a newer SYN reopens it,
//! RFC 6191), RST handling with RFC 5961 challenge ACKs, keepalive, user and
//! idle timeouts.
//!
//! [`Engine`] is the per-core layer: 4-tuple demux, listeners and backlog,
//! SYN cookies past the backlog (RFC 4987), RFC 6528 ISNs, ephemeral ports
//! chosen by RSS steering, a timer wheel, an event queue, and a per-core
//! budget on buffered payload.

mod conn;
mod engine;
mod seq;
mod wheel;
pub mod wire;

pub use conn::{
    CloseReason, Congestion, ConnStats, Connection, CookieHandshake, CookieOptions, Keepalive,
    Negotiated, Segment, State, TcpConfig, window_shift_for,
};
pub use engine::{ConnId, Engine, EngineConfig, EngineStats, Event, FourTuple};
pub use seq::Seq;

#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod prop;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_engine;
#[cfg(test)]
mod sim_smoltcp;
