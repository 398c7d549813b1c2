//! The pdx node as a library; the `pdx` binary (crate `pdx-cli`) parses,
//! dispatches and renders, everything else is here.
//!
//! Layers, each using only those below it (ARCHITECTURE.md):
//! - [`api`] and [`admin`]: every command as data, run in-process or by a
//!   running node through its admin socket;
//! - [`service`]: what a node does (datasets, releases, grants, transfers,
//!   documents, aggregates, settlement, witnessing), owning its column families;
//! - [`net`]: the QUIC driver, which only moves bytes and drives the
//!   protocol machines, calling the service layer through traits;
//! - [`proto`]: the protocol without IO (frames, messages, handshake and
//!   transfer state machines);
//! - [`node`], [`store`], [`keys`], [`pki`], [`config`]: the node home, its
//!   RocksDB store and key layouts, secrets, certificates and TLS.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod config;
mod error;
pub mod failpoint;
pub mod fuzzing;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod node;
pub mod pki;
pub mod progress;
pub mod proto;
pub mod records;
pub mod service;
pub mod store;
pub mod timearg;

pub use error::{NodeError, Result};
pub use node::Node;
