//! The records lifecycle after ingest: which records may be destroyed, how a destruction run
//! proceeds so that a crash anywhere completes on the next run, and the certificate it leaves.
//!
//! `entries --replay--> RecordHistory x disposition x approvals x now --> Eligibility -->
//! DestructionPlan --> destroy-authorized, checkpoint, delete, tombstones, checkpoint, certificate`
//!
//! Nothing here does I/O: the executor lists and deletes object versions, appends the entries
//! this module hands it, signs checkpoints and stores the certificate. Every decision about
//! whether a record may go is taken by [`destruction_eligibility`], and nowhere else.

use crate::entry::{Disposition, EntryBody, RecordId, RetainUntil};
use crate::hash::Hash;
use crate::time::UnixTime;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub mod certificate;
pub mod disposition;
pub mod holds;
pub mod policy_edit;
pub mod review_extension;
pub(crate) mod table;

pub use table::Anomaly;
use table::RecordTable;

/// What the matched retention rule says happens when retention ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleDisposition {
    /// Destroy on schedule.
    Destroy,
    /// Destroy only once a records officer approved (a `DispositionReview`).
    Review,
    /// Never destroy.
    Permanent,
}

/// A records officer's approval of one due batch (an approved `DispositionReview`): the
/// records of `series` whose retain-until lies in `earliest..=latest` and that were ingested
/// before the log had `ingested_before` entries.
///
/// A batch is the records that were due for review when the review was created, held ones
/// included. Records fall due in retain-until order, so those that fall due later have a later
/// retain-until and are not covered; a record ingested later with an earlier retain-until (old
/// mail archived late) is not covered either, by `ingested_before`. [`records_digest`] of the
/// batch's ids is written into the review; the executor recomputes it before relying on an
/// approval (see [`ReviewBatch`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Approval {
    /// `namespace/name` of the review.
    pub review: String,
    /// Who decided (as written in the review).
    pub decided_by: String,
    /// The order of destruction or other reference the officer gave.
    pub reference: String,
    /// The record series approved.
    pub series: String,
    /// Earliest retain-until in the batch.
    pub earliest: UnixTime,
    /// Latest retain-until in the batch.
    pub latest: UnixTime,
    /// The log's size when the batch was computed: records ingested at this position or
    /// later were not in it.
    pub ingested_before: u64,
}

impl Approval {
    /// Whether this approval covers the record.
    pub fn covers(&self, history: &RecordHistory<'_>) -> bool {
        history.series == self.series
            && history.ingest_index < self.ingested_before
            && matches!(history.retain_until, RetainUntil::Until(t) if self.earliest <= t && t <= self.latest)
    }
}

/// A record as the log tells it, after every entry replayed so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHistory<'a> {
    /// The record id.
    pub record: &'a str,
    /// Its record series.
    pub series: &'a str,
    /// Position of its ingest entry.
    pub ingest_index: u64,
    /// When its ingest entry was logged.
    pub ingested_at: UnixTime,
    /// Its object key (`records/<id>`).
    pub object_key: Cow<'a, str>,
    /// The version the ingest entry logged.
    pub object_version: &'a str,
    /// Length of the stored bytes.
    pub stored_size: u64,
    /// The dictionary it was compressed with: its hash and the logged version of its object.
    pub dictionary: Option<(Hash, &'a str)>,
    /// Retain-until as ingested, then extended.
    pub retain_until: RetainUntil,
    /// Legal holds in force.
    pub holds: Vec<&'a str>,
    /// The first `destroy-authorized` entry, if any.
    pub authorized: Option<Authorization>,
    /// The tombstone, if any.
    pub destroyed: Option<Destruction>,
}

/// A logged `destroy-authorized`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// Its position in the log.
    pub index: u64,
    /// When it was logged.
    pub at: UnixTime,
    /// The retain-until that had ended.
    pub retain_until: RetainUntil,
    /// Why.
    pub disposition: Disposition,
}

/// A logged tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destruction {
    /// Its position in the log.
    pub index: u64,
    /// When it was logged.
    pub at: UnixTime,
}

/// The log replayed into one compact state per record (about 160 bytes a record), fed one
/// entry at a time in log order.
#[derive(Debug, Default)]
pub struct Replay {
    table: RecordTable,
    size: u64,
}

impl Replay {
    /// An empty replay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the next entry. An anomaly is reported and the replay goes on (the verifier
    /// reports it as a log fault; the executor refuses to destroy from a log that has one).
    pub fn apply(&mut self, entry: crate::entry::Entry) -> Result<(), Anomaly> {
        self.size += 1;
        self.table.apply(entry)
    }

    /// Entries applied.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Records ingested.
    pub fn len(&self) -> usize {
        self.table.states.len()
    }

    /// True when no record was ingested.
    pub fn is_empty(&self) -> bool {
        self.table.states.is_empty()
    }

    /// The history of one record.
    pub fn get(&self, record: &str) -> Option<RecordHistory<'_>> {
        self.table.find(record).map(|i| history(&self.table, i))
    }

    /// Every record's history, in ingest order.
    pub fn histories(&self) -> impl Iterator<Item = RecordHistory<'_>> {
        (0..self.table.states.len()).map(|i| history(&self.table, i))
    }
}

fn history(table: &RecordTable, i: usize) -> RecordHistory<'_> {
    let s = &table.states[i];
    RecordHistory {
        record: table.get(s.id),
        series: table.series(i),
        ingest_index: s.ingest_index,
        ingested_at: s.ingested_at,
        object_key: s.unusual_key.map_or_else(
            || Cow::Owned(table.object_key(i)),
            |k| Cow::Borrowed(table.get(k)),
        ),
        object_version: table.get(s.object_version),
        stored_size: s.stored_size,
        dictionary: s.dictionary.map(|d| {
            let d = &table.dictionaries[d as usize];
            (d.sha256, d.object_version.as_str())
        }),
        retain_until: s.retain_until,
        holds: s
            .holds()
            .map(|h| h.iter().map(String::as_str).collect())
            .unwrap_or_default(),
        authorized: s.authorization().map(|a| Authorization {
            index: a.index,
            at: a.at,
            retain_until: a.retain_until,
            disposition: a.disposition,
        }),
        destroyed: s.tombstone().map(|t| Destruction {
            index: t.index,
            at: t.at,
        }),
    }
}

/// Whether a record may be destroyed now, and if not, why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Eligibility {
    /// May be destroyed: log `destroy-authorized` with this retain-until and disposition.
    Eligible {
        /// The retain-until that ended.
        retain_until: UnixTime,
        /// Why it may go.
        disposition: Disposition,
        /// The approval, for a `Review` record.
        approval: Option<Approval>,
    },
    /// Still retained until then.
    Retained(UnixTime),
    /// A permanent record (retain-until `permanent`, or the rule's disposition `Permanent`).
    Permanent,
    /// Legal holds in force.
    Held(Vec<String>),
    /// Retention ended, the rule says `Review`, and no approval covers it.
    AwaitingReview,
    /// Destruction is authorized and under way: [`resume`] finishes it.
    InProgress,
    /// Already destroyed (a tombstone is logged).
    Destroyed,
}

/// Why a record is not destroyed, for counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Blocked {
    /// Retention has not ended.
    Retained,
    /// A permanent record.
    Permanent,
    /// Under legal hold.
    Held,
    /// Waiting for a records officer.
    AwaitingReview,
}

impl Blocked {
    /// The reason as status and reports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retained => "Retained",
            Self::Permanent => "Permanent",
            Self::Held => "Held",
            Self::AwaitingReview => "AwaitingReview",
        }
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Eligibility {
    /// The reason it is blocked, if it is.
    pub fn blocked(&self) -> Option<Blocked> {
        match self {
            Self::Retained(_) => Some(Blocked::Retained),
            Self::Permanent => Some(Blocked::Permanent),
            Self::Held(_) => Some(Blocked::Held),
            Self::AwaitingReview => Some(Blocked::AwaitingReview),
            Self::Eligible { .. } | Self::InProgress | Self::Destroyed => None,
        }
    }
}

impl fmt::Display for Eligibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eligible {
                retain_until,
                approval,
                ..
            } => {
                write!(f, "eligible: retention ended at {retain_until}")?;
                if let Some(a) = approval {
                    write!(f, ", approved by {} ({})", a.decided_by, a.reference)?;
                }
                Ok(())
            }
            Self::Retained(t) => write!(f, "still retained until {t}"),
            Self::Permanent => f.write_str("a permanent record"),
            Self::Held(h) => write!(f, "held by {}", h.join(", ")),
            Self::AwaitingReview => f.write_str("awaiting review"),
            Self::InProgress => f.write_str("destruction in progress"),
            Self::Destroyed => f.write_str("destroyed"),
        }
    }
}

/// The one place that decides whether a record may be destroyed at `now`.
///
/// In this order: a tombstone means `Destroyed`; a logged authorization means `InProgress`
/// (finish it, never decide again); a permanent retain-until or a `Permanent` disposition means
/// `Permanent`; a hold in force means `Held` (a held record is reported held even while still
/// retained, because the hold is what will keep it after); retention not ended means
/// `Retained`; `Review` needs an approval that covers the record, else `AwaitingReview`.
pub fn destruction_eligibility(
    history: &RecordHistory<'_>,
    now: UnixTime,
    disposition: RuleDisposition,
    approvals: &[Approval],
) -> Eligibility {
    if history.destroyed.is_some() {
        return Eligibility::Destroyed;
    }
    if history.authorized.is_some() {
        return Eligibility::InProgress;
    }
    let until = match history.retain_until {
        RetainUntil::Permanent => return Eligibility::Permanent,
        _ if disposition == RuleDisposition::Permanent => return Eligibility::Permanent,
        RetainUntil::Until(t) => t,
    };
    if !history.holds.is_empty() {
        return Eligibility::Held(history.holds.iter().map(|h| (*h).to_owned()).collect());
    }
    if now < until {
        return Eligibility::Retained(until);
    }
    match disposition {
        RuleDisposition::Destroy => Eligibility::Eligible {
            retain_until: until,
            disposition: Disposition::Destroy,
            approval: None,
        },
        RuleDisposition::Review => match approvals.iter().find(|a| a.covers(history)) {
            Some(a) => Eligibility::Eligible {
                retain_until: until,
                disposition: Disposition::ReviewApproved,
                approval: Some(a.clone()),
            },
            None => Eligibility::AwaitingReview,
        },
        RuleDisposition::Permanent => Eligibility::Permanent,
    }
}

/// SHA-256 over record ids sorted bytewise, each followed by `\n`: how a review and a
/// certificate name a set of records without listing it.
pub fn records_digest<'a>(ids: impl IntoIterator<Item = &'a str>) -> Hash {
    let mut ids: Vec<&str> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut text = String::with_capacity(ids.len() * 33);
    for id in ids {
        text.push_str(id);
        text.push('\n');
    }
    Hash::of(text.as_bytes())
}

/// [`records_digest`] of a review's batch as the log tells it now: the records `in_batch`
/// picks, except those destroyed under a rule (the batch the officer saw, whatever happened to
/// it since; records destroyed under an approval stay in). The one check an `Approved` and an
/// `Extended` review both pass before the executor relies on them: equal to the review's
/// `recordsDigest`, or the batch changed and a new review is due.
pub fn batch_digest<'a>(replay: &'a Replay, in_batch: impl Fn(&RecordHistory<'a>) -> bool) -> Hash {
    records_digest(
        replay
            .histories()
            .filter(|h| in_batch(h))
            .filter(|h| {
                h.authorized
                    .is_none_or(|a| a.disposition != Disposition::Destroy)
            })
            .map(|h| h.record),
    )
}

/// One record the plan destroys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedDestruction {
    /// The record.
    pub record: RecordId,
    /// Its series.
    pub series: String,
    /// Its object key.
    pub object_key: String,
    /// The version its ingest logged.
    pub object_version: String,
    /// Stored bytes.
    pub bytes: u64,
    /// The retain-until that ended.
    pub retain_until: UnixTime,
    /// Why it may go.
    pub disposition: Disposition,
    /// The approval, for a reviewed record.
    pub approval: Option<Approval>,
}

/// Records of one series, with their totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesBatch {
    /// The record series.
    pub series: String,
    /// The records, by record id.
    pub records: Vec<PlannedDestruction>,
    /// Their stored bytes.
    pub bytes: u64,
    /// Earliest retain-until among them.
    pub earliest: UnixTime,
    /// Latest retain-until among them.
    pub latest: UnixTime,
}

impl SeriesBatch {
    fn new(series: String, mut records: Vec<PlannedDestruction>) -> Self {
        records.sort_by(|a, b| a.record.cmp(&b.record));
        let bytes = records.iter().map(|r| r.bytes).sum();
        let earliest = records
            .iter()
            .map(|r| r.retain_until)
            .min()
            .unwrap_or_default();
        let latest = records
            .iter()
            .map(|r| r.retain_until)
            .max()
            .unwrap_or_default();
        Self {
            series,
            records,
            bytes,
            earliest,
            latest,
        }
    }

    /// Number of records.
    pub fn count(&self) -> usize {
        self.records.len()
    }

    /// [`records_digest`] of the batch's record ids.
    pub fn digest(&self) -> Hash {
        records_digest(self.records.iter().map(|r| r.record.as_str()))
    }
}

/// Records due for a records officer's review, per series: what a `DispositionReview` shows.
pub type ReviewBatch = SeriesBatch;

/// Most records one destruction run takes (the rest wait for the next run): keeps a run's
/// certificate, which lists every record, under [`certificate::MAX_CERTIFICATE_LEN`].
pub const MAX_RECORDS_PER_RUN: usize = 100_000;

/// What a destruction run would do now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestructionPlan {
    /// Records to destroy, by series (series in byte order, records by id).
    pub destroy: Vec<SeriesBatch>,
    /// Records due (retention ended) whose rule says `Review` and that no approval covers, held
    /// ones included, by series: the batches for `DispositionReview`s. They are also counted in
    /// `blocked` (as `AwaitingReview`, or `Held`).
    pub review: Vec<ReviewBatch>,
    /// Records not destroyed, by reason.
    pub blocked: BTreeMap<Blocked, u64>,
    /// Records whose destruction is authorized but not finished ([`resume`] handles them).
    pub in_progress: u64,
    /// Records already destroyed.
    pub destroyed: u64,
    /// Eligible records left for a later run ([`MAX_RECORDS_PER_RUN`]).
    pub deferred: u64,
}

impl DestructionPlan {
    /// Plans a run at `now`: `disposition` gives each record's rule disposition under the
    /// policy in force, `approvals` the approved reviews.
    pub fn new<'a>(
        histories: impl IntoIterator<Item = RecordHistory<'a>>,
        disposition: &dyn Fn(&RecordHistory<'_>) -> RuleDisposition,
        approvals: &[Approval],
        now: UnixTime,
    ) -> Self {
        let mut plan = Self::default();
        let mut destroy: BTreeMap<String, Vec<PlannedDestruction>> = BTreeMap::new();
        let mut review: BTreeMap<String, Vec<PlannedDestruction>> = BTreeMap::new();
        let mut eligible = 0usize;
        for h in histories {
            let rule = disposition(&h);
            let planned = |retain_until, disposition, approval| PlannedDestruction {
                record: record_id(h.record),
                series: h.series.to_owned(),
                object_key: h.object_key.clone().into_owned(),
                object_version: h.object_version.to_owned(),
                bytes: h.stored_size,
                retain_until,
                disposition,
                approval,
            };
            match destruction_eligibility(&h, now, rule, approvals) {
                Eligibility::Eligible {
                    retain_until,
                    disposition,
                    approval,
                } => {
                    if eligible >= MAX_RECORDS_PER_RUN {
                        plan.deferred += 1;
                        continue;
                    }
                    eligible += 1;
                    destroy
                        .entry(h.series.to_owned())
                        .or_default()
                        .push(planned(retain_until, disposition, approval));
                }
                Eligibility::InProgress => plan.in_progress += 1,
                Eligibility::Destroyed => plan.destroyed += 1,
                Eligibility::AwaitingReview => {
                    *plan.blocked.entry(Blocked::AwaitingReview).or_default() += 1;
                    if let RetainUntil::Until(t) = h.retain_until {
                        review.entry(h.series.to_owned()).or_default().push(planned(
                            t,
                            Disposition::ReviewApproved,
                            None,
                        ));
                    }
                }
                other => {
                    if let Some(b) = other.blocked() {
                        *plan.blocked.entry(b).or_default() += 1;
                    }
                    // A held record is reviewed with its batch, so that an approval never
                    // covers a record the officer did not see once the hold is released.
                    if let (Eligibility::Held(_), RuleDisposition::Review, RetainUntil::Until(t)) =
                        (&other, rule, h.retain_until)
                        && t <= now
                        && !approvals.iter().any(|a| a.covers(&h))
                    {
                        review.entry(h.series.to_owned()).or_default().push(planned(
                            t,
                            Disposition::ReviewApproved,
                            None,
                        ));
                    }
                }
            }
        }
        plan.destroy = destroy
            .into_iter()
            .map(|(s, r)| SeriesBatch::new(s, r))
            .collect();
        plan.review = review
            .into_iter()
            .map(|(s, r)| SeriesBatch::new(s, r))
            .collect();
        plan
    }

    /// Records to destroy.
    pub fn count(&self) -> usize {
        self.destroy.iter().map(SeriesBatch::count).sum()
    }

    /// Phase one of the run: the `destroy-authorized` entries to append, in plan order. Append
    /// them all, write their bundles and sign a checkpoint before deleting anything.
    pub fn authorizations(&self) -> Vec<(RecordId, EntryBody)> {
        self.destroy
            .iter()
            .flat_map(|b| &b.records)
            .map(|r| {
                (
                    r.record.clone(),
                    EntryBody::DestroyAuthorized {
                        retain_until: RetainUntil::Until(r.retain_until),
                        disposition: r.disposition,
                    },
                )
            })
            .collect()
    }
}

/// One version of an object as the store lists it, for deleting.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldVersion {
    /// Object key.
    pub key: String,
    /// Version id.
    pub version_id: String,
    /// An S3 delete marker.
    pub delete_marker: bool,
}

/// What is left to do for one record whose destruction was authorized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// Delete these versions (data versions and delete markers, of the record and of its
    /// sidecar), list again, and ask again.
    Delete(Vec<HeldVersion>),
    /// Nothing remains in the store: append this tombstone (boxed: an entry body is large
    /// beside the other steps).
    Tombstone(RecordId, Box<EntryBody>),
    /// The tombstone is logged: nothing to do.
    Done,
    /// No destruction was authorized: the record is not this protocol's business.
    NotAuthorized,
}

/// Phase two, for one record: given what the store still holds under the record's object key
/// and its sidecar's (`held`), what remains to do: a crash at any point leaves a state this
/// function resumes from, and the tombstone is produced only once nothing remains, and never
/// for a record that has one. (The executor deletes in [`deletion_order`] until its listing
/// is empty, then asks this with `held` empty for the tombstone.)
///
/// `deleted` is what this run deleted for the record so far (empty after a crash: the
/// tombstone then names the logged version, the one version the log knows was there).
pub fn next_step(
    history: &RecordHistory<'_>,
    held: &[HeldVersion],
    deleted: &[HeldVersion],
) -> NextStep {
    if history.destroyed.is_some() {
        return NextStep::Done;
    }
    if history.authorized.is_none() {
        return NextStep::NotAuthorized;
    }
    if !held.is_empty() {
        return NextStep::Delete(deletion_order(held));
    }
    NextStep::Tombstone(
        record_id(history.record),
        Box::new(tombstone(history, deleted)),
    )
}

/// The order in which to delete what the store holds under a record's key: by key, data
/// versions before delete markers (a marker deleted first would make the data version current
/// again for plain readers in between).
pub fn deletion_order(held: &[HeldVersion]) -> Vec<HeldVersion> {
    let mut v = held.to_vec();
    v.sort_by(|a, b| {
        (a.key.as_str(), a.delete_marker, a.version_id.as_str()).cmp(&(
            b.key.as_str(),
            b.delete_marker,
            b.version_id.as_str(),
        ))
    });
    v
}

/// A replayed id as a `RecordId`. Every id in a replay came from a decoded entry, so it is
/// valid; the fallback only keeps this total.
fn record_id(id: &str) -> RecordId {
    RecordId::new(id).unwrap_or_else(|_| RecordId::from_hash(&Hash::of(id.as_bytes())))
}

/// The tombstone for a record: its object key and the versions deleted under it, the logged
/// version first when an earlier, crashed attempt deleted it (the log knows it was there).
pub fn tombstone(history: &RecordHistory<'_>, deleted: &[HeldVersion]) -> EntryBody {
    let mut versions: Vec<String> = Vec::new();
    if !deleted
        .iter()
        .any(|d| d.key == history.object_key && d.version_id == history.object_version)
    {
        versions.push(history.object_version.to_owned());
    }
    versions.extend(
        deleted
            .iter()
            .filter(|d| d.key == history.object_key)
            .map(|d| d.version_id.clone()),
    );
    EntryBody::Destroyed {
        object_key: history.object_key.clone().into_owned(),
        object_versions: versions,
    }
}

/// Records whose destruction is authorized and not finished: what a run does first, before
/// planning anything new.
pub fn pending(replay: &Replay) -> impl Iterator<Item = RecordHistory<'_>> {
    replay
        .histories()
        .filter(|h| h.authorized.is_some() && h.destroyed.is_none())
}

/// Destroyed records that no certificate lists yet (`certified` holds every record id the
/// archive's stored certificates list): the next certificate must list them. Sorted by id.
pub fn uncertified<'a>(replay: &'a Replay, certified: &BTreeSet<&str>) -> Vec<RecordHistory<'a>> {
    let mut out: Vec<RecordHistory<'a>> = replay
        .histories()
        .filter(|h| h.destroyed.is_some() && !certified.contains(h.record))
        .collect();
    out.sort_by(|a, b| a.record.cmp(b.record));
    out
}

#[cfg(test)]
mod tests;
