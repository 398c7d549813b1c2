//! Keyed pseudonyms: the suite's MAC (keyed BLAKE3, or HMAC-SM3 under `gm`)
//! under a key derived per data-sharing agreement and field, so pseudonyms
//! link records inside one agreement and are unlinkable across agreements (and
//! across fields).

use crate::Suite;
use zeroize::Zeroizing;

/// Context string of the key derivation; fixed forever (changing it changes every pseudonym).
pub const PSEUDONYM_KEY_CONTEXT: &str = "pdx 2026-11 pseudonym key v1 (agreement, field)";

/// The node's pseudonym master key (32 secret bytes) and its suite.
pub struct PseudonymMaster(Zeroizing<[u8; 32]>, Suite);

impl std::fmt::Debug for PseudonymMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymMaster(..)")
    }
}

impl PseudonymMaster {
    /// Wraps 32 secret bytes; pseudonyms follow `suite`.
    pub fn from_bytes(suite: Suite, raw: [u8; 32]) -> Self {
        PseudonymMaster(Zeroizing::new(raw), suite)
    }

    /// The secret bytes (for the key file).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derives the key for `field` under `agreement`:
    /// `suite.derive_key(CONTEXT, master || lp(agreement) || lp(field))`.
    pub fn key_for(&self, agreement: &str, field: &str) -> PseudonymKey {
        let mut material =
            Zeroizing::new(Vec::with_capacity(32 + 16 + agreement.len() + field.len()));
        material.extend_from_slice(&self.0[..]);
        crate::aead::push_lp(&mut material, agreement.as_bytes());
        crate::aead::push_lp(&mut material, field.as_bytes());
        let key = self.1.derive_key(PSEUDONYM_KEY_CONTEXT, &material);
        let mac = match self.1 {
            Suite::Intl => Mac::Blake3(key),
            Suite::Gm => Mac::Sm3(Box::new(crate::suite::hmac_sm3(&key[..]))),
        };
        PseudonymKey(mac)
    }
}

enum Mac {
    Blake3(Zeroizing<[u8; 32]>),
    // The keyed HMAC state (inner and outer pads absorbed once), cloned per value.
    Sm3(Box<hmac::Hmac<sm3::Sm3>>),
}

/// A per-(agreement, field) pseudonym key.
pub struct PseudonymKey(Mac);

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(..)")
    }
}

impl PseudonymKey {
    /// The pseudonym of `value`: the first 16 bytes of the keyed hash, as 32
    /// hex characters (128 bits: collisions are negligible below 2^60 values).
    pub fn pseudonymize(&self, value: &[u8], out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let h: [u8; 32] = match &self.0 {
            Mac::Blake3(key) => *blake3::keyed_hash(key, value).as_bytes(),
            Mac::Sm3(mac) => {
                use hmac::Mac as _;
                let mut m = (**mac).clone();
                m.update(value);
                m.finalize().into_bytes().into()
            }
        };
        for b in &h[..16] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &PseudonymKey, v: &str) -> String {
        let mut s = String::new();
        key.pseudonymize(v.as_bytes(), &mut s);
        s
    }

    #[test]
    fn stable_within_an_agreement_unlinkable_across() {
        for suite in Suite::ALL {
            stable_within_an_agreement_unlinkable_across_in(suite);
        }
    }

    #[test]
    fn gm_pseudonyms_are_hmac_sm3_under_the_derived_key() {
        let master = PseudonymMaster::from_bytes(Suite::Gm, [3u8; 32]);
        let mut material = [3u8; 32].to_vec();
        crate::aead::push_lp(&mut material, b"A");
        crate::aead::push_lp(&mut material, b"f");
        let key = Suite::Gm.derive_key(PSEUDONYM_KEY_CONTEXT, &material);
        let want = hex::encode(&Suite::Gm.keyed_hash(&key, b"v")[..16]);
        assert_eq!(p(&master.key_for("A", "f"), "v"), want);
        let intl = PseudonymMaster::from_bytes(Suite::Intl, [3u8; 32]);
        assert_ne!(p(&intl.key_for("A", "f"), "v"), want);
    }

    fn stable_within_an_agreement_unlinkable_across_in(suite: Suite) {
        let master = PseudonymMaster::from_bytes(suite, [3u8; 32]);
        let a1 = master.key_for("DSA-2026-001", "psn_no");
        let a1_again = master.key_for("DSA-2026-001", "psn_no");
        let a2 = master.key_for("DSA-2026-002", "psn_no");
        let other_field = master.key_for("DSA-2026-001", "certno");
        assert_eq!(p(&a1, "P123"), p(&a1_again, "P123"));
        assert_ne!(p(&a1, "P123"), p(&a1, "P124"));
        assert_ne!(p(&a1, "P123"), p(&a2, "P123"));
        assert_ne!(p(&a1, "P123"), p(&other_field, "P123"));
        let other_master = PseudonymMaster::from_bytes(suite, [4u8; 32]);
        assert_ne!(
            p(&a1, "P123"),
            p(&other_master.key_for("DSA-2026-001", "psn_no"), "P123")
        );
        assert_eq!(p(&a1, "P123").len(), 32);
    }

    #[test]
    fn agreement_and_field_boundaries_are_unambiguous() {
        let master = PseudonymMaster::from_bytes(Suite::Intl, [3u8; 32]);
        assert_ne!(
            p(&master.key_for("ab", "c"), "v"),
            p(&master.key_for("a", "bc"), "v")
        );
    }
}
