//! mailvault: the e-mail records archive, as a library behind the `mailvault` binary.
//!
//! `source -> record -> store -> log -> checkpoint`; the pure record log lives in
//! [`mailvault_core`]. Here: message sources (`source`), stores (`store`), the pipeline that
//! runs a source into a store (`pipeline`), reading an archive back (`archive`), and keys.

#![forbid(unsafe_code)]

pub mod archive;
pub mod controller;
pub mod crd;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod operator;
pub mod pipeline;
pub mod source;
pub mod spool;
pub mod store;
pub mod store_url;
pub mod sync;

pub use mailvault_core as core;

/// The current time, whole seconds since the Unix epoch.
pub fn unix_now() -> mailvault_core::UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    mailvault_core::UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// This process's peak resident memory (`VmHWM`), where the system reports it (Linux).
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

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
    /// This machine's clock disagrees with the S3 server's by more than is safe: retention
    /// dates and log times come from it.
    #[error("{0}")]
    ClockSkew(String),
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
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A Secret a resource names is missing, lacks the key, or holds something unusable.
    #[error("{0}")]
    Secret(String),
    /// A resource's spec is invalid in a way the schema could not say.
    #[error("{0}")]
    Spec(String),
}

impl Error {
    /// A short `PascalCase` cause, for condition reasons, Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io { .. } => "IoError",
            Self::Key(_) => "InvalidSigningKey",
            Self::Random(_) => "NoRandomness",
            Self::Usage(_) => "InvalidConfiguration",
            Self::Auth(_) => "AuthenticationFailed",
            Self::Source(_) => "MailServerError",
            Self::Store(_) => "StoreError",
            Self::ClockSkew(_) => "ClockSkew",
            Self::Conflict(_) => "StoreConflict",
            Self::Log(_) => "LogError",
            Self::Checkpoint(_) => "CheckpointError",
            Self::Proof(_) => "ProofError",
            Self::Kube(_) => "KubernetesApiError",
            Self::Secret(_) => "SecretNotUsable",
            Self::Spec(_) => "InvalidSpec",
        }
    }
}

/// Result with mailvault's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
