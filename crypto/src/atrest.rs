//! Encryption at rest: blocks stored by the node are sealed with the suite's
//! AEAD (AES-256-GCM or SM4-GCM) under keys derived from the storage master
//! key, so a copied disk without the key reveals no field values.
//!
//! Key = `suite.derive_key(CONTEXT, master || lp(purpose) || lp(object id) ||
//! lp(generation))` (BLAKE3 derive-key or HKDF-SM3; SM4 takes its first 16
//! bytes). `generation` is fresh random bytes for each write of an object (a
//! re-import of a dataset gets a new one), so block counters used as nonces
//! never repeat under one key.

use crate::aead::{AeadKey, counter_nonce, key_len, push_lp};
use crate::{Result, Suite};
use zeroize::Zeroizing;

const CONTEXT: &str = "pdx 2026-11 at-rest key v1 (purpose, object, generation)";

/// The node's storage master key, with the suite its object keys use.
pub struct StorageMaster(Zeroizing<[u8; 32]>, Suite);

impl std::fmt::Debug for StorageMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageMaster(..)")
    }
}

impl StorageMaster {
    /// Wraps 32 secret bytes; object keys follow `suite`.
    pub fn from_bytes(suite: Suite, raw: [u8; 32]) -> Self {
        StorageMaster(Zeroizing::new(raw), suite)
    }

    /// The secret bytes (for the key file).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derives the key for one stored object.
    pub fn object_key(
        &self,
        purpose: &str,
        object_id: &[u8],
        generation: &[u8],
    ) -> Result<ObjectKey> {
        let mut material = Zeroizing::new(Vec::with_capacity(96 + object_id.len()));
        material.extend_from_slice(&self.0[..]);
        push_lp(&mut material, purpose.as_bytes());
        push_lp(&mut material, object_id);
        push_lp(&mut material, generation);
        let suite = self.1;
        let raw = suite.derive_key(CONTEXT, &material);
        let mut aad_prefix = Vec::with_capacity(48 + object_id.len());
        aad_prefix.extend_from_slice(b"pdx/v1 at-rest\0");
        push_lp(&mut aad_prefix, purpose.as_bytes());
        push_lp(&mut aad_prefix, object_id);
        Ok(ObjectKey {
            key: AeadKey::new(suite, &raw[..key_len(suite)])?,
            aad_prefix,
            label: format!("{purpose} {}", String::from_utf8_lossy(object_id)),
        })
    }
}

/// The key of one stored object; block `i` is sealed with nonce `(i, 0)`.
#[derive(Debug)]
pub struct ObjectKey {
    key: AeadKey,
    aad_prefix: Vec<u8>,
    label: String,
}

impl ObjectKey {
    fn aad(&self, block: u64) -> Vec<u8> {
        let mut aad = self.aad_prefix.clone();
        aad.extend_from_slice(&block.to_be_bytes());
        aad
    }

    /// Seals block number `block`. Each block number must be sealed at most once.
    pub fn seal_block(&self, block: u64, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.key
            .seal(counter_nonce(block, 0), &self.aad(block), plaintext)
    }

    /// Opens block number `block`.
    pub fn open_block(&self, block: u64, sealed: &[u8]) -> Result<Vec<u8>> {
        self.key
            .open(counter_nonce(block, 0), &self.aad(block), sealed, || {
                format!("{} block {block}", self.label)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_open_only_in_place_and_under_their_generation() -> Result<()> {
        for suite in Suite::ALL {
            blocks_open_only_in_place_and_under_their_generation_in(suite)?;
        }
        Ok(())
    }

    #[test]
    fn the_suites_derive_different_keys_from_one_master() -> Result<()> {
        let sealed = StorageMaster::from_bytes(Suite::Gm, [5u8; 32])
            .object_key("dataset", b"ds1", b"g")?
            .seal_block(0, b"row")?;
        assert!(
            StorageMaster::from_bytes(Suite::Intl, [5u8; 32])
                .object_key("dataset", b"ds1", b"g")?
                .open_block(0, &sealed)
                .is_err()
        );
        Ok(())
    }

    fn blocks_open_only_in_place_and_under_their_generation_in(suite: Suite) -> Result<()> {
        let master = StorageMaster::from_bytes(suite, [5u8; 32]);
        let k = master.object_key("dataset", b"ds1", b"gen-a")?;
        let sealed = k.seal_block(3, b"row data")?;
        assert_eq!(k.open_block(3, &sealed)?, b"row data");
        assert!(k.open_block(4, &sealed).is_err(), "moved to another block");
        assert!(
            master
                .object_key("dataset", b"ds1", b"gen-b")?
                .open_block(3, &sealed)
                .is_err()
        );
        assert!(
            master
                .object_key("dataset", b"ds2", b"gen-a")?
                .open_block(3, &sealed)
                .is_err()
        );
        assert!(
            StorageMaster::from_bytes(suite, [6u8; 32])
                .object_key("dataset", b"ds1", b"gen-a")?
                .open_block(3, &sealed)
                .is_err()
        );
        Ok(())
    }
}
