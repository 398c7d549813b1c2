//! Signed checkpoints, witness cosignatures and audit-key endorsements.

use crate::merkle::Hash;
use pdx_crypto::wire::Signed;
use pdx_crypto::{CryptoError, Digest, KeyId, SignatureDomain, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// A log's commitment to its first `size` entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Log id in `dept:keyid` form.
    pub origin: String,
    /// Number of entries covered.
    pub size: u64,
    /// RFC 9162 root (BLAKE3) of those entries.
    #[serde(with = "serde_bytes")]
    pub root: Hash,
    /// When it was signed (ms since the Unix epoch).
    pub time_ms: u64,
}

/// A checkpoint signed by the log's audit key valid at `size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// Signed CBOR body of the [`Checkpoint`].
    pub signed: Signed,
}

impl SignedCheckpoint {
    /// Signs `cp` with `key`.
    pub fn sign(cp: &Checkpoint, key: &SigningKey) -> Result<Self, CryptoError> {
        Ok(SignedCheckpoint {
            signed: Signed::sign(SignatureDomain::Checkpoint, key, cp)?,
        })
    }

    /// Verifies under `key` and decodes.
    pub fn verify(&self, key: &VerifyingKey) -> Result<Checkpoint, CryptoError> {
        self.signed.verify(SignatureDomain::Checkpoint, key)
    }

    /// Decodes without verifying (to learn which key to verify with).
    pub fn peek(&self) -> Result<Checkpoint, CryptoError> {
        self.signed.dangerous_decode_unverified("checkpoint")
    }

    /// Id of the signing key.
    pub fn key_id(&self) -> KeyId {
        self.signed.key_id
    }

    /// Digest naming this signed checkpoint (what cosignatures cover).
    pub fn digest(&self) -> Digest {
        self.signed.digest()
    }
}

/// An audit key, endorsed by the node identity key whose certificate binds it to
/// the department. `from_seq` is the first entry position the key may sign for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEndorsement {
    /// Log id in `dept:keyid` form.
    pub log_id: String,
    /// The audit public key.
    pub audit_key: VerifyingKey,
    /// Checkpoints of size greater than `from_seq` may use this key (0 for genesis).
    pub from_seq: u64,
    /// When the endorsement was made.
    pub time_ms: u64,
}

/// An endorsement signed by the identity key, with that key's certificate (DER).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEndorsement {
    /// Signed [`KeyEndorsement`].
    pub signed: Signed,
    /// Certificate of the identity key (DER).
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
}

impl SignedEndorsement {
    /// Endorses `endorsement` with the identity key.
    pub fn sign(
        endorsement: &KeyEndorsement,
        identity: &SigningKey,
        certificate: Vec<u8>,
    ) -> Result<Self, CryptoError> {
        Ok(SignedEndorsement {
            signed: Signed::sign(SignatureDomain::AuditKeyEndorsement, identity, endorsement)?,
            certificate,
        })
    }

    /// Verifies under the identity key taken from the (already validated) certificate.
    pub fn verify(&self, identity: &VerifyingKey) -> Result<KeyEndorsement, CryptoError> {
        self.signed
            .verify(SignatureDomain::AuditKeyEndorsement, identity)
    }
}

/// A witness's statement that it checked a checkpoint against everything it had
/// seen of that log before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosignature {
    /// The witnessed log.
    pub log_id: String,
    /// Size of the witnessed checkpoint.
    pub size: u64,
    /// Root of the witnessed checkpoint.
    #[serde(with = "serde_bytes")]
    pub root: Hash,
    /// Digest of the signed checkpoint.
    pub checkpoint_digest: Digest,
    /// The witness's log id.
    pub witness: String,
    /// When the witness cosigned.
    pub time_ms: u64,
}

/// A cosignature signed by the witness's audit key, with the witness's endorsement
/// of that key, so it can be checked from the CA certificate alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCosignature {
    /// Signed [`Cosignature`].
    pub signed: Signed,
    /// The witness's endorsement of the key that signed.
    pub witness_endorsement: SignedEndorsement,
}

impl SignedCosignature {
    /// Cosigns.
    pub fn sign(
        c: &Cosignature,
        key: &SigningKey,
        endorsement: SignedEndorsement,
    ) -> Result<Self, CryptoError> {
        Ok(SignedCosignature {
            signed: Signed::sign(SignatureDomain::Cosignature, key, c)?,
            witness_endorsement: endorsement,
        })
    }

    /// Verifies under the witness audit key.
    pub fn verify(&self, key: &VerifyingKey) -> Result<Cosignature, CryptoError> {
        self.signed.verify(SignatureDomain::Cosignature, key)
    }
}

/// A checkpoint of another log that this node witnessed, with its cosignature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessedCheckpoint {
    /// The peer's log.
    pub log_id: String,
    /// The peer's signed checkpoint as received.
    pub checkpoint: SignedCheckpoint,
    /// The peer's endorsement of the key that signed it.
    pub endorsement: SignedEndorsement,
    /// This node's cosignature over it.
    pub cosignature: SignedCosignature,
}

/// Two checkpoints signed by one log that cannot both be true.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkEvidence {
    /// The offending log.
    pub log_id: String,
    /// The checkpoint held before.
    pub earlier: SignedCheckpoint,
    /// The conflicting one.
    pub later: SignedCheckpoint,
    /// Endorsements for the keys that signed them.
    pub endorsements: Vec<SignedEndorsement>,
    /// What the witness found.
    pub reason: String,
    /// When it was found.
    pub time_ms: u64,
}
