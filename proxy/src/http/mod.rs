//! HTTP/1.1: the codec, the router and the connection manager app.

pub mod codec;
#[doc(hidden)]
pub mod fuzzing;
pub mod hcm;
pub mod router;
pub mod trace;
