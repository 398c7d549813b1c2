//! The one source of randomness: ring's `SystemRandom` (the OS CSPRNG).

use crate::{CryptoError, Result};
use ring::rand::{SecureRandom, SystemRandom};

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
