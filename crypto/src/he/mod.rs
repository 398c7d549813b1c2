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
//! Encoding ([`Layout`]): a value is split into limbs, one per slot, scaled by
//! `Δ`; a slot holds sums of up to [`MAX_CONTRIBUTORS`] limbs. Single-key
//! queries use [`Layout::SINGLE`] (16-bit limbs, `Δ = 2^40`, one compact list);
//! committee queries ([`committee`]) use [`Layout::COMMITTEE`] (8-bit limbs,
//! `Δ = 2^48`, compact lists of at most `n` slots, each provable with
//! [`proof`]): the wider gap below `Δ` holds the partial decryptions'
//! flooding noise.

pub mod committee;
pub mod proof;

use crate::{CryptoError, Result};
use tfhe::core_crypto::commons::math::random::Seed;
use tfhe::core_crypto::prelude::*;
use tfhe::shortint::parameters::PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128 as PKE;

/// Bits of value per slot and contribution (single-key layout).
pub const LIMB_BITS: u32 = 16;
/// Contributors one aggregate may sum (sets the slot's carry room).
pub const MAX_CONTRIBUTORS: u64 = 256;
/// Bits of a decrypted slot: a limb plus room for `MAX_CONTRIBUTORS` carries.
pub const SLOT_BITS: u32 = LIMB_BITS + 8;
/// `log2 Δ`: the plaintext of a slot is `sum << DELTA_LOG` in Z/2^64.
pub const DELTA_LOG: u32 = 64 - SLOT_BITS;

/// How slots sit in ciphertext words: limb width, `Δ` and how many slots one
/// compact list (one mask) carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bits of value per slot and contribution.
    pub limb_bits: u32,
    /// `log2 Δ`; the slot's message space is `64 - delta_log` bits.
    pub delta_log: u32,
    /// Slots per compact list; `None`: the whole list is one compact list.
    pub chunk: Option<usize>,
}

impl Layout {
    /// Single key holder: 16-bit limbs, `Δ = 2^40`, one compact list.
    pub const SINGLE: Layout = Layout {
        limb_bits: LIMB_BITS,
        delta_log: DELTA_LOG,
        chunk: None,
    };
    /// Decryption committee: 8-bit limbs, `Δ = 2^48` (room for the flooding
    /// noise of partial decryptions), compact lists of `n = 2048` slots
    /// (the most one proof covers).
    pub const COMMITTEE: Layout = Layout {
        limb_bits: 8,
        delta_log: 48,
        chunk: Some(2048),
    };

    /// Bits of a decrypted slot.
    pub fn slot_bits(&self) -> u32 {
        64 - self.delta_log
    }

    /// Limbs a value of `bits` bits needs.
    pub fn limbs_for(&self, bits: u32) -> usize {
        bits.div_ceil(self.limb_bits) as usize
    }

    /// Slot counts of the compact lists making up `slots` slots.
    fn chunk_sizes(&self, slots: usize) -> impl Iterator<Item = usize> {
        let chunk = self.chunk.unwrap_or(slots.max(1));
        (0..slots.div_ceil(chunk)).map(move |i| chunk.min(slots - i * chunk))
    }

    /// Words of a list of `slots` slots.
    pub fn list_words(&self, slots: usize) -> usize {
        self.chunk_sizes(slots)
            .map(|k| lwe_compact_ciphertext_list_size(dimension(), LweCiphertextCount(k)))
            .sum()
    }

    /// Bytes of a list of `slots` slots in documents.
    pub fn list_bytes(&self, slots: usize) -> usize {
        self.list_words(slots) * 8
    }

    /// The scheme id documents name for this layout.
    pub fn scheme_id(&self) -> &'static str {
        if *self == Layout::COMMITTEE {
            COMMITTEE_SCHEME_ID
        } else {
            SCHEME_ID
        }
    }

    /// Rounds a decrypted plaintext word to its slot value.
    pub fn decode(&self, plaintext: u64) -> u64 {
        let half = 1u64 << (self.delta_log - 1);
        (plaintext.wrapping_add(half) >> self.delta_log) & ((1 << self.slot_bits()) - 1)
    }

    /// Splits `value` into `limbs` limbs, least significant first.
    pub fn split(&self, value: u64, limbs: usize) -> Vec<u64> {
        let mask = (1u64 << self.limb_bits) - 1;
        (0..limbs)
            .map(|i| {
                value
                    .checked_shr(self.limb_bits * i as u32)
                    .map_or(0, |v| v & mask)
            })
            .collect()
    }

    /// Recombines summed limbs (each a sum of up to MAX_CONTRIBUTORS limbs).
    pub fn combine(&self, limb_sums: &[u64]) -> u128 {
        limb_sums
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                u128::from(s)
                    .checked_shl(self.limb_bits * i as u32)
                    .unwrap_or(0)
            })
            .sum()
    }
}

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

/// The scheme of committee queries ([`Layout::COMMITTEE`]).
pub const COMMITTEE_SCHEME_ID: &str = "pdx-he/2 tfhe-core compact-pke PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128 limb8 slot16 list2048 committee";

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

/// Bytes of a single-key ciphertext list of `slots` slots under the parameter set.
pub fn list_bytes(slots: usize) -> usize {
    Layout::SINGLE.list_words(slots) * 8
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

/// An encrypted list of slots: the compact ciphertext words (one compact list
/// per chunk of the layout, concatenated), the slot count and the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeList {
    words: Vec<u64>,
    slots: usize,
    layout: Layout,
}

impl HeList {
    /// Rebuilds a single-key list received from someone else; refuses a wrong size.
    pub fn from_words(words: Vec<u64>, slots: usize) -> Result<Self> {
        Self::from_words_in(Layout::SINGLE, words, slots)
    }

    /// Rebuilds a list of `layout`; refuses a wrong size.
    pub fn from_words_in(layout: Layout, words: Vec<u64>, slots: usize) -> Result<Self> {
        let want = layout.list_words(slots.max(1));
        if slots == 0 || words.len() != want {
            return Err(CryptoError::He(format!(
                "ciphertext of {} words cannot hold {slots} slots under the parameter set ({want} expected)",
                words.len(),
            )));
        }
        Ok(HeList {
            words,
            slots,
            layout,
        })
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// How many compact lists it is made of (one proof each).
    pub fn list_count(&self) -> usize {
        self.layout.chunk_sizes(self.slots).count()
    }

    /// The compact lists, one per chunk of the layout, with their slot counts.
    fn compact_lists(&self) -> impl Iterator<Item = LweCompactCiphertextList<&[u64]>> {
        let mut rest = self.words.as_slice();
        self.layout.chunk_sizes(self.slots).map(move |k| {
            let size = lwe_compact_ciphertext_list_size(dimension(), LweCiphertextCount(k));
            let (this, tail) = rest.split_at(size);
            rest = tail;
            LweCompactCiphertextList::from_container(
                this,
                dimension().to_lwe_size(),
                LweCiphertextCount(k),
                CiphertextModulus::new_native(),
            )
        })
    }

    /// Every slot as an LWE ciphertext (mask and body), per compact list,
    /// expanded in parallel.
    fn expand(&self) -> Vec<LweCiphertextListOwned<u64>> {
        use rayon::prelude::*;
        let lists: Vec<_> = self.compact_lists().collect();
        lists
            .into_par_iter()
            .map(|c| c.expand_into_lwe_ciphertext_list())
            .collect()
    }

    /// The body word of every slot.
    fn bodies(&self) -> Vec<u64> {
        self.compact_lists()
            .flat_map(|c| c.get_body_list().as_ref().to_vec())
            .collect()
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
        if self.slots != other.slots
            || self.words.len() != other.words.len()
            || self.layout != other.layout
        {
            return Err(CryptoError::He(format!(
                "cannot add a list of {} slots to one of {}",
                other.slots, self.slots
            )));
        }
        let mut words = self.words.clone();
        add_words(&mut words, &other.words);
        Ok(HeList {
            words,
            slots: self.slots,
            layout: self.layout,
        })
    }
}

/// `acc += x` word by word in Z/2^64: how ciphertexts, public-key bodies and
/// partial decryptions add.
fn add_words(acc: &mut [u64], x: &[u64]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a = a.wrapping_add(*b);
    }
}

/// An all-zero compact list of `k` slots to encrypt into.
fn empty_list(k: usize) -> LweCompactCiphertextListOwned<u64> {
    LweCompactCiphertextList::new(
        0u64,
        dimension().to_lwe_size(),
        LweCiphertextCount(k),
        CiphertextModulus::new_native(),
    )
}

/// Refuses an empty list or a limb that does not fit the layout.
fn check_limbs(layout: &Layout, limbs: &[u64]) -> Result<()> {
    if limbs.is_empty() {
        return Err(CryptoError::He("nothing to encrypt".into()));
    }
    if let Some(bad) = limbs.iter().find(|&&l| l >> layout.limb_bits != 0) {
        return Err(CryptoError::He(format!(
            "limb {bad} does not fit in {} bits",
            layout.limb_bits
        )));
    }
    Ok(())
}

fn encryption_generator() -> EncryptionRandomGenerator<DefaultRandomGenerator> {
    let mut seeder = RingSeeder;
    EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), &mut seeder)
}

/// Encrypts `limbs` (each below 2^LIMB_BITS) into one single-key list.
pub fn encrypt(pk: &HePublicKey, limbs: &[u64]) -> Result<HeList> {
    encrypt_in(pk, Layout::SINGLE, limbs)
}

/// Encrypts `limbs` (each below `2^layout.limb_bits`) in `layout`.
pub fn encrypt_in(pk: &HePublicKey, layout: Layout, limbs: &[u64]) -> Result<HeList> {
    check_limbs(&layout, limbs)?;
    let mut enc_gen = encryption_generator();
    let mut words = Vec::with_capacity(layout.list_words(limbs.len()));
    let mut rest = limbs;
    for k in layout.chunk_sizes(limbs.len()) {
        let (chunk, tail) = rest.split_at(k);
        rest = tail;
        let pt = PlaintextList::from_container(
            chunk
                .iter()
                .map(|&l| l << layout.delta_log)
                .collect::<Vec<_>>(),
        );
        let mut ct = empty_list(k);
        encrypt_lwe_compact_ciphertext_list_with_compact_public_key(
            &pk.key,
            &mut ct,
            &pt,
            PKE.encryption_noise_distribution,
            PKE.encryption_noise_distribution,
            enc_gen.noise_generator_mut(),
        );
        words.extend_from_slice(ct.as_ref());
    }
    Ok(HeList {
        words,
        slots: limbs.len(),
        layout,
    })
}

/// `body - <mask, s>` of every slot under each key: `Δ·sum + noise` for the
/// whole key. The list is expanded once, chunks in parallel.
fn raw_decrypt_many(keys: &[&HeSecretKey], list: &HeList) -> Vec<Vec<u64>> {
    use rayon::prelude::*;
    let expanded = list.expand();
    keys.iter()
        .map(|sk| {
            let parts: Vec<Vec<u64>> = expanded
                .par_iter()
                .map(|chunk| {
                    let mut pt =
                        PlaintextList::new(0u64, PlaintextCount(chunk.lwe_ciphertext_count().0));
                    decrypt_lwe_ciphertext_list(&sk.key, chunk, &mut pt);
                    pt.into_container()
                })
                .collect();
            parts.concat()
        })
        .collect()
}

/// `body - <mask, s>` of every slot: `Δ·sum + noise`.
fn raw_decrypt(sk: &HeSecretKey, list: &HeList) -> Vec<u64> {
    raw_decrypt_many(&[sk], list).pop().unwrap_or_default()
}

/// Decrypts slot sums (each below 2^slot_bits of the list's layout).
pub fn decrypt(sk: &HeSecretKey, list: &HeList) -> Vec<u64> {
    raw_decrypt(sk, list)
        .into_iter()
        .map(|p| list.layout.decode(p))
        .collect()
}

/// Largest absolute noise in plaintext words given the true slot sums.
fn max_noise_of(layout: &Layout, plaintexts: &[u64], expected: &[u64]) -> u64 {
    plaintexts
        .iter()
        .zip(expected)
        .map(|(p, &e)| (p.wrapping_sub(e << layout.delta_log) as i64).unsigned_abs())
        .max()
        .unwrap_or(0)
}

/// Largest absolute noise in the list given the true slot sums (for tests and
/// the documented bound).
pub fn max_noise(sk: &HeSecretKey, list: &HeList, expected: &[u64]) -> u64 {
    max_noise_of(&list.layout, &raw_decrypt(sk, list), expected)
}

/// Splits `value` into `limbs` limbs of LIMB_BITS, least significant first.
pub fn split(value: u64, limbs: usize) -> Vec<u64> {
    Layout::SINGLE.split(value, limbs)
}

/// Recombines summed limbs (each a sum of up to MAX_CONTRIBUTORS limbs).
pub fn combine(limb_sums: &[u64]) -> u128 {
    Layout::SINGLE.combine(limb_sums)
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

    proptest::proptest! {
        #[test]
        fn layouts_split_values_losslessly_and_size_lists_by_their_chunks(
            value in proptest::prelude::any::<u64>(),
            slots in 1usize..20_000,
        ) {
            for layout in [Layout::SINGLE, Layout::COMMITTEE] {
                let limbs = layout.split(value, layout.limbs_for(64));
                proptest::prop_assert!(limbs.iter().all(|&l| l >> layout.limb_bits == 0));
                proptest::prop_assert_eq!(layout.combine(&limbs), u128::from(value));
                let sizes: Vec<usize> = layout.chunk_sizes(slots).collect();
                proptest::prop_assert_eq!(sizes.iter().sum::<usize>(), slots);
                let n = dimension().0;
                let masks = match layout.chunk {
                    None => slots.div_ceil(n),
                    Some(_) => sizes.len(),
                };
                proptest::prop_assert_eq!(layout.list_words(slots), masks * n + slots);
            }
        }
    }

    #[test]
    fn committee_layout_lists_add_and_decrypt_across_chunks() -> Result<()> {
        let (sk, pk) = keygen();
        let limbs: Vec<u64> = (0..2050u64).map(|i| i % 256).collect();
        let a = encrypt_in(&pk, Layout::COMMITTEE, &limbs)?;
        let b = encrypt_in(&pk, Layout::COMMITTEE, &limbs)?;
        assert_eq!(a.words().len(), 2 * 2048 + 2050);
        let doubled: Vec<u64> = limbs.iter().map(|l| 2 * l).collect();
        assert_eq!(decrypt(&sk, &a.add(&b)?), doubled);
        assert!(encrypt_in(&pk, Layout::COMMITTEE, &[256]).is_err());
        let single = encrypt(&pk, &limbs)?;
        assert!(
            a.add(&single).is_err(),
            "lists of different layouts do not add"
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
