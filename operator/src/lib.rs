//! mailvault: the e-mail records archive, as a library behind the `mailvault` binary.
//!
//! `source -> record -> store -> log -> checkpoint`; the pure record log lives in
//! [`mailvault_core`]. This crate holds the commands built on it.

#![forbid(unsafe_code)]

pub mod keys;

pub use mailvault_core as core;

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
}

/// Result with mailvault's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
