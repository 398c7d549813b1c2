//! A node: its home, configuration, keys, trust material, store and audit log,
//! opened once and shared by every command and connection.

use crate::config::{Config, Home, create_dir, read_secret, write_atomic, write_secret};
use crate::error::{NodeError, Result};
use crate::keys::{NodeKeys, Passphrase};
use crate::pki::tls::Trust;
use crate::pki::{self, CertChecker, CertInfo};
use crate::store::Store;
use pdx_audit::checkpoint::{KeyEndorsement, SignedEndorsement};
use pdx_audit::store::{AuditConfig, StoreOp, now_ms};
use pdx_audit::{AuditLog, EntryDraft, EventKind, LogId};
use pdx_crypto::keyfile::{self, KeyKind};
use pdx_crypto::{KeyId, SigningKey, Suite};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use zeroize::Zeroizing;

/// The operator recorded for work a peer initiated (serving a release,
/// accepting a submission), as opposed to a local user's command.
pub const NODE_OPERATOR: &str = "node";

/// How long an accepted certificate is remembered by
/// [`Node::check_cert_cached`] (a CRL update forgets them all at once).
pub const CERT_CACHE_MS: u64 = 60_000;

/// An open node.
pub struct Node {
    /// The network's suite (its CA's): every object this node signs, hashes
    /// or seals is of it, and objects of the other suite are refused.
    pub suite: Suite,
    /// Home paths.
    pub home: Home,
    /// Configuration.
    pub config: Config,
    /// Store.
    pub store: Store,
    /// Audit log.
    pub audit: AuditLog,
    /// Operational metrics (`[operations] metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    keys: RwLock<NodeKeys>,
    /// This node's certificate (DER).
    pub cert: CertificateDer<'static>,
    /// The network CA certificate(s).
    pub ca: Vec<CertificateDer<'static>>,
    /// Verifiers with the current CRL.
    pub trust: Arc<Trust>,
    checker: RwLock<CertChecker>,
    /// Certificates checked recently (by digest), for calls: each call
    /// carries its signer's certificate. Emptied when the CRL changes;
    /// entries older than [`CERT_CACHE_MS`] are checked again.
    cert_cache: std::sync::Mutex<std::collections::HashMap<[u8; 32], (CertInfo, u64)>>,
    passphrase: Option<Passphrase>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("dept", &self.config.dept)
            .finish()
    }
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
    /// The network's suite.
    pub suite: Suite,
}

pub(crate) fn endorse(
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

/// The audit log id of a node: its department, its genesis audit key id and
/// the network's suite.
fn read_log_id(home: &Home, dept: &str, suite: Suite) -> Result<LogId> {
    let path = home.root().join("log-id");
    let text = std::fs::read_to_string(&path).map_err(NodeError::io(&path))?;
    let key = KeyId::from_hex(text.trim())
        .ok_or_else(|| NodeError::corrupt(path.display().to_string(), "not a key id"))?;
    Ok(LogId {
        dept: dept.to_string(),
        genesis_key: key,
        suite,
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
        let audit_path = cert_dir.join("audit.key");
        let audit_pem = crate::config::read_secret(&audit_path).map_err(|e| {
            NodeError::Pki(format!(
                "{e}: the genesis audit key comes with the certificate (pdx ca issue writes audit.key); re-issue the certificate with this version"
            ))
        })?;
        let audit_der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(&audit_pem)
            .map_err(|e| NodeError::Pki(format!("{}: {e}", audit_path.display())))?;
        let genesis = SigningKey::from_pkcs8(audit_der.secret_pkcs8_der())?;
        let suite = pki::suite_of_ca(&ca[0])?;
        let info: CertInfo = CertChecker::new(&ca, crls)?.check(&certs[0])?;
        suite.expect(
            info.suite,
            &format!("the certificate {}", cert_path.display()),
        )?;
        let bound = LogId {
            dept: info.dept.clone(),
            genesis_key: genesis.key_id(),
            suite,
        };
        if info.log_id.as_deref() != Some(bound.to_text().as_str()) {
            return Err(NodeError::Pki(format!(
                "{} binds the audit log {:?}, but {} is the key of log {}",
                cert_path.display(),
                info.log_id,
                audit_path.display(),
                bound.to_text()
            )));
        }
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
        let keys = NodeKeys::create(home, suite, identity.pkcs8_der(), genesis.pkcs8_der(), pass)?;
        let log_id = LogId {
            dept: info.dept.clone(),
            genesis_key: keys.audit.key_id(),
            suite,
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
            suite,
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
        let certs = pki::read_certs(&home.node_cert())?;
        let ca = pki::read_certs(&home.ca_cert())?;
        let crls = pki::read_crls(&home.crl())?;
        let suite = pki::suite_of_ca(&ca[0])?;
        let keys = NodeKeys::load(home, suite, passphrase.as_deref().map(|p| p.as_slice()))?;
        let info = pki::parse_node_cert(&certs[0])?;
        suite.expect(info.suite, &home.node_cert().display().to_string())?;
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
        let mut store = Store::open(&home.db())?;
        let log_id = read_log_id(home, &config.dept, suite)?;
        // One log per department: the one the certificate names.
        if info.log_id.as_deref() != Some(log_id.to_text().as_str()) {
            return Err(NodeError::Pki(format!(
                "{} binds the audit log {:?}, but this home holds log {}; install the certificate issued with this log",
                home.node_cert().display(),
                info.log_id,
                log_id.to_text()
            )));
        }
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
        // A restored home signs no checkpoint until its peers were asked
        // (service::recovery): one could contradict what they witnessed.
        if home.restored_marker().exists() {
            audit.hold_checkpoints(
                "this node was restored from a backup and has not reconciled with its peers: start `pdx serve` (it asks them first), then acknowledge any loss with `pdx restore --acknowledge-loss`",
            );
        }
        store
            .space()
            .set_reserve_mib(config.operations.disk_reserve_mib);
        audit.set_space_check(store.space().clone());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        audit.set_observer(metrics.clone());
        // An older store is migrated in one step: the new format is recorded
        // in the same synced batch as the entry that says so.
        if let Some(from) = store.migration_due() {
            let mut d = EntryDraft::new(EventKind::ConfigChange, &config.dept, "node");
            d.detail = Some(format!(
                "store migrated from format {from} to {}: {}",
                crate::store::STORE_FORMAT,
                crate::store::migration_summary(from)
            ));
            audit.append_atomic(d, vec![store.migration_op()])?;
            store.migrated();
        }
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
            suite,
            home: home.clone(),
            config,
            store,
            audit,
            metrics,
            keys: RwLock::new(keys),
            cert: certs[0].clone(),
            ca,
            trust,
            checker: RwLock::new(checker),
            cert_cache: Default::default(),
            passphrase,
        };
        Ok(node)
    }

    /// The keys, for reading.
    pub fn keys(&self) -> Result<RwLockReadGuard<'_, NodeKeys>> {
        self.keys
            .read()
            .map_err(|_| NodeError::Invalid("key lock poisoned".into()))
    }

    pub(crate) fn keys_mut(&self) -> Result<RwLockWriteGuard<'_, NodeKeys>> {
        self.keys
            .write()
            .map_err(|_| NodeError::Invalid("key lock poisoned".into()))
    }

    /// The passphrase the keys were unlocked with, for re-encrypting rotated keys.
    pub(crate) fn pass(&self) -> Option<&[u8]> {
        self.passphrase.as_deref().map(|p| p.as_slice())
    }

    /// Stores an extra secret (e.g. a homomorphic-aggregate key) as a key file in
    /// `HOME/keys/` (0600, under the node passphrase when there is one).
    pub fn save_secret(&self, name: &str, kind: KeyKind, secret: &[u8]) -> Result<()> {
        let bytes = keyfile::encode(self.suite, kind, secret, self.pass())?;
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
            self.suite,
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

    /// [`Node::check_cert`], remembering accepted certificates for
    /// [`CERT_CACHE_MS`] (until the CRL changes): calls carry their
    /// signer's certificate, and its signature check would otherwise be the
    /// biggest cost of a call.
    pub fn check_cert_cached(&self, der: &[u8]) -> Result<CertInfo> {
        let key = self.suite.digest(der).0;
        let now = pdx_audit::store::now_ms();
        if let Ok(cache) = self.cert_cache.lock()
            && let Some((info, at)) = cache.get(&key)
            && now.saturating_sub(*at) < CERT_CACHE_MS
        {
            return Ok(info.clone());
        }
        let info = self.check_cert(der)?;
        if let Ok(mut cache) = self.cert_cache.lock() {
            if cache.len() >= 4096 {
                cache.clear();
            }
            cache.insert(key, (info.clone(), now));
        }
        Ok(info)
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

    /// Appends an audit entry and applies `ops` (the state change it records)
    /// in the same durable write: both or neither.
    pub fn log_with(
        &self,
        draft: EntryDraft,
        ops: Vec<StoreOp>,
    ) -> Result<pdx_audit::store::Appended> {
        Ok(self.audit.append_atomic(draft, ops)?)
    }

    /// A draft with this node's department as actor.
    pub fn draft(&self, kind: EventKind, operator: &str) -> EntryDraft {
        EntryDraft::new(kind, &self.config.dept, operator)
    }

    /// The endorsement of the current audit key.
    pub fn audit_endorsement(&self) -> Result<SignedEndorsement> {
        Ok(self.audit.current_endorsement()?)
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
        if let Ok(mut cache) = self.cert_cache.lock() {
            cache.clear();
        }
        let bytes = std::fs::read(crl_path).map_err(NodeError::io(crl_path))?;
        write_atomic(&self.home.crl(), &bytes, 0o644)?;
        let mut d = self.draft(EventKind::ConfigChange, operator);
        d.payload_digest = Some(self.suite.digest(&bytes));
        d.detail = Some(format!("CRL updated from {}", crl_path.display()));
        self.log(d)?;
        Ok(crls.len())
    }
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
