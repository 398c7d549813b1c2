//! Committee aggregate benchmark (docs/benchmarks.md, issue 16): the settlement
//! scenario's query (1,488 categories + "(other)", a 64-bit sum and a 32-bit
//! count each: 17,868 slots in the committee layout), 31 contributors, a 2-of-3
//! committee. Times distributed key generation, CRS generation, proving and
//! verifying a contribution (and how proving scales with the list length),
//! aggregation, each member's partial decryption and the combination.
//! `cargo run --release -p pdx-crypto --example he_committee_bench [PROVEN]`
//! (PROVEN contributions are proven and verified, default 3; the others are
//! encrypted without a proof, which gives the same ciphertexts' distribution).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_crypto::he::committee::{self, Committee};
use pdx_crypto::he::proof::{self, Crs};
use pdx_crypto::he::{self, Layout};
use std::time::Instant;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let proven: usize = std::env::args()
        .nth(1)
        .map_or(3, |a| a.parse().expect("PROVEN is a count"));
    let contributors = 31usize;
    let categories = 1489usize;
    let layout = Layout::COMMITTEE;
    let (sum_limbs, count_limbs) = (layout.limbs_for(64), layout.limbs_for(32));
    let per = sum_limbs + count_limbs;
    let slots = categories * per;
    let c = Committee::new(3, 2).unwrap();
    let seed = [42u8; committee::MASK_SEED_BYTES];

    let t = Instant::now();
    let mut shares = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..c.shares() {
        let (s, b) = committee::share_keygen(&seed);
        shares.push(s);
        bodies.push(b);
    }
    let refs: Vec<&[u64]> = bodies.iter().map(Vec::as_slice).collect();
    let pk = committee::combine_public_key(&c, &seed, &refs).unwrap();
    println!(
        "distributed keygen, 2-of-3 ({} sub-shares, all members together): {:.1} ms",
        c.shares(),
        ms(t)
    );
    let budget = committee::budget(contributors, &c, slots).unwrap();
    println!(
        "noise budget: ciphertext 2^{:.2}, flooding sigma 2^{:.2}, with flooding 2^{:.2} < 2^{}",
        budget.ciphertext_log2,
        budget.flooding_sigma.log2(),
        budget.decryption_log2,
        budget.limit_log2
    );

    let t = Instant::now();
    let crs = Crs::generate(layout).unwrap();
    let crs_ms = ms(t);
    let crs_bytes = crs.to_bytes().unwrap();
    println!(
        "CRS for {} slots per list (the CA, once): {crs_ms:.0} ms, {} bytes",
        layout.chunk.unwrap(),
        crs_bytes.len()
    );

    // How proving scales with the list length (one compact list each).
    for k in [256usize, 512, 1024, 2048] {
        let small = Layout {
            chunk: Some(k),
            ..layout
        };
        let crs_k = Crs::generate(small).unwrap();
        let limbs = vec![200u64; k];
        let t = Instant::now();
        let (list, proofs) = proof::encrypt_and_prove(&pk, &crs_k, &limbs, b"scaling").unwrap();
        let p = ms(t);
        let t = Instant::now();
        proof::verify(&list, &pk, &crs_k, &proofs, b"scaling").unwrap();
        println!(
            "one list of {k} slots: prove {p:.0} ms, verify {:.0} ms, proof {} bytes",
            ms(t),
            proofs[0].to_bytes().unwrap().len()
        );
    }

    let mut expected = vec![0u128; categories];
    let mut lists = Vec::new();
    let (mut prove_ms, mut verify_ms, mut proof_bytes) = (Vec::new(), Vec::new(), 0);
    let mut x = 0x1234_5678_9abc_def1u64;
    for i in 0..contributors {
        let mut limbs = Vec::with_capacity(slots);
        for e in expected.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let sum = x >> 20;
            *e += u128::from(sum);
            limbs.extend(layout.split(sum, sum_limbs));
            limbs.extend(layout.split(x & 0xffff, count_limbs));
        }
        if i < proven {
            let meta = format!("query|contributor {i}|deadline");
            let t = Instant::now();
            let (list, proofs) =
                proof::encrypt_and_prove(&pk, &crs, &limbs, meta.as_bytes()).unwrap();
            prove_ms.push(ms(t));
            let t = Instant::now();
            proof::verify(&list, &pk, &crs, &proofs, meta.as_bytes()).unwrap();
            verify_ms.push(ms(t));
            proof_bytes = proofs.iter().map(|p| p.to_bytes().unwrap().len()).sum();
            lists.push(list);
        } else {
            lists.push(he::encrypt_in(&pk, layout, &limbs).unwrap());
        }
    }
    if proven > 0 {
        println!(
            "contribution of {slots} slots ({} lists): prove median {:.0} ms, verify median {:.0} ms ({proven} runs), proofs {proof_bytes} bytes, ciphertext {} bytes",
            slots.div_ceil(layout.chunk.unwrap()),
            median(prove_ms),
            median(verify_ms),
            lists[0].words().len() * 8
        );
    }

    let t = Instant::now();
    let mut sum = lists[0].clone();
    for l in &lists[1..] {
        sum = sum.add(l).unwrap();
    }
    println!("aggregate {contributors}: {:.1} ms", ms(t));

    // Members 0 and 1 decrypt; member 2 is absent.
    let cover = c.cover(&[true, true, false]).unwrap();
    let mut partials = vec![Vec::new(); c.shares()];
    for member in 0..2 {
        let t = Instant::now();
        let mine: Vec<usize> = (0..c.shares()).filter(|&s| cover[s] == member).collect();
        let keys: Vec<_> = mine.iter().map(|&s| &shares[s]).collect();
        let out = committee::partial_decrypt_many(&keys, &sum, budget.flooding_sigma).unwrap();
        for (s, p) in mine.into_iter().zip(out) {
            partials[s] = p;
        }
        println!(
            "member {member}'s partial decryption ({} sub-shares): {:.1} ms",
            cover.iter().filter(|m| **m == member).count(),
            ms(t)
        );
    }
    let refs: Vec<&[u64]> = partials.iter().map(Vec::as_slice).collect();
    let t = Instant::now();
    let out = committee::combine_partials(&c, &sum, &refs).unwrap();
    println!("combine: {:.1} ms", ms(t));
    for (i, e) in expected.iter().enumerate() {
        assert_eq!(
            layout.combine(&out[i * per..i * per + sum_limbs]),
            *e,
            "category {i}"
        );
    }
    println!("decrypted sums equal the plaintext reference");
}
