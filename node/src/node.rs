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
    /// Secret keys, with the identity key's certificate.
    keys: RwLock<NodeKeys>,
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
        let ca = pki::read_certs(&home.ca_cert())?;
        let crls = pki::read_crls(&home.crl())?;
        let suite = pki::suite_of_ca(&ca[0])?;
        let pass = passphrase.as_deref().map(|p| p.as_slice());
        let mut keys = NodeKeys::load(home, suite, pass)?;
        let trust = Trust::new(ca.clone(), crls.clone())?;
        let checker = CertChecker::new(&ca, crls)?;
        let mut store = Store::open(&home.db())?;
        let log_id = read_log_id(home, &config.dept, suite)?;
        let audit_key = SigningKey::from_pkcs8(keys.audit.pkcs8_der())?;
        let cert_der = keys.cert.to_vec();
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
        // Finish or drop a certificate install a crash interrupted: its
        // commit point is the re-endorsement carrying the new certificate.
        match keys.finish_cert_install(
            home,
            |staged| Ok(audit.current_endorsement()?.certificate == staged),
            pass,
        )? {
            crate::keys::StagedInstall::None => {}
            crate::keys::StagedInstall::Completed => tracing::warn!(
                "completed the certificate install a crash interrupted after the log recorded it"
            ),
            crate::keys::StagedInstall::Abandoned => tracing::warn!(
                "dropped a certificate install a crash interrupted before the log recorded it: run `pdx cert install` again"
            ),
        }
        let info = pki::parse_node_cert(&keys.cert)?;
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
        // One log per department: the one the certificate names.
        if info.log_id.as_deref() != Some(log_id.to_text().as_str()) {
            return Err(NodeError::Pki(format!(
                "{} binds the audit log {:?}, but this home holds log {}; install the certificate issued with this log",
                home.node_cert().display(),
                info.log_id,
                log_id.to_text()
            )));
        }
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
        if let Some(pending) = keys.pending_audit.take() {
            let latest = audit.current_endorsement()?.verify(&info.identity)?;
            if latest.audit_key == pending.verifying_key() {
                audit.adopt_rotated_key(SigningKey::from_pkcs8(pending.pkcs8_der())?)?;
                keys.pending_audit = Some(pending);
                keys.commit_audit(home, pass)?;
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

    /// This node's certificate now (DER). What is signed with the identity
    /// key takes the certificate from the same [`Node::keys`] guard instead.
    pub fn cert(&self) -> Result<CertificateDer<'static>> {
        Ok(self.keys()?.cert.clone())
    }

    /// Signs `body` with the identity key and returns it with the
    /// certificate of that key, both read under one guard (a concurrent
    /// `pdx cert install` can never pair one key's signature with another's
    /// certificate).
    pub fn sign_certified<T: Serialize>(
        &self,
        domain: pdx_crypto::SignatureDomain,
        body: &T,
    ) -> Result<(pdx_crypto::wire::Signed, Vec<u8>)> {
        let keys = self.keys()?;
        Ok((
            pdx_crypto::wire::Signed::sign(domain, &keys.identity, body)?,
            keys.cert.to_vec(),
        ))
    }

    /// Checks the certificate a peer's endorsement of its audit key carries
    /// (CA, CRL, now) and that it is `dept`'s certificate binding `log_id`:
    /// the endorsement stands on its own certificate, so it verifies across
    /// the peer's certificate renewal whichever certificate its connection
    /// presented.
    pub fn endorsement_signer(
        &self,
        endorsement: &SignedEndorsement,
        dept: &str,
        log_id: Option<&str>,
    ) -> Result<CertInfo> {
        let info = self.check_cert_cached(&endorsement.certificate)?;
        if info.dept != dept {
            return Err(NodeError::Pki(format!(
                "an audit key of {dept} is endorsed by the certificate of {}",
                info.dept
            )));
        }
        if log_id.is_some() && info.log_id.as_deref() != log_id {
            return Err(NodeError::Pki(format!(
                "the endorsement certificate of {dept} binds the audit log {:?}, not {:?}",
                info.log_id, log_id
            )));
        }
        Ok(info)
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

    /// Appends several entries, contiguously and in order, and applies `ops`
    /// in the same durable write: all or nothing.
    pub fn log_many_with(
        &self,
        drafts: Vec<EntryDraft>,
        ops: Vec<StoreOp>,
    ) -> Result<Vec<pdx_audit::store::Appended>> {
        Ok(self.audit.append_many_atomic(drafts, ops)?)
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
        checker.check(&self.cert()?).map_err(|e| {
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

/// What `pdx cert install` did.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct CertInstalled {
    /// Serial of the certificate replaced.
    pub previous_serial: String,
    /// Serial of the certificate now in use.
    pub serial: String,
    /// Expiry of the new certificate (ms since the Unix epoch).
    pub not_after_ms: i64,
    /// Whether the identity key changed with it.
    pub new_identity_key: bool,
    /// The identity key id now.
    pub identity_key: String,
    /// Sequence number of the audit entry recording the install.
    pub audit_seq: u64,
}

impl Node {
    /// `pdx cert install`: replaces this node's certificate (and, when
    /// `cert_dir` holds `node.key`, its identity key) with one the network
    /// CA issued for the same department and audit log. Everything signed
    /// from here on carries the new certificate; the current audit key is
    /// re-endorsed under it in the same synced batch as the `config-change`
    /// entry (the commit point a crash is recovered to). TLS and key
    /// documents follow in the service layer.
    pub fn install_cert(&self, cert_dir: &Path, operator: &str) -> Result<CertInstalled> {
        let cert_path = cert_dir.join("node.crt");
        let cert_pem = std::fs::read(&cert_path).map_err(NodeError::io(&cert_path))?;
        let refuse = |why: String| NodeError::Pki(format!("{}: {why}", cert_path.display()));
        let der = CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|e| refuse(format!("no PEM certificate: {e}")))?;
        let info = self
            .check_cert(&der)
            .map_err(|e| refuse(format!("not usable: {e}")))?;
        if info.dept != self.config.dept {
            return Err(refuse(format!(
                "a certificate of {}, not of this node's department {}",
                info.dept, self.config.dept
            )));
        }
        let log = self.audit.log_id().to_text();
        if info.log_id.as_deref() != Some(log.as_str()) {
            return Err(refuse(format!(
                "binds the audit log {:?}, but this node keeps log {log} (renew with `pdx ca issue --renew --cert HOME/tls/node.crt`, which keeps it)",
                info.log_id
            )));
        }
        let ca_path = cert_dir.join("ca.crt");
        if ca_path.exists() && pki::read_certs(&ca_path)?.first() != self.ca.first() {
            return Err(NodeError::Pki(format!(
                "{}: another CA than this node's {}; a new CA is not a renewal",
                ca_path.display(),
                self.home.ca_cert().display()
            )));
        }
        let key_path = cert_dir.join("node.key");
        let new_key = if key_path.exists() {
            let pem = read_secret(&key_path)?;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(&pem)
                .map_err(|e| NodeError::Pki(format!("{}: {e}", key_path.display())))?;
            let key = SigningKey::from_pkcs8(der.secret_pkcs8_der())?;
            self.suite
                .expect(key.suite(), &key_path.display().to_string())?;
            if key.verifying_key() != info.identity {
                return Err(NodeError::Pki(format!(
                    "{} does not hold the key of {}",
                    key_path.display(),
                    cert_path.display()
                )));
            }
            Some(key)
        } else {
            None
        };
        let mut keys = self.keys_mut()?;
        let previous = pki::parse_node_cert(&keys.cert)?;
        if der == keys.cert {
            return Err(refuse("already installed".into()));
        }
        let current_identity = keys.identity.verifying_key();
        let new_identity_key = match &new_key {
            Some(k) => k.verifying_key() != current_identity,
            None if info.identity == current_identity => false,
            None => {
                return Err(refuse(format!(
                    "certifies a new identity key, but {} is missing",
                    key_path.display()
                )));
            }
        };
        // Fail closed before anything changes: rustls must take the pair.
        let identity = match &new_key {
            Some(k) => SigningKey::from_pkcs8(k.pkcs8_der())?,
            None => SigningKey::from_pkcs8(keys.identity.pkcs8_der())?,
        };
        pki::tls::server_config(&self.trust, vec![der.clone()], identity.pkcs8_der())?;
        NodeKeys::stage_cert_install(&self.home, new_key.as_ref(), &cert_pem, self.pass())?;
        crate::failpoint::hit("cert-install-staged");
        let validity = pki::validity(&der)?;
        let mut d = self.draft(EventKind::ConfigChange, operator);
        d.payload_digest = Some(self.suite.digest(&der));
        d.detail = Some(format!(
            "node certificate renewed: serial {} replaced by {} (valid until {}), identity key {}; audit key {} re-endorsed under the new certificate",
            previous.serial,
            info.serial,
            crate::timearg::format_signed_ms(validity.not_after_ms),
            if new_identity_key {
                format!(
                    "{} replaced by {}",
                    current_identity.key_id(),
                    info.identity.key_id()
                )
            } else {
                format!("{} kept", current_identity.key_id())
            },
            keys.audit.key_id()
        ));
        let log_id = self.audit.log_id().clone();
        let recorded = self.audit.reendorse_key(d, |from_seq| {
            endorse(&identity, &der, &log_id, &keys.audit, from_seq)
                .map_err(|e| pdx_audit::AuditError::Writer(e.to_string()))
        });
        let appended = match recorded {
            Ok(a) => a,
            Err(e) => {
                NodeKeys::abandon_cert_install(&self.home)?;
                return Err(e.into());
            }
        };
        crate::failpoint::hit("cert-install-recorded");
        keys.commit_cert_install(&self.home, self.pass())?;
        drop(keys);
        if let Ok(mut cache) = self.cert_cache.lock() {
            cache.clear();
        }
        Ok(CertInstalled {
            previous_serial: previous.serial,
            serial: info.serial,
            not_after_ms: validity.not_after_ms,
            new_identity_key,
            identity_key: info.identity.key_id().to_hex(),
            audit_seq: appended.seq,
        })
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
