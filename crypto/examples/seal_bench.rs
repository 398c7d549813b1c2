//! Field seal/open throughput and signature verification, per suite, side by
//! side in one run (docs/benchmarks.md):
//! `cargo run --release -p pdx-crypto --example seal_bench [intl|gm]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdx_crypto::envelope::{EncryptionSecret, Opener, Recipient, ReleaseContext, Sealer};
use pdx_crypto::{SignatureDomain, SigningKey, Suite};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn fields(suite: Suite) {
    let n: u64 = 1_000_000;
    let secret = EncryptionSecret::generate(suite).unwrap();
    let ctx = ReleaseContext {
        dataset_id: "settlement-2026-10".into(),
        release_id: [7; 16],
    };
    let (sealer, wrapped) = Sealer::new(
        suite,
        &ctx,
        &[Recipient {
            dept: "110000".into(),
            public: secret.public(),
        }],
    )
    .unwrap();
    let opener = Opener::new(suite, &ctx, &wrapped, "110000", |_| Some(&secret)).unwrap();
    let value = b"110105194912310029AB1234"; // 24 bytes, a typical identity field
    let mut sealed = Vec::with_capacity(n as usize);
    let (mut seal_rates, mut open_rates) = (Vec::new(), Vec::new());
    for run in 0..3 {
        sealed.clear();
        let t = Instant::now();
        for i in 0..n {
            let mut out = Vec::with_capacity(40);
            sealer
                .seal_field(0, i, 2, "certno", value, &mut out)
                .unwrap();
            sealed.push(out);
        }
        let s = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (i, c) in sealed.iter().enumerate() {
            let p = opener.open_field(0, i as u64, 2, "certno", c).unwrap();
            assert_eq!(p.len(), value.len());
        }
        let o = n as f64 / t.elapsed().as_secs_f64();
        println!("{suite} run {run}: seal {s:.0} fields/s, open {o:.0} fields/s");
        seal_rates.push(s);
        open_rates.push(o);
    }
    println!(
        "{suite} SEAL median {:.0} fields/s; OPEN median {:.0} fields/s (24-byte values, one core)",
        median(seal_rates),
        median(open_rates)
    );
}

fn signatures(suite: Suite) {
    let key = SigningKey::generate(suite).unwrap();
    let public = key.verifying_key();
    let msg = [7u8; 200]; // about a checkpoint or receipt body
    let n = 3000;
    let (mut sign_rates, mut verify_rates) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        let mut sigs = Vec::with_capacity(n);
        for _ in 0..n {
            sigs.push(key.sign(SignatureDomain::Receipt, &msg).unwrap());
        }
        sign_rates.push(n as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for s in &sigs {
            public.verify(SignatureDomain::Receipt, &msg, s).unwrap();
        }
        verify_rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "{suite} SIGN median {:.0}/s; VERIFY median {:.0}/s (200-byte messages, one core)",
        median(sign_rates),
        median(verify_rates)
    );
}

fn main() {
    let suites: Vec<Suite> = match std::env::args().nth(1) {
        Some(name) => vec![Suite::parse(&name).expect("intl or gm")],
        None => Suite::ALL.to_vec(),
    };
    for suite in suites {
        fields(suite);
        signatures(suite);
    }
}
