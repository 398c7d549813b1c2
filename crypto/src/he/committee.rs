//! Decryption by a committee: no member ever holds the whole secret key.
//!
//! **Sharing** (replicated, threshold `t` of `n` members): the secret is the
//! sum of one binary *sub-share* per set `A` of `t - 1` members, and `s_A` is
//! held by every member outside `A`. Any `t` members together hold every
//! sub-share; any `t - 1` miss the one of their own set. n-of-n is the case
//! `t = n`: `n` sub-shares with one holder each (additive shares). Replicated
//! sharing needs no inverses, which `Z/2^64` lacks (Shamir's scheme needs a
//! field).
//!
//! **Key generation**: each sub-share's dealer (its first holder) draws a
//! binary `s_A` and publishes `b_A = a·s_A + e_A` over the common mask `a`
//! that tfhe's generator derives from the query's seed, with tfhe's published
//! noise. The public key `(a, Σ b_A)` is an ordinary compact public key whose
//! secret `Σ s_A` has coefficients up to the number of sub-shares.
//!
//! **Decryption**: per sub-share one holder publishes `p_A = -<mask, s_A> +
//! f_A` with Gaussian flooding `f_A` (tfhe's sampler); `body + Σ_A p_A =
//! Δ·sum + noise + Σ f_A` rounds to the sum. [`budget`] sizes the flooding and
//! refuses queries whose noise would not fit; `docs/he-aggregates.md` derives
//! every term.

use super::{HeList, HePublicKey, HeSecretKey, Layout, PKE, RingSeeder, dimension};
use crate::{CryptoError, Result};
use tfhe::core_crypto::commons::math::random::{RandomGenerator, Seed};
use tfhe::core_crypto::prelude::*;

/// Most members of a committee.
pub const MAX_MEMBERS: usize = 7;
/// Most sub-shares (`C(n, t-1)`) a committee may have: their sum is the
/// secret, so their count multiplies the noise.
pub const MAX_SHARES: usize = 35;
/// `log2` of the probability allowed to each tail bound of [`budget`].
pub const TAIL_LOG2: f64 = -100.0;
/// Order `a` of the Rényi divergence bounded by the flooding.
pub const RENYI_ORDER: f64 = 8.0;
/// Bound on that divergence: `R_a(real || simulated) ≤ 2`.
pub const RENYI_BOUND: f64 = 2.0;

/// Bytes of the seed from which every member derives the common mask `a`.
pub const MASK_SEED_BYTES: usize = 16;

/// A committee's sharing structure: who holds which sub-share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committee {
    members: usize,
    threshold: usize,
    /// Per sub-share, its holders (member indices, ascending).
    holders: Vec<Vec<usize>>,
}

impl Committee {
    /// The replicated `threshold`-of-`members` structure. Sub-shares are the
    /// sets `A` of `threshold - 1` members in ascending order of the bitmask
    /// `Σ 2^i` over `i ∈ A`; `s_A` is held by the members outside `A`.
    pub fn new(members: usize, threshold: usize) -> Result<Self> {
        if !(2..=MAX_MEMBERS).contains(&members) {
            return Err(CryptoError::He(format!(
                "a committee has 2 to {MAX_MEMBERS} members, not {members}"
            )));
        }
        if !(2..=members).contains(&threshold) {
            return Err(CryptoError::He(format!(
                "threshold {threshold} for {members} members: it must be 2 to {members}"
            )));
        }
        let holders: Vec<Vec<usize>> = (0u32..1 << members)
            .filter(|set| set.count_ones() as usize == threshold - 1)
            .map(|set| (0..members).filter(|m| set >> m & 1 == 0).collect())
            .collect();
        if holders.len() > MAX_SHARES {
            return Err(CryptoError::He(format!(
                "{threshold}-of-{members} needs {} sub-shares, more than {MAX_SHARES}: the noise of their sum would not leave room for the flooding (use a smaller committee or threshold)",
                holders.len()
            )));
        }
        Ok(Committee {
            members,
            threshold,
            holders,
        })
    }

    /// Members.
    pub fn members(&self) -> usize {
        self.members
    }

    /// Members needed to decrypt.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Number of sub-shares (`C(n, t-1)`).
    pub fn shares(&self) -> usize {
        self.holders.len()
    }

    /// Holders of sub-share `share`.
    pub fn holders(&self, share: usize) -> &[usize] {
        self.holders.get(share).map_or(&[], Vec::as_slice)
    }

    /// The member who generates sub-share `share` (its first holder).
    pub fn dealer(&self, share: usize) -> Option<usize> {
        self.holders(share).first().copied()
    }

    /// Sub-shares `member` holds.
    pub fn held_by(&self, member: usize) -> Vec<usize> {
        (0..self.shares())
            .filter(|&s| self.holders[s].contains(&member))
            .collect()
    }

    /// Holders of each sub-share: `n - t + 1`.
    pub fn holders_per_share(&self) -> usize {
        self.members - self.threshold + 1
    }

    /// For the members present, the member who supplies each sub-share's
    /// partial decryption (its first present holder); otherwise the sub-shares
    /// no present member holds.
    pub fn cover(&self, present: &[bool]) -> std::result::Result<Vec<usize>, Vec<usize>> {
        let mut missing = Vec::new();
        let mut cover = Vec::with_capacity(self.shares());
        for (share, holders) in self.holders.iter().enumerate() {
            match holders
                .iter()
                .find(|&&m| present.get(m).copied().unwrap_or(false))
            {
                Some(&m) => cover.push(m),
                None => missing.push(share),
            }
        }
        if missing.is_empty() {
            Ok(cover)
        } else {
            Err(missing)
        }
    }
}

fn mask_generator(
    mask_seed: &[u8; MASK_SEED_BYTES],
) -> EncryptionRandomGenerator<DefaultRandomGenerator> {
    // The mask generator is seeded by the common seed (so every member gets
    // the same `a`); the noise generator by the OS through ring.
    EncryptionRandomGenerator::<DefaultRandomGenerator>::new(
        Seed(u128::from_le_bytes(*mask_seed)),
        &mut RingSeeder,
    )
}

/// Words of a sub-share's public-key contribution `b_A` (the LWE dimension).
pub fn key_body_words() -> usize {
    dimension().0
}

/// A sub-share and its public-key contribution `b_A` (`n` words) over the
/// common mask derived from `mask_seed`.
pub fn share_keygen(mask_seed: &[u8; MASK_SEED_BYTES]) -> (HeSecretKey, Vec<u64>) {
    let mut secret_gen = SecretRandomGenerator::<DefaultRandomGenerator>::new(RingSeeder.seed());
    let share = allocate_and_generate_new_binary_lwe_secret_key(dimension(), &mut secret_gen);
    let mut pk = LweCompactPublicKey::new(0u64, dimension(), CiphertextModulus::new_native());
    generate_lwe_compact_public_key(
        &share,
        &mut pk,
        PKE.encryption_noise_distribution,
        &mut mask_generator(mask_seed),
    );
    let body = pk.get_body().as_ref().to_vec();
    (HeSecretKey { key: share }, body)
}

/// The committee's compact public key `(a, Σ b_A)`; refuses a contribution of
/// the wrong length or a count other than the committee's sub-shares.
pub fn combine_public_key(
    committee: &Committee,
    mask_seed: &[u8; MASK_SEED_BYTES],
    bodies: &[&[u64]],
) -> Result<HePublicKey> {
    let n = dimension().0;
    if bodies.len() != committee.shares() {
        return Err(CryptoError::He(format!(
            "{} public-key contributions for a committee of {} sub-shares",
            bodies.len(),
            committee.shares()
        )));
    }
    if let Some(bad) = bodies.iter().position(|b| b.len() != n) {
        return Err(CryptoError::He(format!(
            "public-key contribution {bad} has {} words, the parameter set needs {n}",
            bodies[bad].len()
        )));
    }
    // The mask `a` alone: a key over the all-zero secret has mask `a` and a
    // body of pure noise, which is dropped.
    let zero = LweSecretKey::from_container(vec![0u64; n]);
    let mut pk = LweCompactPublicKey::new(0u64, dimension(), CiphertextModulus::new_native());
    generate_lwe_compact_public_key(
        &zero,
        &mut pk,
        PKE.encryption_noise_distribution,
        &mut mask_generator(mask_seed),
    );
    let mut words = pk.into_container();
    let body = &mut words[n..];
    body.fill(0);
    for b in bodies {
        super::add_words(body, b);
    }
    HePublicKey::from_words(words)
}

/// One sub-share's partial decryption of `list`: per slot `-<mask, s_A> + f`
/// with `f` Gaussian of standard deviation `flooding_sigma` (from
/// [`NoiseBudget::flooding_sigma`]).
pub fn partial_decrypt(
    share: &HeSecretKey,
    list: &HeList,
    flooding_sigma: f64,
) -> Result<Vec<u64>> {
    let mut out = partial_decrypt_many(&[share], list, flooding_sigma)?;
    out.pop()
        .ok_or_else(|| CryptoError::He("no partial decryption".into()))
}

/// [`partial_decrypt`] for each of a member's sub-shares, expanding the list once.
pub fn partial_decrypt_many(
    shares: &[&HeSecretKey],
    list: &HeList,
    flooding_sigma: f64,
) -> Result<Vec<Vec<u64>>> {
    if list.layout() != Layout::COMMITTEE {
        return Err(CryptoError::He(
            "only lists in the committee layout are decrypted by a committee".into(),
        ));
    }
    if !(flooding_sigma.is_finite() && (1.0..2f64.powi(62)).contains(&flooding_sigma)) {
        return Err(CryptoError::He(format!(
            "flooding standard deviation {flooding_sigma} is out of range"
        )));
    }
    let bodies = list.bodies();
    let mut noise = RandomGenerator::<DefaultRandomGenerator>::new(RingSeeder.seed());
    Ok(super::raw_decrypt_many(shares, list)
        .into_iter()
        .map(|raw| {
            let mut partial: Vec<u64> = raw
                .into_iter()
                .zip(&bodies)
                .map(|(raw, body)| raw.wrapping_sub(*body))
                .collect();
            // tfhe's Gaussian works on the torus [0, 1): σ in units of 2^-64.
            noise.unsigned_torus_slice_wrapping_add_random_gaussian_assign(
                &mut partial,
                0.0,
                flooding_sigma / 2f64.powi(64),
            );
            partial
        })
        .collect())
}

/// `body + Σ partials` rounded: the slot sums. `partials` must be one per
/// sub-share (the caller checks who supplied them).
pub fn combine_partials(
    committee: &Committee,
    list: &HeList,
    partials: &[&[u64]],
) -> Result<Vec<u64>> {
    Ok(combined_plaintexts(committee, list, partials)?
        .into_iter()
        .map(|p| list.layout().decode(p))
        .collect())
}

fn combined_plaintexts(
    committee: &Committee,
    list: &HeList,
    partials: &[&[u64]],
) -> Result<Vec<u64>> {
    if partials.len() != committee.shares() {
        return Err(CryptoError::He(format!(
            "{} partial decryptions for {} sub-shares: one per sub-share is needed",
            partials.len(),
            committee.shares()
        )));
    }
    if let Some(bad) = partials.iter().position(|p| p.len() != list.slots()) {
        return Err(CryptoError::He(format!(
            "partial decryption {bad} has {} words for a list of {} slots",
            partials[bad].len(),
            list.slots()
        )));
    }
    let mut sum = list.bodies();
    for p in partials {
        super::add_words(&mut sum, p);
    }
    Ok(sum)
}

/// Largest absolute noise (ciphertext noise plus flooding) of a combination,
/// given the true slot sums: for tests and the documented bound.
pub fn combined_noise(
    committee: &Committee,
    list: &HeList,
    partials: &[&[u64]],
    expected: &[u64],
) -> Result<u64> {
    let plain = combined_plaintexts(committee, list, partials)?;
    Ok(super::max_noise_of(&list.layout(), &plain, expected))
}

/// The noise of a committee query, worked out from its sizes
/// (`docs/he-aggregates.md`, "Committee queries").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseBudget {
    /// `log2 B`: the aggregate's noise stays below `B` in every slot except
    /// with probability `4·2^TAIL_LOG2`.
    pub ciphertext_log2: f64,
    /// Standard deviation of each partial decryption's flooding.
    pub flooding_sigma: f64,
    /// `log2` of the bound on ciphertext noise plus all floodings.
    pub decryption_log2: f64,
    /// `log2 (Δ/2)`: decryption is exact below it.
    pub limit_log2: f64,
    /// `log2` of the per-slot probability of a wrong decryption.
    pub failure_log2: f64,
}

/// Sizes the flooding of a query with `contributors` contributions of `slots`
/// slots decrypted by `committee`, and refuses one whose noise would not fit
/// below `Δ/2`.
pub fn budget(contributors: usize, committee: &Committee, slots: usize) -> Result<NoiseBudget> {
    if contributors == 0 || contributors as u64 > super::MAX_CONTRIBUTORS || slots == 0 {
        return Err(CryptoError::He(format!(
            "a committee query needs 1 to {} contributors and at least one slot",
            super::MAX_CONTRIBUTORS
        )));
    }
    let n = dimension().0 as f64;
    let c = contributors as f64;
    let m = committee.shares() as f64;
    let q = committee.holders_per_share() as f64;
    // Noise of one coefficient of e_A, e1, e2: TUniform(17), in [-2^17, 2^17].
    let range_sq = 2f64.powi(36);
    // Hoeffding: P(|S - ES| ≥ t) ≤ 2 exp(-2t²/Σ range²) = 2^TAIL_LOG2.
    let l = (1.0 - TAIL_LOG2) * std::f64::consts::LN_2;
    let hoeffding = |sum_range_sq: f64| (l * sum_range_sq / 2.0).sqrt();
    // Σ_k ±e_k over the n·M noise coefficients of the key; with r binary its
    // mean (C/2)·Σ±e_k adds up over contributors.
    let mean = c / 2.0 * hoeffding(n * m * range_sq);
    // (e·r_j) around that mean: C·n terms of range |e_k| ≤ M·2^17.
    let er = hoeffding(c * n * m * m * range_sq / 4.0);
    // (e1_j·s): C·n terms of range 2^18·s_k ≤ 2^18·M.
    let e1s = hoeffding(c * n * m * m * range_sq);
    // e2_j: C terms of range 2^18.
    let e2 = hoeffding(c * range_sq);
    let bound = mean + er + e1s + e2;
    // Rényi order a between the real and simulated partials of one sub-share
    // (q holders, each flooding every slot): exp(a·q·slots·B²/(2σ²)) ≤ RENYI_BOUND.
    let flooding_sigma = (RENYI_ORDER * q * slots as f64 / (2.0 * RENYI_BOUND.ln())).sqrt() * bound;
    // The sum of M floodings is Gaussian of deviation sqrt(M)·σ: tail z·that.
    let z = (2.0 * l).sqrt();
    let decryption = bound + z * m.sqrt() * flooding_sigma;
    let limit_log2 = f64::from(Layout::COMMITTEE.delta_log - 1);
    let out = NoiseBudget {
        ciphertext_log2: bound.log2(),
        flooding_sigma,
        decryption_log2: decryption.log2(),
        limit_log2,
        failure_log2: (5.0f64).log2() + TAIL_LOG2,
    };
    if out.decryption_log2 >= limit_log2 {
        return Err(CryptoError::He(format!(
            "{contributors} contributors × {slots} slots with a {}-of-{} committee need noise up to 2^{:.2}, above Δ/2 = 2^{limit_log2}: use fewer categories or value fields (slots), fewer contributors or a smaller committee",
            committee.threshold(),
            committee.members(),
            out.decryption_log2
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::he::{encrypt_in, max_noise};

    fn seed() -> [u8; MASK_SEED_BYTES] {
        [7; MASK_SEED_BYTES]
    }

    /// Every member's sub-shares, generated by their dealers, and the key.
    fn committee_key(c: &Committee) -> Result<(Vec<HeSecretKey>, HePublicKey)> {
        let mut shares = Vec::new();
        let mut bodies = Vec::new();
        for _ in 0..c.shares() {
            let (s, b) = share_keygen(&seed());
            shares.push(s);
            bodies.push(b);
        }
        let refs: Vec<&[u64]> = bodies.iter().map(Vec::as_slice).collect();
        Ok((shares, combine_public_key(c, &seed(), &refs)?))
    }

    #[test]
    fn replicated_structure_gives_every_threshold_set_all_shares_and_no_smaller_set() -> Result<()>
    {
        for n in 2..=5 {
            for t in 2..=n {
                let c = Committee::new(n, t)?;
                for set in 0u32..1 << n {
                    let present: Vec<bool> = (0..n).map(|m| set >> m & 1 == 1).collect();
                    let covered = c.cover(&present).is_ok();
                    assert_eq!(
                        covered,
                        set.count_ones() as usize >= t,
                        "{t}-of-{n}, set {set:b}"
                    );
                }
                assert!(c.holders.iter().all(|h| h.len() == c.holders_per_share()));
            }
        }
        let c = Committee::new(3, 2)?;
        assert_eq!(c.shares(), 3);
        assert_eq!(c.holders(0), &[1, 2]);
        assert_eq!(c.held_by(0), vec![1, 2]);
        assert_eq!(c.cover(&[true, false, false]), Err(vec![0]));
        assert!(Committee::new(1, 1).is_err());
        assert!(Committee::new(3, 4).is_err());
        assert!(Committee::new(8, 2).is_err());
        assert!(Committee::new(7, 4).is_ok()); // C(7,3) = 35
        Ok(())
    }

    #[test]
    fn every_member_derives_the_same_mask_from_the_seed() -> Result<()> {
        let c = Committee::new(2, 2)?;
        let (s1, b1) = share_keygen(&seed());
        let (s2, b2) = share_keygen(&seed());
        assert_ne!(b1, b2, "fresh secrets and noise per share");
        let pk = combine_public_key(&c, &seed(), &[&b1, &b2])?;
        let other = combine_public_key(&c, &[8; MASK_SEED_BYTES], &[&b1, &b2])?;
        assert_ne!(pk.to_words()[..2048], other.to_words()[..2048]);
        // The combined secret decrypts: s1 + s2 as a (non-binary) key.
        let list = encrypt_in(&pk, Layout::COMMITTEE, &[1, 2, 255])?;
        let p1 = partial_decrypt(&s1, &list, 2f64.powi(30))?;
        let p2 = partial_decrypt(&s2, &list, 2f64.powi(30))?;
        assert_eq!(combine_partials(&c, &list, &[&p1, &p2])?, vec![1, 2, 255]);
        // One share alone is noise.
        assert!(max_noise(&s1, &list, &[1, 2, 255]) > 1 << 50);
        Ok(())
    }

    #[test]
    fn two_of_three_decrypts_with_any_two_members_and_not_with_one() -> Result<()> {
        let c = Committee::new(3, 2)?;
        let (shares, pk) = committee_key(&c)?;
        let slots = 2 * 2048 + 5; // three compact lists
        let limbs: Vec<u64> = (0..slots as u64).map(|i| i % 256).collect();
        let list = encrypt_in(&pk, Layout::COMMITTEE, &limbs)?;
        let b = budget(1, &c, slots)?;
        for present in [
            [true, true, false],
            [false, true, true],
            [true, false, true],
        ] {
            let cover = c
                .cover(&present)
                .map_err(|m| CryptoError::He(format!("{m:?}")))?;
            let partials: Vec<Vec<u64>> = cover
                .iter()
                .enumerate()
                .map(|(share, _member)| partial_decrypt(&shares[share], &list, b.flooding_sigma))
                .collect::<Result<_>>()?;
            let refs: Vec<&[u64]> = partials.iter().map(Vec::as_slice).collect();
            assert_eq!(combine_partials(&c, &list, &refs)?, limbs);
        }
        assert!(c.cover(&[false, true, false]).is_err());
        let p = partial_decrypt(&shares[0], &list, b.flooding_sigma)?;
        assert!(
            combine_partials(&c, &list, &[&p, &p]).is_err(),
            "one partial per sub-share"
        );
        Ok(())
    }

    #[test]
    fn sum_at_the_largest_budgeted_contributor_count_decrypts_within_the_bound() -> Result<()> {
        // 2-of-3 (three sub-shares, two holders each) over one chunk: the most
        // contributors the budget admits at this size, all maximal limbs.
        let c = Committee::new(3, 2)?;
        let slots = 64;
        let contributors = (1..=super::super::MAX_CONTRIBUTORS as usize)
            .rev()
            .find(|&k| budget(k, &c, slots).is_ok())
            .ok_or(CryptoError::He("no contributor count fits".into()))?;
        let b = budget(contributors, &c, slots)?;
        let (shares, pk) = committee_key(&c)?;
        let limbs = vec![255u64; slots];
        let one = encrypt_in(&pk, Layout::COMMITTEE, &limbs)?;
        let mut sum = one.clone();
        for _ in 1..contributors {
            sum = sum.add(&encrypt_in(&pk, Layout::COMMITTEE, &limbs)?)?;
        }
        let expected = vec![255 * contributors as u64; slots];
        let partials: Vec<Vec<u64>> = shares
            .iter()
            .map(|s| partial_decrypt(s, &sum, b.flooding_sigma))
            .collect::<Result<_>>()?;
        let refs: Vec<&[u64]> = partials.iter().map(Vec::as_slice).collect();
        assert_eq!(combine_partials(&c, &sum, &refs)?, expected);
        let noise = combined_noise(&c, &sum, &refs, &expected)?;
        eprintln!(
            "{contributors} contributors, 2-of-3: noise with flooding 2^{:.1}, budget 2^{:.1} (ciphertext 2^{:.1}, σ 2^{:.1})",
            (noise as f64).log2(),
            b.decryption_log2,
            b.ciphertext_log2,
            b.flooding_sigma.log2()
        );
        assert!((noise as f64).log2() < b.decryption_log2);
        assert!(b.failure_log2 <= -64.0);
        Ok(())
    }

    #[test]
    fn budget_refuses_what_does_not_fit_and_grows_with_the_committee() -> Result<()> {
        let c23 = Committee::new(3, 2)?;
        let c33 = Committee::new(3, 3)?;
        let scenario = 1489 * 12;
        let a = budget(31, &c23, scenario)?;
        let b = budget(31, &c33, scenario)?;
        assert!(a.decryption_log2 < a.limit_log2);
        assert!(
            b.flooding_sigma < a.flooding_sigma,
            "one holder per share floods less"
        );
        assert!(budget(256, &c23, 1 << 20).is_err());
        assert!(budget(0, &c23, 10).is_err());
        Ok(())
    }
}
