//! Raw bindings to the system DPDK (>= 22.11), generated at build time.
//!
//! Nothing here is safe to call on its own: the `dpdk` crate wraps it in owned
//! types (EAL, mempool, mbuf, port, queue) and is the only user of this crate.
//!
//! Only an explicit allowlist of DPDK is bound (see `build.rs`). `static inline`
//! fast-path functions (`rte_eth_rx_burst`, `rte_pktmbuf_alloc`, ...) are
//! reached through C wrappers that bindgen generates and `cc` compiles; each is
//! one real call, so callers batch (bursts, bulk alloc/free).
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn
)]
#![allow(missing_debug_implementations)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// The DPDK version these bindings were generated against (`pkg-config --modversion`).
pub const BUILT_AGAINST: &str = env!("DPDK_SYS_BUILT_AGAINST");
