//! The log writer: appends chained entries, keeps the Merkle tree, and says which bundle
//! objects to write.
//!
//! `append -> [ entries ] -> take_bundles() -> store -> sign checkpoint`. The writer never does
//! I/O; the pipeline writes what [`RecordLog::take_bundles`] returns and then asks for a
//! checkpoint. Writing bundles before the checkpoint that covers them means a crash leaves at
//! worst entries beyond the newest checkpoint, never a checkpoint without its entries.

use crate::bundle::{BUNDLE_WIDTH, BundleError, decode_bundle, encode_bundle};
use crate::entry::{Entry, EntryBody, EntryError, RecordId};
use crate::hash::Hash;
use crate::layout::bundle_key;
use crate::merkle::{CompactRange, MerkleTree, ProofError, leaf_hash};
use crate::time::UnixTime;

/// Why the log could not be appended to or rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// An entry is malformed.
    #[error("entry {index}: {source}")]
    Entry {
        /// Position of the entry.
        index: u64,
        /// What is wrong with it.
        source: EntryError,
    },
    /// A bundle is malformed.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// An entry is not where its chain says it should be.
    #[error("entry {index}: {reason}")]
    Chain {
        /// Position of the entry.
        index: u64,
        /// What does not link up.
        reason: String,
    },
    /// A proof was asked for outside the tree.
    #[error(transparent)]
    Proof(#[from] ProofError),
}

/// An object the store must hold: key relative to the archive root, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleObject {
    /// Object key (see [`crate::bundle`]).
    pub key: String,
    /// Object bytes.
    pub bytes: Vec<u8>,
}

/// Whether `candidate` would be read in place of the bundle `ours` by a reader at the point
/// where `ours` goes: as many entries, the first at the same index naming the same previous
/// entry, each next one at the next index naming the one before. What a reader checks of a
/// bundle ([`RecordLog::check_bundle`]), against the state `ours` was written from.
pub fn follows_as(candidate: &[u8], ours: &[u8]) -> bool {
    let (Ok(theirs), Ok(mine)) = (decode_bundle(candidate), decode_bundle(ours)) else {
        return false;
    };
    let Some(Ok(start)) = mine.first().map(|bytes| Entry::decode(bytes)) else {
        return false;
    };
    if theirs.len() != mine.len() {
        return false;
    }
    let mut prev = start.prev;
    for (index, bytes) in (start.index..).zip(&theirs) {
        match Entry::decode(bytes) {
            Ok(entry) if entry.index == index && entry.prev == prev => prev = Hash::of(bytes),
            _ => return false,
        }
    }
    true
}

/// The log as its writer holds it.
#[derive(Debug, Default)]
pub struct RecordLog {
    tree: MerkleTree,
    /// SHA-256 of the last entry's bytes (zero for an empty log).
    head: Hash,
    /// Index of the first entry in `open`.
    open_start: u64,
    /// Entry bytes from the start of the bundle holding the first entry not yet handed out by
    /// `take_bundles`, up to the newest entry.
    open: Vec<Vec<u8>>,
    /// Entries up to this size were handed out by `take_bundles`.
    taken: u64,
}

impl RecordLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the writer from stored bundles, in order from bundle 0 (each the full bundle or
    /// the widest partial). Checks indices and the chain; signatures are the verifier's job.
    pub fn resume<'a>(bundles: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, LogError> {
        Self::resume_from_edge(&CompactRange::new(), bundles)
    }

    /// Rebuilds the writer from the tree's right edge at a bundle boundary and the bundles
    /// from there on: memory and reads O(log n + one bundle), whatever the log's length.
    ///
    /// The first entry's `prev` names an entry that is not read, so it cannot be checked
    /// here: the caller must compare [`Self::root_at`] with a signed checkpoint's root, which
    /// covers every byte of every entry, `prev` included.
    pub fn resume_from_edge<'a>(
        edge: &CompactRange,
        bundles: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, LogError> {
        let mut log = Self::from_edge(edge)?;
        for bundle in bundles {
            log.push_bundle(bundle)?;
        }
        Ok(log)
    }

    /// An empty writer continuing from a right edge at a bundle boundary; feed it the bundles
    /// from there on with [`Self::push_bundle`], in order (what [`Self::resume_from_edge`]
    /// does, for a caller that reads bundles one at a time).
    pub fn from_edge(edge: &CompactRange) -> Result<Self, LogError> {
        let start = edge.size();
        if !start.is_multiple_of(BUNDLE_WIDTH) {
            return Err(LogError::Chain {
                index: start,
                reason: "an edge to resume from must be at a bundle boundary".into(),
            });
        }
        Ok(Self {
            tree: MerkleTree::from_edge(edge),
            open_start: start,
            taken: start,
            ..Self::default()
        })
    }

    /// Appends the entries of the next stored bundle, checking indices and the chain (the
    /// first entry after an edge cannot have its `prev` checked: see
    /// [`Self::resume_from_edge`]). Returns the decoded entries. Nothing is appended if the
    /// bundle does not follow.
    pub fn push_bundle(&mut self, bundle: &[u8]) -> Result<Vec<Entry>, LogError> {
        let decoded = self.check_bundle(bundle)?;
        for bytes in decode_bundle(bundle)? {
            self.push_bytes(bytes.to_vec());
        }
        self.taken = self.tree.size();
        self.keep_only_last_bundle();
        Ok(decoded)
    }

    /// Decodes a stored bundle and checks that it is the next one (indices and chain), without
    /// appending it: a reader that finds two versions of one bundle key keeps the one that
    /// follows.
    pub fn check_bundle(&self, bundle: &[u8]) -> Result<Vec<Entry>, LogError> {
        let entries = decode_bundle(bundle)?;
        if !self.tree.size().is_multiple_of(BUNDLE_WIDTH) {
            return Err(LogError::Chain {
                index: self.tree.size(),
                reason: "a partial bundle is followed by another bundle".into(),
            });
        }
        let start = self.tree.edge_size();
        let mut head = self.head;
        let mut decoded = Vec::with_capacity(entries.len());
        for (index, bytes) in (self.tree.size()..).zip(entries) {
            let entry = Entry::decode(bytes).map_err(|source| LogError::Entry { index, source })?;
            if entry.index != index {
                return Err(LogError::Chain {
                    index,
                    reason: format!("says it is entry {}", entry.index),
                });
            }
            // The first entry after an edge cannot have its `prev` checked.
            let first_after_edge = index == start && start > 0;
            if !first_after_edge && entry.prev != head {
                return Err(LogError::Chain {
                    index,
                    reason: "prev does not name the previous entry".into(),
                });
            }
            head = Hash::of(bytes);
            decoded.push(entry);
        }
        Ok(decoded)
    }

    fn push_bytes(&mut self, bytes: Vec<u8>) {
        let index = self.tree.size();
        if index.is_multiple_of(BUNDLE_WIDTH) && index == self.taken {
            // A new bundle starts and nothing before it is still waiting to be written.
            self.open.clear();
            self.open_start = index;
        }
        self.head = Hash::of(&bytes);
        self.tree.push(leaf_hash(&bytes));
        self.open.push(bytes);
    }

    /// Appends an entry about `record`; fills in its index and chain link.
    pub fn append(
        &mut self,
        logged_at: UnixTime,
        record: RecordId,
        body: EntryBody,
    ) -> Result<Entry, LogError> {
        let index = self.tree.size();
        let entry = Entry {
            index,
            prev: self.head,
            logged_at,
            record,
            body,
        };
        entry
            .validate()
            .map_err(|source| LogError::Entry { index, source })?;
        self.push_bytes(entry.encode());
        Ok(entry)
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Merkle root of all entries.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// The tree, for proofs.
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// Merkle root of the first `size` entries, if this log holds what it takes (a log resumed
    /// from an edge holds roots from the edge on).
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        self.tree.root_at(size)
    }

    /// The right edge at the start of the bundle holding the newest entry, which with that
    /// bundle is all [`Self::resume_from_edge`] needs. `None` for an empty log.
    pub fn resume_edge(&self) -> Option<CompactRange> {
        let size = self.tree.size();
        let boundary = size.checked_sub(1)? / BUNDLE_WIDTH * BUNDLE_WIDTH;
        self.tree.edge_at(boundary)
    }

    /// The bundle objects covering every entry appended since the last call, oldest first.
    ///
    /// A bundle that was partial and has grown is returned again under its new width (a new
    /// object); a bundle that filled up is returned as its full object. Once a bundle is full
    /// and handed out its entries are dropped from memory.
    pub fn take_bundles(&mut self) -> Vec<BundleObject> {
        let size = self.tree.size();
        if self.taken == size {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut start = self.open_start;
        for chunk in self
            .open
            .chunks(usize::try_from(BUNDLE_WIDTH).unwrap_or(256))
        {
            let width = chunk.len() as u64;
            out.push(BundleObject {
                key: bundle_key(start / BUNDLE_WIDTH, width),
                bytes: encode_bundle(chunk.iter().map(Vec::as_slice)),
            });
            start += width;
        }
        self.taken = size;
        self.keep_only_last_bundle();
        out
    }

    /// Drops the entries of complete bundles: only a partial last bundle is written again.
    fn keep_only_last_bundle(&mut self) {
        let size = self.tree.size();
        let keep_from = size - size % BUNDLE_WIDTH;
        let drop = usize::try_from(keep_from - self.open_start).unwrap_or(0);
        self.open.drain(..drop);
        self.open_start = keep_from;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::parse_bundle_key;

    fn append_n(log: &mut RecordLog, n: u64) {
        for i in 0..n {
            log.append(
                UnixTime(1_800_000_000),
                RecordId::new(format!("r{}", log.size())).unwrap(),
                EntryBody::HoldPlaced {
                    hold: format!("ns/hold-{i}"),
                },
            )
            .unwrap();
        }
    }

    #[test]
    fn bundles_are_written_once_per_width_and_resume_rebuilds() {
        let mut log = RecordLog::new();
        append_n(&mut log, 3);
        let first = log.take_bundles();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].key, "log/tile/entries/000.p/3");
        append_n(&mut log, 600);
        let second = log.take_bundles();
        let keys: Vec<_> = second.iter().map(|b| b.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "log/tile/entries/000",
                "log/tile/entries/001",
                "log/tile/entries/002.p/91"
            ]
        );
        assert!(log.take_bundles().is_empty());
        append_n(&mut log, 1);
        let third = log.take_bundles();
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].key, "log/tile/entries/002.p/92");

        // Every key ever written is distinct: nothing is rewritten.
        let mut all: Vec<&str> = first
            .iter()
            .chain(&second)
            .chain(&third)
            .map(|b| b.key.as_str())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 5);

        // A reader that takes the full bundles and the widest partial rebuilds the same tree.
        let mut latest = std::collections::BTreeMap::new();
        for b in first.iter().chain(&second).chain(&third) {
            let (idx, w) = parse_bundle_key(&b.key).unwrap();
            latest.insert(idx, (w, b.bytes.clone()));
        }
        let resumed = RecordLog::resume(latest.values().map(|(_, b)| b.as_slice())).unwrap();
        assert_eq!(resumed.size(), 604);
        assert_eq!(resumed.root(), log.root());
    }

    #[test]
    fn resume_continues_the_chain() {
        let mut log = RecordLog::new();
        append_n(&mut log, 300);
        let bundles = log.take_bundles();
        let mut resumed = RecordLog::resume(bundles.iter().map(|b| b.bytes.as_slice())).unwrap();
        append_n(&mut log, 5);
        append_n(&mut resumed, 5);
        assert_eq!(resumed.root(), log.root());
        assert_eq!(resumed.take_bundles(), log.take_bundles());
    }

    /// `bundle` with its second and third entries swapped: the chain breaks at entry 1.
    fn with_entries_1_and_2_swapped(bundle: &[u8]) -> Vec<u8> {
        let mut entries: Vec<Vec<u8>> = decode_bundle(bundle)
            .unwrap()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        entries.swap(1, 2);
        encode_bundle(entries.iter().map(Vec::as_slice))
    }

    #[test]
    fn resume_rejects_a_broken_chain() {
        let mut log = RecordLog::new();
        append_n(&mut log, 4);
        let b = log.take_bundles().remove(0).bytes;
        let swapped = with_entries_1_and_2_swapped(&b);
        assert!(matches!(
            RecordLog::resume([swapped.as_slice()]),
            Err(LogError::Chain { index: 1, .. })
        ));
    }

    /// A bundle refused by `check_bundle` or `push_bundle` leaves the log as it was.
    #[test]
    fn a_bundle_that_does_not_follow_appends_nothing() {
        let mut log = RecordLog::new();
        append_n(&mut log, 300);
        let bundles = log.take_bundles();
        let (first, second) = (&bundles[0].bytes, &bundles[1].bytes);
        let mut read = RecordLog::new();
        // The second bundle first: refused, and the log is as it was.
        assert!(read.check_bundle(second).is_err());
        assert!(read.push_bundle(second).is_err());
        assert_eq!(read.size(), 0);
        // A bundle whose second entry is swapped fails half-way: still nothing appended.
        let swapped = with_entries_1_and_2_swapped(first);
        assert!(read.push_bundle(&swapped).is_err());
        assert_eq!(read.size(), 0);
        assert_eq!(read.check_bundle(first).unwrap().len(), 256);
        read.push_bundle(first).unwrap();
        read.push_bundle(second).unwrap();
        assert_eq!(read.root(), log.root());
    }

    /// A bundle that would be read in place of another: the same place in the chain and as many
    /// entries that chain, whatever they say; not one that breaks the chain or is shorter.
    #[test]
    fn a_bundle_follows_as_another_when_a_reader_would_take_it() {
        let mut log = RecordLog::new();
        append_n(&mut log, 300);
        let bundles = log.take_bundles();
        let (first, second) = (&bundles[0].bytes, &bundles[1].bytes);
        assert!(follows_as(first, first));
        assert!(follows_as(second, second));
        // The same entries with the last one's time moved: still chains.
        let entries = decode_bundle(second).unwrap();
        let mut last = Entry::decode(entries[entries.len() - 1]).unwrap();
        last.logged_at = UnixTime(last.logged_at.0 + 1);
        let moved = last.encode();
        let mut forged: Vec<&[u8]> = entries[..entries.len() - 1].to_vec();
        forged.push(&moved);
        let forged = encode_bundle(forged);
        assert!(follows_as(&forged, second));
        // Another place in the chain, a broken chain, a shorter copy, garbage: not read.
        assert!(!follows_as(first, second));
        assert!(!follows_as(&with_entries_1_and_2_swapped(first), first));
        let shorter = encode_bundle(entries[..entries.len() - 1].iter().copied());
        assert!(!follows_as(&shorter, second));
        assert!(!follows_as(b"not a bundle", second));
    }

    /// A writer resumed from its right edge and the bundle holding its newest entry appends
    /// exactly what a writer that read the whole log appends.
    #[test]
    fn resume_from_the_edge_continues_like_a_full_resume() {
        for n in [1u64, 255, 256, 257, 600, 768] {
            let mut log = RecordLog::new();
            append_n(&mut log, n);
            let mut latest = std::collections::BTreeMap::new();
            for b in log.take_bundles() {
                let (idx, _) = parse_bundle_key(&b.key).unwrap();
                latest.insert(idx, b.bytes);
            }
            let edge = log.resume_edge().unwrap();
            assert_eq!(edge.size() % BUNDLE_WIDTH, 0);
            assert!(edge.size() < n && n - edge.size() <= BUNDLE_WIDTH, "{n}");
            let last = latest[&(edge.size() / BUNDLE_WIDTH)].clone();
            let mut resumed = RecordLog::resume_from_edge(&edge, [last.as_slice()]).unwrap();
            assert_eq!(resumed.size(), n);
            assert_eq!(resumed.root_at(n), Some(log.root()));
            append_n(&mut log, 300);
            append_n(&mut resumed, 300);
            assert_eq!(resumed.root(), log.root());
            assert_eq!(resumed.take_bundles(), log.take_bundles());
            // The resumed tree can prove its own growth to a signer.
            assert_eq!(
                resumed.tree().consistency_proof(n, n + 300).unwrap(),
                log.tree().consistency_proof(n, n + 300).unwrap()
            );
        }
        let mut off = CompactRange::new();
        off.push(Hash::of(b"x"));
        assert!(RecordLog::resume_from_edge(&off, []).is_err());
    }
}
