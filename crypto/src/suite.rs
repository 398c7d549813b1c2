//! The two cryptographic suites a network chooses once, at `pdx ca init`:
//!
//! | suite  | signatures         | hash, KDF, MAC               | AEAD        | key wrap                 |
//! |--------|--------------------|------------------------------|-------------|--------------------------|
//! | `intl` | Ed25519            | BLAKE3 (hash, derive_key, keyed) | AES-256-GCM | X25519 + HKDF-SHA256     |
//! | `gm`   | SM2 with SM3 (GM/T 0003.2, ID `1234567812345678`) | SM3, HKDF-SM3, HMAC-SM3 | SM4-GCM (RFC 8998) | SM2 public-key encryption (GM/T 0003.4) |
//!
//! Everything a node signs, hashes or seals goes through this type, so one
//! network never mixes suites; an object of the other suite is refused with an
//! error naming both ([`Suite::expect`]). The byte-level definitions are in
//! `docs/crypto.md`.

use crate::{CryptoError, Digest, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sm3::Digest as _;
use std::fmt;
use zeroize::Zeroizing;

/// A cryptographic suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum Suite {
    /// Ed25519, X25519, AES-256-GCM, BLAKE3 (the default).
    #[default]
    Intl,
    /// 国密: SM2, SM3, SM4.
    Gm,
}

/// Envelope suite id of `intl` (named in wrapped keys and key documents).
pub const ENVELOPE_INTL: u16 = 1;
/// Envelope suite id of `gm`.
pub const ENVELOPE_GM: u16 = 2;

impl Suite {
    /// Both suites.
    pub const ALL: [Suite; 2] = [Suite::Intl, Suite::Gm];

    /// The suite's name: `intl` or `gm`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Intl => "intl",
            Suite::Gm => "gm",
        }
    }

    /// Parses a suite name.
    pub fn parse(name: &str) -> Option<Suite> {
        match name {
            "intl" => Some(Suite::Intl),
            "gm" => Some(Suite::Gm),
            _ => None,
        }
    }

    /// The algorithms, for humans.
    pub fn algorithms(self) -> &'static str {
        match self {
            Suite::Intl => "Ed25519, X25519, AES-256-GCM, BLAKE3",
            Suite::Gm => "SM2, SM3, SM4-GCM",
        }
    }

    /// The envelope suite id: 1 (`X25519-HKDF-SHA256-AES256GCM`) or 2
    /// (`SM2PKE-SM3-SM4GCM`).
    pub fn envelope_id(self) -> u16 {
        match self {
            Suite::Intl => ENVELOPE_INTL,
            Suite::Gm => ENVELOPE_GM,
        }
    }

    /// The suite of an envelope suite id; an unknown id is refused.
    pub fn from_envelope_id(id: u16) -> Result<Suite> {
        match id {
            ENVELOPE_INTL => Ok(Suite::Intl),
            ENVELOPE_GM => Ok(Suite::Gm),
            other => Err(CryptoError::UnknownSuite(other)),
        }
    }

    /// Refuses `found` unless it is this suite; `what` names the object.
    pub fn expect(self, found: Suite, what: &str) -> Result<()> {
        if self == found {
            Ok(())
        } else {
            Err(CryptoError::SuiteMismatch {
                what: what.to_string(),
                expected: self,
                found,
            })
        }
    }

    /// The suite's plain hash: BLAKE3 or SM3 of `data`.
    pub fn digest(self, data: &[u8]) -> Digest {
        match self {
            Suite::Intl => Digest(*blake3::hash(data).as_bytes()),
            Suite::Gm => Digest(sm3::Sm3::digest(data).into()),
        }
    }

    /// A domain-separated incremental hash: BLAKE3 in derive-key mode with
    /// `context`, or `SM3(u64be(len(context)) || context || data)`.
    pub fn hasher(self, context: &str) -> DomainHasher {
        match self {
            Suite::Intl => DomainHasher::Blake3(blake3::Hasher::new_derive_key(context)),
            Suite::Gm => {
                let mut h = sm3::Sm3::new();
                h.update((context.len() as u64).to_be_bytes());
                h.update(context.as_bytes());
                DomainHasher::Sm3(h)
            }
        }
    }

    /// A 32-byte key derived from secret `material` for `context`:
    /// `BLAKE3-derive_key(context, material)`, or
    /// `HKDF-SM3(salt = context, ikm = material, info = "", L = 32)`.
    pub fn derive_key(self, context: &str, material: &[u8]) -> Zeroizing<[u8; 32]> {
        match self {
            Suite::Intl => Zeroizing::new(blake3::derive_key(context, material)),
            Suite::Gm => {
                let mut out = Zeroizing::new([0u8; 32]);
                // 32 bytes is far below HKDF's 255 * 32 limit: expand cannot fail.
                let _ = hkdf::Hkdf::<sm3::Sm3>::new(Some(context.as_bytes()), material)
                    .expand(&[], &mut out[..]);
                out
            }
        }
    }

    /// The suite's keyed hash (MAC): keyed BLAKE3 or HMAC-SM3.
    pub fn keyed_hash(self, key: &[u8; 32], data: &[u8]) -> [u8; 32] {
        match self {
            Suite::Intl => *blake3::keyed_hash(key, data).as_bytes(),
            Suite::Gm => {
                use hmac::Mac;
                let mut mac = hmac_sm3(key);
                mac.update(data);
                mac.finalize().into_bytes().into()
            }
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Suite {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Suite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Suite::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown suite {name:?} (intl or gm)")))
    }
}

/// HMAC-SM3 under a key of at most 64 bytes (SM3's block). RFC 2104 pads
/// shorter keys with zeros to the block, so passing the padded block is the
/// same MAC, and infallible.
pub(crate) fn hmac_sm3(key: &[u8]) -> hmac::Hmac<sm3::Sm3> {
    use hmac::KeyInit;
    let mut block = Zeroizing::new([0u8; 64]);
    let n = key.len().min(64);
    block[..n].copy_from_slice(&key[..n]);
    <hmac::Hmac<sm3::Sm3> as KeyInit>::new(&(*block).into())
}

/// Whether `suite` is the default (for `skip_serializing_if`: `intl` objects
/// keep the bytes they had before suites were named).
pub fn is_intl(suite: &Suite) -> bool {
    *suite == Suite::Intl
}

/// An incremental, domain-separated hash of one suite ([`Suite::hasher`]).
// Hashers live briefly on the stack; boxing BLAKE3's would cost an
// allocation per digest on the intl hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum DomainHasher {
    /// BLAKE3 in derive-key mode.
    Blake3(blake3::Hasher),
    /// SM3 over the length-prefixed context and the data.
    Sm3(sm3::Sm3),
}

impl fmt::Debug for DomainHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DomainHasher::Blake3(_) => "DomainHasher(BLAKE3)",
            DomainHasher::Sm3(_) => "DomainHasher(SM3)",
        })
    }
}

impl DomainHasher {
    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        match self {
            DomainHasher::Blake3(h) => {
                h.update(data);
            }
            DomainHasher::Sm3(h) => h.update(data),
        }
        self
    }

    /// The digest.
    pub fn finalize(&self) -> Digest {
        match self {
            DomainHasher::Blake3(h) => Digest(*h.finalize().as_bytes()),
            DomainHasher::Sm3(h) => Digest(h.clone().finalize().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &[u8]) -> String {
        hex::encode(d)
    }

    // GB/T 32905-2016 appendix A, examples 1 and 2.
    #[test]
    fn sm3_matches_gbt_32905_examples() {
        assert_eq!(
            Suite::Gm.digest(b"abc").to_hex(),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(
            Suite::Gm.digest(&b"abcd".repeat(16)).to_hex(),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }

    #[test]
    fn intl_hashes_are_the_blake3_ones_they_always_were() {
        assert_eq!(
            Suite::Intl.digest(b"abc"),
            Digest(*blake3::hash(b"abc").as_bytes())
        );
        let mut h = Suite::Intl.hasher("pdx/v1 test");
        h.update(b"x");
        let mut want = blake3::Hasher::new_derive_key("pdx/v1 test");
        want.update(b"x");
        assert_eq!(h.finalize().0, *want.finalize().as_bytes());
        assert_eq!(
            *Suite::Intl.derive_key("ctx", b"m"),
            blake3::derive_key("ctx", b"m")
        );
    }

    #[test]
    fn gm_domain_hash_is_sm3_of_the_length_prefixed_context() {
        let mut h = Suite::Gm.hasher("ctx");
        h.update(b"data");
        let mut input = 3u64.to_be_bytes().to_vec();
        input.extend_from_slice(b"ctxdata");
        assert_eq!(h.finalize(), Suite::Gm.digest(&input));
        assert_ne!(
            Suite::Gm.hasher("ctx").finalize(),
            Suite::Gm.hasher("cty").finalize()
        );
    }

    // HMAC-SM3 and HKDF-SM3: the generic constructions (RFC 2104, RFC 5869)
    // over SM3, checked against the definitions computed by hand with SM3.
    #[test]
    fn hmac_sm3_and_hkdf_sm3_follow_their_definitions() {
        let key = [0x0bu8; 32];
        let mut k = [0u8; 64];
        k[..32].copy_from_slice(&key);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = Suite::Gm.digest(&[ipad.as_slice(), b"Hi There"].concat());
        let outer = Suite::Gm.digest(&[opad.as_slice(), &inner.0].concat());
        assert_eq!(Suite::Gm.keyed_hash(&key, b"Hi There"), outer.0);

        // HKDF: PRK = HMAC(salt, ikm); OKM = HMAC(PRK, info || 0x01).
        let prk = {
            use hmac::Mac;
            let mut m = hmac_sm3(b"ctx");
            m.update(b"material");
            let prk: [u8; 32] = m.finalize().into_bytes().into();
            prk
        };
        assert_eq!(
            hex(&Suite::Gm.derive_key("ctx", b"material")[..]),
            hex(&Suite::Gm.keyed_hash(&prk, &[1u8]))
        );
    }

    #[test]
    fn suites_round_trip_by_name_and_envelope_id() -> Result<()> {
        for s in Suite::ALL {
            assert_eq!(Suite::parse(s.name()), Some(s));
            assert_eq!(Suite::from_envelope_id(s.envelope_id())?, s);
        }
        assert!(Suite::from_envelope_id(3).is_err());
        let e = Suite::Gm.expect(Suite::Intl, "key document").err();
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("gm") && text.contains("intl"), "{text}");
        Ok(())
    }
}
