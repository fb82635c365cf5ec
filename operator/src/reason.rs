//! One vocabulary of reasons, shared by conditions, Events and metric labels, so that
//! `kubectl describe`, `kubectl get events` and `mailvault_errors_total{reason=…}` say the same
//! word for the same cause.
//!
//! `Error::reason() | reconciler outcome -> Reason -> condition.reason, Event.reason, metric label`

use std::fmt;

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Why a condition, Event or metric says what it says.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            /// Every reason, for tests and documentation.
            pub const ALL: &[Self] = &[$(Self::$name,)*];

            /// The `PascalCase` word written into conditions, Events and metric labels.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$name => stringify!($name),)*
                }
            }

            /// The reason a word stands for (a status written by an earlier version may hold
            /// one this version no longer knows: `None`).
            pub fn parse(word: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|r| r.as_str() == word)
            }
        }
    };
}

reasons! {
    // Errors (Error::reason).
    /// A local file could not be read or written.
    IoError,
    /// The checkpoint signing key is malformed.
    InvalidSigningKey,
    /// The operating system gave no randomness.
    NoRandomness,
    /// The request cannot be carried out as asked.
    InvalidConfiguration,
    /// A server refused the credentials.
    AuthenticationFailed,
    /// The mail server (or a local mail source) failed.
    MailServerError,
    /// The store refused or failed an operation.
    StoreError,
    /// This machine's clock disagrees with the S3 server's.
    ClockSkew,
    /// What is in the store contradicts what mailvault expects.
    StoreConflict,
    /// The record log refused an entry.
    LogError,
    /// A checkpoint could not be signed or read.
    CheckpointError,
    /// A Merkle proof could not be built.
    ProofError,
    /// The Kubernetes API refused or failed a request.
    KubernetesApiError,
    /// Leader election failed or stopped.
    LeaderElectionFailed,
    /// Something could not be encoded or decoded (JSON, YAML).
    EncodingError,
    /// A task of mailvault's own failed (a panic or a cancellation).
    InternalError,
    /// A Secret is missing, lacks the key, or holds something unusable.
    SecretNotUsable,
    /// A resource's spec is invalid.
    InvalidSpec,
    /// A run reached its maximum duration and stopped; what it stored is logged, and the next
    /// run goes on from there.
    RunDurationExceeded,
    // Outcomes.
    /// The retention policy an archive names does not exist.
    RetentionPolicyNotFound,
    /// The retention policy an archive names is invalid.
    RetentionPolicyInvalid,
    /// A legal hold names an archive that does not exist.
    ArchiveNotFound,
    /// `spec.suspend` is true.
    Suspended,
    /// The archive runs on its schedule.
    Scheduled,
    /// No run has finished yet.
    NotYetSynced,
    /// A run started.
    SyncStarted,
    /// The last run succeeded.
    Synced,
    /// A run succeeded (the `Synced` and `Degraded` conditions).
    RunSucceeded,
    /// A run failed for a reason not recorded.
    RunFailed,
    /// A run's Job ended without recording an outcome (`runner: Job`).
    JobFailed,
    /// A policy or hold is valid.
    Valid,
    /// A legal hold is placed.
    Placed,
    /// A legal hold is released.
    Released,
    /// A `LegalHold` that is not released was deleted: it stays in force (and the resource
    /// stays, by a finalizer) until `released: true`.
    ReleaseRequired,
    /// A folder include glob matched no folder of the mailbox.
    FolderGlobMatchedNothing,
    /// The writer found objects in the archive that look like its own but do not carry its
    /// MAC (a planted record, an edited run marker or cursor, a delete marker over a
    /// checkpoint): not adopted, not trusted, not signed.
    UnauthenticatedObject,
    /// A destruction run destroyed records (and stored their certificate).
    RecordsDestroyed,
    /// A destruction run found nothing due.
    NothingDue,
    /// A destruction run in dry-run mode reported what it would destroy.
    DestructionDryRun,
    /// Records wait for a records officer's review (a `DispositionReview`).
    RecordsAwaitReview,
    /// A destruction run failed.
    DestructionFailed,
    /// A `DispositionReview`'s decision was carried out (Approved: its records are destroyed
    /// as their locks end; Extended: their retention is extended).
    DecisionCarriedOut,
    /// A `DispositionReview`'s batch changed since it was created: its decision was not used.
    BatchChanged,
    /// A `DispositionReview`'s decision cannot be carried out as written (an `extendUntil` not
    /// after the batch's latest retain-until).
    DecisionRefused,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Reason {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
            assert!(seen.insert(r.as_str()), "{r} twice");
        }
        assert_eq!(Reason::parse("NoSuchReason"), None);
        assert_eq!(Reason::SecretNotUsable.to_string(), "SecretNotUsable");
    }
}
