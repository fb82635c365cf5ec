//! RFC 6962 / RFC 9162 Merkle tree: hashing, roots, inclusion and consistency proofs.
//!
//! `[ leaf 0 ] [ leaf 1 ] ... [ leaf n-1 ]  ->  root`, where a leaf hash is
//! `SHA-256(0x00 || data)` and an interior node is `SHA-256(0x01 || left || right)`.
//!
//! [`MerkleTree`] keeps every level of the tree so that a proof for any leaf of a
//! million-entry log costs a few dozen look-ups, not a rehash of the log.
//! [`CompactRange`] keeps only the O(log n) perfect subtrees on the right edge, enough to
//! compute the root while streaming entries (what the verifier does).

use crate::hash::Hash;
use sha2::{Digest, Sha256};

/// Why a Merkle proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not inside a tree of size {size}")]
    IndexOutOfRange {
        /// Index asked for.
        index: u64,
        /// Size of the tree.
        size: u64,
    },
    /// The proof has more or fewer hashes than the tree shape requires.
    #[error("proof has {got} hashes, a proof for this position needs {want}")]
    WrongLength {
        /// Hashes given.
        got: usize,
        /// Hashes required.
        want: usize,
    },
    /// The second tree is smaller than the first.
    #[error("consistency from size {size1} to the smaller size {size2} is meaningless")]
    ShrinkingTree {
        /// Older size.
        size1: u64,
        /// Newer size.
        size2: u64,
    },
    /// The proof does not lead to the expected root.
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    /// Consistency with the empty tree was asked for; it proves nothing.
    #[error("a consistency proof from the empty tree proves nothing")]
    EmptyTree,
    /// A hash in the proof, or a root, is not 32 bytes.
    #[error("{0} is not a 32-byte SHA-256 hash")]
    BadHash(&'static str),
    /// The proof needs a node of the part of the tree that a tree resumed from its right edge
    /// does not hold (leaves before the edge).
    #[error(
        "the proof needs the subtree {lo}..{hi}, which this tree (resumed from its right edge at size {edge}) does not hold"
    )]
    Pruned {
        /// First leaf of the subtree.
        lo: u64,
        /// One past its last leaf.
        hi: u64,
        /// Size of the edge the tree was resumed from.
        edge: u64,
    },
}

/// Hash of a leaf: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    Hash(h.finalize().into())
}

/// Hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// Root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// The largest power of two strictly smaller than `n` (n >= 2): RFC 6962's split point `k`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (n - 1).ilog2()
}

/// The right edge of a tree: the roots of its perfect subtrees, largest (leftmost) first.
///
/// Appending is amortised O(1) hashing and the state is O(log n), so a verifier can stream
/// a log of any length and still learn the root at every size it cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// `(height, hash)` of each perfect subtree; heights strictly decrease.
    peaks: Vec<(u32, Hash)>,
}

impl CompactRange {
    /// An empty range (tree of size 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        // Merge equal-height peaks, exactly as the binary counter of `size` carries.
        while let Some(&(height, left)) = self.peaks.last() {
            if height != node.0 {
                break;
            }
            self.peaks.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.peaks.push(node);
        self.size += 1;
    }

    /// The peaks' hashes, largest (leftmost) subtree first: with [`Self::size`], everything
    /// needed to resume appending ([`Self::from_peaks`]).
    pub fn peaks(&self) -> impl Iterator<Item = Hash> + '_ {
        self.peaks.iter().map(|&(_, h)| h)
    }

    /// The right edge of a tree of `size` leaves from its peaks' hashes (as [`Self::peaks`]
    /// gives them); `None` if their number is not the number of one bits in `size`.
    pub fn from_peaks(size: u64, hashes: &[Hash]) -> Option<Self> {
        if hashes.len() != size.count_ones() as usize {
            return None;
        }
        let heights = (0..u64::BITS).rev().filter(|h| size & (1 << h) != 0);
        Some(Self {
            size,
            peaks: heights.zip(hashes.iter().copied()).collect(),
        })
    }

    /// Root of the tree of the leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, last)) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(last, |acc, (_, left)| node_hash(left, &acc))
    }
}

/// A Merkle tree that keeps every level, for building proofs.
///
/// Memory is about 64 bytes per leaf (the leaf hash plus the interior levels above it).
/// A tree resumed from a right edge ([`Self::from_edge`]) holds only the edge's peaks and
/// what was appended since: memory O(log n + appended), and roots and consistency proofs from
/// the edge's size onwards, which is all a writer needs.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    /// `levels[h][i]` is the root of the perfect subtree of height `h` covering leaves
    /// `(offsets[h] + i) * 2^h .. (offsets[h] + i + 1) * 2^h`; only complete subtrees are
    /// stored.
    levels: Vec<Vec<Hash>>,
    /// Index of each level's first stored node (all zero unless resumed from an edge).
    offsets: Vec<u64>,
    /// Size of the edge the tree was resumed from (0 for a whole tree).
    edge: u64,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree that continues from a right edge: the peaks of the first `edge.size()` leaves.
    pub fn from_edge(edge: &CompactRange) -> Self {
        let size = edge.size();
        let height = u64::BITS - size.leading_zeros();
        let mut tree = Self {
            levels: vec![Vec::new(); height.max(1) as usize],
            // Level h holds size >> h complete nodes; a peak is the last of them.
            offsets: (0..height.max(1)).map(|h| size >> h).collect(),
            edge: size,
        };
        for &(h, hash) in &edge.peaks {
            let h = h as usize;
            tree.offsets[h] -= 1;
            tree.levels[h].push(hash);
        }
        tree
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.level_count(0)
    }

    /// Size of the edge the tree was resumed from (0 for a whole tree).
    pub fn edge_size(&self) -> u64 {
        self.edge
    }

    /// Nodes at level `h`, those before the stored ones included.
    fn level_count(&self, h: usize) -> u64 {
        self.offsets.get(h).copied().unwrap_or(0) + self.levels.get(h).map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash (not the leaf data: callers hash with [`leaf_hash`]).
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
            self.offsets.push(0);
        }
        self.levels[0].push(leaf);
        let mut height = 0;
        // A new perfect subtree completes whenever the level below gains an even count. Its
        // left sibling is always stored: an edge's peak at a level is a left child.
        while self.level_count(height).is_multiple_of(2) {
            let len = self.levels[height].len();
            let parent = node_hash(&self.levels[height][len - 2], &self.levels[height][len - 1]);
            if self.levels.len() == height + 1 {
                self.offsets.push(self.level_count(height) / 2 - 1);
                self.levels.push(Vec::new());
            }
            self.levels[height + 1].push(parent);
            height += 1;
        }
    }

    /// The right edge of the first `size` leaves (`None` if beyond the tree, or before the
    /// edge a resumed tree started from, unless it is that edge).
    pub fn edge_at(&self, size: u64) -> Option<CompactRange> {
        if size > self.size() {
            return None;
        }
        let mut peaks = Vec::new();
        let mut lo = 0;
        for h in (0..u64::BITS).rev().filter(|h| size & (1 << h) != 0) {
            peaks.push((h, self.node(h as usize, lo >> h)?));
            lo += 1 << h;
        }
        Some(CompactRange { size, peaks })
    }

    /// Leaf hash at `index`, if present (and held).
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.node(0, index)
    }

    /// The stored node `index` of level `height`, if held.
    fn node(&self, height: usize, index: u64) -> Option<Hash> {
        let at = usize::try_from(index.checked_sub(*self.offsets.get(height)?)?).ok()?;
        self.levels.get(height)?.get(at).copied()
    }

    /// Root of the whole tree.
    pub fn root(&self) -> Hash {
        self.root_at(self.size()).unwrap_or_else(empty_root)
    }

    /// Root of the tree of the first `size` leaves; `None` if `size` exceeds the tree (or, for
    /// a tree resumed from an edge, precedes the edge).
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        if size > self.size() {
            return None;
        }
        if size == 0 {
            return Some(empty_root());
        }
        self.subtree(0, size).ok()
    }

    /// `MTH(D[lo:hi])` for `lo < hi <= size`, where `lo` is aligned as RFC 6962's recursion
    /// guarantees (a multiple of the largest power of two not above `hi - lo`).
    fn subtree(&self, lo: u64, hi: u64) -> Result<Hash, ProofError> {
        let n = hi - lo;
        if n.is_power_of_two() {
            let height = n.trailing_zeros() as usize;
            return self.node(height, lo >> height).ok_or(ProofError::Pruned {
                lo,
                hi,
                edge: self.edge,
            });
        }
        let k = split_point(n);
        Ok(node_hash(
            &self.subtree(lo, lo + k)?,
            &self.subtree(lo + k, hi)?,
        ))
    }

    /// Inclusion proof (RFC 6962 `PATH`) for leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if index >= size || size > self.size() {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof)?;
        Ok(proof)
    }

    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) -> Result<(), ProofError> {
        let n = hi - lo;
        if n <= 1 {
            return Ok(());
        }
        let k = split_point(n);
        if m < k {
            self.path(m, lo, lo + k, out)?;
            out.push(self.subtree(lo + k, hi)?);
        } else {
            self.path(m - k, lo + k, hi, out)?;
            out.push(self.subtree(lo, lo + k)?);
        }
        Ok(())
    }

    /// Consistency proof (RFC 6962 `PROOF`) between the trees of sizes `size1 <= size2`.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, ProofError> {
        if size1 > size2 {
            return Err(ProofError::ShrinkingTree { size1, size2 });
        }
        if size2 > self.size() {
            return Err(ProofError::IndexOutOfRange {
                index: size2,
                size: self.size(),
            });
        }
        let mut proof = Vec::new();
        if size1 > 0 && size1 < size2 {
            self.subproof(size1, 0, size2, true, &mut proof)?;
        }
        Ok(proof)
    }

    fn subproof(
        &self,
        m: u64,
        lo: u64,
        hi: u64,
        whole: bool,
        out: &mut Vec<Hash>,
    ) -> Result<(), ProofError> {
        let n = hi - lo;
        if m == n {
            if !whole {
                out.push(self.subtree(lo, hi)?);
            }
            return Ok(());
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, lo, lo + k, whole, out)?;
            out.push(self.subtree(lo + k, hi)?);
        } else {
            self.subproof(m - k, lo + k, hi, false, out)?;
            out.push(self.subtree(lo, lo + k)?);
        }
        Ok(())
    }
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves whose root is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_proof_len(index, size);
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n == 0 && r == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Number of hashes in an inclusion proof for `index` in a tree of `size` leaves.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    // Levels where the path has a sibling: the bits below the highest differing bit of
    // `index` and `size - 1` (inner), plus the set bits of `index` above it (border).
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = (index >> inner).count_ones();
    (inner + border) as usize
}

/// Consistency is only asked of a non-empty tree and a tree at least as large.
fn check_sizes(size1: u64, size2: u64) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::ShrinkingTree { size1, size2 });
    }
    if size1 == 0 {
        // Every tree extends the empty one: a proof from it proves nothing, so it is refused
        // rather than accepted vacuously (as the reference implementation does).
        return Err(ProofError::EmptyTree);
    }
    Ok(())
}

/// Two trees of one size are consistent exactly when their roots are equal and the proof empty.
fn same_size(proof_len: usize, roots_equal: bool) -> Result<(), ProofError> {
    if proof_len != 0 {
        return Err(ProofError::WrongLength {
            got: proof_len,
            want: 0,
        });
    }
    if roots_equal {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Verifies that the tree of `size1` leaves with root `root1` is a prefix of the tree of
/// `size2` leaves with root `root2` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    check_sizes(size1, size2)?;
    if size1 == size2 {
        return same_size(proof.len(), root1 == root2);
    }
    let Some((first, rest)) = proof.split_first() else {
        return Err(ProofError::WrongLength { got: 0, want: 1 });
    };
    // When size1 is a power of two the old root is itself a node of the new tree and the
    // proof omits it; walk as if it had been given first.
    let (seed, path) = if size1.is_power_of_two() {
        (root1, proof)
    } else {
        (first, rest)
    };
    let (mut f_n, mut s_n) = (size1 - 1, size2 - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in path {
        if s_n == 0 {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: proof.len() - 1,
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n == 0 && fr == *root1 && sr == *root2 {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

fn hashes_from_bytes(proof: &[Vec<u8>]) -> Result<Vec<Hash>, ProofError> {
    proof
        .iter()
        .map(|p| Hash::from_slice(p).map_err(|_| ProofError::BadHash("a proof hash")))
        .collect()
}

/// [`verify_inclusion`] on untyped bytes, as they arrive in a proof bundle: every hash must be
/// 32 bytes.
pub fn verify_inclusion_bytes(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[Vec<u8>],
    root: &[u8],
) -> Result<(), ProofError> {
    let leaf = Hash::from_slice(leaf).map_err(|_| ProofError::BadHash("the leaf hash"))?;
    let root = Hash::from_slice(root).map_err(|_| ProofError::BadHash("the root"))?;
    verify_inclusion(index, size, &leaf, &hashes_from_bytes(proof)?, &root)
}

/// [`verify_consistency`] on untyped bytes. Two trees of the same size are consistent exactly
/// when their roots are the same bytes (no hashing is involved, so no length is required), as
/// in the reference implementation; otherwise every hash must be 32 bytes.
pub fn verify_consistency_bytes(
    size1: u64,
    size2: u64,
    proof: &[Vec<u8>],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), ProofError> {
    check_sizes(size1, size2)?;
    if size1 == size2 {
        return same_size(proof.len(), root1 == root2);
    }
    let r1 = Hash::from_slice(root1).map_err(|_| ProofError::BadHash("the first root"))?;
    let r2 = Hash::from_slice(root2).map_err(|_| ProofError::BadHash("the second root"))?;
    verify_consistency(size1, size2, &hashes_from_bytes(proof)?, &r1, &r2)
}

#[cfg(test)]
mod tests;
