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
//!
//! A record's lock lives in `locks/<key>.json` (`{"retain_until": .., "legal_hold": ..}`),
//! kept by the same rules as S3's COMPLIANCE mode: retention is only ever extended, and the
//! legal hold is one flag per record. Nothing stops someone with write access from editing
//! the file; the store reports it (`mailvault ls` shows held records) but cannot enforce it.

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

/// The first piece buffer of a read; it grows while reads fill it. Zeroing a 256 KiB buffer
/// for every 1 KB record was the largest user-space cost of verifying small mail (perf).
const FIRST_PIECE: usize = 16 * 1024;
const LARGEST_PIECE: usize = 256 * 1024;

/// Reads a file in pieces into `sink`, hashing them: `(SHA-256, length)`, `None` if absent.
/// Blocking: local file reads, called where blocking is allowed.
fn read_pieces_blocking(path: &Path, sink: PieceSink<'_>) -> Result<Option<(Hash, u64)>> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    let (mut sha256, mut len, mut piece) = (sha2::Sha256::new(), 0u64, vec![0u8; FIRST_PIECE]);
    loop {
        let n = file.read(&mut piece).map_err(|e| io(path, e))?;
        if n == 0 {
            return Ok(Some((Hash(sha256.finalize().into()), len)));
        }
        sha256.update(&piece[..n]);
        len += n as u64;
        sink(&piece[..n])?;
        if n == piece.len() && piece.len() < LARGEST_PIECE {
            piece.resize(piece.len() * 2, 0);
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The one version a directory keeps.
const VERSION: &str = "0";

/// A record's lock, as the directory store keeps it (`locks/<key>.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct FsLock {
    /// Retain-until (seconds since the epoch), as S3 would hold it.
    retain_until: Option<i64>,
    /// The legal-hold flag.
    legal_hold: bool,
}

/// Largest lock file read (it holds two small fields).
const MAX_LOCK_FILE: u64 = 4096;
/// Largest sidecar file read (an S3 object's user metadata is at most 2 KiB; a sidecar here
/// holds the same fields).
const MAX_SIDECAR_FILE: u64 = 256 * 1024;

impl FsStore {
    async fn lock(&self, key: &str) -> Result<FsLock> {
        let path = self.path("locks", &format!("{key}.json"))?;
        match Self::read(&path, key, MAX_LOCK_FILE).await? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Conflict(format!("lock of {key} is corrupt: {e}"))),
            None => Ok(FsLock::default()),
        }
    }

    async fn write_lock(&self, key: &str, lock: FsLock) -> Result<()> {
        let json = serde_json::to_vec(&lock).map_err(|e| Error::encoding(key, e))?;
        self.write(&self.path("locks", &format!("{key}.json"))?, &json)
            .await
    }

    /// The lock of a record that exists in version `version`, or a refusal naming it.
    async fn lock_of_version(&self, key: &str, version: &str) -> Result<FsLock> {
        if version != VERSION
            || !tokio::fs::try_exists(self.path("objects", key)?)
                .await
                .unwrap_or(false)
        {
            return Err(Error::Usage(format!(
                "no version {version:?} of {key} in this directory store"
            )));
        }
        self.lock(key).await
    }

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

    async fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let (root, path, bytes) = (self.root.clone(), path.to_path_buf(), bytes.to_vec());
        tokio::task::spawn_blocking(move || write_file(&root, &path, &bytes))
            .await
            .map_err(|e| Error::task("file write", e))?
    }

    async fn sidecar(&self, key: &str) -> Result<ObjectMetadata> {
        match Self::read(
            &self.path("sidecars", &format!("{key}.json"))?,
            key,
            MAX_SIDECAR_FILE,
        )
        .await?
        {
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
            return self.remove(path).await;
        }
        let json = serde_json::to_vec_pretty(metadata).map_err(|e| Error::encoding(key, e))?;
        self.write(&path, &json).await
    }

    /// Removes a file of the store if it is there ([`remove_file`]).
    async fn remove(&self, path: PathBuf) -> Result<()> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || remove_file(&root, &path))
            .await
            .map_err(|e| Error::task("file removal", e))?
    }

    /// Reads the file at `path` (the object `key`'s, or its sidecar's or lock's) whole, if it
    /// holds at most `max` bytes ([`Error::TooLarge`] otherwise, having read no more than that).
    async fn read(path: &Path, key: &str, max: u64) -> Result<Option<Vec<u8>>> {
        use std::io::Read as _;
        let owned = path.to_owned();
        // One blocking call (open and read), as for writes.
        let read = tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            std::fs::File::open(&owned)?
                .take(max.saturating_add(1))
                .read_to_end(&mut bytes)?;
            Ok::<_, std::io::Error>(bytes)
        })
        .await
        .map_err(|e| Error::task("file read", e))?;
        match read {
            Ok(b) if b.len() as u64 > max => Err(Error::TooLarge {
                key: key.to_owned(),
                max,
            }),
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path, e)),
        }
    }
}

/// Writes `bytes` to the store's file at `path` ([`replace_file`]).
fn write_file(root: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(root, path, |file, tmp| {
        std::io::Write::write_all(file, bytes).map_err(|e| io(tmp, e))
    })
}

/// Copies the file `from` (a spooled message) to the store's file at `path` ([`replace_file`]).
fn copy_file(root: &Path, from: &Path, path: &Path) -> Result<()> {
    replace_file(root, path, |file, _| {
        let mut source = std::fs::File::open(from).map_err(|e| io(from, e))?;
        std::io::copy(&mut source, file)
            .map(|_| ())
            .map_err(|e| io(from, e))
    })
}

/// Removes the store's file at `path` if it is there, refusing a linked directory on the way
/// (a link must not make mailvault delete a file elsewhere).
fn remove_file(root: &Path, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        no_link_on_the_way(root, dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, e)),
        _ => Ok(()),
    }
}

/// Puts a file under `path` (inside the store at `root`), filled by `fill`: written under a
/// fresh temporary name in `root/tmp/` and renamed, so a crash never leaves half an object under
/// its name. Blocking, one call for the whole of it: with a `tokio::fs` call per step
/// (directories, write, mode, rename) a record cost some 300 futex calls in hand-offs to the
/// blocking pool (docs/benchmarks.md). Objects hold messages and sidecars their salts: readable
/// by the owner only (0600), from creation.
///
/// Someone who can write to the store's directory must not be able to make mailvault write
/// elsewhere: the temporary file is created new (`O_EXCL`, a random name), never opened through
/// a link someone left under a predictable name, in a `tmp/` that is not a link, and is checked
/// to be the file in `tmp/` (device and inode) before anything is written to it; a directory on
/// the way to `path` that is a symbolic link is refused before anything lands there (checked
/// just before the rename, and before and after creating a missing directory). Directories are
/// created only when that check finds one missing: checking and creating them for every file
/// cost about 40 `statx` and 8 `mkdir` calls per record (`strace -c`). `rename` replaces a
/// link at `path` itself rather than following it. What is left is a race: a directory swapped
/// for a link between the last check and the rename (microseconds, after the write) is
/// followed; closing it needs directory handles (`openat`/`renameat`), not done.
fn replace_file(
    root: &Path,
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File, &Path) -> Result<()>,
) -> Result<()> {
    let Some(dir) = path.parent() else {
        return Err(Error::Usage(format!(
            "invalid object path {}",
            path.display()
        )));
    };
    let tmp_dir = root.join(TEMPORARY_DIR);
    // tempfile creates the file with mode 0600 and O_EXCL, and removes it if `fill` fails.
    let temporary = || {
        tempfile::Builder::new()
            .prefix(TEMPORARY_PREFIX)
            .suffix(&format!(".{TEMPORARY}"))
            .tempfile_in(&tmp_dir)
    };
    if !no_link_on_the_way(root, &tmp_dir)? {
        create_dir_checked(root, &tmp_dir)?;
    }
    let mut tmp = temporary().map_err(|e| io(&tmp_dir, e))?;
    let tmp_path = tmp.path().to_path_buf();
    // `tmp/` swapped for a link between its check and the file's creation would put what is
    // written outside the store, where no sweep finds it: the file must be the one in `tmp/`
    // before anything is written to it (if not, it is left empty wherever it went).
    if !is_at(root, tmp.as_file(), &tmp_path)? {
        return Err(Error::Conflict(format!(
            "{} is not where mailvault created it a moment ago: something swapped {} (a \
             symbolic link?) meanwhile; nothing was written. Check who else writes to the store",
            tmp_path.display(),
            tmp_dir.display()
        )));
    }
    fill(tmp.as_file_mut(), &tmp_path)?;
    // Every directory down to `dir` exists and none is a link just before the rename (a check
    // that stopped at a missing one would let one appear there unchecked).
    if !no_link_on_the_way(root, dir)? {
        create_dir_checked(root, dir)?;
    }
    match tmp.persist(path) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::NotFound => {
            create_dir_checked(root, dir)?;
            e.file
                .persist(path)
                .map(|_| ())
                .map_err(|e| io(path, e.error))
        }
        Err(e) => Err(io(path, e.error)),
    }
}

/// Creates the store's directory `dir` and those above it, refusing a link on the way before
/// (so none is created elsewhere) and after (one that appeared meanwhile).
fn create_dir_checked(root: &Path, dir: &Path) -> Result<()> {
    no_link_on_the_way(root, dir)?;
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    if no_link_on_the_way(root, dir)? {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "{} was removed as soon as mailvault created it; check who else writes to the store",
            dir.display()
        )))
    }
}

/// Whether `file` (open) is the file at `path` in the store at `root`, with no link on the
/// way: the same device and inode.
fn is_at(root: &Path, file: &std::fs::File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    if let Some(dir) = path.parent()
        && !no_link_on_the_way(root, dir)?
    {
        return Ok(false);
    }
    let open = file.metadata().map_err(|e| io(path, e))?;
    match std::fs::symlink_metadata(path) {
        Ok(there) => Ok(there.dev() == open.dev() && there.ino() == open.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(path, e)),
    }
}

/// Where files are written before they are renamed into place (see [`replace_file`]): one
/// directory, so whatever a crash leaves is in one place, outside every listing, and the next
/// writer removes it once it is an hour old ([`remove_stale_temporaries`]) — a leftover can
/// hold a message, and a destroyed record's bytes must not outlive it by much.
const TEMPORARY_DIR: &str = "tmp";
/// How every temporary file's name starts (then random characters, then `.mailvault-tmp`).
const TEMPORARY_PREFIX: &str = ".tmp";
/// The extension of a file being written. Earlier versions wrote them beside the object, so
/// listings still skip them.
const TEMPORARY: &str = "mailvault-tmp";
/// A temporary file older than this is a crashed write's, not one in progress: no single
/// object takes an hour to write to a local directory.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_hours(1);

/// Removes crashed writes' temporary files (older than [`STALE_TEMPORARY`]) from `root/tmp/`;
/// returns how many. A link is removed as a link, never followed. Only names mailvault gives
/// its temporary files are removed: if `tmp/` is swapped for a link to another directory while
/// this runs (each removal looks the path up again), nothing but such files can go there.
fn remove_stale_temporaries(root: &Path) -> Result<usize> {
    let dir = root.join(TEMPORARY_DIR);
    no_link_on_the_way(root, &dir)?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(&dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| io(&dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(TEMPORARY_PREFIX) && name.ends_with(&format!(".{TEMPORARY}"))) {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .unwrap_or_default();
        if !meta.is_dir() && age >= STALE_TEMPORARY {
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                // Another writer's sweep got there first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, e)),
            }
        }
    }
    Ok(removed)
}

/// Every file under `dir`, as `/`-separated paths relative to `base`. Iterative (a deep tree
/// cannot exhaust the stack), and a symbolic link is never followed: a `file:` store never
/// holds one, so finding one is an error that names it (a link to a folder could loop, or make
/// objects from outside the store look like records).
fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| io(&path, e))?;
            if kind.is_symlink() {
                return Err(Error::Conflict(format!(
                    "{} is a symbolic link; a file: store never holds one and mailvault does \
                     not follow it: remove it (or replace it with what it points to)",
                    path.display()
                )));
            }
            if kind.is_dir() {
                pending.push(path);
            } else if path.extension().is_none_or(|e| e != TEMPORARY)
                && let Ok(rel) = path.strip_prefix(base)
            {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    Ok(())
}

/// Refuses a symbolic link at any directory from `base` down to `dir` (a listing or a lookup
/// that starts below `base` would otherwise follow one without seeing it). Stops at the first
/// directory that does not exist: whether every one does is the answer (`true` also for a
/// `dir` outside `base`, which is not checked).
fn no_link_on_the_way(base: &Path, dir: &Path) -> Result<bool> {
    let Ok(rel) = dir.strip_prefix(base) else {
        return Ok(true);
    };
    let mut at = base.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::Conflict(format!(
                    "{} is a symbolic link; a file: store never holds one and mailvault does \
                     not follow it: remove it (or replace it with what it points to)",
                    at.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(&at, e)),
        }
    }
    Ok(true)
}

impl Store for FsStore {
    /// `syncfs` of the file system the store is on: one call flushes every file, rename and
    /// deletion since the last, where a `fsync` per file would cost a journal commit for each
    /// of a record's four files (mbsync's default, fsync per message, is 10× slower than without
    /// on this machine: docs/benchmarks.md). It flushes what others wrote to that file system
    /// too, which costs them nothing they would not pay later.
    async fn make_durable(&self) -> Result<()> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let dir = std::fs::File::open(&root).map_err(|e| io(&root, e))?;
            rustix::fs::syncfs(&dir).map_err(|e| io(&root, e.into()))
        })
        .await
        .map_err(|e| Error::task("syncing the store", e))?
    }

    async fn preflight(&self) -> Result<StoreInfo> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| io(&self.root, e))?;
        let root = self.root.clone();
        let removed = tokio::task::spawn_blocking(move || remove_stale_temporaries(&root))
            .await
            .map_err(|e| Error::task("temporary files", e))??;
        if removed > 0 {
            tracing::info!(
                removed,
                "removed temporary files left by an interrupted write to {}",
                self.root.display()
            );
        }
        Ok(StoreInfo {
            lock_mode: LockMode::None,
            description: format!(
                "file:{} (a local directory: not WORM, nothing stops deletion)",
                self.root.display()
            ),
            // The directory store judges locks by this machine's clock: no skew.
            server_clock_ahead_secs: Some(0),
        })
    }

    async fn put_record(&self, put: RecordPut<'_>) -> Result<String> {
        let sidecar_path = self.path("sidecars", &format!("{}.json", put.key))?;
        let object_path = self.path("objects", put.key)?;
        let lock_path = self.path("locks", &format!("{}.json", put.key))?;
        let sidecar =
            serde_json::to_vec_pretty(put.sidecar).map_err(|e| Error::encoding("sidecar", e))?;
        let lock = FsLock {
            retain_until: Some(put.retain_until.0),
            legal_hold: false,
        };
        let lock = serde_json::to_vec(&lock).map_err(|e| Error::encoding(put.key, e))?;
        // The companion is an unlocked object without metadata: a stale sidecar of it goes.
        let companion = match put.companion {
            Some((key, bytes)) => Some((
                self.path("sidecars", &format!("{key}.json"))?,
                self.path("objects", &key)?,
                bytes,
            )),
            None => None,
        };
        let (root, body) = (self.root.clone(), put.body);
        // A record's files in one blocking call, in the order a crash may stop between: one
        // hand-off to the blocking pool per record instead of one per file (a quarter of the
        // CPU of archiving short mail to a directory was threads waking each other; perf).
        tokio::task::spawn_blocking(move || {
            write_file(&root, &sidecar_path, &sidecar)?;
            match &body {
                Body::Memory(bytes) => write_file(&root, &object_path, bytes)?,
                Body::File(file) => copy_file(&root, file.path(), &object_path)?,
            }
            write_file(&root, &lock_path, &lock)?;
            if let Some((sidecar_path, object_path, bytes)) = companion {
                remove_file(&root, &sidecar_path)?;
                write_file(&root, &object_path, &bytes)?;
            }
            Ok(VERSION.to_owned())
        })
        .await
        .map_err(|e| Error::task("record write", e))?
    }

    async fn put_immutable(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &ObjectMetadata,
        _lock_until: UnixTime,
    ) -> Result<()> {
        let path = self.path("objects", key)?;
        // An object larger than ours is not ours: read no more of it than ours holds.
        match Self::read(&path, key, bytes.len() as u64).await {
            Ok(Some(existing)) if existing == bytes => Ok(()),
            Ok(Some(_)) | Err(Error::TooLarge { .. }) => Err(Error::Conflict(format!(
                "{key} already exists with different content; log objects are never rewritten"
            ))),
            Ok(None) => {
                self.write_metadata(key, metadata).await?;
                self.write(&path, &bytes).await
            }
            Err(e) => Err(e),
        }
    }

    async fn put_mutable(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &ObjectMetadata,
    ) -> Result<()> {
        self.write_metadata(key, metadata).await?;
        self.write(&self.path("objects", key)?, &bytes).await
    }

    async fn get(
        &self,
        key: &str,
        version: Option<&str>,
        max_len: u64,
    ) -> Result<Option<StoredObject>> {
        if version.is_some_and(|v| v != VERSION) {
            return Ok(None);
        }
        let Some(bytes) = Self::read(&self.path("objects", key)?, key, max_len).await? else {
            return Ok(None);
        };
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
        if version.is_some_and(|v| v != VERSION) {
            return Ok(None);
        }
        let path = self.path("objects", key)?;
        // Read on this thread, in place (on a multi-threaded runtime the worker hands its other
        // tasks on first): each tokio::fs call is a hand-off to a blocking thread and back, and
        // those wake-ups were most of the time of verifying small records (perf). A
        // current-thread runtime (tests) just blocks for the read of a local file.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let read = if multi_thread {
            tokio::task::block_in_place(|| read_pieces_blocking(&path, sink))?
        } else {
            read_pieces_blocking(&path, sink)?
        };
        let Some((sha256, len)) = read else {
            return Ok(None);
        };
        Ok(Some(ObjectDigest {
            sha256,
            len,
            sidecar: self.sidecar(key).await?,
            version_id: VERSION.to_owned(),
            lock: None,
        }))
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let base = self.root.join("objects");
        // Only the directory the prefix lies in: `records/…` never reads the header indexes.
        let start = match prefix.rsplit_once('/') {
            Some((dir, _)) if !dir.is_empty() => self.path("objects", dir)?,
            _ => base.clone(),
        };
        no_link_on_the_way(&base, &start)?;
        let mut keys = Vec::new();
        walk(&base, &start, &mut keys)?;
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

    async fn versions_of(&self, key: &str) -> Result<Vec<(String, String, bool)>> {
        let path = self.path("objects", key)?;
        if let Some(parent) = path.parent() {
            no_link_on_the_way(&self.root.join("objects"), parent)?;
        }
        match tokio::fs::symlink_metadata(&path).await {
            Ok(m) if m.is_file() => Ok(vec![(key.to_owned(), VERSION.to_owned(), false)]),
            Ok(m) if m.file_type().is_symlink() => Err(Error::Conflict(format!(
                "{} is a symbolic link; a file: store never holds one and mailvault does not \
                 follow it: remove it (or replace it with what it points to)",
                path.display()
            ))),
            Ok(_) => Ok(Vec::new()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&path, e)),
        }
    }

    async fn version_lock(&self, key: &str, version: &str) -> Result<Option<super::VersionLock>> {
        let path = self.path("objects", key)?;
        if version != VERSION
            || !tokio::fs::try_exists(&path)
                .await
                .map_err(|e| io(&path, e))?
        {
            return Ok(None);
        }
        let lock = self.lock(key).await?;
        Ok(Some(super::VersionLock {
            mode: None,
            retain_until: lock.retain_until.map(UnixTime),
            legal_hold: lock.legal_hold,
        }))
    }

    async fn list_versions(&self, prefix: &str) -> Result<Vec<(String, StoredVersion)>> {
        let mut out = Vec::new();
        // One version per key; hashes are not read here (verify reads them in pieces).
        for key in self.list_keys(prefix).await? {
            let lock = self.lock(&key).await?;
            out.push((
                key,
                StoredVersion {
                    version_id: VERSION.to_owned(),
                    delete_marker: false,
                    sha256: None,
                    lock_mode: None,
                    retain_until: lock.retain_until.map(UnixTime),
                    legal_hold: lock.legal_hold,
                    opened: None,
                },
            ));
        }
        Ok(out)
    }

    async fn set_legal_hold(&self, key: &str, version: &str, on: bool) -> Result<()> {
        let mut lock = self.lock_of_version(key, version).await?;
        if lock.legal_hold != on {
            lock.legal_hold = on;
            self.write_lock(key, lock).await?;
        }
        Ok(())
    }

    async fn extend_retention(
        &self,
        key: &str,
        version: &str,
        until: UnixTime,
    ) -> Result<UnixTime> {
        let mut lock = self.lock_of_version(key, version).await?;
        match lock.retain_until {
            // Never shortened, as S3 COMPLIANCE.
            Some(t) if t >= until.0 => Ok(UnixTime(t)),
            _ => {
                lock.retain_until = Some(until.0);
                self.write_lock(key, lock).await?;
                Ok(until)
            }
        }
    }

    async fn delete_version(&self, key: &str, version_id: &str) -> Result<()> {
        if version_id != VERSION {
            return Ok(());
        }
        // The same refusals as S3 under COMPLIANCE: a legal hold, or a retain-until to come.
        let lock = self.lock(key).await?;
        let now = crate::unix_now().0;
        if lock.legal_hold || lock.retain_until.is_some_and(|t| t > now) {
            return Err(Error::ObjectLocked(format!(
                "{key} version {version_id} is protected by its lock in this directory store"
            )));
        }
        // The object first: a crash in between leaves a sidecar without an object, which
        // lists as nothing and is removed by the next attempt.
        for path in [
            self.path("objects", key)?,
            self.path("sidecars", &format!("{key}.json"))?,
            self.path("locks", &format!("{key}.json"))?,
        ] {
            self.remove(path).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lock_is_only_extended_and_the_legal_hold_is_one_flag() {
        let dir = std::env::temp_dir().join(format!("mailvault-fs-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = FsStore::new(&dir);
        store
            .put_record(RecordPut {
                key: "records/a",
                body: Body::Memory(b"x".to_vec()),
                sha256: Hash::of(b"x"),
                retain_until: UnixTime(1000),
                sidecar: &super::super::ObjectMetadata::new(),
                companion: None,
            })
            .await
            .unwrap();
        assert_eq!(
            store
                .extend_retention("records/a", "0", UnixTime(2000))
                .await
                .unwrap(),
            UnixTime(2000)
        );
        // Shorter: refused by keeping the later lock.
        assert_eq!(
            store
                .extend_retention("records/a", "0", UnixTime(1500))
                .await
                .unwrap(),
            UnixTime(2000)
        );
        store.set_legal_hold("records/a", "0", true).await.unwrap();
        let listed = store.list_versions("records/").await.unwrap();
        assert_eq!(listed[0].1.retain_until, Some(UnixTime(2000)));
        assert!(listed[0].1.legal_hold);
        store.set_legal_hold("records/a", "0", false).await.unwrap();
        assert!(
            !store.list_versions("records/").await.unwrap()[0]
                .1
                .legal_hold
        );
        assert!(store.set_legal_hold("records/b", "0", true).await.is_err());
        assert!(
            store
                .extend_retention("records/a", "1", UnixTime(3000))
                .await
                .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_object_larger_than_its_reader_accepts_is_not_read() {
        let root = tempfile::tempdir().unwrap();
        let store = FsStore::new(root.path());
        store
            .put_mutable("state/x", vec![7; 100], &ObjectMetadata::new())
            .await
            .unwrap();
        assert_eq!(
            store
                .get("state/x", None, 100)
                .await
                .unwrap()
                .unwrap()
                .bytes,
            vec![7; 100]
        );
        let e = store.get("state/x", None, 99).await.unwrap_err();
        assert!(
            matches!(&e, Error::TooLarge { key, max: 99 } if key == "state/x"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("more than mailvault ever writes there"),
            "{e}"
        );
        assert!(store.get("state/none", None, 1).await.unwrap().is_none());
        // A log object already there and larger than the one being written is a conflict,
        // found without reading it whole.
        store
            .put_immutable("log/a", vec![1; 1000], &ObjectMetadata::new(), UnixTime(0))
            .await
            .unwrap();
        let e = store
            .put_immutable("log/a", vec![1; 10], &ObjectMetadata::new(), UnixTime(0))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        store
            .put_immutable("log/a", vec![1; 1000], &ObjectMetadata::new(), UnixTime(0))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_symlink_in_the_store_is_refused_not_followed() {
        use std::os::unix::fs::PermissionsExt as _;
        let root =
            std::env::temp_dir().join(format!("mailvault-fs-symlink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = FsStore::new(&root);
        store
            .put_mutable("records/a", b"x".to_vec(), &ObjectMetadata::new())
            .await
            .unwrap();
        assert_eq!(store.list_keys("records/").await.unwrap(), ["records/a"]);
        let mode = std::fs::metadata(root.join("objects/records/a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "an object is readable by others");
        // A loop: objects/records/loop -> objects.
        std::os::unix::fs::symlink(root.join("objects"), root.join("objects/records/loop"))
            .unwrap();
        let e = store.list_keys("").await.unwrap_err().to_string();
        assert!(e.contains("records/loop is a symbolic link"), "{e}");
        let e = store.list_keys("records/").await.unwrap_err().to_string();
        assert!(e.contains("records/loop is a symbolic link"), "{e}");
        let e = store
            .versions_of("records/loop")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("records/loop is a symbolic link"), "{e}");
        // A listing reads only the directory its prefix lies in; one key is looked up alone.
        assert!(store.list_keys("log/").await.unwrap().is_empty());
        assert_eq!(
            store.versions_of("records/a").await.unwrap(),
            [("records/a".to_owned(), VERSION.to_owned(), false)]
        );
        assert!(store.versions_of("records/b").await.unwrap().is_empty());
        assert!(store.versions_of("records").await.unwrap().is_empty());
        // A directory replaced by a link is refused on the way down, not followed.
        std::fs::remove_file(root.join("objects/records/loop")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        std::fs::write(root.join("elsewhere/b"), b"y").unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("objects/index")).unwrap();
        for e in [
            store.list_keys("index/").await.unwrap_err(),
            store.versions_of("index/b").await.unwrap_err(),
            // A write through it too: nothing lands outside the store.
            store
                .put_mutable("index/c", b"z".to_vec(), &ObjectMetadata::new())
                .await
                .unwrap_err(),
        ] {
            assert!(e.to_string().contains("index is a symbolic link"), "{e}");
        }
        assert!(!root.join("elsewhere/c").exists());
        // Nor is a file elsewhere deleted through a linked directory (an index's empty
        // metadata removes its sidecar file).
        std::fs::create_dir_all(root.join("sidecars")).unwrap();
        std::fs::write(root.join("elsewhere/d.json"), b"keep").unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("sidecars/index")).unwrap();
        std::fs::remove_file(root.join("objects/index")).unwrap();
        let e = store
            .put_mutable("index/d", b"z".to_vec(), &ObjectMetadata::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("index is a symbolic link"), "{e}");
        assert!(root.join("elsewhere/d.json").exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn a_record_lands_with_its_files_and_a_link_on_its_way_or_at_tmp_lands_nothing() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let store = FsStore::new(&root);
        let mut sidecar = ObjectMetadata::new();
        sidecar.insert("mailvault-test".into(), "1".into());
        let record = |key: &'static str| RecordPut {
            key,
            body: Body::Memory(b"message".to_vec()),
            sha256: Hash::of(b"message"),
            retain_until: UnixTime(1000),
            sidecar: &sidecar,
            companion: Some((format!("index/{key}"), b"headers".to_vec())),
        };
        // Into an empty directory: every directory on the way is created when first needed.
        store.put_record(record("records/a")).await.unwrap();
        for file in [
            "objects/records/a",
            "sidecars/records/a.json",
            "locks/records/a.json",
            "objects/index/records/a",
        ] {
            let mode = std::fs::metadata(root.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        assert_eq!(
            store.lock("records/a").await.unwrap().retain_until,
            Some(1000)
        );
        assert_eq!(store.sidecar("records/a").await.unwrap(), sidecar);
        // A record's directory that is a link: refused before anything lands through it.
        std::fs::remove_dir_all(root.join("locks/records")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("locks/records")).unwrap();
        let e = store.put_record(record("records/b")).await.unwrap_err();
        assert!(e.to_string().contains("records is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // A missing directory below a link is not created through it.
        std::fs::remove_file(root.join("locks/records")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("locks/nested")).unwrap();
        let e = store
            .put_mutable("nested/deeper/c", b"x".to_vec(), &ObjectMetadata::new())
            .await;
        assert!(e.is_ok(), "objects/nested is not a link: {e:?}");
        let e = store
            .write_lock("nested/deeper/c", FsLock::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("nested is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // `tmp/` replaced by a link: no temporary file (a message) is written through it.
        std::fs::remove_dir_all(root.join(TEMPORARY_DIR)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join(TEMPORARY_DIR)).unwrap();
        let e = store.put_record(record("records/d")).await.unwrap_err();
        assert!(e.to_string().contains("tmp is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    /// What a temporary file is checked against before a message is written to it: a `tmp/`
    /// swapped for a link between its check and the file's creation (put back or not) shows.
    #[test]
    fn a_temporary_file_is_known_to_be_in_tmp_only_when_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let tmp = root.join(TEMPORARY_DIR);
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let name = ".tmpabc.mailvault-tmp";
        let file = std::fs::File::create(tmp.join(name)).unwrap();
        assert!(is_at(&root, &file, &tmp.join(name)).unwrap());
        // Created through a link at `tmp/`, which was then put back: not there.
        let outside = std::fs::File::create(elsewhere.join(name)).unwrap();
        assert!(!is_at(&root, &outside, &tmp.join(name)).unwrap());
        // ... or still a link: refused.
        std::fs::rename(&tmp, dir.path().join("real-tmp")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &tmp).unwrap();
        let e = is_at(&root, &outside, &tmp.join(name)).unwrap_err();
        assert!(e.to_string().contains("tmp is a symbolic link"), "{e}");
        // Gone: not there either.
        std::fs::remove_file(&tmp).unwrap();
        assert!(!is_at(&root, &file, &tmp.join(name)).unwrap());
    }

    #[tokio::test]
    async fn writes_go_through_fresh_temporary_files_and_a_crashed_writes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = FsStore::new(&root);
        store.preflight().await.unwrap();
        // Someone with write access to the store leaves a link under the name the temporary
        // file of `records/a` had in earlier versions: it is neither followed nor replaced.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::fs::create_dir_all(root.join("objects/records")).unwrap();
        let old_tmp = root.join("objects/records/a.mailvault-tmp");
        std::os::unix::fs::symlink(&victim, &old_tmp).unwrap();
        store
            .put_mutable("records/a", b"x".to_vec(), &ObjectMetadata::new())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(root.join("objects/records/a")).unwrap(), b"x");
        // A listing reports the link (the store never holds one) rather than skip it.
        let e = store.list_keys("records/").await.unwrap_err();
        assert!(
            e.to_string().contains("a.mailvault-tmp is a symbolic link"),
            "{e}"
        );
        std::fs::remove_file(&old_tmp).unwrap();
        assert_eq!(store.list_keys("records/").await.unwrap(), ["records/a"]);
        // The temporary directory holds nothing once the write is done.
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        // What a crash left there an hour ago is removed by the next writer; a write in
        // progress (a fresh file) is left alone.
        let stale = root.join("tmp/.tmpcrash.mailvault-tmp");
        std::fs::write(&stale, b"a message").unwrap();
        let fresh = root.join("tmp/.tmpbusy.mailvault-tmp");
        std::fs::write(&fresh, b"another").unwrap();
        // Only names mailvault gives its temporary files are swept, however old.
        let foreign = root.join("tmp/notes.txt");
        std::fs::write(&foreign, b"not ours").unwrap();
        for old in [&stale, &foreign] {
            std::fs::File::options()
                .write(true)
                .open(old)
                .unwrap()
                .set_modified(std::time::SystemTime::now() - 2 * STALE_TEMPORARY)
                .unwrap();
        }
        store.preflight().await.unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists());
        assert!(foreign.exists());
        std::fs::remove_file(&foreign).unwrap();
        // The temporary directory itself replaced by a link: refused, not swept through.
        std::fs::remove_dir_all(root.join("tmp")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("tmp")).unwrap();
        let e = store.preflight().await.unwrap_err();
        assert!(e.to_string().contains("tmp is a symbolic link"), "{e}");
        let e = store
            .put_mutable("records/b", b"y".to_vec(), &ObjectMetadata::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("tmp is a symbolic link"), "{e}");
        assert!(victim.exists());
    }
}
