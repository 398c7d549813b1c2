//! The node's secret keys: loading (with permission checks and optional
//! passphrase), creation and rotation. Keys live in `HOME/keys/` as pdx key files
//! with 0600 permissions; they never appear in logs or error messages.
//!
//! | file                         | what                                               |
//! |------------------------------|----------------------------------------------------|
//! | `identity.key`               | identity key (Ed25519 or SM2), certified by the CA |
//! | `identity.key.new`           | a new identity key staged by `pdx cert install`    |
//! | `audit.key`                  | current audit-log signing key (Ed25519 or SM2)     |
//! | `audit-<keyid>.key`          | retired audit keys (kept for reference)            |
//! | `encryption.key`             | current field-encryption key (X25519 or SM2)       |
//! | `encryption-<keyid>.key`     | older encryption keys, kept to open old releases   |
//! | `pseudonym.key`              | pseudonym master key (32 bytes)                    |
//! | `pseudonym-<n>.key`          | older pseudonym master keys                        |
//! | `storage.key`                | storage master key for encryption at rest          |

use crate::config::{Home, read_secret, write_secret};
use crate::error::{NodeError, Result};
use pdx_crypto::atrest::StorageMaster;
use pdx_crypto::envelope::EncryptionSecret;
use pdx_crypto::keyfile::{self, KeyKind};
use pdx_crypto::pseudonym::PseudonymMaster;
use pdx_crypto::{KeyId, SigningKey, Suite};
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// A passphrase held in memory only as long as needed.
pub type Passphrase = Zeroizing<Vec<u8>>;

/// Every secret key of a node, all of the network's suite.
#[derive(Debug)]
pub struct NodeKeys {
    /// The suite of every key here.
    pub suite: Suite,
    /// Identity key (the certificate's key).
    pub identity: SigningKey,
    /// The certificate of `identity` (`HOME/tls/node.crt`, DER). Both change
    /// together, under one lock (`pdx cert install`): whatever is signed
    /// with `identity` carries this certificate.
    pub cert: CertificateDer<'static>,
    /// Current audit key.
    pub audit: SigningKey,
    /// Encryption keys; the first is current.
    pub encryption: Vec<EncryptionSecret>,
    /// Pseudonym master.
    pub pseudonym: PseudonymMaster,
    /// Storage master.
    pub storage: StorageMaster,
    /// An audit key staged by an interrupted rotation.
    pub pending_audit: Option<SigningKey>,
}

fn staged_audit_path(home: &Home) -> PathBuf {
    home.keys().join("audit.key.new")
}

fn staged_identity_path(home: &Home) -> PathBuf {
    home.keys().join("identity.key.new")
}

/// Where `pdx cert install` stages the new certificate: written last, it
/// marks a staged install.
pub fn staged_cert_path(home: &Home) -> PathBuf {
    home.tls().join("node.crt.new")
}

/// What a crash during `pdx cert install` left (see
/// [`NodeKeys::finish_cert_install`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StagedInstall {
    /// Nothing was staged.
    None,
    /// The log recorded the install; it was completed.
    Completed,
    /// The log never recorded it; the staged files were removed.
    Abandoned,
}

fn load(
    suite: Suite,
    path: &Path,
    kind: KeyKind,
    pass: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = read_secret(path)?;
    Ok(keyfile::decode(
        suite,
        &bytes,
        kind,
        &path.display().to_string(),
        pass,
    )?)
}

fn save(
    suite: Suite,
    path: &Path,
    kind: KeyKind,
    secret: &[u8],
    pass: Option<&[u8]>,
) -> Result<()> {
    let bytes = keyfile::encode(suite, kind, secret, pass)?;
    write_secret(path, &bytes)
}

/// A signing key of `suite` from its key file.
fn load_signing(suite: Suite, path: &Path, pass: Option<&[u8]>) -> Result<SigningKey> {
    let key = SigningKey::from_pkcs8(&load(suite, path, KeyKind::signing(suite), pass)?)?;
    suite.expect(key.suite(), &path.display().to_string())?;
    Ok(key)
}

fn load_encryption(suite: Suite, path: &Path, pass: Option<&[u8]>) -> Result<EncryptionSecret> {
    let raw = load(suite, path, KeyKind::encryption(suite), pass)?;
    Ok(EncryptionSecret::from_bytes(suite, &secret32(&raw, path)?)?)
}

fn secret32(bytes: &[u8], path: &Path) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(bytes).map_err(|_| NodeError::Config {
        path: path.display().to_string(),
        message: "key file does not hold 32 bytes".into(),
    })
}

impl NodeKeys {
    /// Creates every key except the identity key (which comes with the
    /// certificate), all of `suite`.
    pub fn create(
        home: &Home,
        suite: Suite,
        identity_pkcs8: &[u8],
        audit_pkcs8: &[u8],
        pass: Option<&[u8]>,
    ) -> Result<NodeKeys> {
        let identity = SigningKey::from_pkcs8(identity_pkcs8)?;
        let audit = SigningKey::from_pkcs8(audit_pkcs8)?;
        suite.expect(identity.suite(), "the node key")?;
        suite.expect(audit.suite(), "the genesis audit key")?;
        let encryption = EncryptionSecret::generate(suite)?;
        let pseudonym = PseudonymMaster::from_bytes(suite, pdx_crypto::rng::bytes::<32>()?);
        let storage = StorageMaster::from_bytes(suite, pdx_crypto::rng::bytes::<32>()?);
        let signing = KeyKind::signing(suite);
        save(
            suite,
            &home.key("identity"),
            signing,
            identity.pkcs8_der(),
            pass,
        )?;
        save(suite, &home.key("audit"), signing, audit.pkcs8_der(), pass)?;
        save(
            suite,
            &home.key("encryption"),
            KeyKind::encryption(suite),
            &encryption.to_bytes()[..],
            pass,
        )?;
        save(
            suite,
            &home.key("pseudonym"),
            KeyKind::Secret32,
            pseudonym.as_bytes(),
            pass,
        )?;
        save(
            suite,
            &home.key("storage"),
            KeyKind::Secret32,
            storage.as_bytes(),
            pass,
        )?;
        Ok(NodeKeys {
            suite,
            identity,
            cert: crate::pki::read_cert(&home.node_cert())?,
            audit,
            encryption: vec![encryption],
            pseudonym,
            storage,
            pending_audit: None,
        })
    }

    /// Loads every key of `suite`, checking file permissions.
    pub fn load(home: &Home, suite: Suite, pass: Option<&[u8]>) -> Result<NodeKeys> {
        let identity = load_signing(suite, &home.key("identity"), pass)?;
        let audit = load_signing(suite, &home.key("audit"), pass)?;
        let mut encryption = vec![load_encryption(suite, &home.key("encryption"), pass)?];
        for old in old_keys(home, "encryption-")? {
            encryption.push(load_encryption(suite, &old, pass)?);
        }
        let path = home.key("pseudonym");
        let pseudonym = PseudonymMaster::from_bytes(
            suite,
            secret32(&load(suite, &path, KeyKind::Secret32, pass)?, &path)?,
        );
        let path = home.key("storage");
        let storage = StorageMaster::from_bytes(
            suite,
            secret32(&load(suite, &path, KeyKind::Secret32, pass)?, &path)?,
        );
        let staged = staged_audit_path(home);
        let pending_audit = if staged.exists() {
            Some(load_signing(suite, &staged, pass)?)
        } else {
            None
        };
        Ok(NodeKeys {
            suite,
            identity,
            cert: crate::pki::read_cert(&home.node_cert())?,
            audit,
            encryption,
            pseudonym,
            storage,
            pending_audit,
        })
    }

    /// The current encryption key.
    pub fn current_encryption(&self) -> &EncryptionSecret {
        &self.encryption[0]
    }

    /// The encryption key with id `id`, if held.
    pub fn encryption_key(&self, id: &KeyId) -> Option<&EncryptionSecret> {
        self.encryption.iter().find(|k| k.key_id() == *id)
    }

    /// Rotates the encryption key: the current one is kept as `encryption-<id>.key`.
    pub fn rotate_encryption(&mut self, home: &Home, pass: Option<&[u8]>) -> Result<KeyId> {
        let suite = self.suite;
        let new = EncryptionSecret::generate(suite)?;
        let old = &self.encryption[0];
        save(
            suite,
            &home.key(&format!("encryption-{}", old.key_id())),
            KeyKind::encryption(suite),
            &old.to_bytes()[..],
            pass,
        )?;
        save(
            suite,
            &home.key("encryption"),
            KeyKind::encryption(suite),
            &new.to_bytes()[..],
            pass,
        )?;
        let id = new.key_id();
        self.encryption.insert(0, new);
        Ok(id)
    }

    /// Retires an old encryption key: its file is deleted and releases sealed for
    /// it can no longer be opened here.
    pub fn retire_encryption(&mut self, home: &Home, id: &KeyId) -> Result<()> {
        if self.encryption[0].key_id() == *id {
            return Err(NodeError::Invalid(format!(
                "key {id} is the current encryption key; rotate first (pdx key rotate --kind encryption)"
            )));
        }
        let path = home.key(&format!("encryption-{id}"));
        if !path.exists() {
            return Err(NodeError::NotFound(format!(
                "no retained encryption key {id} in {}",
                home.keys().display()
            )));
        }
        std::fs::remove_file(&path).map_err(NodeError::io(&path))?;
        self.encryption.retain(|k| k.key_id() != *id);
        Ok(())
    }

    /// Step 1 of an audit-key rotation: the new key is written as
    /// `audit.key.new` before the log records the rotation, so a crash between
    /// the two never loses the key the log now expects.
    pub fn stage_audit(home: &Home, new: &SigningKey, pass: Option<&[u8]>) -> Result<()> {
        let suite = new.suite();
        save(
            suite,
            &staged_audit_path(home),
            KeyKind::signing(suite),
            new.pkcs8_der(),
            pass,
        )
    }

    /// Step 2: the log recorded the rotation; keep the old key as
    /// `audit-<id>.key` and make the staged key current.
    pub fn commit_audit(&mut self, home: &Home, pass: Option<&[u8]>) -> Result<()> {
        let staged = staged_audit_path(home);
        let suite = self.suite;
        let new = load_signing(suite, &staged, pass)?;
        save(
            suite,
            &home.key(&format!("audit-{}", self.audit.key_id())),
            KeyKind::signing(suite),
            self.audit.pkcs8_der(),
            pass,
        )?;
        std::fs::rename(&staged, home.key("audit")).map_err(NodeError::io(&staged))?;
        self.audit = new;
        self.pending_audit = None;
        Ok(())
    }

    /// Drops a staged key whose rotation never reached the log.
    pub fn abandon_staged_audit(&mut self, home: &Home) -> Result<()> {
        let staged = staged_audit_path(home);
        if staged.exists() {
            std::fs::remove_file(&staged).map_err(NodeError::io(&staged))?;
        }
        self.pending_audit = None;
        Ok(())
    }

    /// Step 1 of `pdx cert install`: the new identity key (when the
    /// certificate certifies a new one) and then the certificate are written
    /// beside the current ones, so a crash before the log records the
    /// install leaves the node as it was.
    pub fn stage_cert_install(
        home: &Home,
        key: Option<&SigningKey>,
        cert_pem: &[u8],
        pass: Option<&[u8]>,
    ) -> Result<()> {
        if let Some(k) = key {
            save(
                k.suite(),
                &staged_identity_path(home),
                KeyKind::signing(k.suite()),
                k.pkcs8_der(),
                pass,
            )?;
        }
        crate::config::write_atomic(&staged_cert_path(home), cert_pem, 0o644)
    }

    /// Step 2: the log recorded the install; the staged key (first) and
    /// certificate replace the current ones, on disk and here.
    pub fn commit_cert_install(&mut self, home: &Home, pass: Option<&[u8]>) -> Result<()> {
        let staged_key = staged_identity_path(home);
        let staged_cert = staged_cert_path(home);
        let cert = crate::pki::read_cert(&staged_cert)?;
        let identity = if staged_key.exists() {
            let k = load_signing(self.suite, &staged_key, pass)?;
            std::fs::rename(&staged_key, home.key("identity"))
                .map_err(NodeError::io(&staged_key))?;
            k
        } else {
            SigningKey::from_pkcs8(self.identity.pkcs8_der())?
        };
        std::fs::rename(&staged_cert, home.node_cert()).map_err(NodeError::io(&staged_cert))?;
        crate::config::sync_dir(&home.tls())?;
        crate::config::sync_dir(&home.keys())?;
        self.identity = identity;
        self.cert = cert;
        Ok(())
    }

    /// Drops what an install staged before the log recorded it.
    pub fn abandon_cert_install(home: &Home) -> Result<()> {
        for p in [staged_cert_path(home), staged_identity_path(home)] {
            if p.exists() {
                std::fs::remove_file(&p).map_err(NodeError::io(&p))?;
            }
        }
        Ok(())
    }

    /// At open, after a crash during `pdx cert install`: completes it when
    /// `recorded` says the log holds the install of the staged certificate
    /// (DER), else removes the staged files. A key staged without its
    /// certificate (written last) was never recorded.
    pub fn finish_cert_install(
        &mut self,
        home: &Home,
        recorded: impl FnOnce(&[u8]) -> Result<bool>,
        pass: Option<&[u8]>,
    ) -> Result<StagedInstall> {
        let staged_cert = staged_cert_path(home);
        if !staged_cert.exists() {
            if staged_identity_path(home).exists() {
                Self::abandon_cert_install(home)?;
                return Ok(StagedInstall::Abandoned);
            }
            return Ok(StagedInstall::None);
        }
        if recorded(crate::pki::read_cert(&staged_cert)?.as_ref())? {
            self.commit_cert_install(home, pass)?;
            Ok(StagedInstall::Completed)
        } else {
            Self::abandon_cert_install(home)?;
            Ok(StagedInstall::Abandoned)
        }
    }

    /// Rotates the pseudonym master; the old one is kept as `pseudonym-<n>.key`.
    /// New releases use the new key: pseudonyms change for every agreement.
    pub fn rotate_pseudonym(&mut self, home: &Home, pass: Option<&[u8]>) -> Result<String> {
        let n = old_keys(home, "pseudonym-")?.len() + 1;
        let suite = self.suite;
        save(
            suite,
            &home.key(&format!("pseudonym-{n}")),
            KeyKind::Secret32,
            self.pseudonym.as_bytes(),
            pass,
        )?;
        let new = PseudonymMaster::from_bytes(suite, pdx_crypto::rng::bytes::<32>()?);
        save(
            suite,
            &home.key("pseudonym"),
            KeyKind::Secret32,
            new.as_bytes(),
            pass,
        )?;
        self.pseudonym = new;
        Ok(format!(
            "pseudonym master rotated; the previous one is kept as pseudonym-{n}.key"
        ))
    }
}

fn old_keys(home: &Home, prefix: &str) -> Result<Vec<std::path::PathBuf>> {
    let dir = home.keys();
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(NodeError::io(&dir))? {
        let e = e.map_err(NodeError::io(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".key") && !name.ends_with(".key.new") {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a passphrase from a file (first line, without the newline).
pub fn passphrase_from_file(path: &Path) -> Result<Passphrase> {
    let bytes = read_secret(path)?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    if line.is_empty() {
        return Err(NodeError::Invalid(format!(
            "{}: the passphrase file is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(line.to_vec()))
}
