use thiserror::Error;

/// Errors of the cryptographic layer. Messages never contain key material.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The operating system's random number generator failed; nothing was produced.
    #[error("the system random number generator failed; check that /dev/urandom is available")]
    Rng,
    /// Key bytes could not be parsed (wrong length, wrong encoding, wrong algorithm).
    #[error("malformed {what}: {reason}")]
    MalformedKey {
        /// Which key was being parsed.
        what: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A signature did not verify under the given public key and domain.
    #[error("signature on {what} does not verify under key {key_id}")]
    BadSignature {
        /// What was signed.
        what: &'static str,
        /// The key id the signature was checked against.
        key_id: String,
    },
    /// Authenticated decryption failed: wrong key, wrong context (AAD), truncated
    /// or modified ciphertext. The cases are deliberately indistinguishable.
    #[error("cannot open {what}: wrong key, wrong record/field context, or modified ciphertext")]
    OpenFailed {
        /// What was being opened (e.g. `field certno of record 17`).
        what: String,
    },
    /// An envelope or key file names a suite this build does not implement.
    #[error(
        "unknown cryptographic suite {0}; this build supports suite 1 (intl: X25519 + HKDF-SHA256 + AES-256-GCM) and suite 2 (gm: SM2 + SM3 + SM4-GCM)"
    )]
    UnknownSuite(u16),
    /// An object of one suite met a key, log or network of the other: a
    /// network uses one suite for everything (`pdx ca init --suite`).
    #[error(
        "{what} is of the {found} suite ({}), but this network uses the {expected} suite ({}); objects of one suite are never accepted by the other",
        found.algorithms(),
        expected.algorithms()
    )]
    SuiteMismatch {
        /// What was refused.
        what: String,
        /// The suite the network (or key) uses.
        expected: crate::Suite,
        /// The suite of the refused object.
        found: crate::Suite,
    },
    /// No wrapped data key in the release is addressed to this node and one of its keys.
    #[error(
        "no data key in release {release} is wrapped for department {dept} with a key this node holds"
    )]
    NotARecipient {
        /// Release id (hex).
        release: String,
        /// This node's department code.
        dept: String,
    },
    /// Key agreement (X25519) or SM2 encryption of a data key failed: a
    /// low-order or malformed public key.
    #[error("key wrapping failed (low-order or malformed recipient or ephemeral public key)")]
    KeyAgreement,
    /// A key file is protected by a passphrase but none (or a wrong one) was given.
    #[error("cannot unlock {what}: wrong passphrase or corrupted key file")]
    Unlock {
        /// Which key file.
        what: String,
    },
    /// A key file or document did not decode.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A passphrase-hashing parameter was rejected by argon2 or PBKDF2.
    #[error("passphrase key derivation failed: {0}")]
    Argon2(String),
    /// Homomorphic aggregation input was rejected.
    #[error("homomorphic aggregate: {0}")]
    He(String),
}
