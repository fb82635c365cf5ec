//! The record writer: `source message -> record -> store -> log -> checkpoint`.
//!
//! For each message: a record id from the message's stable identity, a random salt and the
//! salted commitment, zstd, a locked PUT, and only then an `ingest` entry. After every batch the
//! new log bundles are written and then a signed checkpoint that covers them.
//!
//! Everything needed to resume lives in the store: the log says what was archived, and a record
//! that was PUT but not logged (a crash between the two) is adopted from its sidecar on the next
//! run instead of being stored again.
//!
//! The writer signs only what it can authenticate as its own ([`trust`]): log entries after the
//! newest checkpoint must sit in bundles carrying its MAC (else it refuses to run), a record is
//! adopted only if its sidecar's MAC is valid and its bytes are the ones the sidecar names, and a
//! run marker or cursor without a valid MAC counts as absent. What fails is reported
//! ([`RunSummary::unauthenticated`]), never signed.

mod in_flight;
mod resume;
pub mod trust;

use crate::reader::StoredLog;
use crate::reader::log::MAX_VERSIONS_TRIED;
use crate::sidecar::Sidecar;
use crate::spool::{Body, Spool};
use crate::store::{RecordPut, Store, StoreInfo};
use crate::{Error, Result};
use futures::StreamExt as _;
use mailvault_core::bundle::MAX_BUNDLE_LEN;
use mailvault_core::checkpoint::CheckpointSigner;
use mailvault_core::entry::{EntryBody, LockMode, RecordId, RetainUntil};
use mailvault_core::layout::{
    CHECKPOINTS_PREFIX, DICTIONARIES_PREFIX, RECORDS_PREFIX, RUN_MARKER_KEY, checkpoint_key,
    dictionary_key, index_key, parse_checkpoint_key, parse_dictionary_key, record_id_of,
    record_key,
};
use mailvault_core::log::RecordLog;
use mailvault_core::mac::{MacKey, MacKind};
use mailvault_core::note::{MAX_NOTE_LEN, NoteSigner};
use mailvault_core::record::{SALT_LEN, commitment_from_digest};
use mailvault_core::records_request::{HeaderIndex, MAX_INDEX_LEN, no_index_sha256};
use mailvault_core::retention::Period;
use mailvault_core::rules::RetentionSchedule;
use mailvault_core::{Hash, UnixTime};
use std::sync::Arc;

use crate::dictionary::{Dictionary, SMALL_MESSAGE_MAX, Sampler, Yield};
use crate::source::SourceMessage;

/// Sidecar field: hex SHA-256 of the dictionary the record was compressed with (also in its
/// ingest entry; kept here, under the writer's MAC, so an unlogged record can be adopted).
pub const DICTIONARY_FIELD: &str = "mailvault-dictionary";
/// Sidecar field: hex SHA-256 of the record's header index object (also in its ingest entry;
/// kept here, under the writer's MAC, so an adopted record's entry commits to it too).
pub const HEADER_INDEX_FIELD: &str = "mailvault-header-index";

/// A record's header index object (`index/<id>`) with a fresh random salt, and its SHA-256:
/// what the ingest entry commits to, so a search can tell an index edited in the bucket. An
/// index larger than a search reads is not written at all, and the entry commits to having
/// none ([`no_index_sha256`]): otherwise any such message would be reported as edited.
fn salted_header_index(
    facts: &mailvault_core::rules::MessageFacts,
    now: UnixTime,
) -> Result<(Option<Vec<u8>>, Hash)> {
    let mut salt = [0u8; mailvault_core::records_request::INDEX_SALT_LEN];
    getrandom::fill(&mut salt).map_err(Error::Random)?;
    let bytes = HeaderIndex::new(facts, now, &salt).encode();
    if bytes.len() > MAX_INDEX_LEN {
        return Ok((None, no_index_sha256()));
    }
    let sha256 = Hash::of(&bytes);
    Ok((Some(bytes), sha256))
}

/// The sidecar fields naming what a record's ingest entry commits to beside its bytes.
fn commitment_fields(
    dictionary: Option<Hash>,
    header_index: Hash,
) -> impl Iterator<Item = (String, String)> {
    dictionary
        .map(|d| (DICTIONARY_FIELD.to_owned(), d.to_hex()))
        .into_iter()
        .chain([(HEADER_INDEX_FIELD.to_owned(), header_index.to_hex())])
}

/// zstd level: 3 is zstd's default, a good speed/ratio balance for mail.
const ZSTD_LEVEL: i32 = 3;
/// The run marker (`state/run.json`): whether a run may have stored records it has not logged
/// yet. Written `in_progress: true` when a writer opens, `false` when it finishes; a marker
/// that is missing or unreadable counts as a run that did not finish.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunMarker {
    /// A run started and has not finished.
    pub in_progress: bool,
    /// Which run wrote it (random hex, the same in its "in progress" and "finished" markers):
    /// tells one run's marker from the next, which hold the same flag.
    #[serde(default)]
    pub run: String,
}

/// A run marker as found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FoundMarker {
    /// None there.
    Missing,
    /// One the writer wrote (its MAC is valid).
    Authentic(RunMarker),
    /// One without a valid MAC, or unreadable: not the writer's.
    Unauthenticated,
}

impl RunMarker {
    async fn read<S: Store>(store: &S, mac: &MacKey) -> Result<FoundMarker> {
        let Some(object) =
            crate::store::get_state(store, RUN_MARKER_KEY, crate::store::MAX_SMALL_STATE_LEN)
                .await?
        else {
            return Ok(FoundMarker::Missing);
        };
        if !trust::authentic(mac, MacKind::State, RUN_MARKER_KEY, &object) {
            return Ok(FoundMarker::Unauthenticated);
        }
        Ok(serde_json::from_slice(&object.bytes)
            .map_or(FoundMarker::Unauthenticated, FoundMarker::Authentic))
    }

    async fn write<S: Store>(self, store: &S, mac: &MacKey) -> Result<()> {
        let bytes = serde_json::to_vec(&self).map_err(|e| Error::encoding(RUN_MARKER_KEY, e))?;
        let metadata = trust::tagged(mac, MacKind::State, RUN_MARKER_KEY, &bytes);
        store.put_mutable(RUN_MARKER_KEY, bytes, &metadata).await
    }
}

/// Records between checkpoints.
pub const CHECKPOINT_EVERY: usize = 500;
/// Object Lock needs a date; a permanent record is locked this many years ahead (and extended
/// by later runs before it lapses).
const PERMANENT_LOCK_YEARS: u32 = 100;
/// Log bundles and checkpoints are locked (COMPLIANCE, on S3) until this far ahead of their
/// writing: the same horizon as a permanent record's lock. Renewing these locks (needed only
/// once a record's lock is extended past them, about a century out) is not implemented.
/// Destruction certificates are locked the same way.
pub fn log_lock_until(now: UnixTime) -> UnixTime {
    lock_until(RetainUntil::Permanent, now, None)
}

/// S3 refuses a lock date in the past. A record whose retention ends before this many seconds
/// from now by the server's clock (an old message under a `MessageDate` rule) is logged with
/// its true retain-until but locked until then: enough for the PUT to reach the server (the
/// `Date` header the skew was measured from has one-second resolution). Any later retain-until
/// is the lock date itself, so a record kept `PT5S` is destroyable 5 seconds later, when the
/// log says so. The lead counts from when the record's PUT starts, not from when its message was
/// taken (it may wait seconds behind stores in flight). A PUT retried after this lead has
/// passed is refused by the server and the run fails; the next run stores the record again
/// with a new lead.
const MIN_LOCK_AHEAD_SECS: i64 = 2;

/// `now` (when the message was taken, at `taken`) moved on by the time since, rounded up: the
/// lock date is set as of the PUT, since a record waits in the pipeline (behind stores in
/// flight, compression, a slow server) for longer than the lead a record whose retention has
/// ended, or ends within seconds, is locked with.
fn as_of(now: UnixTime, taken: std::time::Instant) -> UnixTime {
    let waited = i64::try_from(taken.elapsed().as_secs()).unwrap_or(i64::MAX);
    UnixTime(now.0.saturating_add(waited).saturating_add(1))
}

/// The Object Lock date of a record kept until `retain_until`, archived (or extended) at `now` (this
/// machine's clock), with the server's clock `server_ahead_secs` ahead of it (the preflight's
/// measure; unknown counts as the largest skew a store accepts).
pub fn lock_until(
    retain_until: RetainUntil,
    now: UnixTime,
    server_ahead_secs: Option<i64>,
) -> UnixTime {
    let until = match retain_until {
        RetainUntil::Until(t) => t,
        RetainUntil::Permanent => match (Period::Span {
            years: PERMANENT_LOCK_YEARS,
            months: 0,
            days: 0,
            seconds: 0,
        })
        .retain_until(now)
        {
            RetainUntil::Until(t) => t,
            RetainUntil::Permanent => now,
        },
    };
    let ahead = server_ahead_secs
        .unwrap_or(crate::store::s3::MAX_CLOCK_SKEW_SECS)
        .max(0);
    until.max(UnixTime(now.0 + ahead + MIN_LOCK_AHEAD_SECS))
}

/// The outcome of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Being stored; it is logged once its PUT succeeds (at the latest by the next checkpoint).
    Stored,
    /// Already in the archive (logged by an earlier run, or earlier in this one).
    AlreadyArchived(RecordId),
}

/// Message bytes held in memory by the stores in flight, so a run of large messages stays
/// within bounded memory (a spooled message counts only its buffers, see [`Body::memory_cost`]).
const MAX_IN_FLIGHT_BYTES: u64 = 64 * 1024 * 1024;

/// A record whose PUT succeeded, waiting to be logged.
struct Stored {
    id: RecordId,
    logged_at: UnixTime,
    original_size: u64,
    memory_cost: u64,
    spool_cost: u64,
    /// How long its store took (the requests only, not the compression).
    store_latency: std::time::Duration,
    body: EntryBody,
    /// Its headers could not be parsed (it took the default rule).
    unparseable: bool,
}

/// Work of the writer's running as its own task: a record's compression and PUT (so that
/// stores proceed on every worker thread while the caller reads the source), or a checkpoint
/// being written. Aborted when dropped, so an abandoned run stops writing (what it stored
/// unlogged is adopted by the next run).
struct WriterTask<T> {
    what: &'static str,
    handle: tokio::task::JoinHandle<Result<T>>,
}

impl<T: Send + 'static> WriterTask<T> {
    fn spawn(
        what: &'static str,
        work: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Self {
        Self {
            what,
            handle: tokio::spawn(work),
        }
    }
}

impl<T> Future for WriterTask<T> {
    type Output = Result<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let what = self.what;
        std::pin::Pin::new(&mut self.handle)
            .poll(cx)
            .map(|joined| joined.map_err(|e| Error::task(what, e))?)
    }
}

impl<T> Drop for WriterTask<T> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// A checkpoint signed by this run: its head and its note.
struct SignedCheckpoint {
    head: mailvault_core::checkpoint::SignedHead,
    note: String,
}

/// A signed checkpoint and the log bundles it covers, to be written in this order.
struct CheckpointWrite {
    bundles: Vec<mailvault_core::log::BundleObject>,
    /// What was signed; `None` when nothing new was (only bundles to write).
    signed: Option<SignedCheckpoint>,
    lock_until: UnixTime,
}

impl CheckpointWrite {
    /// Writes the bundles one after the other, then the checkpoint: whatever a crash leaves
    /// is a prefix of the log, which the next run reads back and signs.
    async fn run<S: Store>(self, store: S, mac: MacKey) -> Result<Option<SignedCheckpoint>> {
        // Every record (and deletion) the bundles name was written before they were: durable
        // first, so that no power loss leaves the log naming what the store lost.
        if !self.bundles.is_empty() {
            store.make_durable().await?;
        }
        for bundle in self.bundles {
            let metadata = trust::tagged(&mac, MacKind::Bundle, &bundle.key, &bundle.bytes);
            // Kept to compare with what readers will read (a bundle is at most a few MiB).
            let ours = bundle.bytes.clone();
            store
                .put_immutable(&bundle.key, bundle.bytes, &metadata, self.lock_until)
                .await?;
            let follows = |other: &[u8]| mailvault_core::log::follows_as(other, &ours);
            // The writer's next run, and readers once a checkpoint names the key, try 16.
            let budget = MAX_VERSIONS_TRIED;
            readers_read_ours(&store, &bundle.key, &ours, MAX_BUNDLE_LEN, budget, follows).await?;
        }
        if let Some(signed) = &self.signed {
            // The bundles it signs (these, or an earlier run's) are durable before it is.
            store.make_durable().await?;
            // A checkpoint needs no MAC: it is signed.
            let key = checkpoint_key(signed.head.size);
            let ours = signed.note.clone().into_bytes();
            store
                .put_immutable(
                    &key,
                    ours.clone(),
                    &crate::store::ObjectMetadata::new(),
                    self.lock_until,
                )
                .await?;
            // Only the archive's key signs a checkpoint, so no planted version is read in its
            // place; but enough of them before it would keep readers from reaching it.
            let (max_len, budget) = (MAX_NOTE_LEN as u64, MAX_VERSIONS_TRIED);
            readers_read_ours(&store, &key, &ours, max_len, budget, |_| false).await?;
            store.make_durable().await?;
        }
        Ok(self.signed)
    }
}

/// Checks that readers of the log read `ours`, just written under `key`. Readers try the
/// key's first `budget` versions, oldest first, and take the first they accept (`accepted`:
/// for a bundle, one that follows the log as ours does; [`crate::reader::log`]): the first
/// [`MAX_VERSIONS_TRIED`] of a checkpoint key, and of a bundle key once a checkpoint names it
/// (before that, readers other than the writer try only its first version,
/// [`crate::reader::log::TAIL_VERSIONS_TRIED`]: a version planted beneath ours hides the
/// unsigned tail from them, which is no evidence, until the checkpoint; the writer's next run
/// tries 16).
/// A store that lets a conditional PUT through over a delete marker (AWS S3 does) lets someone
/// plant versions before mailvault writes the key: one that is accepted would be read instead
/// of ours, and enough of any kind put ours out of readers' reach; either is refused
/// ([`planted_under`]). One LIST, and a GET (of at most `max_len` bytes) of each version up to
/// ours. Whatever keeps it from saying (a version before ours it cannot read, other than one
/// too large to be a log object, which readers skip too; its own version missing from the
/// listing) is an error too: the run stops rather than sign over what it could not check.
async fn readers_read_ours<S: Store>(
    store: &S,
    key: &str,
    ours: &[u8],
    max_len: u64,
    budget: usize,
    accepted: impl Fn(&[u8]) -> bool,
) -> Result<()> {
    let versions = store.versions_of(key).await?;
    let data = versions.iter().filter(|(_, _, marker)| !marker);
    for (nth, (_, version, _)) in data.enumerate() {
        if nth >= budget {
            return Err(planted_under(&format!(
                "{key} holds more versions written before the one this writer wrote than \
                 readers try ({budget}), so readers would never read this writer's"
            )));
        }
        let object = match store.get(key, Some(version), max_len).await {
            Ok(Some(object)) => object,
            Ok(None) | Err(Error::TooLarge { .. }) => continue,
            Err(e) => {
                return Err(Error::store(format!(
                    "checking which version of {key} readers read: version {version}: {e}; \
                     nothing more is signed in this run"
                )));
            }
        };
        if object.bytes == ours {
            return Ok(());
        }
        if accepted(&object.bytes) {
            return Err(planted_under(&format!(
                "{key} holds a version older than the one this writer wrote, which readers \
                 would read instead"
            )));
        }
    }
    Err(Error::store(format!(
        "the store's listing of {key} does not show the version just written, so which one \
         readers read cannot be checked; nothing more is signed in this run (run again)"
    )))
}

/// The refusal to sign over (or after) a log object under which someone planted versions:
/// `what` they do.
fn planted_under(what: &str) -> Error {
    Error::Conflict(format!(
        "{what}: someone with write access to the bucket put them there (an S3 server lets a \
         conditional PUT through over a delete marker). Nothing was signed over it, and this \
         archive's log cannot go on past it; rotate the bucket's write credentials and see \
         docs/faults.md"
    ))
}

/// Idle zstd contexts, each kept under the hash of the dictionary it is loaded with (or none).
type ContextPool = Vec<(Option<Hash>, zstd::bulk::Compressor<'static>)>;

/// Compression work for the pipeline's blocking threads, at most one job per core at once.
///
/// Contexts are pooled, not per thread: tokio may run blocking work on many threads, and a
/// level-3 context holds several MiB of tables and window, so one per thread cost 100+ MiB on
/// a 32-in-flight run for no speed (two cores compress two messages at a time either way).
#[derive(Clone)]
struct Compression {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// Idle contexts, each loaded with the dictionary whose hash it is kept under (or none).
    contexts: std::sync::Arc<std::sync::Mutex<ContextPool>>,
}

impl Compression {
    fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(cores)),
            contexts: std::sync::Arc::default(),
        }
    }

    /// Compresses a message body on a blocking thread once a core is free: in memory with a
    /// pooled context, or file to file in blocks; a short one in place
    /// ([`Body::inline_bytes`]). Returns the stored body and its SHA-256.
    async fn run(
        &self,
        spool: Spool,
        body: Body,
        content_sha256: Hash,
        dictionary: Option<Dictionary>,
    ) -> Result<(Body, Hash)> {
        if let Some(bytes) = body.inline_bytes() {
            let stored = self.compress(bytes, dictionary.as_ref())?;
            let sha256 = Hash::of(&stored);
            return Ok((Body::Memory(stored), sha256));
        }
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| Error::store(format!("compression: {e}")))?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || match &body {
            Body::Memory(bytes) => {
                let stored = this.compress(bytes, dictionary.as_ref())?;
                let sha256 = Hash::of(&stored);
                Ok((Body::Memory(stored), sha256))
            }
            Body::File(file) => {
                crate::spool::compress_file(&spool, file, &content_sha256, ZSTD_LEVEL)
            }
        })
        .await
        .map_err(|e| Error::task("compression task", e))?
    }

    fn compress(&self, bytes: &[u8], dictionary: Option<&Dictionary>) -> Result<Vec<u8>> {
        let zstd_error = |e: std::io::Error| Error::store(format!("zstd: {e}"));
        let wanted = dictionary.map(|d| d.sha256);
        let pooled = {
            let mut pool = self
                .contexts
                .lock()
                .map_err(|_| Error::store("zstd: context pool poisoned"))?;
            // Contexts of a dictionary no longer in use are dropped as they are met.
            pool.retain(|(d, _)| d.is_none() || *d == wanted);
            let at = pool.iter().rposition(|(d, _)| *d == wanted);
            at.map(|i| pool.swap_remove(i).1)
        };
        let mut context = match pooled {
            Some(c) => c,
            None => crate::dictionary::compressor(dictionary).map_err(zstd_error)?,
        };
        let stored = context.compress(bytes).map_err(zstd_error)?;
        if let Ok(mut pool) = self.contexts.lock() {
            pool.push((wanted, context));
        }
        Ok(stored)
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Records stored and logged.
    pub archived: u64,
    /// Messages already archived.
    pub skipped: u64,
    /// Records found stored but unlogged (an interrupted run) and logged now.
    pub adopted: u64,
    /// Original bytes of the archived messages.
    pub original_bytes: u64,
    /// Stored (compressed) bytes.
    pub stored_bytes: u64,
    /// Archived messages whose headers could not be parsed: stored byte for byte under the
    /// policy's default rule.
    pub unparseable: u64,
    /// Objects found in the store that look like the writer's but do not carry its MAC (a
    /// record with a forged or missing sidecar MAC, an edited run marker or cursor): neither
    /// adopted nor trusted. At most [`trust::REPORTED_KEYS`] keys; the count is in
    /// [`Self::unauthenticated_total`].
    pub unauthenticated: Vec<String>,
    /// How many unauthenticated objects were found.
    pub unauthenticated_total: u64,
    /// The most record stores this run had in flight at once.
    pub stores_in_flight_peak: usize,
    /// The highest limit on stores in flight this run set (it follows the store's round trip:
    /// `writer/in_flight.rs`).
    pub stores_in_flight_limit: usize,
    /// The fastest record store of the run, first request to last answer: about two round
    /// trips to the store. `None` if nothing was stored.
    pub fastest_store: Option<std::time::Duration>,
}

impl RunSummary {
    /// Notes an unauthenticated object.
    pub fn report_unauthenticated(&mut self, key: &str) {
        tracing::warn!(
            key,
            "unauthenticated object in the archive: not written by this archive's key; not trusted, run `mailvault verify`"
        );
        self.unauthenticated_total += 1;
        if self.unauthenticated.len() < trust::REPORTED_KEYS {
            self.unauthenticated.push(key.to_owned());
        }
    }

    /// A one-line warning naming the unauthenticated objects, if any were found.
    pub fn unauthenticated_warning(&self) -> Option<String> {
        (self.unauthenticated_total > 0).then(|| {
            let more = self.unauthenticated_total - self.unauthenticated.len() as u64;
            format!(
                "unauthenticated object{} in the archive (not written under this archive's key; not adopted, not signed): {}{}; run `mailvault verify`",
                if self.unauthenticated_total == 1 { "" } else { "s" },
                self.unauthenticated.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() },
            )
        })
    }
}

/// The signed head of an archive's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogHead {
    /// Records ingested (over every run).
    pub records: u64,
    /// Entries covered by the latest checkpoint.
    pub size: u64,
    /// Merkle root of the latest checkpoint, hex.
    pub root_hash: Option<String>,
    /// The latest signed checkpoint note, if this process signed or read one.
    pub checkpoint: Option<String>,
}

pub use mailvault_core::record::record_id;

/// Writes records and the log for one archive.
pub struct RecordWriter<'s, S: Store> {
    store: &'s S,
    info: StoreInfo,
    log: StoredLog,
    signer: CheckpointSigner,
    mac: MacKey,
    known: resume::KnownIds,
    /// This run's id in the run marker.
    run_id: String,
    retention: Arc<RetentionSchedule>,
    since_checkpoint: usize,
    summary: RunSummary,
    in_flight: futures::stream::FuturesOrdered<WriterTask<Stored>>,
    /// The periodic checkpoint being written while stores go on (see
    /// [`Self::checkpoint_behind`]).
    checkpoint_in_flight: Option<WriterTask<Option<SignedCheckpoint>>>,
    /// A log bundle or checkpoint of this run could not be written: the entries it held are
    /// gone from memory, so nothing more is signed (a later checkpoint would cover entries the
    /// store does not hold). The run fails; the next one adopts its unlogged records.
    log_write_failed: bool,
    in_flight_bytes: u64,
    /// How many stores may be in flight, from how fast the store answers.
    in_flight_limit: in_flight::InFlightLimit,
    /// Spool space the stores in flight take ([`Body::spool_cost`]).
    in_flight_spool: u64,
    spool: Spool,
    compression: Compression,
    /// A store task failed: its PUT may still have reached the store (an answer lost after the
    /// server acted). The run is then never marked finished, so the next run looks for the
    /// record and adopts it instead of finding its key taken.
    store_in_doubt: bool,
    /// The dictionary small mail is compressed with, once the archive has one.
    dictionary: Option<Dictionary>,
    /// Small mail kept to train a dictionary from, while one is wanted (none yet, or the
    /// current one stopped paying); `None` when not sampling.
    sampler: Option<Sampler>,
    /// How the current dictionary does on this run's small mail.
    dictionary_yield: Yield,
}

impl<'s, S: Store> RecordWriter<'s, S> {
    /// Opens an archive: preflight, read the log back, restore the signer from the newest
    /// checkpoint, and adopt records left unlogged by an interrupted run.
    pub async fn open(
        store: &'s S,
        origin: &str,
        key: NoteSigner,
        retention: RetentionSchedule,
        now: UnixTime,
    ) -> Result<Self> {
        let info = store.preflight().await?;
        let verifier = mailvault_core::note::NoteVerifier::parse(&key.verifier_key())?;
        let mac = key.mac_key();
        let mut summary = RunSummary::default();
        let resume::Opened {
            mut log,
            known,
            bundles_read,
            ..
        } = resume::open_log(store, origin, &verifier, &mac, &mut |key| {
            summary.report_unauthenticated(key);
        })
        .await?;
        Self::newest_from_versions(store, &mut log, &verifier, &mut summary).await?;
        Self::check_unsigned_tail(store, &log, &bundles_read, &mac).await?;
        let signer = CheckpointSigner::new(origin, key, log.head);
        let dictionary = crate::dictionary::load_current(store, &mac, origin, &mut |key| {
            summary.report_unauthenticated(key);
        })
        .await?;
        let sampler = dictionary.is_none().then(Sampler::default);
        let mut writer = Self {
            store,
            info,
            mac,
            known,
            run_id: String::new(),
            log,
            signer,
            retention: Arc::new(retention),
            since_checkpoint: 0,
            summary,
            in_flight: futures::stream::FuturesOrdered::new(),
            checkpoint_in_flight: None,
            log_write_failed: false,
            in_flight_bytes: 0,
            in_flight_limit: in_flight::InFlightLimit::default(),
            in_flight_spool: 0,
            spool: Spool::default(),
            compression: Compression::new(),
            store_in_doubt: false,
            dictionary,
            sampler,
            dictionary_yield: Yield::default(),
        };
        // Records can be stored but unlogged only if the last run did not finish; looking for
        // them means listing every record, so it is done only then. A marker without the
        // writer's MAC says nothing: the records are looked for (and adopted only if they are
        // the writer's own).
        let finished = match RunMarker::read(store, &writer.mac).await? {
            FoundMarker::Authentic(marker) => !marker.in_progress,
            FoundMarker::Missing => false,
            FoundMarker::Unauthenticated => {
                writer.summary.report_unauthenticated(RUN_MARKER_KEY);
                false
            }
        };
        if !finished {
            writer.adopt_unlogged(now).await?;
        }
        writer.run_id = {
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).map_err(Error::Random)?;
            hex::encode(nonce)
        };
        RunMarker {
            in_progress: true,
            run: writer.run_id.clone(),
        }
        .write(store, &writer.mac)
        .await?;
        Ok(writer)
    }

    /// Finds the newest checkpoint from the versions of `checkpoints/`, not the current listing,
    /// so that a delete marker cannot rewind the signer: every data version at least as large
    /// as the listed head is opened with the key; the largest valid one is the head. Refuses
    /// two valid checkpoints of one size with different roots (a fork), and a head the stored
    /// log does not reach or does not match (log objects hidden). Versions that do not open
    /// are reported, never trusted (delete markers are reported when the log is opened).
    async fn newest_from_versions(
        store: &S,
        log: &mut StoredLog,
        verifier: &mailvault_core::note::NoteVerifier,
        summary: &mut RunSummary,
    ) -> Result<()> {
        use mailvault_core::checkpoint::{Checkpoint, SignedHead};
        let listed = log.head.map_or(0, |h| h.size);
        let mut candidates = Vec::new();
        // Versions of each key seen so far: like readers, the writer opens at most the first
        // MAX_VERSIONS_TRIED of a key (oldest first), so that it never goes by a checkpoint
        // readers do not reach (and cannot be made to open any number of planted ones).
        let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (key, version, delete_marker) in store.list_version_ids(CHECKPOINTS_PREFIX).await? {
            let Some(size) = parse_checkpoint_key(&key) else {
                continue;
            };
            // Delete markers were reported when the log was opened (and read beneath).
            if delete_marker || size < listed {
                continue;
            }
            let nth = seen.entry(key.clone()).or_default();
            *nth += 1;
            if *nth > MAX_VERSIONS_TRIED {
                summary.report_unauthenticated(&format!(
                    "{key} (version {version}: past the first {MAX_VERSIONS_TRIED} versions, \
                     which readers do not read)"
                ));
                continue;
            }
            candidates.push((size, key, version));
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let mut best: Option<(SignedHead, String)> = None;
        for (size, key, version) in candidates {
            if best.as_ref().is_some_and(|(h, _)| size < h.size) {
                break;
            }
            let object = match store
                .get(
                    &key,
                    Some(&version),
                    mailvault_core::note::MAX_NOTE_LEN as u64,
                )
                .await
            {
                Ok(Some(object)) => object,
                Ok(None) => continue,
                // One planted version the store will not give must not stop the writer.
                Err(e) if e.object_refused_for_good() => {
                    summary.report_unauthenticated(&format!("{key} (version {version}: {e})"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Ok(cp) = Checkpoint::open(
                &object.bytes,
                std::slice::from_ref(verifier),
                Some(log.origin()),
            ) else {
                summary.report_unauthenticated(&format!(
                    "{key} (version {version}: not signed by this archive's key)"
                ));
                continue;
            };
            if cp.size != size {
                summary.report_unauthenticated(&format!(
                    "{key} (version {version}: signs size {})",
                    cp.size
                ));
                continue;
            }
            match &best {
                Some((head, _)) if head.root != cp.root => {
                    return Err(Error::Conflict(format!(
                        "two checkpoints of size {size} with different roots are signed by this archive's key (a fork); nothing was signed; run `mailvault verify`"
                    )));
                }
                Some(_) => {}
                None => {
                    best = Some((
                        SignedHead {
                            size: cp.size,
                            root: cp.root,
                        },
                        String::from_utf8_lossy(&object.bytes).into_owned(),
                    ));
                }
            }
        }
        let Some((head, note)) = best else {
            return Ok(());
        };
        if head.size > listed {
            if log.records.root_at(head.size) != Some(head.root) {
                return Err(Error::Conflict(format!(
                    "checkpoint {} is hidden from the listing and the log in the store does not reach or match it (log objects hidden or replaced); nothing was signed; run `mailvault verify`",
                    head.size
                )));
            }
            log.head = Some(head);
            log.head_note = Some(note);
        }
        Ok(())
    }

    /// Refuses a log whose entries after the newest signed checkpoint (or all of them, if none
    /// is signed) are not the writer's own: every bundle object version holding such an entry,
    /// exactly the one the log was read from (`bundles_read`, not a second listing, which could
    /// differ), must carry the writer's bundle MAC (signing them would vouch for whoever wrote
    /// them) and be the version readers will read of its key ([`readers_read_ours`]).
    async fn check_unsigned_tail(
        store: &S,
        log: &StoredLog,
        bundles_read: &[resume::BundleRead],
        mac: &MacKey,
    ) -> Result<()> {
        let signed = log.head.map_or(0, |h| h.size);
        for read in bundles_read.iter().filter(|b| b.end > signed) {
            let object = store
                .get(
                    &read.key,
                    Some(&read.version),
                    mailvault_core::bundle::MAX_BUNDLE_LEN,
                )
                .await?;
            let Some(ours) =
                object.filter(|o| trust::authentic(mac, MacKind::Bundle, &read.key, o))
            else {
                return Err(Error::Conflict(format!(
                    "{} holds log entries after the newest signed checkpoint (size {signed}) that \
                     this writer did not write (no valid MAC); nothing was signed; run `mailvault verify`",
                    read.key
                )));
            };
            // Its own, but perhaps not what readers will read once a checkpoint names the key:
            // a version planted beneath it that follows as it does (even one that does not
            // extend what is signed) would be read in its place, fail that checkpoint's root
            // and stop every reader. The check after its PUT refused then; a later run that
            // resumes from the bundle must refuse too, before it signs.
            let bytes = ours.bytes;
            let follows = |other: &[u8]| mailvault_core::log::follows_as(other, &bytes);
            readers_read_ours(
                store,
                &read.key,
                &bytes,
                mailvault_core::bundle::MAX_BUNDLE_LEN,
                MAX_VERSIONS_TRIED,
                follows,
            )
            .await?;
        }
        Ok(())
    }

    /// Ends a run: waits for every store in flight, checkpoints, and marks the run finished,
    /// unless a store failed: a record it may have stored is then adopted by the next run.
    pub async fn finish(&mut self) -> Result<Option<u64>> {
        let signed = self.checkpoint().await?;
        // Everything is signed now: the next run starts from here.
        resume::save(self.store, &self.mac, &self.log.records, &mut self.known).await?;
        if self.store_in_doubt {
            return Ok(signed);
        }
        RunMarker {
            in_progress: false,
            run: self.run_id.clone(),
        }
        .write(self.store, &self.mac)
        .await?;
        Ok(signed)
    }

    /// The key that authenticates the writer's own objects (for the cursor).
    pub fn mac(&self) -> &MacKey {
        &self.mac
    }

    /// Notes an object found in the store that does not carry the writer's MAC.
    pub fn report_unauthenticated(&mut self, key: &str) {
        self.summary.report_unauthenticated(key);
    }

    /// Where large messages are compressed (file to file); the system's temporary directory
    /// unless set.
    #[must_use]
    pub fn with_spool(mut self, spool: Spool) -> Self {
        self.spool = spool;
        self
    }

    /// Where large messages go while they are fetched and compressed.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// What the store guarantees.
    pub fn store_info(&self) -> &StoreInfo {
        &self.info
    }

    /// The log as of the latest checkpoint: what a status or an auditor's note records.
    pub fn log_head(&self) -> LogHead {
        LogHead {
            records: self.known.count(),
            // The head in the store, not one signed and still being written.
            size: self.log.head.map_or(0, |h| h.size),
            root_hash: self.log.head.map(|h| h.root.to_hex()),
            checkpoint: self.log.head_note.clone(),
        }
    }

    /// Refuses a log read back from the store (to replay it) that is not the log this writer
    /// verified at open and appended to since: same size, same root. Objects added to the store
    /// while the run went on (a wider partial bundle, say) must never drive what the writer
    /// signs next — a forged `destroy-authorized` would otherwise make a run delete a record.
    pub fn check_same_log(&self, read_back: &RecordLog) -> Result<()> {
        let (size, root) = (self.log.records.size(), self.log.records.root());
        if read_back.size() != size || read_back.root() != root {
            return Err(Error::Conflict(format!(
                "the log read back from the store ({} entries) is not the one this run verified \
                 and wrote ({size} entries): log objects were added or replaced during the run; \
                 nothing was done on top of it; run `mailvault verify`",
                read_back.size()
            )));
        }
        Ok(())
    }

    /// Totals so far.
    pub fn summary(&self) -> &RunSummary {
        &self.summary
    }

    async fn adopt_unlogged(&mut self, now: UnixTime) -> Result<()> {
        // Which records are logged, exactly: a crash is rare, and listing every record costs
        // as much as reading every id.
        self.known.load_all(self.store).await?;
        // Dictionaries first: adopted records may name them.
        for key in self.store.list_keys(DICTIONARIES_PREFIX).await? {
            let Some(sha256) = parse_dictionary_key(&key) else {
                continue;
            };
            if self.known.dictionaries.contains(&sha256) {
                continue;
            }
            let object = match self
                .store
                .get(&key, None, crate::dictionary::MAX_DICTIONARY_LEN)
                .await
            {
                Ok(Some(object)) => object,
                Ok(None) => continue,
                Err(Error::TooLarge { .. }) => {
                    self.summary.report_unauthenticated(&key);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some((sha256, lock_until)) = crate::dictionary::authentic(&self.mac, &key, &object)
            else {
                self.summary.report_unauthenticated(&key);
                continue;
            };
            self.confirm_lock(&key, &object.version_id, lock_until)
                .await?;
            self.log.records.append(
                now,
                RecordId::from_hash(&sha256),
                EntryBody::Dictionary {
                    lock_mode: self.info.lock_mode,
                    lock_until,
                    object_key: key.clone(),
                    object_version: object.version_id,
                    stored_sha256: sha256,
                    stored_size: object.bytes.len() as u64,
                },
            )?;
            self.known.dictionaries.insert(sha256);
            self.since_checkpoint += 1;
        }
        for key in self.store.list_keys(RECORDS_PREFIX).await? {
            let Some(id) = record_id_of(&key) else {
                continue;
            };
            let Ok(id) = RecordId::new(id) else { continue };
            if self.known.contains(self.store, &id).await? {
                continue;
            }
            // Streamed and hashed, never held: a record can be as large as a message.
            let Some(object) = self
                .store
                .read_streaming(&key, None, &mut |_| Ok(()))
                .await?
            else {
                continue;
            };
            // Adopted only if the writer stored it: its sidecar's MAC is valid and its bytes
            // are the ones the sidecar names. Anything else is reported, never signed.
            if !trust::authentic_record(&self.mac, &key, &object) {
                self.summary.report_unauthenticated(&key);
                continue;
            }
            let Ok(fields) = Sidecar::from_map(&object.sidecar) else {
                self.summary.report_unauthenticated(&key);
                continue;
            };
            let lock = lock_until(fields.retain_until, now, self.info.server_clock_ahead_secs);
            self.confirm_lock(&key, &object.version_id, lock).await?;
            let entry = self.log.records.append(
                now,
                id.clone(),
                EntryBody::Ingest {
                    series: fields.series,
                    retain_until: fields.retain_until,
                    lock_mode: self.info.lock_mode,
                    object_key: key.clone(),
                    object_version: object.version_id,
                    stored_sha256: object.sha256,
                    stored_size: object.len,
                    original_commitment: fields.commitment,
                    // The sidecar (under the MAC) names the dictionary; it was signed into
                    // the log before any record was compressed with it.
                    dictionary: object
                        .sidecar
                        .get(DICTIONARY_FIELD)
                        .and_then(|h| Hash::from_hex(h).ok()),
                    header_index: object
                        .sidecar
                        .get(HEADER_INDEX_FIELD)
                        .and_then(|h| Hash::from_hex(h).ok()),
                },
            )?;
            self.known.logged(entry.index, &id);
            self.summary.adopted += 1;
            self.since_checkpoint += 1;
        }
        if self.since_checkpoint > 0 {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Before an unlogged object is adopted: its lock is placed (or extended) to `until` and
    /// confirmed, so a record stored without its lock (a failed run against an S3 server that
    /// ignored the lock headers) is logged only once it is locked.
    async fn confirm_lock(&self, key: &str, version: &str, until: UnixTime) -> Result<()> {
        if self.info.lock_mode == LockMode::None {
            return Ok(());
        }
        // Boxed: rare (only after a failed run), and it would enlarge every caller's future.
        Box::pin(self.store.extend_retention(key, version, until)).await?;
        Ok(())
    }

    /// Archives one message: it is compressed and stored concurrently with the next ones (a
    /// bounded number at a time), and logged once its PUT has succeeded. Call
    /// [`Self::checkpoint`] at the end, which waits for every store in flight.
    pub async fn write(&mut self, msg: SourceMessage, now: UnixTime) -> Result<Outcome> {
        let id = record_id(self.log.origin(), &msg.identity);
        if self.known.contains(self.store, &id).await? {
            self.summary.skipped += 1;
            return Ok(Outcome::AlreadyArchived(id));
        }
        // Marked at once, so the same message twice in one run is stored once.
        self.known.claim(id.clone());
        let dictionary = self.dictionary_for(&msg.body, now).await?;
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(Error::Random)?;
        let original_size = msg.body.len();
        let memory_cost = msg.body.memory_cost();
        let spool_cost = msg.body.spool_cost();
        self.wait_for_spool_room(spool_cost).await?;
        let schedule = self.retention.clone();
        let (store, spool) = (self.store.clone(), self.spool.clone());
        let compression = self.compression.clone();
        let mac = self.mac.clone();
        let server_ahead = self.info.server_clock_ahead_secs;
        let taken = std::time::Instant::now();
        let job = async move {
            let SourceMessage {
                folder,
                identity,
                body,
                content_sha256,
                internal_date,
                flags,
                location,
            } = msg;
            // The record's rule, series and retain-until, from its headers (a bounded prefix).
            let crate::lifecycle::Classified {
                classification,
                unparseable,
                facts,
            } = crate::lifecycle::classify_body(schedule, &body, &folder, internal_date, now)
                .await?;
            let retain_until = classification.retain_until;
            let series = classification.series.clone();
            let original_commitment = commitment_from_digest(&salt, &content_sha256);
            // Compression and the stored hash are CPU work (and file I/O for a spooled
            // message): off the async threads. The original body is dropped (a spool file
            // deleted) as soon as it is compressed.
            let dictionary_sha256 = dictionary.as_ref().map(|d| d.sha256);
            let (stored, stored_sha256) = compression
                .run(spool, body, content_sha256, dictionary)
                .await?;
            let mut sidecar = Sidecar {
                series: series.clone(),
                retain_until,
                commitment: original_commitment,
                salt,
                folder,
                identity,
                location,
                internal_date,
                flags,
                original_size,
            }
            .to_map();
            sidecar.extend(crate::lifecycle::sidecar_fields(&classification, now));
            let (index_bytes, index_sha256) = salted_header_index(&facts, now)?;
            sidecar.extend(commitment_fields(dictionary_sha256, index_sha256));
            let stored_size = stored.len();
            let object_key = record_key(id.as_str());
            trust::seal_sidecar(&mac, &object_key, &mut sidecar, &stored_sha256, stored_size);
            let lock_until = lock_until(retain_until, as_of(now, taken), server_ahead);
            let started = std::time::Instant::now();
            let object_version = store
                .put_record(RecordPut {
                    key: &object_key,
                    body: stored,
                    sha256: stored_sha256,
                    retain_until: lock_until,
                    sidecar: &sidecar,
                    companion: index_bytes.map(|b| (index_key(id.as_str()), b)),
                })
                .await?;
            Ok(Stored {
                id,
                logged_at: now,
                original_size,
                memory_cost,
                spool_cost,
                store_latency: started.elapsed(),
                body: EntryBody::Ingest {
                    series,
                    retain_until,
                    lock_mode: LockMode::None, // set from the store when logged
                    object_key,
                    object_version,
                    stored_sha256,
                    stored_size,
                    original_commitment,
                    dictionary: dictionary_sha256,
                    header_index: Some(index_sha256),
                },
                unparseable,
            })
        };
        self.submit(job, memory_cost, spool_cost).await
    }

    /// Waits for stores in flight until one costing `spool_cost` fits in the half of the
    /// spool's cap that stores may use; alone, it always goes (see `Spool::max_bytes`).
    async fn wait_for_spool_room(&mut self, spool_cost: u64) -> Result<()> {
        while !self.in_flight.is_empty()
            && self.in_flight_spool + spool_cost > self.spool.max_bytes() / 2
        {
            self.log_next_stored().await?;
        }
        Ok(())
    }

    /// Starts a record's store task, then keeps the stores in flight within their bounds and
    /// signs a checkpoint when one is due.
    async fn submit(
        &mut self,
        job: impl std::future::Future<Output = Result<Stored>> + Send + 'static,
        memory_cost: u64,
        spool_cost: u64,
    ) -> Result<Outcome> {
        self.in_flight_bytes += memory_cost;
        self.in_flight_spool += spool_cost;
        self.in_flight
            .push_back(WriterTask::spawn("store task", job));
        self.summary.stores_in_flight_peak =
            self.summary.stores_in_flight_peak.max(self.in_flight.len());
        while self.in_flight.len() >= self.in_flight_limit.limit()
            || self.in_flight_bytes > MAX_IN_FLIGHT_BYTES
        {
            self.log_next_stored().await?;
        }
        if self.since_checkpoint >= CHECKPOINT_EVERY {
            self.checkpoint_behind().await?;
        }
        Ok(Outcome::Stored)
    }

    /// The dictionary a message is compressed with: the current one for small mail, none for
    /// the rest. A small message is sampled first while a dictionary is wanted, and the sample
    /// that completes it trains one.
    async fn dictionary_for(&mut self, body: &Body, now: UnixTime) -> Result<Option<Dictionary>> {
        let Body::Memory(bytes) = body else {
            return Ok(None);
        };
        if bytes.len() > SMALL_MESSAGE_MAX {
            return Ok(None);
        }
        if let Some(sampler) = &mut self.sampler
            && sampler.add(bytes)
        {
            self.train_dictionary(now).await?;
        }
        Ok(self.dictionary.clone())
    }

    /// Trains a dictionary on the sampled small mail and, if it pays, stores it (COMPLIANCE,
    /// locked as long as the log), logs and signs its entry, and compresses small mail with it
    /// from the next message on. Records already in flight keep the dictionary they started
    /// with (their entries name it). One attempt per sample: a dictionary that does not pay is
    /// not retried in this run.
    async fn train_dictionary(&mut self, now: UnixTime) -> Result<()> {
        let samples = self
            .sampler
            .take()
            .map(|mut s| s.take())
            .unwrap_or_default();
        let trained = tokio::task::spawn_blocking(move || crate::dictionary::train(&samples))
            .await
            .map_err(|e| Error::task("dictionary training", e))?;
        let Some(dictionary) = trained else {
            tracing::info!(
                "a dictionary trained on this run's small mail would not pay; none used"
            );
            return Ok(());
        };
        let lock_until = log_lock_until(crate::unix_now());
        let object_version =
            crate::dictionary::put(self.store, &self.mac, &dictionary, lock_until).await?;
        self.append(
            RecordId::from_hash(&dictionary.sha256),
            EntryBody::Dictionary {
                lock_mode: self.info.lock_mode,
                lock_until,
                object_key: dictionary_key(&dictionary.sha256),
                object_version: object_version.clone(),
                stored_sha256: dictionary.sha256,
                stored_size: dictionary.bytes.len() as u64,
            },
            now,
        )
        .await?;
        self.known.dictionaries.insert(dictionary.sha256);
        // Signed before any record names it, so that a crash cannot leave a record naming a
        // dictionary the log does not hold.
        self.checkpoint().await?;
        crate::dictionary::save_current(
            self.store,
            &self.mac,
            self.log.origin(),
            &dictionary,
            &object_version,
        )
        .await?;
        tracing::info!(dictionary = %dictionary.sha256, sample_ratio = dictionary.sample_ratio, "trained a dictionary for small mail");
        self.dictionary = Some(dictionary);
        self.dictionary_yield = Yield::default();
        Ok(())
    }

    /// Logs an entry that is not an ingest (a hold, a retention extension, a destruction step)
    /// about a record already in the log, after every store in flight is logged. The caller
    /// does the S3 side first (the entry says what is already true) and calls
    /// [`Self::checkpoint`] when its batch is done; every [`CHECKPOINT_EVERY`] entries a
    /// checkpoint is signed anyway.
    pub async fn append(
        &mut self,
        record: RecordId,
        body: EntryBody,
        now: UnixTime,
    ) -> Result<mailvault_core::entry::Entry> {
        if matches!(body, EntryBody::Ingest { .. }) {
            return Err(Error::Usage(
                "an ingest is logged by RecordWriter::write, never appended directly".into(),
            ));
        }
        while !self.in_flight.is_empty() {
            self.log_next_stored().await?;
        }
        let entry = self.log.records.append(now, record, body)?;
        self.since_checkpoint += 1;
        if self.since_checkpoint >= CHECKPOINT_EVERY {
            self.checkpoint().await?;
        }
        Ok(entry)
    }

    /// Waits for the oldest store in flight and logs it (entries keep submission order).
    async fn log_next_stored(&mut self) -> Result<()> {
        let Some(done) = self.in_flight.next().await else {
            return Ok(());
        };
        let mut stored = done.inspect_err(|_| self.store_in_doubt = true)?;
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(stored.memory_cost);
        self.in_flight_spool = self.in_flight_spool.saturating_sub(stored.spool_cost);
        let limit_before = self.in_flight_limit.limit();
        self.in_flight_limit.observe(stored.store_latency);
        self.summary.stores_in_flight_limit = self
            .summary
            .stores_in_flight_limit
            .max(self.in_flight_limit.limit());
        self.summary.fastest_store = Some(
            self.summary
                .fastest_store
                .map_or(stored.store_latency, |f| f.min(stored.store_latency)),
        );
        if self.in_flight_limit.limit() != limit_before {
            tracing::debug!(
                limit = self.in_flight_limit.limit(),
                fastest_store_ms = self
                    .in_flight_limit
                    .fastest()
                    .map(|d| d.as_secs_f64() * 1e3),
                "stores in flight limit follows the store's round trip"
            );
        }
        if let EntryBody::Ingest {
            lock_mode,
            stored_size,
            dictionary,
            ..
        } = &mut stored.body
        {
            *lock_mode = self.info.lock_mode;
            self.summary.stored_bytes += *stored_size;
            if let Some(current) = &self.dictionary
                && *dictionary == Some(current.sha256)
            {
                self.dictionary_yield
                    .add(stored.original_size, *stored_size);
                if self.sampler.is_none() && self.dictionary_yield.stopped_paying(current) {
                    tracing::info!(dictionary = %current.sha256, "the dictionary stopped paying; sampling to train a new one");
                    self.sampler = Some(Sampler::default());
                }
            }
        }
        // Logged only now that the PUT succeeded.
        let entry = self
            .log
            .records
            .append(stored.logged_at, stored.id, stored.body)?;
        self.known.logged(entry.index, &entry.record);
        self.summary.archived += 1;
        self.summary.unparseable += u64::from(stored.unparseable);
        self.summary.original_bytes += stored.original_size;
        self.since_checkpoint += 1;
        Ok(())
    }

    /// Writes the new log bundles, then a signed checkpoint covering them, once every store in
    /// flight is logged. Returns the size signed, or `None` if nothing was new.
    pub async fn checkpoint(&mut self) -> Result<Option<u64>> {
        while !self.in_flight.is_empty() {
            self.log_next_stored().await?;
        }
        self.wait_for_checkpoint_in_flight().await?;
        let write = self.sign_logged()?;
        let written = write
            .run(self.store.clone(), self.mac.clone())
            .await
            .inspect_err(|_| self.log_write_failed = true)?;
        Ok(self.checkpoint_written(written))
    }

    /// The periodic checkpoint: signs the entries logged so far and writes them in a task of
    /// its own while the stores in flight go on and new ones start. With S3 a network away,
    /// draining the pipeline and writing bundles and checkpoint in line emptied it for several
    /// round trips every [`CHECKPOINT_EVERY`] records. One at a time, so they land in order.
    async fn checkpoint_behind(&mut self) -> Result<()> {
        self.wait_for_checkpoint_in_flight().await?;
        let write = self.sign_logged()?;
        let (store, mac) = (self.store.clone(), self.mac.clone());
        self.checkpoint_in_flight = Some(WriterTask::spawn("checkpoint", write.run(store, mac)));
        Ok(())
    }

    async fn wait_for_checkpoint_in_flight(&mut self) -> Result<()> {
        if let Some(task) = self.checkpoint_in_flight.take() {
            let written = task.await.inspect_err(|_| self.log_write_failed = true)?;
            self.checkpoint_written(written);
        }
        Ok(())
    }

    /// Takes the log bundles not yet written and signs a checkpoint over every entry logged,
    /// unless one of that size is signed already.
    fn sign_logged(&mut self) -> Result<CheckpointWrite> {
        if self.log_write_failed {
            return Err(Error::store(
                "a log bundle or checkpoint of this run could not be written, so nothing more \
                 is signed; the next run logs and signs what this one stored",
            ));
        }
        let size = self.log.records.size();
        let last = self.signer.last_signed().map_or(0, |h| h.size);
        let lock_until = log_lock_until(crate::unix_now());
        let bundles = self.log.records.take_bundles();
        self.since_checkpoint = 0;
        let signed = if size == last && last > 0 {
            None
        } else {
            let proof = if last == 0 {
                Vec::new()
            } else {
                self.log.records.tree().consistency_proof(last, size)?
            };
            let root = self.log.records.root();
            Some(SignedCheckpoint {
                head: mailvault_core::checkpoint::SignedHead { size, root },
                note: self.signer.sign(size, root, &proof)?,
            })
        };
        Ok(CheckpointWrite {
            bundles,
            signed,
            lock_until,
        })
    }

    /// The log's head moves once a checkpoint is in the store, not when it is signed.
    fn checkpoint_written(&mut self, written: Option<SignedCheckpoint>) -> Option<u64> {
        let SignedCheckpoint { head, note } = written?;
        self.log.head = Some(head);
        self.log.head_note = Some(note);
        Some(head.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader;
    use crate::sidecar::Sidecar;
    use crate::source::content_identity;
    use crate::store::fs::FsStore;
    use mailvault_core::layout::CURSOR_KEY;
    use mailvault_core::note::NoteVerifier;
    use mailvault_core::verify::{RecordStatus, Trust};

    const ORIGIN: &str = "mailvault.io/test/pipeline";
    const NOW: UnixTime = UnixTime(1_795_836_120);

    /// A short test message; also used by the other writer tests (resume).
    pub(super) fn message(n: u32) -> SourceMessage {
        let bytes = format!("Subject: {n}\r\n\r\nbody {n}\r\n").into_bytes();
        let content_sha256 = Hash::of(&bytes);
        SourceMessage {
            folder: "INBOX".into(),
            identity: content_identity("INBOX", &content_sha256),
            body: Body::Memory(bytes),
            content_sha256,
            internal_date: None,
            flags: vec![],
            location: format!("test:{n}"),
        }
    }

    fn key() -> NoteSigner {
        NoteSigner::new(ORIGIN, &[4; 32]).unwrap()
    }

    pub(super) fn retention() -> RetentionSchedule {
        RetentionSchedule::single("MO-GS-003", "P1Y".parse().unwrap()).unwrap()
    }

    /// Stores a record the way an interrupted run leaves it: PUT, never logged.
    async fn plant_unlogged(store: &FsStore, msg: &SourceMessage, sealed: bool) -> RecordId {
        let id = record_id(ORIGIN, &msg.identity);
        let salt = [9u8; SALT_LEN];
        let sidecar = Sidecar {
            series: "MO-GS-003".into(),
            retain_until: RetainUntil::Until(UnixTime(NOW.0 + 86_400)),
            commitment: commitment_from_digest(&salt, &msg.content_sha256),
            salt,
            folder: msg.folder.clone(),
            identity: msg.identity.clone(),
            location: msg.location.clone(),
            internal_date: None,
            flags: vec![],
            original_size: msg.body.len(),
        }
        .to_map();
        let stored = Compression::new()
            .compress(&msg.body.to_vec().unwrap(), None)
            .unwrap();
        let mut sidecar = sidecar;
        if sealed {
            trust::seal_sidecar(
                &key().mac_key(),
                &record_key(id.as_str()),
                &mut sidecar,
                &Hash::of(&stored),
                stored.len() as u64,
            );
        }
        store
            .put_record(RecordPut {
                key: &record_key(id.as_str()),
                sha256: Hash::of(&stored),
                body: Body::Memory(stored),
                retain_until: UnixTime(NOW.0 + 86_400),
                sidecar: &sidecar,
                companion: None,
            })
            .await
            .unwrap();
        id
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mailvault-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn an_index_too_large_to_search_is_not_written_and_the_entry_commits_to_none() {
        use mailvault_core::rules::MessageFacts;
        let small = MessageFacts {
            from: vec!["clerk@city.example".into()],
            ..MessageFacts::default()
        };
        let (bytes, sha256) = salted_header_index(&small, UnixTime(1)).unwrap();
        assert_eq!(Hash::of(&bytes.unwrap()), sha256);
        // A thousand addresses of 571 bytes: an index of some 576 KB, over what a search reads.
        let long = format!("{}@city.example", "x".repeat(557));
        let huge = MessageFacts {
            to: vec![long; 1000],
            ..MessageFacts::default()
        };
        let (bytes, sha256) = salted_header_index(&huge, UnixTime(1)).unwrap();
        assert!(bytes.is_none());
        assert_eq!(sha256, no_index_sha256());
    }
    #[tokio::test]
    async fn a_forged_orphan_and_an_edited_run_marker_are_reported_not_adopted() {
        let dir = temp_dir("forged-orphan");
        let store = FsStore::new(&dir);
        let mut first = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        first.write(message(0), NOW).await.unwrap();
        first.finish().await.unwrap();
        // Someone with write access to the store plants a record with a plausible sidecar but
        // no MAC, and edits the run marker to say a run was interrupted.
        let forged = plant_unlogged(&store, &message(1), false).await;
        // A sealed sidecar copied onto other bytes: its MAC is valid, its bytes are not.
        let swapped = plant_unlogged(&store, &message(2), true).await;
        let swapped_key = record_key(swapped.as_str());
        std::fs::write(
            dir.join("objects").join(&swapped_key),
            Compression::new()
                .compress(b"Subject: other\r\n\r\n", None)
                .unwrap(),
        )
        .unwrap();
        store
            .put_mutable(
                RUN_MARKER_KEY,
                br#"{"in_progress":true}"#.to_vec(),
                &crate::store::ObjectMetadata::new(),
            )
            .await
            .unwrap();
        let mut second = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        let summary = second.summary().clone();
        assert_eq!(summary.adopted, 0);
        assert_eq!(summary.unauthenticated_total, 3, "{summary:?}");
        for k in [RUN_MARKER_KEY, &record_key(forged.as_str()), &swapped_key] {
            assert!(
                summary.unauthenticated.iter().any(|u| u == k),
                "{k}: {summary:?}"
            );
        }
        let warning = summary.unauthenticated_warning().unwrap();
        assert!(warning.contains(&record_key(forged.as_str())), "{warning}");
        // The run otherwise goes on: a new message is archived and signed.
        second.write(message(3), NOW).await.unwrap();
        assert_eq!(second.finish().await.unwrap(), Some(2));
        let report = verify(&store).await;
        assert_eq!(report.log_size, 2, "nothing forged was logged");
        assert_eq!(report.counts.get(&RecordStatus::PresentOk), Some(&2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_forged_tail_entry_is_skipped_and_nothing_is_signed() {
        let dir = temp_dir("forged-tail");
        let store = FsStore::new(&dir);
        let mut first = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        for n in 0..3 {
            first.write(message(n), NOW).await.unwrap();
        }
        assert_eq!(first.finish().await.unwrap(), Some(3));
        // A valid chain extended by one entry, in a wider partial bundle, without the MAC.
        let bundle = store
            .get(&mailvault_core::layout::bundle_key(0, 3), None, u64::MAX)
            .await
            .unwrap()
            .unwrap();
        let mut log = mailvault_core::log::RecordLog::resume([bundle.bytes.as_slice()]).unwrap();
        let _ = log.take_bundles();
        let id = record_id(ORIGIN, "forged");
        log.append(
            NOW,
            id.clone(),
            EntryBody::Ingest {
                series: "MO-GS-003".into(),
                retain_until: RetainUntil::Permanent,
                lock_mode: LockMode::None,
                object_key: record_key(id.as_str()),
                object_version: "0".into(),
                stored_sha256: Hash::of(b"x"),
                stored_size: 1,
                original_commitment: Hash::of(b"y"),
                dictionary: None,
                header_index: None,
            },
        )
        .unwrap();
        let forged = log.take_bundles().pop().unwrap();
        assert_eq!(forged.key, mailvault_core::layout::bundle_key(0, 4));
        store
            .put_immutable(
                &forged.key,
                forged.bytes,
                &crate::store::ObjectMetadata::new(),
                NOW,
            )
            .await
            .unwrap();
        // Not its own (no MAC): the writer names it and goes on from the signed log, which
        // it would once have refused for good (every later run stopped on it).
        let mut second = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        let named = second.summary().unauthenticated.clone();
        assert!(
            named.iter().any(|u| u.starts_with(&forged.key)),
            "{named:?}"
        );
        assert_eq!(second.finish().await.unwrap(), None, "nothing new to sign");
        assert!(
            store
                .get(&checkpoint_key(4), None, u64::MAX)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            store.list_keys("checkpoints/").await.unwrap(),
            vec![checkpoint_key(3)],
            "nothing forged was signed"
        );

        // The same entry written by the writer itself (a crash after its bundles, before its
        // checkpoint) is its own, and the next run signs it.
        let dir2 = temp_dir("own-tail");
        let own = FsStore::new(&dir2);
        let mut w = RecordWriter::open(&own, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        w.write(message(0), NOW).await.unwrap();
        w.finish().await.unwrap();
        w.write(message(1), NOW).await.unwrap();
        while !w.in_flight.is_empty() {
            w.log_next_stored().await.unwrap();
        }
        for b in w.log.records.take_bundles() {
            let metadata = trust::tagged(&w.mac, MacKind::Bundle, &b.key, &b.bytes);
            own.put_immutable(&b.key, b.bytes, &metadata, NOW)
                .await
                .unwrap();
        }
        drop(w);
        let mut resumed = RecordWriter::open(&own, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        assert_eq!(resumed.finish().await.unwrap(), Some(2));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&dir2).unwrap();
    }

    #[tokio::test]
    async fn a_log_that_grew_behind_the_writers_back_is_not_replayed() {
        let dir = temp_dir("same-log");
        let store = FsStore::new(&dir);
        let mut first = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        first.write(message(0), NOW).await.unwrap();
        first.finish().await.unwrap();
        let running = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        let verifier = NoteVerifier::parse(&key().verifier_key()).unwrap();
        let read = |store| reader::StoredLog::load(store, ORIGIN, &verifier, true);
        running
            .check_same_log(&read(&store).await.unwrap().records)
            .unwrap();
        // Entries appear in the store during the run (here another writer's, signed even).
        let mut other = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        other.write(message(1), NOW).await.unwrap();
        other.finish().await.unwrap();
        let err = running
            .check_same_log(&read(&store).await.unwrap().records)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not the one this run verified"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_edited_cursor_is_not_trusted() {
        use crate::source::imap::sync::{Cursor, FolderCursor};
        let dir = temp_dir("cursor");
        let store = FsStore::new(&dir);
        let mac = key().mac_key();
        let mut cursor = Cursor::default();
        cursor.folders.insert(
            "INBOX".into(),
            FolderCursor {
                uid_validity: 1,
                uid_next: 5,
                highest_modseq: None,
            },
        );
        cursor.save(&store, &mac).await.unwrap();
        assert_eq!(
            Cursor::load(&store, &mac).await.unwrap(),
            (cursor.clone(), false)
        );
        // Moved ahead to skip messages, by someone without the key.
        let edited = String::from_utf8(
            store
                .get(CURSOR_KEY, None, u64::MAX)
                .await
                .unwrap()
                .unwrap()
                .bytes,
        )
        .unwrap()
        .replace("\"uid_next\": 5", "\"uid_next\": 500");
        std::fs::write(dir.join("objects").join(CURSOR_KEY), edited).unwrap();
        assert_eq!(
            Cursor::load(&store, &mac).await.unwrap(),
            (Cursor::default(), true)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    async fn verify(store: &FsStore) -> mailvault_core::verify::Report {
        let trust = Trust {
            keys: vec![NoteVerifier::parse(&key().verifier_key()).unwrap()],
            origin: Some(ORIGIN.into()),
            trusted_checkpoint: None,
            now: NOW,
        };
        reader::verify(store, trust, &reader::VerifyOptions::default(), &mut |_| {})
            .await
            .unwrap()
    }

    /// A `file:` store with one fault.
    #[derive(Debug, Clone)]
    struct Faulty(FsStore, Fault);

    #[derive(Debug, Clone)]
    enum Fault {
        /// Record PUTs are carried out but their answers are lost: each one fails although
        /// the record is stored.
        AnswersLost,
        /// Checkpoint PUTs wait until the semaphore gives them a permit; record PUTs are
        /// counted.
        CheckpointsHeld(
            Arc<tokio::sync::Semaphore>,
            Arc<std::sync::atomic::AtomicUsize>,
        ),
        /// The first log bundle PUT fails; every other PUT succeeds.
        FirstBundleFails(Arc<std::sync::atomic::AtomicBool>),
        /// No fault: record PUTs, syncs, bundle and checkpoint PUTs are noted in order.
        Journal(Arc<std::sync::Mutex<Vec<&'static str>>>),
    }

    impl Fault {
        fn note(&self, step: &'static str) {
            if let Fault::Journal(steps) = self {
                steps.lock().unwrap().push(step);
            }
        }
    }

    impl Store for Faulty {
        async fn preflight(&self) -> Result<StoreInfo> {
            self.0.preflight().await
        }
        async fn put_record(&self, put: RecordPut<'_>) -> Result<String> {
            let version = self.0.put_record(put).await?;
            match &self.1 {
                Fault::AnswersLost => Err(Error::store("the answer was lost")),
                Fault::CheckpointsHeld(_, records) => {
                    records.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(version)
                }
                Fault::FirstBundleFails(_) | Fault::Journal(_) => {
                    self.1.note("record");
                    Ok(version)
                }
            }
        }
        async fn make_durable(&self) -> Result<()> {
            self.1.note("durable");
            self.0.make_durable().await
        }
        async fn put_immutable(
            &self,
            key: &str,
            bytes: Vec<u8>,
            metadata: &crate::store::ObjectMetadata,
            lock_until: UnixTime,
        ) -> Result<()> {
            if let Fault::CheckpointsHeld(gate, _) = &self.1
                && parse_checkpoint_key(key).is_some()
            {
                let _permit = gate
                    .acquire()
                    .await
                    .map_err(|e| Error::store(e.to_string()))?;
            }
            if let Fault::FirstBundleFails(failed) = &self.1
                && key.starts_with(mailvault_core::layout::LOG_PREFIX)
                && !failed.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(Error::store("the bundle PUT failed"));
            }
            if key.starts_with(mailvault_core::layout::LOG_PREFIX) {
                self.1.note("bundle");
            } else if parse_checkpoint_key(key).is_some() {
                self.1.note("checkpoint");
            }
            self.0.put_immutable(key, bytes, metadata, lock_until).await
        }
        async fn put_mutable(
            &self,
            key: &str,
            bytes: Vec<u8>,
            metadata: &crate::store::ObjectMetadata,
        ) -> Result<()> {
            self.0.put_mutable(key, bytes, metadata).await
        }
        async fn get(
            &self,
            key: &str,
            version: Option<&str>,
            max_len: u64,
        ) -> Result<Option<crate::store::StoredObject>> {
            self.0.get(key, version, max_len).await
        }
        async fn read_streaming(
            &self,
            key: &str,
            version: Option<&str>,
            sink: crate::store::PieceSink<'_>,
        ) -> Result<Option<crate::store::ObjectDigest>> {
            self.0.read_streaming(key, version, sink).await
        }
        async fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
            self.0.list_keys(prefix).await
        }
        async fn list_version_ids(&self, prefix: &str) -> Result<Vec<(String, String, bool)>> {
            self.0.list_version_ids(prefix).await
        }
        async fn version_lock(
            &self,
            key: &str,
            version: &str,
        ) -> Result<Option<crate::store::VersionLock>> {
            self.0.version_lock(key, version).await
        }
        async fn list_versions(
            &self,
            prefix: &str,
        ) -> Result<Vec<(String, mailvault_core::verify::StoredVersion)>> {
            self.0.list_versions(prefix).await
        }
        async fn set_legal_hold(&self, key: &str, version: &str, on: bool) -> Result<()> {
            self.0.set_legal_hold(key, version, on).await
        }
        async fn extend_retention(
            &self,
            key: &str,
            version: &str,
            until: UnixTime,
        ) -> Result<UnixTime> {
            self.0.extend_retention(key, version, until).await
        }
        async fn delete_version(&self, key: &str, version_id: &str) -> Result<()> {
            self.0.delete_version(key, version_id).await
        }
    }

    /// What the log names is durable before the log is written, and a checkpoint once it is:
    /// a power loss may take back the log's tail (whose records the next run adopts), never a
    /// record the log names.
    #[tokio::test]
    async fn records_are_made_durable_before_the_bundles_naming_them_and_checkpoints_after() {
        let dir = temp_dir("durable");
        let steps = Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = Faulty(FsStore::new(&dir), Fault::Journal(steps.clone()));
        let mut w = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        for n in 0..3 {
            w.write(message(n), NOW).await.unwrap();
        }
        w.checkpoint().await.unwrap();
        w.finish().await.unwrap();
        let steps = steps.lock().unwrap().clone();
        let last_record = steps.iter().rposition(|s| *s == "record").unwrap();
        let first_bundle = steps.iter().position(|s| *s == "bundle").unwrap();
        assert!(last_record < first_bundle, "{steps:?}");
        assert!(
            steps[last_record..first_bundle].contains(&"durable"),
            "{steps:?}"
        );
        let checkpoint = steps.iter().rposition(|s| *s == "checkpoint").unwrap();
        assert!(steps[checkpoint..].contains(&"durable"), "{steps:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A run whose record PUT failed although the record was stored (its answer lost) must not
    /// end marked finished: the next run would never look for the record, and find its key
    /// taken. It is left unfinished; the next run adopts the record, logged once.
    #[tokio::test]
    async fn a_failed_store_leaves_the_run_unfinished_and_the_next_run_adopts_its_record() {
        let dir = temp_dir("answers-lost");
        let store = FsStore::new(&dir);
        let lossy = Faulty(store.clone(), Fault::AnswersLost);
        let mut first = RecordWriter::open(&lossy, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        first.write(message(1), NOW).await.unwrap();
        // The run fails on the store's error, then ends as a failed run does (run.rs).
        assert!(first.checkpoint().await.is_err());
        first.finish().await.unwrap();
        drop(first);

        let mut second = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        assert_eq!(second.summary().adopted, 1);
        assert!(matches!(
            second.write(message(1), NOW).await.unwrap(),
            Outcome::AlreadyArchived(_)
        ));
        second.finish().await.unwrap();
        let report = verify(&store).await;
        assert!(report.verified(), "{}", report.to_text());
        assert_eq!(report.counts.get(&RecordStatus::PresentOk), Some(&1));
        assert_eq!(report.log_size, 1, "one ingest");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A short message like a department's (enough shared text for a dictionary to pay).
    /// The periodic checkpoint is written while records go on being stored: with its PUT held,
    /// the run stores the next records, and the checkpoint lands once let through.
    #[tokio::test]
    async fn records_are_stored_while_a_checkpoint_is_written() {
        let dir = temp_dir("checkpoint-behind");
        let store = FsStore::new(&dir);
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let stored = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let held = Faulty(
            store.clone(),
            Fault::CheckpointsHeld(gate.clone(), stored.clone()),
        );
        let mut w = RecordWriter::open(&held, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        let total = u32::try_from(CHECKPOINT_EVERY).unwrap() + 100;
        // Bounded, so that a writer waiting for the held checkpoint fails the test instead of
        // hanging it.
        tokio::time::timeout(std::time::Duration::from_mins(1), async {
            for n in 0..total {
                w.write(message(n), NOW).await.unwrap();
            }
            // Every store in flight ends while the checkpoint is still held.
            while stored.load(std::sync::atomic::Ordering::SeqCst) < total as usize {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("records kept being stored while the checkpoint was held");
        assert!(
            store.list_keys("checkpoints/").await.unwrap().is_empty(),
            "the checkpoint was held"
        );
        gate.add_permits(100);
        let signed = w.finish().await.unwrap();
        assert_eq!(signed, Some(u64::from(total)));
        let report = verify(&store).await;
        assert!(report.verified(), "{}", report.to_text());
        assert_eq!(
            report.counts.get(&RecordStatus::PresentOk),
            Some(&u64::from(total))
        );
        assert_eq!(
            store.list_keys("checkpoints/").await.unwrap().len(),
            2,
            "the periodic checkpoint and the last"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A periodic checkpoint whose first bundle PUT fails (once) in its task fails the run:
    /// the entries of that bundle are gone from memory, so no later checkpoint may be signed
    /// over them (the store would hold a signed log with a hole), and the run is not marked
    /// finished. The next run adopts the records and signs the log; verify passes.
    #[tokio::test]
    async fn a_log_write_that_fails_once_behind_the_run_fails_it_and_the_next_run_signs_the_log() {
        let dir = temp_dir("checkpoint-fails");
        let store = FsStore::new(&dir);
        let failing = Faulty(
            store.clone(),
            Fault::FirstBundleFails(Arc::new(std::sync::atomic::AtomicBool::new(false))),
        );
        let mut first = RecordWriter::open(&failing, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        let total = u32::try_from(CHECKPOINT_EVERY).unwrap() + 10;
        let mut failed = false;
        for n in 0..total {
            // The failure surfaces at a later write or at the end.
            if first.write(message(n), NOW).await.is_err() {
                failed = true;
                break;
            }
        }
        // The end of a folder surfaces the error (sync.rs); the run then ends as a failed run
        // does (run.rs): `finish` is called whatever happened, and must not sign.
        let at_checkpoint = first.checkpoint().await;
        assert!(failed || at_checkpoint.is_err());
        let error = first.finish().await.err();
        assert!(
            error.is_some(),
            "a run whose log write failed must not finish (failed at a write: {failed})"
        );
        drop(first);
        assert!(
            store.list_keys("checkpoints/").await.unwrap().is_empty(),
            "nothing signed over the lost bundle"
        );

        let mut second = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        for n in 0..total {
            second.write(message(n), NOW).await.unwrap();
        }
        second.finish().await.unwrap();
        let report = verify(&store).await;
        assert!(report.verified(), "{}", report.to_text());
        assert_eq!(
            report.counts.get(&RecordStatus::PresentOk),
            Some(&u64::from(total))
        );
        assert_eq!(report.log_size, u64::from(total), "each record logged once");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn short_message(n: u32) -> SourceMessage {
        let mut m = message(n);
        let bytes = format!(
            "From: clerk{a}@city.example\r\nTo: records@city.example\r\nSubject: permit {n}\r\n\
             Message-ID: <{n}@city.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
             Permit application {n} was reviewed and is pending.\r\n-- \r\nCity Planning\r\n\
             This message and any attachments are intended only for the addressee and may contain \
             information that is confidential or exempt from disclosure under public records \
             law. If you received it in error, notify the sender and delete it. Records of the \
             City are kept under the retention schedule approved by the State Archives.\r\n",
            a = n % 5
        )
        .into_bytes();
        m.content_sha256 = Hash::of(&bytes);
        m.identity = content_identity("INBOX", &m.content_sha256);
        m.body = Body::Memory(bytes);
        m
    }

    #[tokio::test]
    async fn small_mail_trains_a_dictionary_and_a_dictionary_left_unlogged_is_adopted() {
        let dir = temp_dir("dictionary");
        let store = FsStore::new(&dir);
        let mut w = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        let n = u32::try_from(crate::dictionary::TRAIN_AFTER).unwrap() + 40;
        for i in 0..n {
            w.write(short_message(i), NOW).await.unwrap();
        }
        w.finish().await.unwrap();
        drop(w);
        let report = verify(&store).await;
        assert!(report.verified(), "{}", report.to_text());
        let log = StoredLog::load(
            &store,
            ORIGIN,
            &NoteVerifier::parse(&key().verifier_key()).unwrap(),
            true,
        )
        .await
        .unwrap();
        let named = log
            .entries
            .iter()
            .filter(|e| {
                matches!(
                    e.body,
                    EntryBody::Ingest {
                        dictionary: Some(_),
                        ..
                    }
                )
            })
            .count();
        assert!(named >= 40, "{named} records name the dictionary");
        let spool = Spool::default();
        let last = record_id(ORIGIN, &short_message(n - 1).identity);
        let exported = reader::export(&store, &log, last.as_str(), &spool)
            .await
            .unwrap();
        assert_eq!(
            exported.original.to_vec().unwrap(),
            short_message(n - 1).body.to_vec().unwrap()
        );

        // A run that stored a dictionary and stopped before logging it: the next run logs it.
        let samples: Vec<Vec<u8>> = (1000..1300)
            .map(|i| short_message(i).body.to_vec().unwrap())
            .collect();
        let orphan = crate::dictionary::train(&samples).unwrap();
        crate::dictionary::put(&store, &key().mac_key(), &orphan, UnixTime(NOW.0 + 10))
            .await
            .unwrap();
        // A forged one (no MAC) beside it is reported, never logged.
        let forged = crate::dictionary::train(&samples[..280]).unwrap();
        store
            .put_mutable(
                &dictionary_key(&forged.sha256),
                forged.bytes.to_vec(),
                &crate::store::ObjectMetadata::new(),
            )
            .await
            .unwrap();
        RunMarker {
            in_progress: true,
            run: "crashed".into(),
        }
        .write(&store, &key().mac_key())
        .await
        .unwrap();
        let before = verify(&store).await;
        // Both objects are under dictionaries/: counted apart from records.
        assert_eq!(
            before.dictionary_counts.get(&RecordStatus::UnloggedObject),
            Some(&2)
        );
        let mut next = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        next.finish().await.unwrap();
        assert!(
            next.summary()
                .unauthenticated_warning()
                .is_some_and(|w| w.contains(&forged.sha256.to_hex()))
        );
        let after = verify(&store).await;
        assert_eq!(
            after.dictionary_counts.get(&RecordStatus::UnloggedObject),
            Some(&1),
            "{}",
            after.to_text()
        );
        assert!(
            !after
                .problems
                .iter()
                .any(|p| p.record.contains(&orphan.sha256.to_hex()))
        );
    }

    #[tokio::test]
    async fn an_interrupted_run_is_completed_by_the_next_and_nothing_is_stored_twice() {
        let dir = std::env::temp_dir().join(format!("mailvault-pipeline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = FsStore::new(&dir);

        // A run that stored and checkpointed three records but never finished...
        let mut first = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        for n in 0..3 {
            first.write(message(n), NOW).await.unwrap();
        }
        first.checkpoint().await.unwrap();
        drop(first);
        // ...and had PUT a fourth whose entry never reached the log.
        let orphan = plant_unlogged(&store, &message(3), true).await;
        let before = verify(&store).await;
        assert_eq!(before.counts.get(&RecordStatus::UnloggedObject), Some(&1));

        // The next run finds the mark of the unfinished run, adopts the orphan, stores nothing again.
        let mut second = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        assert_eq!(second.summary().adopted, 1);
        for n in 0..4 {
            assert!(matches!(
                second.write(message(n), NOW).await.unwrap(),
                Outcome::AlreadyArchived(_)
            ));
        }
        second.write(message(4), NOW).await.unwrap();
        second.finish().await.unwrap();
        let after = verify(&store).await;
        assert!(after.verified(), "{}", after.to_text());
        assert_eq!(after.counts.get(&RecordStatus::PresentOk), Some(&5));
        assert_eq!(after.log_size, 5, "one ingest per record");

        // After a finished run nobody looks for orphans: one planted now stays visible to the
        // auditor as unlogged instead of being silently adopted.
        let late = plant_unlogged(&store, &message(9), true).await;
        assert_ne!(late, orphan);
        let third = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        assert_eq!(third.summary().adopted, 0);
        assert_eq!(
            verify(&store)
                .await
                .counts
                .get(&RecordStatus::UnloggedObject),
            Some(&1)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn export_streams_through_spool_files_and_refuses_a_tampered_record() {
        let dir = std::env::temp_dir().join(format!("mailvault-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = FsStore::new(dir.join("store"));
        let mut writer = RecordWriter::open(&store, ORIGIN, key(), retention(), NOW)
            .await
            .unwrap();
        let big = message(7);
        let big_bytes = big.body.to_vec().unwrap();
        writer.write(big, NOW).await.unwrap();
        writer.finish().await.unwrap();
        let verifier = NoteVerifier::parse(&key().verifier_key()).unwrap();
        let log = reader::StoredLog::load(&store, ORIGIN, &verifier, true)
            .await
            .unwrap();
        let id = record_id(ORIGIN, &message(7).identity).to_string();
        // A limit of 4 bytes: the stored and the original bytes both go through files.
        let spool = Spool::new(dir.join("spool")).with_memory_limit(4);
        let exported = reader::export(&store, &log, &id, &spool).await.unwrap();
        assert!(matches!(exported.original, Body::File(_)));
        assert_eq!(exported.original.to_vec().unwrap(), big_bytes);
        drop(exported);
        assert_eq!(std::fs::read_dir(spool.dir()).unwrap().count(), 0);

        // Another message's bytes under this record's key: refused, nothing handed out.
        let object = dir.join("store/objects/records").join(&id);
        let other = Compression::new()
            .compress(b"Subject: forged\r\n\r\n", None)
            .unwrap();
        std::fs::write(&object, other).unwrap();
        let err = reader::export(&store, &log, &id, &spool)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not match the log"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
