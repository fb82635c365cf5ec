//! Message bytes in memory or, above a size limit, in a file: how the pipeline keeps memory
//! bounded whatever a mailbox holds.
//!
//! `source -> BodyWriter (hashes; spills to the spool dir past the limit) -> Body -> pipeline
//!  -> zstd (streamed file to file for a File body) -> Body -> store PUT (from the file)`
//!
//! A spooled file is deleted when its [`Body`] is dropped (a finished PUT, an error, a
//! cancelled run). Only a SIGKILL can leave one behind, in the spool directory
//! (`mailvault-*.spool`); nothing reads it again.

use crate::{Error, Result};
use mailvault_core::Hash;
use sha2::Digest as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Messages up to this size are held in memory whole; larger ones are fetched and compressed
/// in pieces of this size through files. 4 MiB keeps every ordinary message (and most with
/// attachments) on the fast path while a 50 MB message costs a few MiB, not 50.
pub const MEMORY_LIMIT: usize = 4 * 1024 * 1024;

/// Spool space a run may use, unless told otherwise (`--max-spool-size`).
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Size of the blocks a spooled file is read and compressed in.
const FILE_BLOCK: usize = 256 * 1024;

/// Where and above which size message bytes go to disk.
#[derive(Debug, Clone)]
pub struct Spool {
    /// Shared: a spool is cloned into every record's store task.
    dir: std::sync::Arc<Path>,
    memory_limit: usize,
    max_bytes: u64,
}

impl Default for Spool {
    fn default() -> Self {
        Self::new(std::env::temp_dir())
    }
}

impl Spool {
    /// A spool in `dir` with the standard [`MEMORY_LIMIT`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into().into(),
            memory_limit: MEMORY_LIMIT,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// The spool in `$MAILVAULT_SPOOL_DIR`, else the system's temporary directory.
    pub fn from_env() -> Self {
        Self::new(
            std::env::var_os("MAILVAULT_SPOOL_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
        )
    }

    /// The same spool with another memory limit (tests use a small one to cross it often).
    #[must_use]
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes.max(1);
        self
    }

    /// The same spool with another cap on the space a run uses in it.
    #[must_use]
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Spool space a run keeps itself within: half for the records being compressed and
    /// stored (past it the next one waits; one is always let through alone, and takes about
    /// twice its size: itself and its compressed copy), half for a large message being put
    /// together from pieces and the first pieces of others waiting while a folder's FETCH
    /// runs on (past it a first piece is dropped and fetched again afterwards). Within the cap
    /// when it is at least four times the largest message (`archive` checks).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes held in memory before a body spills to a file; also the piece size of partial
    /// IMAP fetches.
    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A writer for one message's bytes.
    pub fn writer(&self) -> BodyWriter {
        BodyWriter {
            spool: self.clone(),
            sha256: sha2::Sha256::new(),
            memory: Vec::new(),
            file: None,
            len: 0,
        }
    }

    fn new_file(&self) -> Result<(std::fs::File, tempfile::TempPath)> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io_error(e))?;
        let file = tempfile::Builder::new()
            .prefix("mailvault-")
            .suffix(".spool")
            .tempfile_in(&self.dir)
            .map_err(|e| self.io_error(e))?;
        let (file, path) = file.into_parts();
        Ok((file, path))
    }

    fn io_error(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: format!("spool directory {}", self.dir.display()),
            source,
        }
    }
}

/// A body in memory up to this size is parsed and compressed on the async thread that holds
/// it: tens of microseconds of work, less than handing it to the blocking pool costs (a
/// thread wake-up and two context switches per step, about a quarter of the CPU on short
/// mail: docs/benchmarks.md). Larger bodies, and any in a file, go to the blocking pool.
pub const INLINE_WORK_BYTES: usize = 16 * 1024;

/// Bytes of a message or of a stored record.
#[derive(Debug)]
pub enum Body {
    /// Held in memory.
    Memory(Vec<u8>),
    /// In a file (a spooled temporary, deleted on drop, or a source's own file, left alone).
    File(BodyFile),
}

/// A body in a file.
#[derive(Debug)]
pub struct BodyFile {
    path: PathBuf,
    len: u64,
    /// Set for a spooled temporary: dropping it deletes the file.
    temporary: Option<tempfile::TempPath>,
}

impl BodyFile {
    /// A source's own file of `len` bytes (a Maildir message): read in place, never deleted.
    pub fn borrowed(path: PathBuf, len: u64) -> Self {
        Self {
            path,
            len,
            temporary: None,
        }
    }

    /// Where the bytes are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether dropping this deletes the file.
    pub fn is_temporary(&self) -> bool {
        self.temporary.is_some()
    }
}

impl Body {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::File(f) => f.len,
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of a body small enough to work on in place ([`INLINE_WORK_BYTES`]).
    pub fn inline_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Memory(b) if b.len() <= INLINE_WORK_BYTES => Some(b),
            _ => None,
        }
    }

    /// Bytes that count against a run's memory budget: a file body costs only its buffers.
    pub fn memory_cost(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::File(_) => FILE_BLOCK as u64 * 2,
        }
    }

    /// Spool space the body takes while it is stored: a temporary file and its compressed
    /// copy (counted at the original's size: compression does not grow mail much). A source's
    /// own file (a Maildir message) costs only the copy.
    pub fn spool_cost(&self) -> u64 {
        match self {
            Self::Memory(_) => 0,
            Self::File(f) if f.is_temporary() => f.len * 2,
            Self::File(f) => f.len,
        }
    }

    /// Writes the body to `out`, a file body in blocks.
    pub fn copy_to(&self, out: &mut dyn Write) -> std::io::Result<u64> {
        match self {
            Self::Memory(b) => out.write_all(b).map(|()| b.len() as u64),
            Self::File(f) => std::io::copy(&mut std::fs::File::open(&f.path)?, out),
        }
    }

    /// Reads the whole body into memory (for tests and small bodies only).
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        match self {
            Self::Memory(b) => Ok(b.clone()),
            Self::File(f) => std::fs::read(&f.path).map_err(|source| Error::Io {
                path: f.path.display().to_string(),
                source,
            }),
        }
    }
}

/// Collects one message's bytes, hashing them as they come, in memory up to the spool's limit
/// and in a spool file past it.
pub struct BodyWriter {
    spool: Spool,
    sha256: sha2::Sha256,
    memory: Vec<u8>,
    file: Option<(std::io::BufWriter<std::fs::File>, tempfile::TempPath)>,
    len: u64,
}

impl BodyWriter {
    /// Appends bytes (blocking file I/O once spilled: call from a blocking context when large).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.sha256.update(bytes);
        self.len += bytes.len() as u64;
        if self.file.is_none() && self.memory.len() + bytes.len() <= self.spool.memory_limit {
            self.memory.extend_from_slice(bytes);
            return Ok(());
        }
        self.spill()?;
        if let Some((file, _)) = self.file.as_mut() {
            file.write_all(bytes).map_err(|e| self.spool.io_error(e))?;
        }
        Ok(())
    }

    /// Moves what is held in memory to a spool file now (a partial message waiting for the
    /// rest of its bytes must not hold memory meanwhile).
    pub fn spill(&mut self) -> Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let (file, path) = self.spool.new_file()?;
        let mut file = std::io::BufWriter::with_capacity(FILE_BLOCK, file);
        file.write_all(&self.memory)
            .map_err(|e| self.spool.io_error(e))?;
        self.memory = Vec::new();
        self.file = Some((file, path));
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body and the SHA-256 of its bytes.
    pub fn finish(self) -> Result<(Body, Hash)> {
        let sha256 = Hash(self.sha256.finalize().into());
        match self.file {
            None => Ok((Body::Memory(self.memory), sha256)),
            Some((file, path)) => {
                file.into_inner()
                    .map_err(|e| self.spool.io_error(e.into_error()))?
                    .sync_data()
                    .ok();
                Ok((
                    Body::File(BodyFile {
                        path: path.to_path_buf(),
                        len: self.len,
                        temporary: Some(path),
                    }),
                    sha256,
                ))
            }
        }
    }
}

/// Hashes a file body in blocks: what a source does for a message it reads in place.
pub fn hash_file(path: &Path) -> Result<(u64, Hash)> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut sha256 = sha2::Sha256::new();
    let mut block = vec![0u8; FILE_BLOCK];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut block).map_err(io)?;
        if n == 0 {
            break;
        }
        sha256.update(&block[..n]);
        len += n as u64;
    }
    Ok((len, Hash(sha256.finalize().into())))
}

/// A writer that hashes what passes through it and counts it.
struct HashingWriter<W: Write> {
    inner: W,
    sha256: sha2::Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha256.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses a file body into a spool file with zstd, streaming: the original is read in
/// blocks and checked against `expected_sha256` (a file that changed since its source hashed
/// it is refused, never archived under the wrong commitment). Returns the compressed body and
/// its SHA-256.
pub fn compress_file(
    spool: &Spool,
    original: &BodyFile,
    expected_sha256: &Hash,
    level: i32,
) -> Result<(Body, Hash)> {
    let source_io = |source| Error::Io {
        path: original.path.display().to_string(),
        source,
    };
    let (file, path) = spool.new_file()?;
    let out = HashingWriter {
        inner: std::io::BufWriter::with_capacity(FILE_BLOCK, file),
        sha256: sha2::Sha256::new(),
        len: 0,
    };
    let zstd_error = |e: std::io::Error| Error::store(format!("zstd: {e}"));
    let mut encoder = zstd::stream::Encoder::new(out, level).map_err(zstd_error)?;
    // The frame header then says the original size, as bulk compression's does.
    encoder
        .set_pledged_src_size(Some(original.len))
        .map_err(zstd_error)?;
    let mut input = std::fs::File::open(&original.path).map_err(source_io)?;
    let mut sha256 = sha2::Sha256::new();
    let mut block = vec![0u8; FILE_BLOCK];
    let mut read = 0u64;
    loop {
        let n = input.read(&mut block).map_err(source_io)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > original.len {
            break;
        }
        sha256.update(&block[..n]);
        encoder.write_all(&block[..n]).map_err(zstd_error)?;
    }
    let actual = Hash(sha256.finalize().into());
    if read != original.len || actual != *expected_sha256 {
        return Err(Error::Source(format!(
            "{} changed while it was being archived ({} bytes when read first, {read} now); \
             run again to archive what it holds now",
            original.path.display(),
            original.len
        )));
    }
    let out = encoder.finish().map_err(zstd_error)?;
    let mut buffered = out.inner;
    buffered.flush().map_err(|e| spool.io_error(e))?;
    Ok((
        Body::File(BodyFile {
            path: path.to_path_buf(),
            len: out.len,
            temporary: Some(path),
        }),
        Hash(out.sha256.finalize().into()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(name: &str) -> Spool {
        let dir =
            std::env::temp_dir().join(format!("mailvault-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Spool::new(dir).with_memory_limit(10)
    }

    fn files_in(spool: &Spool) -> usize {
        std::fs::read_dir(spool.dir()).map_or(0, Iterator::count)
    }

    #[test]
    fn small_bodies_stay_in_memory_and_large_ones_spill_to_a_file_deleted_on_drop() {
        let spool = spool("spill");
        let mut small = spool.writer();
        small.write(b"0123456789").unwrap();
        let (body, sha) = small.finish().unwrap();
        assert!(matches!(body, Body::Memory(ref b) if b == b"0123456789"));
        assert_eq!(sha, Hash::of(b"0123456789"));

        let mut large = spool.writer();
        for piece in [&b"0123"[..], b"456789", b"abcdef"] {
            large.write(piece).unwrap();
        }
        let (body, sha) = large.finish().unwrap();
        assert_eq!(sha, Hash::of(b"0123456789abcdef"));
        assert_eq!(body.len(), 16);
        assert!(matches!(body, Body::File(ref f) if f.is_temporary()));
        assert_eq!(body.to_vec().unwrap(), b"0123456789abcdef");
        assert_eq!(files_in(&spool), 1);
        drop(body);
        assert_eq!(files_in(&spool), 0, "the spool file goes with its body");
    }

    #[test]
    fn an_explicit_spill_keeps_the_bytes_and_frees_the_memory() {
        let spool = spool("explicit");
        let mut w = spool.writer();
        w.write(b"abc").unwrap();
        w.spill().unwrap();
        w.write(b"def").unwrap();
        let (body, sha) = w.finish().unwrap();
        assert!(matches!(body, Body::File(_)));
        assert_eq!(body.to_vec().unwrap(), b"abcdef");
        assert_eq!(sha, Hash::of(b"abcdef"));
    }

    #[test]
    fn a_compressed_file_decompresses_to_the_original_and_is_hashed_as_stored() {
        let spool = spool("compress");
        let original: Vec<u8> = (0..3 * FILE_BLOCK + 17)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let mut w = spool.writer();
        w.write(&original).unwrap();
        let (body, sha) = w.finish().unwrap();
        let Body::File(file) = &body else {
            panic!("not spooled")
        };
        let (stored, stored_sha) = compress_file(&spool, file, &sha, 3).unwrap();
        let stored_bytes = stored.to_vec().unwrap();
        assert_eq!(stored_sha, Hash::of(&stored_bytes));
        assert_eq!(stored.len(), stored_bytes.len() as u64);
        assert_eq!(
            zstd::stream::decode_all(stored_bytes.as_slice()).unwrap(),
            original
        );
        assert_eq!(
            zstd::bulk::Decompressor::upper_bound(&stored_bytes),
            Some(original.len()),
            "the frame header carries the original size"
        );
    }

    #[test]
    fn a_file_that_changed_after_it_was_hashed_is_refused() {
        let spool = spool("changed");
        let path = spool.dir().join("message.eml");
        std::fs::create_dir_all(spool.dir()).unwrap();
        std::fs::write(&path, b"Subject: one\r\n\r\nbody\r\n").unwrap();
        let (len, sha) = hash_file(&path).unwrap();
        std::fs::write(&path, b"Subject: two\r\n\r\nbody\r\n").unwrap();
        let err = compress_file(&spool, &BodyFile::borrowed(path.clone(), len), &sha, 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("changed while it was being archived"), "{err}");
        assert!(path.exists(), "a source's own file is never deleted");
    }
}
