//! Ed25519 signatures (ring) with mandatory domain separation.
//!
//! Every signature covers `"pdx/v1 " || domain || 0x00 || message`, so a signature
//! made for one purpose (say a checkpoint) can never be replayed as another (say a
//! receipt), even if the message bytes happened to coincide.

use crate::{CryptoError, Result};
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::Zeroizing;

/// What a signature is for. Part of the signed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureDomain {
    /// An audit-log checkpoint signed by the log's own audit key.
    Checkpoint,
    /// A witness's cosignature over another node's checkpoint.
    Cosignature,
    /// A node's identity key endorsing one of its audit keys.
    AuditKeyEndorsement,
    /// An audit key rotation statement signed by the outgoing key.
    AuditKeyRotation,
    /// A published encryption key document.
    KeyDocument,
    /// A release manifest signed by the releasing node.
    Manifest,
    /// A receipt signed by the receiving node.
    Receipt,
    /// A homomorphic-aggregate query document signed by the key holder.
    HeQuery,
    /// A homomorphic contribution signed by a contributor.
    HeContribution,
    /// A homomorphic aggregate signed by the aggregator.
    HeAggregate,
    /// A settlement confirmation signed by an insured province.
    Confirmation,
    /// An online service call's request, signed by the consumer.
    CallRequest,
    /// An online service call's response, signed by the provider.
    CallResponse,
}

impl SignatureDomain {
    /// The domain label included in the signed bytes.
    pub fn label(self) -> &'static str {
        match self {
            SignatureDomain::Checkpoint => "checkpoint",
            SignatureDomain::Cosignature => "cosignature",
            SignatureDomain::AuditKeyEndorsement => "audit-key-endorsement",
            SignatureDomain::AuditKeyRotation => "audit-key-rotation",
            SignatureDomain::KeyDocument => "key-document",
            SignatureDomain::Manifest => "manifest",
            SignatureDomain::Receipt => "receipt",
            SignatureDomain::HeQuery => "he-query",
            SignatureDomain::HeContribution => "he-contribution",
            SignatureDomain::HeAggregate => "he-aggregate",
            SignatureDomain::Confirmation => "confirmation",
            SignatureDomain::CallRequest => "call-request",
            SignatureDomain::CallResponse => "call-response",
        }
    }
}

fn signed_bytes(domain: SignatureDomain, message: &[u8]) -> Vec<u8> {
    let label = domain.label().as_bytes();
    let mut v = Vec::with_capacity(8 + label.len() + message.len());
    v.extend_from_slice(b"pdx/v1 ");
    v.extend_from_slice(label);
    v.push(0);
    v.extend_from_slice(message);
    v
}

/// An 8-byte key identifier: the first 8 bytes of BLAKE3("pdx/v1 key-id" || public key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// Key id of a 32-byte public key (Ed25519 or X25519).
    pub fn of_public(public: &[u8; 32]) -> Self {
        let mut h = blake3::Hasher::new_derive_key("pdx/v1 key-id");
        h.update(public);
        let mut id = [0u8; 8];
        id.copy_from_slice(&h.finalize().as_bytes()[..8]);
        KeyId(id)
    }

    /// Lower-case hex (16 characters).
    pub fn to_hex(&self) -> String {
        hex16(&self.0)
    }

    /// Parses 16 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 16 {
            return None;
        }
        let mut id = [0u8; 8];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            id[i] = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(KeyId(id))
    }
}

fn hex16(b: &[u8; 8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        <[u8; 8]>::try_from(b.as_slice())
            .map(KeyId)
            .map_err(|_| serde::de::Error::invalid_length(b.len(), &"8 bytes"))
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyingKey(pub [u8; 32]);

impl VerifyingKey {
    /// Parses a 32-byte Ed25519 public key.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        <[u8; 32]>::try_from(b)
            .map(VerifyingKey)
            .map_err(|_| CryptoError::MalformedKey {
                what: "Ed25519 public key",
                reason: "expected 32 bytes",
            })
    }

    /// This key's id.
    pub fn key_id(&self) -> KeyId {
        KeyId::of_public(&self.0)
    }

    /// Verifies `sig` over `message` in `domain`.
    pub fn verify(&self, domain: SignatureDomain, message: &[u8], sig: &Signature) -> Result<()> {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(&signed_bytes(domain, message), &sig.0)
            .map_err(|_| CryptoError::BadSignature {
                what: domain.label(),
                key_id: self.key_id().to_hex(),
            })
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.key_id())
    }
}

impl Serialize for VerifyingKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for VerifyingKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        VerifyingKey::from_slice(&b)
            .map_err(|_| serde::de::Error::invalid_length(b.len(), &"32 bytes"))
    }
}

/// A 64-byte Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// Parses a 64-byte signature.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 64]>::try_from(b).ok().map(Signature)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        Signature::from_slice(&b)
            .ok_or_else(|| serde::de::Error::invalid_length(b.len(), &"64 bytes"))
    }
}

/// An Ed25519 private key. The PKCS#8 bytes are zeroized on drop.
pub struct SigningKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: Ed25519KeyPair,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public.key_id())
    }
}

impl SigningKey {
    /// Generates a fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| CryptoError::Rng)?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// Loads a PKCS#8 (v1 or v2) Ed25519 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| {
            CryptoError::MalformedKey {
                what: "Ed25519 PKCS#8 private key",
                reason: "not a valid Ed25519 PKCS#8 document",
            }
        })?;
        let public = VerifyingKey::from_slice(pair.public_key().as_ref())?;
        Ok(SigningKey {
            pkcs8: Zeroizing::new(der.to_vec()),
            pair,
            public,
        })
    }

    /// The PKCS#8 encoding, for writing the key file.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.public
    }

    /// The public key's id.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    /// Signs `message` in `domain`.
    pub fn sign(&self, domain: SignatureDomain, message: &[u8]) -> Signature {
        let sig = self.pair.sign(&signed_bytes(domain, message));
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        Signature(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_only_in_its_domain_and_for_its_message() -> Result<()> {
        let key = SigningKey::generate()?;
        let sig = key.sign(SignatureDomain::Checkpoint, b"tree 5");
        let public = key.verifying_key();
        public.verify(SignatureDomain::Checkpoint, b"tree 5", &sig)?;
        assert!(
            public
                .verify(SignatureDomain::Receipt, b"tree 5", &sig)
                .is_err()
        );
        assert!(
            public
                .verify(SignatureDomain::Checkpoint, b"tree 6", &sig)
                .is_err()
        );
        let other = SigningKey::generate()?;
        assert!(
            other
                .verifying_key()
                .verify(SignatureDomain::Checkpoint, b"tree 5", &sig)
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn pkcs8_round_trip_keeps_the_key() -> Result<()> {
        let key = SigningKey::generate()?;
        let again = SigningKey::from_pkcs8(key.pkcs8_der())?;
        assert_eq!(key.verifying_key(), again.verifying_key());
        assert!(SigningKey::from_pkcs8(b"not a key").is_err());
        Ok(())
    }

    #[test]
    fn key_id_hex_round_trip() {
        let id = KeyId::of_public(&[7u8; 32]);
        assert_eq!(KeyId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(KeyId::from_hex("xyz"), None);
    }
}
