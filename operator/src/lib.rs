//! mailvault: the e-mail records archive, as a library behind the `mailvault` binary.
//!
//! `source -> record -> store -> log -> checkpoint`; the pure record log lives in
//! [`mailvault_core`]. Here: message sources (`source`), stores (`store`), the pipeline that
//! runs a source into a store (`pipeline`), reading an archive back (`archive`), and keys.

#![forbid(unsafe_code)]

pub mod archive;
pub mod crd;
pub mod keys;
pub mod pipeline;
pub mod source;
pub mod store;
pub mod store_url;
pub mod sync;

pub use mailvault_core as core;

/// Installs the process-wide rustls crypto provider (aws-lc-rs). Call once at start-up:
/// several rustls users share the process and rustls refuses to guess.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Everything that can go wrong in a mailvault command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key is malformed.
    #[error(transparent)]
    Key(#[from] mailvault_core::note::NoteError),
    /// The operating system's random source failed.
    #[error("no randomness available from the operating system: {0}")]
    Random(String),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Usage(String),
    /// A server refused the credentials.
    #[error("{0}")]
    Auth(String),
    /// A message source could not be read.
    #[error("source: {0}")]
    Source(String),
    /// The store refused or failed an operation.
    #[error("store: {0}")]
    Store(String),
    /// What is in the store contradicts what mailvault expects (damage, tampering, a foreign
    /// object); nothing was written on top of it.
    #[error("{0}")]
    Conflict(String),
    /// The record log refused an entry.
    #[error("log: {0}")]
    Log(#[from] mailvault_core::log::LogError),
    /// A checkpoint could not be signed or read.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] mailvault_core::checkpoint::CheckpointError),
    /// A Merkle proof could not be built.
    #[error("proof: {0}")]
    Proof(#[from] mailvault_core::merkle::ProofError),
}

/// Result with mailvault's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
