//! The suites' AEADs with caller-supplied, unique-by-construction nonces:
//! AES-256-GCM (ring) under `intl`, SM4-GCM (RFC 8998's `AEAD_SM4_GCM`:
//! 128-bit key, 12-byte nonce, 16-byte tag; `aes-gcm`'s GCM over the `sm4`
//! block cipher) under `gm`.
//!
//! Callers build the 96-bit nonce from counters that never repeat under one key
//! (see [`crate::envelope`] and [`crate::atrest`]); this module never invents
//! nonces itself, so uniqueness is visible at each call site.

use crate::{CryptoError, Result, Suite};
use aes_gcm::aead::{AeadInOut, KeyInit};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

/// Length of the authentication tag appended to every ciphertext (both suites).
pub const TAG_LEN: usize = 16;
/// Length of the longest key (AES-256); SM4 keys are [`key_len`]`(Suite::Gm)` = 16.
pub const KEY_LEN: usize = 32;

type Sm4Gcm = aes_gcm::AesGcm<sm4::Sm4, aes_gcm::aead::consts::U12>;

/// The key length of `suite`'s AEAD: 32 (AES-256) or 16 (SM4).
pub fn key_len(suite: Suite) -> usize {
    match suite {
        Suite::Intl => 32,
        Suite::Gm => 16,
    }
}

// The AES key is held inline (the intl hot path); SM4-GCM's tables are boxed.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Aes(LessSafeKey),
    Sm4(Box<Sm4Gcm>),
}

/// An AEAD key of one suite.
pub struct AeadKey {
    inner: Inner,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Aes(_) => "AeadKey(AES-256-GCM ..)",
            Inner::Sm4(_) => "AeadKey(SM4-GCM ..)",
        })
    }
}

fn sealing_failed() -> CryptoError {
    CryptoError::Malformed {
        what: "plaintext",
        reason: "too long for GCM".into(),
    }
}

impl AeadKey {
    /// Builds a key of `suite` from [`key_len`] bytes; the caller zeroizes its copy.
    pub fn new(suite: Suite, bytes: &[u8]) -> Result<Self> {
        let wrong = CryptoError::MalformedKey {
            what: "AEAD key",
            reason: match suite {
                Suite::Intl => "AES-256-GCM takes 32 bytes",
                Suite::Gm => "SM4-GCM takes 16 bytes",
            },
        };
        if bytes.len() != key_len(suite) {
            return Err(wrong);
        }
        let inner = match suite {
            Suite::Intl => Inner::Aes(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| wrong)?,
            )),
            Suite::Gm => Inner::Sm4(Box::new(Sm4Gcm::new_from_slice(bytes).map_err(|_| wrong)?)),
        };
        Ok(AeadKey { inner })
    }

    /// Generates a fresh random key of `suite` and returns it with its raw
    /// bytes (for wrapping).
    pub fn generate(suite: Suite) -> Result<(Self, Zeroizing<Vec<u8>>)> {
        let mut raw = Zeroizing::new(vec![0u8; key_len(suite)]);
        crate::rng::fill(&mut raw)?;
        Ok((Self::new(suite, &raw)?, raw))
    }

    /// Appends `plaintext` sealed under `nonce`/`aad` (ciphertext || tag) to `out`.
    pub fn seal_append(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let start = out.len();
        out.extend_from_slice(plaintext);
        match &self.inner {
            Inner::Aes(key) => {
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut out[start..],
                    )
                    .map_err(|_| sealing_failed())?;
                out.extend_from_slice(tag.as_ref());
            }
            Inner::Sm4(key) => {
                let tag = key
                    .encrypt_inout_detached(&nonce.into(), aad, (&mut out[start..]).into())
                    .map_err(|_| sealing_failed())?;
                out.extend_from_slice(&tag);
            }
        }
        Ok(())
    }

    /// Seals into a new vector.
    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        self.seal_append(nonce, aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// Opens `ciphertext || tag`; `what` names the object in the error.
    pub fn open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        sealed: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<Vec<u8>> {
        let mut buf = sealed.to_vec();
        match &self.inner {
            Inner::Aes(key) => {
                let len = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut buf,
                    )
                    .map_err(|_| CryptoError::OpenFailed { what: what() })?
                    .len();
                buf.truncate(len);
            }
            Inner::Sm4(key) => {
                let opened = buf.len().checked_sub(TAG_LEN).and_then(|body_len| {
                    let (body, tag) = buf.split_at_mut(body_len);
                    let tag =
                        aes_gcm::Tag::<aes_gcm::aead::consts::U16>::try_from(&tag[..]).ok()?;
                    key.decrypt_inout_detached(&nonce.into(), aad, body.into(), &tag)
                        .ok()
                        .map(|()| body_len)
                });
                let Some(body_len) = opened else {
                    return Err(CryptoError::OpenFailed { what: what() });
                };
                buf.truncate(body_len);
            }
        }
        Ok(buf)
    }
}

/// Builds a nonce from a 64-bit and a 32-bit counter (big-endian).
pub fn counter_nonce(high: u64, low: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&high.to_be_bytes());
    n[8..].copy_from_slice(&low.to_be_bytes());
    n
}

/// Appends a length-prefixed (u64 big-endian) byte string: the unambiguous way
/// every pdx context string (AAD, KDF info) concatenates variable fields.
pub fn push_lp(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_tamper_fails() -> Result<()> {
        for suite in Suite::ALL {
            let (key, _) = AeadKey::generate(suite)?;
            let n = counter_nonce(1, 2);
            let sealed = key.seal(n, b"aad", b"hello")?;
            assert_eq!(sealed.len(), 5 + TAG_LEN);
            assert_eq!(key.open(n, b"aad", &sealed, String::new)?, b"hello");
            assert!(
                key.open(counter_nonce(1, 3), b"aad", &sealed, String::new)
                    .is_err()
            );
            assert!(key.open(n, b"aaD", &sealed, String::new).is_err());
            assert!(
                key.open(n, b"aad", &sealed[..sealed.len() - 1], String::new)
                    .is_err()
            );
            assert!(key.open(n, b"aad", &sealed[..3], String::new).is_err());
            for i in 0..sealed.len() {
                let mut flipped = sealed.clone();
                flipped[i] ^= 1;
                assert!(key.open(n, b"aad", &flipped, String::new).is_err());
            }
            let (other, _) = AeadKey::generate(suite)?;
            assert!(other.open(n, b"aad", &sealed, String::new).is_err());
        }
        assert!(AeadKey::new(Suite::Gm, &[0u8; 32]).is_err());
        assert!(AeadKey::new(Suite::Intl, &[0u8; 16]).is_err());
        Ok(())
    }

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap_or_default()
    }

    // RFC 8998 appendix A.1 (SM4-GCM).
    #[test]
    fn sm4_gcm_matches_rfc8998_vector() -> Result<()> {
        let key = AeadKey::new(Suite::Gm, &unhex("0123456789ABCDEFFEDCBA9876543210"))?;
        let nonce: [u8; 12] = unhex("00001234567800000000ABCD")
            .try_into()
            .unwrap_or_default();
        let plaintext = unhex(concat!(
            "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD",
            "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
        ));
        let aad = unhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2");
        let want = unhex(concat!(
            "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735",
            "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D",
            "83DE3541E4C2B58177E065A9BF7B62EC"
        ));
        assert_eq!(key.seal(nonce, &aad, &plaintext)?, want);
        assert_eq!(key.open(nonce, &aad, &want, String::new)?, plaintext);
        Ok(())
    }

    // GB/T 32907-2016 appendix A: example 1 (one encryption) and example 2
    // (the same block encrypted 1,000,000 times).
    #[test]
    fn sm4_matches_gbt_32907_examples() {
        use sm4::cipher::{BlockCipherEncrypt, KeyInit};
        let key = unhex("0123456789ABCDEFFEDCBA9876543210");
        let Ok(cipher) = sm4::Sm4::new_from_slice(&key) else {
            unreachable!("a 16-byte SM4 key")
        };
        let mut block = sm4::cipher::Block::<sm4::Sm4>::try_from(&key[..]).unwrap_or_default();
        cipher.encrypt_block(&mut block);
        assert_eq!(hex::encode(block), "681edf34d206965e86b3e94f536e4246");
        let mut block = sm4::cipher::Block::<sm4::Sm4>::try_from(&key[..]).unwrap_or_default();
        for _ in 0..1_000_000 {
            cipher.encrypt_block(&mut block);
        }
        assert_eq!(hex::encode(block), "595298c7c6fd271f0402f804c33d3f66");
    }

    #[test]
    fn length_prefix_separates_fields() {
        let mut a = Vec::new();
        push_lp(&mut a, b"ab");
        push_lp(&mut a, b"c");
        let mut b = Vec::new();
        push_lp(&mut b, b"a");
        push_lp(&mut b, b"bc");
        assert_ne!(a, b);
    }
}
