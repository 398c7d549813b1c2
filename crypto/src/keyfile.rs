//! The node's secret key files: encoding only (the node writes them with 0600).
//!
//! ```text
//! file = "PDXKEY1\n" || CBOR map {kind, protection, data, [m_kib, t, p, iterations, salt, nonce]}
//! ```
//! Without a passphrase `data` is the secret itself (PKCS#8 for Ed25519 and
//! SM2 signing keys, raw 32 bytes otherwise). With one, under `intl`,
//! `data` = AES-256-GCM(KEK, nonce, aad, secret) where KEK = argon2id(passphrase,
//! salt, m_kib, t, p); under `gm`, `data` = SM4-GCM(KEK, nonce, aad, secret)
//! where KEK = PBKDF2-HMAC-SM3(passphrase, salt, iterations, 16 bytes) (GM/T
//! 0091-2020's password-based KDF). `aad = "pdx/v1 key-file" 0x00 || kind`.

use crate::aead::{AeadKey, key_len};
use crate::wire::{from_cbor, to_cbor};
use crate::{CryptoError, Result, Suite};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"PDXKEY1\n";
const PROTECTION_NONE: &str = "none";
const PROTECTION_ARGON2: &str = "argon2id-aes256gcm";
const PROTECTION_PBKDF2_SM3: &str = "pbkdf2-sm3-sm4gcm";

/// PBKDF2-HMAC-SM3 iterations for new gm key files: about the time of the
/// intl argon2id cost on these machines (`docs/benchmarks.md`), far above
/// GM/T 0091's minimum of 1,000.
pub const PBKDF2_SM3_ITERATIONS: u32 = 300_000;
/// The most iterations a key file may ask for (a tampered file must not make
/// the node spin for hours).
pub const PBKDF2_SM3_MAX_ITERATIONS: u32 = 20_000_000;

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
    /// SM2 signing key, PKCS#8 (id-ecPublicKey with the sm2p256v1 curve).
    Sm2Pkcs8,
    /// X25519 private key, 32 raw bytes.
    X25519,
    /// SM2 encryption key, the 32-byte big-endian scalar.
    Sm2Encryption,
    /// A 32-byte symmetric master key.
    Secret32,
    /// A homomorphic-aggregate LWE secret key, bits packed (`pdx_crypto::he`).
    HeLweSecret,
}

impl KeyKind {
    fn label(self) -> &'static str {
        match self {
            KeyKind::Ed25519Pkcs8 => "ed25519-pkcs8",
            KeyKind::Sm2Pkcs8 => "sm2-pkcs8",
            KeyKind::X25519 => "x25519-raw",
            KeyKind::Sm2Encryption => "sm2-enc-raw",
            KeyKind::Secret32 => "secret-32",
            KeyKind::HeLweSecret => "he-lwe-secret",
        }
    }

    fn from_label(s: &str) -> Option<Self> {
        match s {
            "ed25519-pkcs8" => Some(KeyKind::Ed25519Pkcs8),
            "sm2-pkcs8" => Some(KeyKind::Sm2Pkcs8),
            "x25519-raw" => Some(KeyKind::X25519),
            "sm2-enc-raw" => Some(KeyKind::Sm2Encryption),
            "secret-32" => Some(KeyKind::Secret32),
            "he-lwe-secret" => Some(KeyKind::HeLweSecret),
            _ => None,
        }
    }

    /// The kind of a signing key of `suite`.
    pub fn signing(suite: Suite) -> Self {
        match suite {
            Suite::Intl => KeyKind::Ed25519Pkcs8,
            Suite::Gm => KeyKind::Sm2Pkcs8,
        }
    }

    /// The kind of an encryption key of `suite`.
    pub fn encryption(suite: Suite) -> Self {
        match suite {
            Suite::Intl => KeyKind::X25519,
            Suite::Gm => KeyKind::Sm2Encryption,
        }
    }
}

/// The passphrase protection of `suite`.
fn protection_of(suite: Suite) -> &'static str {
    match suite {
        Suite::Intl => PROTECTION_ARGON2,
        Suite::Gm => PROTECTION_PBKDF2_SM3,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iterations: Option<u32>,
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

/// The intl passphrase key: argon2id at a stored cost, refused above the
/// caps (a tampered file must not exhaust memory). `object` names the kind of
/// object in the error, `what` the file.
fn argon2_key(
    passphrase: &[u8],
    salt: &[u8],
    (m, t, p): (u32, u32, u32),
    object: &'static str,
    what: &str,
) -> Result<AeadKey> {
    if m > 4 * 1024 * 1024 || t > 64 || p > 16 {
        return Err(CryptoError::Malformed {
            what: object,
            reason: format!("{what} asks for an argon2id cost above the supported maximum"),
        });
    }
    AeadKey::new(Suite::Intl, &kek(passphrase, salt, m, t, p)?[..])
}

/// The gm passphrase key: PBKDF2-HMAC-SM3 at a stored iteration count,
/// refused outside 1 ..= [`PBKDF2_SM3_MAX_ITERATIONS`].
fn pbkdf2_key(
    passphrase: &[u8],
    salt: &[u8],
    iterations: u32,
    object: &'static str,
    what: &str,
) -> Result<AeadKey> {
    if iterations == 0 || iterations > PBKDF2_SM3_MAX_ITERATIONS {
        return Err(CryptoError::Malformed {
            what: object,
            reason: format!(
                "{what} asks for {iterations} PBKDF2 iterations (1 to {PBKDF2_SM3_MAX_ITERATIONS} are accepted)"
            ),
        });
    }
    let kek = pbkdf2_sm3(passphrase, salt, iterations);
    AeadKey::new(Suite::Gm, &kek[..key_len(Suite::Gm)])
}

fn aad(kind: KeyKind) -> Vec<u8> {
    let mut a = b"pdx/v1 key-file\0".to_vec();
    a.extend_from_slice(kind.label().as_bytes());
    a
}

fn pbkdf2_sm3(passphrase: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 16]> {
    let mut out = Zeroizing::new([0u8; 16]);
    pbkdf2::pbkdf2_hmac::<sm3::Sm3>(passphrase, salt, iterations, &mut out[..]);
    out
}

/// The cost of a passphrase KDF: argon2id (m_kib, t, p) for `intl`, PBKDF2
/// iterations for `gm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    /// argon2id memory (KiB), passes, lanes.
    pub argon2: (u32, u32, u32),
    /// PBKDF2-HMAC-SM3 iterations.
    pub pbkdf2_iterations: u32,
}

/// The cost new key files get.
pub const DEFAULT_COST: KdfCost = KdfCost {
    argon2: (ARGON2_M_KIB, ARGON2_T, ARGON2_P),
    pbkdf2_iterations: PBKDF2_SM3_ITERATIONS,
};

/// Encodes a key file of `suite`, protected by `passphrase` when given.
pub fn encode(
    suite: Suite,
    kind: KeyKind,
    secret: &[u8],
    passphrase: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>> {
    encode_with_cost(suite, kind, secret, passphrase, DEFAULT_COST)
}

/// [`encode`] with an explicit KDF cost; tests use small costs.
pub fn encode_with_cost(
    suite: Suite,
    kind: KeyKind,
    secret: &[u8],
    passphrase: Option<&[u8]>,
    cost: KdfCost,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut body = KeyFileBody {
        kind: kind.label().into(),
        protection: PROTECTION_NONE.into(),
        data: secret.to_vec(),
        m_kib: None,
        t: None,
        p: None,
        iterations: None,
        salt: None,
        nonce: None,
    };
    if let Some(pass) = passphrase {
        let salt = crate::rng::bytes::<16>()?;
        let nonce = crate::rng::bytes::<12>()?;
        let key = match suite {
            Suite::Intl => {
                let (m_kib, t, p) = cost.argon2;
                (body.m_kib, body.t, body.p) = (Some(m_kib), Some(t), Some(p));
                AeadKey::new(suite, &kek(pass, &salt, m_kib, t, p)?[..])?
            }
            Suite::Gm => {
                body.iterations = Some(cost.pbkdf2_iterations);
                AeadKey::new(suite, &pbkdf2_sm3(pass, &salt, cost.pbkdf2_iterations)[..])?
            }
        };
        zeroize::Zeroize::zeroize(&mut body.data);
        body.data = key.seal(nonce, &aad(kind), secret)?;
        body.protection = protection_of(suite).into();
        body.salt = Some(salt.to_vec());
        body.nonce = Some(nonce.to_vec());
    }
    let mut out = Zeroizing::new(MAGIC.to_vec());
    out.extend_from_slice(&to_cbor(&body)?);
    Ok(out)
}

/// A passphrase KDF with its stored parameters, for objects other than key
/// files that a passphrase protects (backup archives): the suite's KDF at
/// the key files' cost, the same caps on decoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassphraseKdf {
    /// `argon2id` (intl) or `pbkdf2-hmac-sm3` (gm).
    pub alg: String,
    /// Random salt (16 bytes).
    #[serde(with = "serde_bytes")]
    pub salt: Vec<u8>,
    /// argon2id memory (KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m_kib: Option<u32>,
    /// argon2id passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<u32>,
    /// argon2id lanes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<u32>,
    /// PBKDF2 iterations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
}

/// [`PassphraseKdf::alg`] under `intl`.
pub const KDF_ARGON2ID: &str = "argon2id";
/// [`PassphraseKdf::alg`] under `gm`.
pub const KDF_PBKDF2_SM3: &str = "pbkdf2-hmac-sm3";

impl PassphraseKdf {
    /// Fresh parameters (random salt) of `suite`'s KDF at `cost`.
    pub fn new(suite: Suite, cost: KdfCost) -> Result<Self> {
        let salt = crate::rng::bytes::<16>()?.to_vec();
        Ok(match suite {
            Suite::Intl => PassphraseKdf {
                alg: KDF_ARGON2ID.into(),
                salt,
                m_kib: Some(cost.argon2.0),
                t: Some(cost.argon2.1),
                p: Some(cost.argon2.2),
                iterations: None,
            },
            Suite::Gm => PassphraseKdf {
                alg: KDF_PBKDF2_SM3.into(),
                salt,
                m_kib: None,
                t: None,
                p: None,
                iterations: Some(cost.pbkdf2_iterations),
            },
        })
    }

    /// The AEAD key of `suite` derived from `passphrase`; refuses the other
    /// suite's KDF, missing parameters and costs above the caps.
    pub fn key(&self, suite: Suite, passphrase: &[u8], what: &str) -> Result<AeadKey> {
        let malformed = |reason: String| CryptoError::Malformed {
            what: "passphrase KDF",
            reason: format!("{what}: {reason}"),
        };
        let missing = || malformed(format!("{} lacks its parameters", self.alg));
        match (self.alg.as_str(), suite) {
            (KDF_ARGON2ID, Suite::Intl) => {
                let (m, t, p) = (
                    self.m_kib.ok_or_else(missing)?,
                    self.t.ok_or_else(missing)?,
                    self.p.ok_or_else(missing)?,
                );
                if m > 4 * 1024 * 1024 || t > 64 || p > 16 {
                    return Err(malformed(
                        "argon2id cost above the supported maximum".into(),
                    ));
                }
                AeadKey::new(suite, &kek(passphrase, &self.salt, m, t, p)?[..])
            }
            (KDF_PBKDF2_SM3, Suite::Gm) => {
                let iterations = self.iterations.ok_or_else(missing)?;
                if iterations == 0 || iterations > PBKDF2_SM3_MAX_ITERATIONS {
                    return Err(malformed(format!(
                        "{iterations} PBKDF2 iterations (1 to {PBKDF2_SM3_MAX_ITERATIONS} are accepted)"
                    )));
                }
                let kek = pbkdf2_sm3(passphrase, &self.salt, iterations);
                AeadKey::new(suite, &kek[..key_len(Suite::Gm)])
            }
            (KDF_ARGON2ID, Suite::Gm) => Err(CryptoError::SuiteMismatch {
                what: format!("{what} (protected by {KDF_ARGON2ID})"),
                expected: suite,
                found: Suite::Intl,
            }),
            (KDF_PBKDF2_SM3, Suite::Intl) => Err(CryptoError::SuiteMismatch {
                what: format!("{what} (protected by {KDF_PBKDF2_SM3})"),
                expected: suite,
                found: Suite::Gm,
            }),
            (other, _) => Err(malformed(format!("unknown KDF {other:?}"))),
        }
    }
}

/// Whether the key file needs a passphrase.
pub fn is_protected(file: &[u8]) -> Result<bool> {
    let body = parse(file, "key file")?;
    Ok(body.protection != PROTECTION_NONE)
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

/// Decodes a key file of the expected `kind` and `suite`; `what` names it in
/// errors. A file protected by the other suite's KDF is refused.
pub fn decode(
    suite: Suite,
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
    let protection = body.protection.as_str();
    for found in Suite::ALL {
        if protection == protection_of(found) && found != suite {
            return Err(CryptoError::SuiteMismatch {
                what: format!("{what} (protected by {protection})"),
                expected: suite,
                found,
            });
        }
    }
    let missing = || CryptoError::Malformed {
        what: "key file",
        reason: format!("{what} lacks its {protection} parameters"),
    };
    let salt_nonce = || -> Result<(&[u8], [u8; 12])> {
        let salt = body.salt.as_deref().ok_or_else(missing)?;
        let nonce: [u8; 12] = body
            .nonce
            .as_deref()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(missing)?;
        Ok((salt, nonce))
    };
    let unlock = |key: AeadKey, nonce: [u8; 12]| {
        key.open(nonce, &aad(kind), &body.data, || what.to_string())
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Unlock {
                what: what.to_string(),
            })
    };
    let pass = || {
        passphrase.ok_or_else(|| CryptoError::Unlock {
            what: format!("{what} (it is passphrase-protected; give --passphrase-file)"),
        })
    };
    match protection {
        PROTECTION_NONE => Ok(Zeroizing::new(body.data.clone())),
        PROTECTION_PBKDF2_SM3 => {
            let pass = pass()?;
            let iterations = body.iterations.ok_or_else(missing)?;
            let (salt, nonce) = salt_nonce()?;
            unlock(pbkdf2_key(pass, salt, iterations, "key file", what)?, nonce)
        }
        PROTECTION_ARGON2 => {
            let pass = pass()?;
            let cost = (
                body.m_kib.ok_or_else(missing)?,
                body.t.ok_or_else(missing)?,
                body.p.ok_or_else(missing)?,
            );
            let (salt, nonce) = salt_nonce()?;
            unlock(argon2_key(pass, salt, cost, "key file", what)?, nonce)
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

    const CHEAP: KdfCost = KdfCost {
        argon2: (256, 1, 1),
        pbkdf2_iterations: 1000,
    };

    #[test]
    fn plain_and_protected_round_trip() -> Result<()> {
        for suite in Suite::ALL {
            let kind = KeyKind::encryption(suite);
            let plain = encode(suite, KeyKind::Secret32, &[7u8; 32], None)?;
            assert!(!is_protected(&plain)?);
            assert_eq!(
                &decode(suite, &plain, KeyKind::Secret32, "k", None)?[..],
                &[7u8; 32]
            );
            let locked = encode_with_cost(suite, kind, &[9u8; 32], Some(b"correct horse"), CHEAP)?;
            assert!(is_protected(&locked)?);
            assert!(
                !locked.windows(32).any(|w| w == [9u8; 32]),
                "secret must not appear in clear"
            );
            assert_eq!(
                &decode(suite, &locked, kind, "k", Some(b"correct horse"))?[..],
                &[9u8; 32]
            );
            assert!(matches!(
                decode(suite, &locked, kind, "k", Some(b"wrong")),
                Err(CryptoError::Unlock { .. })
            ));
            assert!(matches!(
                decode(suite, &locked, kind, "k", None),
                Err(CryptoError::Unlock { .. })
            ));
        }
        Ok(())
    }

    #[test]
    fn a_key_file_protected_by_the_other_suite_is_refused() -> Result<()> {
        let gm = encode_with_cost(Suite::Gm, KeyKind::Secret32, &[1u8; 32], Some(b"pw"), CHEAP)?;
        assert!(matches!(
            decode(Suite::Intl, &gm, KeyKind::Secret32, "k", Some(b"pw")),
            Err(CryptoError::SuiteMismatch { .. })
        ));
        let intl = encode_with_cost(
            Suite::Intl,
            KeyKind::Secret32,
            &[1u8; 32],
            Some(b"pw"),
            CHEAP,
        )?;
        assert!(matches!(
            decode(Suite::Gm, &intl, KeyKind::Secret32, "k", Some(b"pw")),
            Err(CryptoError::SuiteMismatch { .. })
        ));
        Ok(())
    }

    // PBKDF2 (RFC 8018 §5.2) over HMAC-SM3, checked against the definition:
    // one block, U1 = HMAC(P, S || INT(1)), Ui = HMAC(P, Ui-1), T = xor of all.
    #[test]
    fn pbkdf2_sm3_follows_its_definition() {
        use hmac::Mac;
        let (pass, salt, c) = (b"passphrase", b"0123456789abcdef", 5u32);
        let mut u = {
            let mut m = crate::suite::hmac_sm3(pass);
            m.update(salt);
            m.update(&1u32.to_be_bytes());
            let u: [u8; 32] = m.finalize().into_bytes().into();
            u
        };
        let mut t = u;
        for _ in 1..c {
            let mut m = crate::suite::hmac_sm3(pass);
            m.update(&u);
            u = m.finalize().into_bytes().into();
            for (a, b) in t.iter_mut().zip(u) {
                *a ^= b;
            }
        }
        assert_eq!(&pbkdf2_sm3(pass, salt, c)[..], &t[..16]);
    }

    #[test]
    fn wrong_kind_and_garbage_are_refused() -> Result<()> {
        let plain = encode(Suite::Intl, KeyKind::Secret32, &[7u8; 32], None)?;
        assert!(decode(Suite::Intl, &plain, KeyKind::X25519, "k", None).is_err());
        assert!(decode(Suite::Intl, b"PDXKEY1\n\xff", KeyKind::Secret32, "k", None).is_err());
        assert!(decode(Suite::Intl, b"-----BEGIN", KeyKind::Secret32, "k", None).is_err());
        Ok(())
    }
}
