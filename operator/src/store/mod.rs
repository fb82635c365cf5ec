//! Where records and the log live: one small trait, two implementations.
//!
//! `writer -> Store -> { s3 (Object Lock, WORM), fs (a local directory, not WORM) }`;
//! `location` turns `file:DIR` / `s3://bucket/prefix` into an [`AnyStore`].
//!
//! Keys are relative to the archive's root and spelled only in [`mailvault_core::layout`];
//! each store maps them under its own root.

mod any;
pub mod fs;
pub mod location;
pub mod s3;

pub use any::AnyStore;
pub use location::{S3Options, open_store};

use crate::Result;
use crate::spool::Body;
use mailvault_core::Hash;
use mailvault_core::UnixTime;
use mailvault_core::entry::LockMode;
use mailvault_core::verify::StoredVersion;
use std::collections::BTreeMap;

/// The user metadata of an object version: a record's [`crate::sidecar::Sidecar`] as the
/// store carries it (S3 user metadata, or a JSON file), dying with the version.
pub type ObjectMetadata = BTreeMap<String, String>;

/// A record to store.
#[derive(Debug)]
pub struct RecordPut<'a> {
    /// Object key relative to the archive root.
    pub key: &'a str,
    /// The stored (compressed) bytes, in memory or in a spool file.
    pub body: Body,
    /// SHA-256 of the body, sent as the request checksum and checked by the server.
    pub sha256: Hash,
    /// Lock to place at write time.
    pub retain_until: UnixTime,
    /// The sidecar.
    pub sidecar: &'a ObjectMetadata,
    /// An unlocked object that belongs to the record (its header index, `(key, bytes)`),
    /// written once the record's PUT has succeeded and never before it, so a crash can leave a
    /// record without it but never it without a record. On S3 it goes while the record's lock
    /// is confirmed: one round trip less per record to a remote store.
    pub companion: Option<(String, Vec<u8>)>,
}

/// An object read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its sidecar metadata (empty for log objects).
    pub sidecar: ObjectMetadata,
    /// Version id.
    pub version_id: String,
}

/// An object read in pieces: what was seen of it besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDigest {
    /// SHA-256 of its bytes.
    pub sha256: Hash,
    /// Its length.
    pub len: u64,
    /// Its sidecar metadata (empty for log objects).
    pub sidecar: ObjectMetadata,
    /// Version id.
    pub version_id: String,
    /// Its lock, when the read reported it (AWS S3 sends it with `GetObject`; versitygw and the
    /// directory store do not): then the verifier needs no [`Store::version_lock`].
    pub lock: Option<VersionLock>,
}

/// The Object Lock state of one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionLock {
    /// Lock mode, if any.
    pub mode: Option<LockMode>,
    /// Retain-until, if any.
    pub retain_until: Option<UnixTime>,
    /// Whether the legal-hold flag is on.
    pub legal_hold: bool,
}

/// Where the pieces of an object read with [`Store::read_streaming`] go.
pub type PieceSink<'a> = &'a mut (dyn FnMut(&[u8]) -> Result<()> + Send);

/// Largest small state object (`state/run.json`, the dictionary pointer) a reader accepts.
pub const MAX_SMALL_STATE_LEN: u64 = 64 * 1024;

/// [`Store::get`] for the writer's state objects (`state/…`: mutable, unlocked, trusted only
/// with the writer's MAC). One larger than `max_len` is not the writer's: it comes back empty
/// and without metadata, so it fails the MAC check like any object the writer did not write
/// (reported, not trusted) instead of failing the run or taking its memory.
pub async fn get_state<S: Store>(
    store: &S,
    key: &str,
    max_len: u64,
) -> Result<Option<StoredObject>> {
    match store.get(key, None, max_len).await {
        Err(crate::Error::TooLarge { .. }) => Ok(Some(StoredObject {
            bytes: Vec::new(),
            sidecar: ObjectMetadata::new(),
            version_id: String::new(),
        })),
        other => other,
    }
}

/// What a store guarantees, found by its preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// Lock mode records are stored under.
    pub lock_mode: LockMode,
    /// A description for people (`s3://bucket/prefix (Object Lock, COMPLIANCE)`).
    pub description: String,
    /// How far the server's clock is ahead of this machine's, in seconds (negative: behind),
    /// as the preflight read it; `None` when unknown or when the store places no locks. A lock
    /// date must lie in the future by the server's clock.
    pub server_clock_ahead_secs: Option<i64>,
}

/// The operations the pipeline, the verifier and the CLI need from a store. A store is a
/// cheap handle (clients share their connections), cloned into each record's store task.
pub trait Store: Send + Sync + Clone + 'static {
    /// Checks that the store can hold records as promised; refuses (with the reason) a bucket
    /// without versioning or Object Lock.
    fn preflight(&self) -> impl Future<Output = Result<StoreInfo>> + Send;

    /// Stores a record under lock, then its companion object (see [`RecordPut::companion`]);
    /// returns the record's version id.
    fn put_record(&self, put: RecordPut<'_>) -> impl Future<Output = Result<String>> + Send;

    /// Makes what was written so far survive a power loss: the writer calls it before it writes
    /// log bundles (so the log never names a record a power loss could take back) and after a
    /// checkpoint. An S3 server answers a PUT or DELETE once it is durable: nothing to do there.
    fn make_durable(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Writes an object that must never change (log bundles, checkpoints) with its user
    /// `metadata` (the writer's MAC): succeeds if it is absent or already holds exactly these
    /// bytes; fails if it holds other bytes. On S3 the object is also put under a COMPLIANCE
    /// lock until `lock_until` (the writer's log horizon), so that nobody can
    /// delete a log object the signer relies on.
    fn put_immutable(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &ObjectMetadata,
        lock_until: UnixTime,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Writes a small mutable object (run marker, cursor, head) with its user `metadata`.
    fn put_mutable(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &ObjectMetadata,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Reads an object (its current version, or the given one) whole; `None` if absent. One
    /// larger than `max_len` is not read ([`Error::TooLarge`]): every caller says how large
    /// the object it expects can be (a record is read with [`Store::read_streaming`]).
    fn get(
        &self,
        key: &str,
        version: Option<&str>,
        max_len: u64,
    ) -> impl Future<Output = Result<Option<StoredObject>>> + Send;

    /// Reads an object (its current version, or the given one) piece by piece, handing each
    /// piece to `sink` and hashing it on the way, so an object of any size costs a buffer, not
    /// its size; `None` if absent.
    fn read_streaming(
        &self,
        key: &str,
        version: Option<&str>,
        sink: PieceSink<'_>,
    ) -> impl Future<Output = Result<Option<ObjectDigest>>> + Send;

    /// Keys under a prefix (current objects only), sorted.
    fn list_keys(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Every version and delete marker under a prefix, without lock state (one LIST per 1000
    /// versions, no HEAD): `(key, version id, is a delete marker)`, sorted by key, each key's
    /// data versions in the order they were written (oldest first), then its delete markers.
    /// The first data version of a key mailvault writes once (a log object) is mailvault's:
    /// Object Lock keeps it, and nobody can put a version beneath it.
    fn list_version_ids(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<(String, String, bool)>>> + Send;

    /// Every version and delete marker of exactly `key` (not of the keys it is a prefix of):
    /// `(key, version id, is a delete marker)`. What a destruction run lists before and after
    /// deleting one record; a store that can look one key up directly overrides it (the `file:`
    /// store would otherwise read a directory of every record once per record).
    fn versions_of(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Vec<(String, String, bool)>>> + Send {
        async move {
            Ok(self
                .list_version_ids(key)
                .await?
                .into_iter()
                .filter(|(k, _, _)| k == key)
                .collect())
        }
    }

    /// The lock of one version (S3: `HeadObject`); `None` if the version is absent.
    fn version_lock(
        &self,
        key: &str,
        version: &str,
    ) -> impl Future<Output = Result<Option<VersionLock>>> + Send;

    /// Every version and delete marker under a prefix, sorted by key, with lock state (hashes
    /// are not read: `sha256` is `None`).
    fn list_versions(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<(String, StoredVersion)>>> + Send;

    /// Sets (`on`) or clears the legal hold of one version of a record. S3 keeps one flag per
    /// version (`PutObjectLegalHold`); several `LegalHold`s may hold one record, so the caller
    /// (`lifecycle::holds`) clears it only when no hold in the log is in force any more. A
    /// held version cannot be deleted, whatever its retain-until.
    fn set_legal_hold(
        &self,
        key: &str,
        version: &str,
        on: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Extends the COMPLIANCE retain-until of one version of a record to at least `until`
    /// (`PutObjectRetention`). Never shortens: a lock already at or after `until` is left as it
    /// is (S3 refuses to shorten a COMPLIANCE lock, and the directory store keeps the same
    /// rule). Returns the retain-until in force afterwards.
    fn extend_retention(
        &self,
        key: &str,
        version: &str,
        until: UnixTime,
    ) -> impl Future<Output = Result<UnixTime>> + Send;
    /// Deletes one version (or delete marker) of an object, with its sidecar, for the
    /// destruction run. On S3 a locked version is refused by the server — COMPLIANCE retention
    /// or a legal hold — and that refusal comes back as [`crate::Error::ObjectLocked`]; nothing
    /// here ever asks to bypass a lock. Deleting a version that is already gone succeeds (a
    /// run resumed after a crash deletes again what it may have deleted).
    fn delete_version(
        &self,
        key: &str,
        version_id: &str,
    ) -> impl Future<Output = Result<()>> + Send;
}
