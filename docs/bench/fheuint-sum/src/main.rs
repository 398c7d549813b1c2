//! `cargo run --release -- CONTRIBUTORS` in docs/bench/fheuint-sum: encrypts
//! CONTRIBUTORS FheUint64 values and sums them with the server key (one
//! category of the 31 x 2048 job), reporting CPU-relevant wall times.
#![forbid(unsafe_code)]

use std::time::Instant;
use tfhe::prelude::*;
use tfhe::{ConfigBuilder, FheUint64, generate_keys, set_server_key};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    let t = Instant::now();
    let (client, server) = generate_keys(ConfigBuilder::default().build());
    println!("keygen: {:.2} s", t.elapsed().as_secs_f64());
    set_server_key(server);
    let values: Vec<u64> = (0..n as u64).map(|i| 1_000_000 + i * 7919).collect();
    let t = Instant::now();
    let cts: Vec<FheUint64> = values
        .iter()
        .map(|v| FheUint64::encrypt(*v, &client))
        .collect();
    println!(
        "encrypt {n}: {:.3} s ({:.1} ms each)",
        t.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    let t = Instant::now();
    let sum: FheUint64 = cts.iter().sum();
    let secs = t.elapsed().as_secs_f64();
    let clear: u64 = sum.decrypt(&client);
    assert_eq!(clear, values.iter().sum::<u64>());
    println!(
        "sum() of {n}: {secs:.3} s ({:.3} s per input); one category of 31 x 2048 extrapolates to {:.0} s, the whole job to {:.0} s",
        secs / n as f64,
        secs / n as f64 * 31.0,
        secs / n as f64 * 31.0 * 2048.0
    );
}
