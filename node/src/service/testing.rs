//! Test support: a node on a real store, with its own CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use crate::config::Home;
use crate::node::Node;

/// Initialises and opens the node of department `dept` under `dir`, with a
/// fresh intl CA.
pub(crate) fn node(dir: &std::path::Path, dept: &str, name: &str) -> Node {
    let ca = dir.join("ca");
    crate::pki::ca_init(&ca, "unit", pdx_crypto::Suite::Intl).unwrap();
    let certs = dir.join("certs");
    crate::pki::ca_issue(&ca, dept, name, &certs).unwrap();
    let home = Home::new(dir.join("home"));
    Node::init(&home, &certs, "127.0.0.1:0", None).unwrap();
    Node::open(&home, None).unwrap()
}
