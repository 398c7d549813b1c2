//! Certified documents: a body signed by a node's identity key, with the
//! certificate vouching for the key, checkable offline by anyone holding the
//! network CA. Homomorphic-aggregate queries, contributions and aggregates and
//! settlement confirmations are such documents; peers push them with `Submit`
//! (dispatched by kind in `submissions`).

use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::pki::{CertChecker, CertInfo};
use pdx_crypto::wire::{Signed, from_cbor, to_cbor};
use pdx_crypto::{Digest, SignatureDomain};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Submit kind of a homomorphic-aggregate contribution.
pub const KIND_HE_CONTRIBUTION: &str = "he-contribution";
/// Submit kind of a homomorphic aggregate sent to the key holder.
pub const KIND_HE_AGGREGATE: &str = "he-aggregate";
/// Submit kind of a committee query's key proposal (coordinator to members).
pub const KIND_HE_KEY_PROPOSAL: &str = "he-key-proposal";
/// Submit kind of a member's key share (member to coordinator).
pub const KIND_HE_KEY_SHARE: &str = "he-key-share";
/// Submit kind of a committee key's transcript (coordinator to members).
pub const KIND_HE_KEY_TRANSCRIPT: &str = "he-key-transcript";
/// Submit kind of a member's partial decryption (member to coordinator).
pub const KIND_HE_PARTIAL: &str = "he-partial";
/// Submit kind of a settlement confirmation.
pub const KIND_CONFIRMATION: &str = "settlement-confirmation";
/// Submit kind of a batch of settlement confirmations (one document, one
/// entry per release).
pub const KIND_CONFIRMATION_BATCH: &str = "settlement-confirmation-batch";

/// A document signed by a node's identity key, with the certificate that
/// vouches for the key: anyone holding the network CA can check it later,
/// offline, whoever relayed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certified {
    /// The signed body.
    pub signed: Signed,
    /// The signer's certificate (DER).
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
}

impl Certified {
    /// Signs `body` with this node's identity key.
    pub fn sign<T: Serialize>(node: &Node, domain: SignatureDomain, body: &T) -> Result<Self> {
        let (signed, certificate) = node.sign_certified(domain, body)?;
        Ok(Certified {
            signed,
            certificate,
        })
    }

    /// Signs `body` with `identity`, attaching its certificate.
    pub fn sign_with<T: Serialize>(
        identity: &pdx_crypto::SigningKey,
        certificate: Vec<u8>,
        domain: SignatureDomain,
        body: &T,
    ) -> Result<Self> {
        Ok(Certified {
            signed: Signed::sign(domain, identity, body)?,
            certificate,
        })
    }

    /// Checks the certificate against `checker`, then the signature, then
    /// decodes the body. Returns the body and who signed it.
    pub fn verify<T: DeserializeOwned>(
        &self,
        checker: &CertChecker,
        domain: SignatureDomain,
    ) -> Result<(T, CertInfo)> {
        let info = checker.check(&self.certificate)?;
        let body = self.signed.verify(domain, &info.identity)?;
        Ok((body, info))
    }

    /// Names this exact signed document.
    pub fn digest(&self) -> Digest {
        self.signed.digest()
    }

    /// CBOR bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(to_cbor(self)?)
    }

    /// Parses CBOR bytes (untrusted; nothing is checked but the shape).
    pub fn from_bytes(bytes: &[u8], what: &'static str) -> Result<Self> {
        Ok(from_cbor(bytes, what)?)
    }
}

/// Reads a document file written by a pdx command.
pub fn read_file<T: DeserializeOwned>(path: &str, what: &'static str) -> Result<T> {
    let bytes = std::fs::read(path).map_err(NodeError::io(path))?;
    from_cbor(&bytes, what).map_err(|e| NodeError::Invalid(format!("{path}: {e}")))
}

/// A submission as written to a file (file mode): kind plus document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmissionFile {
    /// Submit kind.
    pub kind: String,
    /// The document (CBOR).
    #[serde(with = "serde_bytes")]
    pub document: Vec<u8>,
}
