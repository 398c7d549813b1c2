//! The durable audit log in RocksDB.
//!
//! Column families: `audit.entries` (seq, u64 BE -> canonical entry bytes),
//! `audit.tree` (level u8 || index u64 BE -> 32-byte perfect-subtree hash) and
//! `audit.meta` (head, checkpoints, cosignatures, witnessed peer checkpoints,
//! evidence, key endorsements). An append writes the entry, every tree node it
//! completes, the new head (and a checkpoint when one is due) in ONE WriteBatch.
//!
//! Durability: appends are group-committed. Concurrent callers queue; one
//! becomes leader, writes everyone's entries in one batch with `sync = true`
//! (one WAL fsync per group) and only then returns to any of them. An append is
//! acknowledged only after its batch is on disk; a crash at any moment leaves a
//! prefix of the log that contains every acknowledged entry.

use crate::checkpoint::{
    Checkpoint, Cosignature, ForkEvidence, SignedCheckpoint, SignedCosignature, SignedEndorsement,
    WitnessedCheckpoint,
};
use crate::entry::{Entry, EntryDraft, EventKind, KeyRotation, LogId, rotation_message};
use crate::error::AuditError;
use crate::merkle::{self, Frontier, Hash, NodeSource, ProofError};
use pdx_crypto::wire::{from_cbor, to_cbor};
use pdx_crypto::{SignatureDomain, SigningKey, VerifyingKey};
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Column family of entries.
pub const CF_ENTRIES: &str = "audit.entries";
/// Column family of tree nodes.
pub const CF_TREE: &str = "audit.tree";
/// Column family of metadata.
pub const CF_META: &str = "audit.meta";

/// The audit log's column families.
pub const FAMILIES: &[&str] = &[CF_ENTRIES, CF_TREE, CF_META];

/// Descriptors the node must open its RocksDB with.
pub fn column_families() -> Vec<ColumnFamilyDescriptor> {
    let mut entries = Options::default();
    entries.set_compression_type(rocksdb::DBCompressionType::Lz4);
    vec![
        ColumnFamilyDescriptor::new(CF_ENTRIES, entries),
        ColumnFamilyDescriptor::new(CF_TREE, Options::default()),
        ColumnFamilyDescriptor::new(CF_META, Options::default()),
    ]
}

/// When checkpoints are signed automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// Sign a checkpoint once this many entries accumulated since the last one.
    pub checkpoint_every: u64,
    /// ... or once this many milliseconds passed (checked by [`AuditLog::maybe_checkpoint`]).
    pub checkpoint_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every: 1024,
            checkpoint_interval_ms: 10_000,
        }
    }
}

/// Where an appended entry landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number.
    pub seq: u64,
    /// Leaf hash (what the next entry chains to).
    pub leaf_hash: Hash,
    /// Timestamp assigned.
    pub time_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Head {
    log_id: String,
    size: u64,
    #[serde(with = "serde_bytes")]
    last_leaf: Hash,
    last_time_ms: u64,
    frontier: Vec<(u8, serde_bytes::ByteBuf)>,
    last_checkpoint_size: u64,
    last_checkpoint_time_ms: u64,
}

struct WriterState {
    frontier: Frontier,
    last_leaf: Hash,
    last_time_ms: u64,
    key: SigningKey,
    last_checkpoint: Option<Checkpoint>,
}

/// Why a group commit failed, kept for every append of the group.
#[derive(Clone, Debug)]
enum Failed {
    NoSpace(String),
    Writer(String),
}

impl From<Failed> for AuditError {
    fn from(f: Failed) -> Self {
        match f {
            Failed::NoSpace(m) => AuditError::NoSpace(m),
            Failed::Writer(m) => AuditError::Writer(m),
        }
    }
}

/// Refuses a write that would leave less free disk than the node's reserve
/// (`Err`: what to tell the operator). Must not block for long.
pub trait SpaceCheck: Send + Sync {
    /// Whether `bytes` more may be written.
    fn ensure(&self, bytes: u64) -> Result<(), String>;
}

#[derive(Default)]
struct Queue {
    pending: Vec<(u64, Vec<EntryDraft>, Vec<StoreOp>)>,
    results: HashMap<u64, Result<Vec<Appended>, Failed>>,
    next_ticket: u64,
    leader_active: bool,
}

/// The node's audit log.
pub struct AuditLog {
    db: Arc<DB>,
    log_id: LogId,
    log_text: String,
    config: AuditConfig,
    queue: Mutex<Queue>,
    done: Condvar,
    writer: Mutex<WriterState>,
    /// Serialises updates of the held peer checkpoints (several connections
    /// from one peer may be witnessed at once).
    peers: Mutex<()>,
    observer: std::sync::OnceLock<Arc<dyn AuditObserver>>,
    space: std::sync::OnceLock<Arc<dyn SpaceCheck>>,
    /// Why new checkpoints may not be signed (None: they may).
    hold: Mutex<Option<String>>,
}

/// Told of appends and group commits (metrics); must not block.
pub trait AuditObserver: Send + Sync {
    /// A synced batch of `entries` entries committed.
    fn committed(&self, entries: usize);
    /// An append waited `waited` from queueing to its durable commit.
    fn appended(&self, waited: std::time::Duration);
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("log_id", &self.log_id.to_text())
            .finish()
    }
}

/// A write to one of the node's own column families, made durable in the same
/// batch as an audit entry ([`AuditLog::append_atomic`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Put `value` at `key`.
    Put {
        /// Column family.
        cf: &'static str,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Delete `key`.
    Delete {
        /// Column family.
        cf: &'static str,
        /// Key.
        key: Vec<u8>,
    },
    /// Delete every key in `[from, to)`.
    DeleteRange {
        /// Column family.
        cf: &'static str,
        /// First key.
        from: Vec<u8>,
        /// End (exclusive).
        to: Vec<u8>,
    },
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn tree_key(level: u8, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn meta_key(prefix: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    for p in parts {
        k.push(b'/');
        k.extend_from_slice(p);
    }
    k
}

const HEAD: &[u8] = b"head";

fn corrupt(location: impl Into<String>, reason: impl Into<String>) -> AuditError {
    AuditError::Corrupt {
        location: location.into(),
        reason: reason.into(),
    }
}

impl AuditLog {
    /// Opens the log in `db`, creating it (with a genesis entry) if absent.
    /// `audit_key` is the current audit signing key; `genesis` endorses the first
    /// audit key and is stored on creation.
    pub fn open(
        db: Arc<DB>,
        log_id: LogId,
        audit_key: SigningKey,
        genesis: impl FnOnce() -> Result<SignedEndorsement, AuditError>,
        config: AuditConfig,
    ) -> Result<Self, AuditError> {
        let log_text = log_id.to_text();
        log_id
            .suite
            .expect(audit_key.suite(), "the audit key")
            .map_err(AuditError::from)?;
        let meta = db
            .cf_handle(CF_META)
            .ok_or_else(|| corrupt("column families", "audit.meta missing"))?;
        let state = match db.get_cf(&meta, HEAD)? {
            Some(bytes) => {
                let head: Head = from_cbor(&bytes, "audit head")
                    .map_err(|e| corrupt("audit head", e.to_string()))?;
                if head.log_id != log_text {
                    return Err(corrupt(
                        "audit head",
                        format!(
                            "store holds log {} but the node's log is {}",
                            head.log_id, log_text
                        ),
                    ));
                }
                let nodes = head
                    .frontier
                    .iter()
                    .map(|(l, h)| {
                        Ok((
                            *l,
                            <Hash>::try_from(h.as_slice())
                                .map_err(|_| corrupt("audit head", "bad frontier hash"))?,
                        ))
                    })
                    .collect::<Result<Vec<_>, AuditError>>()?;
                let frontier = Frontier::from_parts(head.size, nodes)
                    .ok_or_else(|| corrupt("audit head", "frontier does not match size"))?;
                let last_checkpoint = Self::load_checkpoint_at(&db, head.last_checkpoint_size)?
                    .map(|c| c.peek())
                    .transpose()?;
                WriterState {
                    frontier,
                    last_leaf: head.last_leaf,
                    last_time_ms: head.last_time_ms,
                    key: audit_key,
                    last_checkpoint,
                }
            }
            None => {
                let endorsement = genesis()?;
                let mut batch = WriteBatch::default();
                let meta = db
                    .cf_handle(CF_META)
                    .ok_or_else(|| corrupt("column families", "audit.meta missing"))?;
                batch.put_cf(
                    &meta,
                    meta_key("endorse", &[&0u64.to_be_bytes()]),
                    to_cbor(&endorsement)?,
                );
                db.write(batch)?;
                WriterState {
                    frontier: Frontier::new(),
                    last_leaf: [0; 32],
                    last_time_ms: 0,
                    key: audit_key,
                    last_checkpoint: None,
                }
            }
        };
        let log = AuditLog {
            db,
            log_id,
            log_text,
            config,
            queue: Mutex::new(Queue::default()),
            done: Condvar::new(),
            writer: Mutex::new(state),
            peers: Mutex::new(()),
            observer: std::sync::OnceLock::new(),
            space: std::sync::OnceLock::new(),
            hold: Mutex::new(None),
        };
        if log.size() == 0 {
            let mut d = EntryDraft::new(EventKind::Genesis, &log.log_id.dept, "node");
            d.detail = Some(format!("audit log {} created", log.log_text));
            log.append(d)?;
            log.checkpoint()?;
        }
        Ok(log)
    }

    /// From now on no new checkpoint is signed (entries are still appended):
    /// [`AuditLog::checkpoint`] fails with [`AuditError::Held`] naming `why`
    /// unless the latest checkpoint already covers the log.
    pub fn hold_checkpoints(&self, why: &str) {
        if let Ok(mut h) = self.hold.lock() {
            *h = Some(why.to_string());
        }
    }

    /// Signing checkpoints resumes.
    pub fn release_checkpoints(&self) {
        if let Ok(mut h) = self.hold.lock() {
            *h = None;
        }
    }

    /// Why checkpoints are held, if they are (a poisoned lock holds them).
    pub fn checkpoints_held(&self) -> Option<String> {
        match self.hold.lock() {
            Ok(h) => h.clone(),
            Err(_) => Some("hold lock poisoned".into()),
        }
    }

    /// Installs the disk-space check every synced write of the log passes
    /// first (once; later calls are ignored).
    pub fn set_space_check(&self, check: Arc<dyn SpaceCheck>) {
        let _ = self.space.set(check);
    }

    fn ensure_space(&self, bytes: u64) -> Result<(), AuditError> {
        match self.space.get() {
            Some(c) => c.ensure(bytes).map_err(AuditError::NoSpace),
            None => Ok(()),
        }
    }

    /// Installs the observer told of appends and commits (once; later calls
    /// are ignored).
    pub fn set_observer(&self, observer: Arc<dyn AuditObserver>) {
        let _ = self.observer.set(observer);
    }

    /// This log's id.
    pub fn log_id(&self) -> &LogId {
        &self.log_id
    }

    /// The shared database.
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, WriterState>, AuditError> {
        self.writer
            .lock()
            .map_err(|_| AuditError::Writer("writer lock poisoned".into()))
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.writer.lock().map(|w| w.frontier.size()).unwrap_or(0)
    }

    /// The current audit verifying key.
    pub fn current_key(&self) -> Result<VerifyingKey, AuditError> {
        Ok(self.lock_writer()?.key.verifying_key())
    }

    /// Appends one entry durably (group-committed with concurrent callers).
    pub fn append(&self, draft: EntryDraft) -> Result<Appended, AuditError> {
        let mut out = self.append_many(vec![draft])?;
        out.pop()
            .ok_or_else(|| AuditError::Writer("empty result".into()))
    }

    /// Appends one entry and makes `ops` (the state change the entry records)
    /// durable in the same write batch: both happen, or neither.
    pub fn append_atomic(
        &self,
        draft: EntryDraft,
        ops: Vec<StoreOp>,
    ) -> Result<Appended, AuditError> {
        let mut out = self.append_queued(vec![draft], ops)?;
        out.pop()
            .ok_or_else(|| AuditError::Writer("empty result".into()))
    }

    /// Appends several entries durably, contiguously, in order.
    pub fn append_many(&self, drafts: Vec<EntryDraft>) -> Result<Vec<Appended>, AuditError> {
        self.append_queued(drafts, Vec::new())
    }

    /// Appends several entries, contiguously and in order, and makes `ops`
    /// durable in the same write batch: all of them, or nothing.
    pub fn append_many_atomic(
        &self,
        drafts: Vec<EntryDraft>,
        ops: Vec<StoreOp>,
    ) -> Result<Vec<Appended>, AuditError> {
        self.append_queued(drafts, ops)
    }

    fn append_queued(
        &self,
        drafts: Vec<EntryDraft>,
        ops: Vec<StoreOp>,
    ) -> Result<Vec<Appended>, AuditError> {
        let queued = std::time::Instant::now();
        let out = self.append_queued_inner(drafts, ops);
        if out.is_ok()
            && let Some(o) = self.observer.get()
        {
            o.appended(queued.elapsed());
        }
        out
    }

    fn append_queued_inner(
        &self,
        drafts: Vec<EntryDraft>,
        ops: Vec<StoreOp>,
    ) -> Result<Vec<Appended>, AuditError> {
        let mut q = self
            .queue
            .lock()
            .map_err(|_| AuditError::Writer("queue lock poisoned".into()))?;
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.pending.push((ticket, drafts, ops));
        loop {
            if let Some(result) = q.results.remove(&ticket) {
                return result.map_err(AuditError::from);
            }
            if !q.leader_active {
                q.leader_active = true;
                let batch = std::mem::take(&mut q.pending);
                drop(q);
                let results = self.commit_group(batch);
                q = self
                    .queue
                    .lock()
                    .map_err(|_| AuditError::Writer("queue lock poisoned".into()))?;
                q.results.extend(results);
                q.leader_active = false;
                self.done.notify_all();
                continue;
            }
            q = self
                .done
                .wait(q)
                .map_err(|_| AuditError::Writer("queue lock poisoned".into()))?;
        }
    }

    fn commit_group(
        &self,
        group: Vec<(u64, Vec<EntryDraft>, Vec<StoreOp>)>,
    ) -> Vec<(u64, Result<Vec<Appended>, Failed>)> {
        let tickets: Vec<u64> = group.iter().map(|(t, _, _)| *t).collect();
        let sizes: Vec<usize> = group.iter().map(|(_, d, _)| d.len()).collect();
        let mut drafts = Vec::new();
        let mut ops = Vec::new();
        for (_, d, o) in group {
            drafts.extend(d);
            ops.extend(o);
        }
        let entries = drafts.len();
        let outcome = self
            .lock_writer()
            .and_then(|mut w| self.commit_locked(&mut w, drafts, &ops, None));
        match outcome {
            Ok(appended) => {
                if let Some(o) = self.observer.get() {
                    o.committed(entries);
                }
                let mut it = appended.into_iter();
                tickets
                    .into_iter()
                    .zip(sizes)
                    .map(|(t, n)| (t, Ok(it.by_ref().take(n).collect())))
                    .collect()
            }
            Err(e) => {
                let f = match e {
                    AuditError::NoSpace(m) => Failed::NoSpace(m),
                    other => Failed::Writer(other.to_string()),
                };
                tickets.into_iter().map(|t| (t, Err(f.clone()))).collect()
            }
        }
    }

    /// Places and writes `drafts` in one synced batch; on failure the in-memory
    /// state is restored, so nothing unacknowledged is ever chained to.
    fn commit_locked(
        &self,
        w: &mut WriterState,
        drafts: Vec<EntryDraft>,
        ops: &[StoreOp],
        rotate_to: Option<(&SigningKey, &SignedEndorsement)>,
    ) -> Result<Vec<Appended>, AuditError> {
        // Entries are a few hundred bytes, plus tree nodes and the WAL copy.
        let op_bytes: usize = ops
            .iter()
            .map(|o| match o {
                StoreOp::Put { key, value, .. } => key.len() + value.len(),
                StoreOp::Delete { key, .. } => key.len(),
                StoreOp::DeleteRange { from, to, .. } => from.len() + to.len(),
            })
            .sum();
        self.ensure_space(((drafts.len() * 2048 + op_bytes) as u64).saturating_mul(2))?;
        let saved = (
            w.frontier.clone(),
            w.last_leaf,
            w.last_time_ms,
            w.last_checkpoint.clone(),
        );
        let result = self.write_batch(w, drafts, ops, rotate_to);
        if result.is_err() {
            (w.frontier, w.last_leaf, w.last_time_ms, w.last_checkpoint) = saved;
        }
        result
    }

    fn write_batch(
        &self,
        w: &mut WriterState,
        drafts: Vec<EntryDraft>,
        ops: &[StoreOp],
        rotate_to: Option<(&SigningKey, &SignedEndorsement)>,
    ) -> Result<Vec<Appended>, AuditError> {
        let cf_entries = self.cf(CF_ENTRIES)?;
        let cf_tree = self.cf(CF_TREE)?;
        let cf_meta = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                StoreOp::Put { cf, key, value } => batch.put_cf(self.cf(cf)?, key, value),
                StoreOp::Delete { cf, key } => batch.delete_cf(self.cf(cf)?, key),
                StoreOp::DeleteRange { cf, from, to } => {
                    batch.delete_range_cf(self.cf(cf)?, from, to)
                }
            }
        }
        let mut out = Vec::with_capacity(drafts.len());
        let now = now_ms();
        for mut draft in drafts {
            let seq = w.frontier.size();
            let time_ms = now.max(w.last_time_ms);
            if let Some((new_key, endorsement)) = rotate_to {
                batch.put_cf(
                    cf_meta,
                    meta_key("endorse", &[&seq.to_be_bytes()]),
                    to_cbor(endorsement)?,
                );
                let new_public = new_key.verifying_key().as_bytes().to_vec();
                let sig = w.key.sign(
                    SignatureDomain::AuditKeyRotation,
                    &rotation_message(&self.log_id, seq, &new_public),
                )?;
                draft.key_rotation = Some(KeyRotation {
                    new_key: new_public,
                    signature: sig.0,
                });
            }
            let entry = Entry {
                log_id: self.log_id.clone(),
                seq,
                time_ms,
                prev_hash: w.last_leaf,
                draft,
            };
            let bytes = entry.encode_with_log_text(&self.log_text);
            let leaf = merkle::leaf_in(self.log_id.suite, &bytes);
            batch.put_cf(cf_entries, seq.to_be_bytes(), &bytes);
            // Leaf hashes (level 0) are not stored: they are the hash of the
            // entry, recomputed when a proof needs one (one key less per entry).
            w.frontier
                .push_in(self.log_id.suite, leaf, |level, index, hash| {
                    if level > 0 {
                        batch.put_cf(cf_tree, tree_key(level, index), hash);
                    }
                });
            w.last_leaf = leaf;
            w.last_time_ms = time_ms;
            out.push(Appended {
                seq,
                leaf_hash: leaf,
                time_ms,
            });
        }
        let due = match &w.last_checkpoint {
            None => true,
            Some(c) => w.frontier.size() - c.size >= self.config.checkpoint_every,
        };
        if due && rotate_to.is_none() && self.checkpoints_held().is_none() {
            self.put_checkpoint(w, &mut batch, now)?;
        }
        self.put_head(w, &mut batch)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(out)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, AuditError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| corrupt("column families", format!("{name} missing")))
    }

    fn put_head(&self, w: &WriterState, batch: &mut WriteBatch) -> Result<(), AuditError> {
        let (ckpt_size, ckpt_time) = w
            .last_checkpoint
            .as_ref()
            .map(|c| (c.size, c.time_ms))
            .unwrap_or((0, 0));
        let head = Head {
            log_id: self.log_text.clone(),
            size: w.frontier.size(),
            last_leaf: w.last_leaf,
            last_time_ms: w.last_time_ms,
            frontier: w
                .frontier
                .nodes()
                .iter()
                .map(|(l, h)| (*l, serde_bytes::ByteBuf::from(h.to_vec())))
                .collect(),
            last_checkpoint_size: ckpt_size,
            last_checkpoint_time_ms: ckpt_time,
        };
        batch.put_cf(self.cf(CF_META)?, HEAD, to_cbor(&head)?);
        Ok(())
    }

    /// Signs a checkpoint of the current tree into `batch`. Refuses anything that
    /// would contradict the last signed checkpoint (sizes only grow; same size
    /// means same root).
    fn put_checkpoint(
        &self,
        w: &mut WriterState,
        batch: &mut WriteBatch,
        now: u64,
    ) -> Result<SignedCheckpoint, AuditError> {
        let size = w.frontier.size();
        let root = w.frontier.root_in(self.log_id.suite);
        if let Some(last) = &w.last_checkpoint
            && (size < last.size || (size == last.size && root != last.root))
        {
            return Err(AuditError::InconsistentCheckpoint {
                size,
                reason: format!(
                    "last signed checkpoint has size {} and root {}",
                    last.size,
                    hex::encode(last.root)
                ),
            });
        }
        let cp = Checkpoint {
            origin: self.log_text.clone(),
            size,
            root,
            time_ms: now.max(w.last_time_ms),
        };
        let signed = SignedCheckpoint::sign(&cp, &w.key)?;
        batch.put_cf(
            self.cf(CF_META)?,
            meta_key("ckpt", &[&size.to_be_bytes()]),
            to_cbor(&signed)?,
        );
        w.last_checkpoint = Some(cp);
        Ok(signed)
    }

    /// After a crash during [`AuditLog::rotate_key`]: the rotation entry and the
    /// new key's endorsement are in the log, but the node opened with the old
    /// key. Switches to `key` if (and only if) it is the latest endorsed key.
    pub fn adopt_rotated_key(&self, key: SigningKey) -> Result<(), AuditError> {
        let latest: crate::checkpoint::KeyEndorsement = self
            .current_endorsement()?
            .signed
            .dangerous_decode_unverified("endorsement")?;
        if latest.audit_key != key.verifying_key() {
            return Err(AuditError::Writer(format!(
                "key {} is not the latest endorsed audit key {}",
                key.key_id(),
                latest.audit_key.key_id()
            )));
        }
        self.lock_writer()?.key = key;
        Ok(())
    }

    /// Signs (and stores) a checkpoint of the current tree now, or returns the
    /// existing one if nothing was appended since.
    pub fn checkpoint(&self) -> Result<SignedCheckpoint, AuditError> {
        let mut w = self.lock_writer()?;
        if let Some(last) = &w.last_checkpoint
            && last.size == w.frontier.size()
        {
            let size = last.size;
            drop(w);
            return self.checkpoint_at(size)?.ok_or_else(|| {
                corrupt(
                    format!("checkpoint {size}"),
                    "head names it but it is missing",
                )
            });
        }
        if let Some(why) = self.checkpoints_held() {
            return Err(AuditError::Held(why));
        }
        self.ensure_space(8192)?;
        let saved = w.last_checkpoint.clone();
        let mut batch = WriteBatch::default();
        let signed = match self.put_checkpoint(&mut w, &mut batch, now_ms()) {
            Ok(s) => s,
            Err(e) => {
                w.last_checkpoint = saved;
                return Err(e);
            }
        };
        self.put_head(&w, &mut batch)?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        if let Err(e) = self.db.write_opt(batch, &opts) {
            w.last_checkpoint = saved;
            return Err(e.into());
        }
        Ok(signed)
    }

    /// Signs a checkpoint if entries were appended and the interval has passed.
    pub fn maybe_checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        if self.checkpoints_held().is_some() {
            return Ok(None);
        }
        let due = {
            let w = self.lock_writer()?;
            match &w.last_checkpoint {
                None => true,
                Some(c) => {
                    c.size < w.frontier.size()
                        && now_ms().saturating_sub(c.time_ms) >= self.config.checkpoint_interval_ms
                }
            }
        };
        if due {
            self.checkpoint().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Rotates the audit key: checkpoints with the old key, appends a key-rotate
    /// entry signed by the old key, switches keys, stores the new key's
    /// endorsement and checkpoints with the new key.
    pub fn rotate_key(
        &self,
        new_key: SigningKey,
        operator: &str,
        endorse: impl FnOnce(u64) -> Result<SignedEndorsement, AuditError>,
    ) -> Result<Appended, AuditError> {
        self.checkpoint()?;
        let mut w = self.lock_writer()?;
        let seq = w.frontier.size();
        let mut d = EntryDraft::new(EventKind::KeyRotate, &self.log_id.dept, operator);
        d.detail = Some(format!(
            "audit key {} replaced by {}",
            w.key.key_id(),
            new_key.key_id()
        ));
        let endorsement = endorse(seq)?;
        let appended = self.commit_locked(&mut w, vec![d], &[], Some((&new_key, &endorsement)))?;
        w.key = new_key;
        drop(w);
        self.checkpoint()?;
        appended
            .into_iter()
            .next()
            .ok_or_else(|| AuditError::Writer("rotation entry missing".into()))
    }

    /// Re-endorses the current audit key (the node's certificate was
    /// renewed): `draft` and the endorsement `endorse(from_seq)` makes for
    /// the current key's `from_seq`, in one synced batch. Earlier
    /// endorsements stay: which certificate vouched for the key when.
    pub fn reendorse_key(
        &self,
        draft: EntryDraft,
        endorse: impl FnOnce(u64) -> Result<SignedEndorsement, AuditError>,
    ) -> Result<Appended, AuditError> {
        let mut w = self.lock_writer()?;
        let key = w.key.verifying_key();
        let latest: crate::checkpoint::KeyEndorsement = self
            .current_endorsement()?
            .signed
            .dangerous_decode_unverified("endorsement")?;
        if latest.audit_key != key {
            return Err(AuditError::Writer(format!(
                "the latest endorsement names audit key {}, not the current key {}",
                latest.audit_key.key_id(),
                key.key_id()
            )));
        }
        let endorsement = endorse(latest.from_seq)?;
        let body: crate::checkpoint::KeyEndorsement = endorsement
            .signed
            .dangerous_decode_unverified("endorsement")?;
        if body.audit_key != key
            || body.from_seq != latest.from_seq
            || body.log_id != self.log_id.to_text()
        {
            return Err(AuditError::Writer(
                "a re-endorsement must name this log, its current key and that key's from_seq"
                    .into(),
            ));
        }
        let op = StoreOp::Put {
            cf: CF_META,
            key: meta_key(
                "endorse",
                &[&latest.from_seq.to_be_bytes(), &body.time_ms.to_be_bytes()],
            ),
            value: to_cbor(&endorsement)?,
        };
        self.commit_locked(&mut w, vec![draft], &[op], None)?
            .pop()
            .ok_or_else(|| AuditError::Writer("re-endorsement entry missing".into()))
    }

    fn load_checkpoint_at(db: &DB, size: u64) -> Result<Option<SignedCheckpoint>, AuditError> {
        let Some(meta) = db.cf_handle(CF_META) else {
            return Err(corrupt("column families", "audit.meta missing"));
        };
        match db.get_cf(&meta, meta_key("ckpt", &[&size.to_be_bytes()]))? {
            None => Ok(None),
            Some(b) => {
                Ok(Some(from_cbor(&b, "checkpoint").map_err(|e| {
                    corrupt(format!("checkpoint {size}"), e.to_string())
                })?))
            }
        }
    }

    /// The signed checkpoint of exactly `size`, if one was signed.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>, AuditError> {
        Self::load_checkpoint_at(&self.db, size)
    }

    /// The latest signed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<SignedCheckpoint, AuditError> {
        let size = self
            .lock_writer()?
            .last_checkpoint
            .as_ref()
            .map(|c| c.size)
            .ok_or_else(|| AuditError::NotFound("no checkpoint signed yet".into()))?;
        self.checkpoint_at(size)?
            .ok_or_else(|| corrupt(format!("checkpoint {size}"), "missing"))
    }

    /// Every signed checkpoint, by size.
    pub fn checkpoints(&self) -> Result<Vec<SignedCheckpoint>, AuditError> {
        self.meta_values("ckpt", "checkpoint")
    }

    /// Every endorsement of this log's audit keys, by `from_seq`.
    pub fn endorsements(&self) -> Result<Vec<SignedEndorsement>, AuditError> {
        self.meta_values("endorse", "endorsement")
    }

    /// The endorsement of the current audit key.
    pub fn current_endorsement(&self) -> Result<SignedEndorsement, AuditError> {
        self.endorsements()?
            .pop()
            .ok_or_else(|| corrupt("endorsements", "no audit key endorsement stored"))
    }

    fn meta_values<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        what: &'static str,
    ) -> Result<Vec<T>, AuditError> {
        let cf = self.cf(CF_META)?;
        let mut p = prefix.as_bytes().to_vec();
        p.push(b'/');
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(cf, &p) {
            let (k, v) = item?;
            if !k.starts_with(&p) {
                break;
            }
            out.push(
                from_cbor(&v, what).map_err(|e| {
                    corrupt(String::from_utf8_lossy(&k).into_owned(), e.to_string())
                })?,
            );
        }
        Ok(out)
    }

    /// The canonical bytes of entry `seq`.
    pub fn entry_bytes(&self, seq: u64) -> Result<Vec<u8>, AuditError> {
        self.db
            .get_cf(self.cf(CF_ENTRIES)?, seq.to_be_bytes())?
            .ok_or_else(|| {
                AuditError::NotFound(format!(
                    "no entry with sequence number {seq} (log size {})",
                    self.size()
                ))
            })
    }

    /// Decoded entry `seq`.
    pub fn entry(&self, seq: u64) -> Result<Entry, AuditError> {
        let bytes = self.entry_bytes(seq)?;
        Entry::decode(&bytes).map_err(|e| corrupt(format!("entry {seq}"), e.0))
    }

    /// Calls `f` with the bytes of every entry from `from` (in order) up to `to`
    /// (exclusive); a missing entry is an error.
    pub fn for_each_entry(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let mut expect = from;
        self.for_each_stored_entry(from, to, |seq, bytes| {
            if seq != expect {
                return Err(corrupt(
                    "audit.entries",
                    format!("entry {expect} is missing (next stored is {seq})"),
                ));
            }
            expect += 1;
            f(seq, bytes)
        })?;
        if expect < to {
            return Err(corrupt(
                "audit.entries",
                format!("entries {expect}..{to} are missing"),
            ));
        }
        Ok(())
    }

    /// Like [`AuditLog::for_each_entry`] but without the gap check: every stored
    /// entry with `from <= seq < to`, in key order (for exports of damaged stores).
    pub fn for_each_stored_entry(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let cf = self.cf(CF_ENTRIES)?;
        let iter = self.db.iterator_cf(
            cf,
            rocksdb::IteratorMode::From(&from.to_be_bytes(), rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            let seq = u64::from_be_bytes(
                <[u8; 8]>::try_from(&k[..])
                    .map_err(|_| corrupt("audit.entries", "key is not 8 bytes"))?,
            );
            if seq >= to {
                break;
            }
            f(seq, &v)?;
        }
        Ok(())
    }

    /// Inclusion proof of entry `seq` in the tree of `size` entries.
    pub fn inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(size)?;
        Ok(merkle::inclusion_proof_in(
            self.log_id.suite,
            &StoreNodes { log: self },
            seq,
            size,
        )?)
    }

    /// Consistency proof between sizes.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(size2)?;
        Ok(merkle::consistency_proof_in(
            self.log_id.suite,
            &StoreNodes { log: self },
            size1,
            size2,
        )?)
    }

    /// Root of the tree of `size` entries.
    pub fn root_at(&self, size: u64) -> Result<Hash, AuditError> {
        self.check_size(size)?;
        Ok(merkle::root_in(
            self.log_id.suite,
            &StoreNodes { log: self },
            size,
        )?)
    }

    fn check_size(&self, size: u64) -> Result<(), AuditError> {
        let have = self.size();
        if size > have {
            return Err(AuditError::NotFound(format!(
                "tree size {size} exceeds the log size {have}"
            )));
        }
        Ok(())
    }

    // ---- witnessing ----

    /// Stores a cosignature a peer made on one of this log's checkpoints.
    pub fn store_received_cosignature(
        &self,
        size: u64,
        cosig: &SignedCosignature,
        witness: &str,
    ) -> Result<(), AuditError> {
        self.db.put_cf(
            self.cf(CF_META)?,
            meta_key("cosig", &[&size.to_be_bytes(), witness.as_bytes()]),
            to_cbor(cosig)?,
        )?;
        Ok(())
    }

    /// Cosignatures peers made on this log's checkpoints.
    pub fn received_cosignatures(&self) -> Result<Vec<SignedCosignature>, AuditError> {
        self.meta_values("cosig", "cosignature")
    }

    /// The latest checkpoint of `peer_log` this node witnessed.
    pub fn last_witnessed(
        &self,
        peer_log: &str,
    ) -> Result<Option<WitnessedCheckpoint>, AuditError> {
        match self
            .db
            .get_cf(self.cf(CF_META)?, meta_key("peer", &[peer_log.as_bytes()]))?
        {
            None => Ok(None),
            Some(b) => Ok(Some(
                from_cbor(&b, "witnessed checkpoint")
                    .map_err(|e| corrupt(format!("peer {peer_log}"), e.to_string()))?,
            )),
        }
    }

    /// Every peer checkpoint this node witnessed.
    pub fn witnessed(&self) -> Result<Vec<WitnessedCheckpoint>, AuditError> {
        self.meta_values("witnessed", "witnessed checkpoint")
    }

    /// Evidence of forked peer logs.
    pub fn evidence(&self) -> Result<Vec<ForkEvidence>, AuditError> {
        self.meta_values("evidence", "fork evidence")
    }

    /// Cosigns a peer checkpoint that the caller has verified (signature under the
    /// peer's endorsed key, and consistency with [`AuditLog::last_witnessed`]),
    /// stores it and logs a `peer-checkpoint-witnessed` entry.
    pub fn cosign_peer(
        &self,
        peer_dept: &str,
        checkpoint: SignedCheckpoint,
        endorsement: SignedEndorsement,
        verified: &Checkpoint,
    ) -> Result<SignedCosignature, AuditError> {
        self.cosign_peer_inner(peer_dept, checkpoint, endorsement, verified, None)
    }

    /// [`AuditLog::cosign_peer`] for a checkpoint that replaces the held one
    /// although it is not larger (the peer's acknowledged discontinuity lost
    /// the held one); `note` says so in the entry.
    pub fn cosign_peer_superseding(
        &self,
        peer_dept: &str,
        checkpoint: SignedCheckpoint,
        endorsement: SignedEndorsement,
        verified: &Checkpoint,
        note: &str,
    ) -> Result<SignedCosignature, AuditError> {
        self.cosign_peer_inner(peer_dept, checkpoint, endorsement, verified, Some(note))
    }

    fn cosign_peer_inner(
        &self,
        peer_dept: &str,
        checkpoint: SignedCheckpoint,
        endorsement: SignedEndorsement,
        verified: &Checkpoint,
        superseding: Option<&str>,
    ) -> Result<SignedCosignature, AuditError> {
        let cosig = Cosignature {
            log_id: verified.origin.clone(),
            size: verified.size,
            root: verified.root,
            checkpoint_digest: checkpoint.digest(),
            witness: self.log_text.clone(),
            time_ms: now_ms(),
        };
        let signed = {
            let w = self.lock_writer()?;
            SignedCosignature::sign(&cosig, &w.key, self.current_endorsement()?)?
        };
        let record = WitnessedCheckpoint {
            log_id: verified.origin.clone(),
            checkpoint,
            endorsement,
            cosignature: signed.clone(),
        };
        let bytes = to_cbor(&record)?;
        let cf = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        let _peers = self
            .peers
            .lock()
            .map_err(|_| AuditError::Writer("peer lock poisoned".into()))?;
        // The held checkpoint only moves forward: a concurrent connection may
        // already have witnessed a larger one.
        let newer_held = match self.last_witnessed(&verified.origin)? {
            Some(h) if superseding.is_none() => h.checkpoint.peek()?.size > verified.size,
            _ => false,
        };
        if !newer_held {
            batch.put_cf(cf, meta_key("peer", &[verified.origin.as_bytes()]), &bytes);
        }
        batch.put_cf(
            cf,
            meta_key(
                "witnessed",
                &[verified.origin.as_bytes(), &verified.size.to_be_bytes()],
            ),
            &bytes,
        );
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        drop(_peers);
        let mut d = EntryDraft::new(
            EventKind::PeerCheckpointWitnessed,
            &self.log_id.dept,
            "node",
        );
        d.counterparty = Some(peer_dept.to_string());
        d.payload_digest = Some(record.checkpoint.digest());
        d.detail = Some(match superseding {
            None => format!(
                "log {} size {} root {}",
                verified.origin,
                verified.size,
                hex::encode(verified.root)
            ),
            Some(note) => format!(
                "log {} size {} root {}; {note}",
                verified.origin,
                verified.size,
                hex::encode(verified.root)
            ),
        });
        self.append(d)?;
        Ok(signed)
    }

    /// Keeps evidence of a forked peer log and logs an alarm entry.
    pub fn record_fork(&self, peer_dept: &str, evidence: ForkEvidence) -> Result<(), AuditError> {
        let key = meta_key(
            "evidence",
            &[&evidence.time_ms.to_be_bytes(), evidence.log_id.as_bytes()],
        );
        self.db
            .put_cf(self.cf(CF_META)?, key, to_cbor(&evidence)?)?;
        let mut d = EntryDraft::new(EventKind::Alarm, &self.log_id.dept, "node");
        d.counterparty = Some(peer_dept.to_string());
        d.payload_digest = Some(self.log_id.suite.digest(&to_cbor(&evidence)?));
        d.detail = Some(format!(
            "fork evidence for log {}: {}",
            evidence.log_id, evidence.reason
        ));
        self.append(d)?;
        Ok(())
    }
}

struct StoreNodes<'a> {
    log: &'a AuditLog,
}

impl NodeSource for StoreNodes<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        let missing = |reason: String| ProofError::MissingNode {
            level,
            index,
            reason,
        };
        if level == 0 {
            let cf = self
                .log
                .cf(CF_ENTRIES)
                .map_err(|e| missing(e.to_string()))?;
            let entry = self
                .log
                .db
                .get_pinned_cf(cf, index.to_be_bytes())
                .map_err(|e| missing(e.to_string()))?
                .ok_or_else(|| missing("entry not stored".into()))?;
            return Ok(merkle::leaf_in(self.log.log_id.suite, &entry));
        }
        let cf = self.log.cf(CF_TREE).map_err(|e| missing(e.to_string()))?;
        let v = self
            .log
            .db
            .get_pinned_cf(cf, tree_key(level, index))
            .map_err(|e| missing(e.to_string()))?
            .ok_or_else(|| missing("not stored".into()))?;
        <Hash>::try_from(&v[..]).map_err(|_| missing("stored hash is not 32 bytes".into()))
    }
}
