//! Why the cryptography looks the way it does.
//!
//! - **One signature scheme, domain-separated.** Ed25519 (ring) everywhere; every
//!   signature covers a domain label ([`crate::SignatureDomain`]) so signatures
//!   cannot be moved between document types.
//! - **Verify, then parse.** Signed documents carry their exact body bytes
//!   ([`crate::wire::Signed`]); nothing is decoded for a decision before its
//!   signature verifies, and no canonicalisation step can be fooled.
//! - **Counter nonces.** AES-GCM nonces are built from record/field/block
//!   counters under keys that are fresh per release, recipient or stored object.
//!   Uniqueness follows from the construction rather than from a probability
//!   bound, and a test checks it over a million fields.
//! - **Suites are named.** Envelopes and key documents carry a suite id so a
//!   second suite (GM/T SM2/SM3/SM4) can be added without a format change; an
//!   unknown suite is refused, never guessed.
//! - **ring plus one gap-filler.** ring deliberately offers only ephemeral X25519
//!   keys; a recipient must keep its key, so the static half uses `x25519-dalek`
//!   (RFC 7748, interoperable by definition). The sender side uses ring.
//! - **Homomorphic sums use tfhe's published parameters** ([`crate::he`]): the
//!   dimension and noise distribution come from the tfhe constant, and the slot
//!   width follows from a worst-case noise bound, not a tail estimate.
//! - **No IO here.** Key files are encoded and decoded as bytes; the node owns
//!   files, permissions and clocks, which keeps this crate testable and small.
