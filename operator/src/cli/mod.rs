//! The commands of the `mailvault` binary, one file each; `main.rs` holds only the clap
//! definitions and the dispatch. Every command calls the library: [`mailvault::run`] to
//! archive, [`mailvault::reader`] to read back, [`mailvault::operator`] to reconcile.

pub mod archive;
pub mod certificates;
pub mod destroy;
pub mod export;
pub mod hold;
pub mod ls;
pub mod operator;
pub mod plan;
pub mod prove;
pub mod run;
pub mod verify;

use clap::Args;
use mailvault::core::note::NoteVerifier;
use mailvault::reader::StoredLog;
use mailvault::store::{AnyStore, S3Options, open_store};
use mailvault::{Error, Result};
use std::path::Path;

/// Where a store is and how to reach it.
#[derive(Args, Clone)]
#[allow(clippy::struct_field_names)] // the flags are --s3-*
pub struct StoreArgs {
    /// S3 endpoint URL, for S3 servers other than AWS.
    #[arg(long, global = true)]
    s3_endpoint: Option<String>,
    /// S3 region (default: $AWS_REGION).
    #[arg(long, global = true)]
    s3_region: Option<String>,
    /// Path-style S3 addressing (most non-AWS servers need it).
    #[arg(long, global = true)]
    s3_path_style: bool,
}

impl StoreArgs {
    /// Opens the store at `location` (file:DIR or s3://bucket/prefix).
    pub fn open(&self, location: &str) -> Result<AnyStore> {
        open_store(
            location,
            &S3Options {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                path_style: self.s3_path_style,
            },
        )
    }
}

/// Reads a file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes a file, naming it in the error.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    create_private(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
}

/// Creates (or truncates) a file only its owner can read: what the CLI writes holds messages
/// and their salts (a proof bundle, an exported record). A file that already existed is made
/// owner-only too before anything is written to it.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Reads an archive's public verifier key (`name+keyid+key`).
pub fn read_public_key(path: &Path) -> Result<NoteVerifier> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(NoteVerifier::parse(&text)?)
}

/// Opens the log of the archive signed by `key` (its name is the origin), with every entry.
pub async fn open_log(store: &AnyStore, key: &NoteVerifier) -> Result<StoredLog> {
    StoredLog::load(store, key.name(), key, true).await
}
