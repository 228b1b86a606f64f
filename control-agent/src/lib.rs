//! The control agent: an xDS client that configures the data plane.
//!
//! Layers, top to bottom:
//! - `client`: the ADS stream (gRPC over TCP or a Unix socket, state of the
//!   world or Delta), reconnects with jittered back-off, keeps the data
//!   plane in step (it re-sends everything after a data plane restart),
//!   and looks up STRICT_DNS hosts in tasks of their own;
//! - `xds`: the protocol state, no I/O and no clock (the caller passes
//!   `now`): versions, nonces, subscriptions, warming, ACK/NACK, what the
//!   data plane has and what it should get;
//! - `translate`: Envoy resources to the data plane's configuration model,
//!   one resource at a time, rejecting with a reason what would change
//!   meaning and ignoring (counted) what only observes;
//! - `bootstrap`: protobuf's JSON mapping for YAML files (Envoy bootstraps,
//!   single resources), through prost-reflect;
//! - `dataplane`: the data plane's admin socket.
//!
//! None of this is linked into the data plane: it only shares the
//! `dataplane-config` crate's model.
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod client;
pub mod config_dump;
pub mod dataplane;
pub mod fuzzing;
pub mod node;
pub mod translate;
pub mod xds;
