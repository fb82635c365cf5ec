//! The log of one archive, read back from its store and checked against its newest signed
//! checkpoint.
//!
//! `log/ bundles -> RecordLog (chain re-checked) + checkpoints/<newest> -> StoredLog`

use crate::store::{Store, StoredObject};
use crate::{Error, Result};
use futures::StreamExt as _;
use mailvault_core::bundle::BUNDLE_WIDTH;
use mailvault_core::checkpoint::{Checkpoint, SignedHead};
use mailvault_core::entry::{Entry, EntryBody, RecordId};
use mailvault_core::layout::{
    CHECKPOINTS_PREFIX, LOG_PREFIX, bundle_key, checkpoint_key, parse_bundle_key,
    parse_checkpoint_key,
};
use mailvault_core::lifecycle::{Anomaly, Replay};
use mailvault_core::log::RecordLog;
use mailvault_core::note::NoteVerifier;
use mailvault_core::verify::LogListing;
use std::collections::{BTreeSet, HashMap, HashSet};

/// The log of an archive as read from its store.
#[derive(Debug)]
pub struct StoredLog {
    origin: String,
    /// The record log, rebuilt and chain-checked (the writer appends to it).
    pub records: RecordLog,
    /// The newest checkpoint signed by the archive's key and consistent with the log.
    pub head: Option<SignedHead>,
    /// The note of that checkpoint.
    pub head_note: Option<String>,
    /// Ids of every ingested record.
    pub ingested: HashSet<RecordId>,
    /// Decoded entries, in order (empty unless loaded with `keep_entries`).
    pub entries: Vec<Entry>,
    /// Per record: the positions in `entries` of its ingest entry and of its newest entry, so
    /// a lookup costs the same for the millionth record as for the first.
    positions: HashMap<String, Positions>,
}

#[derive(Debug, Clone, Copy)]
struct Positions {
    ingest: Option<usize>,
    latest: usize,
}

/// Largest object read under `log/` or `checkpoints/`: a full bundle of the largest entries (a
/// checkpoint note is far smaller).
pub(crate) const MAX_LOG_OBJECT_LEN: u64 = mailvault_core::bundle::MAX_BUNDLE_LEN;

/// The log objects of an archive as the versions of `checkpoints/` and `log/` show them, not
/// the current keys: mailvault writes each log object once and never deletes one, but Object
/// Lock lets anyone with write access put a delete marker (or a second version) on a locked
/// object. A reader that went by current keys would then read an older checkpoint and leave
/// out what was logged since; this one reads the versions beneath, and names what it found.
#[derive(Debug, Default)]
pub(crate) struct LogObjects {
    /// Every key with at least one data version, sorted into bundles and checkpoints.
    pub listing: LogListing,
    /// The data versions of each key, oldest first (one, as mailvault writes them).
    versions: HashMap<String, Vec<String>>,
    /// For each bundle index the log is read from, in order (see [`Self::list`]), the objects
    /// that may hold it: the full bundle, then the partials, widest first.
    bundles: Vec<(u64, Vec<String>)>,
    /// What is not as mailvault leaves it: keys with a delete marker, keys with more than one
    /// data version.
    pub findings: Vec<LogObjectFinding>,
    /// Read by the writer ([`Self::for_writer`]): it tries the unsigned tail's keys as far as
    /// a checkpoint's, so that a version planted beneath its own does not hide from it what it
    /// wrote before a crash.
    for_writer: bool,
    /// The writer's check that an object past what is vouched for is its own (its MAC):
    /// [`Self::with_tail_check`].
    tail_check: Option<TailCheck>,
}

/// Whether a bundle object version (its key and what was read of it) is the writer's own.
pub(crate) type IsOwn = dyn Fn(&str, &StoredObject) -> bool + Send + Sync;

/// [`IsOwn`], shared.
#[derive(Clone)]
pub(crate) struct TailCheck(pub std::sync::Arc<IsOwn>);

impl std::fmt::Debug for TailCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TailCheck")
    }
}

/// How [`LogObjects::first_following`] tries the objects of one index.
#[derive(Debug, Clone, Copy)]
struct Tries {
    /// Versions of each key tried, oldest first.
    versions_per_key: usize,
    /// Whether nothing signed (or the writer's MAC'd head) vouches for what is read: the
    /// writer then takes only an object of its own ([`LogObjects::with_tail_check`]).
    unvouched: bool,
}

impl Tries {
    /// Why a version past the budget is not read.
    fn past_budget(self) -> String {
        if self.versions_per_key == MAX_VERSIONS_TRIED {
            format!(
                "a reader tries at most the first {MAX_VERSIONS_TRIED} versions of a log object"
            )
        } else {
            "past what a checkpoint signs, a reader reads only the first version of a log object"
                .to_owned()
        }
    }
}

/// A log object that is not as mailvault leaves it (someone with write access to the store did
/// this; a reader reads beneath it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogObjectFinding {
    /// A delete marker on `key`; `beneath`: whether a data version is under it.
    DeleteMarker { key: String, beneath: bool },
    /// `key` has `versions` data versions.
    Versions { key: String, versions: usize },
    /// A bundle key after a gap in the bundle indices, or after a partial bundle: mailvault
    /// never writes one, so it is not read.
    AfterTheLog { key: String },
    /// A checkpoint key none of whose versions opens under the archive's key, above the newest
    /// one that does: not a checkpoint of this archive.
    NotACheckpoint { key: String, why: String },
    /// A bundle key of an index no checkpoint vouches for, none of whose objects follows the
    /// log (`why`: the first one tried): the log ends before it.
    NotFollowing { key: String, why: String },
    /// A version of a bundle key that was not read: too large, unreadable, or past the number
    /// of versions a reader tries.
    VersionNotRead {
        key: String,
        version: String,
        why: String,
    },
}

impl LogObjectFinding {
    /// The key and, in brackets, what is odd about it (what a run reports as unauthenticated).
    pub(crate) fn short(&self) -> String {
        match self {
            Self::DeleteMarker { key, .. } => format!("{key} (delete marker)"),
            Self::Versions { key, versions } => format!("{key} ({versions} versions)"),
            Self::AfterTheLog { key } => format!("{key} (after the log's last bundle)"),
            Self::NotACheckpoint { key, .. } => format!("{key} (does not open under the key)"),
            Self::NotFollowing { key, .. } => format!("{key} (does not follow the log)"),
            Self::VersionNotRead { key, version, .. } => {
                format!("{key} (version {version} not read)")
            }
        }
    }
}

impl std::fmt::Display for LogObjectFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DeleteMarker { key, beneath } => write!(
                f,
                "{key} is hidden behind a delete marker (mailvault never deletes a log object); {}",
                if *beneath {
                    "the version beneath it was read"
                } else {
                    "there is no version beneath it"
                }
            ),
            Self::Versions { key, versions } => write!(
                f,
                "{key} has {versions} versions (mailvault writes a log object once); the one that \
                 follows the log (for a bundle) or opens with the archive's key (for a \
                 checkpoint) was read"
            ),
            Self::AfterTheLog { key } => write!(
                f,
                "{key} lies after a gap in the log's bundles or after a partial bundle \
                 (mailvault never writes one there); it was not read"
            ),
            Self::NotACheckpoint { key, why } => write!(
                f,
                "{key} is not a checkpoint of this archive ({why}); the newest one that opens \
                 under the archive's key was used"
            ),
            Self::NotFollowing { key, why } => write!(
                f,
                "{key} does not follow the log ({why}) and no checkpoint vouches for its \
                 entries: the log was read up to it"
            ),
            Self::VersionNotRead { key, version, why } => {
                write!(f, "version {version} of {key} was not read ({why})")
            }
        }
    }
}

impl LogObjects {
    /// Lists the versions under `checkpoints/`, then `log/`: a run writing meanwhile adds
    /// bundles before their checkpoint, so every listed checkpoint's entries are in the bundle
    /// listing that follows.
    pub(crate) async fn list<S: Store>(store: &S) -> Result<Self> {
        let mut listed = store.list_version_ids(CHECKPOINTS_PREFIX).await?;
        listed.extend(store.list_version_ids(LOG_PREFIX).await?);
        let mut objects = Self::default();
        let mut markers: BTreeSet<String> = BTreeSet::new();
        for (key, version, delete_marker) in listed {
            if delete_marker {
                markers.insert(key);
            } else {
                objects.versions.entry(key).or_default().push(version);
            }
        }
        for key in markers {
            let beneath = objects.versions.contains_key(&key);
            objects
                .findings
                .push(LogObjectFinding::DeleteMarker { key, beneath });
        }
        let mut rewritten: Vec<LogObjectFinding> = objects
            .versions
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(k, v)| LogObjectFinding::Versions {
                key: k.clone(),
                versions: v.len(),
            })
            .collect();
        rewritten.sort_by_key(LogObjectFinding::short);
        objects.findings.extend(rewritten);
        let mut keys: Vec<&String> = objects.versions.keys().collect();
        keys.sort();
        objects.listing = LogListing::from_keys(keys.into_iter().map(String::as_str));
        // The bundles the log is read from: indices 0, 1, 2, … without a gap, each a full
        // bundle but the last (§6). Anything past that is not mailvault's: named, not read.
        let mut ended = false;
        for (expected, (index, group)) in (0u64..).zip(&objects.listing.bundles) {
            let candidates: Vec<String> = group
                .full
                .iter()
                .chain(group.partials.iter().rev().map(|(_, k)| k))
                .cloned()
                .collect();
            if ended || *index != expected {
                ended = true;
                for key in candidates {
                    objects.findings.push(LogObjectFinding::AfterTheLog { key });
                }
                continue;
            }
            ended = group.full.is_none();
            objects.bundles.push((*index, candidates));
        }
        Ok(objects)
    }

    /// The data versions of `key`, oldest first (nearly always one).
    pub(crate) fn versions(&self, key: &str) -> &[String] {
        self.versions.get(key).map_or(&[], Vec::as_slice)
    }

    /// For each bundle index the log is read from, in order: the index and the objects that
    /// may hold it, the one normally read first (the full bundle, else the widest partial).
    pub(crate) fn bundles(&self) -> &[(u64, Vec<String>)] {
        &self.bundles
    }

    /// The objects of each bundle index from `from` on, owned (a stream of futures borrowing
    /// them is not provably `Send`, and the operator runs readers on a multi-threaded runtime).
    pub(crate) fn bundle_candidates(&self, from: u64) -> Vec<Vec<String>> {
        self.bundles
            .iter()
            .filter(|(index, _)| *index >= from)
            .map(|(_, candidates)| candidates.clone())
            .collect()
    }

    /// The bundle indices of `candidates` (from [`Self::bundle_candidates`]), each with its
    /// first object's first version read ([`Self::fetch_first`]), `n` read ahead in order: what
    /// [`Self::push_bundle`] takes.
    pub(crate) fn read_ahead<'a, S: Store>(
        &'a self,
        store: &'a S,
        candidates: Vec<Vec<String>>,
        n: usize,
    ) -> impl futures::Stream<Item = (Vec<String>, Result<Option<Vec<u8>>>)> + 'a {
        futures::stream::iter(candidates)
            .map(move |candidates| async move {
                let first = self.fetch_first(store, &candidates).await;
                (candidates, first)
            })
            .buffered(n)
    }

    /// The bytes of the first listed version of the first of `candidates` (what a reader
    /// fetches ahead; the rest are read only if it does not follow the log). `None`: listed,
    /// then gone.
    pub(crate) async fn fetch_first<S: Store>(
        &self,
        store: &S,
        candidates: &[String],
    ) -> Result<Option<Vec<u8>>> {
        let Some(key) = candidates.first() else {
            return Ok(None);
        };
        match self.versions(key).first() {
            Some(version) => read_version(store, key, version).await,
            None => Ok(None),
        }
    }

    /// Appends to `records` the first object version among `candidates` (one bundle index's
    /// objects, from [`Self::bundles`]; each object's versions oldest first) that follows the
    /// log and holds as many entries as its key says: the first (read ahead by
    /// [`Self::fetch_first`]: `first`), else the others one at a time, at most
    /// [`MAX_VERSIONS_TRIED`] of each key (a budget per key: versions planted under one key,
    /// the full bundle's say, cannot use up the reads of another, the partial mailvault
    /// wrote). A planted object or version (garbage, too large, refused by the store) costs a
    /// read, not the log; one planted over mailvault's comes after it in the listing, so even
    /// one that chains is not read. Versions not read are added to `findings`.
    ///
    /// `trusted`: how many entries from the log's start a signature (the newest checkpoint) or
    /// the writer's MAC vouches for. Each index they cover is read first from exactly the key
    /// that size names for it ([`Self::read_vouched`]); only if that key holds nothing that
    /// follows is every candidate tried as above.
    /// Returns the key and version read and its entries; if none follows, the first error, or,
    /// for an index past a `trusted` size other than 0, `None` (the log ends before it); `None`
    /// too when the index before ended the log with a partial (a full object was listed, but
    /// none that follows): the index is after the log. After `None` the log has ended: the
    /// caller stops reading (the keys of every later index are named in `findings`).
    pub(crate) async fn push_bundle<S: Store>(
        &self,
        store: &S,
        records: &mut RecordLog,
        candidates: &[String],
        first: Result<Option<Vec<u8>>>,
        trusted: u64,
        findings: &mut Vec<LogObjectFinding>,
    ) -> Result<Option<(String, String, Vec<Entry>)>> {
        let index = candidates
            .first()
            .and_then(|k| parse_bundle_key(k))
            .map_or(0, |(index, _)| index);
        if records.size() < index.saturating_mul(BUNDLE_WIDTH) {
            // Junk under the full key of the last index made the listing go on past it; what
            // is under this one and after is not mailvault's (read, it would stop every reader).
            self.name_after_the_log(index, findings);
            return Ok(None);
        }
        let mut first = Some(first);
        let vouched = self
            .read_vouched(store, records, candidates, &mut first, trusted, findings)
            .await?;
        let (key, version, bytes) = match vouched {
            Some(read) => read,
            None => match self
                .first_following(
                    store,
                    records,
                    candidates,
                    first,
                    None,
                    findings,
                    Tries {
                        versions_per_key: self.tail_versions(),
                        unvouched: records.size() >= trusted,
                    },
                )
                .await?
            {
                Ok(read) => read,
                // Nothing here is vouched for, but what comes before is: objects planted
                // under an index after the log end it there (a reader that stopped on them
                // could be denied the log). With nothing vouched for at all (no checkpoint
                // opens), a bundle that does not follow is damage, not the log's end.
                Err(why) if trusted > 0 && records.size() >= trusted => {
                    findings.extend(candidates.iter().map(|key| LogObjectFinding::NotFollowing {
                        key: key.clone(),
                        why: why.clone(),
                    }));
                    self.name_after_the_log(index + 1, findings);
                    return Ok(None);
                }
                Err(why) => return Err(damaged(&why)),
            },
        };
        let entries = records.push_bundle(&bytes).map_err(|e| damaged(&e))?;
        Ok(Some((key, version, entries)))
    }

    /// The writer's reading of the log: it tries up to [`MAX_VERSIONS_TRIED`] versions of every
    /// bundle key, where other readers try only the first of a key no checkpoint names
    /// ([`TAIL_VERSIONS_TRIED`]).
    pub(crate) fn for_writer(mut self) -> Self {
        self.for_writer = true;
        self
    }

    /// The writer's reading of the log past what is vouched for: an object there (a wider
    /// partial of the last signed index, an index after it) is taken only if `check` says it is
    /// the writer's own (its MAC). One that chains but is not (planted by someone with write
    /// access) is named and skipped, instead of being read and then refused for good (the
    /// writer signs nothing it did not write, so every later run stopped).
    pub(crate) fn with_tail_check(mut self, check: TailCheck) -> Self {
        self.tail_check = Some(check);
        self
    }

    /// Versions of a bundle key no checkpoint names that this reader tries.
    fn tail_versions(&self) -> usize {
        if self.for_writer {
            MAX_VERSIONS_TRIED
        } else {
            TAIL_VERSIONS_TRIED
        }
    }

    /// Whether version `version` of bundle key `key` is the writer's own (its MAC), when the
    /// writer reads ([`Self::with_tail_check`]); `true` for other readers. A second read of
    /// the object, with its metadata: only for what lies past what is vouched for (the unsigned
    /// tail, a bundle or two).
    async fn writers_own<S: Store>(
        &self,
        store: &S,
        key: &str,
        version: &str,
        width: u64,
    ) -> Result<bool> {
        let Some(TailCheck(check)) = &self.tail_check else {
            return Ok(true);
        };
        let max_len = mailvault_core::bundle::max_bundle_len(width);
        match store.get(key, Some(version), max_len).await {
            Ok(Some(object)) => Ok(check(key, &object)),
            Ok(None) => Ok(false),
            Err(e) if e.object_refused_for_good() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Names every bundle key of indices from `from` on as after the log, unread: once the log
    /// has ended, nothing after it is read (planted under thousands of indices, it would cost
    /// every reader a read each).
    fn name_after_the_log(&self, from: u64, findings: &mut Vec<LogObjectFinding>) {
        for (_, candidates) in self.bundles.iter().filter(|(index, _)| *index >= from) {
            findings.extend(
                candidates
                    .iter()
                    .map(|key| LogObjectFinding::AfterTheLog { key: key.clone() }),
            );
        }
    }

    /// For an index `trusted` entries reach into: the object under exactly the key that size
    /// names for it (the full bundle, or the partial of the width that size ends on), or a
    /// wider object of the index that follows and extends it byte for byte (the unsigned tail,
    /// the widest first). A copy planted under a wider key that chains but changes vouched-for
    /// entries would otherwise be read, fail the checkpoint and stop every reader; it is
    /// reported instead. `None`: the index is not vouched for, or that key holds nothing that
    /// follows. `first` (the first candidate's first version, read ahead) is taken if used.
    async fn read_vouched<S: Store>(
        &self,
        store: &S,
        records: &RecordLog,
        candidates: &[String],
        first: &mut Option<Result<Option<Vec<u8>>>>,
        trusted: u64,
        findings: &mut Vec<LogObjectFinding>,
    ) -> Result<Option<(String, String, Vec<u8>)>> {
        let Some((index, _)) = candidates.first().and_then(|k| parse_bundle_key(k)) else {
            return Ok(None);
        };
        let vouched = trusted
            .saturating_sub(index.saturating_mul(BUNDLE_WIDTH))
            .min(BUNDLE_WIDTH);
        let exact = bundle_key(index, vouched);
        if vouched == 0 || !candidates.contains(&exact) {
            return Ok(None);
        }
        let read_ahead_of = |key: Option<&String>, first: &mut Option<Result<Option<Vec<u8>>>>| {
            if key == candidates.first() {
                first.take()
            } else {
                None
            }
        };
        let exact_first = read_ahead_of(Some(&exact), first);
        let keys = std::slice::from_ref(&exact);
        let Ok(base) = self
            .first_following(
                store,
                records,
                keys,
                exact_first,
                None,
                findings,
                Tries {
                    versions_per_key: MAX_VERSIONS_TRIED,
                    unvouched: false,
                },
            )
            .await?
        else {
            return Ok(None);
        };
        let wider: Vec<String> = candidates
            .iter()
            .filter(|k| parse_bundle_key(k).is_some_and(|(_, width)| width > vouched))
            .cloned()
            .collect();
        let wider_first = read_ahead_of(wider.first(), first);
        // Nothing wider that extends it: the base alone. A store error is passed up, not taken
        // for that (the unsigned tail would be dropped, and a writer would log it again as
        // another history).
        let extended = self
            .first_following(
                store,
                records,
                &wider,
                wider_first,
                Some(&base.2),
                findings,
                Tries {
                    versions_per_key: self.tail_versions(),
                    unvouched: true,
                },
            )
            .await?;
        Ok(Some(extended.unwrap_or(base)))
    }

    /// The first version among `keys` (each key's versions oldest first, at most
    /// `tries.versions_per_key` of each) that follows `records` and holds as many entries as
    /// its key says, with `extending` starts with those bytes, and, where `tries.unvouched`
    /// and the writer reads, is the writer's own. `first`: the first version's
    /// bytes, read ahead. Returns its key, version and bytes; if none, why the first one tried
    /// was not taken (inner `Err`). A store error other than a refusal for good is an error.
    #[allow(clippy::too_many_arguments)] // one private step of push_bundle, called three ways
    async fn first_following<S: Store>(
        &self,
        store: &S,
        records: &RecordLog,
        keys: &[String],
        first: Option<Result<Option<Vec<u8>>>>,
        extending: Option<&[u8]>,
        findings: &mut Vec<LogObjectFinding>,
        tries: Tries,
    ) -> Result<std::result::Result<(String, String, Vec<u8>), String>> {
        let versions_per_key = tries.versions_per_key;
        let mut first_error: Option<String> = None;
        // Objects read and not taken: named if another one is taken, or past what is vouched
        // for (`extending`); otherwise the caller stops or names the keys itself.
        let mut rejected_versions = Vec::new();
        let mut first = first;
        // Owned pairs: an iterator of closures held across the reads below would make the
        // future not provably `Send`.
        let mut versions: Vec<(String, usize, String)> = Vec::new();
        for key in keys {
            for (nth, version) in self.versions(key).iter().enumerate() {
                versions.push((key.clone(), nth, version.clone()));
            }
        }
        for (key, nth, version) in versions {
            if nth >= versions_per_key {
                findings.push(LogObjectFinding::VersionNotRead {
                    key: key.clone(),
                    version: version.clone(),
                    why: tries.past_budget(),
                });
                continue;
            }
            let read = match first.take() {
                Some(prefetched) => prefetched,
                None => read_version(store, &key, &version).await,
            };
            let bytes = match read {
                Ok(Some(bytes)) => bytes,
                // Listed, then gone (an eventually consistent listing, or deleted meanwhile).
                Ok(None) => continue,
                // One object the store will not give whole does not hide the others.
                Err(e) if e.object_refused_for_good() => {
                    first_error.get_or_insert(e.to_string());
                    findings.push(LogObjectFinding::VersionNotRead {
                        key: key.clone(),
                        version: version.clone(),
                        why: e.to_string(),
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            let width = parse_bundle_key(&key).map_or(0, |(_, width)| width);
            let rejected = match records.check_bundle(&bytes) {
                // A bundle object holds exactly the entries its key names (§6); a shorter one
                // that chains is a truncated copy, which would hide the entries after it.
                Ok(entries) if entries.len() as u64 != width => {
                    format!("it holds {} entries, its key says {width}", entries.len())
                }
                Ok(_) if extending.is_some_and(|base| !bytes.starts_with(base)) => {
                    "it chains but does not extend the entries a checkpoint vouches for byte \
                     for byte"
                        .to_owned()
                }
                Ok(_)
                    if tries.unvouched
                        && !self.writers_own(store, &key, &version, width).await? =>
                {
                    // A planted version beneath the writer's own under this key is caught
                    // before it signs (`check_unsigned_tail`: readers would read that one).
                    "it is not this writer's (no valid MAC), so it is not part of the log this \
                     writer goes on from"
                        .to_owned()
                }
                Ok(_) => {
                    findings.append(&mut rejected_versions);
                    return Ok(Ok((key, version, bytes)));
                }
                Err(e) => e.to_string(),
            };
            first_error.get_or_insert(format!("{key}: {rejected}"));
            rejected_versions.push(LogObjectFinding::VersionNotRead {
                key,
                version,
                why: rejected,
            });
        }
        if extending.is_some() {
            findings.append(&mut rejected_versions);
        }
        Ok(Err(first_error.unwrap_or_else(|| {
            format!("no object of {} could be read", keys.join(", "))
        })))
    }
}

/// Versions of one log object (a bundle or a checkpoint key) a reader tries, oldest first,
/// before it gives up on the rest (mailvault writes one; each extra one is a GET of up to a
/// full bundle). The writer checks that its own version is among them
/// (`writer::readers_read_ours`), so versions planted under a key before it was written cannot
/// push mailvault's out of readers' reach unnoticed.
pub(crate) const MAX_VERSIONS_TRIED: usize = 16;

/// Versions of a bundle key a reader tries where nothing signed (or the writer's MAC) names
/// the key: the unsigned tail, wider partials of the index a checkpoint ends in, and indices
/// after it. The first written only: mailvault writes each key once, nothing there is evidence
/// yet, and trying [`MAX_VERSIONS_TRIED`] of each of an index's 257 keys would let objects
/// planted under them cost every reader about 4,000 reads. A version planted before the
/// writer's there (AWS S3 lets one through behind a delete marker) hides the tail from readers
/// until a checkpoint names the key, and then the budget is the key's 16. The writer itself
/// tries 16 ([`LogObjects::for_writer`]): the tail is what it resumes from.
pub(crate) const TAIL_VERSIONS_TRIED: usize = 1;

/// Reads one version of a log object; `None` if it was listed but is gone.
/// A bundle object's version, read no larger than a bundle of its key's width can be (an
/// object planted under a narrow partial key costs a reader that much, not 4 MiB).
async fn read_version<S: Store>(store: &S, key: &str, version: &str) -> Result<Option<Vec<u8>>> {
    let max_len = parse_bundle_key(key).map_or(MAX_LOG_OBJECT_LEN, |(_, width)| {
        mailvault_core::bundle::max_bundle_len(width)
    });
    Ok(store
        .get(key, Some(version), max_len)
        .await?
        .map(|o| o.bytes))
}

impl StoredLog {
    /// Reads the log of the archive `origin` from `store`, checking it against checkpoints
    /// signed by `key`. Refuses a log that does not match its newest checkpoint: writing on
    /// top of it would hide the damage (run `mailvault verify` to see what is wrong).
    /// `keep_entries: false` keeps only the ids of ingested records (what a writer needs),
    /// not every decoded entry (what prove, export and ls need).
    pub async fn load<S: Store>(
        store: &S,
        origin: &str,
        key: &NoteVerifier,
        keep_entries: bool,
    ) -> Result<Self> {
        let mut entries = Vec::new();
        let mut ingested = HashSet::new();
        let read = read_entries(store, origin, key, |entry| {
            if matches!(entry.body, EntryBody::Ingest { .. }) {
                ingested.insert(entry.record.clone());
            }
            if keep_entries {
                entries.push(entry);
            }
            Ok(())
        })
        .await?;
        let mut log = Self::indexed(origin, read.records, ingested, entries);
        log.head = read.head;
        log.head_note = read.head_note;
        Ok(log)
    }

    /// The log of `origin` made of `records` (resumed by the writer from its edge), with its
    /// newest checkpoint.
    pub(crate) fn from_records(
        origin: &str,
        records: RecordLog,
        head: Option<(SignedHead, String)>,
    ) -> Self {
        let mut log = Self::indexed(origin, records, HashSet::new(), Vec::new());
        if let Some((h, note)) = head {
            log.head = Some(h);
            log.head_note = Some(note);
        }
        log
    }

    /// A log of decoded `entries`, without their chain (for tests of what reads entries).
    #[cfg(test)]
    pub(crate) fn from_entries(origin: &str, entries: Vec<Entry>) -> Self {
        Self::indexed(origin, RecordLog::new(), HashSet::new(), entries)
    }

    fn indexed(
        origin: &str,
        records: RecordLog,
        ingested: HashSet<RecordId>,
        entries: Vec<Entry>,
    ) -> Self {
        let mut positions: HashMap<String, Positions> = HashMap::new();
        for (at, entry) in entries.iter().enumerate() {
            let p = positions
                .entry(entry.record.as_str().to_owned())
                .or_insert(Positions {
                    ingest: None,
                    latest: at,
                });
            p.latest = at;
            if p.ingest.is_none() && matches!(entry.body, EntryBody::Ingest { .. }) {
                p.ingest = Some(at);
            }
        }
        Self {
            origin: origin.to_owned(),
            records,
            head: None,
            head_note: None,
            ingested,
            entries,
            positions,
        }
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The ingest entry of a record.
    pub fn ingest_of(&self, id: &str) -> Option<&Entry> {
        self.entries.get(self.positions.get(id)?.ingest?)
    }

    /// The newest entry of a record (its tombstone, if destroyed).
    pub fn latest_of(&self, id: &str) -> Option<&Entry> {
        self.entries.get(self.positions.get(id)?.latest)
    }
}

/// A log read to its end by [`read_entries`]: the chain-checked Merkle tree and the newest
/// signed checkpoint it matches.
#[derive(Debug)]
pub struct ReadLog {
    /// The record log's tree (the last bundle's bytes only).
    pub records: RecordLog,
    /// The newest checkpoint signed by the archive's key, consistent with the entries.
    pub head: Option<SignedHead>,
    /// The note of that checkpoint.
    pub head_note: Option<String>,
    /// Delete markers and second versions found on log objects, a sentence each: the log was
    /// read from beneath them, but someone with write access to the store put them there.
    pub warnings: Vec<String>,
}

/// Reads the log of the archive `origin` one bundle at a time (a few read ahead), checks each
/// bundle's indices and chain, hands its entries to `each` in log order, and at the end checks
/// them against the newest checkpoint signed by `key`. Memory: the Merkle tree's hashes and the
/// bundles in flight, whatever the log's length; what `each` keeps is the caller's. An error
/// from `each` stops the reading.
///
/// `each` sees entries before the checkpoint is checked: a caller must not act on them until
/// this returns `Ok` (what they say is only vouched for then).
pub async fn read_entries<S: Store>(
    store: &S,
    origin: &str,
    key: &NoteVerifier,
    mut each: impl FnMut(Entry) -> Result<()>,
) -> Result<ReadLog> {
    let objects = LogObjects::list(store).await?;
    let objects = &objects;
    let mut findings = objects.findings.clone();
    // The newest checkpoint first: the bundle its size ends in is read by the key it names.
    let (newest, skipped) = newest_checkpoint(store, objects, origin, key).await?;
    findings.extend(skipped);
    let trusted = newest.as_ref().map_or(0, |(head, _)| head.size);
    let mut bundles = objects.read_ahead(store, objects.bundle_candidates(0), BUNDLES_IN_FLIGHT);
    let mut records = RecordLog::new();
    while let Some((candidates, first)) = bundles.next().await {
        let Some((_, _, entries)) = objects
            .push_bundle(
                store,
                &mut records,
                &candidates,
                first,
                trusted,
                &mut findings,
            )
            .await?
        else {
            break;
        };
        for entry in entries {
            each(entry)?;
        }
    }
    let (head, head_note) = match newest {
        None => (None, None),
        Some((head, note)) => {
            if records.root_at(head.size) != Some(head.root) {
                return Err(damaged(&format!(
                    "checkpoint {} does not match the stored entries",
                    head.size
                )));
            }
            (Some(head), Some(note))
        }
    };
    Ok(ReadLog {
        records,
        head,
        head_note,
        warnings: findings.iter().map(ToString::to_string).collect(),
    })
}

/// The log replayed as it is read ([`read_entries`]): one compact state per record (the
/// [`Replay`]), not the entries, so memory grows by a couple of hundred bytes a record.
#[derive(Debug)]
pub struct ReplayedLog {
    /// Every record's history.
    pub replay: Replay,
    /// The tree and the checkpoint the entries were checked against.
    pub log: ReadLog,
    /// The first entry that does not tell the story mailvault writes (its position and what is
    /// wrong): `verify` reports it; destruction refuses to act on such a log.
    pub first_anomaly: Option<(u64, Anomaly)>,
}

/// Reads and replays the log of `origin` (checkpoints signed by `key`): what `ls`, `plan`,
/// destruction and the lifecycle steps read.
pub async fn replay_log<S: Store>(
    store: &S,
    origin: &str,
    key: &NoteVerifier,
) -> Result<ReplayedLog> {
    let mut replay = Replay::new();
    let mut first_anomaly = None;
    let log = read_entries(store, origin, key, |entry| {
        let index = entry.index;
        if let Err(anomaly) = replay.apply(entry)
            && first_anomaly.is_none()
        {
            first_anomaly = Some((index, anomaly));
        }
        Ok(())
    })
    .await?;
    let mut log = log;
    let signed = log.head.map_or(0, |h| h.size);
    if replay.size() > signed {
        // Shown as logged, but no signature vouches for them yet: a run in progress, one that
        // stopped before signing, or entries put there by someone with write access.
        log.warnings.push(format!(
            "{} entries after the newest signed checkpoint (size {signed}) are not vouched for \
             by a signature yet (a run in progress, a run that stopped before signing, or \
             entries someone with write access to the bucket put there); what they say is shown \
             as logged",
            replay.size() - signed
        ));
    }
    Ok(ReplayedLog {
        replay,
        log,
        first_anomaly,
    })
}

/// Bundles read ahead while the ones before are decoded: a large log is thousands of them,
/// and each read is a round trip to the store.
const BUNDLES_IN_FLIGHT: usize = 8;

/// The newest checkpoint among the log objects that opens with `key`: its head and its note,
/// with the checkpoint keys above it that do not (planted: only the archive's key signs a
/// checkpoint, so skipping them cannot roll the log back; named in the findings). Two versions
/// of one size that open with different roots are a fork, and refused.
pub(crate) async fn newest_checkpoint<S: Store>(
    store: &S,
    objects: &LogObjects,
    origin: &str,
    key: &NoteVerifier,
) -> Result<(Option<(SignedHead, String)>, Vec<LogObjectFinding>)> {
    let mut sizes: Vec<u64> = objects
        .listing
        .checkpoints
        .iter()
        .filter_map(|k| parse_checkpoint_key(k))
        .collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let mut skipped = Vec::new();
    for size in sizes {
        let name = checkpoint_key(size);
        let mut opened: Option<(SignedHead, String)> = None;
        let mut why = None;
        for version in objects.versions(&name).iter().take(MAX_VERSIONS_TRIED) {
            let note = match store
                .get(
                    &name,
                    Some(version),
                    mailvault_core::note::MAX_NOTE_LEN as u64,
                )
                .await
            {
                Ok(Some(object)) => object.bytes,
                Ok(None) => continue,
                Err(e) if e.object_refused_for_good() => {
                    why.get_or_insert(e.to_string());
                    continue;
                }
                Err(e) => return Err(e),
            };
            match Checkpoint::open(&note, std::slice::from_ref(key), Some(origin)) {
                Ok(cp) if cp.size != size => {
                    why.get_or_insert(format!("it signs size {}", cp.size));
                }
                Ok(cp) => match &opened {
                    Some((head, _)) if head.root != cp.root => {
                        return Err(damaged(&format!(
                            "two checkpoints of size {size} with different roots are signed by \
                             this archive's key (a fork)"
                        )));
                    }
                    Some(_) => {}
                    None => {
                        let head = SignedHead {
                            size: cp.size,
                            root: cp.root,
                        };
                        opened = Some((head, String::from_utf8_lossy(&note).into_owned()));
                    }
                },
                Err(e) => {
                    why.get_or_insert(e.to_string());
                }
            }
        }
        match opened {
            Some(head) => return Ok((Some(head), skipped)),
            None => skipped.push(LogObjectFinding::NotACheckpoint {
                key: name,
                why: why.unwrap_or_else(|| "no version could be read".into()),
            }),
        }
    }
    Ok((None, skipped))
}

pub(crate) fn damaged(e: &dyn std::fmt::Display) -> Error {
    Error::Conflict(format!(
        "the log in the store is damaged ({e}); run `mailvault verify` for a full report"
    ))
}
