//! AES-256-GCM (ring) with caller-supplied, unique-by-construction nonces.
//!
//! Callers build the 96-bit nonce from counters that never repeat under one key
//! (see [`crate::envelope`] and [`crate::atrest`]); this module never invents
//! nonces itself, so uniqueness is visible at each call site.

use crate::{CryptoError, Result};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

/// Length of the authentication tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Length of a key.
pub const KEY_LEN: usize = 32;

/// A 256-bit AES-GCM key.
pub struct AeadKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(..)")
    }
}

impl AeadKey {
    /// Builds a key from 32 bytes; the caller zeroizes its copy.
    pub fn new(bytes: &[u8; KEY_LEN]) -> Result<Self> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| CryptoError::MalformedKey {
                what: "AES-256-GCM key",
                reason: "expected 32 bytes",
            })?;
        Ok(AeadKey {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Generates a fresh random key and returns it with its raw bytes (for wrapping).
    pub fn generate() -> Result<(Self, Zeroizing<[u8; KEY_LEN]>)> {
        let raw = Zeroizing::new(crate::rng::bytes::<KEY_LEN>()?);
        Ok((Self::new(&raw)?, raw))
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
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .map_err(|_| CryptoError::Malformed {
                what: "plaintext",
                reason: "too long for AES-GCM".into(),
            })?;
        out.extend_from_slice(tag.as_ref());
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
        let len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| CryptoError::OpenFailed { what: what() })?
            .len();
        buf.truncate(len);
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
        let (key, _) = AeadKey::generate()?;
        let n = counter_nonce(1, 2);
        let sealed = key.seal(n, b"aad", b"hello")?;
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
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(key.open(n, b"aad", &flipped, String::new).is_err());
        let (other, _) = AeadKey::generate()?;
        assert!(other.open(n, b"aad", &sealed, String::new).is_err());
        Ok(())
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
