//! Self-contained audit bundles for regulators (byte format in
//! `docs/audit-format.md`):
//!
//! ```text
//! bundle  = "PDXAUDT1" || u32 BE header length || header (CBOR map)
//!           || entry_count x (u32 BE entry length || canonical entry bytes)
//!           || "PDXEND01"
//! ```

use crate::checkpoint::{
    ForkEvidence, SignedCheckpoint, SignedCosignature, SignedEndorsement, WitnessedCheckpoint,
};
use crate::error::AuditError;
use crate::store::{AuditLog, now_ms};
use pdx_crypto::wire::{from_cbor, to_cbor};
use serde::{Deserialize, Serialize};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

/// Leading magic.
pub const MAGIC: &[u8; 8] = b"PDXAUDT1";
/// Trailing magic.
pub const END: &[u8; 8] = b"PDXEND01";
/// Largest header accepted (checkpoints and cosignatures of a long-lived log).
pub const MAX_HEADER: u32 = 512 * 1024 * 1024;
/// Largest entry accepted.
pub const MAX_ENTRY: u32 = 1024 * 1024;

/// Everything in a bundle except the entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    /// Format version (1).
    pub format: u32,
    /// The log (`dept:keyid`, or `dept:keyid:gm`).
    pub log_id: String,
    /// The log's suite, which its log id also states (`"gm"`; absent means
    /// `intl`): it fixes the tree hash and the signature algorithm.
    #[serde(default, skip_serializing_if = "pdx_crypto::suite::is_intl")]
    pub suite: pdx_crypto::Suite,
    /// Department of the node.
    pub dept: String,
    /// When exported.
    pub exported_ms: u64,
    /// Network CA certificate (DER) the node trusted. Verifiers should pin their
    /// own copy (`--ca`); this one is a convenience.
    #[serde(with = "serde_bytes")]
    pub ca_certificate: Vec<u8>,
    /// Endorsements of every audit key of this log, by `from_seq`.
    pub endorsements: Vec<SignedEndorsement>,
    /// Every checkpoint this log signed, by size.
    pub checkpoints: Vec<SignedCheckpoint>,
    /// Cosignatures peers made on this log's checkpoints.
    pub cosignatures: Vec<SignedCosignature>,
    /// Peer checkpoints this node witnessed (and its cosignatures on them).
    pub witnessed: Vec<PeerItem<WitnessedCheckpoint>>,
    /// Fork evidence this node holds against peers.
    pub evidence: Vec<PeerItem<ForkEvidence>>,
    /// Number of entries that follow.
    pub entry_count: u64,
}

/// Just the format of a header, read before the rest is decoded.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

/// An item of peers' data in a header (`witnessed`, `evidence`): decoded
/// when it can be; a malformed one is kept as a finding, not a failure of the
/// whole bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerItem<T> {
    /// Decoded.
    Ok(T),
    /// Did not decode (why).
    Malformed(String),
}

impl<T> PeerItem<T> {
    /// The item, if it decoded.
    pub fn ok(&self) -> Option<&T> {
        match self {
            PeerItem::Ok(t) => Some(t),
            PeerItem::Malformed(_) => None,
        }
    }
}

impl<T: Serialize> Serialize for PeerItem<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PeerItem::Ok(t) => t.serialize(s),
            PeerItem::Malformed(why) => Err(serde::ser::Error::custom(format!(
                "a malformed item is never written: {why}"
            ))),
        }
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for PeerItem<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = ciborium::Value::deserialize(d)?;
        Ok(match value.deserialized::<T>() {
            Ok(t) => PeerItem::Ok(t),
            Err(e) => PeerItem::Malformed(e.to_string()),
        })
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a bundle of `log` to `path`. A fresh checkpoint is signed first so the
/// bundle is covered to its last entry.
pub fn export(
    log: &AuditLog,
    ca_certificate: Vec<u8>,
    path: &Path,
) -> Result<BundleHeader, AuditError> {
    let latest = log.checkpoint()?;
    let size = latest.peek()?.size;
    // Export what the store holds, gaps included: a damaged or edited store must
    // reach the verifier as it is, not be refused here.
    let mut stored = 0u64;
    log.for_each_stored_entry(0, size, |_, _| {
        stored += 1;
        Ok(())
    })?;
    let header = BundleHeader {
        format: 1,
        log_id: log.log_id().to_text(),
        suite: log.log_id().suite,
        dept: log.log_id().dept.clone(),
        exported_ms: now_ms(),
        ca_certificate,
        endorsements: log.endorsements()?,
        checkpoints: log
            .checkpoints()?
            .into_iter()
            .filter(|c| c.peek().map(|p| p.size <= size).unwrap_or(false))
            .collect(),
        cosignatures: log.received_cosignatures()?,
        witnessed: log.witnessed()?.into_iter().map(PeerItem::Ok).collect(),
        evidence: log.evidence()?.into_iter().map(PeerItem::Ok).collect(),
        entry_count: stored,
    };
    let file = std::fs::File::create(path).map_err(io(path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    write_header(&mut out, &header).map_err(io(path))?;
    let mut written = 0u64;
    log.for_each_stored_entry(0, size, |_, bytes| {
        if written < stored {
            written += 1;
            write_entry(&mut out, bytes).map_err(io(path))
        } else {
            Ok(())
        }
    })?;
    if written != stored {
        return Err(AuditError::Bundle {
            path: path.display().to_string(),
            reason: "the store changed during export".into(),
        });
    }
    out.write_all(END).map_err(io(path))?;
    let file = out.into_inner().map_err(|e| io(path)(e.into_error()))?;
    file.sync_all().map_err(io(path))?;
    Ok(header)
}

/// Writes magic and header.
pub fn write_header(out: &mut impl Write, header: &BundleHeader) -> std::io::Result<()> {
    let bytes = to_cbor(header).map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("bundle header over 4 GiB"))?;
    out.write_all(MAGIC)?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&bytes)
}

/// Writes one length-prefixed entry.
pub fn write_entry(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("entry over 4 GiB"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

/// Streams a bundle from a file: header first, then entries one by one.
pub struct BundleReader<R: Read> {
    input: R,
    name: String,
    header: BundleHeader,
    remaining: u64,
    finished: bool,
}

impl<R: Read> std::fmt::Debug for BundleReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleReader")
            .field("name", &self.name)
            .finish()
    }
}

impl BundleReader<BufReader<std::fs::File>> {
    /// Opens the bundle at `path`.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = std::fs::File::open(path).map_err(io(path))?;
        BundleReader::new(
            BufReader::with_capacity(1 << 20, file),
            path.display().to_string(),
        )
    }
}

impl<R: Read> BundleReader<R> {
    fn bundle_err(&self, reason: impl Into<String>) -> AuditError {
        AuditError::Bundle {
            path: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Reads the header from `input`; `name` appears in errors.
    pub fn new(mut input: R, name: String) -> Result<Self, AuditError> {
        let err = |reason: String| AuditError::Bundle {
            path: name.clone(),
            reason,
        };
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|e| err(format!("cannot read the magic: {e}")))?;
        if &magic != MAGIC {
            return Err(err("not a pdx audit bundle (bad magic)".into()));
        }
        let mut len = [0u8; 4];
        input
            .read_exact(&mut len)
            .map_err(|e| err(format!("truncated header length: {e}")))?;
        let len = u32::from_be_bytes(len);
        if len > MAX_HEADER {
            return Err(err(format!(
                "header of {len} bytes exceeds the {MAX_HEADER}-byte limit"
            )));
        }
        // Grown with the bytes that arrive, never allocated from `len`.
        let mut buf = Vec::new();
        (&mut input)
            .take(u64::from(len))
            .read_to_end(&mut buf)
            .map_err(|e| err(format!("header: {e}")))?;
        if buf.len() != len as usize {
            return Err(err(format!(
                "truncated header: {} of {len} bytes",
                buf.len()
            )));
        }
        let format: FormatOnly =
            from_cbor(&buf, "bundle header").map_err(|e| err(e.to_string()))?;
        if format.format != 1 {
            return Err(AuditError::UnknownFormat {
                path: name.clone(),
                format: format.format,
            });
        }
        let header: BundleHeader =
            from_cbor(&buf, "bundle header").map_err(|e| err(e.to_string()))?;
        Ok(BundleReader {
            input,
            remaining: header.entry_count,
            header,
            name,
            finished: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &BundleHeader {
        &self.header
    }

    /// Reads the next entry into `buf`; `Ok(false)` after the last one (and the
    /// end marker) was read.
    pub fn next_entry(&mut self, buf: &mut Vec<u8>) -> Result<bool, AuditError> {
        if self.remaining == 0 {
            if !self.finished {
                let mut end = [0u8; 8];
                self.input.read_exact(&mut end).map_err(|e| {
                    self.bundle_err(format!("missing end marker after the last entry: {e}"))
                })?;
                if &end != END {
                    return Err(
                        self.bundle_err("bytes after the declared entries (entry count altered?)")
                    );
                }
                let mut probe = [0u8; 1];
                if self
                    .input
                    .read(&mut probe)
                    .map_err(|e| self.bundle_err(e.to_string()))?
                    != 0
                {
                    return Err(self.bundle_err("trailing bytes after the end marker"));
                }
                self.finished = true;
            }
            return Ok(false);
        }
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).map_err(|e| {
            self.bundle_err(format!(
                "truncated: {} entries missing ({e})",
                self.remaining
            ))
        })?;
        let len = u32::from_be_bytes(len);
        if len > MAX_ENTRY {
            return Err(self.bundle_err(format!(
                "entry of {len} bytes exceeds the {MAX_ENTRY}-byte limit"
            )));
        }
        buf.clear();
        (&mut self.input)
            .take(u64::from(len))
            .read_to_end(buf)
            .map_err(|e| self.bundle_err(format!("entry: {e}")))?;
        if buf.len() != len as usize {
            return Err(self.bundle_err(format!("truncated entry: {} of {len} bytes", buf.len())));
        }
        self.remaining -= 1;
        Ok(true)
    }
}

/// Reads only the header of the bundle at `path` (for witness bundles).
pub fn read_header(path: &Path) -> Result<BundleHeader, AuditError> {
    Ok(BundleReader::open(path)?.header)
}
