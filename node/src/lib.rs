//! The pdx node: everything `pdx` does, as a library the thin binary drives.
//!
//! - [`config`], [`keys`], [`pki`], [`tls`]: the node home, secrets, the network
//!   PKI and TLS.
//! - [`store`], [`dataset`], [`release`], [`grants`]: data at rest and releases.
//! - [`proto`]: the exchange protocol without IO (framing, messages, transfer
//!   state machines); [`net`] drives it over QUIC.
//! - [`commands`], [`admin`]: every command as data, executed in-process or by a
//!   running node through its admin socket.
#![forbid(unsafe_code)]

pub mod admin;
pub mod commands;
pub mod config;
pub mod dataset;
pub mod docs;
mod error;
pub mod fuzzing;
pub mod grants;
pub mod he;
pub mod keys;
pub mod net;
pub mod node;
pub mod pki;
pub mod preview;
pub mod progress;
pub mod proto;
pub mod records;
pub mod release;
pub mod settle;
pub mod store;
pub mod tls;

pub use error::{NodeError, Result};
pub use node::Node;
