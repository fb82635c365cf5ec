//! Per-record proof bundles: what a disclosure carries so that anyone with the archive's public
//! key can check, offline, that a record is in the log as disclosed.
//!
//! `entry --inclusion proof--> root <--signed-- checkpoint`, and, when the message is disclosed,
//! `SHA-256(salt || message) == entry.original-commitment`.
//!
//! The bundle is JSON (`mailvault-proof/1`) with base64 byte fields, so it can be mailed,
//! archived, and read by tools other than mailvault.

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::entry::{Entry, EntryBody, EntryError};
use crate::hash::Hash;
use crate::merkle::{ProofError, leaf_hash, verify_inclusion_bytes};
use crate::note::NoteVerifier;
use crate::record::{SALT_LEN, commitment};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// Format tag of proof bundles.
pub const PROOF_FORMAT: &str = "mailvault-proof/1";
/// Largest proof bundle read (a disclosed message can be large; 64 MiB of JSON covers a 45 MiB
/// message in base64).
pub const MAX_PROOF_LEN: usize = 64 * 1024 * 1024;

/// Why a proof bundle does not prove what it claims.
#[derive(Debug, thiserror::Error)]
pub enum ProofBundleError {
    /// Not a proof bundle.
    #[error("malformed proof bundle: {0}")]
    Malformed(String),
    /// The checkpoint is unsigned, badly signed, or malformed.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The entry is not a canonical log entry.
    #[error("entry: {0}")]
    Entry(#[from] EntryError),
    /// The inclusion proof does not lead to the signed root.
    #[error("the entry is not in the signed log: {0}")]
    Inclusion(#[from] ProofError),
    /// The disclosed message is not the one the log committed to.
    #[error("the disclosed message does not match the log's commitment")]
    ContentMismatch,
}

/// The bundle as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofBundle {
    /// Always [`PROOF_FORMAT`].
    pub format: String,
    /// The log entry's canonical bytes, base64.
    pub entry: String,
    /// Its position in the log.
    pub leaf_index: u64,
    /// Tree size of the checkpoint the proof is against.
    pub tree_size: u64,
    /// Inclusion proof hashes, base64, leaf upwards.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
    /// The original message bytes, base64, when disclosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The record's commitment salt, base64, when the message is disclosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
}

/// What a verified proof establishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProvenRecord {
    /// Record id.
    pub record: String,
    /// Entry type (`ingest`, `destroyed`, ...).
    pub entry_type: String,
    /// Entry position.
    pub leaf_index: u64,
    /// The checkpoint's origin.
    pub origin: String,
    /// The checkpoint's size.
    pub tree_size: u64,
    /// Whether a disclosed message was checked against the commitment.
    pub message_verified: bool,
}

impl ProofBundle {
    /// Builds a bundle from its parts.
    pub fn new(
        entry_bytes: &[u8],
        leaf_index: u64,
        tree_size: u64,
        proof: &[Hash],
        checkpoint_note: &str,
        disclosed: Option<(&[u8], &[u8; SALT_LEN])>,
    ) -> Self {
        Self {
            format: PROOF_FORMAT.to_owned(),
            entry: BASE64.encode(entry_bytes),
            leaf_index,
            tree_size,
            inclusion_proof: proof.iter().map(Hash::to_base64).collect(),
            checkpoint: checkpoint_note.to_owned(),
            message: disclosed.map(|(m, _)| BASE64.encode(m)),
            salt: disclosed.map(|(_, s)| BASE64.encode(s)),
        }
    }

    /// Parses a bundle from JSON bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProofBundleError> {
        if bytes.len() > MAX_PROOF_LEN {
            return Err(ProofBundleError::Malformed(format!(
                "larger than {MAX_PROOF_LEN} bytes"
            )));
        }
        let bundle: Self = serde_json::from_slice(bytes)
            .map_err(|e| ProofBundleError::Malformed(e.to_string()))?;
        if bundle.format != PROOF_FORMAT {
            return Err(ProofBundleError::Malformed(format!(
                "format {:?} is not {PROOF_FORMAT:?}",
                bundle.format
            )));
        }
        Ok(bundle)
    }

    /// Serializes to pretty JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the bundle against trusted keys, offline.
    pub fn verify(&self, trusted: &[NoteVerifier]) -> Result<ProvenRecord, ProofBundleError> {
        let b64 = |what: &str, s: &str| {
            BASE64
                .decode(s)
                .map_err(|e| ProofBundleError::Malformed(format!("{what} is not base64: {e}")))
        };
        let checkpoint = Checkpoint::open(self.checkpoint.as_bytes(), trusted, None)?;
        if checkpoint.size != self.tree_size {
            return Err(ProofBundleError::Malformed(format!(
                "tree size {} does not match the checkpoint's {}",
                self.tree_size, checkpoint.size
            )));
        }
        let entry_bytes = b64("entry", &self.entry)?;
        let proof = self
            .inclusion_proof
            .iter()
            .map(|p| b64("inclusion proof", p))
            .collect::<Result<Vec<_>, _>>()?;
        verify_inclusion_bytes(
            self.leaf_index,
            self.tree_size,
            &leaf_hash(&entry_bytes).0,
            &proof,
            &checkpoint.root.0,
        )?;
        let entry = Entry::decode(&entry_bytes)?;
        if entry.index != self.leaf_index {
            return Err(ProofBundleError::Malformed(format!(
                "the entry says it is entry {}, the proof places it at {}",
                entry.index, self.leaf_index
            )));
        }
        let message_verified = match (&self.message, &self.salt) {
            (None, None) => false,
            (Some(m), Some(s)) => {
                let EntryBody::Ingest {
                    original_commitment,
                    ..
                } = &entry.body
                else {
                    return Err(ProofBundleError::Malformed(
                        "a message is disclosed with an entry that is not an ingest".into(),
                    ));
                };
                let salt: [u8; SALT_LEN] = b64("salt", s)?
                    .try_into()
                    .map_err(|_| ProofBundleError::Malformed("salt is not 32 bytes".into()))?;
                if commitment(&salt, &b64("message", m)?) != *original_commitment {
                    return Err(ProofBundleError::ContentMismatch);
                }
                true
            }
            _ => {
                return Err(ProofBundleError::Malformed(
                    "message and salt come together or not at all".into(),
                ));
            }
        };
        Ok(ProvenRecord {
            record: entry.record.to_string(),
            entry_type: entry.body.kind().to_owned(),
            leaf_index: self.leaf_index,
            origin: checkpoint.origin,
            tree_size: self.tree_size,
            message_verified,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointSigner;
    use crate::entry::{LockMode, RecordId, RetainUntil};
    use crate::log::RecordLog;
    use crate::note::NoteSigner;
    use crate::time::UnixTime;

    const MSG: &[u8] = b"From: chief@city.example\r\nSubject: budget\r\n\r\nnumbers\r\n";
    const SALT: [u8; 32] = [3; 32];

    fn setup() -> (ProofBundle, NoteVerifier) {
        let mut log = RecordLog::new();
        for i in 0..37u64 {
            let original_commitment = if i == 20 {
                commitment(&SALT, MSG)
            } else {
                Hash::of(&i.to_be_bytes())
            };
            log.append(
                UnixTime(1_800_000_000),
                RecordId::new(format!("r{i}")).unwrap(),
                EntryBody::Ingest {
                    series: "MO-GS-003".into(),
                    retain_until: RetainUntil::Permanent,
                    lock_mode: LockMode::Compliance,
                    object_key: format!("records/r{i}"),
                    object_version: "v".into(),
                    stored_sha256: Hash::of(b"s"),
                    stored_size: 1,
                    original_commitment,
                    // The proven record names a dictionary (a version-2 entry): the bundle
                    // carries the original message, so it verifies without the dictionary.
                    dictionary: (i == 20).then(|| Hash::of(b"dictionary")),
                    header_index: None,
                },
            )
            .unwrap();
        }
        let mut signer = CheckpointSigner::new("o", NoteSigner::new("o", &[1; 32]).unwrap(), None);
        let note = signer.sign(log.size(), log.root(), &[]).unwrap();
        let bundles = log.take_bundles();
        let entries = crate::bundle::decode_bundle(&bundles[0].bytes).unwrap();
        let proof = log.tree().inclusion_proof(20, 37).unwrap();
        let bundle = ProofBundle::new(entries[20], 20, 37, &proof, &note, Some((MSG, &SALT)));
        (bundle, NoteVerifier::parse(&signer.verifier_key()).unwrap())
    }

    #[test]
    fn a_disclosed_record_verifies_and_is_small() {
        let (bundle, key) = setup();
        let json = bundle.to_json();
        let parsed = ProofBundle::parse(json.as_bytes()).unwrap();
        let proven = parsed.verify(std::slice::from_ref(&key)).unwrap();
        assert_eq!(proven.record, "r20");
        assert!(proven.message_verified);
        // Without the message, the proof alone is well under a kilobyte of proof data.
        let mut bare = parsed;
        bare.message = None;
        bare.salt = None;
        assert!(!bare.verify(&[key]).unwrap().message_verified);
        assert!(bare.inclusion_proof.len() * 44 < 1024);
    }

    #[test]
    fn every_tampering_is_refused() {
        let (good, key) = setup();
        let keys = std::slice::from_ref(&key);
        let mut other_msg = good.clone();
        other_msg.message = Some(BASE64.encode(b"another message"));
        assert!(matches!(
            other_msg.verify(keys),
            Err(ProofBundleError::ContentMismatch)
        ));

        let mut moved = good.clone();
        moved.leaf_index = 21;
        assert!(moved.verify(keys).is_err());

        let mut bad_proof = good.clone();
        bad_proof.inclusion_proof[0] = Hash::of(b"x").to_base64();
        assert!(matches!(
            bad_proof.verify(keys),
            Err(ProofBundleError::Inclusion(_))
        ));

        let mut other_size = good.clone();
        other_size.tree_size = 36;
        assert!(other_size.verify(keys).is_err());

        let stranger =
            NoteVerifier::parse(&NoteSigner::new("o", &[2; 32]).unwrap().verifier_key()).unwrap();
        assert!(matches!(
            good.verify(&[stranger]),
            Err(ProofBundleError::Checkpoint(_))
        ));

        let mut half = good.clone();
        half.salt = None;
        assert!(matches!(
            half.verify(keys),
            Err(ProofBundleError::Malformed(_))
        ));

        assert!(ProofBundle::parse(b"{\"format\":\"other\"}").is_err());
        assert!(
            ProofBundle::parse(
                good.to_json()
                    .replace("mailvault-proof/1", "mailvault-proof/2")
                    .as_bytes()
            )
            .is_err()
        );
    }
}
