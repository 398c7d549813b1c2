//! The node's secret key files: encoding only (the node writes them with 0600).
//!
//! ```text
//! file = "PDXKEY1\n" || CBOR map {kind, protection, data, [m_kib, t, p, salt, nonce]}
//! ```
//! Without a passphrase `data` is the secret itself (PKCS#8 for Ed25519, raw 32
//! bytes otherwise). With one, `data` = AES-256-GCM(KEK, nonce, aad, secret) where
//! KEK = argon2id(passphrase, salt, m_kib, t, p) and aad = "pdx/v1 key-file" || kind.

use crate::aead::AeadKey;
use crate::wire::{from_cbor, to_cbor};
use crate::{CryptoError, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"PDXKEY1\n";
const PROTECTION_NONE: &str = "none";
const PROTECTION_ARGON2: &str = "argon2id-aes256gcm";

/// Argon2id cost used for new key files (RFC 9106's second recommendation, p = 1
/// for these 2-core machines): 64 MiB, 3 passes.
pub const ARGON2_M_KIB: u32 = 64 * 1024;
/// Argon2id passes.
pub const ARGON2_T: u32 = 3;
/// Argon2id lanes.
pub const ARGON2_P: u32 = 1;

/// What a key file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// Ed25519 private key, PKCS#8.
    Ed25519Pkcs8,
    /// X25519 private key, 32 raw bytes.
    X25519,
    /// A 32-byte symmetric master key.
    Secret32,
    /// A homomorphic-aggregate LWE secret key, bits packed (`pdx_crypto::he`).
    HeLweSecret,
}

impl KeyKind {
    fn label(self) -> &'static str {
        match self {
            KeyKind::Ed25519Pkcs8 => "ed25519-pkcs8",
            KeyKind::X25519 => "x25519-raw",
            KeyKind::Secret32 => "secret-32",
            KeyKind::HeLweSecret => "he-lwe-secret",
        }
    }

    fn from_label(s: &str) -> Option<Self> {
        match s {
            "ed25519-pkcs8" => Some(KeyKind::Ed25519Pkcs8),
            "x25519-raw" => Some(KeyKind::X25519),
            "secret-32" => Some(KeyKind::Secret32),
            "he-lwe-secret" => Some(KeyKind::HeLweSecret),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct KeyFileBody {
    kind: String,
    protection: String,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m_kib: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    salt: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    nonce: Option<Vec<u8>>,
}

impl Drop for KeyFileBody {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.data);
    }
}

fn kek(passphrase: &[u8], salt: &[u8], m_kib: u32, t: u32, p: u32) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(m_kib, t, p, Some(32))
        .map_err(|e| CryptoError::Argon2(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, &mut out[..])
        .map_err(|e| CryptoError::Argon2(e.to_string()))?;
    Ok(out)
}

fn aad(kind: KeyKind) -> Vec<u8> {
    let mut a = b"pdx/v1 key-file\0".to_vec();
    a.extend_from_slice(kind.label().as_bytes());
    a
}

/// Encodes a key file, protected by `passphrase` when given.
pub fn encode(
    kind: KeyKind,
    secret: &[u8],
    passphrase: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>> {
    encode_with_cost(kind, secret, passphrase, (ARGON2_M_KIB, ARGON2_T, ARGON2_P))
}

/// [`encode`] with explicit argon2id cost (m_kib, t, p); tests use small costs.
pub fn encode_with_cost(
    kind: KeyKind,
    secret: &[u8],
    passphrase: Option<&[u8]>,
    (m_kib, t, p): (u32, u32, u32),
) -> Result<Zeroizing<Vec<u8>>> {
    let body = match passphrase {
        None => KeyFileBody {
            kind: kind.label().into(),
            protection: PROTECTION_NONE.into(),
            data: secret.to_vec(),
            m_kib: None,
            t: None,
            p: None,
            salt: None,
            nonce: None,
        },
        Some(pass) => {
            let salt = crate::rng::bytes::<16>()?;
            let nonce = crate::rng::bytes::<12>()?;
            let kek_bytes = kek(pass, &salt, m_kib, t, p)?;
            let key = AeadKey::new(&kek_bytes)?;
            KeyFileBody {
                kind: kind.label().into(),
                protection: PROTECTION_ARGON2.into(),
                data: key.seal(nonce, &aad(kind), secret)?,
                m_kib: Some(m_kib),
                t: Some(t),
                p: Some(p),
                salt: Some(salt.to_vec()),
                nonce: Some(nonce.to_vec()),
            }
        }
    };
    let mut out = Zeroizing::new(MAGIC.to_vec());
    out.extend_from_slice(&to_cbor(&body)?);
    Ok(out)
}

/// Whether the key file needs a passphrase.
pub fn is_protected(file: &[u8]) -> Result<bool> {
    let body = parse(file, "key file")?;
    Ok(body.protection == PROTECTION_ARGON2)
}

fn parse(file: &[u8], what: &str) -> Result<KeyFileBody> {
    let rest = file
        .strip_prefix(MAGIC)
        .ok_or_else(|| CryptoError::Malformed {
            what: "key file",
            reason: format!("{what} does not start with the pdx key file header"),
        })?;
    from_cbor(rest, "key file")
}

/// Decodes a key file of the expected `kind`; `what` names it in errors.
pub fn decode(
    file: &[u8],
    kind: KeyKind,
    what: &str,
    passphrase: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>> {
    let body = parse(file, what)?;
    let found = KeyKind::from_label(&body.kind).ok_or_else(|| CryptoError::Malformed {
        what: "key file",
        reason: format!("{what} holds an unknown key kind {:?}", body.kind),
    })?;
    if found != kind {
        return Err(CryptoError::Malformed {
            what: "key file",
            reason: format!(
                "{what} holds a {} key, expected {}",
                found.label(),
                kind.label()
            ),
        });
    }
    match body.protection.as_str() {
        PROTECTION_NONE => Ok(Zeroizing::new(body.data.clone())),
        PROTECTION_ARGON2 => {
            let pass = passphrase.ok_or_else(|| CryptoError::Unlock {
                what: format!("{what} (it is passphrase-protected; give --passphrase-file)"),
            })?;
            let missing = || CryptoError::Malformed {
                what: "key file",
                reason: format!("{what} lacks its argon2id parameters"),
            };
            let (m, t, p) = (
                body.m_kib.ok_or_else(missing)?,
                body.t.ok_or_else(missing)?,
                body.p.ok_or_else(missing)?,
            );
            // Refuse absurd costs a tampered file could use to exhaust memory.
            if m > 4 * 1024 * 1024 || t > 64 || p > 16 {
                return Err(CryptoError::Malformed {
                    what: "key file",
                    reason: format!("{what} asks for an argon2id cost above the supported maximum"),
                });
            }
            let salt = body.salt.as_deref().ok_or_else(missing)?;
            let nonce: [u8; 12] = body
                .nonce
                .as_deref()
                .and_then(|n| n.try_into().ok())
                .ok_or_else(missing)?;
            let kek_bytes = kek(pass, salt, m, t, p)?;
            let key = AeadKey::new(&kek_bytes)?;
            key.open(nonce, &aad(kind), &body.data, || what.to_string())
                .map(Zeroizing::new)
                .map_err(|_| CryptoError::Unlock {
                    what: what.to_string(),
                })
        }
        other => Err(CryptoError::Malformed {
            what: "key file",
            reason: format!("{what} uses unknown protection {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: (u32, u32, u32) = (256, 1, 1);

    #[test]
    fn plain_and_protected_round_trip() -> Result<()> {
        let plain = encode(KeyKind::Secret32, &[7u8; 32], None)?;
        assert!(!is_protected(&plain)?);
        assert_eq!(
            &decode(&plain, KeyKind::Secret32, "k", None)?[..],
            &[7u8; 32]
        );
        let locked = encode_with_cost(KeyKind::X25519, &[9u8; 32], Some(b"correct horse"), CHEAP)?;
        assert!(is_protected(&locked)?);
        assert!(
            !locked.windows(32).any(|w| w == [9u8; 32]),
            "secret must not appear in clear"
        );
        assert_eq!(
            &decode(&locked, KeyKind::X25519, "k", Some(b"correct horse"))?[..],
            &[9u8; 32]
        );
        assert!(matches!(
            decode(&locked, KeyKind::X25519, "k", Some(b"wrong")),
            Err(CryptoError::Unlock { .. })
        ));
        assert!(matches!(
            decode(&locked, KeyKind::X25519, "k", None),
            Err(CryptoError::Unlock { .. })
        ));
        Ok(())
    }

    #[test]
    fn wrong_kind_and_garbage_are_refused() -> Result<()> {
        let plain = encode(KeyKind::Secret32, &[7u8; 32], None)?;
        assert!(decode(&plain, KeyKind::X25519, "k", None).is_err());
        assert!(decode(b"PDXKEY1\n\xff", KeyKind::Secret32, "k", None).is_err());
        assert!(decode(b"-----BEGIN", KeyKind::Secret32, "k", None).is_err());
        Ok(())
    }
}
