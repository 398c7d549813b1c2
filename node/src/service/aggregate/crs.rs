//! The common reference string that contributions' proofs are made and
//! checked against. The network CA makes it once (`pdx ca zk-crs`) and
//! publishes its digest; each node installs the file (`pdx he crs install`),
//! kept under `HOME/he-crs/DIGEST.crs`; a committee query names it by digest
//! (`pdx he keygen --crs DIGEST`). Whoever made a CRS could forge proofs
//! (`docs/he-aggregates.md`, "Who makes the CRS").

use super::*;
use pdx_crypto::Suite;
use pdx_crypto::digest::Digest;
use pdx_crypto::he::Layout;
use pdx_crypto::he::proof::{Crs, MAX_CRS_BYTES};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Directory of installed CRS files in a node home.
pub const CRS_DIR: &str = "he-crs";

/// What `pdx ca zk-crs` and `pdx he crs install` report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CrsInfo {
    /// Hex digest of the file (the network suite's hash): what queries name.
    pub digest: String,
    /// The file written or installed.
    pub path: String,
    /// File size.
    pub bytes: u64,
    /// The layout it proves.
    pub scheme: String,
}

/// The digest of a CRS file as queries name it.
pub fn digest_of(suite: Suite, bytes: &[u8]) -> Digest {
    suite.digest(bytes)
}

/// `pdx ca zk-crs`: makes the committee layout's CRS (its randomness is
/// dropped on return) and writes it to `out`.
pub fn generate(suite: Suite, out: &Path) -> Result<CrsInfo> {
    let bytes = Crs::generate(Layout::COMMITTEE)?.to_bytes()?;
    crate::config::write_atomic(out, &bytes, 0o644)?;
    Ok(info(suite, &bytes, out))
}

fn info(suite: Suite, bytes: &[u8], path: &Path) -> CrsInfo {
    CrsInfo {
        digest: digest_of(suite, bytes).to_hex(),
        path: path.display().to_string(),
        bytes: bytes.len() as u64,
        scheme: Layout::COMMITTEE.scheme_id().to_string(),
    }
}

/// Reads a CRS file: at most [`MAX_CRS_BYTES`], conformant to the committee
/// layout (tfhe's conformance check of every parameter).
pub fn read(suite: Suite, path: &Path) -> Result<(Digest, Vec<u8>, Crs)> {
    let file = std::fs::File::open(path).map_err(NodeError::io(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_CRS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(NodeError::io(path))?;
    if bytes.len() as u64 > MAX_CRS_BYTES {
        return Err(NodeError::Refused(format!(
            "{}: over {MAX_CRS_BYTES} bytes, not a CRS pdx reads",
            path.display()
        )));
    }
    let crs = Crs::from_bytes(Layout::COMMITTEE, &bytes)
        .map_err(|e| NodeError::Refused(format!("{}: {e}", path.display())))?;
    Ok((digest_of(suite, &bytes), bytes, crs))
}

fn installed_path(node: &Node, digest: &Digest) -> PathBuf {
    node.home
        .root()
        .join(CRS_DIR)
        .join(format!("{}.crs", digest.to_hex()))
}

/// `pdx he crs install`: checks the file and keeps it by digest. `expect`,
/// when given, is the digest the CA published; another file is refused.
pub fn install(node: &Node, file: &Path, expect: Option<&str>, operator: &str) -> Result<CrsInfo> {
    let (digest, bytes, crs) = read(node.suite, file)?;
    if let Some(e) = expect
        && !e.eq_ignore_ascii_case(&digest.to_hex())
    {
        return Err(NodeError::Refused(format!(
            "{}: digest {}, not the {e} published; get the CA's file again",
            file.display(),
            digest.to_hex()
        )));
    }
    let path = installed_path(node, &digest);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(NodeError::io(dir))?;
    }
    crate::config::write_atomic(&path, &bytes, 0o644)?;
    cache_put(digest, Arc::new(crs));
    let mut d = node.draft(EventKind::ConfigChange, operator);
    d.payload_digest = Some(digest);
    d.detail = Some(format!(
        "installed the he proof CRS {} ({} bytes, {}) from {}",
        digest.to_hex(),
        bytes.len(),
        Layout::COMMITTEE.scheme_id(),
        file.display()
    ));
    node.log(d)?;
    Ok(info(node.suite, &bytes, &path))
}

type Cache = Mutex<HashMap<[u8; 32], Arc<Crs>>>;

/// Decoded CRSs by digest: decoding and checking one takes about a second,
/// and the digest fixes the bytes, so one per process serves every node.
fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Cache::default)
}

fn cache_put(digest: Digest, crs: Arc<Crs>) {
    if let Ok(mut c) = cache().lock() {
        c.insert(digest.0, crs);
    }
}

/// The installed CRS of `digest`.
pub fn load(node: &Node, digest: &Digest) -> Result<Arc<Crs>> {
    if let Some(c) = cache().lock().ok().and_then(|c| c.get(&digest.0).cloned()) {
        return Ok(c);
    }
    let path = installed_path(node, digest);
    if !path.exists() {
        return Err(NodeError::NotFound(format!(
            "the he proof CRS {} is not installed here; install the file the network CA published: pdx he crs install --home HOME --file CRS --digest {}",
            digest.to_hex(),
            digest.to_hex()
        )));
    }
    let (found, _, crs) = read(node.suite, &path)?;
    if found != *digest {
        return Err(NodeError::corrupt(
            path.display().to_string(),
            format!("holds a CRS of digest {}", found.to_hex()),
        ));
    }
    let crs = Arc::new(crs);
    cache_put(found, crs.clone());
    Ok(crs)
}

/// A CRS file given offline (`pdx he verify-sum --crs`), checked against
/// the digest the query names.
pub fn from_file(suite: Suite, path: &Path, digest: &Digest) -> Result<Crs> {
    let (found, _, crs) = read(suite, path)?;
    if found != *digest {
        return Err(NodeError::Refused(format!(
            "{}: CRS digest {}, the query names {}",
            path.display(),
            found.to_hex(),
            digest.to_hex()
        )));
    }
    Ok(crs)
}
