//! Merkle tree tests: the transparency-dev/merkle vectors (every file), the reference tree,
//! and property tests that proofs built here verify here and fail when disturbed.

use super::*;
use proptest::prelude::*;
use serde::Deserialize;
use std::path::{Path, PathBuf};

fn vectors_dir() -> PathBuf {
    // Cargo sets the variable when it runs a test too; that value is this checkout's, while the
    // compile-time one is wherever the binary was built (the build cache is shared between
    // checkouts, so a fresh binary may come from another path).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("testdata/merkle")
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
    out
}

use base64::Engine as _;

/// A vector's base64 value as raw bytes (a missing value is empty); lengths are the
/// verifier's to judge.
fn bytes(s: Option<&String>) -> Vec<u8> {
    s.map(|s| base64::engine::general_purpose::STANDARD.decode(s).unwrap())
        .unwrap_or_default()
}

fn proof_bytes(v: Option<&Vec<String>>) -> Vec<Vec<u8>> {
    v.map(|v| v.iter().map(|s| bytes(Some(s))).collect())
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionVector {
    leaf_idx: u64,
    tree_size: u64,
    root: Option<String>,
    leaf_hash: Option<String>,
    proof: Option<Vec<String>>,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsistencyVector {
    size1: u64,
    size2: u64,
    root1: Option<String>,
    root2: Option<String>,
    proof: Option<Vec<String>>,
    want_err: bool,
}

#[test]
fn every_inclusion_vector_agrees() {
    let files = json_files(&vectors_dir().join("inclusion"));
    let (mut accepted, mut rejected) = (0, 0);
    for file in &files {
        let v: InclusionVector =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let ok = verify_inclusion_bytes(
            v.leaf_idx,
            v.tree_size,
            &bytes(v.leaf_hash.as_ref()),
            &proof_bytes(v.proof.as_ref()),
            &bytes(v.root.as_ref()),
        )
        .is_ok();
        assert_eq!(ok, !v.want_err, "{}", file.display());
        if ok { accepted += 1 } else { rejected += 1 }
    }
    // The vector set as ported: a count that changes means vectors went missing or were added.
    assert_eq!(files.len(), 98, "inclusion vectors found");
    assert!(
        accepted > 0 && rejected > 0,
        "{accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn every_consistency_vector_agrees() {
    let files = json_files(&vectors_dir().join("consistency"));
    let (mut accepted, mut rejected) = (0, 0);
    for file in &files {
        let v: ConsistencyVector =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let ok = verify_consistency_bytes(
            v.size1,
            v.size2,
            &proof_bytes(v.proof.as_ref()),
            &bytes(v.root1.as_ref()),
            &bytes(v.root2.as_ref()),
        )
        .is_ok();
        assert_eq!(ok, !v.want_err, "{}", file.display());
        if ok { accepted += 1 } else { rejected += 1 }
    }
    assert_eq!(files.len(), 98, "consistency vectors found");
    assert!(
        accepted > 0 && rejected > 0,
        "{accepted} accepted, {rejected} rejected"
    );
}

#[derive(Deserialize)]
struct ReferenceTree {
    leaf_inputs_hex: Vec<String>,
    root_hashes_hex_by_tree_size_from_1: Vec<String>,
}

#[test]
fn reference_tree_roots_and_proofs() {
    let r: ReferenceTree = serde_json::from_str(
        &std::fs::read_to_string(vectors_dir().join("reference-tree.json")).unwrap(),
    )
    .unwrap();
    let mut tree = MerkleTree::new();
    let mut range = CompactRange::new();
    assert_eq!(tree.root(), empty_root());
    assert_eq!(range.root(), empty_root());
    for (input, want) in r
        .leaf_inputs_hex
        .iter()
        .zip(&r.root_hashes_hex_by_tree_size_from_1)
    {
        let leaf = leaf_hash(&hex::decode(input).unwrap());
        tree.push(leaf);
        range.push(leaf);
        assert_eq!(tree.root().to_hex(), *want);
        assert_eq!(range.root().to_hex(), *want);
    }
    // Proofs built by this tree for every position verify against the published roots.
    let roots: Vec<Hash> = r
        .root_hashes_hex_by_tree_size_from_1
        .iter()
        .map(|h| Hash::from_hex(h).unwrap())
        .collect();
    for size in 1..=8u64 {
        let root = roots[usize::try_from(size).unwrap() - 1];
        for index in 0..size {
            let proof = tree.inclusion_proof(index, size).unwrap();
            verify_inclusion(index, size, &tree.leaf(index).unwrap(), &proof, &root).unwrap();
        }
        for size1 in 1..=size {
            let proof = tree.consistency_proof(size1, size).unwrap();
            verify_consistency(
                size1,
                size,
                &proof,
                &roots[usize::try_from(size1).unwrap() - 1],
                &root,
            )
            .unwrap();
        }
    }
}

fn tree_of(n: u64) -> MerkleTree {
    let mut tree = MerkleTree::new();
    for i in 0..n {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    tree
}

proptest! {
    #[test]
    fn inclusion_proofs_verify_and_detect_changes(n in 1u64..300, seed in any::<u64>(), flip in any::<usize>()) {
        let tree = tree_of(n);
        let index = seed % n;
        let root = tree.root();
        let leaf = tree.leaf(index).unwrap();
        let proof = tree.inclusion_proof(index, n).unwrap();
        prop_assert!(verify_inclusion(index, n, &leaf, &proof, &root).is_ok());
        // A proof is small: at most ceil(log2 n) hashes.
        prop_assert!(proof.len() <= 64 - (n - 1).leading_zeros() as usize);
        prop_assert!(verify_inclusion(index, n, &leaf_hash(b"other"), &proof, &root).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = flip % bad.len();
            bad[i].0[0] ^= 1;
            prop_assert!(verify_inclusion(index, n, &leaf, &bad, &root).is_err());
        }
        if n > 1 {
            prop_assert!(verify_inclusion((index + 1) % n, n, &leaf, &proof, &root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_detect_forks(n in 1u64..300, m_seed in any::<u64>()) {
        let tree = tree_of(n);
        let m = 1 + m_seed % n;
        let proof = tree.consistency_proof(m, n).unwrap();
        let (r1, r2) = (tree.root_at(m).unwrap(), tree.root());
        prop_assert!(verify_consistency(m, n, &proof, &r1, &r2).is_ok());
        // A fork: the same old size, a different history.
        let mut forked = tree_of(m - 1);
        forked.push(leaf_hash(b"forged"));
        if m < n || forked.root() != r1 {
            prop_assert!(verify_consistency(m, n, &proof, &forked.root(), &r2).is_err());
        }
    }

    #[test]
    fn compact_range_matches_full_tree(n in 0u64..600) {
        let tree = tree_of(n);
        let mut range = CompactRange::new();
        for i in 0..n {
            range.push(tree.leaf(i).unwrap());
        }
        prop_assert_eq!(range.root(), tree.root());
        prop_assert_eq!(range.size(), n);
    }

    /// A tree resumed from the right edge at `m` gives the same roots and consistency proofs
    /// as the whole tree from `m` on, and says so when asked for what it does not hold.
    #[test]
    fn a_tree_resumed_from_its_edge_matches_the_whole_tree(n in 0u64..600, m_seed in any::<u64>(), k_seed in any::<u64>()) {
        let whole = tree_of(n);
        let m = m_seed % (n + 1);
        let mut edge = CompactRange::new();
        for i in 0..m {
            edge.push(whole.leaf(i).unwrap());
        }
        let edge = CompactRange::from_peaks(m, &edge.peaks().collect::<Vec<_>>()).unwrap();
        let mut resumed = MerkleTree::from_edge(&edge);
        prop_assert_eq!(resumed.size(), m);
        prop_assert_eq!(resumed.root(), edge.root());
        for i in m..n {
            resumed.push(whole.leaf(i).unwrap());
        }
        prop_assert_eq!(resumed.size(), n);
        prop_assert_eq!(resumed.root(), whole.root());
        let k = m + k_seed % (n - m + 1);
        prop_assert_eq!(resumed.root_at(k), whole.root_at(k));
        if k > 0 {
            prop_assert_eq!(resumed.consistency_proof(k, n).unwrap(), whole.consistency_proof(k, n).unwrap());
        }
        // Leaves before the edge are not held: a proof that needs them is refused, no panic.
        if m >= 2 {
            prop_assert!(
                matches!(resumed.inclusion_proof(0, n), Err(ProofError::Pruned { .. })),
                "{:?}", resumed.inclusion_proof(0, n)
            );
        }
        // The number of peaks must fit the size.
        let peaks: Vec<Hash> = edge.peaks().collect();
        prop_assert_eq!(
            CompactRange::from_peaks(m + 1, &peaks).is_some(),
            (m + 1).count_ones() == m.count_ones()
        );
    }
}
