//! The archive pipeline: `source -> record -> store -> log -> checkpoint`.
//!
//! For each message: a record id from the message's stable identity, a random salt and the
//! salted commitment, zstd, a locked PUT, and only then an `ingest` entry. After every batch the
//! new log bundles are written and then a signed checkpoint that covers them.
//!
//! Everything needed to resume lives in the store: the log says what was archived, and a record
//! that was PUT but not logged (a crash between the two) is adopted from its sidecar on the next
//! run instead of being stored again.

use crate::archive::{ArchiveLog, Sidecar as SidecarFields};
use crate::store::{RecordPut, Store, StoreInfo};
use crate::{Error, Result};
use mailvault_core::bundle::checkpoint_key;
use mailvault_core::checkpoint::CheckpointSigner;
use mailvault_core::entry::{EntryBody, RecordId, RetainUntil};
use mailvault_core::note::NoteSigner;
use mailvault_core::record::{SALT_LEN, commitment};
use mailvault_core::retention::Period;
use mailvault_core::{Hash, UnixTime};
use std::collections::HashSet;

use crate::source::SourceMessage;

/// How long records are kept, until retention policies land: one series and one period for
/// every record of a run, counted from the time of archiving.
#[derive(Debug, Clone)]
pub struct RetentionChoice {
    /// Record series (citation of the schedule item).
    pub series: String,
    /// Retention period.
    pub period: Period,
}

/// zstd level: 3 is zstd's default, a good speed/ratio balance for mail.
const ZSTD_LEVEL: i32 = 3;
/// Records between checkpoints.
pub const CHECKPOINT_EVERY: usize = 500;
/// Object Lock needs a date; a permanent record is locked this many years ahead (and extended
/// by later runs before it lapses).
const PERMANENT_LOCK_YEARS: u32 = 100;

/// The outcome of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and logged as this record.
    Archived(RecordId),
    /// Already in the archive (logged by an earlier run).
    AlreadyArchived(RecordId),
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Records stored and logged.
    pub archived: u64,
    /// Messages already archived.
    pub skipped: u64,
    /// Records found stored but unlogged (an interrupted run) and logged now.
    pub adopted: u64,
    /// Original bytes of the archived messages.
    pub original_bytes: u64,
    /// Stored (compressed) bytes.
    pub stored_bytes: u64,
}

/// The record id of a message: 32 hex digits of `SHA-256(origin || 0 || identity)`, stable
/// across runs so that a message archived once is recognised.
pub fn record_id(origin: &str, identity: &str) -> RecordId {
    let mut bytes = origin.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(identity.as_bytes());
    RecordId::from_hash(&Hash::of(&bytes))
}

/// Writes records and the log for one archive.
pub struct Archiver<'s, S: Store> {
    store: &'s S,
    info: StoreInfo,
    log: ArchiveLog,
    signer: CheckpointSigner,
    archived: HashSet<RecordId>,
    retention: RetentionChoice,
    since_checkpoint: usize,
    summary: RunSummary,
}

impl<'s, S: Store> Archiver<'s, S> {
    /// Opens an archive: preflight, read the log back, restore the signer from the newest
    /// checkpoint, and adopt records left unlogged by an interrupted run.
    pub async fn open(
        store: &'s S,
        origin: &str,
        key: NoteSigner,
        retention: RetentionChoice,
        now: UnixTime,
    ) -> Result<Self> {
        let info = store.preflight().await?;
        let verifier = mailvault_core::note::NoteVerifier::parse(&key.verifier_key())?;
        let log = ArchiveLog::load(store, origin, &verifier).await?;
        let signer = CheckpointSigner::new(origin, key, log.head);
        let mut archiver = Self {
            store,
            info,
            archived: log.ingested.clone(),
            log,
            signer,
            retention,
            since_checkpoint: 0,
            summary: RunSummary::default(),
        };
        archiver.adopt_unlogged(now).await?;
        Ok(archiver)
    }

    /// What the store guarantees.
    pub fn store_info(&self) -> &StoreInfo {
        &self.info
    }

    /// Totals so far.
    pub fn summary(&self) -> &RunSummary {
        &self.summary
    }

    async fn adopt_unlogged(&mut self, now: UnixTime) -> Result<()> {
        for key in self.store.list_keys("records/").await? {
            let Some(id) = key.strip_prefix("records/") else {
                continue;
            };
            let Ok(id) = RecordId::new(id) else { continue };
            if self.archived.contains(&id) {
                continue;
            }
            let Some(object) = self.store.get(&key, None).await? else {
                continue;
            };
            let fields = SidecarFields::from_map(&object.sidecar).map_err(|e| {
                Error::Conflict(format!(
                    "{key} is in the store but not in the log, and its sidecar cannot be read ({e}); \
                     it was not written by mailvault: remove it or investigate"
                ))
            })?;
            self.log.log.append(
                now,
                id.clone(),
                EntryBody::Ingest {
                    series: fields.series,
                    retain_until: fields.retain_until,
                    lock_mode: self.info.lock_mode,
                    object_key: key.clone(),
                    object_version: object.version_id,
                    stored_sha256: Hash::of(&object.bytes),
                    stored_size: object.bytes.len() as u64,
                    original_commitment: fields.commitment,
                },
            )?;
            self.archived.insert(id);
            self.summary.adopted += 1;
            self.since_checkpoint += 1;
        }
        if self.since_checkpoint > 0 {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Archives one message (stores, then logs). Call [`Self::checkpoint`] at the end.
    pub async fn archive(&mut self, msg: SourceMessage, now: UnixTime) -> Result<Outcome> {
        let id = record_id(self.log.origin(), &msg.identity);
        if self.archived.contains(&id) {
            self.summary.skipped += 1;
            return Ok(Outcome::AlreadyArchived(id));
        }
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| Error::Random(e.to_string()))?;
        let original_commitment = commitment(&salt, &msg.bytes);
        let original_len = msg.bytes.len() as u64;
        let retain_until = self.retention.period.retain_until(now);
        let lock_until = match retain_until {
            RetainUntil::Until(t) => t,
            RetainUntil::Permanent => match (Period::Span {
                years: PERMANENT_LOCK_YEARS,
                months: 0,
                days: 0,
            })
            .retain_until(now)
            {
                RetainUntil::Until(t) => t,
                RetainUntil::Permanent => now,
            },
        };
        let sidecar = SidecarFields {
            series: self.retention.series.clone(),
            retain_until,
            commitment: original_commitment,
            salt,
            folder: msg.folder.clone(),
            identity: msg.identity.clone(),
            location: msg.location.clone(),
            internal_date: msg.internal_date,
            flags: msg.flags.clone(),
            original_size: original_len,
        }
        .to_map();
        let bytes = msg.bytes;
        let stored = tokio::task::spawn_blocking(move || zstd::bulk::compress(&bytes, ZSTD_LEVEL))
            .await
            .map_err(|e| Error::Store(format!("compression task failed: {e}")))?
            .map_err(|e| Error::Store(format!("zstd: {e}")))?;
        let stored_sha256 = Hash::of(&stored);
        let stored_size = stored.len() as u64;
        let object_key = format!("records/{id}");
        let version = self
            .store
            .put_record(RecordPut {
                key: &object_key,
                bytes: stored,
                sha256: stored_sha256,
                retain_until: lock_until,
                sidecar: &sidecar,
            })
            .await?;
        // Logged only now that the PUT succeeded.
        self.log.log.append(
            now,
            id.clone(),
            EntryBody::Ingest {
                series: self.retention.series.clone(),
                retain_until,
                lock_mode: self.info.lock_mode,
                object_key,
                object_version: version,
                stored_sha256,
                stored_size,
                original_commitment,
            },
        )?;
        self.archived.insert(id.clone());
        self.summary.archived += 1;
        self.summary.original_bytes += original_len;
        self.summary.stored_bytes += stored_size;
        self.since_checkpoint += 1;
        if self.since_checkpoint >= CHECKPOINT_EVERY {
            self.checkpoint().await?;
        }
        Ok(Outcome::Archived(id))
    }

    /// Writes the new log bundles, then a signed checkpoint covering them. Returns the size
    /// signed, or `None` if nothing was new.
    pub async fn checkpoint(&mut self) -> Result<Option<u64>> {
        let size = self.log.log.size();
        let last = self.signer.last_signed().map_or(0, |h| h.size);
        for bundle in self.log.log.take_bundles() {
            self.store.put_immutable(&bundle.key, bundle.bytes).await?;
        }
        self.since_checkpoint = 0;
        if size == last && last > 0 {
            return Ok(None);
        }
        let proof = if last == 0 {
            Vec::new()
        } else {
            self.log.log.tree().consistency_proof(last, size)?
        };
        let note = self.signer.sign(size, self.log.log.root(), &proof)?;
        self.store
            .put_immutable(&checkpoint_key(size), note.into_bytes())
            .await?;
        Ok(Some(size))
    }
}
