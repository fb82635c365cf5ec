//! Records requests: find the records a query matches, streaming over the log, and export each
//! with its proof bundle under a signed manifest; and check such an export offline.
//!
//! `log bundles (one at a time) -> live ingest entries -> index/<id> (else the record itself)
//!  -> query -> matched -> each re-read, checked against the log and matched again on its own
//!  headers -> messages/<id>.eml + proofs/<id>.json + checkpoint + manifest (signed)`
//!
//! Memory: the log is read one bundle at a time and only the Merkle tree (for the inclusion
//! proofs) and the matched entries are kept; no listing of `records/` or `index/` is made. The
//! index is a hint: a record it says matches is exported only if its own headers match (else
//! it is reported). A record's ingest entry (from version 3 of the log) holds its index's
//! SHA-256, so an index edited to hide a record does not hash to it: the record is then read
//! instead and the edit reported. An index of an older record, whose entry holds no hash, can
//! still hide it unless the search reads every record (`read_records`).

use super::log::{LogObjects, damaged, newest_checkpoint};
use super::{ExportedRecord, export_logged};
use crate::lifecycle::facts::{self, Envelope};
use crate::spool::Spool;
use crate::store::Store;
use crate::{Error, Result};
use futures::StreamExt as _;
use mailvault_core::checkpoint::{Checkpoint, SignedHead};
use mailvault_core::entry::{Entry, EntryBody};
use mailvault_core::layout::index_key;
use mailvault_core::lifecycle::holds::RecordFacts;
use mailvault_core::log::RecordLog;
use mailvault_core::note::{NoteSigner, NoteVerifier};
use mailvault_core::proof::ProofBundle;
use mailvault_core::records_request::{
    ExportManifest, HeaderIndex, MAX_INDEX_LEN, ManifestRecord, RecordQuery, no_index_sha256,
};
use mailvault_core::{Hash, UnixTime};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

/// Index objects (or records) read at once.
const LOOKUPS_IN_FLIGHT: usize = 32;

/// What a search found.
#[derive(Debug)]
pub struct Found {
    /// The ingest entries of the matching records still in the archive, in log order.
    pub matched: Vec<Entry>,
    /// Counts of how each record was judged.
    pub counts: SearchCounts,
    /// Records the log has (not destroyed) whose index and record could not be read: the
    /// search cannot say whether they match (`mailvault verify` says what is wrong).
    pub unreadable: Vec<String>,
    /// Records whose header index is not the one their ingest entry commits to (edited,
    /// replaced, over the cap, or there though the entry says none was written): each was
    /// judged by reading it instead.
    pub index_edited: Vec<String>,
    /// Records whose committed header index the store would not give (record id, the store's
    /// words: an archived storage class, a key policy): each was judged by reading it instead.
    pub index_refused: Vec<(String, String)>,
    /// Matching records still in the store whose `destroyed` entry lies after the newest
    /// signed checkpoint. A destruction run deletes a record before it logs the tombstone, so
    /// such a tombstone is not the run's: nothing vouches for it, the signed log keeps the
    /// record, and it is exported.
    pub tombstone_unsigned: Vec<String>,
    /// Delete markers and second versions on log objects, a sentence each. mailvault never
    /// deletes or rewrites a log object, but Object Lock allows markers and new versions on
    /// locked ones: the search read the versions beneath (so markers over the newest
    /// checkpoints do not roll it back), and names them.
    pub log_warnings: Vec<String>,
    origin: String,
    records: RecordLog,
    head: Option<(SignedHead, String)>,
    dictionaries: HashMap<Hash, Option<Arc<Vec<u8>>>>,
}

/// How the records of a search were judged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SearchCounts {
    /// Records judged (every ingest entry in the log).
    pub records: u64,
    /// Judged by their header index.
    pub by_index: u64,
    /// Judged by reading the record (no index, an unreadable or edited one, or `read_records`).
    pub by_record: u64,
    /// Records destroyed under the schedule (a signed tombstone): their headers went with them,
    /// so whether they matched cannot be said.
    pub destroyed: u64,
    /// Records read in full because the header index their ingest entry commits to is not in
    /// the store (a run that failed between a record and its index leaves one; many say
    /// someone deleted them).
    pub index_missing: u64,
}

enum Judged {
    Index(bool),
    /// Read in full; `index`: what its header index was.
    Record {
        hit: bool,
        index: IndexFinding,
    },
    /// Its record could not be read (and no usable index said what it holds).
    Unreadable {
        index: IndexFinding,
    },
}

/// What a search found of a record's header index when it did not use it.
#[derive(Clone, PartialEq, Eq)]
enum IndexFinding {
    /// Not looked at (`read_records`), or nothing to say: absent or refused with nothing
    /// committed (an older record).
    Nothing,
    /// Absent, though the entry commits to one.
    Missing,
    /// Not what the entry commits to: other bytes, over the cap, or there at all when the
    /// entry says none was written.
    Edited,
    /// The store would not give it (its words), though the entry commits to one.
    Refused(String),
}

/// Finds the records of the archive `origin` (checkpoints signed by `key`) that `query`
/// matches. `read_records`: ignore the header index and read every record (slow; a search an
/// index cannot hide a record from).
pub async fn search<S: Store>(
    store: &S,
    origin: &str,
    key: &NoteVerifier,
    query: &RecordQuery,
    read_records: bool,
) -> Result<Found> {
    let objects = LogObjects::list(store).await?;
    let objects = &objects;
    let mut findings = objects.findings.clone();
    let mut bundles = objects.read_ahead(store, objects.bundle_candidates(0), 8);
    let mut found = Found {
        matched: Vec::new(),
        counts: SearchCounts::default(),
        unreadable: Vec::new(),
        index_edited: Vec::new(),
        index_refused: Vec::new(),
        tombstone_unsigned: Vec::new(),
        log_warnings: Vec::new(),
        origin: origin.to_owned(),
        records: RecordLog::new(),
        head: None,
        dictionaries: HashMap::new(),
    };
    // The newest checkpoint first: a tombstone after it is not yet vouched for.
    let (head, skipped) = newest_checkpoint(store, objects, origin, key).await?;
    found.head = head;
    findings.extend(skipped);
    let mut selection = Selection {
        signed: found.head.as_ref().map_or(0, |(h, _)| h.size),
        ..Selection::default()
    };
    while let Some((candidates, first)) = bundles.next().await {
        let Some((_, _, entries)) = objects
            .push_bundle(
                store,
                &mut found.records,
                &candidates,
                first,
                selection.signed,
                &mut findings,
            )
            .await?
        else {
            break;
        };
        // Ingests and tombstones, in log order: an ingest always comes before its tombstone.
        let mut judged_entries = Vec::new();
        for entry in entries {
            match &entry.body {
                EntryBody::Ingest { .. } | EntryBody::Destroyed { .. } => {
                    judged_entries.push(entry);
                }
                EntryBody::Dictionary {
                    object_version,
                    stored_sha256,
                    ..
                } => {
                    let bytes =
                        crate::dictionary::load(store, stored_sha256, object_version).await?;
                    found.dictionaries.insert(*stored_sha256, bytes);
                }
                _ => {}
            }
        }
        let dictionaries = &found.dictionaries;
        let mut judged = futures::stream::iter(judged_entries)
            .map(|entry| async move {
                let verdict = match &entry.body {
                    EntryBody::Ingest { .. } => {
                        Some(judge(store, &entry, query, read_records, dictionaries).await?)
                    }
                    _ => None,
                };
                Ok::<_, Error>((entry, verdict))
            })
            .buffered(LOOKUPS_IN_FLIGHT);
        while let Some(next) = judged.next().await {
            let (entry, verdict) = next?;
            selection.apply(&mut found.counts, entry, verdict);
        }
    }
    if let Some((head, _)) = &found.head
        && found.records.root_at(head.size) != Some(head.root)
    {
        return Err(damaged(&format!(
            "checkpoint {} does not match the stored entries",
            head.size
        )));
    }
    found.matched = selection.matched.into_values().collect();
    found.unreadable = selection.unreadable.into_iter().collect();
    found.index_edited = selection.index_edited.into_iter().collect();
    found.index_refused = selection.index_refused.into_iter().collect();
    found.tombstone_unsigned = selection.tombstone_unsigned.into_iter().collect();
    found.log_warnings = findings.iter().map(ToString::to_string).collect();
    found.counts.index_missing = selection.index_missing.len() as u64;
    Ok(found)
}

/// The records matched so far (by log position, and position by id so that a later tombstone
/// drops one), and those that could not be judged.
#[derive(Default)]
struct Selection {
    matched: BTreeMap<u64, Entry>,
    matched_at: HashMap<String, u64>,
    unreadable: BTreeSet<String>,
    index_edited: BTreeSet<String>,
    index_refused: BTreeMap<String, String>,
    index_missing: BTreeSet<String>,
    tombstone_unsigned: BTreeSet<String>,
    /// Entries the newest signed checkpoint covers.
    signed: u64,
}

impl Selection {
    /// Takes an ingest entry and its verdict, or a tombstone (`None`).
    fn apply(&mut self, counts: &mut SearchCounts, entry: Entry, verdict: Option<Judged>) {
        let id = entry.record.as_str().to_owned();
        let Some(verdict) = verdict else {
            if entry.index >= self.signed {
                // Not vouched for: a destruction run deletes the record first, so a record
                // still matched (it was read) under an unsigned tombstone stays, and so do the
                // warnings about the others.
                if self.matched_at.contains_key(&id) {
                    self.tombstone_unsigned.insert(id);
                }
                return;
            }
            // A signed tombstone: the record is gone, whatever it matched.
            if let Some(at) = self.matched_at.remove(&id) {
                self.matched.remove(&at);
            }
            counts.destroyed += 1;
            self.unreadable.remove(&id);
            self.index_edited.remove(&id);
            self.index_refused.remove(&id);
            self.index_missing.remove(&id);
            return;
        };
        counts.records += 1;
        let (hit, index, readable) = match verdict {
            Judged::Index(hit) => {
                counts.by_index += 1;
                (hit, IndexFinding::Nothing, true)
            }
            Judged::Record { hit, index } => {
                counts.by_record += 1;
                (hit, index, true)
            }
            Judged::Unreadable { index } => (false, index, false),
        };
        match index {
            IndexFinding::Nothing => {}
            // Counted only when the record was read: a destroyed record has neither.
            IndexFinding::Missing => {
                if readable {
                    self.index_missing.insert(id.clone());
                }
            }
            IndexFinding::Edited => {
                self.index_edited.insert(id.clone());
            }
            IndexFinding::Refused(words) => {
                self.index_refused.insert(id.clone(), words);
            }
        }
        if !readable {
            self.unreadable.insert(id);
            return;
        }
        if hit {
            self.matched_at.insert(id, entry.index);
            self.matched.insert(entry.index, entry);
        }
    }
}

/// Judges one record: by its header index when that is the index its entry commits to (or
/// the entry commits to none), else (or with `read_records`) by reading it.
async fn judge<S: Store>(
    store: &S,
    entry: &Entry,
    query: &RecordQuery,
    read_records: bool,
    dictionaries: &HashMap<Hash, Option<Arc<Vec<u8>>>>,
) -> Result<Judged> {
    let EntryBody::Ingest {
        object_key,
        object_version,
        dictionary,
        header_index,
        ..
    } = &entry.body
    else {
        return Ok(Judged::Unreadable {
            index: IndexFinding::Nothing,
        });
    };
    // An index the entry commits to must hash to it: one that does not (edited, replaced,
    // over the cap, unreadable) is read past and reported; a missing one hides nothing (the
    // record is read) and is counted. An index of an older entry, which commits to none, is
    // used as found.
    let mut index = IndexFinding::Nothing;
    if !read_records {
        let none_written = *header_index == Some(no_index_sha256());
        match read_index(store, entry.record.as_str()).await? {
            StoredIndex::Absent if header_index.is_some() && !none_written => {
                index = IndexFinding::Missing;
            }
            StoredIndex::OverCap if header_index.is_some() => index = IndexFinding::Edited,
            StoredIndex::Refused(words) if header_index.is_some() => {
                index = IndexFinding::Refused(words);
            }
            StoredIndex::Absent | StoredIndex::OverCap | StoredIndex::Refused(_) => {}
            StoredIndex::Read(bytes) => {
                if none_written || header_index.is_some_and(|h| h != Hash::of(&bytes)) {
                    index = IndexFinding::Edited;
                } else if let Some(found) = HeaderIndex::decode(&bytes) {
                    return Ok(Judged::Index(query.matches(&found.record_facts())));
                }
            }
        }
    }
    let dictionary = match dictionary {
        None => None,
        Some(sha256) => match dictionaries.get(sha256) {
            Some(Some(bytes)) => Some(bytes.as_slice()),
            _ => return Ok(Judged::Unreadable { index }),
        },
    };
    Ok(
        match crate::lifecycle::stored::record_facts(
            store,
            object_key,
            object_version,
            entry.logged_at,
            dictionary,
        )
        .await?
        {
            Some(facts) => Judged::Record {
                hit: query.matches(&facts),
                index,
            },
            None => Judged::Unreadable { index },
        },
    )
}

/// A record's header index object as found in the store.
enum StoredIndex {
    Absent,
    /// Larger than [`MAX_INDEX_LEN`]: not one the writer wrote, and not read whole (one
    /// planted in the bucket must not take the search's memory).
    OverCap,
    /// Refused by the store for good (its words: an archived storage class, a customer key, a
    /// policy): no reason to stop the search, which reads the record instead.
    Refused(String),
    Read(Vec<u8>),
}

async fn read_index<S: Store>(store: &S, record: &str) -> Result<StoredIndex> {
    match store
        .get(&index_key(record), None, MAX_INDEX_LEN as u64)
        .await
    {
        Ok(Some(object)) => Ok(StoredIndex::Read(object.bytes)),
        Ok(None) => Ok(StoredIndex::Absent),
        Err(Error::TooLarge { .. }) => Ok(StoredIndex::OverCap),
        Err(e) if e.retry() == crate::Retry::Permanent => Ok(StoredIndex::Refused(e.to_string())),
        Err(e) => Err(e),
    }
}

/// What an export wrote and left out.
#[derive(Debug, Default)]
pub struct ExportOutcome {
    /// Messages written, each with its proof.
    pub exported: usize,
    /// Records the index said match whose own headers do not (a stale or edited index).
    pub index_disagreed: Vec<String>,
    /// Matching records logged after the newest signed checkpoint (no proof yet: archive
    /// again to checkpoint them, then export again).
    pub not_checkpointed: Vec<String>,
    /// The checkpoint every proof is against.
    pub checkpoint_size: u64,
}

/// File names inside an export directory.
pub mod files {
    /// Directory of the messages, `<record id>.eml` each.
    pub const MESSAGES: &str = "messages";
    /// Directory of the proof bundles, `<record id>.json` each.
    pub const PROOFS: &str = "proofs";
    /// The archive's signed checkpoint every proof is against (a copy, for the requester).
    pub const CHECKPOINT: &str = "checkpoint";
    /// The signed manifest.
    pub const MANIFEST: &str = "manifest";
}

/// Writes the records `found` into `out` (a new or empty directory): each message re-read from
/// its record, checked against the log and matched again on its own headers, then its
/// `.eml`, its proof bundle, and at the end the checkpoint and the manifest signed by
/// `signer`. Files are written through `write` (path, bytes: the caller decides how, e.g.
/// readable by their owner only). Memory: one message at a time.
pub async fn write_export<S: Store>(
    store: &S,
    found: &Found,
    query: &RecordQuery,
    out: &Path,
    signer: &NoteSigner,
    spool: &Spool,
    write: &mut dyn FnMut(&Path, &[u8]) -> Result<()>,
) -> Result<ExportOutcome> {
    let Some((head, note)) = &found.head else {
        return Err(Error::Conflict(
            "the archive has no signed checkpoint yet".into(),
        ));
    };
    prepare_dir(out)?;
    let mut outcome = ExportOutcome {
        checkpoint_size: head.size,
        ..ExportOutcome::default()
    };
    let mut listed = Vec::new();
    for entry in &found.matched {
        let id = entry.record.as_str();
        if entry.index >= head.size {
            outcome.not_checkpointed.push(id.to_owned());
            continue;
        }
        let dictionary = match &entry.body {
            EntryBody::Ingest {
                dictionary: Some(sha256),
                ..
            } => Some(super::required_dictionary(
                id,
                sha256,
                found.dictionaries.get(sha256).cloned().flatten(),
            )?),
            _ => None,
        };
        let exported = export_logged(store, &entry.body, id, dictionary, spool).await?;
        let original = exported.original.to_vec()?;
        if !query.matches(&own_facts(&original, &exported, entry.logged_at)) {
            outcome.index_disagreed.push(id.to_owned());
            continue;
        }
        let bundle = super::disclosure(
            &found.records,
            entry,
            (head.size, note),
            &original,
            &exported,
        )?;
        write(
            &out.join(files::MESSAGES).join(format!("{id}.eml")),
            &original,
        )?;
        write(
            &out.join(files::PROOFS).join(format!("{id}.json")),
            bundle.to_json().as_bytes(),
        )?;
        listed.push(ManifestRecord {
            record: id.to_owned(),
            sha256: exported.original_sha256,
        });
        outcome.exported += 1;
    }
    let manifest = ExportManifest {
        origin: found.origin.clone(),
        checkpoint_size: head.size,
        checkpoint_root: head.root,
        exported_at: crate::unix_now(),
        query: query.lines().to_vec(),
        records: listed,
    };
    let signed_manifest = manifest
        .sign(signer)
        .map_err(|e| Error::Conflict(format!("signing the manifest: {e}")))?;
    write(&out.join(files::CHECKPOINT), note.as_bytes())?;
    write(&out.join(files::MANIFEST), signed_manifest.as_bytes())?;
    Ok(outcome)
}

/// The facts of an exported message, read from its own bytes (not from its index).
fn own_facts(original: &[u8], exported: &ExportedRecord, logged_at: UnixTime) -> RecordFacts {
    RecordFacts {
        facts: facts::extract(
            original,
            Envelope {
                folder: &exported.sidecar.folder,
                size: exported.sidecar.original_size,
                internal_date: exported.sidecar.internal_date,
            },
        ),
        archived_at: exported.archived_at.unwrap_or(logged_at),
    }
}

/// Creates the export directory and its subdirectories; refuses one that holds anything (an
/// export is never mixed with another).
fn prepare_dir(out: &Path) -> Result<()> {
    let io = |path: &Path, source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(|e| io(out, e))?;
        if entries.next().is_some() {
            return Err(Error::Usage(format!(
                "{} is not empty: an export goes into a new or empty directory",
                out.display()
            )));
        }
    }
    for dir in [out.join(files::MESSAGES), out.join(files::PROOFS)] {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    }
    Ok(())
}

/// The verdict on an export directory.
#[derive(Debug)]
pub struct ExportVerdict {
    /// The manifest, if its signature verified.
    pub manifest: Option<ExportManifest>,
    /// Messages whose proof, message and manifest line agree.
    pub verified: usize,
    /// What is wrong, one line each; empty: the export verifies.
    pub failures: Vec<String>,
}

impl ExportVerdict {
    /// Whether everything checked.
    pub fn verified(&self) -> bool {
        self.manifest.is_some() && self.failures.is_empty()
    }
}

/// Checks an export offline: the manifest's signature (export key), then for every message it
/// lists: its proof bundle against the archive key and the manifest's checkpoint, the message
/// file against the manifest's hash and the bundle's message; and that no message or proof is
/// there that the manifest does not list.
pub fn verify_export(
    dir: &Path,
    archive_key: &NoteVerifier,
    export_key: &NoteVerifier,
) -> ExportVerdict {
    let mut verdict = ExportVerdict {
        manifest: None,
        verified: 0,
        failures: Vec::new(),
    };
    let manifest = match std::fs::read(dir.join(files::MANIFEST)) {
        Err(e) => {
            verdict.failures.push(format!("manifest: {e}"));
            return verdict;
        }
        Ok(bytes) => match ExportManifest::open(&bytes, export_key) {
            Ok(m) => m,
            Err(e) => {
                verdict.failures.push(e.to_string());
                return verdict;
            }
        },
    };
    for r in &manifest.records {
        match check_message(dir, &manifest, r, archive_key) {
            Ok(()) => verdict.verified += 1,
            Err(e) => verdict.failures.push(format!("record {}: {e}", r.record)),
        }
    }
    let listed: std::collections::BTreeSet<&str> =
        manifest.records.iter().map(|r| r.record.as_str()).collect();
    for (sub, ext) in [(files::MESSAGES, ".eml"), (files::PROOFS, ".json")] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            if !listed.is_empty() {
                verdict.failures.push(format!("{sub}/ cannot be read"));
            }
            continue;
        };
        let mut extra: Vec<String> = entries
            .filter_map(std::result::Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.strip_suffix(ext).is_none_or(|id| !listed.contains(id)))
            .collect();
        extra.sort();
        for name in extra {
            verdict
                .failures
                .push(format!("{sub}/{name} is not listed in the manifest"));
        }
    }
    verdict.manifest = Some(manifest);
    verdict
}

fn check_message(
    dir: &Path,
    manifest: &ExportManifest,
    r: &ManifestRecord,
    archive_key: &NoteVerifier,
) -> std::result::Result<(), String> {
    let message = std::fs::read(dir.join(files::MESSAGES).join(format!("{}.eml", r.record)))
        .map_err(|e| format!("message file: {e}"))?;
    if Hash::of(&message) != r.sha256 {
        return Err("the message file is not the one the manifest lists (altered)".into());
    }
    let bytes = std::fs::read(dir.join(files::PROOFS).join(format!("{}.json", r.record)))
        .map_err(|e| format!("proof file: {e}"))?;
    let bundle = ProofBundle::parse(&bytes).map_err(|e| format!("proof: {e}"))?;
    let proven = bundle
        .verify(std::slice::from_ref(archive_key))
        .map_err(|e| format!("proof: {e}"))?;
    let checkpoint = Checkpoint::open(
        bundle.checkpoint.as_bytes(),
        std::slice::from_ref(archive_key),
        None,
    )
    .map_err(|e| format!("proof checkpoint: {e}"))?;
    if proven.record != r.record
        || proven.entry_type != "ingest"
        || !proven.message_verified
        || proven.origin != manifest.origin
        || checkpoint.size != manifest.checkpoint_size
        || checkpoint.root != manifest.checkpoint_root
    {
        return Err(format!(
            "the proof is for {} ({} entry, {}, checkpoint {}), not this record's disclosed message as of the manifest's checkpoint",
            proven.record, proven.entry_type, proven.origin, checkpoint.size
        ));
    }
    if bundle_message_sha256(&bundle) != Some(r.sha256) {
        return Err("the proof discloses another message than the message file".into());
    }
    Ok(())
}

fn bundle_message_sha256(bundle: &ProofBundle) -> Option<Hash> {
    use base64::Engine as _;
    let m = bundle.message.as_deref()?;
    base64::engine::general_purpose::STANDARD
        .decode(m)
        .ok()
        .map(|b| Hash::of(&b))
}
