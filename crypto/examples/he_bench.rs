//! Homomorphic-aggregate core benchmark (docs/benchmarks.md): 31 contributors ×
//! 2048 categories of 64-bit sums (4 limbs) and 32-bit counts (2 limbs).
//! `cargo run --release -p pdx-crypto --example he_bench`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_crypto::he;
use std::time::Instant;

fn main() {
    let contributors = 31usize;
    let categories = 2048usize;
    let t = Instant::now();
    let (sk, pk) = he::keygen();
    println!("keygen: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let mut expected = vec![0u128; categories];
    let mut lists = Vec::new();
    let mut enc_ms = Vec::new();
    let mut x = 0x1234_5678_9abc_def1u64;
    for _ in 0..contributors {
        let mut limbs = Vec::with_capacity(categories * 6);
        for e in expected.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let sum = x >> 20; // up to 2^44 fen per category and contributor
            *e += u128::from(sum);
            limbs.extend(he::split(sum, 4));
            limbs.extend(he::split(x & 0xffff, 2));
        }
        let t = Instant::now();
        lists.push(he::encrypt(&pk, &limbs).unwrap());
        enc_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    enc_ms.sort_by(|a, b| a.total_cmp(b));
    let bytes = lists[0].words().len() * 8;
    let t = Instant::now();
    let mut sum = lists[0].clone();
    for l in &lists[1..] {
        sum = sum.add(l).unwrap();
    }
    let agg_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let slots = he::decrypt(&sk, &sum);
    let dec_ms = t.elapsed().as_secs_f64() * 1e3;
    for (c, e) in expected.iter().enumerate() {
        assert_eq!(he::combine(&slots[c * 6..c * 6 + 4]), *e, "category {c}");
    }
    let total = enc_ms.iter().sum::<f64>() + agg_ms + dec_ms;
    println!(
        "encrypt per contributor: median {:.1} ms; aggregate {contributors}: {agg_ms:.1} ms; decrypt: {dec_ms:.1} ms; {bytes} bytes per contribution; whole job {total:.0} ms of CPU",
        enc_ms[enc_ms.len() / 2]
    );
}
