//! The auditor's verifier: recomputes the chain and the tree from the stored bundles, checks
//! every checkpoint, and classifies every record against what the store holds.
//!
//! `bundles --stream--> chain + tree --roots--> checkpoints`, then
//! `replayed record states x store inventory -> one status per record`.
//!
//! Bundles are fed one bundle index at a time, in order, so memory grows with the number of
//! records (their replayed state), not with the size of the log's bytes.

use crate::bundle::{BUNDLE_WIDTH, decode_bundle};
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::entry::{Entry, EntryBody, LockMode, RecordId, RetainUntil};
use crate::hash::Hash;
use crate::layout::{
    CHECKPOINTS_PREFIX, LOG_PREFIX, dictionary_key, parse_bundle_key, parse_checkpoint_key,
    parse_dictionary_key,
};
use crate::lifecycle::certificate::{
    CERTIFICATES_PREFIX, Certificate, CertificateError, CertifiedAuthorization,
    parse_certificate_key,
};
use crate::lifecycle::table::{Anomaly, DictionaryState, RecordState, RecordTable};
use crate::merkle::{CompactRange, empty_root, leaf_hash};
use crate::note::{NoteError, NoteVerifier};
use crate::record::{SALT_LEN, commitment_from_digest, record_id};
use crate::time::UnixTime;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Most faults of one kind listed individually; the rest are counted.
const MAX_FAULTS_PER_KIND: usize = 50;
/// How far `logged-at` may go back from an earlier entry, or lie ahead of the audit time,
/// before it is a fault: the writer refuses to run on a clock more than 5 minutes off its S3
/// server's, and the auditor's clock may be off too.
pub const LOGGED_AT_TOLERANCE_SECS: i64 = 600;

/// What is wrong with the log itself (as opposed to a record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogFaultKind {
    /// A bundle object is not a valid bundle, or has the wrong number of entries.
    MalformedBundle,
    /// A bundle between two others, or the full bundle behind a later one, is missing.
    MissingBundle,
    /// A partial bundle is not a prefix of the wider bundle for the same index: history was
    /// rewritten.
    RewrittenBundle,
    /// An object under `log/` or `checkpoints/` that the log layout does not name.
    UnknownLogObject,
    /// An entry's bytes are not a canonical entry.
    MalformedEntry,
    /// An entry is not at the position it names: entries were removed, inserted or reordered.
    EntryOutOfPlace,
    /// An entry's `prev` does not name the entry before it.
    BrokenChain,
    /// A checkpoint object is not a signed checkpoint.
    MalformedCheckpoint,
    /// A checkpoint carries no signature by the trusted key.
    UnsignedCheckpoint,
    /// A signature claims the trusted key but does not verify.
    BadSignature,
    /// A signed checkpoint's root is not the root of the log at its size: the log and the
    /// signed history have forked.
    ForkedCheckpoint,
    /// A signed checkpoint covers more entries than the log holds: entries were removed.
    CheckpointBeyondLog,
    /// The auditor's trusted checkpoint is not consistent with this log.
    TrustedCheckpointInconsistent,
    /// The log has entries but no valid signed checkpoint.
    NoCheckpoint,
    /// Entries after the newest signed checkpoint. A crash between writing bundles and signing
    /// leaves these, but so does anyone with write access to the bucket who appends a forged
    /// tail with a valid chain: nothing vouches for them, so they fail verification (the next
    /// run of the writer signs its own tail, or refuses a tail it did not write).
    UncheckpointedEntries,
    /// A `retention-extended` entry shortens a record's retention (an earlier date, or a dated
    /// retention after `permanent`). Retention may only be extended; the shorter value is
    /// ignored when judging the record.
    RetentionShortened,
    /// An entry's `logged-at` is earlier than an entry before it by more than the tolerance.
    LoggedAtBackwards,
    /// An entry's `logged-at` is after the time of the audit by more than the tolerance.
    LoggedAtInFuture,
    /// A delete marker is the current version of a log object: plain reads and listings no
    /// longer see it (the locked version is still there and was read).
    HiddenLogObject,
    /// A log object (bundle, checkpoint, certificate) has more than one data version: the
    /// writer writes each log object once, so the others were put there by someone else.
    ForeignLogVersion,
    /// A record was ingested twice, or a dictionary logged twice.
    DuplicateIngest,
    /// An ingest entry names a dictionary that no earlier `dictionary` entry logged: its
    /// record cannot be decompressed from what the log vouches for.
    UnknownDictionary,
    /// An entry about a record that was never ingested.
    UnknownRecord,
    /// A tombstone without a preceding destroy-authorized entry.
    DestroyedWithoutAuthorization,
    /// A destruction certificate is not a certificate, is for another log, or is stored under
    /// a key that is not its run.
    MalformedCertificate,
    /// A destruction certificate carries no signature by the trusted key.
    UnsignedCertificate,
    /// A destruction certificate's covering checkpoint is beyond the log's end.
    CertificateBeyondLog,
    /// A destruction certificate's covering root is not the log's root at that size.
    ForkedCertificate,
    /// A certificate lists a record that has no tombstone before its covering checkpoint.
    CertifiedButNotDestroyed,
    /// What a certificate says of a record disagrees with the log: its series, the range of
    /// retain-until, an authorization of the wrong kind, or the record listed twice.
    CertificateMismatch,
    /// A tombstone before the covering checkpoint of a later certificate that no certificate
    /// lists: a destruction run left it out. (Tombstones after the newest certificate's
    /// checkpoint are not yet certified, which is what a crash before the certificate leaves;
    /// the next run certifies them.)
    UncertifiedDestruction,
}

impl LogFaultKind {
    /// Whether the fault fails verification. Every kind does: there are no warnings that an
    /// auditor could skim past.
    pub fn is_failure(self) -> bool {
        true
    }
}

/// One fault in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogFault {
    /// Its kind.
    pub kind: LogFaultKind,
    /// Where and what, in words.
    pub detail: String,
}

/// The verdict on one record (or one unlogged object).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordStatus {
    /// Stored as logged, locked as logged.
    PresentOk,
    /// Destroyed after its retention ended, with no hold, every version gone.
    DestroyedOk,
    /// The logged version is gone but the log records no destruction.
    Missing,
    /// The logged version's bytes are not the logged bytes.
    Tampered,
    /// Destroyed before its retain-until.
    PrematureDestruction,
    /// Destruction logged (or authorized and the data gone) but not finished: versions remain,
    /// or the tombstone is missing.
    DestructionIncomplete,
    /// Destroyed while a legal hold covered it.
    HeldButDestroyed,
    /// Stored under a weaker lock than logged: shorter retain-until, weaker mode, or a legal
    /// hold flag missing.
    LockWeakened,
    /// An object or version in the records area that no log entry names.
    UnloggedObject,
    /// Present as logged, but only entries after the newest signed checkpoint speak for it:
    /// nothing vouches for its entry yet.
    Unsigned,
    /// The logged version is present, but a delete marker hides it from plain reads.
    Hidden,
    /// The logged version's bytes are the logged bytes, but the record cannot be exported and
    /// proven: its sidecar is missing or unreadable or disagrees with its ingest entry, its
    /// salt does not open the logged commitment, the stored bytes do not decompress, or its
    /// record id does not recompute from its identity.
    Unprovable,
    /// A `--since` audit left this older record out of its random sample: the store's listing
    /// shows its logged version present and not hidden, but its bytes, sidecar and lock were
    /// not read.
    ListedOnly,
}

impl RecordStatus {
    /// Whether the status is acceptable.
    pub fn is_ok(self) -> bool {
        matches!(self, Self::PresentOk | Self::DestroyedOk | Self::ListedOnly)
    }

    /// Order in which statuses win when a record has several findings.
    fn severity(self) -> u8 {
        match self {
            Self::PresentOk | Self::DestroyedOk | Self::ListedOnly => 0,
            Self::Unsigned => 1,
            Self::Hidden => 2,
            Self::UnloggedObject => 3,
            Self::Unprovable => 4,
            Self::LockWeakened => 5,
            Self::DestructionIncomplete => 6,
            Self::Missing => 7,
            Self::PrematureDestruction => 8,
            Self::Tampered => 9,
            Self::HeldButDestroyed => 10,
        }
    }

    /// The status as spelled in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PresentOk => "PRESENT_OK",
            Self::DestroyedOk => "DESTROYED_OK",
            Self::Missing => "MISSING",
            Self::Tampered => "TAMPERED",
            Self::PrematureDestruction => "PREMATURE_DESTRUCTION",
            Self::DestructionIncomplete => "DESTRUCTION_INCOMPLETE",
            Self::HeldButDestroyed => "HELD_BUT_DESTROYED",
            Self::LockWeakened => "LOCK_WEAKENED",
            Self::UnloggedObject => "UNLOGGED_OBJECT",
            Self::Unsigned => "UNSIGNED",
            Self::Hidden => "HIDDEN",
            Self::Unprovable => "UNPROVABLE",
            Self::ListedOnly => "LISTED_ONLY",
        }
    }
}

impl fmt::Display for RecordStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Display for LogFaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Same spelling as the JSON report.
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.pad(&s)
    }
}

/// One version of an object as the store lists it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StoredVersion {
    /// The store's version id.
    pub version_id: String,
    /// True for an S3 delete marker (no data).
    pub delete_marker: bool,
    /// SHA-256 of the stored bytes, if the caller read them (`None`: not checked).
    pub sha256: Option<Hash>,
    /// Object Lock mode on the version, if any.
    pub lock_mode: Option<LockMode>,
    /// Object Lock retain-until on the version, if any.
    pub retain_until: Option<UnixTime>,
    /// Whether the S3 legal-hold flag is on.
    pub legal_hold: bool,
    /// What opening the version as an exporter would found: its sidecar and the SHA-256 of
    /// its decompressed bytes (`None`: not opened, not checked).
    pub opened: Option<Box<Opened>>,
}

/// A record version opened as `export` and `prove` open it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The sidecar's fields, or why there are none (missing, unparseable).
    pub sidecar: Result<SidecarFields, String>,
    /// SHA-256 of the decompressed (original) bytes, or why they could not be decompressed.
    pub original_sha256: Result<Hash, String>,
}

/// The fields of a record's sidecar that the verifier checks against the log
/// (docs/log-format.md, "Sidecars").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarFields {
    /// `mailvault-series`, decoded.
    pub series: String,
    /// `mailvault-retain-until`.
    pub retain_until: RetainUntil,
    /// `mailvault-commitment`.
    pub commitment: Hash,
    /// `mailvault-salt`.
    pub salt: [u8; SALT_LEN],
    /// `mailvault-identity`, decoded.
    pub identity: String,
    /// `mailvault-stored-sha256`, when the sidecar has it.
    pub stored_sha256: Option<Hash>,
    /// `mailvault-stored-size`, when the sidecar has it.
    pub stored_size: Option<u64>,
}

/// What the store holds in the records area: object key (relative to the archive root) to
/// its versions.
pub type Inventory = BTreeMap<String, Vec<StoredVersion>>;

/// A record's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordVerdict {
    /// Record id, or the object key for an unlogged object.
    pub record: String,
    /// The most severe finding.
    pub status: RecordStatus,
    /// Every finding, in words (empty when all is well).
    pub findings: Vec<String>,
}

/// The verifier's report. Deterministic: the same inputs give the same report, byte for byte.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The log's origin, when known.
    pub origin: Option<String>,
    /// Entries read.
    pub log_size: u64,
    /// Root of all entries read.
    pub log_root: String,
    /// Newest valid signed checkpoint: size and root (hex).
    pub checkpoint: Option<(u64, String)>,
    /// Valid signed checkpoints found.
    pub checkpoints_verified: u64,
    /// Destruction certificates that are signed and whose covering checkpoint is the log's.
    pub certificates_verified: u64,
    /// Faults of the log.
    pub log_faults: Vec<LogFault>,
    /// Faults not listed because there were too many of their kind.
    pub log_faults_omitted: BTreeMap<LogFaultKind, u64>,
    /// Records (and objects under `records/` the log does not name) by status.
    pub counts: BTreeMap<RecordStatus, u64>,
    /// Trained dictionaries (and objects under `dictionaries/` the log does not name) by
    /// status: counted apart, so a record count is the number of records.
    pub dictionary_counts: BTreeMap<RecordStatus, u64>,
    /// Every record or unlogged object with a problem, by id (the counts cover all of them).
    pub problems: Vec<RecordVerdict>,
    /// What a `--since` audit read: `None` for a full audit (every record read).
    pub since: Option<SinceSummary>,
}

/// What a `--since` audit read in full and what it sampled.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SinceSummary {
    /// Size of the trusted checkpoint the audit started from.
    pub trusted_size: u64,
    /// Records with an entry at or after that position (ingested, held, extended or destroyed
    /// since): every one read in full.
    pub records_since: u64,
    /// Older records still kept (no entry since, not destroyed): the sampled population.
    pub older_records: u64,
    /// Older records read in full, chosen at random.
    pub older_sampled: u64,
    /// The bad fraction the confidence is stated for (0.01: 1%).
    pub bad_fraction: f64,
    /// The probability that the sample holds at least one bad record if at least
    /// `bad_fraction` of the older records were bad (exact, sampling without replacement).
    pub catch_probability: f64,
    /// The random seed the sample was drawn with (hex), so that the same sample can be drawn
    /// again to reproduce the audit.
    pub sample_seed: String,
}

impl SinceSummary {
    /// One sentence for the report.
    pub fn sentence(&self) -> String {
        format!(
            "checked every one of the {} records logged since the trusted checkpoint (size {}), \
             and {} of {} older records chosen at random: if at least {}% of the older records \
             were bad, this sample would have caught one with probability {}%",
            self.records_since,
            self.trusted_size,
            self.older_sampled,
            self.older_records,
            self.bad_fraction * 100.0,
            floor_percent(self.catch_probability),
        )
    }
}

/// A probability as a percentage rounded down to 0.1, so that it is never overstated.
fn floor_percent(p: f64) -> String {
    format!("{:.1}", (p * 1000.0).floor() / 10.0)
}

/// The probability that `n` records drawn at random without replacement from `population`
/// include at least one bad one, when at least `bad_fraction` of them are bad (rounded up to a
/// whole record, at least one).
pub fn catch_probability(population: u64, n: u64, bad_fraction: f64) -> f64 {
    if population == 0 {
        return 1.0;
    }
    let n = n.min(population);
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let bad = ((population as f64 * bad_fraction).ceil() as u64).clamp(1, population);
    let mut miss = 1.0f64;
    for i in 0..n {
        if population - bad < i + 1 {
            return 1.0;
        }
        #[allow(clippy::cast_precision_loss)]
        {
            miss *= (population - bad - i) as f64 / (population - i) as f64;
        }
    }
    1.0 - miss
}

/// The smallest sample whose [`catch_probability`] reaches `confidence`.
pub fn sample_size_for(population: u64, bad_fraction: f64, confidence: f64) -> u64 {
    // Grows with n; a binary search over 0..=population.
    let (mut lo, mut hi) = (0u64, population);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if catch_probability(population, mid, bad_fraction) >= confidence {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// What a `--since` audit samples: how many older records (`None`: enough for
/// [`DEFAULT_CONFIDENCE`] at [`DEFAULT_BAD_FRACTION`]) and the random seed.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Older records to read; `None`: the default size.
    pub size: Option<u64>,
    /// The seed that picks them: from the operating system's randomness, so that whoever
    /// controls the store cannot know which records an audit will read.
    pub seed: [u8; 32],
}

/// The bad fraction the default sample size is chosen for.
pub const DEFAULT_BAD_FRACTION: f64 = 0.01;
/// The confidence the default sample size reaches at [`DEFAULT_BAD_FRACTION`].
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// The records a `--since` audit reads in full (every other logged record is judged from the
/// store's listing only).
#[derive(Clone, Debug, Default)]
pub struct ReadPlan {
    /// Object keys to read.
    pub keys: std::collections::HashSet<String>,
}

impl Report {
    /// True when nothing failed: no failing log fault and every record OK.
    pub fn verified(&self) -> bool {
        !self.log_faults.iter().any(|f| f.kind.is_failure())
            && self.log_faults_omitted.keys().all(|k| !k.is_failure())
            && self.problems.is_empty()
    }

    /// Entries after the newest valid signed checkpoint, if any: the archive is verified only
    /// up to that checkpoint.
    pub fn unsigned_entries(&self) -> Option<u64> {
        let signed = self.checkpoint.as_ref().map_or(0, |(size, _)| *size);
        (self.log_size > signed).then(|| self.log_size - signed)
    }

    /// The report as text for a person: summary first, then every problem.
    pub fn to_text(&self) -> String {
        use fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "mailvault verification report{}",
            self.origin
                .as_deref()
                .map(|o| format!(" for {o}"))
                .unwrap_or_default()
        );
        let _ = writeln!(s, "log: {} entries, root {}", self.log_size, self.log_root);
        match &self.checkpoint {
            Some((size, root)) => {
                let _ = writeln!(
                    s,
                    "newest signed checkpoint: size {size}, root {root} ({} checkpoints verified)",
                    self.checkpoints_verified
                );
            }
            None => s.push_str("newest signed checkpoint: none\n"),
        }
        let _ = writeln!(
            s,
            "destruction certificates verified: {}",
            self.certificates_verified
        );
        let _ = writeln!(s, "records:");
        for (status, n) in &self.counts {
            let _ = writeln!(s, "  {status:<24} {n}");
        }
        if !self.dictionary_counts.is_empty() {
            let _ = writeln!(s, "dictionaries:");
            for (status, n) in &self.dictionary_counts {
                let _ = writeln!(s, "  {status:<24} {n}");
            }
        }
        if !self.log_faults.is_empty() {
            let _ = writeln!(s, "log faults:");
            for f in &self.log_faults {
                let _ = writeln!(s, "  {} {}", f.kind, f.detail);
            }
            for (kind, n) in &self.log_faults_omitted {
                let _ = writeln!(s, "  {kind} ... and {n} more");
            }
        }
        if !self.problems.is_empty() {
            let _ = writeln!(s, "records with problems:");
            for r in &self.problems {
                let _ = writeln!(s, "  {} {}: {}", r.status, r.record, r.findings.join("; "));
            }
        }
        if let Some(since) = &self.since {
            let _ = writeln!(s, "{}", since.sentence());
        }
        if let Some(unsigned) = self.unsigned_entries() {
            let signed = self.log_size - unsigned;
            let _ = writeln!(
                s,
                "only the first {signed} entries are vouched for by a signed checkpoint; the {unsigned} after them are not"
            );
        }
        let _ = writeln!(
            s,
            "result: {}",
            if self.verified() {
                "VERIFIED"
            } else {
                "VERIFICATION FAILED"
            }
        );
        s
    }
}

/// The fingerprint of a verifier key (docs/log-format.md, "Key fingerprints"):
/// `<name>+<key id> sha256:<hex SHA-256 of the key string>`, the key string taken without
/// surrounding whitespace. `mailvault keygen` and `mailvault verify` print it, so an auditor
/// can compare the key they pinned with the key they audit against.
pub fn key_fingerprint(vkey: &str) -> Result<String, NoteError> {
    let vkey = vkey.trim();
    let parsed = NoteVerifier::parse(vkey)?;
    let id = vkey.split('+').nth(1).unwrap_or_default();
    Ok(format!(
        "{}+{id} sha256:{}",
        parsed.name(),
        Hash::of(vkey.as_bytes())
    ))
}

/// What the verifier is told to trust.
#[derive(Clone, Debug)]
pub struct Trust {
    /// Public keys whose checkpoint signatures count.
    pub keys: Vec<NoteVerifier>,
    /// The log's origin, when the auditor knows it; checkpoints for another origin are rejected.
    pub origin: Option<String>,
    /// A checkpoint the auditor saved earlier; the log must still be consistent with it.
    pub trusted_checkpoint: Option<Vec<u8>>,
    /// The time of the audit (retention is judged against it).
    pub now: UnixTime,
}

/// The object of a bundle index the verifier replays.
struct BundleChoice<'a> {
    width: u64,
    entries: Vec<&'a [u8]>,
    /// The newest checkpoint's size, when it named the object this one is or extends.
    named_by: Option<u64>,
}

/// Whether each of `entries` from `from` on is an entry whose index is its position (the
/// bundle's first at `start`) and whose `prev` is the hash of the entry before it.
fn chains_on(entries: &[&[u8]], from: usize, start: u64) -> bool {
    (from.max(1)..entries.len()).all(|j| {
        Entry::decode(entries[j])
            .is_ok_and(|e| e.index == start + j as u64 && e.prev == Hash::of(entries[j - 1]))
    })
}

/// Whether `bytes` is a bundle of `width` entries that agree with `entries` on the entries
/// both hold (one is a prefix of the other).
fn is_prefix(bytes: &[u8], width: u64, entries: &[&[u8]]) -> bool {
    decode_bundle(bytes)
        .is_ok_and(|p| p.len() as u64 == width && p.iter().zip(entries).all(|(a, b)| a == b))
}

/// The streaming verifier.
#[derive(Debug)]
pub struct Verifier {
    trust: Trust,
    range: CompactRange,
    prev: Hash,
    /// Bundle index expected next.
    next_bundle: u64,
    /// Whether a partial bundle was taken (no later bundle may follow).
    ended_partial: bool,
    /// Checkpoint sizes whose roots we want, and the roots once known.
    wanted_roots: BTreeMap<u64, Option<Hash>>,
    checkpoints: Vec<Checkpoint>,
    /// Certificates that opened, by key.
    certificates: Vec<(String, Certificate)>,
    trusted: Option<Checkpoint>,
    /// Records (table positions) with a non-ingest entry at or after the trusted checkpoint.
    touched_since: std::collections::HashSet<usize>,
    /// Records a `--since` audit reads in full (`None`: a full audit, every record read).
    planned: Option<std::collections::HashSet<usize>>,
    since: Option<SinceSummary>,
    /// The latest `logged-at` seen so far.
    latest_logged_at: Option<UnixTime>,
    records: RecordTable,
    faults: Vec<LogFault>,
    omitted: BTreeMap<LogFaultKind, u64>,
    per_kind: HashMap<LogFaultKind, usize>,
}

impl Verifier {
    /// A verifier for one log. Give it every checkpoint and certificate object first
    /// ([`Self::add_checkpoint`], [`Self::add_certificate`]), then the bundles in order
    /// ([`Self::add_bundle`]), then the inventory ([`Self::finish`]).
    pub fn new(trust: Trust) -> Self {
        let mut v = Self {
            trust,
            range: CompactRange::new(),
            prev: Hash::default(),
            next_bundle: 0,
            ended_partial: false,
            wanted_roots: BTreeMap::new(),
            checkpoints: Vec::new(),
            certificates: Vec::new(),
            trusted: None,
            touched_since: std::collections::HashSet::new(),
            planned: None,
            since: None,
            latest_logged_at: None,
            records: RecordTable::default(),
            faults: Vec::new(),
            omitted: BTreeMap::new(),
            per_kind: HashMap::new(),
        };
        if let Some(bytes) = v.trust.trusted_checkpoint.clone() {
            match Checkpoint::open(&bytes, &v.trust.keys, v.trust.origin.as_deref()) {
                Ok(cp) => {
                    v.want_root(cp.size);
                    v.trusted = Some(cp);
                }
                Err(e) => v.fault(
                    LogFaultKind::TrustedCheckpointInconsistent,
                    format!("the trusted checkpoint does not open: {e}"),
                ),
            }
        }
        v
    }

    /// Asks for the tree's root at `size` while streaming (the empty tree's root is known).
    fn want_root(&mut self, size: u64) {
        let known = (size == 0).then(empty_root);
        self.wanted_roots.entry(size).or_insert(known);
    }

    fn fault(&mut self, kind: LogFaultKind, detail: String) {
        let n = self.per_kind.entry(kind).or_default();
        *n += 1;
        if *n > MAX_FAULTS_PER_KIND {
            *self.omitted.entry(kind).or_default() += 1;
        } else {
            self.faults.push(LogFault { kind, detail });
        }
    }

    /// Reports delete markers (their version ids) over a log object: the object is hidden
    /// from plain reads. The caller still reads its data version and feeds it.
    pub fn add_hidden_log_object(&mut self, key: &str, markers: &[&str]) {
        self.fault(
            LogFaultKind::HiddenLogObject,
            format!(
                "{key}: delete marker {} hides it from plain reads (its locked version was read)",
                markers.join(", ")
            ),
        );
    }

    /// Reports data versions of a log object beyond the one the caller feeds.
    pub fn add_foreign_log_versions(&mut self, key: &str, kept: &str, extra: &[&str]) {
        self.fault(
            LogFaultKind::ForeignLogVersion,
            format!(
                "{key}: versions {} besides version {kept}; mailvault writes a log object once",
                extra.join(", ")
            ),
        );
    }

    /// Reports an object in the log area that is neither a bundle nor a checkpoint.
    pub fn add_unknown_log_object(&mut self, key: &str) {
        self.fault(LogFaultKind::UnknownLogObject, key.to_owned());
    }

    /// Reports a log object that was not read (`why`: larger than one of its kind can be, or
    /// refused by the store for good): not replayed or opened (a bundle: as if that object
    /// were absent).
    pub fn add_unread_log_object(&mut self, key: &str, why: &str) {
        let kind = if parse_checkpoint_key(key).is_some() {
            LogFaultKind::MalformedCheckpoint
        } else if parse_certificate_key(key).is_some() {
            LogFaultKind::MalformedCertificate
        } else {
            LogFaultKind::MalformedBundle
        };
        self.fault(kind, format!("{key}: not read ({why})"));
    }

    /// Adds a checkpoint object (`checkpoints/<size>`).
    pub fn add_checkpoint(&mut self, key: &str, bytes: &[u8]) {
        let Some(key_size) = parse_checkpoint_key(key) else {
            self.add_unknown_log_object(key);
            return;
        };
        match Checkpoint::open(bytes, &self.trust.keys, self.trust.origin.as_deref()) {
            Ok(cp) if cp.size != key_size => self.fault(
                LogFaultKind::MalformedCheckpoint,
                format!(
                    "{key}: signed for size {} but stored as size {key_size}",
                    cp.size
                ),
            ),
            Ok(cp) => {
                self.want_root(cp.size);
                self.checkpoints.push(cp);
            }
            Err(CheckpointError::Note(NoteError::BadSignature(name))) => self.fault(
                LogFaultKind::BadSignature,
                format!("{key}: the signature by {name:?} does not verify"),
            ),
            Err(CheckpointError::Note(NoteError::NoTrustedSignature(who))) => self.fault(
                LogFaultKind::UnsignedCheckpoint,
                format!("{key}: no signature by the trusted key (signed by: {who})"),
            ),
            Err(e) => self.fault(LogFaultKind::MalformedCheckpoint, format!("{key}: {e}")),
        }
    }

    /// Adds a destruction certificate object (`certificates/<run>`). Call before the bundles,
    /// so that the root at its covering checkpoint is taken while streaming.
    pub fn add_certificate(&mut self, key: &str, bytes: &[u8]) {
        let Some(run) = parse_certificate_key(key) else {
            self.add_unknown_log_object(key);
            return;
        };
        match Certificate::open(bytes, &self.trust.keys, self.trust.origin.as_deref()) {
            Ok(c) if c.run != run => self.fault(
                LogFaultKind::MalformedCertificate,
                format!("{key}: the certificate is for run {}", c.run),
            ),
            Ok(c) => {
                self.want_root(c.checkpoint_size);
                self.certificates.push((key.to_owned(), c));
            }
            Err(CertificateError::Note(NoteError::BadSignature(name))) => self.fault(
                LogFaultKind::BadSignature,
                format!("{key}: the signature by {name:?} does not verify"),
            ),
            Err(CertificateError::Note(NoteError::NoTrustedSignature(who))) => self.fault(
                LogFaultKind::UnsignedCertificate,
                format!("{key}: no signature by the trusted key (signed by: {who})"),
            ),
            Err(e) => self.fault(LogFaultKind::MalformedCertificate, format!("{key}: {e}")),
        }
    }

    /// Adds bundle `index`: its full object if present, and every partial object
    /// `(width, bytes)`. Call with increasing `index` from 0; a skipped index is a missing
    /// bundle.
    pub fn add_bundle(&mut self, index: u64, full: Option<&[u8]>, partials: &[(u64, &[u8])]) {
        if index != self.next_bundle || self.ended_partial {
            let detail = if self.ended_partial {
                format!(
                    "bundle {index} follows a partial bundle {}: the full bundle is missing",
                    self.next_bundle.saturating_sub(1)
                )
            } else {
                format!("bundles {}..{index} are missing", self.next_bundle)
            };
            self.fault(LogFaultKind::MissingBundle, detail);
            // Entries cannot be placed without the bundles before them: stop reading.
            self.ended_partial = true;
            return;
        }
        self.next_bundle += 1;
        // Every object of this index, narrowest first (the full bundle last).
        let mut objects: Vec<(u64, &[u8])> = partials.to_vec();
        objects.sort_by_key(|(w, _)| *w);
        objects.extend(full.map(|b| (BUNDLE_WIDTH, b)));
        let Some(choice) = self.choose_bundle_object(index, &objects) else {
            return;
        };
        let (width, entries) = (choice.width, choice.entries);
        if width < BUNDLE_WIDTH {
            self.ended_partial = true;
        }
        for (w, bytes) in &objects {
            if *w == width {
                continue;
            }
            let agrees = is_prefix(bytes, *w, &entries);
            let signed = choice.named_by.unwrap_or_default();
            let words = if *w < width {
                if agrees {
                    continue;
                }
                let whole = if width == BUNDLE_WIDTH {
                    "bundle"
                } else {
                    "partial"
                };
                format!(
                    "bundle {index}: the {w}-entry partial is not a prefix of the {width}-entry {whole}"
                )
            } else if agrees {
                // A wider object left out: it starts with the chosen one but does not chain on.
                format!(
                    "bundle {index}: the {w}-entry object starts with the {width}-entry partial \
                     the newest checkpoint (size {signed}) names, but its further entries do not \
                     chain on from it (an entry that is not canonical, or whose index or prev is \
                     wrong); not replayed"
                )
            } else {
                format!(
                    "bundle {index}: the {w}-entry object does not extend the {width}-entry \
                     partial the newest checkpoint (size {signed}) names byte for byte"
                )
            };
            self.fault(LogFaultKind::RewrittenBundle, words);
        }
        for bytes in entries {
            self.add_entry(bytes);
        }
    }

    /// Which object of bundle `index` is replayed (`objects`: `(width, bytes)`, narrowest
    /// first, the full bundle last), as readers choose (§13.1 step 5, §14.1): where the newest
    /// checkpoint's size (one in the store or the trusted one) ends in or past this index, the
    /// object its size names, or the widest one that extends it byte for byte; elsewhere the
    /// full bundle, else the widest partial (also, after a fault, when the object a checkpoint
    /// names is missing). `None` after a fault that stops reading: the object a checkpoint
    /// names is not a bundle of its width (the widest object instead could be a copy planted
    /// to change signed entries, and replaying it would blame the genuine objects and the
    /// checkpoint).
    fn choose_bundle_object<'a>(
        &mut self,
        index: u64,
        objects: &[(u64, &'a [u8])],
    ) -> Option<BundleChoice<'a>> {
        let signed = self
            .checkpoints
            .iter()
            .chain(&self.trusted)
            .map(|c| c.size)
            .max()
            .unwrap_or(0);
        let start = index.saturating_mul(BUNDLE_WIDTH);
        let named = (signed > start).then(|| (signed - start).min(BUNDLE_WIDTH));
        let decoded = |width: u64, bytes: &'a [u8]| {
            decode_bundle(bytes)
                .ok()
                .filter(|e| e.len() as u64 == width)
        };
        if let Some(named) = named {
            let what = if named == BUNDLE_WIDTH {
                "full bundle".to_owned()
            } else {
                format!("{named}-entry partial")
            };
            let Some(&(_, bytes)) = objects.iter().find(|(w, _)| *w == named) else {
                // Not written, or removed from a store without locks: what is there is still
                // replayed (below), so that its entries are judged.
                self.fault(
                    LogFaultKind::MissingBundle,
                    format!(
                        "bundle {index}: the {what} the checkpoint of size {signed} names is \
                         missing"
                    ),
                );
                return self.choose_widest(index, objects);
            };
            let Some(base) = decoded(named, bytes) else {
                self.fault(
                    LogFaultKind::MalformedBundle,
                    format!(
                        "bundle {index}: the {what} the checkpoint of size {signed} names (its \
                         first written version) is not a bundle of {named} entries"
                    ),
                );
                self.ended_partial = true;
                return None;
            };
            // An extension starts with the named entries and chains on from them (indices and
            // `prev`), as readers require of the unsigned tail they read.
            let widest = objects
                .iter()
                .rev()
                .filter(|(w, _)| *w > named)
                .filter_map(|&(w, b)| decoded(w, b).map(|e| (w, e)))
                .find(|(_, e)| {
                    e.iter().zip(&base).all(|(a, b)| a == b) && chains_on(e, base.len(), start)
                });
            let (width, entries) = widest.unwrap_or((named, base));
            return Some(BundleChoice {
                width,
                entries,
                named_by: Some(signed),
            });
        }
        self.choose_widest(index, objects)
    }

    /// §6's choice: the full bundle, else the widest partial.
    fn choose_widest<'a>(
        &mut self,
        index: u64,
        objects: &[(u64, &'a [u8])],
    ) -> Option<BundleChoice<'a>> {
        let Some(&(width, chosen)) = objects.last() else {
            self.fault(
                LogFaultKind::MissingBundle,
                format!("bundle {index} has no objects"),
            );
            self.ended_partial = true;
            return None;
        };
        match decode_bundle(chosen) {
            Ok(entries) if entries.len() as u64 == width => Some(BundleChoice {
                width,
                entries,
                named_by: None,
            }),
            Ok(e) => {
                self.fault(
                    LogFaultKind::MalformedBundle,
                    format!("bundle {index} (width {width}) holds {} entries", e.len()),
                );
                self.ended_partial = true;
                None
            }
            Err(e) => {
                self.fault(
                    LogFaultKind::MalformedBundle,
                    format!("bundle {index}: {e}"),
                );
                self.ended_partial = true;
                None
            }
        }
    }

    fn add_entry(&mut self, bytes: &[u8]) {
        let position = self.range.size();
        self.range.push(leaf_hash(bytes));
        let this_hash = Hash::of(bytes);
        let prev = std::mem::replace(&mut self.prev, this_hash);
        if let Some(slot) = self.wanted_roots.get_mut(&self.range.size()) {
            *slot = Some(self.range.root());
        }
        let entry = match Entry::decode(bytes) {
            Ok(e) => e,
            Err(e) => {
                self.fault(
                    LogFaultKind::MalformedEntry,
                    format!("entry at position {position}: {e}"),
                );
                return;
            }
        };
        if entry.index != position {
            let what = if entry.index > position {
                "entries before it were removed, or entries were reordered"
            } else {
                "an entry was inserted or entries were reordered"
            };
            self.fault(
                LogFaultKind::EntryOutOfPlace,
                format!("position {position} holds entry {} ({what})", entry.index),
            );
        }
        if entry.prev != prev {
            self.fault(
                LogFaultKind::BrokenChain,
                format!("entry at position {position}: prev does not name the entry before it"),
            );
        }
        self.check_logged_at(position, entry.logged_at);
        self.replay(entry);
    }

    /// Entries are appended in time order: `logged-at` may not go back (beyond the tolerance)
    /// and may not lie after the audit.
    fn check_logged_at(&mut self, position: u64, at: UnixTime) {
        if let Some(latest) = self.latest_logged_at
            && at.0 < latest.0.saturating_sub(LOGGED_AT_TOLERANCE_SECS)
        {
            self.fault(
                LogFaultKind::LoggedAtBackwards,
                format!("entry {position} is logged at {at}, before an earlier entry's {latest}"),
            );
        }
        if at.0 > self.trust.now.0.saturating_add(LOGGED_AT_TOLERANCE_SECS) {
            self.fault(
                LogFaultKind::LoggedAtInFuture,
                format!(
                    "entry {position} is logged at {at}, after the time of this audit ({})",
                    self.trust.now
                ),
            );
        }
        if self.latest_logged_at.is_none_or(|l| at > l) {
            self.latest_logged_at = Some(at);
        }
    }

    fn replay(&mut self, entry: Entry) {
        let (index, kind) = (entry.index, entry.body.kind());
        let record: RecordId = entry.record.clone();
        let new_retention = match &entry.body {
            EntryBody::RetentionExtended { retain_until } => Some(*retain_until),
            _ => None,
        };
        let since = self.trusted.as_ref().is_some_and(|t| index >= t.size)
            && !matches!(entry.body, EntryBody::Ingest { .. });
        let result = self.records.apply(entry);
        if since && let Some(i) = self.records.find(record.as_str()) {
            self.touched_since.insert(i);
        }
        let Err(anomaly) = result else {
            return;
        };
        let (fault, detail) = match anomaly {
            Anomaly::DuplicateIngest => (
                LogFaultKind::DuplicateIngest,
                format!("record {record} ingested again at entry {index}"),
            ),
            Anomaly::DuplicateDictionary => (
                LogFaultKind::DuplicateIngest,
                format!("dictionary {record} logged again at entry {index}"),
            ),
            Anomaly::UnknownDictionary => (
                LogFaultKind::UnknownDictionary,
                format!(
                    "entry {index} ingests record {record} compressed with a dictionary \
                     that no earlier entry logged"
                ),
            ),
            Anomaly::ArenaFull => (
                LogFaultKind::MalformedEntry,
                format!("entry {index}: the verifier ran out of room for record ids"),
            ),
            Anomaly::UnknownRecord => (
                LogFaultKind::UnknownRecord,
                format!("entry {index} ({kind}) names record {record}, which was never ingested"),
            ),
            Anomaly::RetentionShortened { kept } => (
                LogFaultKind::RetentionShortened,
                format!(
                    "entry {index} sets record {record}'s retention to {}, shorter than {kept}",
                    new_retention.map_or_else(String::new, |r| r.to_string())
                ),
            ),
            Anomaly::DestroyedWithoutAuthorization => (
                LogFaultKind::DestroyedWithoutAuthorization,
                format!("record {record} destroyed at entry {index} without destroy-authorized"),
            ),
        };
        self.fault(fault, detail);
    }

    /// Decides, after the last bundle, what a `--since` audit reads in full: every record with
    /// an entry at or after the trusted checkpoint, and `sample` of the older records still
    /// kept. `None` when there is no trusted checkpoint that this log extends: then nothing is
    /// left out (every record is read, and the report says why the checkpoint failed).
    pub fn plan_since(&mut self, sample: &Sample) -> Option<ReadPlan> {
        let t = self.trusted.as_ref()?;
        let trusted_size = t.size;
        let consistent = trusted_size <= self.range.size()
            && self.wanted_roots.get(&trusted_size).copied().flatten() == Some(t.root);
        if !consistent {
            return None;
        }
        let mut planned = std::collections::HashSet::new();
        // The n older records with the smallest score under the seed: a uniform random sample
        // without replacement, drawn in one pass with a bounded heap.
        let mut older: Vec<usize> = Vec::new();
        for (i, state) in self.records.states.iter().enumerate() {
            if state.ingest_index >= trusted_size || self.touched_since.contains(&i) {
                planned.insert(i);
            } else if state.tombstone().is_none() {
                older.push(i);
            }
        }
        let population = older.len() as u64;
        let n = sample
            .size
            .unwrap_or_else(|| {
                sample_size_for(population, DEFAULT_BAD_FRACTION, DEFAULT_CONFIDENCE)
            })
            .min(population);
        let score = |i: usize| {
            let mut bytes = sample.seed.to_vec();
            bytes.extend_from_slice(self.records.get(self.records.states[i].id).as_bytes());
            Hash::of(&bytes).0
        };
        let mut heap = std::collections::BinaryHeap::new();
        for &i in &older {
            heap.push((score(i), i));
            if heap.len() as u64 > n {
                heap.pop();
            }
        }
        let records_since = planned.len() as u64;
        planned.extend(heap.into_iter().map(|(_, i)| i));
        let keys = planned
            .iter()
            .map(|&i| self.records.object_key(i))
            .collect();
        self.since = Some(SinceSummary {
            trusted_size,
            records_since,
            older_records: population,
            older_sampled: n,
            bad_fraction: DEFAULT_BAD_FRACTION,
            catch_probability: catch_probability(population, n, DEFAULT_BAD_FRACTION),
            sample_seed: Hash(sample.seed).to_hex(),
        });
        self.planned = Some(planned);
        Some(ReadPlan { keys })
    }

    /// The dictionaries the log has named so far: their hash and logged object version (what
    /// a caller reads to decompress the records that name them).
    pub fn logged_dictionaries(&self) -> Vec<(Hash, String)> {
        self.records
            .dictionaries
            .iter()
            .map(|d| (d.sha256, d.object_version.clone()))
            .collect()
    }

    /// The dictionary the log says the record stored at `key` was compressed with.
    pub fn dictionary_of(&self, key: &str) -> Option<Hash> {
        let i = self.records.find_by_key(key)?;
        let d = self.records.states[i].dictionary?;
        Some(self.records.dictionaries[d as usize].sha256)
    }

    /// Compares the log with the checkpoints and the records with an in-memory inventory.
    pub fn finish(self, inventory: &Inventory) -> Report {
        self.finish_streaming(
            inventory.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            &mut |_| {},
        )
    }

    /// Compares the log with the checkpoints and the records with the store, reading the
    /// store's listing as it comes (`(object key, versions)`, each key once), and hands every
    /// verdict, good or bad, to `sink` as it is decided. The report keeps the counts and the
    /// verdicts with problems, so memory does not grow with the listing.
    pub fn finish_streaming<K: AsRef<str>, V: AsRef<[StoredVersion]>>(
        mut self,
        listing: impl IntoIterator<Item = (K, V)>,
        sink: &mut dyn FnMut(&RecordVerdict),
    ) -> Report {
        let log_size = self.range.size();
        let origin = self
            .trust
            .origin
            .clone()
            .or_else(|| self.checkpoints.first().map(|c| c.origin.clone()));
        let judge = Judge {
            now: self.trust.now,
            signed_size: self.check_checkpoints(log_size).unwrap_or(0),
            origin: origin.clone(),
            planned: self.planned.take(),
        };
        let certificates_verified = self.check_certificates(log_size);
        let mut tally = Tally::default();
        let mut table = std::mem::take(&mut self.records);
        let horizons = dictionary_horizons(&table);
        for (key, versions) in listing {
            let (key, versions) = (key.as_ref(), versions.as_ref());
            if let Some(d) = parse_dictionary_key(key).and_then(|h| table.find_dictionary(&h)) {
                table.dictionaries[d].listed = true;
                let dict = &table.dictionaries[d];
                for v in judge.judge_dictionary_versions(dict, horizons[d], key, versions) {
                    tally.add(&v, sink);
                }
                continue;
            }
            let logged = table.find_by_key(key);
            let logged_version = logged.map(|i| {
                table.states[i].listed = true;
                table.get(table.states[i].object_version).to_owned()
            });
            if let Some(i) = logged {
                tally.add(&judge.classify(&table, i, versions), sink);
            }
            let unlogged: Vec<&str> = versions
                .iter()
                .filter(|v| {
                    !v.delete_marker && Some(v.version_id.as_str()) != logged_version.as_deref()
                })
                .map(|v| v.version_id.as_str())
                .collect();
            if !unlogged.is_empty() {
                let finding = if logged.is_some() {
                    format!(
                        "versions {} of a logged record's object are not in the log",
                        unlogged.join(", ")
                    )
                } else {
                    format!(
                        "no log entry names this object (versions {})",
                        unlogged.join(", ")
                    )
                };
                let verdict = RecordVerdict {
                    record: key.to_owned(),
                    status: RecordStatus::UnloggedObject,
                    findings: vec![format!("{}: {finding}", RecordStatus::UnloggedObject)],
                };
                tally.add(&verdict, sink);
            }
        }
        // Records the listing never named, in id order.
        let mut unlisted: Vec<usize> = (0..table.states.len())
            .filter(|&i| !table.states[i].listed)
            .collect();
        unlisted.sort_by(|&a, &b| {
            table
                .get(table.states[a].id)
                .cmp(table.get(table.states[b].id))
        });
        for i in unlisted {
            tally.add(&judge.classify(&table, i, &[]), sink);
        }
        for (d, dict) in table.dictionaries.iter().enumerate() {
            if !dict.listed {
                tally.add(&judge.classify_dictionary(dict, horizons[d], &[]), sink);
            }
        }
        drop(table);
        tally
            .problems
            .sort_by(|a, b| a.record.cmp(&b.record).then(a.status.cmp(&b.status)));
        let newest = self
            .checkpoints
            .iter()
            .filter(|c| self.wanted_roots.get(&c.size).copied().flatten() == Some(c.root))
            .max_by_key(|c| c.size);
        Report {
            origin,
            log_size,
            log_root: self.range.root().to_hex(),
            checkpoint: newest.map(|c| (c.size, c.root.to_hex())),
            checkpoints_verified: self.checkpoints.len() as u64,
            certificates_verified,
            log_faults: self.faults,
            log_faults_omitted: self.omitted,
            counts: tally.counts,
            dictionary_counts: tally.dictionary_counts,
            problems: tally.problems,
            since: self.since,
        }
    }

    /// Checks every certificate against the log and the replayed records; returns how many
    /// certificates cover a checkpoint the log has.
    fn check_certificates(&mut self, log_size: u64) -> u64 {
        let mut certificates = std::mem::take(&mut self.certificates);
        certificates.sort_by(|a, b| a.0.cmp(&b.0));
        let mut good = 0;
        let mut covered = 0;
        for (key, c) in &certificates {
            let size = c.checkpoint_size;
            if size > log_size {
                self.fault(
                    LogFaultKind::CertificateBeyondLog,
                    format!("{key}: covers {size} entries but the log holds {log_size}"),
                );
                continue;
            }
            if self.wanted_roots.get(&size).copied().flatten() != Some(c.checkpoint_root) {
                self.fault(
                    LogFaultKind::ForkedCertificate,
                    format!(
                        "{key}: covering root {} is not the log's root at size {size}",
                        c.checkpoint_root
                    ),
                );
                continue;
            }
            good += 1;
            covered = covered.max(size);
            for section in &c.series {
                self.check_section(key, size, section);
            }
        }
        // Tombstones a later certificate's run should have certified.
        let mut uncertified: Vec<(u64, String)> = Vec::new();
        for (i, state) in self.records.states.iter().enumerate() {
            if let Some(extra) = &state.extra
                && let Some(t) = &extra.destroyed
                && t.index < covered
                && !extra.certified
            {
                uncertified.push((
                    t.index,
                    self.records.get(self.records.states[i].id).to_owned(),
                ));
            }
        }
        uncertified.sort();
        for (index, id) in uncertified {
            self.fault(
                LogFaultKind::UncertifiedDestruction,
                format!(
                    "record {id} destroyed at entry {index}, before the newest certificate's checkpoint (size {covered}), is listed by no certificate"
                ),
            );
        }
        self.certificates = certificates;
        good
    }

    /// Checks one series of a certificate covering `size` entries against the log.
    fn check_section(
        &mut self,
        key: &str,
        size: u64,
        section: &crate::lifecycle::certificate::SeriesSection,
    ) {
        let mut earliest: Option<RetainUntil> = None;
        let mut latest: Option<RetainUntil> = None;
        // The stated range is compared only when every record was found destroyed: a missing
        // one is its own fault, and would only make the range disagree as well.
        let mut complete = true;
        for id in &section.records {
            let Some(i) = self.records.find(id.as_str()) else {
                complete = false;
                self.fault(
                    LogFaultKind::CertifiedButNotDestroyed,
                    format!("{key}: lists record {id}, which was never ingested"),
                );
                continue;
            };
            let series_ok = self.records.series(i) == section.series;
            let state = &mut self.records.states[i];
            let authorization = state.authorization().map(|a| a.disposition);
            let extra = state.extra_mut();
            let already = std::mem::replace(&mut extra.certified, true);
            let Some(t) = extra.destroyed.as_ref().filter(|t| t.index < size) else {
                complete = false;
                self.fault(
                    LogFaultKind::CertifiedButNotDestroyed,
                    format!("{key}: lists record {id}, which has no tombstone among the first {size} entries"),
                );
                continue;
            };
            let r = t.retain_until_at_destruction;
            // Permanent sorts after every date.
            let order = |x: RetainUntil| match x {
                RetainUntil::Until(t) => (false, t),
                RetainUntil::Permanent => (true, UnixTime(0)),
            };
            earliest = Some(earliest.map_or(r, |e| if order(r) < order(e) { r } else { e }));
            latest = Some(latest.map_or(r, |l| if order(l) < order(r) { r } else { l }));
            let mut wrong = Vec::new();
            if already {
                wrong.push("it is listed by another certificate too".to_owned());
            }
            if !series_ok {
                wrong.push(format!(
                    "the log files it under another series than {:?}",
                    section.series
                ));
            }
            let kind_ok = match authorization {
                Some(crate::entry::Disposition::Destroy) => section
                    .authorizations
                    .iter()
                    .any(|a| matches!(a, CertifiedAuthorization::Rule { .. })),
                Some(crate::entry::Disposition::ReviewApproved) => section
                    .authorizations
                    .iter()
                    .any(|a| matches!(a, CertifiedAuthorization::Review { .. })),
                None => true, // DESTROYED_WITHOUT_AUTHORIZATION says it already
            };
            if !kind_ok {
                wrong.push("its destroy-authorized disposition has no authorization of that kind in the certificate".to_owned());
            }
            if !wrong.is_empty() {
                self.fault(
                    LogFaultKind::CertificateMismatch,
                    format!("{key}: record {id}: {}", wrong.join("; ")),
                );
            }
        }
        let stated = (
            Some(RetainUntil::Until(section.earliest_retain_until)),
            Some(RetainUntil::Until(section.latest_retain_until)),
        );
        if complete && (earliest, latest) != stated {
            self.fault(
                LogFaultKind::CertificateMismatch,
                format!(
                    "{key}: series {:?} states retain-until {}..{}, the log says {}..{}",
                    section.series,
                    section.earliest_retain_until,
                    section.latest_retain_until,
                    earliest.map_or_else(String::new, |e| e.to_string()),
                    latest.map_or_else(String::new, |e| e.to_string()),
                ),
            );
        }
    }

    /// Checks every checkpoint against the log; returns the size of the newest good one.
    fn check_checkpoints(&mut self, log_size: u64) -> Option<u64> {
        let mut checkpoints = std::mem::take(&mut self.checkpoints);
        checkpoints.sort_by_key(|c| c.size);
        let mut good_max = None;
        for cp in &checkpoints {
            match self.wanted_roots.get(&cp.size).copied().flatten() {
                _ if cp.size > log_size => self.fault(
                    LogFaultKind::CheckpointBeyondLog,
                    format!(
                        "checkpoint {} is signed for {} entries but the log holds {log_size}",
                        cp.size, cp.size
                    ),
                ),
                Some(root) if root == cp.root => good_max = Some(cp.size),
                _ => self.fault(
                    LogFaultKind::ForkedCheckpoint,
                    format!(
                        "checkpoint {}: signed root {} is not the log's root at that size",
                        cp.size, cp.root
                    ),
                ),
            }
        }
        if let Some(t) = self.trusted.take() {
            let ok = t.size <= log_size
                && self.wanted_roots.get(&t.size).copied().flatten() == Some(t.root);
            if !ok {
                self.fault(
                    LogFaultKind::TrustedCheckpointInconsistent,
                    format!(
                        "the log is not an extension of the trusted checkpoint (size {}, root {})",
                        t.size, t.root
                    ),
                );
            }
        }
        match good_max {
            None if log_size > 0 => self.fault(
                LogFaultKind::NoCheckpoint,
                format!("{log_size} entries and no valid signed checkpoint covers any of them"),
            ),
            Some(size) if size < log_size => self.fault(
                LogFaultKind::UncheckpointedEntries,
                format!("entries {size}..{log_size} are after the newest signed checkpoint"),
            ),
            _ => {}
        }
        self.checkpoints = checkpoints;
        good_max
    }
}

/// Counts verdicts and keeps those with problems.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<RecordStatus, u64>,
    dictionary_counts: BTreeMap<RecordStatus, u64>,
    problems: Vec<RecordVerdict>,
}

impl Tally {
    fn add(&mut self, verdict: &RecordVerdict, sink: &mut dyn FnMut(&RecordVerdict)) {
        let counts = if verdict
            .record
            .starts_with(crate::layout::DICTIONARIES_PREFIX)
        {
            &mut self.dictionary_counts
        } else {
            &mut self.counts
        };
        *counts.entry(verdict.status).or_insert(0) += 1;
        if !verdict.status.is_ok() {
            self.problems.push(verdict.clone());
        }
        sink(verdict);
    }
}

/// What a record is judged against besides its own history.
struct Judge {
    /// The time of the audit.
    now: UnixTime,
    /// Entries below this position are covered by a valid signed checkpoint.
    signed_size: u64,
    /// The log's origin (record ids are recomputed under it), when known.
    origin: Option<String>,
    /// The records whose versions were read (`None`: every record's).
    planned: Option<std::collections::HashSet<usize>>,
}

impl Judge {
    fn classify(&self, table: &RecordTable, i: usize, versions: &[StoredVersion]) -> RecordVerdict {
        let state = &table.states[i];
        let id = table.get(state.id);
        let logged_version = table.get(state.object_version);
        let mut findings: Vec<(RecordStatus, String)> = Vec::new();
        if state.ingest_index >= self.signed_size {
            findings.push((
                RecordStatus::Unsigned,
                format!(
                    "ingested at entry {}, after the newest signed checkpoint (size {})",
                    state.ingest_index, self.signed_size
                ),
            ));
        }
        if let Some(t) = state.tombstone() {
            if !t.holds_at_destruction.is_empty() {
                findings.push((
                    RecordStatus::HeldButDestroyed,
                    format!(
                        "destroyed at {} under legal hold {}",
                        t.at,
                        t.holds_at_destruction.join(", ")
                    ),
                ));
            }
            let r = t.retain_until_at_destruction;
            if !r.has_ended(t.at) {
                findings.push((
                    RecordStatus::PrematureDestruction,
                    format!("destroyed at {} but retained until {r}", t.at),
                ));
            }
            if !versions.is_empty() {
                let ids: Vec<&str> = versions.iter().map(|v| v.version_id.as_str()).collect();
                findings.push((
                    RecordStatus::DestructionIncomplete,
                    format!("tombstone logged but versions remain: {}", ids.join(", ")),
                ));
            }
            return verdict(id, RecordStatus::DestroyedOk, findings);
        }
        let logged = versions
            .iter()
            .find(|v| !v.delete_marker && v.version_id == logged_version);
        let Some(v) = logged else {
            if state.authorized {
                findings.push((
                    RecordStatus::DestructionIncomplete,
                    "destruction authorized and the data is gone, but no tombstone was logged"
                        .into(),
                ));
            } else {
                findings.push((
                RecordStatus::Missing,
                format!(
                    "version {logged_version} of {} is not in the store and no destruction is logged",
                    table.object_key(i)
                ),
            ));
            }
            return verdict(id, RecordStatus::PresentOk, findings);
        };
        // Left out of a `--since` sample: only what the listing shows is judged.
        let read = self.planned.as_ref().is_none_or(|p| p.contains(&i));
        if let Some(sha) = v.sha256.filter(|_| read)
            && sha != state.stored_sha256
        {
            findings.push((
                RecordStatus::Tampered,
                format!(
                    "stored bytes hash to {sha}, the log says {}",
                    state.stored_sha256
                ),
            ));
        }
        if read {
            if let Some(opened) = &v.opened {
                self.judge_provable(table, i, opened, &mut findings);
            }
            self.judge_lock(state, v, &mut findings);
        }
        if let Some(marker) = versions.iter().find(|v| v.delete_marker) {
            findings.push((
                RecordStatus::Hidden,
                format!(
                    "delete marker {} hides the logged version from plain reads",
                    marker.version_id
                ),
            ));
        }
        let ok = if read {
            RecordStatus::PresentOk
        } else {
            RecordStatus::ListedOnly
        };
        verdict(id, ok, findings)
    }

    /// The verdicts of a logged dictionary's key: the dictionary's own, and one for versions
    /// the log does not name.
    fn judge_dictionary_versions(
        &self,
        dict: &DictionaryState,
        horizon: Option<RetainUntil>,
        key: &str,
        versions: &[StoredVersion],
    ) -> Vec<RecordVerdict> {
        let mut out = vec![self.classify_dictionary(dict, horizon, versions)];
        let unlogged: Vec<&str> = versions
            .iter()
            .filter(|v| !v.delete_marker && v.version_id != dict.object_version)
            .map(|v| v.version_id.as_str())
            .collect();
        if !unlogged.is_empty() {
            out.push(verdict(
                key,
                RecordStatus::PresentOk,
                vec![(
                    RecordStatus::UnloggedObject,
                    format!(
                        "versions {} of a logged dictionary's object are not in the log",
                        unlogged.join(", ")
                    ),
                )],
            ));
        }
        out
    }

    /// A logged dictionary against its object's versions: present, the logged bytes, locked
    /// at least as long as the log says and as every kept record compressed with it.
    fn classify_dictionary(
        &self,
        dict: &DictionaryState,
        horizon: Option<RetainUntil>,
        versions: &[StoredVersion],
    ) -> RecordVerdict {
        let key = dictionary_key(&dict.sha256);
        let mut findings: Vec<(RecordStatus, String)> = Vec::new();
        if dict.entry_index >= self.signed_size {
            findings.push((
                RecordStatus::Unsigned,
                format!(
                    "logged at entry {}, after the newest signed checkpoint (size {})",
                    dict.entry_index, self.signed_size
                ),
            ));
        }
        let Some(v) = versions
            .iter()
            .find(|v| !v.delete_marker && v.version_id == dict.object_version)
        else {
            findings.push((
                RecordStatus::Missing,
                format!(
                    "version {} of dictionary {key} is not in the store: the records \
                     compressed with it cannot be read",
                    dict.object_version
                ),
            ));
            return verdict(&key, RecordStatus::PresentOk, findings);
        };
        if let Some(sha) = v.sha256
            && sha != dict.sha256
        {
            findings.push((
                RecordStatus::Tampered,
                format!(
                    "dictionary bytes hash to {sha}, the log says {}: the records compressed \
                     with it cannot be read",
                    dict.sha256
                ),
            ));
        }
        if dict.lock_mode != LockMode::None {
            let stored_strength = v.lock_mode.map_or(0, LockMode::strength);
            if stored_strength < dict.lock_mode.strength() {
                findings.push((
                    RecordStatus::LockWeakened,
                    format!(
                        "stored under lock mode {}, logged {}",
                        v.lock_mode.map_or("none", LockMode::as_str),
                        dict.lock_mode.as_str()
                    ),
                ));
            }
            // The lock must reach the logged lock date and every kept record's retention
            // (for a permanent record: be in force at the audit).
            let needed = match horizon {
                Some(RetainUntil::Until(t)) => RetainUntil::Until(t.max(dict.lock_until)),
                Some(RetainUntil::Permanent) => RetainUntil::Permanent,
                None => RetainUntil::Until(dict.lock_until),
            };
            let short = v.retain_until.is_none_or(|u| {
                u < dict.lock_until
                    || match needed {
                        RetainUntil::Until(t) => u < t,
                        RetainUntil::Permanent => u <= self.now,
                    }
            });
            if short {
                findings.push((
                    RecordStatus::LockWeakened,
                    format!(
                        "locked until {}, but it must be kept until {} (the logged lock date \
                         and the records compressed with it)",
                        v.retain_until
                            .map_or_else(|| "never".to_owned(), |t| t.to_string()),
                        needed
                    ),
                ));
            }
        }
        if let Some(marker) = versions.iter().find(|v| v.delete_marker) {
            findings.push((
                RecordStatus::Hidden,
                format!(
                    "delete marker {} hides the logged dictionary from plain reads",
                    marker.version_id
                ),
            ));
        }
        verdict(&key, RecordStatus::PresentOk, findings)
    }

    /// Whether the record can be exported and proven: its sidecar agrees with its ingest
    /// entry, its salt opens the logged commitment, its id recomputes.
    fn judge_provable(
        &self,
        table: &RecordTable,
        i: usize,
        opened: &Opened,
        findings: &mut Vec<(RecordStatus, String)>,
    ) {
        let state = &table.states[i];
        let mut say = |f: String| findings.push((RecordStatus::Unprovable, f));
        let sidecar = match &opened.sidecar {
            Ok(s) => s,
            Err(e) => {
                say(format!("its sidecar cannot be read: {e}"));
                return;
            }
        };
        if sidecar.series != table.series(i) {
            say(format!(
                "its sidecar names series {:?}, the log {:?}",
                sidecar.series,
                table.series(i)
            ));
        }
        let ingest_retain_until = state.ingest_retain_until();
        if sidecar.retain_until != ingest_retain_until {
            say(format!(
                "its sidecar says retain-until {}, the ingest entry {ingest_retain_until}",
                sidecar.retain_until
            ));
        }
        if sidecar.commitment != state.commitment {
            say(format!(
                "its sidecar's commitment {} is not the logged commitment {}",
                sidecar.commitment, state.commitment
            ));
        }
        if sidecar
            .stored_sha256
            .is_some_and(|h| h != state.stored_sha256)
        {
            say("its sidecar's stored-sha256 is not the logged stored-sha256".to_owned());
        }
        if sidecar.stored_size.is_some_and(|n| n != state.stored_size) {
            say(format!(
                "its sidecar's stored-size is not the logged stored-size {}",
                state.stored_size
            ));
        }
        match &opened.original_sha256 {
            Ok(digest) => {
                if commitment_from_digest(&sidecar.salt, digest) != state.commitment {
                    say(
                        "its salt and message do not open the logged commitment: the record \
                         cannot be proven"
                            .to_owned(),
                    );
                }
            }
            Err(e) => say(format!("its stored bytes do not decompress: {e}")),
        }
        let id = table.get(state.id);
        match &self.origin {
            Some(origin) => {
                let recomputed = record_id(origin, &sidecar.identity);
                if recomputed.as_str() != id {
                    say(format!(
                        "its identity gives record id {recomputed} under origin {origin}, not {id}"
                    ));
                }
            }
            None => say("the log's origin is unknown: its record id cannot be recomputed".into()),
        }
    }

    /// The stored version's lock against what the log says it must be.
    fn judge_lock(
        &self,
        state: &RecordState,
        v: &StoredVersion,
        findings: &mut Vec<(RecordStatus, String)>,
    ) {
        let stored_strength = v.lock_mode.map_or(0, LockMode::strength);
        if stored_strength < state.lock_mode.strength() {
            findings.push((
                RecordStatus::LockWeakened,
                format!(
                    "stored under lock mode {}, logged {}",
                    v.lock_mode.map_or("none", LockMode::as_str),
                    state.lock_mode.as_str()
                ),
            ));
        }
        if state.lock_mode != LockMode::None
            && let RetainUntil::Until(logged_until) = state.retain_until
            && v.retain_until.is_none_or(|t| t < logged_until)
        {
            findings.push((
                RecordStatus::LockWeakened,
                format!(
                    "locked until {}, the log says {logged_until}",
                    v.retain_until
                        .map_or_else(|| "never".to_owned(), |t| t.to_string())
                ),
            ));
        }
        if state.lock_mode != LockMode::None
            && state.retain_until == RetainUntil::Permanent
            && v.retain_until.is_none_or(|t| t <= self.now)
        {
            findings.push((
                RecordStatus::LockWeakened,
                format!(
                    "a permanent record whose lock {}",
                    v.retain_until.map_or_else(
                        || "is gone".to_owned(),
                        |t| format!("ended at {t}: it can be deleted")
                    )
                ),
            ));
        }
        if let Some(holds) = state.holds()
            && !v.legal_hold
            && state.lock_mode != LockMode::None
        {
            findings.push((
                RecordStatus::LockWeakened,
                format!(
                    "under legal hold {} but the store's legal-hold flag is off",
                    holds.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
}

/// Per logged dictionary, the longest retention in force among the records that name it and
/// are not destroyed (`None`: no such record).
fn dictionary_horizons(table: &RecordTable) -> Vec<Option<RetainUntil>> {
    let mut out = vec![None; table.dictionaries.len()];
    for state in &table.states {
        let Some(d) = state.dictionary else { continue };
        if state.tombstone().is_some() {
            continue;
        }
        let slot: &mut Option<RetainUntil> = &mut out[d as usize];
        *slot = Some(match *slot {
            Some(r) if crate::lifecycle::table::extends(state.retain_until, r) => r,
            _ => state.retain_until,
        });
    }
    out
}

fn verdict(id: &str, ok: RecordStatus, findings: Vec<(RecordStatus, String)>) -> RecordVerdict {
    let status = findings
        .iter()
        .map(|(s, _)| *s)
        .max_by_key(|s| s.severity())
        .unwrap_or(ok);
    RecordVerdict {
        record: id.to_owned(),
        status,
        findings: findings
            .into_iter()
            .map(|(s, f)| format!("{s}: {f}"))
            .collect(),
    }
}

/// The objects of one bundle index: its full object and its partials, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleKeys {
    /// Key of the full bundle, if stored.
    pub full: Option<String>,
    /// `(width, key)` of each partial bundle.
    pub partials: Vec<(u64, String)>,
}

/// What to read from a log area, sorted out from a listing of its keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogListing {
    /// Bundle objects by bundle index (feed them in this order).
    pub bundles: BTreeMap<u64, BundleKeys>,
    /// Checkpoint keys.
    pub checkpoints: Vec<String>,
    /// Destruction certificate keys.
    pub certificates: Vec<String>,
    /// Keys under the log or checkpoint prefixes that name nothing we write.
    pub unknown: Vec<String>,
}

impl LogListing {
    /// Sorts keys (relative to the archive root) into bundles, checkpoints, certificates and
    /// unknown objects; keys outside `log/`, `checkpoints/` and `certificates/` are ignored.
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut listing = Self::default();
        for key in keys {
            if let Some((index, width)) = parse_bundle_key(key) {
                let group = listing.bundles.entry(index).or_default();
                if width == BUNDLE_WIDTH {
                    group.full = Some(key.to_owned());
                } else {
                    group.partials.push((width, key.to_owned()));
                }
            } else if parse_checkpoint_key(key).is_some() {
                listing.checkpoints.push(key.to_owned());
            } else if parse_certificate_key(key).is_some() {
                listing.certificates.push(key.to_owned());
            } else if key.starts_with(LOG_PREFIX)
                || key.starts_with(CHECKPOINTS_PREFIX)
                || key.starts_with(CERTIFICATES_PREFIX)
            {
                listing.unknown.push(key.to_owned());
            }
        }
        for group in listing.bundles.values_mut() {
            group.partials.sort();
        }
        listing.checkpoints.sort();
        listing.certificates.sort();
        listing.unknown.sort();
        listing
    }
}

/// Verifies a log whose objects are all in memory (tests, small archives, the local directory
/// store). `objects` maps keys relative to the archive root to bytes.
pub fn verify_objects(
    trust: Trust,
    objects: &BTreeMap<String, Vec<u8>>,
    inventory: &Inventory,
) -> Report {
    verify_objects_with(trust, objects, inventory, &mut |_| {})
}

/// [`verify_objects`], handing every record's verdict to `sink`.
pub fn verify_objects_with(
    trust: Trust,
    objects: &BTreeMap<String, Vec<u8>>,
    inventory: &Inventory,
    sink: &mut dyn FnMut(&RecordVerdict),
) -> Report {
    let listing = LogListing::from_keys(objects.keys().map(String::as_str));
    let get = |k: &str| objects.get(k).map_or(&[][..], Vec::as_slice);
    let mut v = Verifier::new(trust);
    for key in &listing.unknown {
        v.add_unknown_log_object(key);
    }
    for key in &listing.checkpoints {
        v.add_checkpoint(key, get(key));
    }
    for key in &listing.certificates {
        v.add_certificate(key, get(key));
    }
    for (index, keys) in &listing.bundles {
        let partials: Vec<(u64, &[u8])> = keys.partials.iter().map(|(w, k)| (*w, get(k))).collect();
        v.add_bundle(*index, keys.full.as_deref().map(get), &partials);
    }
    v.finish_streaming(
        inventory.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        sink,
    )
}

#[cfg(test)]
mod tests;
