//! The node store: one RocksDB with a column family per kind of record (the
//! audit log's families included), values in CBOR. Data values (dataset rows,
//! release chunks) are sealed at rest by their owners before they get here.
//! Every family and its key layout is defined here, and only here; the
//! service owning a family is named in `docs/design.md`, which gives the bytes.

use crate::error::{NodeError, Result};
use pdx_crypto::wire::{from_cbor, to_cbor};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;

pub mod space;

/// Dataset metadata, by dataset id ([`dataset_key`]).
pub const CF_DATASETS: &str = "datasets";
/// Sealed row blocks ([`rows_prefix`], [`block_key`]).
pub const CF_ROWS: &str = "rows";
/// Grants, by grant id ([`grant_key`]).
pub const CF_GRANTS: &str = "grants";
/// Peers, by department ([`peer_key`]).
pub const CF_PEERS: &str = "peers";
/// Verified key documents ([`keydir_key`]).
pub const CF_KEYDIR: &str = "keydir";
/// Releases this node produced, by release id.
pub const CF_OUT_RELEASES: &str = "out.releases";
/// Their sealed chunks ([`chunk_key`]).
pub const CF_OUT_CHUNKS: &str = "out.chunks";
/// Releases received, by release id: everything but the manifest and the
/// progress (small, so listings and lookups decode no manifest).
pub const CF_IN_RELEASES: &str = "in.releases";
/// The signed manifest of each received release, by release id.
pub const CF_IN_MANIFESTS: &str = "in.manifests";
/// Chunks of each received release durably stored (u32 BE), by release id:
/// written with each chunk in one batch.
pub const CF_IN_PROGRESS: &str = "in.progress";
/// Their sealed chunks ([`chunk_key`]).
pub const CF_IN_CHUNKS: &str = "in.chunks";
/// Homomorphic-aggregate queries, contributions and aggregates ([`he_key`]).
pub const CF_HE: &str = "he";
/// Settlement confirmations issued and received ([`issued_confirmation_key`],
/// [`confirmation_key`]).
pub const CF_DOCS: &str = "docs";
/// Service definitions and backend bindings ([`service_key`]).
pub const CF_SERVICES: &str = "services";
/// Online calls: signed messages (sealed at rest), the time index and the
/// idempotency outcomes ([`call_message_key`], [`call_index_key`],
/// [`idempotency_key`]).
pub const CF_CALLS: &str = "calls";

/// The store format this binary writes (docs/design.md "Store format").
/// 1: the first releases, which recorded no version; 2: the version is recorded.
pub const STORE_FORMAT: u32 = 2;
/// Key of the store format version in the `default` family: u32 BE, raw.
pub const STORE_FORMAT_KEY: &[u8] = b"pdx.store-format";
/// The `default` column family, which holds only the format version.
pub const CF_DEFAULT: &str = "default";

/// What migrating from `from` to [`STORE_FORMAT`] changes, for the audit entry.
pub fn migration_summary(from: u32) -> &'static str {
    match from {
        // Format 2 only records the version: every family and value of
        // format 1 is read unchanged.
        1 => "the format version is recorded; no record is rewritten",
        _ => "no record is rewritten",
    }
}

const NODE_FAMILIES: &[&str] = &[
    CF_DATASETS,
    CF_ROWS,
    CF_GRANTS,
    CF_PEERS,
    CF_KEYDIR,
    CF_OUT_RELEASES,
    CF_OUT_CHUNKS,
    CF_IN_RELEASES,
    CF_IN_MANIFESTS,
    CF_IN_PROGRESS,
    CF_IN_CHUNKS,
    CF_HE,
    CF_DOCS,
    CF_SERVICES,
    CF_CALLS,
];

/// Every column family of the store: the node's, the audit log's and `default`.
pub fn all_families() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = vec![CF_DEFAULT];
    v.extend_from_slice(NODE_FAMILIES);
    v.extend(pdx_audit::store::FAMILIES.iter().copied());
    v
}

/// `services`: the service id.
pub fn service_key(id: &str) -> &[u8] {
    id.as_bytes()
}

/// `calls`: prefix of the time index.
pub const CALL_INDEX_PREFIX: &[u8] = b"t";
/// `calls`: prefix of the stored messages.
pub const CALL_MESSAGE_PREFIX: &[u8] = b"m";
/// `calls`: prefix of the idempotency outcomes.
pub const IDEMPOTENCY_PREFIX: &[u8] = b"i";

/// `calls`: `t || time (u64 BE, ms) || call id(16) || role(1)`: one summary per
/// call and role, in time order.
pub fn call_index_key(time_ms: u64, call_id: &[u8], role: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(26);
    k.extend_from_slice(CALL_INDEX_PREFIX);
    k.extend_from_slice(&time_ms.to_be_bytes());
    k.extend_from_slice(call_id);
    k.push(role);
    k
}

/// `calls`: `m || call id(16) || role(1) || time (u64 BE)`: the signed
/// messages of one call as this node saw them.
pub fn call_message_key(call_id: &[u8], role: u8, time_ms: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(26);
    k.extend_from_slice(CALL_MESSAGE_PREFIX);
    k.extend_from_slice(call_id);
    k.push(role);
    k.extend_from_slice(&time_ms.to_be_bytes());
    k
}

/// `calls`: `i || consumer \0 service \0 idempotency key`.
pub fn idempotency_key(consumer: &str, service: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + consumer.len() + service.len() + key.len());
    k.extend_from_slice(IDEMPOTENCY_PREFIX);
    k.extend_from_slice(consumer.as_bytes());
    k.push(0);
    k.extend_from_slice(service.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

// ---- key layouts (docs/design.md) ----

/// `datasets`: the dataset id.
pub fn dataset_key(id: &str) -> &[u8] {
    id.as_bytes()
}

/// `rows`: `dataset \0 generation(16)`, the prefix of one generation's blocks.
pub fn rows_prefix(id: &str, generation: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1 + generation.len());
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k.extend_from_slice(generation);
    k
}

/// `rows`: `prefix || block (u64 BE)`.
pub fn block_key(prefix: &[u8], block: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&block.to_be_bytes());
    k
}

/// The end of a `rows` generation prefix (exclusive), for range deletes.
pub fn rows_prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&[0xff; 9]);
    k
}

/// `grants`: the grant id.
pub fn grant_key(id: &str) -> &[u8] {
    id.as_bytes()
}

/// `peers`: the department code.
pub fn peer_key(dept: &str) -> &[u8] {
    dept.as_bytes()
}

/// `keydir`: `dept \0` (all documents of a department).
pub fn keydir_prefix(dept: &str) -> Vec<u8> {
    let mut k = dept.as_bytes().to_vec();
    k.push(0);
    k
}

/// `keydir`: `dept \0 key id(8)`.
pub fn keydir_key(dept: &str, id: &pdx_crypto::KeyId) -> Vec<u8> {
    let mut k = keydir_prefix(dept);
    k.extend_from_slice(&id.0);
    k
}

/// `out.chunks` / `in.chunks`: `release id(16) || chunk (u32 BE)`.
pub fn chunk_key(release: &[u8], index: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(release.len() + 4);
    k.extend_from_slice(release);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The end of a release's chunk keys (exclusive), for range deletes.
pub fn chunk_key_end(release: &[u8]) -> Vec<u8> {
    let mut k = release.to_vec();
    k.extend_from_slice(&[0xff; 5]);
    k
}

/// What a `he` key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeRecord {
    /// The signed query (`q`).
    Query,
    /// A contribution, one per contributor (`c`).
    Contribution,
    /// The aggregate (`a`).
    Aggregate,
    /// The aggregate that was decrypted (`d`): one decryption per query.
    Decrypted,
    /// A committee query's signed key proposal (`p`).
    Proposal,
    /// A committee member's signed key share, one per member (`k`).
    KeyShare,
    /// A committee member's signed partial decryption, one per member (`r`).
    Partial,
}

impl HeRecord {
    fn tag(self) -> u8 {
        match self {
            HeRecord::Query => b'q',
            HeRecord::Contribution => b'c',
            HeRecord::Aggregate => b'a',
            HeRecord::Decrypted => b'd',
            HeRecord::Proposal => b'p',
            HeRecord::KeyShare => b'k',
            HeRecord::Partial => b'r',
        }
    }
}

/// `he`: `tag \0 query id [\0 dept]`.
pub fn he_key(record: HeRecord, query_id: &str, dept: Option<&str>) -> Vec<u8> {
    let mut k = vec![record.tag(), 0];
    k.extend_from_slice(query_id.as_bytes());
    if let Some(d) = dept {
        k.push(0);
        k.extend_from_slice(d.as_bytes());
    }
    k
}

/// `he`: every record of one kind (`tag \0`), or of one kind and query
/// (`tag \0 query id \0`).
pub fn he_prefix(record: HeRecord, query_id: Option<&str>) -> Vec<u8> {
    let mut k = vec![record.tag(), 0];
    if let Some(q) = query_id {
        k.extend_from_slice(q.as_bytes());
        k.push(0);
    }
    k
}

/// `docs`: `issued \0 release` (a confirmation this node signed).
pub fn issued_confirmation_key(release: &str) -> Vec<u8> {
    format!("issued\0{release}").into_bytes()
}

/// `docs`: `outbox \0 kind \0 subject` (a document this node signed for a
/// peer and has not delivered yet).
pub fn outbox_key(kind: &str, subject: &str) -> Vec<u8> {
    format!("outbox\0{kind}\0{subject}").into_bytes()
}

/// `docs`: every undelivered document.
pub const OUTBOX_PREFIX: &[u8] = b"outbox\0";

/// `docs`: `delivered \0 kind \0 subject` (its acknowledged delivery).
pub fn delivered_key(kind: &str, subject: &str) -> Vec<u8> {
    format!("delivered\0{kind}\0{subject}").into_bytes()
}

/// `docs`: `confirmation \0 release \0 confirmer` (one received).
pub fn confirmation_key(release: &str, confirmer: &str) -> Vec<u8> {
    format!("confirmation\0{release}\0{confirmer}").into_bytes()
}

/// `docs`: `confirmation-batch \0 digest_hex` (a batch of confirmations,
/// signed or received by this node).
pub fn confirmation_batch_key(digest: &pdx_crypto::Digest) -> Vec<u8> {
    format!("confirmation-batch\0{}", digest.to_hex()).into_bytes()
}

/// `docs`: every received confirmation.
pub const CONFIRMATION_PREFIX: &[u8] = b"confirmation\0";

/// The store.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    format: u32,
    space: Arc<space::DiskGuard>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`. Fails with a clear message
    /// if another process holds it, and refuses a store of a newer format than
    /// this binary's [`STORE_FORMAT`]. An older store opens as it is:
    /// [`Store::migration_due`] says so, and the node migrates it with an
    /// audit entry ([`crate::node::Node::open`]).
    pub fn open(path: &Path) -> Result<Store> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_write_buffer_size(64 << 20);
        let fresh = !path.join("CURRENT").exists();
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
        // A newer format may add families: open them too, so that the
        // version can be read and named instead of RocksDB's refusal.
        if !fresh {
            let existing = DB::list_cf(&opts, path).map_err(NodeError::Store)?;
            for name in existing {
                if name != CF_DEFAULT && !cfs.iter().any(|d| d.name() == name) {
                    cfs.push(ColumnFamilyDescriptor::new(name, Options::default()));
                }
            }
        }
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("lock") || msg.contains("LOCK") {
                NodeError::StoreInUse {
                    path: path.display().to_string(),
                    message: msg,
                }
            } else {
                NodeError::Store(e)
            }
        })?;
        let format = if fresh {
            let mut o = WriteOptions::default();
            o.set_sync(true);
            db.put_opt(STORE_FORMAT_KEY, STORE_FORMAT.to_be_bytes(), &o)?;
            STORE_FORMAT
        } else {
            match db.get(STORE_FORMAT_KEY)? {
                None => 1,
                Some(v) => {
                    let bytes: [u8; 4] = v.as_slice().try_into().map_err(|_| {
                        NodeError::corrupt(
                            format!("{}: {}", path.display(), show_key(STORE_FORMAT_KEY)),
                            format!("{} bytes, expected a u32", v.len()),
                        )
                    })?;
                    u32::from_be_bytes(bytes)
                }
            }
        };
        if format > STORE_FORMAT {
            return Err(NodeError::StoreFormatNewer {
                path: path.display().to_string(),
                found: format,
                supported: STORE_FORMAT,
            });
        }
        Ok(Store {
            db: Arc::new(db),
            format,
            space: Arc::new(space::DiskGuard::new(path)),
        })
    }

    /// The free-space guard of the store's filesystem.
    pub fn space(&self) -> &Arc<space::DiskGuard> {
        &self.space
    }

    /// The format of the store as opened: [`STORE_FORMAT`] unless an older
    /// store awaits migration.
    pub fn format(&self) -> u32 {
        self.format
    }

    /// The format to migrate from, if this store is older than this binary.
    pub fn migration_due(&self) -> Option<u32> {
        (self.format < STORE_FORMAT).then_some(self.format)
    }

    /// The write that records [`STORE_FORMAT`], applied with the audit
    /// entry of the migration.
    pub fn migration_op(&self) -> pdx_audit::store::StoreOp {
        pdx_audit::store::StoreOp::Put {
            cf: CF_DEFAULT,
            key: STORE_FORMAT_KEY.to_vec(),
            value: STORE_FORMAT.to_be_bytes().to_vec(),
        }
    }

    /// Records that the migration committed.
    pub fn migrated(&mut self) {
        self.format = STORE_FORMAT;
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

    /// A put of an encoded value, to be applied with an audit entry
    /// ([`crate::node::Node::log_with`]).
    pub fn put_op<T: Serialize>(
        &self,
        cf: &'static str,
        key: &[u8],
        value: &T,
    ) -> Result<pdx_audit::store::StoreOp> {
        Ok(pdx_audit::store::StoreOp::Put {
            cf,
            key: key.to_vec(),
            value: to_cbor(value)?,
        })
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
