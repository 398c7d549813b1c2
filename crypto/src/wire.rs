//! CBOR (ciborium) helpers shared by every pdx format, and the signed-document
//! container: a signature covers the exact body bytes, which are decoded only
//! after the signature verifies ("verify, then parse").

use crate::suite::is_intl;
use crate::{
    CryptoError, Digest, KeyId, Result, Signature, SignatureDomain, SigningKey, Suite, VerifyingKey,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Maximum CBOR nesting depth accepted from any untrusted source.
pub const CBOR_RECURSION_LIMIT: usize = 32;

/// Encodes `value` as CBOR.
pub fn to_cbor<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| CryptoError::Malformed {
        what: "value to encode",
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes exactly one CBOR item from `bytes` (trailing bytes are an error), with
/// the nesting depth bounded by [`CBOR_RECURSION_LIMIT`].
pub fn from_cbor<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    let mut rest = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut rest, CBOR_RECURSION_LIMIT)
        .map_err(|e| CryptoError::Malformed {
            what,
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(CryptoError::Malformed {
            what,
            reason: format!("{} trailing bytes after the CBOR item", rest.len()),
        });
    }
    Ok(value)
}

/// A body plus a detached signature over it (Ed25519 under `intl`, SM2 under
/// `gm`). The suite is named in the container (absent for `intl`, so intl
/// documents keep their bytes) and fixes the signature algorithm and the
/// hash of [`Signed::digest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The exact signed bytes (a CBOR-encoded document).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Id of the key that signed.
    pub key_id: KeyId,
    /// Signature over `body` in the document's domain.
    pub signature: Signature,
    /// The document's suite (`"gm"`; absent means `intl`).
    #[serde(default, skip_serializing_if = "is_intl")]
    pub suite: Suite,
}

impl Signed {
    /// Encodes `body` and signs it.
    pub fn sign<T: Serialize>(domain: SignatureDomain, key: &SigningKey, body: &T) -> Result<Self> {
        let body = to_cbor(body)?;
        let signature = key.sign(domain, &body)?;
        Ok(Signed {
            body,
            key_id: key.key_id(),
            signature,
            suite: key.suite(),
        })
    }

    /// Verifies under `key` (whose id must match), then decodes the body.
    pub fn verify<T: DeserializeOwned>(
        &self,
        domain: SignatureDomain,
        key: &VerifyingKey,
    ) -> Result<T> {
        key.suite().expect(self.suite, domain.label())?;
        if key.key_id() != self.key_id {
            return Err(CryptoError::BadSignature {
                what: domain.label(),
                key_id: format!("{} (document names {})", key.key_id(), self.key_id),
            });
        }
        key.verify(domain, &self.body, &self.signature)?;
        from_cbor(&self.body, domain.label())
    }

    /// Decodes the body without verifying. Only for display of data whose
    /// signature is checked elsewhere; never for decisions.
    pub fn dangerous_decode_unverified<T: DeserializeOwned>(
        &self,
        what: &'static str,
    ) -> Result<T> {
        from_cbor(&self.body, what)
    }

    /// The suite's domain hash `"pdx/v1 signed-document digest"` over body
    /// length, body, key id and signature: names this exact signed document.
    pub fn digest(&self) -> Digest {
        let mut h = self.suite.hasher("pdx/v1 signed-document digest");
        h.update(&(self.body.len() as u64).to_be_bytes());
        h.update(&self.body);
        h.update(&self.key_id.0);
        h.update(&self.signature.0);
        h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        name: String,
        n: u64,
    }

    #[test]
    fn signed_document_verifies_and_rejects_tampering() -> Result<()> {
        for suite in Suite::ALL {
            signed_document_verifies_and_rejects_tampering_in(suite)?;
        }
        Ok(())
    }

    #[test]
    fn an_intl_container_keeps_its_bytes_and_a_gm_one_names_its_suite() -> Result<()> {
        let doc = Doc {
            name: "x".into(),
            n: 3,
        };
        let intl = Signed::sign(
            SignatureDomain::Receipt,
            &SigningKey::generate(Suite::Intl)?,
            &doc,
        )?;
        let value: ciborium::Value = from_cbor(&to_cbor(&intl)?, "signed")?;
        let keys = value.as_map().map(|m| m.len()).unwrap_or_default();
        assert_eq!(keys, 3, "body, key_id, signature");
        let gm_key = SigningKey::generate(Suite::Gm)?;
        let gm = Signed::sign(SignatureDomain::Receipt, &gm_key, &doc)?;
        let back: Signed = from_cbor(&to_cbor(&gm)?, "signed")?;
        assert_eq!(back.suite, Suite::Gm);
        assert_eq!(back.digest(), gm.digest());
        // The same container claiming intl: refused before any key is tried.
        let mut relabelled = gm.clone();
        relabelled.suite = Suite::Intl;
        let e = relabelled
            .verify::<Doc>(SignatureDomain::Receipt, &gm_key.verifying_key())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("gm") && e.contains("intl"), "{e}");
        Ok(())
    }

    fn signed_document_verifies_and_rejects_tampering_in(suite: Suite) -> Result<()> {
        let key = SigningKey::generate(suite)?;
        let doc = Doc {
            name: "x".into(),
            n: 3,
        };
        let signed = Signed::sign(SignatureDomain::Receipt, &key, &doc)?;
        let back: Doc = signed.verify(SignatureDomain::Receipt, &key.verifying_key())?;
        assert_eq!(back, doc);
        let mut tampered = signed.clone();
        tampered.body[2] ^= 1;
        assert!(
            tampered
                .verify::<Doc>(SignatureDomain::Receipt, &key.verifying_key())
                .is_err()
        );
        assert!(
            signed
                .verify::<Doc>(SignatureDomain::Manifest, &key.verifying_key())
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn cbor_rejects_trailing_bytes_and_deep_nesting() {
        let mut bytes = to_cbor(&5u32).unwrap_or_default();
        bytes.push(0);
        assert!(from_cbor::<u32>(&bytes, "n").is_err());
        // 100 nested one-element arrays.
        let mut deep = vec![0x81u8; 100];
        deep.push(0x01);
        assert!(from_cbor::<ciborium::Value>(&deep, "deep").is_err());
    }
}
