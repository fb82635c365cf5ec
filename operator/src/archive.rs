//! Reading an archive back from its store: the log (for resuming, proving, exporting), the
//! record sidecars, and the auditor's verification.
//!
//! `store -> bundles -> RecordLog (+ newest checkpoint) -> ids, entries, proofs`

use crate::spool::{Body, Spool};
use crate::store::{Sidecar as SidecarMap, Store};
use crate::{Error, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use mailvault_core::bundle::{checkpoint_key, parse_checkpoint_key};
use mailvault_core::checkpoint::{Checkpoint, SignedHead};
use mailvault_core::entry::{Entry, EntryBody, RecordId, RetainUntil};
use mailvault_core::log::RecordLog;
use mailvault_core::note::NoteVerifier;
use mailvault_core::proof::ProofBundle;
use mailvault_core::record::{SALT_LEN, commitment_from_digest};
use mailvault_core::verify::{LogListing, RecordVerdict, Report, StoredVersion, Trust, Verifier};
use mailvault_core::{Hash, UnixTime};
use std::collections::{BTreeMap, HashSet};

/// The log of an archive as read from its store.
#[derive(Debug)]
pub struct ArchiveLog {
    origin: String,
    /// The log, rebuilt and chain-checked.
    pub log: RecordLog,
    /// The newest checkpoint signed by the archive's key and consistent with the log.
    pub head: Option<SignedHead>,
    /// The note of that checkpoint.
    pub head_note: Option<String>,
    /// Ids of every ingested record.
    pub ingested: HashSet<RecordId>,
    /// Decoded entries, in order (empty unless loaded with `keep_entries`).
    pub entries: Vec<Entry>,
}

async fn fetch<S: Store>(store: &S, key: &str) -> Result<Vec<u8>> {
    store
        .get(key, None)
        .await?
        .map(|o| o.bytes)
        .ok_or_else(|| Error::Store(format!("{key} was listed but cannot be read")))
}

impl ArchiveLog {
    /// Reads the log of the archive `origin` from `store`, checking it against checkpoints
    /// signed by `key`. Refuses a log that does not match its newest checkpoint: writing on
    /// top of it would hide the damage (run `mailvault verify` to see what is wrong).
    /// `keep_entries: false` keeps only the ids of ingested records (what a writer needs),
    /// not every decoded entry (what prove, export and ls need).
    pub async fn load<S: Store>(
        store: &S,
        origin: &str,
        key: &NoteVerifier,
        keep_entries: bool,
    ) -> Result<Self> {
        let mut keys = store.list_keys("log/").await?;
        keys.extend(store.list_keys("checkpoints/").await?);
        let listing = LogListing::from_keys(keys.iter().map(String::as_str));
        // Owned keys: a stream of futures borrowing `&String` is not provably `Send` (the
        // operator runs this on a multi-threaded runtime).
        let keys: Vec<String> = listing
            .bundles
            .values()
            .filter_map(|g| g.full.as_ref().or(g.partials.last().map(|(_, k)| k)))
            .cloned()
            .collect();
        // Several reads at once: a large log is hundreds of bundles.
        let bundles: Vec<Vec<u8>> = futures::stream::iter(keys)
            .map(|k| async move { fetch(store, &k).await })
            .buffered(8)
            .try_collect()
            .await?;
        let damaged = |e: &dyn std::fmt::Display| {
            Error::Conflict(format!(
                "the log in the store is damaged ({e}); run `mailvault verify` for a full report"
            ))
        };
        let log = RecordLog::resume(bundles.iter().map(Vec::as_slice)).map_err(|e| damaged(&e))?;
        let mut entries = Vec::new();
        let mut ingested = HashSet::new();
        for b in &bundles {
            for bytes in mailvault_core::bundle::decode_bundle(b).map_err(|e| damaged(&e))? {
                let entry = Entry::decode(bytes).map_err(|e| damaged(&e))?;
                if matches!(entry.body, EntryBody::Ingest { .. }) {
                    ingested.insert(entry.record.clone());
                }
                if keep_entries {
                    entries.push(entry);
                }
            }
        }
        let newest = listing
            .checkpoints
            .iter()
            .filter_map(|k| parse_checkpoint_key(k))
            .max();
        let (head, head_note) = match newest {
            None => (None, None),
            Some(size) => {
                let note = fetch(store, &checkpoint_key(size)).await?;
                let cp = Checkpoint::open(&note, std::slice::from_ref(key), Some(origin))
                    .map_err(|e| damaged(&e))?;
                if log.tree().root_at(cp.size) != Some(cp.root) {
                    return Err(damaged(&format!(
                        "checkpoint {} does not match the stored entries",
                        cp.size
                    )));
                }
                (
                    Some(SignedHead {
                        size: cp.size,
                        root: cp.root,
                    }),
                    Some(String::from_utf8_lossy(&note).into_owned()),
                )
            }
        };
        Ok(Self {
            origin: origin.to_owned(),
            log,
            head,
            head_note,
            ingested,
            entries,
        })
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The ingest entry of a record.
    pub fn ingest_of(&self, id: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.record.as_str() == id && matches!(e.body, EntryBody::Ingest { .. }))
    }

    /// The newest entry of a record (its tombstone, if destroyed).
    pub fn latest_of(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.record.as_str() == id)
    }
}

/// The sidecar mailvault writes with each record (S3 user metadata, or a JSON file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// Record series.
    pub series: String,
    /// Retain-until as logged.
    pub retain_until: RetainUntil,
    /// The salted commitment.
    pub commitment: Hash,
    /// The salt (dies with the record).
    pub salt: [u8; SALT_LEN],
    /// Source folder.
    pub folder: String,
    /// Source identity.
    pub identity: String,
    /// Where the source read it.
    pub location: String,
    /// Source's internal date.
    pub internal_date: Option<UnixTime>,
    /// Flags at capture.
    pub flags: Vec<String>,
    /// Length of the original message.
    pub original_size: u64,
}

/// Percent-encodes bytes outside printable ASCII (S3 metadata values must be ASCII).
fn meta_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push_str(&hex::encode_upper([b]));
        }
    }
    out
}

fn meta_decode(s: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hi = char::from(it.next()?).to_digit(16)?;
            let lo = char::from(it.next()?).to_digit(16)?;
            bytes.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

impl Sidecar {
    /// As metadata pairs (keys are S3-safe, values ASCII).
    pub fn to_map(&self) -> SidecarMap {
        let mut m = SidecarMap::new();
        m.insert("mailvault-series".into(), meta_encode(&self.series));
        m.insert(
            "mailvault-retain-until".into(),
            self.retain_until.to_string(),
        );
        m.insert("mailvault-commitment".into(), self.commitment.to_hex());
        m.insert("mailvault-salt".into(), hex::encode(self.salt));
        m.insert("mailvault-folder".into(), meta_encode(&self.folder));
        m.insert("mailvault-identity".into(), meta_encode(&self.identity));
        m.insert("mailvault-location".into(), meta_encode(&self.location));
        if let Some(t) = self.internal_date {
            m.insert("mailvault-internal-date".into(), t.to_string());
        }
        m.insert("mailvault-flags".into(), meta_encode(&self.flags.join(" ")));
        m.insert(
            "mailvault-original-size".into(),
            self.original_size.to_string(),
        );
        m
    }

    /// Reads the metadata pairs back.
    pub fn from_map(m: &SidecarMap) -> std::result::Result<Self, String> {
        let get = |k: &str| m.get(k).ok_or_else(|| format!("no {k}"));
        let text = |k: &str| get(k).and_then(|v| meta_decode(v).ok_or_else(|| format!("bad {k}")));
        let retain_until = match get("mailvault-retain-until")?.as_str() {
            "permanent" => RetainUntil::Permanent,
            t => RetainUntil::Until(UnixTime::parse(t).map_err(|e| e.to_string())?),
        };
        let mut salt = [0u8; SALT_LEN];
        hex::decode_to_slice(get("mailvault-salt")?, &mut salt).map_err(|e| e.to_string())?;
        let flags = text("mailvault-flags")?;
        Ok(Self {
            series: text("mailvault-series")?,
            retain_until,
            commitment: Hash::from_hex(get("mailvault-commitment")?).map_err(|e| e.to_string())?,
            salt,
            folder: text("mailvault-folder")?,
            identity: text("mailvault-identity")?,
            location: text("mailvault-location")?,
            internal_date: m
                .get("mailvault-internal-date")
                .map(|t| UnixTime::parse(t))
                .transpose()
                .map_err(|e| e.to_string())?,
            flags: flags
                .split(' ')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect(),
            original_size: get("mailvault-original-size")?
                .parse()
                .map_err(|_| "bad mailvault-original-size".to_owned())?,
        })
    }
}

/// A record read back: its original bytes, checked against the log.
#[derive(Debug)]
pub struct ExportedRecord {
    /// The original RFC 5322 bytes, in memory or (a large record) in a spool file.
    pub original: Body,
    /// Its sidecar.
    pub sidecar: Sidecar,
}

/// Reads a record's logged version, checks its stored hash and commitment, and decompresses
/// it. Streamed: the object is read in pieces into `spool` and decompressed in blocks, so a
/// record of any size costs its spool files, not its size in memory; nothing is returned
/// unless both checks pass.
pub async fn export<S: Store>(
    store: &S,
    log: &ArchiveLog,
    id: &str,
    spool: &Spool,
) -> Result<ExportedRecord> {
    let entry = log
        .ingest_of(id)
        .ok_or_else(|| Error::Usage(format!("no record {id:?} in this archive's log")))?;
    let EntryBody::Ingest {
        object_key,
        object_version,
        stored_sha256,
        original_commitment,
        ..
    } = &entry.body
    else {
        return Err(Error::Usage(format!(
            "no record {id:?} in this archive's log"
        )));
    };
    if let Some(EntryBody::Destroyed { .. }) = log.latest_of(id).map(|e| &e.body) {
        return Err(Error::Usage(format!("record {id} was destroyed")));
    }
    // Pieces go to a spool writer (a file past its memory limit; short blocking writes).
    let mut stored = spool.writer();
    let digest = store
        .read_streaming(object_key, Some(object_version), &mut |piece| {
            stored.write(piece)
        })
        .await?
        .ok_or_else(|| {
            Error::Conflict(format!(
                "record {id}: version {object_version} of {object_key} is missing from the store"
            ))
        })?;
    if digest.sha256 != *stored_sha256 {
        return Err(Error::Conflict(format!(
            "record {id}: the stored bytes do not match the log (tampered)"
        )));
    }
    let sidecar = Sidecar::from_map(&digest.sidecar)
        .map_err(|e| Error::Conflict(format!("record {id}: sidecar: {e}")))?;
    let (stored, _) = stored.finish()?;
    let spool = spool.clone();
    let record = id.to_owned();
    let (original, original_sha256) =
        tokio::task::spawn_blocking(move || decompress(&spool, &stored, &record))
            .await
            .map_err(|e| Error::Store(format!("record {id}: decompression task failed: {e}")))??;
    if commitment_from_digest(&sidecar.salt, &original_sha256) != *original_commitment {
        return Err(Error::Conflict(format!(
            "record {id}: the message does not match the log's commitment"
        )));
    }
    Ok(ExportedRecord { original, sidecar })
}

/// Decompresses a stored body in blocks into a new body, hashing the output.
fn decompress(spool: &Spool, stored: &Body, id: &str) -> Result<(Body, Hash)> {
    use std::io::Read as _;
    let bad = |e: std::io::Error| Error::Conflict(format!("record {id}: cannot decompress: {e}"));
    let input: Box<dyn std::io::Read> = match stored {
        Body::Memory(bytes) => Box::new(bytes.as_slice()),
        Body::File(file) => {
            Box::new(
                std::fs::File::open(file.path()).map_err(|source| Error::Io {
                    path: file.path().display().to_string(),
                    source,
                })?,
            )
        }
    };
    let mut decoder = zstd::stream::read::Decoder::new(input).map_err(bad)?;
    let mut original = spool.writer();
    let mut block = vec![0u8; 256 * 1024];
    loop {
        let n = decoder.read(&mut block).map_err(bad)?;
        if n == 0 {
            break;
        }
        original.write(&block[..n])?;
    }
    original.finish()
}

/// A self-contained proof bundle for a record, with its message and salt (a disclosure).
pub async fn prove<S: Store>(
    store: &S,
    log: &ArchiveLog,
    id: &str,
    spool: &Spool,
) -> Result<ProofBundle> {
    let entry = log
        .ingest_of(id)
        .ok_or_else(|| Error::Usage(format!("no record {id:?} in this archive's log")))?;
    let (Some(head), Some(note)) = (log.head, &log.head_note) else {
        return Err(Error::Conflict(
            "the archive has no signed checkpoint yet".into(),
        ));
    };
    if entry.index >= head.size {
        return Err(Error::Conflict(format!(
            "record {id} is not yet covered by a signed checkpoint; run archive again to checkpoint it"
        )));
    }
    let proof = log.log.tree().inclusion_proof(entry.index, head.size)?;
    // A proof bundle carries the message itself (base64 in JSON), so it is in memory here.
    let exported = export(store, log, id, spool).await?;
    let original = exported.original.to_vec()?;
    Ok(ProofBundle::new(
        &entry.encode(),
        entry.index,
        head.size,
        &proof,
        note,
        Some((&original, &exported.sidecar.salt)),
    ))
}

/// Runs the auditor's verification over a store: streams the log's bundles, reads and hashes
/// every record version, and classifies every record. `sink` sees every verdict.
pub async fn verify<S: Store>(
    store: &S,
    trust: Trust,
    sink: &mut dyn FnMut(&RecordVerdict),
) -> Result<Report> {
    let mut keys = store.list_keys("log/").await?;
    keys.extend(store.list_keys("checkpoints/").await?);
    let listing = LogListing::from_keys(keys.iter().map(String::as_str));
    let mut v = Verifier::new(trust);
    for k in &listing.unknown {
        v.add_unknown_log_object(k);
    }
    for k in &listing.checkpoints {
        v.add_checkpoint(k, &fetch(store, k).await?);
    }
    for (index, group) in &listing.bundles {
        let full = match &group.full {
            Some(k) => Some(fetch(store, k).await?),
            None => None,
        };
        let mut partials = Vec::new();
        for (w, k) in &group.partials {
            partials.push((*w, fetch(store, k).await?));
        }
        let partial_refs: Vec<(u64, &[u8])> =
            partials.iter().map(|(w, b)| (*w, b.as_slice())).collect();
        v.add_bundle(*index, full.as_deref(), &partial_refs);
    }
    // Every version is read back and hashed, several at a time and each in pieces (memory does
    // not grow with record size); the listing keeps key order.
    let hashed: Vec<(String, StoredVersion)> =
        futures::stream::iter(store.list_versions("records/").await?)
            .map(|(key, mut version)| async move {
                if !version.delete_marker
                    && let Some(digest) = store
                        .read_streaming(&key, Some(&version.version_id), &mut |_| Ok(()))
                        .await?
                {
                    version.sha256 = Some(digest.sha256);
                }
                Ok::<_, Error>((key, version))
            })
            .buffered(16)
            .try_collect()
            .await?;
    let mut by_key: BTreeMap<String, Vec<StoredVersion>> = BTreeMap::new();
    for (key, version) in hashed {
        by_key.entry(key).or_default().push(version);
    }
    Ok(v.finish_streaming(by_key, sink))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_round_trips_through_ascii_metadata() {
        let s = Sidecar {
            series: "MO-GS-003 Correspondence".into(),
            retain_until: RetainUntil::Until(UnixTime(1_900_000_000)),
            commitment: Hash::of(b"c"),
            salt: [7; SALT_LEN],
            folder: "Archiv/Ü 100%".into(),
            identity: "Archiv/Ü\u{0}abc".into(),
            location: "imap:Archiv/Ü;UIDVALIDITY=1;UID=2".into(),
            internal_date: Some(UnixTime(1_800_000_000)),
            flags: vec!["\\Seen".into(), "$Label1".into()],
            original_size: 42,
        };
        let m = s.to_map();
        assert!(
            m.values()
                .all(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
        );
        assert_eq!(Sidecar::from_map(&m).unwrap(), s);
    }
}
