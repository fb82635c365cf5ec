//! `file:DIR` — a local directory as a store: the embedded default and the quick path.
//!
//! It is **not WORM**: anyone with write access to the directory can change or delete records,
//! and nothing here can stop them. Records are logged with lock mode `NONE`, so the verifier
//! still detects a changed or missing record (by hash), but nothing prevents it. Use S3 with
//! Object Lock for records that must be kept.
//!
//! Layout under DIR: `objects/<key>` holds bytes, `sidecars/<key>.json` an object's metadata
//! (a record's sidecar, the writer's MAC of a log bundle or a state object).
//! A directory keeps one version of each object; its version id is always `0`, so a replaced
//! record shows up as tampered (its hash changed), not as a new version.

use super::{ObjectDigest, ObjectMetadata, PieceSink, RecordPut, Store, StoreInfo, StoredObject};
use crate::spool::Body;
use crate::{Error, Result};
use mailvault_core::entry::LockMode;
use mailvault_core::verify::StoredVersion;
use mailvault_core::{Hash, UnixTime};
use std::path::{Component, Path, PathBuf};

/// A directory store.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The one version a directory keeps.
const VERSION: &str = "0";

impl FsStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The path of a key, refusing keys that would leave the store.
    fn path(&self, area: &str, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        if key.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(Error::Usage(format!("invalid object key {key:?}")));
        }
        Ok(self.root.join(area).join(rel))
    }

    async fn write(path: &Path, bytes: &[u8]) -> Result<()> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io(dir, e))?;
        }
        // Write then rename, so a crash never leaves half an object under its name.
        let tmp = path.with_extension("mailvault-tmp");
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| io(&tmp, e))?;
        tokio::fs::rename(&tmp, path).await.map_err(|e| io(path, e))
    }

    /// Like [`Self::write`], from a file.
    async fn copy(from: &Path, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io(dir, e))?;
        }
        let tmp = path.with_extension("mailvault-tmp");
        tokio::fs::copy(from, &tmp).await.map_err(|e| io(from, e))?;
        tokio::fs::rename(&tmp, path).await.map_err(|e| io(path, e))
    }

    async fn sidecar(&self, key: &str) -> Result<ObjectMetadata> {
        match Self::read(&self.path("sidecars", &format!("{key}.json"))?).await? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Conflict(format!("sidecar of {key} is corrupt: {e}"))),
            None => Ok(ObjectMetadata::new()),
        }
    }

    /// Writes an object's metadata beside it (`sidecars/<key>.json`, as for records); an empty
    /// map removes a stale one.
    async fn write_metadata(&self, key: &str, metadata: &ObjectMetadata) -> Result<()> {
        let path = self.path("sidecars", &format!("{key}.json"))?;
        if metadata.is_empty() {
            return match tokio::fs::remove_file(&path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
                _ => Ok(()),
            };
        }
        let json = serde_json::to_vec_pretty(metadata).map_err(|e| Error::encoding(key, e))?;
        Self::write(&path, &json).await
    }

    async fn read(path: &Path) -> Result<Option<Vec<u8>>> {
        match tokio::fs::read(path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path, e)),
        }
    }
}

/// Every file under `dir`, as `/`-separated paths relative to `base`.
fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io(dir, e))?;
        let path = entry.path();
        if path.is_dir() {
            walk(base, &path, out)?;
        } else if path.extension().is_none_or(|e| e != "mailvault-tmp")
            && let Ok(rel) = path.strip_prefix(base)
        {
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

impl Store for FsStore {
    async fn preflight(&self) -> Result<StoreInfo> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| io(&self.root, e))?;
        Ok(StoreInfo {
            lock_mode: LockMode::None,
            description: format!(
                "file:{} (a local directory: not WORM, nothing stops deletion)",
                self.root.display()
            ),
            server_clock_ahead_secs: None,
        })
    }

    async fn put_record(&self, put: RecordPut<'_>) -> Result<String> {
        let path = self.path("objects", put.key)?;
        let sidecar =
            serde_json::to_vec_pretty(put.sidecar).map_err(|e| Error::encoding("sidecar", e))?;
        Self::write(
            &self.path("sidecars", &format!("{}.json", put.key))?,
            &sidecar,
        )
        .await?;
        match &put.body {
            Body::Memory(bytes) => Self::write(&path, bytes).await?,
            Body::File(file) => Self::copy(file.path(), &path).await?,
        }
        Ok(VERSION.to_owned())
    }

    async fn put_immutable(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &ObjectMetadata,
        _lock_until: UnixTime,
    ) -> Result<()> {
        let path = self.path("objects", key)?;
        match Self::read(&path).await? {
            Some(existing) if existing == bytes => Ok(()),
            Some(_) => Err(Error::Conflict(format!(
                "{key} already exists with different content; log objects are never rewritten"
            ))),
            None => {
                self.write_metadata(key, metadata).await?;
                Self::write(&path, &bytes).await
            }
        }
    }

    async fn put_mutable(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &ObjectMetadata,
    ) -> Result<()> {
        self.write_metadata(key, metadata).await?;
        Self::write(&self.path("objects", key)?, &bytes).await
    }

    async fn get(&self, key: &str, version: Option<&str>) -> Result<Option<StoredObject>> {
        let Some(bytes) = Self::read(&self.path("objects", key)?).await? else {
            return Ok(None);
        };
        if version.is_some_and(|v| v != VERSION) {
            return Ok(None);
        }
        Ok(Some(StoredObject {
            bytes,
            sidecar: self.sidecar(key).await?,
            version_id: VERSION.to_owned(),
        }))
    }

    async fn read_streaming(
        &self,
        key: &str,
        version: Option<&str>,
        sink: PieceSink<'_>,
    ) -> Result<Option<ObjectDigest>> {
        use sha2::Digest as _;
        use tokio::io::AsyncReadExt as _;
        if version.is_some_and(|v| v != VERSION) {
            return Ok(None);
        }
        let path = self.path("objects", key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, e)),
        };
        let mut sha256 = sha2::Sha256::new();
        let mut len = 0u64;
        let mut piece = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut piece).await.map_err(|e| io(&path, e))?;
            if n == 0 {
                break;
            }
            sha256.update(&piece[..n]);
            len += n as u64;
            sink(&piece[..n])?;
        }
        Ok(Some(ObjectDigest {
            sha256: Hash(sha256.finalize().into()),
            len,
            sidecar: self.sidecar(key).await?,
            version_id: VERSION.to_owned(),
        }))
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let base = self.root.join("objects");
        let mut keys = Vec::new();
        walk(&base, &base, &mut keys)?;
        keys.retain(|k| k.starts_with(prefix));
        keys.sort();
        Ok(keys)
    }

    async fn list_version_ids(&self, prefix: &str) -> Result<Vec<(String, String, bool)>> {
        Ok(self
            .list_keys(prefix)
            .await?
            .into_iter()
            .map(|k| (k, VERSION.to_owned(), false))
            .collect())
    }

    async fn list_versions(&self, prefix: &str) -> Result<Vec<(String, StoredVersion)>> {
        let mut out = Vec::new();
        // One version per key; hashes are not read here (verify reads them in pieces).
        for key in self.list_keys(prefix).await? {
            out.push((
                key,
                StoredVersion {
                    version_id: VERSION.to_owned(),
                    delete_marker: false,
                    sha256: None,
                    lock_mode: None,
                    retain_until: None,
                    legal_hold: false,
                    opened: None,
                },
            ));
        }
        Ok(out)
    }

    async fn delete_version(&self, key: &str, version_id: &str) -> Result<()> {
        if version_id != VERSION {
            return Ok(());
        }
        // The object first: a crash in between leaves a sidecar without an object, which
        // lists as nothing and is removed by the next attempt.
        for path in [
            self.path("objects", key)?,
            self.path("sidecars", &format!("{key}.json"))?,
        ] {
            match tokio::fs::remove_file(&path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path, e)),
                _ => {}
            }
        }
        Ok(())
    }
}
