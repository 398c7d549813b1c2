//! RFC 9162 (RFC 6962) Merkle trees with the hash function as a parameter.
//!
//! `leaf = H(0x00 || data)`, `node = H(0x01 || left || right)`, empty tree `H("")`.
//! Logs use BLAKE3 ([`Blake3`], suite `intl`) or SM3 ([`Sm3`], suite `gm`),
//! fixed at genesis; the RFC 6962 known-answer vectors run the same code with
//! SHA-256 ([`Sha256`]). The `*_in` functions pick the hash of a suite at run
//! time and call the monomorphised code.
//!
//! Trees are addressed by *perfect subtrees*: node `(level, index)` covers leaves
//! `[index << level, (index + 1) << level)`. A store keeps every perfect subtree
//! that is complete; proofs and roots of any size are built from those plus a
//! short recursion along the right edge, exactly as RFC 9162 section 2.1 defines
//! `MTH`, `PATH` and `SUBPROOF`. Verification follows the transparency-dev
//! algorithm (decomposition into inner and border parts).

use pdx_crypto::Suite;
use sm3::Digest as _;
use thiserror::Error;

/// A 32-byte tree hash.
pub type Hash = [u8; 32];

/// The hash function of a tree.
pub trait MerkleHasher {
    /// Hash of the empty tree, `H("")`.
    fn empty() -> Hash;
    /// `H(0x00 || data)`.
    fn leaf(data: &[u8]) -> Hash;
    /// `H(0x01 || left || right)`.
    fn node(left: &Hash, right: &Hash) -> Hash;
}

/// BLAKE3 (production).
#[derive(Debug, Clone, Copy)]
pub struct Blake3;

impl MerkleHasher for Blake3 {
    fn empty() -> Hash {
        *blake3::hash(b"").as_bytes()
    }
    fn leaf(data: &[u8]) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(&[0]);
        h.update(data);
        *h.finalize().as_bytes()
    }
    fn node(left: &Hash, right: &Hash) -> Hash {
        let mut buf = [0u8; 65];
        buf[0] = 1;
        buf[1..33].copy_from_slice(left);
        buf[33..].copy_from_slice(right);
        *blake3::hash(&buf).as_bytes()
    }
}

/// SM3 (GB/T 32905), the `gm` suite's log hash.
#[derive(Debug, Clone, Copy)]
pub struct Sm3;

impl MerkleHasher for Sm3 {
    fn empty() -> Hash {
        sm3::Sm3::digest(b"").into()
    }
    fn leaf(data: &[u8]) -> Hash {
        let mut h = sm3::Sm3::new();
        h.update([0u8]);
        h.update(data);
        h.finalize().into()
    }
    fn node(left: &Hash, right: &Hash) -> Hash {
        let mut h = sm3::Sm3::new();
        h.update([1u8]);
        h.update(left);
        h.update(right);
        h.finalize().into()
    }
}

/// Runs `$body` with `$h` the tree hash of `$suite`.
macro_rules! with_hasher {
    ($suite:expr, $h:ident => $body:expr) => {
        match $suite {
            Suite::Intl => {
                type $h = Blake3;
                $body
            }
            Suite::Gm => {
                type $h = Sm3;
                $body
            }
        }
    };
}

/// `leaf = H(0x00 || data)` with the tree hash of `suite`.
pub fn leaf_in(suite: Suite, data: &[u8]) -> Hash {
    with_hasher!(suite, H => H::leaf(data))
}

/// `node = H(0x01 || left || right)` with the tree hash of `suite`.
pub fn node_in(suite: Suite, left: &Hash, right: &Hash) -> Hash {
    with_hasher!(suite, H => H::node(left, right))
}

/// [`root`] with the tree hash of `suite`.
pub fn root_in<S: NodeSource + ?Sized>(
    suite: Suite,
    src: &S,
    size: u64,
) -> Result<Hash, ProofError> {
    with_hasher!(suite, H => root::<H, S>(src, size))
}

/// [`inclusion_proof`] with the tree hash of `suite`.
pub fn inclusion_proof_in<S: NodeSource + ?Sized>(
    suite: Suite,
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    with_hasher!(suite, H => inclusion_proof::<H, S>(src, index, size))
}

/// [`consistency_proof`] with the tree hash of `suite`.
pub fn consistency_proof_in<S: NodeSource + ?Sized>(
    suite: Suite,
    src: &S,
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, ProofError> {
    with_hasher!(suite, H => consistency_proof::<H, S>(src, size1, size2))
}

/// [`verify_inclusion`] with the tree hash of `suite`.
pub fn verify_inclusion_in<P: AsRef<[u8]>>(
    suite: Suite,
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[P],
    root: &[u8],
) -> Result<(), ProofError> {
    with_hasher!(suite, H => verify_inclusion::<H, P>(index, size, leaf_hash, proof, root))
}

/// [`verify_consistency`] with the tree hash of `suite`.
pub fn verify_consistency_in<P: AsRef<[u8]>>(
    suite: Suite,
    size1: u64,
    size2: u64,
    proof: &[P],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), ProofError> {
    with_hasher!(suite, H => verify_consistency::<H, P>(size1, size2, proof, root1, root2))
}

/// SHA-256 (ring), for the RFC 6962 known-answer vectors.
#[derive(Debug, Clone, Copy)]
pub struct Sha256;

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl MerkleHasher for Sha256 {
    fn empty() -> Hash {
        sha256(&[])
    }
    fn leaf(data: &[u8]) -> Hash {
        sha256(&[&[0], data])
    }
    fn node(left: &Hash, right: &Hash) -> Hash {
        sha256(&[&[1], left, right])
    }
}

/// Why a proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has {got} hashes, expected {want}")]
    WrongLength {
        /// Hashes given.
        got: usize,
        /// Hashes needed.
        want: usize,
    },
    /// A proof element or leaf hash is not 32 bytes.
    #[error("a hash in the proof is {0} bytes, expected 32")]
    BadHashLength(usize),
    /// The recomputed root differs from the claimed root.
    #[error("recomputed root does not match the claimed root")]
    RootMismatch,
    /// The second tree is smaller than the first.
    #[error("tree size {size2} is smaller than {size1}")]
    SizeDecreased {
        /// First size.
        size1: u64,
        /// Second size.
        size2: u64,
    },
    /// Consistency with the empty tree proves nothing and is refused.
    #[error("a consistency proof from the empty tree proves nothing")]
    EmptyFirstTree,
    /// Equal sizes need an empty proof.
    #[error("equal tree sizes need an empty proof")]
    NonEmptyProofForEqualSizes,
    /// The storage behind the tree failed or lacks a node.
    #[error("tree node ({level}, {index}) is unavailable: {reason}")]
    MissingNode {
        /// Level.
        level: u8,
        /// Index.
        index: u64,
        /// Why.
        reason: String,
    },
}

/// Where perfect-subtree hashes come from (memory, RocksDB, a verifier's frontier).
pub trait NodeSource {
    /// Hash of the complete perfect subtree `(level, index)`.
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError>;
}

fn largest_power_of_two_below(n: u64) -> u64 {
    // n >= 2 here.
    1u64 << (63 - (n - 1).leading_zeros())
}

/// `MTH(D[lo..hi])` from stored perfect subtrees.
pub fn subtree_root<H: MerkleHasher, S: NodeSource + ?Sized>(
    src: &S,
    lo: u64,
    hi: u64,
) -> Result<Hash, ProofError> {
    let n = hi - lo;
    if n == 0 {
        return Ok(H::empty());
    }
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        return src.node(n.trailing_zeros() as u8, lo >> n.trailing_zeros());
    }
    let k = largest_power_of_two_below(n);
    let left = subtree_root::<H, S>(src, lo, lo + k)?;
    let right = subtree_root::<H, S>(src, lo + k, hi)?;
    Ok(H::node(&left, &right))
}

/// Root of the tree of `size` leaves.
pub fn root<H: MerkleHasher, S: NodeSource + ?Sized>(
    src: &S,
    size: u64,
) -> Result<Hash, ProofError> {
    subtree_root::<H, S>(src, 0, size)
}

/// `PATH(index, D[0..size])`: the inclusion proof of leaf `index`.
pub fn inclusion_proof<H: MerkleHasher, S: NodeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::with_capacity(64);
    path::<H, S>(src, index, 0, size, &mut proof)?;
    Ok(proof)
}

fn path<H: MerkleHasher, S: NodeSource + ?Sized>(
    src: &S,
    m: u64,
    lo: u64,
    hi: u64,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = hi - lo;
    if n <= 1 {
        return Ok(());
    }
    let k = largest_power_of_two_below(n);
    if m < lo + k {
        path::<H, S>(src, m, lo, lo + k, out)?;
        out.push(subtree_root::<H, S>(src, lo + k, hi)?);
    } else {
        path::<H, S>(src, m, lo + k, hi, out)?;
        out.push(subtree_root::<H, S>(src, lo, lo + k)?);
    }
    Ok(())
}

/// `PROOF(size1, D[0..size2])`: the consistency proof between two sizes.
pub fn consistency_proof<H: MerkleHasher, S: NodeSource + ?Sized>(
    src: &S,
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizeDecreased { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::EmptyFirstTree);
    }
    let mut proof = Vec::with_capacity(64);
    if size1 < size2 {
        subproof::<H, S>(src, size1, 0, size2, true, &mut proof)?;
    }
    Ok(proof)
}

fn subproof<H: MerkleHasher, S: NodeSource + ?Sized>(
    src: &S,
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push(subtree_root::<H, S>(src, lo, hi)?);
        }
        return Ok(());
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        subproof::<H, S>(src, m, lo, lo + k, whole, out)?;
        out.push(subtree_root::<H, S>(src, lo + k, hi)?);
    } else {
        subproof::<H, S>(src, m - k, lo + k, hi, false, out)?;
        out.push(subtree_root::<H, S>(src, lo, lo + k)?);
    }
    Ok(())
}

fn as_hash(b: &[u8]) -> Result<Hash, ProofError> {
    <Hash>::try_from(b).map_err(|_| ProofError::BadHashLength(b.len()))
}

fn decompose(index: u64, size: u64) -> (usize, usize) {
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    (inner, border)
}

fn chain_inner<H: MerkleHasher>(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        seed = if (index >> i) & 1 == 0 {
            H::node(&seed, h)
        } else {
            H::node(h, &seed)
        };
    }
    seed
}

fn chain_inner_right<H: MerkleHasher>(mut seed: Hash, proof: &[Hash], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        if (index >> i) & 1 == 1 {
            seed = H::node(h, &seed);
        }
    }
    seed
}

fn chain_border_right<H: MerkleHasher>(mut seed: Hash, proof: &[Hash]) -> Hash {
    for h in proof {
        seed = H::node(h, &seed);
    }
    seed
}

fn parse_proof<P: AsRef<[u8]>>(proof: &[P]) -> Result<Vec<Hash>, ProofError> {
    proof.iter().map(|p| as_hash(p.as_ref())).collect()
}

/// Recomputes the root from an inclusion proof.
pub fn root_from_inclusion_proof<H: MerkleHasher, P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[P],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let leaf = as_hash(leaf_hash)?;
    let (inner, border) = decompose(index, size);
    if proof.len() != inner + border {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: inner + border,
        });
    }
    let proof = parse_proof(proof)?;
    let r = chain_inner::<H>(leaf, &proof[..inner], index);
    Ok(chain_border_right::<H>(r, &proof[inner..]))
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` with `root`.
pub fn verify_inclusion<H: MerkleHasher, P: AsRef<[u8]>>(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[P],
    root: &[u8],
) -> Result<(), ProofError> {
    let calc = root_from_inclusion_proof::<H, P>(index, size, leaf_hash, proof)?;
    if calc.as_slice() == root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies that the tree of `size2` with `root2` extends the tree of `size1`
/// with `root1`. A first tree of size 0 is refused: it proves nothing.
pub fn verify_consistency<H: MerkleHasher, P: AsRef<[u8]>>(
    size1: u64,
    size2: u64,
    proof: &[P],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), ProofError> {
    if size2 < size1 {
        return Err(ProofError::SizeDecreased { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::EmptyFirstTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::NonEmptyProofForEqualSizes);
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongLength { got: 0, want: 1 });
    }
    let proof = parse_proof(proof)?;
    let (inner, border) = decompose(size1 - 1, size2);
    let shift = size1.trailing_zeros() as usize;
    let inner = inner - shift; // shift < inner when size1 < size2
    let (seed, start) = if size1 == 1u64 << shift {
        (as_hash(root1)?, 0)
    } else {
        (proof[0], 1)
    };
    if proof.len() != start + inner + border {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: start + inner + border,
        });
    }
    let rest = &proof[start..];
    let mask = (size1 - 1) >> shift;
    let h1 = chain_border_right::<H>(
        chain_inner_right::<H>(seed, &rest[..inner], mask),
        &rest[inner..],
    );
    if h1.as_slice() != root1 {
        return Err(ProofError::RootMismatch);
    }
    let h2 = chain_border_right::<H>(chain_inner::<H>(seed, &rest[..inner], mask), &rest[inner..]);
    if h2.as_slice() != root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The right edge of a tree: one perfect-subtree hash per set bit of the size,
/// largest first. Enough to append leaves and compute the root in O(log n)
/// memory; the verifier and the log writer both use it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(level, hash)`, levels strictly decreasing.
    nodes: Vec<(u8, Hash)>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds from stored parts; `None` if the levels do not match `size`.
    pub fn from_parts(size: u64, nodes: Vec<(u8, Hash)>) -> Option<Self> {
        let mut expect = Vec::new();
        for level in (0..64u8).rev() {
            if size >> level & 1 == 1 {
                expect.push(level);
            }
        }
        let levels: Vec<u8> = nodes.iter().map(|n| n.0).collect();
        (levels == expect).then_some(Frontier { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The `(level, hash)` parts, largest subtree first.
    pub fn nodes(&self) -> &[(u8, Hash)] {
        &self.nodes
    }

    /// Appends a leaf hash; calls `completed(level, index, hash)` for every
    /// perfect subtree the append completes (the leaf itself first).
    pub fn push<H: MerkleHasher>(&mut self, leaf: Hash, mut completed: impl FnMut(u8, u64, &Hash)) {
        let index = self.size;
        completed(0, index, &leaf);
        let mut level = 0u8;
        let mut hash = leaf;
        while let Some(&(top_level, top)) = self.nodes.last() {
            if top_level != level {
                break;
            }
            self.nodes.pop();
            hash = H::node(&top, &hash);
            level += 1;
            completed(level, index >> level, &hash);
        }
        self.nodes.push((level, hash));
        self.size += 1;
    }

    /// [`Frontier::push`] with the tree hash of `suite`.
    pub fn push_in(&mut self, suite: Suite, leaf: Hash, completed: impl FnMut(u8, u64, &Hash)) {
        with_hasher!(suite, H => self.push::<H>(leaf, completed))
    }

    /// [`Frontier::root`] with the tree hash of `suite`.
    pub fn root_in(&self, suite: Suite) -> Hash {
        with_hasher!(suite, H => self.root::<H>())
    }

    /// The root hash.
    pub fn root<H: MerkleHasher>(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return H::empty();
        };
        for (_, h) in iter {
            acc = H::node(h, &acc);
        }
        acc
    }
}

/// A whole tree in memory (tests, small logs).
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
}

impl MemoryTree {
    /// Empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the leaf for `data`.
    pub fn push_data<H: MerkleHasher>(&mut self, data: &[u8]) {
        self.push_leaf_hash::<H>(H::leaf(data));
    }

    /// Appends a leaf hash.
    pub fn push_leaf_hash<H: MerkleHasher>(&mut self, leaf: Hash) {
        let levels = &mut self.levels;
        self.frontier.push::<H>(leaf, |level, index, hash| {
            let level = usize::from(level);
            if levels.len() <= level {
                levels.resize(level + 1, Vec::new());
            }
            debug_assert_eq!(levels[level].len() as u64, index);
            levels[level].push(*hash);
        });
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Root of the current tree.
    pub fn root<H: MerkleHasher>(&self) -> Hash {
        self.frontier.root::<H>()
    }
}

impl NodeSource for MemoryTree {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        self.levels
            .get(usize::from(level))
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(ProofError::MissingNode {
                level,
                index,
                reason: "not in memory".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_root<H: MerkleHasher>(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => H::empty(),
            1 => H::leaf(&leaves[0]),
            n => {
                let k = largest_power_of_two_below(n as u64) as usize;
                H::node(
                    &naive_root::<H>(&leaves[..k]),
                    &naive_root::<H>(&leaves[k..]),
                )
            }
        }
    }

    #[test]
    fn frontier_root_matches_the_recursive_definition() {
        let leaves: Vec<Vec<u8>> = (0..70u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut tree = MemoryTree::new();
        for (i, l) in leaves.iter().enumerate() {
            tree.push_data::<Blake3>(l);
            let want = naive_root::<Blake3>(&leaves[..=i]);
            assert_eq!(tree.root::<Blake3>(), want);
            assert_eq!(root::<Blake3, _>(&tree, i as u64 + 1).ok(), Some(want));
        }
    }

    #[test]
    fn frontier_from_parts_checks_levels() {
        let mut f = Frontier::new();
        for i in 0..5u8 {
            f.push::<Blake3>([i; 32], |_, _, _| {});
        }
        assert!(Frontier::from_parts(5, f.nodes().to_vec()).is_some());
        assert!(Frontier::from_parts(6, f.nodes().to_vec()).is_none());
    }
}
