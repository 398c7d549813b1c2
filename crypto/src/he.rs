//! Additively homomorphic sums with tfhe's compact public-key LWE encryption.
//!
//! A contributor encrypts a list of small integers (limbs) under the key
//! holder's compact public key; anyone can add such lists slot by slot
//! (wrapping addition of the ciphertexts, no key needed); only the key holder
//! decrypts, and only sums. The LWE dimension and noise distribution are those
//! of tfhe's published parameter set
//! [`PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128`] (by reference, never
//! copied). `docs/he-aggregates.md` derives the noise bound behind
//! [`DELTA_LOG`] and [`MAX_CONTRIBUTORS`].
//!
//! Encoding: a value is split into [`LIMB_BITS`]-bit limbs, one per slot, scaled
//! by `Δ = 2^DELTA_LOG`; a slot holds sums of up to [`MAX_CONTRIBUTORS`] limbs.

use crate::{CryptoError, Result};
use tfhe::core_crypto::commons::math::random::Seed;
use tfhe::core_crypto::prelude::*;
use tfhe::shortint::parameters::PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128 as PKE;

/// Bits of value per slot and contribution.
pub const LIMB_BITS: u32 = 16;
/// Contributors one aggregate may sum (sets the slot's carry room).
pub const MAX_CONTRIBUTORS: u64 = 256;
/// Bits of a decrypted slot: a limb plus room for `MAX_CONTRIBUTORS` carries.
pub const SLOT_BITS: u32 = LIMB_BITS + 8;
/// `log2 Δ`: the plaintext of a slot is `sum << DELTA_LOG` in Z/2^64.
pub const DELTA_LOG: u32 = 64 - SLOT_BITS;

/// Seeds tfhe's generators from the OS CSPRNG through ring.
struct RingSeeder;

impl Seeder for RingSeeder {
    fn seed(&mut self) -> Seed {
        // ring's SystemRandom only fails if the OS RNG is unusable; tfhe's
        // Seeder cannot report errors, so fall back to tfhe's own OS seeder.
        match crate::rng::bytes::<16>() {
            Ok(b) => Seed(u128::from_le_bytes(b)),
            Err(_) => new_seeder().seed(),
        }
    }

    fn is_available() -> bool {
        true
    }
}

fn dimension() -> LweDimension {
    PKE.encryption_lwe_dimension
}

/// Names the scheme, parameter set and encoding; documents carry it and
/// readers refuse any other (a list made under other parameters does not add).
pub const SCHEME_ID: &str = "pdx-he/1 tfhe-core compact-pke PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128 limb16 slot24";

/// Little-endian bytes of ciphertext or key words (for documents).
pub fn words_to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Words from little-endian bytes; refuses a length that is not a multiple of 8.
pub fn bytes_to_words(bytes: &[u8]) -> Result<Vec<u64>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(CryptoError::He(format!(
            "{} bytes is not a whole number of 64-bit words",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_le_bytes(w)
        })
        .collect())
}

/// Bytes of a ciphertext list of `slots` slots under the parameter set.
pub fn list_bytes(slots: usize) -> usize {
    expected_words(slots) * 8
}

/// The key holder's secret key (zeroized on drop).
pub struct HeSecretKey {
    key: LweSecretKeyOwned<u64>,
}

impl std::fmt::Debug for HeSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeSecretKey(..)")
    }
}

impl Drop for HeSecretKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.key.as_mut());
    }
}

/// The compact public key contributors encrypt under.
#[derive(Clone)]
pub struct HePublicKey {
    key: LweCompactPublicKeyOwned<u64>,
}

impl std::fmt::Debug for HePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HePublicKey(dimension {})", self.key.lwe_dimension().0)
    }
}

impl HePublicKey {
    /// The raw key (dimension × 2 words), for documents.
    pub fn to_words(&self) -> Vec<u64> {
        self.key.as_ref().to_vec()
    }

    /// Rebuilds a public key; refuses a wrong length (wrong parameters).
    pub fn from_words(words: Vec<u64>) -> Result<Self> {
        let want = 2 * dimension().0;
        if words.len() != want {
            return Err(CryptoError::He(format!(
                "public key has {} words, the parameter set needs {want}",
                words.len()
            )));
        }
        Ok(HePublicKey {
            key: LweCompactPublicKey::from_container(words, CiphertextModulus::new_native()),
        })
    }
}

/// Generates a key pair with the published parameters.
pub fn keygen() -> (HeSecretKey, HePublicKey) {
    let mut seeder = RingSeeder;
    let mut secret_gen = SecretRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed());
    let mut enc_gen =
        EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), &mut seeder);
    let sk = allocate_and_generate_new_binary_lwe_secret_key(dimension(), &mut secret_gen);
    let pk = allocate_and_generate_new_lwe_compact_public_key(
        &sk,
        PKE.encryption_noise_distribution,
        CiphertextModulus::new_native(),
        &mut enc_gen,
    );
    (HeSecretKey { key: sk }, HePublicKey { key: pk })
}

impl HeSecretKey {
    /// The raw secret (binary words), for the key file.
    pub fn to_words(&self) -> zeroize::Zeroizing<Vec<u64>> {
        zeroize::Zeroizing::new(self.key.as_ref().to_vec())
    }

    /// The secret bits packed eight to a byte (for the key file).
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(vec![0u8; self.key.as_ref().len().div_ceil(8)]);
        for (i, &bit) in self.key.as_ref().iter().enumerate() {
            out[i / 8] |= ((bit & 1) as u8) << (i % 8);
        }
        out
    }

    /// Rebuilds a secret key from [`HeSecretKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let n = dimension().0;
        if bytes.len() != n.div_ceil(8) {
            return Err(CryptoError::He(format!(
                "secret key has {} bytes, the parameter set needs {}",
                bytes.len(),
                n.div_ceil(8)
            )));
        }
        let words = (0..n)
            .map(|i| u64::from((bytes[i / 8] >> (i % 8)) & 1))
            .collect();
        Self::from_words(words)
    }

    /// Rebuilds a secret key.
    pub fn from_words(words: Vec<u64>) -> Result<Self> {
        if words.len() != dimension().0 || words.iter().any(|&w| w > 1) {
            return Err(CryptoError::He(
                "secret key is not a binary key of the parameter set's dimension".into(),
            ));
        }
        Ok(HeSecretKey {
            key: LweSecretKey::from_container(words),
        })
    }
}

/// An encrypted list of slots: the compact ciphertext words and the slot count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeList {
    words: Vec<u64>,
    slots: usize,
}

fn expected_words(slots: usize) -> usize {
    lwe_compact_ciphertext_list_size(dimension(), LweCiphertextCount(slots))
}

impl HeList {
    /// Rebuilds a list received from someone else; refuses a wrong size.
    pub fn from_words(words: Vec<u64>, slots: usize) -> Result<Self> {
        if slots == 0 || words.len() != expected_words(slots) {
            return Err(CryptoError::He(format!(
                "ciphertext of {} words cannot hold {slots} slots under the parameter set ({} expected)",
                words.len(),
                expected_words(slots.max(1))
            )));
        }
        Ok(HeList { words, slots })
    }

    /// The ciphertext words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slot-wise sum of two lists (no key needed).
    pub fn add(&self, other: &HeList) -> Result<HeList> {
        if self.slots != other.slots || self.words.len() != other.words.len() {
            return Err(CryptoError::He(format!(
                "cannot add a list of {} slots to one of {}",
                other.slots, self.slots
            )));
        }
        let words = self
            .words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| a.wrapping_add(*b))
            .collect();
        Ok(HeList {
            words,
            slots: self.slots,
        })
    }
}

/// Encrypts `limbs` (each below 2^LIMB_BITS) into one list.
pub fn encrypt(pk: &HePublicKey, limbs: &[u64]) -> Result<HeList> {
    if limbs.is_empty() {
        return Err(CryptoError::He("nothing to encrypt".into()));
    }
    if let Some(bad) = limbs.iter().find(|&&l| l >> LIMB_BITS != 0) {
        return Err(CryptoError::He(format!(
            "limb {bad} does not fit in {LIMB_BITS} bits"
        )));
    }
    let mut seeder = RingSeeder;
    let mut enc_gen =
        EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), &mut seeder);
    let mut pt = PlaintextList::new(0u64, PlaintextCount(limbs.len()));
    for (p, &l) in pt.iter_mut().zip(limbs) {
        *p.0 = l << DELTA_LOG;
    }
    let mut ct = LweCompactCiphertextList::new(
        0u64,
        dimension().to_lwe_size(),
        LweCiphertextCount(limbs.len()),
        CiphertextModulus::new_native(),
    );
    encrypt_lwe_compact_ciphertext_list_with_compact_public_key(
        &pk.key,
        &mut ct,
        &pt,
        PKE.encryption_noise_distribution,
        PKE.encryption_noise_distribution,
        enc_gen.noise_generator_mut(),
    );
    Ok(HeList {
        words: ct.into_container(),
        slots: limbs.len(),
    })
}

fn raw_decrypt(sk: &HeSecretKey, list: &HeList) -> Vec<u64> {
    let ct = LweCompactCiphertextList::from_container(
        list.words.clone(),
        dimension().to_lwe_size(),
        LweCiphertextCount(list.slots),
        CiphertextModulus::new_native(),
    );
    let expanded = ct.expand_into_lwe_ciphertext_list();
    let mut out = PlaintextList::new(0u64, PlaintextCount(list.slots));
    decrypt_lwe_ciphertext_list(&sk.key, &expanded, &mut out);
    out.iter().map(|p| *p.0).collect()
}

/// Decrypts slot sums (each below 2^SLOT_BITS).
pub fn decrypt(sk: &HeSecretKey, list: &HeList) -> Vec<u64> {
    let half = 1u64 << (DELTA_LOG - 1);
    raw_decrypt(sk, list)
        .into_iter()
        .map(|p| (p.wrapping_add(half) >> DELTA_LOG) & ((1 << SLOT_BITS) - 1))
        .collect()
}

/// Largest absolute noise in the list given the true slot sums (for tests and
/// the documented bound).
pub fn max_noise(sk: &HeSecretKey, list: &HeList, expected: &[u64]) -> u64 {
    raw_decrypt(sk, list)
        .into_iter()
        .zip(expected)
        .map(|(p, &e)| (p.wrapping_sub(e << DELTA_LOG) as i64).unsigned_abs())
        .max()
        .unwrap_or(0)
}

/// Splits `value` into `limbs` limbs of LIMB_BITS, least significant first.
pub fn split(value: u64, limbs: usize) -> Vec<u64> {
    (0..limbs)
        .map(|i| (value >> (LIMB_BITS as usize * i)) & ((1 << LIMB_BITS) - 1))
        .collect()
}

/// Recombines summed limbs (each a sum of up to MAX_CONTRIBUTORS limbs).
pub fn combine(limb_sums: &[u64]) -> u128 {
    limb_sums
        .iter()
        .enumerate()
        .map(|(i, &s)| u128::from(s) << (LIMB_BITS as usize * i))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_of_many_contributions_decrypt_exactly_within_the_noise_bound() -> Result<()> {
        let (sk, pk) = keygen();
        let slots = 64;
        let contributors = MAX_CONTRIBUTORS as usize;
        let mut sum: Option<HeList> = None;
        let mut expected = vec![0u64; slots];
        for c in 0..contributors {
            // Worst case: maximal limbs in most slots.
            let limbs: Vec<u64> = (0..slots)
                .map(|s| {
                    if s % 7 == 0 {
                        (c * s) as u64 % (1 << LIMB_BITS)
                    } else {
                        (1 << LIMB_BITS) - 1
                    }
                })
                .collect();
            for (e, l) in expected.iter_mut().zip(&limbs) {
                *e += l;
            }
            let ct = encrypt(&pk, &limbs)?;
            sum = Some(match sum {
                None => ct,
                Some(s) => s.add(&ct)?,
            });
        }
        let sum = sum.ok_or(CryptoError::He("empty".into()))?;
        assert_eq!(decrypt(&sk, &sum), expected);
        let noise = max_noise(&sk, &sum, &expected);
        eprintln!(
            "measured max noise after {contributors} contributions: 2^{:.1}",
            (noise as f64).log2()
        );
        // docs/he-aggregates.md: worst-case |noise| of one encryption ≤ (n + 1)·2^17 + n·2^17 < 2^29.1,
        // so 256 contributions stay below 2^37.1 < Δ/2 = 2^39.
        assert!(
            noise < 1u64 << 38,
            "noise 2^{:.1} exceeds the documented bound",
            (noise as f64).log2()
        );
        Ok(())
    }

    #[test]
    fn secret_key_bytes_round_trip() -> Result<()> {
        let (sk, pk) = keygen();
        let back = HeSecretKey::from_bytes(&sk.to_bytes())?;
        let ct = encrypt(&pk, &[7, 65535])?;
        assert_eq!(decrypt(&back, &ct), vec![7, 65535]);
        assert!(HeSecretKey::from_bytes(&sk.to_bytes()[1..]).is_err());
        Ok(())
    }

    #[test]
    fn wrong_sizes_and_limbs_are_refused() -> Result<()> {
        let (_sk, pk) = keygen();
        assert!(encrypt(&pk, &[1 << LIMB_BITS]).is_err());
        let a = encrypt(&pk, &[1, 2, 3])?;
        let b = encrypt(&pk, &[1, 2])?;
        assert!(a.add(&b).is_err());
        assert!(HeList::from_words(a.words()[1..].to_vec(), 3).is_err());
        assert!(HePublicKey::from_words(vec![0; 10]).is_err());
        assert!(bytes_to_words(&[0; 9]).is_err());
        assert_eq!(bytes_to_words(&words_to_bytes(a.words()))?, a.words());
        assert_eq!(a.words().len() * 8, list_bytes(3));
        assert_eq!(
            combine(&split(0x1234_5678_9abc_def0, 4)),
            0x1234_5678_9abc_def0
        );
        Ok(())
    }
}
