//! Cryptographic building blocks of pdx. This crate does no IO: callers hand it
//! bytes and get bytes back; files, sockets and clocks belong to `pdx-node`.
//!
//! Two suites ([`Suite`]): `intl` takes every primitive from `ring`, `blake3`
//! (plus `x25519-dalek` for the one thing ring cannot do, a long-lived X25519
//! private key, and `argon2` for passphrase hashing); `gm` takes SM2, SM3 and
//! SM4 from RustCrypto (`sm2`, `sm3`, `sm4`, with the generic GCM, HMAC, HKDF
//! and PBKDF2). Homomorphic sums use `tfhe` under both. See [`rationale`] for
//! the design choices.
#![forbid(unsafe_code)]

pub mod aead;
pub mod atrest;
pub mod canon;
pub mod digest;
pub mod envelope;
mod error;
pub mod he;
pub mod keydoc;
pub mod keyfile;
pub mod pseudonym;
pub mod rationale;
pub mod rng;
pub mod sign;
pub mod suite;
pub mod wire;

pub use digest::Digest;
pub use error::CryptoError;
pub use sign::{KeyId, Signature, SignatureDomain, SigningKey, VerifyingKey};
pub use suite::Suite;

/// Result alias for this crate.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;
