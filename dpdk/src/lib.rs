//! Safe, owned wrappers over DPDK: the one crate besides `dpdk-sys` that holds `unsafe`.
//!
//! - [`eal`]: once-per-process EAL start (argument strings kept alive for EAL's
//!   lifetime), lcore launch/wait, TSC clock.
//! - [`mempool`]: packet-buffer pools, one per NUMA socket and worker.
//! - [`mbuf`]: [`Mbuf`], an owned packet buffer that frees itself on drop. Raw
//!   `rte_mbuf` pointers never leave this crate.
//! - [`port`]: Ethernet ports: configuration (queues, RSS, offloads), start, MAC,
//!   link, stats and xstats; per-queue [`RxQueue`]/[`TxQueue`] handles, each owned
//!   by exactly one core, with burst RX and batched TX.
//!
//! Invariants this crate upholds for its callers:
//! - EAL is initialised before any other object can be made (they all take or
//!   hold an [`Eal`]), and is cleaned up only after the last of them is gone.
//! - A queue handle exists at most once per (port, queue), and is `Send` but not
//!   `Sync`: DPDK queues are not thread-safe, so one core owns each.
//! - Mutable access to packet bytes is given only to the sole owner of a buffer.

// The one crate besides dpdk-sys allowed unsafe code (the workspace denies it).
#![allow(unsafe_code)]

pub mod eal;
pub mod mbuf;
pub mod mempool;
pub mod port;

pub use eal::{Eal, EalError, Lcore};
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use port::{Capabilities, Link, Port, PortConfig, PortStats, RxQueue, TxQueue};

/// The DPDK version the bindings were generated against.
pub fn version() -> &'static str {
    dpdk_sys::BUILT_AGAINST
}

/// A DPDK call that failed, with DPDK's own description of why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {reason} (code {code})")]
pub struct Error {
    pub op: String,
    pub code: i32,
    pub reason: String,
}

impl Error {
    /// Build from a negative return code (`-errno`) or, when `code` is not
    /// negative, from `rte_errno`.
    pub(crate) fn from_code(op: impl Into<String>, code: i32) -> Self {
        let code = if code < 0 {
            -code
        } else {
            // SAFETY: reads this thread's rte_errno; no preconditions.
            unsafe { dpdk_sys::dp_errno() }
        };
        Error {
            op: op.into(),
            code,
            reason: strerror(code),
        }
    }

    pub(crate) fn other(op: impl Into<String>, reason: impl Into<String>) -> Self {
        Error {
            op: op.into(),
            code: 0,
            reason: reason.into(),
        }
    }
}

pub(crate) fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string that stays valid until the next call on this thread;
    // we copy it out at once.
    unsafe {
        let p = dpdk_sys::rte_strerror(code);
        if p.is_null() {
            return format!("error {code}");
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
