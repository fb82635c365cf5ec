//! Everything that can go wrong in a mailvault command or reconcile, with its cause kept as a
//! `source` where one exists and a [`Retry`] that says whether trying again can help.
//!
//! `adapter error (S3 SDK, IMAP, kube, serde) -> Error { source, retry } -> reason() + is_transient() -> requeue, condition, Event, metric`

use crate::reason::Reason;

/// A boxed error kept as a cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Whether trying the same thing again, unchanged, can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A network failure, a time-out, a 5xx or a throttling answer: retry with backoff.
    Transient,
    /// Something a person must change (credentials, a bucket, a spec, damage in the store).
    Permanent,
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
    Random(#[source] getrandom::Error),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Usage(String),
    /// A server refused the credentials.
    #[error("{0}")]
    Auth(String),
    /// The IMAP server failed or could not be reached.
    #[error("source: {message}")]
    Imap {
        /// What failed, e.g. `IMAP UID FETCH in INBOX: the server closed the connection`.
        message: String,
        /// Whether a retry can help.
        retry: Retry,
        /// The IMAP client's error, when there is one.
        #[source]
        source: Option<async_imap::error::Error>,
    },
    /// A local message source (mbox, Maildir, .eml) could not be read.
    #[error("source: {0}")]
    Source(String),
    /// The store refused or failed an operation.
    #[error("store: {message}")]
    Store {
        /// What failed, e.g. `S3 PutObject records/…: SlowDown: …`.
        message: String,
        /// Whether a retry can help.
        retry: Retry,
        /// The S3 SDK's (or the file system's) error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// This machine's clock disagrees with the S3 server's by more than is safe: retention
    /// dates and log times come from it.
    #[error("{0}")]
    ClockSkew(String),
    /// What is in the store contradicts what mailvault expects (damage, tampering, a foreign
    /// object); nothing was written on top of it.
    #[error("{0}")]
    Conflict(String),
    /// An object in the store is larger than any object mailvault writes under its key: not
    /// read, so that an object planted in the bucket cannot take the process's memory.
    #[error(
        "{key} is larger than {max} bytes, more than mailvault ever writes there: not read (put there by someone other than mailvault, or damaged; run `mailvault verify`)"
    )]
    TooLarge {
        /// The object's key.
        key: String,
        /// The most the reader accepts for it.
        max: u64,
    },
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
    /// Leader election failed or stopped.
    #[error("leader election: {message}")]
    LeaderElection {
        /// What happened.
        message: String,
        /// The lease manager's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// Something could not be encoded or decoded.
    #[error("{what}: {source}")]
    Encoding {
        /// What was being encoded or decoded.
        what: String,
        /// The encoder's error.
        source: BoxError,
    },
    /// A task of mailvault's own (compression, a store, a spool write) panicked or was
    /// cancelled.
    #[error("{what}: {source}")]
    Task {
        /// Which task.
        what: String,
        /// How it ended.
        source: tokio::task::JoinError,
    },
    /// A Secret a resource names is missing, lacks the key, or holds something unusable.
    #[error("{0}")]
    Secret(String),
    /// A resource's spec is invalid in a way the schema could not say.
    #[error("{0}")]
    Spec(String),
    /// A run's Kubernetes Job ended without recording an outcome (its pods were killed, evicted
    /// or could not start, as often as the Job allows).
    #[error("{0}")]
    Job(String),
    /// A run reached its maximum duration (`--max-run-duration`, `spec.maxRunDurationSeconds`)
    /// and stopped: what it stored is logged, the cursor stayed where the log is.
    #[error("{0}")]
    RunDurationExceeded(String),
    /// The store refused to delete an object version because Object Lock protects it
    /// (retention not ended, or a legal hold): the destruction run leaves it for a later run.
    #[error("store: {0}")]
    ObjectLocked(String),
}

impl Error {
    /// Whether the store will not give this one object, for good: larger than any object of its
    /// kind, or refused (an archived storage class, a customer-provided key, an access policy
    /// on it). A reader of the log skips such an object (named) rather than let one planted
    /// object stop it.
    pub(crate) fn object_refused_for_good(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. }
                | Self::Store {
                    retry: Retry::Permanent,
                    ..
                }
        )
    }

    /// A store failure a retry cannot mend, with no underlying error to keep.
    pub fn store(message: impl Into<String>) -> Self {
        Self::Store {
            message: message.into(),
            retry: Retry::Permanent,
            source: None,
        }
    }

    /// An IMAP failure with no client error to keep (a time-out, an unexpected answer).
    pub fn imap(message: impl Into<String>, retry: Retry) -> Self {
        Self::Imap {
            message: message.into(),
            retry,
            source: None,
        }
    }

    /// An IMAP connection failed at the network or TLS level. A refused or reset connection
    /// may pass; a certificate the CA does not vouch for (invalid data) is given again.
    pub fn imap_io(message: impl Into<String>, source: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let retry = match source.kind() {
            K::InvalidData | K::InvalidInput | K::PermissionDenied | K::Unsupported => {
                Retry::Permanent
            }
            _ => Retry::Transient,
        };
        Self::Imap {
            message: message.into(),
            retry,
            source: Some(async_imap::error::Error::Io(source)),
        }
    }

    /// A failed task of mailvault's own.
    pub fn task(what: impl Into<String>, source: tokio::task::JoinError) -> Self {
        Self::Task {
            what: what.into(),
            source,
        }
    }

    /// An encoding or decoding failure.
    pub fn encoding(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Encoding {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// The cause, in the one vocabulary of conditions, Events and metric labels.
    pub fn reason(&self) -> Reason {
        match self {
            Self::Io { .. } => Reason::IoError,
            Self::Key(_) => Reason::InvalidSigningKey,
            Self::Random(_) => Reason::NoRandomness,
            Self::Usage(_) => Reason::InvalidConfiguration,
            Self::Auth(_) => Reason::AuthenticationFailed,
            Self::Imap { .. } | Self::Source(_) => Reason::MailServerError,
            Self::Store { .. } | Self::ObjectLocked(_) => Reason::StoreError,
            Self::ClockSkew(_) => Reason::ClockSkew,
            Self::Conflict(_) | Self::TooLarge { .. } => Reason::StoreConflict,
            Self::Log(_) => Reason::LogError,
            Self::Checkpoint(_) => Reason::CheckpointError,
            Self::Proof(_) => Reason::ProofError,
            Self::Kube(_) => Reason::KubernetesApiError,
            Self::LeaderElection { .. } => Reason::LeaderElectionFailed,
            Self::Encoding { .. } => Reason::EncodingError,
            Self::Task { .. } => Reason::InternalError,
            Self::Secret(_) => Reason::SecretNotUsable,
            Self::Spec(_) => Reason::InvalidSpec,
            Self::Job(_) => Reason::JobFailed,
            Self::RunDurationExceeded(_) => Reason::RunDurationExceeded,
        }
    }

    /// Whether trying again, unchanged, can help: network failures, time-outs, 5xx and
    /// throttling answers, a conflict on a write to the apiserver. What a person must fix
    /// (credentials, a spec, a Secret, a bucket without Object Lock, damage) is permanent.
    pub fn retry(&self) -> Retry {
        match self {
            Self::Imap { retry, .. } | Self::Store { retry, .. } => *retry,
            Self::Kube(e) => kube_retry(e),
            Self::LeaderElection { .. }
            | Self::Task { .. }
            | Self::Random(_)
            | Self::Job(_)
            | Self::RunDurationExceeded(_) => Retry::Transient,
            Self::Io { .. }
            | Self::Key(_)
            | Self::Usage(_)
            | Self::Auth(_)
            | Self::Source(_)
            | Self::ClockSkew(_)
            | Self::Conflict(_)
            | Self::TooLarge { .. }
            | Self::Log(_)
            | Self::Checkpoint(_)
            | Self::Proof(_)
            | Self::Encoding { .. }
            | Self::Secret(_)
            | Self::Spec(_)
            | Self::ObjectLocked(_) => Retry::Permanent,
        }
    }

    /// `retry() == Retry::Transient`.
    pub fn is_transient(&self) -> bool {
        self.retry() == Retry::Transient
    }
}

fn kube_retry(e: &kube::Error) -> Retry {
    match e {
        // 409: a write raced another (retry re-reads); 408/429: time-out, throttling.
        kube::Error::Api(s) if s.code >= 500 || matches!(s.code, 408 | 409 | 429) => {
            Retry::Transient
        }
        kube::Error::Api(_) => Retry::Permanent,
        _ => Retry::Transient,
    }
}

/// Result with mailvault's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        Error::Kube(kube::Error::Api(Box::new(
            kube::core::Status::failure("x", "y").with_code(code),
        )))
    }

    #[test]
    fn what_a_retry_can_mend_is_transient() {
        assert!(api(503).is_transient());
        assert!(api(429).is_transient());
        assert!(api(409).is_transient());
        assert!(!api(403).is_transient());
        assert!(Error::imap("timed out", Retry::Transient).is_transient());
        assert!(!Error::store("no Object Lock").is_transient());
        assert!(!Error::Secret("missing".into()).is_transient());
        assert!(!Error::Auth("refused".into()).is_transient());
    }

    #[test]
    fn causes_are_kept() {
        use std::error::Error as _;
        let e = Error::encoding("cursor", serde_json::from_str::<u8>("x").unwrap_err());
        assert!(e.source().is_some());
        assert_eq!(e.reason(), Reason::EncodingError);
        let e = Error::LeaderElection {
            message: "stopped".into(),
            source: None,
        };
        assert_eq!(e.reason(), Reason::LeaderElectionFailed);
        assert_ne!(e.reason(), Reason::InvalidConfiguration);
    }
}
