//! The directory a node keeps of its network: where peers listen and when
//! they were last reached, and the encryption key documents of every
//! department (its own, signed here, and others', verified before they are
//! stored and again when used). Owns the `peers` and `keydir` families.

use crate::error::{NodeError, Result};
use crate::keys::NodeKeys;
use crate::node::{Node, endorse};
use crate::pki;
use crate::store::{self, CF_KEYDIR, CF_PEERS};
use pdx_audit::EventKind;
use pdx_audit::store::now_ms;
use pdx_crypto::keydoc::{KeyDocument, KeyDocumentBody};
use pdx_crypto::{KeyId, SigningKey};
use serde::{Deserialize, Serialize};

/// Where a peer listens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Department.
    pub dept: String,
    /// `host:port`.
    pub addr: String,
    /// Last successful contact (ms).
    pub last_contact_ms: Option<u64>,
    /// Last error talking to it.
    pub last_error: Option<String>,
}

/// Signs and stores this node's key documents where they are missing or
/// out of date (an encryption key rotated or retired, or signed under a
/// certificate since renewed).
pub fn publish_own_key_documents(node: &Node) -> Result<()> {
    let keys = node.keys()?;
    for (i, k) in keys.encryption.iter().enumerate() {
        let key = store::keydir_key(&node.config.dept, &k.key_id());
        let existing: Option<KeyDocument> = node.store.get(CF_KEYDIR, &key)?;
        let active = i == 0;
        let up_to_date = existing
            .as_ref()
            .and_then(|d| {
                d.signed
                    .dangerous_decode_unverified::<KeyDocumentBody>("key document")
                    .ok()
            })
            .is_some_and(|b| b.active == active)
            && existing
                .as_ref()
                .is_some_and(|d| d.certificate == keys.cert.as_ref());
        if up_to_date {
            continue;
        }
        let body = KeyDocumentBody {
            version: 1,
            dept: node.config.dept.clone(),
            suite: node.suite.envelope_id(),
            public: k.public(),
            created_ms: now_ms(),
            active,
        };
        let doc = KeyDocument::sign(&body, &keys.identity, keys.cert.to_vec())?;
        node.store.put(CF_KEYDIR, &key, &doc)?;
    }
    Ok(())
}

/// This node's current key documents (what Hello carries).
pub fn own_key_documents(node: &Node) -> Result<Vec<KeyDocument>> {
    Ok(node
        .store
        .scan::<KeyDocument>(CF_KEYDIR, &store::keydir_prefix(&node.config.dept))?
        .into_iter()
        .map(|(_, d)| d)
        .collect())
}

/// This node's active encryption key document (what calls carry).
pub fn own_active_key_document(node: &Node) -> Result<Option<KeyDocument>> {
    Ok(own_key_documents(node)?.into_iter().find(|d| {
        d.signed
            .dangerous_decode_unverified::<KeyDocumentBody>("key document")
            .is_ok_and(|b| b.active)
    }))
}

/// Verifies key documents (certificate against the CA and CRL, signature,
/// department) and stores the good ones. Returns (stored, rejected reasons).
pub fn accept_key_documents(node: &Node, docs: &[KeyDocument]) -> Result<(usize, Vec<String>)> {
    let mut stored = 0;
    let mut rejected = Vec::new();
    for doc in docs {
        match verify_key_document(node, doc) {
            Ok(body) => {
                let key = store::keydir_key(&body.dept, &body.key_id());
                let newer = match node.store.get::<KeyDocument>(CF_KEYDIR, &key)? {
                    None => true,
                    Some(old) => old
                        .signed
                        .dangerous_decode_unverified::<KeyDocumentBody>("key document")
                        .map(|o| o.created_ms < body.created_ms || o.active != body.active)
                        .unwrap_or(true),
                };
                if newer && body.dept != node.config.dept {
                    node.store.put(CF_KEYDIR, &key, doc)?;
                    stored += 1;
                }
            }
            Err(e) => rejected.push(e.to_string()),
        }
    }
    Ok((stored, rejected))
}

fn verify_key_document(node: &Node, doc: &KeyDocument) -> Result<KeyDocumentBody> {
    let info = node.check_cert_cached(&doc.certificate)?;
    Ok(doc.verify(&info.identity, &info.dept)?)
}

/// The active verified encryption key of `dept`, re-verified now (so a
/// revoked department is refused).
pub fn recipient_key(node: &Node, dept: &str) -> Result<Option<KeyDocumentBody>> {
    let mut best: Option<KeyDocumentBody> = None;
    for (_, doc) in node
        .store
        .scan::<KeyDocument>(CF_KEYDIR, &store::keydir_prefix(dept))?
    {
        let Ok(body) = verify_key_document(node, &doc) else {
            continue;
        };
        if body.active && best.as_ref().is_none_or(|b| b.created_ms < body.created_ms) {
            best = Some(body);
        }
    }
    Ok(best)
}

/// Every key document held (for serving a directory).
pub fn all_key_documents(node: &Node, depts: &[String]) -> Result<Vec<KeyDocument>> {
    let all: Vec<KeyDocument> = node
        .store
        .scan::<KeyDocument>(CF_KEYDIR, b"")?
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    if depts.is_empty() {
        return Ok(all);
    }
    Ok(all
        .into_iter()
        .filter(|d| {
            d.signed
                .dangerous_decode_unverified::<KeyDocumentBody>("key document")
                .is_ok_and(|b| depts.contains(&b.dept))
        })
        .collect())
}

/// Records where a peer listens (audited).
pub fn add_peer(node: &Node, dept: &str, addr: &str, operator: &str) -> Result<PeerInfo> {
    pki::validate_dept(dept)?;
    addr.parse::<std::net::SocketAddr>()
        .map_err(|e| NodeError::Invalid(format!("--addr {addr:?}: {e} (use HOST:PORT)")))?;
    let peer = PeerInfo {
        dept: dept.to_string(),
        addr: addr.to_string(),
        last_contact_ms: None,
        last_error: None,
    };
    let mut d = node.draft(EventKind::ConfigChange, operator);
    d.counterparty = Some(dept.to_string());
    d.detail = Some(format!("peer {dept} at {addr}"));
    node.log_with(
        d,
        vec![node.store.put_op(CF_PEERS, store::peer_key(dept), &peer)?],
    )?;
    Ok(peer)
}

/// A peer by department.
pub fn peer(node: &Node, dept: &str) -> Result<PeerInfo> {
    node.store.get(CF_PEERS, store::peer_key(dept))?.ok_or_else(|| {
        NodeError::NotFound(format!(
            "peer {dept} is unknown; add it with `pdx peer add --home {} --dept {dept} --addr HOST:PORT`",
            node.home.root().display()
        ))
    })
}

/// Every peer.
pub fn peers(node: &Node) -> Result<Vec<PeerInfo>> {
    Ok(node
        .store
        .scan::<PeerInfo>(CF_PEERS, b"")?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// Records the outcome of talking to a peer.
pub fn peer_contact(node: &Node, dept: &str, error: Option<String>) -> Result<()> {
    if let Some(mut p) = node
        .store
        .get::<PeerInfo>(CF_PEERS, store::peer_key(dept))?
    {
        if error.is_none() {
            p.last_contact_ms = Some(now_ms());
        }
        p.last_error = error;
        node.store.put(CF_PEERS, store::peer_key(dept), &p)?;
    }
    Ok(())
}

/// `pdx key rotate` (audited).
pub fn rotate_key(node: &Node, kind: &str, operator: &str) -> Result<String> {
    let outcome = match kind {
        "encryption" => {
            let id = node
                .keys_mut()?
                .rotate_encryption(&node.home, node.pass())?;
            publish_own_key_documents(node)?;
            format!(
                "new encryption key {id}; older keys are kept to open old releases until retired"
            )
        }
        "signing" | "audit" => {
            let new = SigningKey::generate(node.suite)?;
            let new_id = new.key_id();
            let (identity, cert) = {
                let k = node.keys()?;
                (
                    SigningKey::from_pkcs8(k.identity.pkcs8_der())?,
                    k.cert.to_vec(),
                )
            };
            let log_id = node.audit.log_id().clone();
            let copy = SigningKey::from_pkcs8(new.pkcs8_der())?;
            NodeKeys::stage_audit(&node.home, &new, node.pass())?;
            node.audit.rotate_key(copy, operator, |seq| {
                endorse(&identity, &cert, &log_id, &new, seq)
                    .map_err(|e| pdx_audit::AuditError::Writer(e.to_string()))
            })?;
            node.keys_mut()?.commit_audit(&node.home, node.pass())?;
            format!("new audit signing key {new_id}; the rotation entry is signed by the old key")
        }
        "pseudonym" => node.keys_mut()?.rotate_pseudonym(&node.home, node.pass())?,
        other => {
            return Err(NodeError::Invalid(format!(
                "unknown key kind {other:?}: use encryption, signing or pseudonym"
            )));
        }
    };
    if kind != "signing" && kind != "audit" {
        let mut d = node.draft(EventKind::KeyRotate, operator);
        d.detail = Some(format!("{kind} key rotated: {outcome}"));
        node.log(d)?;
    }
    Ok(outcome)
}

/// `pdx key retire --kind encryption --key-id ID` (audited).
pub fn retire_encryption_key(node: &Node, id: &str, operator: &str) -> Result<String> {
    let key_id = KeyId::from_hex(id)
        .ok_or_else(|| NodeError::Invalid(format!("{id:?} is not a key id (16 hex characters)")))?;
    node.keys_mut()?.retire_encryption(&node.home, &key_id)?;
    let mut d = node.draft(EventKind::KeyRotate, operator);
    d.detail = Some(format!(
        "encryption key {id} retired; releases sealed for it can no longer be opened here"
    ));
    node.log_with(
        d,
        vec![pdx_audit::store::StoreOp::Delete {
            cf: CF_KEYDIR,
            key: store::keydir_key(&node.config.dept, &key_id),
        }],
    )?;
    Ok(format!("encryption key {id} retired"))
}

/// A key document as `pdx keys list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Department.
    pub dept: String,
    /// Key id.
    pub key_id: String,
    /// Whether it is the department's active key.
    pub active: bool,
    /// Created (ms).
    pub created_ms: u64,
    /// Whether it verifies now (certificate and CRL, signature).
    pub verified_now: bool,
}

/// `pdx keys list`: every key document held, re-verified now.
pub fn key_infos(node: &Node) -> Result<Vec<KeyInfo>> {
    let mut out = Vec::new();
    for d in all_key_documents(node, &[])? {
        let b: KeyDocumentBody = d.signed.dangerous_decode_unverified("key document")?;
        let verified_now = verify_key_document(node, &d).is_ok();
        out.push(KeyInfo {
            dept: b.dept.clone(),
            key_id: b.key_id().to_hex(),
            active: b.active,
            created_ms: b.created_ms,
            verified_now,
        });
    }
    Ok(out)
}
