//! Property tests of the tree: for random trees every inclusion and consistency
//! proof verifies, and any bit flip in a leaf, proof or root makes it fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_audit::merkle::{self, Blake3, MemoryTree, MerkleHasher};
use proptest::prelude::*;

fn tree(n: u64) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        t.push_data::<Blake3>(&i.to_be_bytes());
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn inclusion_proofs_verify_and_any_flip_fails(n in 1u64..300, i_frac in 0.0f64..1.0, flip in any::<(u16, u8)>()) {
        let t = tree(n);
        let i = ((n as f64 * i_frac) as u64).min(n - 1);
        let root = merkle::root::<Blake3, _>(&t, n).unwrap();
        let leaf = Blake3::leaf(&i.to_be_bytes());
        let proof = merkle::inclusion_proof::<Blake3, _>(&t, i, n).unwrap();
        prop_assert!(merkle::verify_inclusion::<Blake3, _>(i, n, &leaf, &proof, &root).is_ok());
        // Flip one bit somewhere in (leaf, proof..., root).
        let mut parts: Vec<[u8; 32]> = std::iter::once(leaf).chain(proof.iter().copied()).chain(std::iter::once(root)).collect();
        let which = flip.0 as usize % parts.len();
        parts[which][(flip.1 as usize) % 32] ^= 1 << (flip.1 % 8);
        let (l, rest) = parts.split_first().unwrap();
        let (r, p) = rest.split_last().unwrap();
        prop_assert!(merkle::verify_inclusion::<Blake3, _>(i, n, l, p, r).is_err());
        // Wrong index or size fails too.
        if n > 1 {
            let other = (i + 1) % n;
            prop_assert!(merkle::verify_inclusion::<Blake3, _>(other, n, &leaf, &proof, &root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_any_flip_fails(n2 in 2u64..300, f in 0.0f64..1.0, flip in any::<(u16, u8)>()) {
        let t = tree(n2);
        let n1 = ((n2 as f64 * f) as u64).clamp(1, n2 - 1);
        let r1 = merkle::root::<Blake3, _>(&t, n1).unwrap();
        let r2 = merkle::root::<Blake3, _>(&t, n2).unwrap();
        let proof = merkle::consistency_proof::<Blake3, _>(&t, n1, n2).unwrap();
        prop_assert!(merkle::verify_consistency::<Blake3, _>(n1, n2, &proof, &r1, &r2).is_ok());
        let mut parts: Vec<[u8; 32]> = std::iter::once(r1).chain(proof.iter().copied()).chain(std::iter::once(r2)).collect();
        let which = flip.0 as usize % parts.len();
        parts[which][(flip.1 as usize) % 32] ^= 1 << (flip.1 % 8);
        let (a, rest) = parts.split_first().unwrap();
        let (b, p) = rest.split_last().unwrap();
        prop_assert!(merkle::verify_consistency::<Blake3, _>(n1, n2, p, a, b).is_err());
    }

    #[test]
    fn signed_checkpoints_fail_on_any_bit_flip(size in 1u64..1000, byte in any::<u16>(), bit in 0u8..8) {
        let key = pdx_crypto::SigningKey::generate(pdx_crypto::Suite::Intl).unwrap();
        let cp = pdx_audit::checkpoint::Checkpoint { origin: "440000:0011223344556677".into(), size, root: [9; 32], time_ms: 5 };
        let mut signed = pdx_audit::checkpoint::SignedCheckpoint::sign(&cp, &key).unwrap();
        prop_assert!(signed.verify(&key.verifying_key()).is_ok());
        let total = signed.signed.body.len() + 64;
        let pos = byte as usize % total;
        if pos < signed.signed.body.len() {
            signed.signed.body[pos] ^= 1 << bit;
        } else {
            signed.signed.signature.0[pos - signed.signed.body.len()] ^= 1 << bit;
        }
        prop_assert!(signed.verify(&key.verifying_key()).is_err());
    }
}
