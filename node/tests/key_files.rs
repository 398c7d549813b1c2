//! Secret key files: 0600 enforced, passphrase protection, no clear secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_node::config::Home;
use pdx_node::{Node, NodeError, pki};
use std::os::unix::fs::PermissionsExt;

fn certs(dir: &std::path::Path) -> std::path::PathBuf {
    certs_in(pdx_crypto::Suite::Intl, dir)
}

fn certs_in(suite: pdx_crypto::Suite, dir: &std::path::Path) -> std::path::PathBuf {
    pki::ca_init(&dir.join("ca"), "keytest", suite).unwrap();
    pki::ca_issue(&dir.join("ca"), "440000", "Guangdong", &dir.join("certs")).unwrap();
    dir.join("certs")
}

#[test]
fn the_node_refuses_key_files_others_can_read() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::new(tmp.path().join("home"));
    Node::init(&home, &certs(tmp.path()), "127.0.0.1:17999", None).unwrap();
    for f in std::fs::read_dir(home.keys()).unwrap() {
        let mode = f.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    drop(Node::open(&home, None).unwrap());
    std::fs::set_permissions(home.key("storage"), std::fs::Permissions::from_mode(0o644)).unwrap();
    match Node::open(&home, None) {
        Err(NodeError::Permissions { path, mode }) => {
            assert!(path.ends_with("storage.key"));
            assert_eq!(mode, 0o644);
        }
        other => panic!("expected a permission refusal, got {other:?}"),
    }
}

#[test]
fn passphrase_protected_keys_need_the_passphrase() {
    passphrase_protected_keys_need_the_passphrase_in(
        pdx_crypto::Suite::Intl,
        b"argon2id-aes256gcm",
    );
}

#[test]
fn gm_key_files_are_protected_by_pbkdf2_sm3_and_sm4_gcm() {
    passphrase_protected_keys_need_the_passphrase_in(pdx_crypto::Suite::Gm, b"pbkdf2-sm3-sm4gcm");
}

fn passphrase_protected_keys_need_the_passphrase_in(suite: pdx_crypto::Suite, protection: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::new(tmp.path().join("home"));
    Node::init(
        &home,
        &certs_in(suite, tmp.path()),
        "127.0.0.1:17998",
        Some(b"correct horse battery"),
    )
    .unwrap();
    let storage = std::fs::read(home.key("storage")).unwrap();
    assert!(storage.windows(protection.len()).any(|w| w == protection));
    assert!(matches!(
        Node::open(&home, None),
        Err(NodeError::Invalid(_))
    ));
    let wrong = Node::open(&home, Some(zeroize::Zeroizing::new(b"wrong".to_vec())));
    assert!(
        matches!(
            wrong,
            Err(NodeError::Crypto(pdx_crypto::CryptoError::Unlock { .. }))
        ),
        "{wrong:?}"
    );
    let node = Node::open(
        &home,
        Some(zeroize::Zeroizing::new(b"correct horse battery".to_vec())),
    )
    .unwrap();
    // Rotation re-encrypts new keys under the same passphrase.
    pdx_node::service::directory::rotate_key(&node, "encryption", "tester").unwrap();
    drop(node);
    Node::open(
        &home,
        Some(zeroize::Zeroizing::new(b"correct horse battery".to_vec())),
    )
    .unwrap();
}
