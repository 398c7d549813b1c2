//! Proofs that a contribution is a well-formed encryption of in-range limbs:
//! tfhe's zero-knowledge proof of compact public-key encryption (PKEv2 of
//! tfhe-zk-pok, through `core_crypto`). A proof shows that each compact list
//! was made under the query's public key with a binary `r`, noise within
//! tfhe's bound and messages below `2^limb_bits`, and binds the metadata the
//! caller passes (query, contributor, deadline) plus the chunk's position.
//!
//! The common reference string ([`Crs`]) has a trapdoor: whoever generates it
//! could forge proofs. The network CA, the party every node already trusts
//! to certify departments, is the one to generate it (`docs/he-aggregates.md`).

use super::{
    HeList, HePublicKey, Layout, PKE, check_limbs, dimension, empty_list, encryption_generator,
};
use crate::{CryptoError, Result};
use rand_chacha_03::rand_core::SeedableRng;
use rayon::prelude::*;
use tfhe::core_crypto::prelude::*;
use tfhe::zk::{
    CompactPkeCrs, CompactPkeProof, CompactPkeProofConformanceParams, CompactPkeZkScheme,
    ZkComputeLoad, ZkMSBZeroPaddingBitCount,
};

/// Largest serialized CRS accepted (the committee layout's is 12.9 MB).
pub const MAX_CRS_BYTES: u64 = 64 << 20;
/// Largest serialized proof of one compact list accepted.
pub const MAX_PROOF_BYTES: u64 = 1 << 20;

fn he_err(what: &str) -> impl Fn(String) -> CryptoError + '_ {
    move |e| CryptoError::He(format!("{what}: {e}"))
}

/// Padding bits the proof shows to be zero above each limb: the slot's
/// message space minus the limb.
fn padding(layout: &Layout) -> u64 {
    u64::from(layout.slot_bits() - layout.limb_bits)
}

fn chunk(layout: &Layout) -> Result<usize> {
    layout.chunk.filter(|&k| k <= dimension().0).ok_or_else(|| {
        CryptoError::He("proofs need a layout of at most n slots per compact list".into())
    })
}

/// The common reference string of a layout.
pub struct Crs {
    crs: CompactPkeCrs,
    layout: Layout,
}

impl std::fmt::Debug for Crs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crs({:?})", self.layout)
    }
}

impl Crs {
    /// Generates a CRS for `layout` from the OS CSPRNG (ChaCha20 seeded by
    /// ring). Its randomness is dropped on return: nobody keeps the trapdoor.
    pub fn generate(layout: Layout) -> Result<Crs> {
        let k = chunk(&layout)?;
        let mut rng = rand_chacha_03::ChaCha20Rng::from_seed(crate::rng::bytes::<32>()?);
        let crs = CompactPkeCrs::new(
            dimension(),
            LweCiphertextCount(k),
            PKE.encryption_noise_distribution,
            CiphertextModulus::<u64>::new_native(),
            1u64 << layout.slot_bits(),
            ZkMSBZeroPaddingBitCount(padding(&layout)),
            &mut rng,
        )
        .map_err(|e| CryptoError::He(format!("CRS generation: {e}")))?;
        Ok(Crs { crs, layout })
    }

    /// The layout it proves.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// tfhe's versioned serialization.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        tfhe::safe_serialization::safe_serialize(&self.crs, &mut out, MAX_CRS_BYTES)
            .map_err(|e| CryptoError::He(format!("CRS serialization: {e}")))?;
        Ok(out)
    }

    /// Reads a CRS and refuses one not made for `layout` (dimension, list
    /// size, noise bound, moduli, padding) or over [`MAX_CRS_BYTES`].
    pub fn from_bytes(layout: Layout, bytes: &[u8]) -> Result<Crs> {
        let k = chunk(&layout)?;
        let (d, k, b, q, t) = CompactPkeCrs::prepare_crs_parameters(
            dimension(),
            LweCiphertextCount(k),
            PKE.encryption_noise_distribution,
            CiphertextModulus::<u64>::new_native(),
            1u64 << layout.slot_bits(),
            CompactPkeZkScheme::V2,
        )
        .map_err(|e| CryptoError::He(format!("CRS parameters: {e}")))?;
        let params =
            tfhe::zk::CompactPkeCrsConformanceParams::new(d.0, k.0, b, q, t, padding(&layout));
        let crs = tfhe::safe_serialization::safe_deserialize_conformant::<CompactPkeCrs>(
            bytes,
            MAX_CRS_BYTES,
            &params,
        )
        .map_err(he_err("CRS does not decode or is not made for this layout"))?;
        Ok(Crs { crs, layout })
    }
}

/// One compact list's proof, decoded and conformance-checked.
pub struct Proof(CompactPkeProof);

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proof(..)")
    }
}

impl Proof {
    /// tfhe's versioned serialization (2,670 bytes for the committee layout).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        tfhe::safe_serialization::safe_serialize(&self.0, &mut bytes, MAX_PROOF_BYTES)
            .map_err(|e| CryptoError::He(format!("proof serialization: {e}")))?;
        Ok(bytes)
    }

    /// Reads a proof; refuses one over [`MAX_PROOF_BYTES`], malformed, or not
    /// a PKEv2 proof.
    pub fn from_bytes(bytes: &[u8]) -> Result<Proof> {
        let conformance = CompactPkeProofConformanceParams::new(CompactPkeZkScheme::V2);
        tfhe::safe_serialization::safe_deserialize_conformant::<CompactPkeProof>(
            bytes,
            MAX_PROOF_BYTES,
            &conformance,
        )
        .map(Proof)
        .map_err(he_err("proof does not decode"))
    }
}

/// What a chunk's proof binds: the caller's metadata, the chunk index and count.
fn chunk_metadata(metadata: &[u8], index: usize, count: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(metadata.len() + 16);
    m.extend_from_slice(metadata);
    m.extend_from_slice(&(index as u64).to_be_bytes());
    m.extend_from_slice(&(count as u64).to_be_bytes());
    m
}

/// Encrypts `limbs` in the CRS's layout and proves each compact list; the
/// proofs (one per list, tfhe's serialization) bind `metadata`.
pub fn encrypt_and_prove(
    pk: &HePublicKey,
    crs: &Crs,
    limbs: &[u64],
    metadata: &[u8],
) -> Result<(HeList, Vec<Proof>)> {
    let layout = crs.layout;
    check_limbs(&layout, limbs)?;
    let k = chunk(&layout)?;
    let count = limbs.len().div_ceil(k);
    // Chunks are proven in parallel, each with its own generator.
    let proven: Vec<(Vec<u64>, Proof)> = limbs
        .par_chunks(k)
        .enumerate()
        .map(|(index, chunk)| {
            let mut enc_gen = encryption_generator();
            let mut ct = empty_list(chunk.len());
            let proof = encrypt_and_prove_lwe_compact_ciphertext_list_with_compact_public_key(
                &pk.key,
                &mut ct,
                &chunk.to_vec(),
                1u64 << layout.delta_log,
                PKE.encryption_noise_distribution,
                PKE.encryption_noise_distribution,
                enc_gen.noise_generator_mut(),
                &crs.crs,
                &chunk_metadata(metadata, index, count),
                ZkComputeLoad::Proof,
            )
            .map_err(|e| CryptoError::He(format!("proving chunk {index}: {e}")))?;
            Ok((ct.into_container(), Proof(proof)))
        })
        .collect::<Result<_>>()?;
    let mut words = Vec::with_capacity(layout.list_words(limbs.len()));
    let mut proofs = Vec::with_capacity(count);
    for (w, p) in proven {
        words.extend_from_slice(&w);
        proofs.push(p);
    }
    Ok((HeList::from_words_in(layout, words, limbs.len())?, proofs))
}

/// Verifies one proof per compact list of `list` under `pk` and `metadata`;
/// refuses a missing, extra or false proof, naming the chunk.
pub fn verify(
    list: &HeList,
    pk: &HePublicKey,
    crs: &Crs,
    proofs: &[Proof],
    metadata: &[u8],
) -> Result<()> {
    if list.layout() != crs.layout {
        return Err(CryptoError::He(
            "list and CRS are of different layouts".into(),
        ));
    }
    let lists: Vec<_> = list.compact_lists().collect();
    if proofs.len() != lists.len() {
        return Err(CryptoError::He(format!(
            "{} proofs for {} compact lists: one per list is needed",
            proofs.len(),
            lists.len()
        )));
    }
    lists
        .par_iter()
        .zip(proofs)
        .enumerate()
        .try_for_each(|(index, (ct, proof))| {
            let outcome = verify_lwe_compact_ciphertext_list(
                ct,
                &pk.key,
                &proof.0,
                &crs.crs,
                &chunk_metadata(metadata, index, lists.len()),
            );
            if outcome.is_valid() {
                Ok(())
            } else {
                Err(CryptoError::He(format!(
                    "proof of chunk {index} does not verify: not a well-formed encryption of in-range limbs under this key, or made for another query, contributor or deadline"
                )))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::he::committee::{Committee, combine_public_key, share_keygen};

    fn key() -> Result<HePublicKey> {
        let c = Committee::new(2, 2)?;
        let (_, b1) = share_keygen(&[1; 16]);
        let (_, b2) = share_keygen(&[1; 16]);
        combine_public_key(&c, &[1; 16], &[&b1, &b2])
    }

    /// A CRS for short lists keeps the tests quick; the layout's shape is the same.
    fn small() -> Layout {
        Layout {
            chunk: Some(64),
            ..Layout::COMMITTEE
        }
    }

    #[test]
    fn proofs_verify_and_bind_key_metadata_and_position() -> Result<()> {
        let pk = key()?;
        let crs = Crs::from_bytes(small(), &Crs::generate(small())?.to_bytes()?)?;
        let limbs: Vec<u64> = (0..100).map(|i| i % 256).collect();
        let (list, proofs) = encrypt_and_prove(&pk, &crs, &limbs, b"q1|dept|deadline")?;
        assert_eq!(proofs.len(), 2);
        verify(&list, &pk, &crs, &proofs, b"q1|dept|deadline")?;
        assert!(verify(&list, &pk, &crs, &proofs, b"q2|dept|deadline").is_err());
        let bytes: Vec<Vec<u8>> = proofs.iter().map(Proof::to_bytes).collect::<Result<_>>()?;
        let read = |b: &Vec<u8>| Proof::from_bytes(b);
        let swapped = vec![read(&bytes[1])?, read(&bytes[0])?];
        assert!(verify(&list, &pk, &crs, &swapped, b"q1|dept|deadline").is_err());
        assert!(verify(&list, &pk, &crs, &proofs[..1], b"q1|dept|deadline").is_err());
        assert!(verify(&list, &key()?, &crs, &proofs, b"q1|dept|deadline").is_err());
        let round_trip: Vec<Proof> = bytes.iter().map(read).collect::<Result<_>>()?;
        verify(&list, &pk, &crs, &round_trip, b"q1|dept|deadline")?;
        assert!(Proof::from_bytes(&bytes[0][..bytes[0].len() / 2]).is_err());
        assert!(Proof::from_bytes(&[]).is_err());
        Ok(())
    }

    #[test]
    fn an_out_of_range_limb_cannot_carry_a_valid_proof() -> Result<()> {
        let pk = key()?;
        let crs = Crs::generate(small())?;
        let limbs = vec![3u64; 64];
        let (list, proofs) = encrypt_and_prove(&pk, &crs, &limbs, b"m")?;
        // Built by hand: the same proof over a list whose slot 5 carries 2^12
        // more (an out-of-range contribution), and a fresh encryption of 2^12.
        let mut words = list.words().to_vec();
        let body = dimension().0 + 5;
        words[body] = words[body].wrapping_add(1 << (12 + Layout::COMMITTEE.delta_log));
        let tampered = HeList::from_words_in(small(), words, 64)?;
        assert!(verify(&tampered, &pk, &crs, &proofs, b"m").is_err());
        let mut big = limbs.clone();
        big[5] = 1 << 12;
        assert!(encrypt_and_prove(&pk, &crs, &big, b"m").is_err());
        Ok(())
    }

    #[test]
    fn a_crs_for_another_layout_is_refused() -> Result<()> {
        let bytes = Crs::generate(small())?.to_bytes()?;
        assert!(Crs::from_bytes(Layout::COMMITTEE, &bytes).is_err());
        assert!(Crs::from_bytes(small(), &bytes[..bytes.len() - 1]).is_err());
        assert!(Crs::generate(Layout::SINGLE).is_err());
        Ok(())
    }
}
