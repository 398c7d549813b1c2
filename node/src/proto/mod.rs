//! The exchange protocol, free of IO: framing, messages, and the state
//! machines of the connection handshake and of transfers. The QUIC driver in
//! `net` runs them; tests drive them directly, without sockets.

pub mod call;
pub mod frame;
pub mod handshake;
pub mod msg;
pub mod transfer;
