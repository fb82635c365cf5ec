//! Either store, chosen at run time from a location (`file:DIR` or `s3://bucket/prefix`).

use super::fs::FsStore;
use super::s3::S3Store;
use super::{
    ObjectDigest, ObjectMetadata, PieceSink, RecordPut, Store, StoreInfo, StoredObject, VersionLock,
};
use crate::Result;
use mailvault_core::UnixTime;
use mailvault_core::verify::StoredVersion;

/// Either store, chosen at run time.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// A local directory.
    Fs(FsStore),
    /// An S3 bucket.
    S3(S3Store),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Fs($s) => $e,
            AnyStore::S3($s) => $e,
        }
    };
}

impl Store for AnyStore {
    async fn preflight(&self) -> Result<StoreInfo> {
        each!(self, s => s.preflight().await)
    }
    async fn put_record(&self, put: RecordPut<'_>) -> Result<String> {
        each!(self, s => s.put_record(put).await)
    }
    async fn make_durable(&self) -> Result<()> {
        each!(self, s => s.make_durable().await)
    }
    async fn put_immutable(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &ObjectMetadata,
        lock_until: UnixTime,
    ) -> Result<()> {
        each!(self, s => s.put_immutable(key, bytes, metadata, lock_until).await)
    }
    async fn put_mutable(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &ObjectMetadata,
    ) -> Result<()> {
        each!(self, s => s.put_mutable(key, bytes, metadata).await)
    }
    async fn get(
        &self,
        key: &str,
        version: Option<&str>,
        max_len: u64,
    ) -> Result<Option<StoredObject>> {
        each!(self, s => s.get(key, version, max_len).await)
    }
    async fn read_streaming(
        &self,
        key: &str,
        version: Option<&str>,
        sink: PieceSink<'_>,
    ) -> Result<Option<ObjectDigest>> {
        each!(self, s => s.read_streaming(key, version, sink).await)
    }
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        each!(self, s => s.list_keys(prefix).await)
    }
    async fn list_version_ids(&self, prefix: &str) -> Result<Vec<(String, String, bool)>> {
        each!(self, s => s.list_version_ids(prefix).await)
    }
    async fn versions_of(&self, key: &str) -> Result<Vec<(String, String, bool)>> {
        each!(self, s => s.versions_of(key).await)
    }

    async fn version_lock(&self, key: &str, version: &str) -> Result<Option<VersionLock>> {
        each!(self, s => s.version_lock(key, version).await)
    }

    async fn list_versions(&self, prefix: &str) -> Result<Vec<(String, StoredVersion)>> {
        each!(self, s => s.list_versions(prefix).await)
    }

    async fn set_legal_hold(&self, key: &str, version: &str, on: bool) -> Result<()> {
        each!(self, s => s.set_legal_hold(key, version, on).await)
    }

    async fn extend_retention(
        &self,
        key: &str,
        version: &str,
        until: UnixTime,
    ) -> Result<UnixTime> {
        each!(self, s => s.extend_retention(key, version, until).await)
    }

    async fn delete_version(&self, key: &str, version_id: &str) -> Result<()> {
        each!(self, s => s.delete_version(key, version_id).await)
    }
}
