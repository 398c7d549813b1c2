//! Why the cryptography looks the way it does.
//!
//! - **Two suites, one per network.** `intl` (Ed25519, X25519, AES-256-GCM,
//!   BLAKE3) and `gm` (SM2, SM3, SM4-GCM) for departments assessed under GB/T
//!   39786 (密评). The suite is chosen with the CA and fixed for the network's
//!   life; every format names it (suite ids in envelopes and key documents, the
//!   key encoding, `suite` in signed containers and bundles, `:gm` in log ids),
//!   and an object of the other suite is refused, never converted.
//! - **Domain-separated signatures.** Every signature covers a domain label
//!   ([`crate::SignatureDomain`]) so signatures cannot be moved between
//!   document types; SM2 signatures add GM/T 0009's identity hash as the
//!   standard requires.
//! - **Verify, then parse.** Signed documents carry their exact body bytes
//!   ([`crate::wire::Signed`]); nothing is decoded for a decision before its
//!   signature verifies, and no canonicalisation step can be fooled.
//! - **Counter nonces.** GCM nonces are built from record/field/block
//!   counters under keys that are fresh per release, recipient or stored object.
//!   Uniqueness follows from the construction rather than from a probability
//!   bound, and a test checks it over a million fields.
//! - **Suites are named.** An unknown suite is refused, never guessed.
//! - **Crates of the field, no home-made primitives.** ring for intl (plus
//!   `x25519-dalek` for the long-lived X25519 key ring does not offer);
//!   RustCrypto's `sm2`, `sm3`, `sm4` and generic GCM/HMAC/HKDF/PBKDF2 for gm.
//!   The one composition pdx writes itself is SM2 verification from `sm2`'s
//!   arithmetic, to use its variable-time multi-scalar multiplication on
//!   public inputs; it is checked against the standard's example and, by a
//!   property test, against `sm2`'s own verifier.
//! - **One-pass key wrap under gm.** GM/T 0003.3 key agreement is interactive;
//!   a sealed release is opened later, by a recipient that was not online, so
//!   data keys are wrapped with SM2 public-key encryption (GM/T 0003.4), bound
//!   to their release and recipient by an SM3 digest inside the plaintext.
//! - **Homomorphic sums use tfhe's published parameters** ([`crate::he`]): the
//!   dimension and noise distribution come from the tfhe constant, and the slot
//!   width follows from a worst-case noise bound, not a tail estimate.
//! - **No IO here.** Key files are encoded and decoded as bytes; the node owns
//!   files, permissions and clocks, which keeps this crate testable and small.
