//! Encryption-key documents: a node's public encryption key (X25519 under
//! `intl`, SM2 under `gm`), signed by the node's identity key (the key in its
//! network certificate, of the same suite).
//!
//! The signature and the certificate, not the channel a document came through,
//! make it trusted: a sender may fetch key documents from any directory node and
//! checks each against the CA before wrapping a data key for it. Certificate
//! checking needs the PKI and lives in `pdx-node`; this module checks the
//! signature and the document's internal consistency.

use crate::envelope::EncryptionPublic;
use crate::wire::Signed;
use crate::{CryptoError, KeyId, Result, SignatureDomain, SigningKey, Suite, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The signed content of a key document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDocumentBody {
    /// Format version (1).
    pub version: u8,
    /// Department code of the key's owner (must match its certificate).
    pub dept: String,
    /// Envelope suite the key is for (1 `intl`, 2 `gm`).
    pub suite: u16,
    /// The public key (X25519 or SM2, as `suite` says).
    pub public: EncryptionPublic,
    /// When the key was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// Whether senders should use this key for new releases (false once rotated out).
    pub active: bool,
}

impl KeyDocumentBody {
    /// The key id envelopes name.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    /// The suite the body names, checked against its key's own suite.
    pub fn checked_suite(&self) -> Result<Suite> {
        let named = Suite::from_envelope_id(self.suite)?;
        named.expect(self.public.suite(), "the key of a key document")?;
        Ok(named)
    }
}

/// A key document plus the DER certificate of the identity key that signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDocument {
    /// Signed body.
    pub signed: Signed,
    /// The signer's certificate (DER), checked against the network CA by the caller.
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
}

impl KeyDocument {
    /// Signs `body` with the node identity key and attaches its certificate.
    pub fn sign(
        body: &KeyDocumentBody,
        identity: &SigningKey,
        certificate: Vec<u8>,
    ) -> Result<Self> {
        identity
            .suite()
            .expect(body.checked_suite()?, "key document")?;
        Ok(KeyDocument {
            signed: Signed::sign(SignatureDomain::KeyDocument, identity, body)?,
            certificate,
        })
    }

    /// Verifies the signature under `identity` (the public key from the
    /// already-validated certificate) and that the document names `cert_dept`.
    pub fn verify(&self, identity: &VerifyingKey, cert_dept: &str) -> Result<KeyDocumentBody> {
        let body: KeyDocumentBody = self.signed.verify(SignatureDomain::KeyDocument, identity)?;
        if body.version != 1 {
            return Err(CryptoError::Malformed {
                what: "key document",
                reason: format!("version {} (this build reads version 1)", body.version),
            });
        }
        identity
            .suite()
            .expect(body.checked_suite()?, "key document")?;
        if body.dept != cert_dept {
            return Err(CryptoError::Malformed {
                what: "key document",
                reason: format!(
                    "names department {} but is signed by the certificate of {}",
                    body.dept, cert_dept
                ),
            });
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EncryptionSecret;

    #[test]
    fn key_document_binds_department_and_signer() -> Result<()> {
        for suite in Suite::ALL {
            key_document_binds_department_and_signer_in(suite)?;
        }
        Ok(())
    }

    #[test]
    fn key_documents_refuse_a_mixed_suite() -> Result<()> {
        let gm_identity = SigningKey::generate(Suite::Gm)?;
        let intl_enc = EncryptionSecret::generate(Suite::Intl)?;
        let mut body = KeyDocumentBody {
            version: 1,
            dept: "440000".into(),
            suite: 1,
            public: intl_enc.public(),
            created_ms: 1,
            active: true,
        };
        assert!(KeyDocument::sign(&body, &gm_identity, vec![]).is_err());
        body.suite = 2;
        assert!(
            body.checked_suite().is_err(),
            "names gm, holds an X25519 key"
        );
        Ok(())
    }

    fn key_document_binds_department_and_signer_in(suite: Suite) -> Result<()> {
        let identity = SigningKey::generate(suite)?;
        let enc = EncryptionSecret::generate(suite)?;
        let body = KeyDocumentBody {
            version: 1,
            dept: "440000".into(),
            suite: suite.envelope_id(),
            public: enc.public(),
            created_ms: 1,
            active: true,
        };
        let doc = KeyDocument::sign(&body, &identity, vec![1, 2, 3])?;
        assert_eq!(doc.verify(&identity.verifying_key(), "440000")?, body);
        assert!(
            doc.verify(&identity.verifying_key(), "110000").is_err(),
            "wrong department"
        );
        let other = SigningKey::generate(suite)?;
        assert!(
            doc.verify(&other.verifying_key(), "440000").is_err(),
            "wrong signer"
        );
        Ok(())
    }
}
