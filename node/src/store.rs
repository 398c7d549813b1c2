//! The node store: one RocksDB with a column family per kind of record (the
//! audit log's families included), values in CBOR. Data values (dataset rows,
//! release chunks) are sealed at rest by their owners before they get here.
//! Byte layout of every family: `docs/design.md`.

use crate::error::{NodeError, Result};
use pdx_crypto::wire::{from_cbor, to_cbor};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;

/// Dataset metadata, by dataset id.
pub const CF_DATASETS: &str = "datasets";
/// Sealed row blocks: `dataset \0 generation(16) block(u64 BE)`.
pub const CF_ROWS: &str = "rows";
/// Grants, by grant id.
pub const CF_GRANTS: &str = "grants";
/// Peers, by department.
pub const CF_PEERS: &str = "peers";
/// Verified key documents: `dept \0 key id(8)`.
pub const CF_KEYDIR: &str = "keydir";
/// Releases this node produced, by release id.
pub const CF_OUT_RELEASES: &str = "out.releases";
/// Their sealed chunks: `release id(16) chunk(u32 BE)`.
pub const CF_OUT_CHUNKS: &str = "out.chunks";
/// Releases received, by release id.
pub const CF_IN_RELEASES: &str = "in.releases";
/// Their sealed chunks: `release id(16) chunk(u32 BE)`.
pub const CF_IN_CHUNKS: &str = "in.chunks";
/// Homomorphic-aggregate queries, contributions and aggregates.
pub const CF_HE: &str = "he";
/// Settlement confirmations and other signed documents received.
pub const CF_DOCS: &str = "docs";

const NODE_FAMILIES: &[&str] = &[
    CF_DATASETS,
    CF_ROWS,
    CF_GRANTS,
    CF_PEERS,
    CF_KEYDIR,
    CF_OUT_RELEASES,
    CF_OUT_CHUNKS,
    CF_IN_RELEASES,
    CF_IN_CHUNKS,
    CF_HE,
    CF_DOCS,
];

/// The store.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`. Fails with a clear message
    /// if another process holds it.
    pub fn open(path: &Path) -> Result<Store> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_write_buffer_size(64 << 20);
        let mut cfs: Vec<ColumnFamilyDescriptor> = NODE_FAMILIES
            .iter()
            .map(|name| {
                let mut o = Options::default();
                // Sealed data does not compress; plaintext metadata is small.
                o.set_compression_type(rocksdb::DBCompressionType::None);
                ColumnFamilyDescriptor::new(*name, o)
            })
            .collect();
        cfs.extend(pdx_audit::store::column_families());
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("lock") || msg.contains("LOCK") {
                NodeError::Invalid(format!(
                    "{}: the store is in use by another pdx process (is `pdx serve` running without its admin socket?): {msg}",
                    path.display()
                ))
            } else {
                NodeError::Store(e)
            }
        })?;
        Ok(Store { db: Arc::new(db) })
    }

    /// The database (shared with the audit log).
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// A column family handle.
    pub fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| NodeError::corrupt("column families", format!("{name} missing")))
    }

    /// Reads and decodes a value.
    pub fn get<T: DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>> {
        match self.db.get_pinned_cf(self.cf(cf)?, key)? {
            None => Ok(None),
            Some(v) => Ok(Some(from_cbor(&v, "stored record").map_err(|e| {
                NodeError::corrupt(format!("{cf}/{}", show_key(key)), e)
            })?)),
        }
    }

    /// Raw bytes of a value.
    pub fn get_raw(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    /// Encodes and writes a value durably.
    pub fn put<T: Serialize>(&self, cf: &str, key: &[u8], value: &T) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(cf)?, key, to_cbor(value)?);
        self.write(b)
    }

    /// Adds an encoded value to a batch.
    pub fn batch_put<T: Serialize>(
        &self,
        b: &mut WriteBatch,
        cf: &str,
        key: &[u8],
        value: &T,
    ) -> Result<()> {
        b.put_cf(self.cf(cf)?, key, to_cbor(value)?);
        Ok(())
    }

    /// Writes a batch with fsync.
    pub fn write(&self, b: WriteBatch) -> Result<()> {
        let mut o = WriteOptions::default();
        o.set_sync(true);
        Ok(self.db.write_opt(b, &o)?)
    }

    /// Writes a batch without fsync (staging data made durable by a later synced write).
    pub fn write_nosync(&self, b: WriteBatch) -> Result<()> {
        Ok(self.db.write(b)?)
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(&self, cf: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(cf)?,
            IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let value = from_cbor(&v, "stored record")
                .map_err(|e| NodeError::corrupt(format!("{cf}/{}", show_key(&k)), e))?;
            out.push((k.to_vec(), value));
        }
        Ok(out)
    }

    /// Calls `f` with every raw `(key, value)` under `prefix` until it returns false.
    pub fn scan_raw(
        &self,
        cf: &str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let iter = self.db.iterator_cf(
            self.cf(cf)?,
            IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) || !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// Deletes every key in `[from, to)` of a family.
    pub fn delete_range(&self, cf: &str, from: &[u8], to: &[u8]) -> Result<()> {
        let mut b = WriteBatch::default();
        b.delete_range_cf(self.cf(cf)?, from, to);
        self.write(b)
    }
}

fn show_key(k: &[u8]) -> String {
    if k.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(k).into_owned()
    } else {
        hex::encode(k)
    }
}

/// `release id || index` key of a chunk.
pub fn chunk_key(release: &[u8], index: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(release.len() + 4);
    k.extend_from_slice(release);
    k.extend_from_slice(&index.to_be_bytes());
    k
}
