//! The one source of randomness: ring's `SystemRandom` (the OS CSPRNG), also
//! offered to the RustCrypto SM2 code as a `rand_core` generator.

use crate::{CryptoError, Result};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Fills `out` from the operating system's CSPRNG.
pub fn fill(out: &mut [u8]) -> Result<()> {
    SystemRandom::new().fill(out).map_err(|_| CryptoError::Rng)
}

/// Returns `N` fresh random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}

/// ring's `SystemRandom` as a `rand_core` 0.10 cryptographic generator, for
/// the SM2 crate's nonces and ephemeral keys. Failures are reported, never
/// replaced by weaker randomness.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRng;

impl rand_core::TryRng for OsRng {
    type Error = CryptoError;

    fn try_next_u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(bytes::<4>()?))
    }

    fn try_next_u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(bytes::<8>()?))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<()> {
        fill(dst)
    }
}

impl rand_core::TryCryptoRng for OsRng {}

/// A fresh SM2 private key: 32 random bytes, drawn again in the (2^-32
/// likely) case that they are 0 or not below the group order.
pub fn sm2_secret() -> Result<sm2::SecretKey> {
    for _ in 0..64 {
        let raw = Zeroizing::new(bytes::<32>()?);
        if let Ok(k) = sm2::SecretKey::from_slice(&raw[..]) {
            return Ok(k);
        }
    }
    Err(CryptoError::Rng)
}
