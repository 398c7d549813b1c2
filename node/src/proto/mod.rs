//! The exchange protocol, free of IO: framing, messages and the transfer state
//! machines. `crate::net` drives them over QUIC; tests drive them directly.

pub mod frame;
pub mod msg;
pub mod transfer;
