//! Checkpoints: the signed head of the log (C2SP tlog-checkpoint inside a signed note).
//!
//! `origin \n size \n base64(root) \n` signed with the archive's Ed25519 key. A
//! [`CheckpointSigner`] remembers the last head it signed and refuses any head that is not a
//! consistent extension of it, so the log can never be forked under our own signature.

use crate::hash::Hash;
use crate::merkle::{ProofError, verify_consistency};
use crate::note::{self, NoteError, NoteSigner, NoteVerifier};

/// Why a checkpoint was rejected or could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The signed note is malformed, unsigned, or badly signed.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The note's text is not a checkpoint body.
    #[error("malformed checkpoint body: {0}")]
    Malformed(String),
    /// The checkpoint belongs to another log.
    #[error("checkpoint origin {got:?} is not this log's origin {want:?}")]
    WrongOrigin {
        /// Origin found.
        got: String,
        /// Origin expected.
        want: String,
    },
    /// The signer was asked to sign a head that does not extend the last one it signed.
    #[error(
        "refusing to sign size {size}: it is not a consistent extension of the last signed head (size {last_size}): {reason}"
    )]
    Inconsistent {
        /// Size asked for.
        size: u64,
        /// Size of the last signed head.
        last_size: u64,
        /// What failed.
        reason: ProofError,
    },
}

/// The content of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Which log: `mailvault.io/<namespace>/<archive>` or another unique name.
    pub origin: String,
    /// Number of entries covered.
    pub size: u64,
    /// Merkle root of those entries.
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint body (the note text).
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        )
    }

    /// Parses a checkpoint body. Extension lines after the root are allowed and ignored.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let err = |m: &str| CheckpointError::Malformed(m.to_owned());
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| err("no origin line"))?;
        let size_s = lines.next().ok_or_else(|| err("no tree size line"))?;
        if size_s.is_empty()
            || !size_s.bytes().all(|b| b.is_ascii_digit())
            || (size_s.len() > 1 && size_s.starts_with('0'))
        {
            return Err(err("tree size is not a canonical decimal number"));
        }
        let size = size_s.parse().map_err(|_| err("tree size out of range"))?;
        let root = Hash::from_base64(lines.next().ok_or_else(|| err("no root hash line"))?)
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// Opens a signed checkpoint: the note must be signed by a trusted key and name `origin`.
    pub fn open(
        note_bytes: &[u8],
        trusted: &[NoteVerifier],
        origin: Option<&str>,
    ) -> Result<Self, CheckpointError> {
        let note = note::open(note_bytes, trusted)?;
        let cp = Self::parse(&note.text)?;
        if let Some(want) = origin
            && cp.origin != want
        {
            return Err(CheckpointError::WrongOrigin {
                got: cp.origin,
                want: want.to_owned(),
            });
        }
        Ok(cp)
    }
}

/// A head (size and root) that was signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedHead {
    /// Tree size.
    pub size: u64,
    /// Root at that size.
    pub root: Hash,
}

/// Signs checkpoints for one log, never two inconsistent heads.
///
/// The caller restores `last_signed` from durable storage (the newest stored checkpoint) when
/// it starts, and must store each checkpoint durably before it shows it anywhere else (status,
/// a disclosure): a head that was shown but not stored could otherwise be forked after a crash.
#[derive(Debug)]
pub struct CheckpointSigner {
    origin: String,
    signer: NoteSigner,
    last_signed: Option<SignedHead>,
}

impl CheckpointSigner {
    /// A signer for `origin`, resuming after `last_signed` (or `None` for a new log).
    pub fn new(origin: &str, signer: NoteSigner, last_signed: Option<SignedHead>) -> Self {
        Self {
            origin: origin.to_owned(),
            signer,
            last_signed,
        }
    }

    /// The last head signed (or restored).
    pub fn last_signed(&self) -> Option<SignedHead> {
        self.last_signed
    }

    /// The public verifier key for these checkpoints.
    pub fn verifier_key(&self) -> String {
        self.signer.verifier_key()
    }

    /// Signs the head `(size, root)`; `proof` is the consistency proof from the last signed
    /// head to this one (empty for the first head, or when the size is unchanged).
    pub fn sign(
        &mut self,
        size: u64,
        root: Hash,
        proof: &[Hash],
    ) -> Result<String, CheckpointError> {
        if let Some(last) = self.last_signed.filter(|l| l.size > 0) {
            verify_consistency(last.size, size, proof, &last.root, &root).map_err(|reason| {
                CheckpointError::Inconsistent {
                    size,
                    last_size: last.size,
                    reason,
                }
            })?;
        }
        let text = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
        }
        .to_text();
        let note = self.signer.sign(&text)?;
        self.last_signed = Some(SignedHead { size, root });
        Ok(note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{MerkleTree, leaf_hash};

    fn tree(n: u64) -> MerkleTree {
        let mut t = MerkleTree::new();
        for i in 0..n {
            t.push(leaf_hash(&i.to_be_bytes()));
        }
        t
    }

    #[test]
    fn signs_opens_and_checks_origin() {
        let key = NoteSigner::new("mailvault.io/ns/a", &[1; 32]).unwrap();
        let mut s = CheckpointSigner::new("mailvault.io/ns/a", key, None);
        let t = tree(5);
        let note = s.sign(5, t.root(), &[]).unwrap();
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        let cp = Checkpoint::open(
            note.as_bytes(),
            std::slice::from_ref(&v),
            Some("mailvault.io/ns/a"),
        )
        .unwrap();
        assert_eq!((cp.size, cp.root), (5, t.root()));
        assert!(matches!(
            Checkpoint::open(note.as_bytes(), &[v], Some("other")),
            Err(CheckpointError::WrongOrigin { .. })
        ));
    }

    #[test]
    fn refuses_a_fork_and_accepts_an_extension() {
        let key = NoteSigner::new("o", &[2; 32]).unwrap();
        let t = tree(10);
        let mut s = CheckpointSigner::new("o", key, None);
        s.sign(4, t.root_at(4).unwrap(), &[]).unwrap();
        // Same size, different root: a fork.
        let err = s.sign(4, tree(3).root(), &[]).unwrap_err();
        assert!(matches!(err, CheckpointError::Inconsistent { .. }), "{err}");
        // A history that does not contain the signed one.
        let mut other = tree(3);
        for i in 100..107u64 {
            other.push(leaf_hash(&i.to_be_bytes()));
        }
        let bad_proof = other.consistency_proof(4, 10).unwrap();
        assert!(s.sign(10, other.root(), &bad_proof).is_err());
        assert_eq!(s.last_signed().unwrap().size, 4);
        let proof = t.consistency_proof(4, 10).unwrap();
        s.sign(10, t.root(), &proof).unwrap();
        assert_eq!(s.last_signed().unwrap().size, 10);
        // Shrinking is refused.
        assert!(s.sign(9, t.root_at(9).unwrap(), &[]).is_err());
    }

    #[test]
    fn malformed_bodies() {
        for body in [
            "",
            "o\n",
            "o\n01\nAAAA\n",
            "o\n-1\n",
            "o\n5\nnot-base64\n",
            "\n5\n",
        ] {
            assert!(Checkpoint::parse(body).is_err(), "{body:?}");
        }
    }
}
