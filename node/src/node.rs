//! A node: its home, configuration, keys, trust material, store and audit log,
//! opened once and shared by every command and connection.

use crate::config::{Config, Home, create_dir, read_secret, write_atomic, write_secret};
use crate::error::{NodeError, Result};
use crate::keys::{NodeKeys, Passphrase};
use crate::pki::{self, CertChecker, CertInfo};
use crate::store::{CF_KEYDIR, CF_PEERS, Store};
use crate::tls::Trust;
use pdx_audit::checkpoint::{KeyEndorsement, SignedEndorsement};
use pdx_audit::store::{AuditConfig, now_ms};
use pdx_audit::{AuditLog, EntryDraft, EventKind, LogId};
use pdx_crypto::keydoc::{KeyDocument, KeyDocumentBody};
use pdx_crypto::keyfile::{self, KeyKind};
use pdx_crypto::{KeyId, SigningKey};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use zeroize::Zeroizing;

/// An open node.
pub struct Node {
    /// Home paths.
    pub home: Home,
    /// Configuration.
    pub config: Config,
    /// Store.
    pub store: Store,
    /// Audit log.
    pub audit: AuditLog,
    keys: RwLock<NodeKeys>,
    /// This node's certificate (DER).
    pub cert: CertificateDer<'static>,
    /// The network CA certificate(s).
    pub ca: Vec<CertificateDer<'static>>,
    /// Verifiers with the current CRL.
    pub trust: Arc<Trust>,
    checker: RwLock<CertChecker>,
    passphrase: Option<Passphrase>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("dept", &self.config.dept)
            .finish()
    }
}

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

/// What `pdx init` created.
#[derive(Clone, Debug, Serialize)]
pub struct InitOutcome {
    /// Home.
    pub home: String,
    /// Department.
    pub dept: String,
    /// Display name.
    pub name: String,
    /// Network.
    pub network: String,
    /// Listen address.
    pub listen: String,
    /// Audit log id.
    pub log_id: String,
    /// Encryption key id.
    pub encryption_key: String,
}

fn endorse(
    identity: &SigningKey,
    cert: &[u8],
    log_id: &LogId,
    audit: &SigningKey,
    from_seq: u64,
) -> Result<SignedEndorsement> {
    Ok(SignedEndorsement::sign(
        &KeyEndorsement {
            log_id: log_id.to_text(),
            audit_key: audit.verifying_key(),
            from_seq,
            time_ms: now_ms(),
        },
        identity,
        cert.to_vec(),
    )?)
}

fn audit_config(c: &Config) -> AuditConfig {
    AuditConfig {
        checkpoint_every: c.audit.checkpoint_every.max(1),
        checkpoint_interval_ms: c.audit.checkpoint_interval_ms,
    }
}

/// The audit log id of a node: its department and its genesis audit key id.
fn read_log_id(home: &Home, dept: &str) -> Result<LogId> {
    let path = home.root().join("log-id");
    let text = std::fs::read_to_string(&path).map_err(NodeError::io(&path))?;
    let key = KeyId::from_hex(text.trim())
        .ok_or_else(|| NodeError::corrupt(path.display().to_string(), "not a key id"))?;
    Ok(LogId {
        dept: dept.to_string(),
        genesis_key: key,
    })
}

impl Node {
    /// `pdx init`: creates a node home from a certificate directory made by `pdx ca issue`.
    pub fn init(
        home: &Home,
        cert_dir: &Path,
        listen: &str,
        pass: Option<&[u8]>,
    ) -> Result<InitOutcome> {
        if home.config().exists() {
            return Err(NodeError::Invalid(format!(
                "{} is already a node home; refusing to overwrite it",
                home.root().display()
            )));
        }
        listen.parse::<std::net::SocketAddr>().map_err(|e| {
            NodeError::Invalid(format!(
                "--listen {listen:?}: {e} (use HOST:PORT, e.g. 127.0.0.1:7001)"
            ))
        })?;
        let cert_path = cert_dir.join("node.crt");
        let certs = pki::read_certs(&cert_path)?;
        let ca = pki::read_certs(&cert_dir.join("ca.crt"))?;
        let crls = pki::read_crls(&cert_dir.join("crl.pem"))?;
        let key_path = cert_dir.join("node.key");
        let key_pem = crate::config::read_secret(&key_path)?;
        let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(&key_pem)
            .map_err(|e| NodeError::Pki(format!("{}: {e}", key_path.display())))?;
        let identity = SigningKey::from_pkcs8(key_der.secret_pkcs8_der())?;
        let info: CertInfo = CertChecker::new(&ca, crls)?.check(&certs[0])?;
        if info.identity != identity.verifying_key() {
            return Err(NodeError::Pki(format!(
                "{} does not hold the key of {}",
                key_path.display(),
                cert_path.display()
            )));
        }
        let network = network_of(&certs[0], &info.dept)?;
        create_dir(home.root(), 0o700)?;
        create_dir(&home.keys(), 0o700)?;
        create_dir(&home.tls(), 0o755)?;
        for (src, dst) in [
            (cert_path.clone(), home.node_cert()),
            (cert_dir.join("ca.crt"), home.ca_cert()),
            (cert_dir.join("crl.pem"), home.crl()),
        ] {
            let bytes = std::fs::read(&src).map_err(NodeError::io(&src))?;
            write_atomic(&dst, &bytes, 0o644)?;
        }
        let keys = NodeKeys::create(home, identity.pkcs8_der(), pass)?;
        let log_id = LogId {
            dept: info.dept.clone(),
            genesis_key: keys.audit.key_id(),
        };
        write_atomic(
            &home.root().join("log-id"),
            log_id.genesis_key.to_hex().as_bytes(),
            0o644,
        )?;
        let mut config = Config::new(
            info.dept.clone(),
            info.name.clone(),
            network.clone(),
            listen.to_string(),
        );
        config.passphrase_protected = pass.is_some();
        config.save(home)?;
        let encryption_key = keys.current_encryption().key_id().to_hex();
        drop(keys);
        let node = Node::open(home, pass.map(|p| Passphrase::new(p.to_vec())))?;
        let mut d = EntryDraft::new(EventKind::ConfigChange, &node.config.dept, "node");
        d.detail = Some(format!(
            "node initialised: certificate serial {}, network {network}, listen {listen}, encryption key {encryption_key}",
            info.serial
        ));
        node.audit.append(d)?;
        Ok(InitOutcome {
            home: home.root().display().to_string(),
            dept: info.dept,
            name: info.name,
            network,
            listen: listen.to_string(),
            log_id: log_id.to_text(),
            encryption_key,
        })
    }

    /// Opens an existing node home.
    pub fn open(home: &Home, passphrase: Option<Passphrase>) -> Result<Node> {
        let config = Config::load(home)?;
        if config.passphrase_protected && passphrase.is_none() {
            return Err(NodeError::Invalid(
                "this node's keys are passphrase-protected: give --passphrase-file FILE (or run on a terminal to be asked)".into(),
            ));
        }
        let keys = NodeKeys::load(home, passphrase.as_deref().map(|p| p.as_slice()))?;
        let certs = pki::read_certs(&home.node_cert())?;
        let ca = pki::read_certs(&home.ca_cert())?;
        let crls = pki::read_crls(&home.crl())?;
        let info = pki::parse_node_cert(&certs[0])?;
        if info.dept != config.dept {
            return Err(NodeError::Config {
                path: home.config().display().to_string(),
                message: format!(
                    "dept {} differs from the certificate's {}",
                    config.dept, info.dept
                ),
            });
        }
        if info.identity != keys.identity.verifying_key() {
            return Err(NodeError::Pki(
                "the identity key does not match tls/node.crt".into(),
            ));
        }
        let trust = Trust::new(ca.clone(), crls.clone())?;
        let checker = CertChecker::new(&ca, crls)?;
        let store = Store::open(&home.db())?;
        let log_id = read_log_id(home, &config.dept)?;
        let audit_key = SigningKey::from_pkcs8(keys.audit.pkcs8_der())?;
        let cert_der = certs[0].to_vec();
        let audit = AuditLog::open(
            store.db().clone(),
            log_id.clone(),
            audit_key,
            || {
                endorse(&keys.identity, &cert_der, &log_id, &keys.audit, 0)
                    .map_err(|e| pdx_audit::AuditError::Writer(e.to_string()))
            },
            audit_config(&config),
        )?;
        // Finish or abandon an audit-key rotation a crash interrupted.
        let mut keys = keys;
        if let Some(pending) = keys.pending_audit.take() {
            let latest = audit.current_endorsement()?.verify(&info.identity)?;
            if latest.audit_key == pending.verifying_key() {
                audit.adopt_rotated_key(SigningKey::from_pkcs8(pending.pkcs8_der())?)?;
                keys.pending_audit = Some(pending);
                keys.commit_audit(home, passphrase.as_deref().map(|p| p.as_slice()))?;
            } else {
                keys.abandon_staged_audit(home)?;
            }
        }
        let node = Node {
            home: home.clone(),
            config,
            store,
            audit,
            keys: RwLock::new(keys),
            cert: certs[0].clone(),
            ca,
            trust,
            checker: RwLock::new(checker),
            passphrase,
        };
        node.publish_own_key_documents()?;
        Ok(node)
    }

    /// The keys, for reading.
    pub fn keys(&self) -> Result<RwLockReadGuard<'_, NodeKeys>> {
        self.keys
            .read()
            .map_err(|_| NodeError::Invalid("key lock poisoned".into()))
    }

    fn keys_mut(&self) -> Result<RwLockWriteGuard<'_, NodeKeys>> {
        self.keys
            .write()
            .map_err(|_| NodeError::Invalid("key lock poisoned".into()))
    }

    /// The passphrase the keys were unlocked with, for re-encrypting rotated keys.
    fn pass(&self) -> Option<&[u8]> {
        self.passphrase.as_deref().map(|p| p.as_slice())
    }

    /// Stores an extra secret (e.g. a homomorphic-aggregate key) as a key file in
    /// `HOME/keys/` (0600, under the node passphrase when there is one).
    pub fn save_secret(&self, name: &str, kind: KeyKind, secret: &[u8]) -> Result<()> {
        let bytes = keyfile::encode(kind, secret, self.pass())?;
        write_secret(&self.home.key(name), &bytes)
    }

    /// Loads a secret stored with [`Node::save_secret`].
    pub fn load_secret(&self, name: &str, kind: KeyKind) -> Result<Zeroizing<Vec<u8>>> {
        let path = self.home.key(name);
        if !path.exists() {
            return Err(NodeError::NotFound(format!(
                "{}: no such key on this node",
                path.display()
            )));
        }
        let bytes = read_secret(&path)?;
        Ok(keyfile::decode(
            &bytes,
            kind,
            &path.display().to_string(),
            self.pass(),
        )?)
    }

    /// Checks a peer certificate against the CA and the current CRL.
    pub fn check_cert(&self, der: &[u8]) -> Result<CertInfo> {
        self.checker
            .read()
            .map_err(|_| NodeError::Invalid("checker lock poisoned".into()))?
            .check(der)
    }

    /// A checker for the CA and the current CRL.
    pub fn cert_checker(&self) -> Result<CertChecker> {
        Ok(self
            .checker
            .read()
            .map_err(|_| NodeError::Invalid("checker lock poisoned".into()))?
            .clone())
    }

    /// Appends an audit entry (durable when it returns).
    pub fn log(&self, draft: EntryDraft) -> Result<pdx_audit::store::Appended> {
        Ok(self.audit.append(draft)?)
    }

    /// A draft with this node's department as actor.
    pub fn draft(&self, kind: EventKind, operator: &str) -> EntryDraft {
        EntryDraft::new(kind, &self.config.dept, operator)
    }

    /// The endorsement of the current audit key.
    pub fn audit_endorsement(&self) -> Result<SignedEndorsement> {
        Ok(self.audit.current_endorsement()?)
    }

    // ---- key documents ----

    fn publish_own_key_documents(&self) -> Result<()> {
        let keys = self.keys()?;
        for (i, k) in keys.encryption.iter().enumerate() {
            let key = keydir_key(&self.config.dept, &k.key_id());
            let existing: Option<KeyDocument> = self.store.get(CF_KEYDIR, &key)?;
            let active = i == 0;
            let up_to_date = existing
                .as_ref()
                .and_then(|d| {
                    d.signed
                        .dangerous_decode_unverified::<KeyDocumentBody>("key document")
                        .ok()
                })
                .is_some_and(|b| b.active == active);
            if up_to_date {
                continue;
            }
            let body = KeyDocumentBody {
                version: 1,
                dept: self.config.dept.clone(),
                suite: pdx_crypto::envelope::SUITE_X25519_HKDF_SHA256_AES256GCM,
                public: k.public(),
                created_ms: now_ms(),
                active,
            };
            let doc = KeyDocument::sign(&body, &keys.identity, self.cert.to_vec())?;
            self.store.put(CF_KEYDIR, &key, &doc)?;
        }
        Ok(())
    }

    /// This node's current key documents (what Hello carries).
    pub fn own_key_documents(&self) -> Result<Vec<KeyDocument>> {
        let mut prefix = self.config.dept.as_bytes().to_vec();
        prefix.push(0);
        Ok(self
            .store
            .scan::<KeyDocument>(CF_KEYDIR, &prefix)?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// Verifies key documents (certificate against the CA and CRL, signature,
    /// department) and stores the good ones. Returns (stored, rejected reasons).
    pub fn accept_key_documents(&self, docs: &[KeyDocument]) -> Result<(usize, Vec<String>)> {
        let mut stored = 0;
        let mut rejected = Vec::new();
        for doc in docs {
            match self.verify_key_document(doc) {
                Ok(body) => {
                    let key = keydir_key(&body.dept, &body.key_id());
                    let newer = match self.store.get::<KeyDocument>(CF_KEYDIR, &key)? {
                        None => true,
                        Some(old) => old
                            .signed
                            .dangerous_decode_unverified::<KeyDocumentBody>("key document")
                            .map(|o| o.created_ms < body.created_ms || o.active != body.active)
                            .unwrap_or(true),
                    };
                    if newer && body.dept != self.config.dept {
                        self.store.put(CF_KEYDIR, &key, doc)?;
                        stored += 1;
                    }
                }
                Err(e) => rejected.push(e.to_string()),
            }
        }
        Ok((stored, rejected))
    }

    fn verify_key_document(&self, doc: &KeyDocument) -> Result<KeyDocumentBody> {
        let info = self.check_cert(&doc.certificate)?;
        Ok(doc.verify(&info.identity, &info.dept)?)
    }

    /// The active verified encryption key of `dept`, re-verified now (so a
    /// revoked department is refused).
    pub fn recipient_key(&self, dept: &str) -> Result<Option<KeyDocumentBody>> {
        let mut prefix = dept.as_bytes().to_vec();
        prefix.push(0);
        let mut best: Option<KeyDocumentBody> = None;
        for (_, doc) in self.store.scan::<KeyDocument>(CF_KEYDIR, &prefix)? {
            let Ok(body) = self.verify_key_document(&doc) else {
                continue;
            };
            if body.active && best.as_ref().is_none_or(|b| b.created_ms < body.created_ms) {
                best = Some(body);
            }
        }
        Ok(best)
    }

    /// Every key document held (for serving a directory).
    pub fn all_key_documents(&self, depts: &[String]) -> Result<Vec<KeyDocument>> {
        let all: Vec<KeyDocument> = self
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

    // ---- peers ----

    /// Records where a peer listens (audited).
    pub fn add_peer(&self, dept: &str, addr: &str, operator: &str) -> Result<PeerInfo> {
        pki::validate_dept(dept)?;
        addr.parse::<std::net::SocketAddr>()
            .map_err(|e| NodeError::Invalid(format!("--addr {addr:?}: {e} (use HOST:PORT)")))?;
        let peer = PeerInfo {
            dept: dept.to_string(),
            addr: addr.to_string(),
            last_contact_ms: None,
            last_error: None,
        };
        self.store.put(CF_PEERS, dept.as_bytes(), &peer)?;
        let mut d = self.draft(EventKind::ConfigChange, operator);
        d.counterparty = Some(dept.to_string());
        d.detail = Some(format!("peer {dept} at {addr}"));
        self.log(d)?;
        Ok(peer)
    }

    /// A peer by department.
    pub fn peer(&self, dept: &str) -> Result<PeerInfo> {
        self.store.get(CF_PEERS, dept.as_bytes())?.ok_or_else(|| {
            NodeError::NotFound(format!(
                "peer {dept} is unknown; add it with `pdx peer add --home {} --dept {dept} --addr HOST:PORT`",
                self.home.root().display()
            ))
        })
    }

    /// Every peer.
    pub fn peers(&self) -> Result<Vec<PeerInfo>> {
        Ok(self
            .store
            .scan::<PeerInfo>(CF_PEERS, b"")?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// Records the outcome of talking to a peer.
    pub fn peer_contact(&self, dept: &str, error: Option<String>) -> Result<()> {
        if let Some(mut p) = self.store.get::<PeerInfo>(CF_PEERS, dept.as_bytes())? {
            if error.is_none() {
                p.last_contact_ms = Some(now_ms());
            }
            p.last_error = error;
            self.store.put(CF_PEERS, dept.as_bytes(), &p)?;
        }
        Ok(())
    }

    // ---- trust and keys ----

    /// Installs a new CRL (verified against the CA) and uses it for new
    /// handshakes and certificate checks (audited).
    pub fn update_crl(&self, crl_path: &Path, operator: &str) -> Result<usize> {
        let crls = pki::read_crls(crl_path)?;
        // Fail closed: the new CRL must be usable by the verifiers.
        let checker = CertChecker::new(&self.ca, crls.clone())?;
        checker.check(&self.cert).map_err(|e| {
            NodeError::Pki(format!(
                "{}: with this CRL our own certificate fails: {e}",
                crl_path.display()
            ))
        })?;
        self.trust.reload_crls(crls.clone())?;
        *self
            .checker
            .write()
            .map_err(|_| NodeError::Invalid("checker lock poisoned".into()))? = checker;
        let bytes = std::fs::read(crl_path).map_err(NodeError::io(crl_path))?;
        write_atomic(&self.home.crl(), &bytes, 0o644)?;
        let mut d = self.draft(EventKind::ConfigChange, operator);
        d.payload_digest = Some(pdx_crypto::Digest::of(&bytes));
        d.detail = Some(format!("CRL updated from {}", crl_path.display()));
        self.log(d)?;
        Ok(crls.len())
    }

    /// `pdx key rotate` (audited).
    pub fn rotate_key(&self, kind: &str, operator: &str) -> Result<String> {
        let outcome = match kind {
            "encryption" => {
                let id = self
                    .keys_mut()?
                    .rotate_encryption(&self.home, self.pass())?;
                self.publish_own_key_documents()?;
                format!(
                    "new encryption key {id}; older keys are kept to open old releases until retired"
                )
            }
            "signing" | "audit" => {
                let new = SigningKey::generate()?;
                let new_id = new.key_id();
                let (identity, cert) = {
                    let k = self.keys()?;
                    (
                        SigningKey::from_pkcs8(k.identity.pkcs8_der())?,
                        self.cert.to_vec(),
                    )
                };
                let log_id = self.audit.log_id().clone();
                let copy = SigningKey::from_pkcs8(new.pkcs8_der())?;
                NodeKeys::stage_audit(&self.home, &new, self.pass())?;
                self.audit.rotate_key(copy, operator, |seq| {
                    endorse(&identity, &cert, &log_id, &new, seq)
                        .map_err(|e| pdx_audit::AuditError::Writer(e.to_string()))
                })?;
                self.keys_mut()?.commit_audit(&self.home, self.pass())?;
                format!(
                    "new audit signing key {new_id}; the rotation entry is signed by the old key"
                )
            }
            "pseudonym" => self.keys_mut()?.rotate_pseudonym(&self.home, self.pass())?,
            other => {
                return Err(NodeError::Invalid(format!(
                    "unknown key kind {other:?}: use encryption, signing or pseudonym"
                )));
            }
        };
        if kind != "signing" && kind != "audit" {
            let mut d = self.draft(EventKind::KeyRotate, operator);
            d.detail = Some(format!("{kind} key rotated: {outcome}"));
            self.log(d)?;
        }
        Ok(outcome)
    }

    /// `pdx key retire --kind encryption --key-id ID` (audited).
    pub fn retire_encryption_key(&self, id: &str, operator: &str) -> Result<String> {
        let key_id = KeyId::from_hex(id).ok_or_else(|| {
            NodeError::Invalid(format!("{id:?} is not a key id (16 hex characters)"))
        })?;
        self.keys_mut()?.retire_encryption(&self.home, &key_id)?;
        let mut b = rocksdb::WriteBatch::default();
        b.delete_cf(
            self.store.cf(CF_KEYDIR)?,
            keydir_key(&self.config.dept, &key_id),
        );
        self.store.write(b)?;
        let mut d = self.draft(EventKind::KeyRotate, operator);
        d.detail = Some(format!(
            "encryption key {id} retired; releases sealed for it can no longer be opened here"
        ));
        self.log(d)?;
        Ok(format!("encryption key {id} retired"))
    }
}

/// Key of a key document in the directory.
pub fn keydir_key(dept: &str, id: &KeyId) -> Vec<u8> {
    let mut k = dept.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&id.0);
    k
}

fn network_of(cert: &[u8], dept: &str) -> Result<String> {
    use x509_parser::prelude::*;
    let (_, c) =
        X509Certificate::from_der(cert).map_err(|e| NodeError::Pki(format!("certificate: {e}")))?;
    let prefix = format!("{}.", dept.to_ascii_lowercase());
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(dns) = n
                && let Some(rest) = dns
                    .strip_prefix(&prefix)
                    .and_then(|r| r.strip_suffix(".pdx"))
            {
                pki::validate_network(rest)?;
                return Ok(rest.to_string());
            }
        }
    }
    Err(NodeError::Pki(format!(
        "certificate has no DNS name {prefix}<network>.pdx"
    )))
}
