//! Backups of a node home: `pdx backup create` (while the node serves),
//! `pdx backup verify` and `pdx restore`. The archive is sealed as a whole
//! under a key derived from a backup passphrase (the suite's AEAD and
//! passphrase KDF), so key files never leave in clear even where the node's
//! own keys are not passphrase-protected. docs/backup-format.md gives every
//! byte; what a restored node does before it serves is in [`super::recovery`].

use crate::config::{Home, create_dir};
use crate::error::{NodeError, Result};
use crate::node::Node;
use pdx_audit::EventKind;
use pdx_audit::store::now_ms;
use pdx_crypto::Suite;
use pdx_crypto::aead::{AeadKey, counter_nonce};
use pdx_crypto::keyfile::{DEFAULT_COST, KdfCost, PassphraseKdf};
use pdx_crypto::wire::{from_cbor, to_cbor};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// First bytes of an archive.
pub const MAGIC: &[u8; 8] = b"PDXBAK1\n";
/// The archive format this release writes and reads.
pub const FORMAT: u32 = 1;
/// Plaintext bytes per frame written.
pub const FRAME_SIZE: u32 = 1 << 20;
/// The largest frame size a reader accepts.
pub const MAX_FRAME_SIZE: u32 = 4 << 20;
/// The largest header a reader accepts.
pub const MAX_HEADER: u32 = 64 << 10;
/// The longest path inside an archive.
pub const MAX_PATH: usize = 4096;
/// The most files an archive may hold.
pub const MAX_FILES: usize = 1_000_000;
/// The largest manifest a reader accepts.
pub const MAX_MANIFEST: u32 = 64 << 20;
const AAD_CONTEXT: &[u8] = b"pdx/v1 backup\0";
const FILE_DIGEST_CONTEXT: &str = "pdx/v1 backup-file";
const TAG_LEN: usize = 16;
const ENTRY_FILE: u8 = 1;
const ENTRY_END: u8 = 2;

/// The archive header (CBOR, in clear, bound to every frame).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// [`FORMAT`].
    pub format: u32,
    /// The network's suite: AEAD and KDF of the archive.
    pub suite: Suite,
    /// Department of the node.
    pub dept: String,
    /// Its audit log id.
    pub log_id: String,
    /// When the backup was made (ms).
    pub created_ms: u64,
    /// Size of the audit log in the backup (its `backup` entry included).
    pub audit_size: u64,
    /// The passphrase KDF and its parameters.
    pub kdf: PassphraseKdf,
    /// Plaintext bytes per frame (all but the last).
    pub frame_size: u32,
}

/// One file of the archive, as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the home (`/`-separated).
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Bytes.
    pub size: u64,
    /// The suite's domain-separated digest of its bytes.
    #[serde(with = "serde_bytes")]
    pub digest: Vec<u8>,
}

/// What a backup holds, written after the last file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Every file, in archive order.
    pub files: Vec<ManifestFile>,
}

/// What `pdx backup create` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupCreated {
    /// Archive written.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Files in it.
    pub files: usize,
    /// Audit log size in the backup.
    pub audit_size: u64,
    /// When it was made (ms).
    pub created_ms: u64,
    /// The suite of its encryption.
    pub suite: Suite,
}

/// What `pdx backup verify` (and a restore) found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupVerified {
    /// Archive read.
    pub file: String,
    /// Its header.
    pub header: BackupHeader,
    /// Files, each matching its manifest entry.
    pub files: usize,
    /// Bytes of all files.
    pub bytes: u64,
}

/// What `pdx restore` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Restored {
    /// The new home.
    pub home: String,
    /// The archive checked and restored.
    pub backup: BackupVerified,
}

fn aad(header_bytes: &[u8], suite: Suite) -> Vec<u8> {
    let mut a = AAD_CONTEXT.to_vec();
    a.extend_from_slice(suite.digest(header_bytes).as_bytes());
    a
}

fn frame_nonce(index: u64, last: bool) -> [u8; 12] {
    counter_nonce(index, u32::from(last))
}

fn malformed(file: &str, reason: impl std::fmt::Display) -> NodeError {
    NodeError::Invalid(format!("{file}: not a valid pdx backup: {reason}"))
}

/// Seals the plaintext stream into frames.
struct FrameWriter<W: Write> {
    out: W,
    key: AeadKey,
    aad: Vec<u8>,
    buf: Vec<u8>,
    index: u64,
    frame_size: usize,
    written: u64,
    path: PathBuf,
}

impl<W: Write> FrameWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let room = self.frame_size - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == self.frame_size {
                self.emit(false)?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, last: bool) -> Result<()> {
        let sealed = self
            .key
            .seal(frame_nonce(self.index, last), &self.aad, &self.buf)?;
        let len = u32::try_from(sealed.len())
            .map_err(|_| NodeError::Invalid("backup frame too large".into()))?;
        let io = NodeError::io(&self.path);
        self.out
            .write_all(&[u8::from(last)])
            .and_then(|_| self.out.write_all(&len.to_be_bytes()))
            .and_then(|_| self.out.write_all(&sealed))
            .map_err(io)?;
        self.written += 5 + sealed.len() as u64;
        self.index += 1;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<(W, u64)> {
        self.emit(true)?;
        Ok((self.out, self.written))
    }
}

/// Opens frames in order and serves their plaintext.
struct FrameReader<R: Read> {
    inp: R,
    key: AeadKey,
    aad: Vec<u8>,
    index: u64,
    frame_size: u32,
    buf: Vec<u8>,
    pos: usize,
    last_seen: bool,
    file: String,
}

/// The plaintext stream of an archive: opened frames, or (fuzzing) raw bytes.
trait Plain {
    /// Fills `out`, or fails if the stream ends first.
    fn read_exact(&mut self, out: &mut [u8]) -> Result<()>;
    /// Fails unless the stream ends here.
    fn expect_end(&mut self) -> Result<()>;

    fn u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_exact(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }
}

impl<R: Read> Plain for FrameReader<R> {
    fn read_exact(&mut self, out: &mut [u8]) -> Result<()> {
        FrameReader::read_exact(self, out)
    }
    fn expect_end(&mut self) -> Result<()> {
        FrameReader::expect_end(self)
    }
}

/// Raw plaintext bytes (the fuzz entry point of the entry parser).
struct RawPlain<'a> {
    data: &'a [u8],
}

impl Plain for RawPlain<'_> {
    fn read_exact(&mut self, out: &mut [u8]) -> Result<()> {
        if self.data.len() < out.len() {
            return Err(NodeError::Invalid("the stream ends inside an entry".into()));
        }
        let (head, rest) = self.data.split_at(out.len());
        out.copy_from_slice(head);
        self.data = rest;
        Ok(())
    }
    fn expect_end(&mut self) -> Result<()> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(NodeError::Invalid("bytes after the manifest".into()))
        }
    }
}

impl<R: Read> FrameReader<R> {
    fn next_frame(&mut self) -> Result<bool> {
        if self.last_seen {
            return Ok(false);
        }
        let mut head = [0u8; 5];
        self.inp.read_exact(&mut head).map_err(|e| {
            malformed(
                &self.file,
                format!("frame {} header: {e} (truncated?)", self.index),
            )
        })?;
        let last = match head[0] {
            0 => false,
            1 => true,
            other => {
                return Err(malformed(
                    &self.file,
                    format!("frame {} flag {other}", self.index),
                ));
            }
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let max = self.frame_size as usize + TAG_LEN;
        if (len as usize) < TAG_LEN || len as usize > max {
            return Err(malformed(
                &self.file,
                format!("frame {} of {len} bytes (16 to {max} allowed)", self.index),
            ));
        }
        // Bounded by the frame size the header declared, itself capped.
        let mut sealed = vec![0u8; len as usize];
        self.inp.read_exact(&mut sealed).map_err(|e| {
            malformed(
                &self.file,
                format!("frame {}: {e} (truncated?)", self.index),
            )
        })?;
        let index = self.index;
        let file = self.file.clone();
        self.buf = self
            .key
            .open(frame_nonce(index, last), &self.aad, &sealed, || {
                format!("{file}: frame {index}")
            })
            .map_err(|_| {
                NodeError::Invalid(format!(
                    "{}: frame {index} does not open: wrong backup passphrase, or the archive was altered",
                    self.file
                ))
            })?;
        if !last && self.buf.len() != self.frame_size as usize {
            return Err(malformed(&self.file, format!("frame {index} is short")));
        }
        self.pos = 0;
        self.index += 1;
        self.last_seen = last;
        Ok(true)
    }

    fn read_exact(&mut self, out: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < out.len() {
            if self.pos == self.buf.len() && !self.next_frame()? {
                return Err(malformed(&self.file, "the archive ends inside an entry"));
            }
            let n = (self.buf.len() - self.pos).min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            filled += n;
        }
        Ok(())
    }

    /// After the end entry: nothing may follow, in this frame or another.
    fn expect_end(&mut self) -> Result<()> {
        if self.pos != self.buf.len() || self.next_frame()? && !self.buf.is_empty() {
            return Err(malformed(&self.file, "bytes after the manifest"));
        }
        if !self.last_seen {
            return Err(malformed(
                &self.file,
                "no final frame: the archive is truncated",
            ));
        }
        let mut probe = [0u8; 1];
        match self.inp.read(&mut probe) {
            Ok(0) => Ok(()),
            Ok(_) => Err(malformed(&self.file, "bytes after the final frame")),
            Err(e) => Err(malformed(&self.file, e)),
        }
    }
}

/// The files of a home that a backup holds, besides the store checkpoint:
/// configuration, certificates, key files (sealed by the archive), the log id
/// and the gateway token.
fn home_files(home: &Home, token_file: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for name in ["pdx.toml", "log-id", token_file] {
        let p = home.root().join(name);
        if p.is_file() {
            out.push((name.to_string(), p));
        }
    }
    for dir in ["tls", "keys"] {
        out.extend(dir_files(&home.root().join(dir), dir)?);
    }
    Ok(out)
}

/// The files directly in `root`, sorted, named `prefix/NAME` in the archive.
fn dir_files(root: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut names: Vec<_> = std::fs::read_dir(root)
        .map_err(NodeError::io(root))?
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|n| (format!("{prefix}/{n}"), root.join(n)))
        .collect())
}

/// `pdx backup create`: a `backup` entry and a checkpoint over it, a RocksDB
/// checkpoint (a consistent snapshot taken while the node serves), then the
/// sealed archive at `out` (0600, written to a temporary file and renamed).
/// Blocks.
pub fn create(node: &Node, out: &Path, passphrase: &[u8], operator: &str) -> Result<BackupCreated> {
    create_with_cost(node, out, passphrase, operator, DEFAULT_COST)
}

/// [`create`] with an explicit KDF cost (tests use small ones).
pub fn create_with_cost(
    node: &Node,
    out: &Path,
    passphrase: &[u8],
    operator: &str,
    cost: KdfCost,
) -> Result<BackupCreated> {
    if passphrase.is_empty() {
        return Err(NodeError::Invalid("the backup passphrase is empty".into()));
    }
    if out.exists() {
        return Err(NodeError::Invalid(format!(
            "{} exists; refusing to overwrite a backup",
            out.display()
        )));
    }
    let created_ms = now_ms();
    let mut d = node.draft(EventKind::Backup, operator);
    d.detail = Some(format!("backup made to {}", out.display()));
    let seq = node.log(d)?.seq;
    // The backup ends at a signed head that covers its own entry.
    node.audit.checkpoint()?;
    let audit_size = seq + 1;
    let snapshot = node.home.root().join(format!(
        ".backup-{}",
        hex::encode(pdx_crypto::rng::bytes::<8>()?)
    ));
    let result = (|| {
        rocksdb::checkpoint::Checkpoint::new(node.store.db())
            .and_then(|c| c.create_checkpoint(&snapshot))
            .map_err(NodeError::Store)?;
        let mut files = home_files(&node.home, &node.config.services.gateway_token_file)?;
        files.extend(dir_files(&snapshot, "db")?);
        let header = BackupHeader {
            format: FORMAT,
            suite: node.suite,
            dept: node.config.dept.clone(),
            log_id: node.audit.log_id().to_text(),
            created_ms,
            audit_size,
            kdf: PassphraseKdf::new(node.suite, cost)?,
            frame_size: FRAME_SIZE,
        };
        write_archive(out, &header, passphrase, &files)
    })();
    let _ = std::fs::remove_dir_all(&snapshot);
    let (bytes, count) = result?;
    let mut d = node.draft(EventKind::Backup, operator);
    d.detail = Some(format!(
        "backup written to {}: {count} files, {bytes} bytes, audit log size {audit_size}",
        out.display()
    ));
    node.log(d)?;
    Ok(BackupCreated {
        file: out.display().to_string(),
        bytes,
        files: count,
        audit_size,
        created_ms,
        suite: node.suite,
    })
}

fn write_archive(
    out: &Path,
    header: &BackupHeader,
    passphrase: &[u8],
    files: &[(String, PathBuf)],
) -> Result<(u64, usize)> {
    let tmp = out.with_extension("partial");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(NodeError::io(&tmp))?;
    let written = (|| {
        let mut w = std::io::BufWriter::new(f);
        let header_bytes = to_cbor(header)?;
        let io = NodeError::io(&tmp);
        w.write_all(MAGIC)
            .and_then(|_| w.write_all(&(header_bytes.len() as u32).to_be_bytes()))
            .and_then(|_| w.write_all(&header_bytes))
            .map_err(io)?;
        let key = header.kdf.key(header.suite, passphrase, "the backup")?;
        let mut fw = FrameWriter {
            out: w,
            key,
            aad: aad(&header_bytes, header.suite),
            buf: Vec::with_capacity(FRAME_SIZE as usize),
            index: 0,
            frame_size: FRAME_SIZE as usize,
            written: 0,
            path: tmp.clone(),
        };
        let mut manifest = Manifest { files: Vec::new() };
        let mut chunk = vec![0u8; 256 << 10];
        for (name, path) in files {
            let mut f = std::fs::File::open(path).map_err(NodeError::io(path))?;
            let meta = f.metadata().map_err(NodeError::io(path))?;
            let size = meta.len();
            let mode = meta.permissions().mode() & 0o777;
            let name_len = u16::try_from(name.len())
                .map_err(|_| NodeError::Invalid(format!("{name}: path too long")))?;
            fw.write(&[ENTRY_FILE])?;
            fw.write(&name_len.to_be_bytes())?;
            fw.write(name.as_bytes())?;
            fw.write(&mode.to_be_bytes())?;
            fw.write(&size.to_be_bytes())?;
            let mut h = header.suite.hasher(FILE_DIGEST_CONTEXT);
            let mut left = size;
            while left > 0 {
                let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                f.read_exact(&mut chunk[..want])
                    .map_err(NodeError::io(path))?;
                h.update(&chunk[..want]);
                fw.write(&chunk[..want])?;
                left -= want as u64;
            }
            manifest.files.push(ManifestFile {
                path: name.clone(),
                mode,
                size,
                digest: h.finalize().as_bytes().to_vec(),
            });
        }
        let m = to_cbor(&manifest)?;
        fw.write(&[ENTRY_END])?;
        fw.write(&(m.len() as u32).to_be_bytes())?;
        fw.write(&m)?;
        let (w, frames) = fw.finish()?;
        let f = w
            .into_inner()
            .map_err(|e| NodeError::io(&tmp)(e.into_error()))?;
        f.sync_all().map_err(NodeError::io(&tmp))?;
        Ok((
            MAGIC.len() as u64 + 4 + header_bytes.len() as u64 + frames,
            files.len(),
        ))
    })();
    match written {
        Ok(v) => {
            std::fs::rename(&tmp, out).map_err(NodeError::io(out))?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Where a read archive's files go.
trait Sink {
    fn begin(&mut self, path: &str, mode: u32, size: u64) -> Result<()>;
    fn data(&mut self, bytes: &[u8]) -> Result<()>;
    fn end(&mut self) -> Result<()>;
}

struct Discard;

impl Sink for Discard {
    fn begin(&mut self, _: &str, _: u32, _: u64) -> Result<()> {
        Ok(())
    }
    fn data(&mut self, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn end(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Writes files under a new home: directories 0700, key files 0600.
struct ToHome {
    root: PathBuf,
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl Sink for ToHome {
    fn begin(&mut self, path: &str, mode: u32, _: u64) -> Result<()> {
        let target = self.root.join(path);
        if let Some(parent) = target.parent() {
            create_dir(parent, 0o700)?;
        }
        let mode = if path.starts_with("keys/") {
            0o600
        } else {
            mode & 0o755
        };
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&target)
            .map_err(NodeError::io(&target))?;
        self.file = Some(f);
        self.path = target;
        Ok(())
    }
    fn data(&mut self, bytes: &[u8]) -> Result<()> {
        match self.file.as_mut() {
            Some(f) => f.write_all(bytes).map_err(NodeError::io(&self.path)),
            None => Err(NodeError::Invalid("backup data outside a file".into())),
        }
    }
    fn end(&mut self) -> Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(NodeError::io(&self.path))?;
        }
        Ok(())
    }
}

/// A path of an archive: relative, `/`-separated, normal components only,
/// under one of the places a home has.
fn check_path(file: &str, path: &str) -> Result<()> {
    let p = Path::new(path);
    let normal = !path.is_empty()
        && !path.contains('\\')
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    let allowed =
        ["db/", "keys/", "tls/"].iter().any(|d| path.starts_with(d)) || !path.contains('/');
    if !normal || !allowed {
        return Err(malformed(
            file,
            format!("file path {path:?} is not inside a home"),
        ));
    }
    Ok(())
}

/// Reads the header of `file`.
fn read_header<R: Read>(inp: &mut R, file: &str) -> Result<(BackupHeader, Vec<u8>)> {
    let mut magic = [0u8; 8];
    inp.read_exact(&mut magic)
        .map_err(|e| malformed(file, format!("reading the magic: {e}")))?;
    if &magic != MAGIC {
        return Err(malformed(file, "it does not start with PDXBAK1"));
    }
    let mut len = [0u8; 4];
    inp.read_exact(&mut len)
        .map_err(|e| malformed(file, format!("header length: {e}")))?;
    let len = u32::from_be_bytes(len);
    if len == 0 || len > MAX_HEADER {
        return Err(malformed(
            file,
            format!("header of {len} bytes (1 to {MAX_HEADER})"),
        ));
    }
    let mut bytes = Vec::new();
    inp.take(u64::from(len))
        .read_to_end(&mut bytes)
        .map_err(|e| malformed(file, format!("header: {e}")))?;
    if bytes.len() != len as usize {
        return Err(malformed(file, "the header is truncated"));
    }
    let header: BackupHeader =
        from_cbor(&bytes, "backup header").map_err(|e| malformed(file, e))?;
    if header.format != FORMAT {
        return Err(NodeError::Invalid(format!(
            "{file}: backup format {} (this pdx reads format {FORMAT}); use the pdx release that made it",
            header.format
        )));
    }
    if header.frame_size == 0 || header.frame_size > MAX_FRAME_SIZE {
        return Err(malformed(
            file,
            format!("frame size {} (1 to {MAX_FRAME_SIZE})", header.frame_size),
        ));
    }
    Ok((header, bytes))
}

/// The files a restorable home cannot do without.
const REQUIRED: &[&str] = &[
    "pdx.toml",
    "log-id",
    "tls/node.crt",
    "tls/ca.crt",
    "keys/identity.key",
    "keys/audit.key",
    "keys/storage.key",
    "db/CURRENT",
];

fn read_archive(path: &Path, passphrase: &[u8], sink: &mut dyn Sink) -> Result<BackupVerified> {
    let file = path.display().to_string();
    let f = std::fs::File::open(path).map_err(NodeError::io(path))?;
    let mut inp = std::io::BufReader::new(f);
    let (header, header_bytes) = read_header(&mut inp, &file)?;
    let key = header.kdf.key(header.suite, passphrase, &file)?;
    let mut r = FrameReader {
        inp,
        key,
        aad: aad(&header_bytes, header.suite),
        index: 0,
        frame_size: header.frame_size,
        buf: Vec::new(),
        pos: 0,
        last_seen: false,
        file: file.clone(),
    };
    let seen = read_entries(&mut r, header.suite, &file, sink)?;
    Ok(BackupVerified {
        file,
        header,
        files: seen.len(),
        bytes: seen.iter().map(|f| f.size).sum(),
    })
}

/// Reads the entries of the plaintext stream into `sink`, checks them
/// against the manifest and for completeness; returns what was read.
fn read_entries(
    r: &mut dyn Plain,
    suite: Suite,
    file: &str,
    sink: &mut dyn Sink,
) -> Result<Vec<ManifestFile>> {
    let mut seen: Vec<ManifestFile> = Vec::new();
    let mut current = Vec::new();
    let mut chunk = vec![0u8; 256 << 10];
    let manifest: Manifest = loop {
        match r.u8()? {
            ENTRY_FILE => {
                if seen.len() >= MAX_FILES {
                    return Err(malformed(file, format!("more than {MAX_FILES} files")));
                }
                let n = usize::from(r.u16()?);
                if n > MAX_PATH {
                    return Err(malformed(file, "a path is too long"));
                }
                let mut name = vec![0u8; n];
                r.read_exact(&mut name)?;
                let name =
                    String::from_utf8(name).map_err(|_| malformed(file, "a path is not UTF-8"))?;
                check_path(file, &name)?;
                if seen.iter().any(|f| f.path == name) {
                    return Err(malformed(file, format!("{name} appears twice")));
                }
                let mode = r.u32()?;
                let size = r.u64()?;
                sink.begin(&name, mode, size)?;
                let mut h = suite.hasher(FILE_DIGEST_CONTEXT);
                let mut left = size;
                while left > 0 {
                    let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    r.read_exact(&mut chunk[..want])?;
                    h.update(&chunk[..want]);
                    sink.data(&chunk[..want])?;
                    if name == "db/CURRENT" && current.len() < 256 {
                        current.extend_from_slice(&chunk[..want.min(256)]);
                    }
                    left -= want as u64;
                }
                sink.end()?;
                seen.push(ManifestFile {
                    path: name,
                    mode,
                    size,
                    digest: h.finalize().as_bytes().to_vec(),
                });
            }
            ENTRY_END => {
                let n = r.u32()?;
                if n > MAX_MANIFEST {
                    return Err(malformed(file, format!("manifest of {n} bytes")));
                }
                // Read in pieces: the declared length is not trusted for an
                // allocation beyond what arrives.
                let mut m = Vec::new();
                let mut left = n as usize;
                while left > 0 {
                    let want = chunk.len().min(left);
                    r.read_exact(&mut chunk[..want])?;
                    m.extend_from_slice(&chunk[..want]);
                    left -= want;
                }
                r.expect_end()?;
                break from_cbor(&m, "backup manifest").map_err(|e| malformed(file, e))?;
            }
            other => return Err(malformed(file, format!("unknown entry tag {other}"))),
        }
    };
    if manifest.files != seen {
        let differs = manifest
            .files
            .iter()
            .zip(&seen)
            .find(|(a, b)| a != b)
            .map(|(a, _)| a.path.clone())
            .unwrap_or_else(|| "the file count".into());
        return Err(NodeError::Invalid(format!(
            "{file}: the manifest does not match the files ({differs} differs): the archive is incomplete or was altered"
        )));
    }
    for req in REQUIRED {
        if !seen.iter().any(|f| f.path == *req) {
            return Err(NodeError::Invalid(format!(
                "{file}: incomplete backup: {req} is missing"
            )));
        }
    }
    // CURRENT names the store's MANIFEST, which must be there too.
    let named = String::from_utf8_lossy(&current).trim().to_string();
    if !named.starts_with("MANIFEST-") || !seen.iter().any(|f| f.path == format!("db/{named}")) {
        return Err(NodeError::Invalid(format!(
            "{file}: incomplete backup: db/CURRENT names {named:?}, which the archive lacks"
        )));
    }
    Ok(seen)
}

/// Fuzz entry point: the header parser, or (first byte odd) the entry
/// parser over raw plaintext. Never panics.
pub fn fuzz_archive(data: &[u8]) {
    match data.split_first() {
        Some((b, rest)) if b % 2 == 1 => {
            let _ = read_entries(
                &mut RawPlain { data: rest },
                Suite::Intl,
                "fuzz",
                &mut Discard,
            );
        }
        _ => {
            let _ = read_header(&mut std::io::Cursor::new(data), "fuzz");
        }
    }
}

/// `pdx backup verify`: opens every frame, checks every file against the
/// manifest and that nothing a home needs is missing; writes nothing.
pub fn verify(path: &Path, passphrase: &[u8]) -> Result<BackupVerified> {
    read_archive(path, passphrase, &mut Discard)
}

/// `pdx restore`: the archive, checked as by [`verify`], becomes the new home
/// `home` (which must not exist or be empty), with a [`super::recovery::RestoredMarker`]: the
/// node will ask its peers what they witnessed before it signs anything.
/// A failed restore leaves nothing behind.
pub fn restore(path: &Path, passphrase: &[u8], home: &Path) -> Result<Restored> {
    if home.exists()
        && std::fs::read_dir(home)
            .map_err(NodeError::io(home))?
            .next()
            .is_some()
    {
        return Err(NodeError::Invalid(format!(
            "{} is not empty; restore into a new directory",
            home.display()
        )));
    }
    let name = home
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "home".into());
    let staging = home.with_file_name(format!(".{name}.restoring"));
    let _ = std::fs::remove_dir_all(&staging);
    create_dir(&staging, 0o700)?;
    let mut sink = ToHome {
        root: staging.clone(),
        file: None,
        path: PathBuf::new(),
    };
    let checked = match read_archive(path, passphrase, &mut sink) {
        Ok(c) => c,
        Err(e) => {
            drop(sink);
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let marker = super::recovery::RestoredMarker {
        backup_file: checked.file.clone(),
        backup_created_ms: checked.header.created_ms,
        audit_size: checked.header.audit_size,
        restored_ms: now_ms(),
        reconciliation: None,
    };
    marker.save(&Home::new(&staging))?;
    if home.exists() {
        std::fs::remove_dir(home).map_err(NodeError::io(home))?;
    }
    std::fs::rename(&staging, home).map_err(NodeError::io(home))?;
    Ok(Restored {
        home: home.display().to_string(),
        backup: checked,
    })
}
