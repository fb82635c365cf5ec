//! The destruction run: the executor around the core's lifecycle decisions.
//!
//! `log --Replay--> pending? finish them; DestructionPlan --> destroy-authorized, checkpoint,
//! delete versions, tombstones, checkpoint, certificate (signed, COMPLIANCE-locked)`
//!
//! Every decision comes from [`mailvault_core::lifecycle`]: which record may go
//! (`destruction_eligibility`, through `DestructionPlan`), in which order a record's versions
//! are deleted (`deletion_order`), its tombstone once nothing is left (`next_step`), which
//! destroyed records still need a certificate (`uncertified`). Here: reading the log, listing
//! and deleting versions, appending through the [`RecordWriter`], storing the certificate.
//! `mailvault destroy`, `mailvault plan` and the operator's scheduled run all call [`run`] (or
//! [`preview`]), so a plan printed is the plan the next run carries out.
//!
//! A record maps to its rule disposition by its series under the policy in force
//! ([`SeriesDispositions`]: several rules of one series give the most conservative; a series the
//! policy no longer names is `Review`).

use crate::crd::{DispositionReview, ReviewDecision};
use crate::reader::replay_log;
use crate::store::{ObjectMetadata, Store};
use crate::writer::RecordWriter;
use crate::{Error, Result};
use futures::StreamExt as _;
use mailvault_core::entry::{LockMode, RecordId, RetainUntil};
use mailvault_core::layout::{
    CERTIFICATES_PREFIX, certificate_key, index_key, parse_certificate_key,
};
use mailvault_core::lifecycle::certificate::{
    Certificate, CertifiedAuthorization, CertifiedRecord, MAX_CERTIFICATE_LEN,
    METHOD_S3_COMPLIANCE, run_id,
};
use mailvault_core::lifecycle::disposition::SeriesDispositions;
use mailvault_core::lifecycle::review_extension::{
    ExtensionDecision, ExtensionOrder, extension_decision,
};
use mailvault_core::lifecycle::{
    Approval, DestructionPlan, Eligibility, HeldVersion, MAX_RECORDS_PER_RUN, NextStep,
    RecordHistory, Replay, SeriesBatch, batch_digest, deletion_order, destruction_eligibility,
    next_step, pending, uncertified,
};
use mailvault_core::log::RecordLog;
use mailvault_core::note::{NoteSigner, NoteVerifier};
use mailvault_core::rules::RetentionSchedule;
use mailvault_core::{Hash, UnixTime};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The method stated by a certificate of a `file:` store.
pub const METHOD_LOCAL_DIRECTORY: &str =
    "deleted the record file and its sidecar from a local directory (not WORM)";

/// Rounds of list-then-delete for one record before the run gives up on it (a store that
/// keeps showing versions it said it deleted).
const MAX_DELETE_ROUNDS: usize = 4;

/// Records whose deletions run at once. Each record's are a few listings and deletions one
/// after the other, so one at a time a run is bound by the store's round trip: at 20 ms, the
/// six requests of a record would take 100,000 records over three hours. Tombstones are still
/// appended one by one, in the plan's order.
const DELETING_AT_ONCE: usize = 16;

/// A records officer's approval as the executor receives it: the core's [`Approval`] and the
/// digest of the batch the officer saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewApproval {
    /// What the approval covers.
    pub approval: Approval,
    /// `recordsDigest` of the review.
    pub records_digest: Hash,
}

impl ReviewApproval {
    /// The approval a `DispositionReview` carries: `None` unless it is `Approved`. A review
    /// that says `Approved` without who and a reference, or with dates or a digest that do not
    /// parse, is refused (admission refuses them too).
    pub fn from_review(review: &DispositionReview) -> Result<Option<Self>> {
        if review.spec.decision != ReviewDecision::Approved {
            return Ok(None);
        }
        let bad =
            |what: &str| Error::Usage(format!("DispositionReview {}: {what}", review_name(review)));
        let reference = review
            .spec
            .reference
            .clone()
            .ok_or_else(|| bad("Approved without reference"))?;
        Self::batch_of(review, reference).map(Some)
    }

    /// The batch a decided review names, with who decided and `reference`.
    fn batch_of(review: &DispositionReview, reference: String) -> Result<Self> {
        let spec = &review.spec;
        let name = review_name(review);
        let bad = |what: &str| Error::Usage(format!("DispositionReview {name}: {what}"));
        let time = |s: &str| UnixTime::parse(s).map_err(|e| bad(&e.to_string()));
        Ok(Self {
            approval: Approval {
                decided_by: spec
                    .decided_by
                    .clone()
                    .ok_or_else(|| bad(&format!("{:?} without decidedBy", spec.decision)))?,
                reference,
                series: spec.record_series.clone(),
                earliest: time(&spec.earliest_retain_until)?,
                latest: time(&spec.latest_retain_until)?,
                ingested_before: spec.log_size,
                review: name.clone(),
            },
            records_digest: Hash::from_hex(&spec.records_digest)
                .map_err(|e| bad(&format!("recordsDigest: {e}")))?,
        })
    }
}

/// `namespace/name` of a review.
pub fn review_name(review: &DispositionReview) -> String {
    format!(
        "{}/{}",
        review.metadata.namespace.as_deref().unwrap_or("default"),
        review.metadata.name.as_deref().unwrap_or("")
    )
}

/// The extension order an `Extended` review carries: `None` unless it is `Extended`. One
/// without who or a date, or with a date or digest that does not parse, is refused.
pub fn extension_from_review(review: &DispositionReview) -> Result<Option<ExtensionOrder>> {
    let spec = &review.spec;
    if spec.decision != ReviewDecision::Extended {
        return Ok(None);
    }
    let batch = ReviewApproval::batch_of(review, spec.reference.clone().unwrap_or_default())?;
    let extend_until = spec
        .extend_until
        .as_deref()
        .ok_or_else(|| {
            Error::Usage(format!(
                "DispositionReview {}: Extended without extendUntil",
                batch.approval.review
            ))
        })
        .and_then(|s| {
            UnixTime::parse(s).map_err(|e| {
                Error::Usage(format!(
                    "DispositionReview {}: extendUntil: {e}",
                    batch.approval.review
                ))
            })
        })?;
    Ok(Some(ExtensionOrder {
        batch: batch.approval,
        records_digest: batch.records_digest,
        extend_until,
    }))
}

/// The decided reviews a run carries out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// `Approved` reviews.
    pub approvals: Vec<ReviewApproval>,
    /// `Extended` reviews.
    pub extensions: Vec<ExtensionOrder>,
}

impl Decisions {
    /// The decisions among `reviews`; a malformed one is refused.
    pub fn of<'a>(reviews: impl IntoIterator<Item = &'a DispositionReview>) -> Result<Self> {
        let mut out = Self::default();
        for review in reviews {
            out.approvals.extend(ReviewApproval::from_review(review)?);
            out.extensions.extend(extension_from_review(review)?);
        }
        Ok(out)
    }
}

/// Reads `DispositionReview` documents (YAML, several separated by `---`): what
/// `mailvault destroy --approvals FILE` takes. `Approved` and `Extended` ones are returned.
pub fn decisions_from_yaml(text: &str) -> Result<Decisions> {
    use serde::Deserialize as _;
    let mut reviews = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(document)
            .map_err(|e| Error::Usage(format!("approvals: {e}")))?;
        if value.is_null() {
            continue;
        }
        let review: DispositionReview = serde_norway::from_value(value)
            .map_err(|e| Error::Usage(format!("approvals: not a DispositionReview: {e}")))?;
        reviews.push(review);
    }
    Decisions::of(&reviews)
}

/// Whether the batch an approval covers is still the one the officer approved: the digest of
/// the records it covers equals the review's ([`batch_digest`], as for an extension).
pub fn approval_is_current(replay: &Replay, approval: &ReviewApproval) -> bool {
    batch_digest(replay, |h| approval.approval.covers(h)) == approval.records_digest
}

/// One record series as a records officer previews it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SeriesSummary {
    /// The record series.
    pub series: String,
    /// The rule that answers for it under the policy (empty: the policy no longer names it).
    pub rule: String,
    /// Its disposition under the policy (`Destroy`, `Review`, `Permanent`).
    pub disposition: String,
    /// Records not destroyed.
    pub records: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// Earliest retain-until among them (none: all permanent, or no record).
    pub earliest_due: Option<String>,
    /// Latest retain-until among them.
    pub latest_due: Option<String>,
    /// Under legal hold.
    pub held: u64,
    /// Retention not ended.
    pub retained: u64,
    /// Destroyed by the next run.
    pub due_now: u64,
    /// Retention ended; waiting for a records officer's approval.
    pub awaiting_review: u64,
    /// Kept for ever.
    pub permanent: u64,
    /// Authorized and not finished (the next run finishes them first).
    pub in_progress: u64,
    /// Already destroyed.
    pub destroyed: u64,
}

/// What a destruction run did, or (dry run, `plan`) would do.
#[derive(Clone, Debug, Default)]
pub struct DestructionReport {
    /// The plan: what this run destroys besides what it finishes.
    pub plan: DestructionPlan,
    /// The plan per series.
    pub series: Vec<SeriesSummary>,
    /// Approvals whose batch changed since the officer saw it (not used: a new review is due).
    pub stale_approvals: Vec<String>,
    /// Records whose destruction an earlier run authorized and this run finished.
    pub finished: u64,
    /// Tombstones this run logged (finished and new).
    pub destroyed: u64,
    /// Records the store refused to delete (their lock, or their header index's, is still
    /// running): left authorized, the next run finishes them.
    pub refused: Vec<String>,
    /// Keys of the certificates this run stored.
    pub certificates: Vec<String>,
    /// Records whose retention this run extended under `Extended` reviews.
    pub extended: u64,
    /// What became of each decided review (what its status says).
    pub reviews: Vec<ReviewOutcome>,
    /// Log size when the plan was made (a `DispositionReview`'s `logSize`).
    pub log_size: u64,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Delete markers and second versions found on log objects, a sentence each: the log was
    /// read from beneath them, but someone with write access to the store put them there.
    pub log_warnings: Vec<String>,
}

impl DestructionReport {
    /// Records waiting for a records officer's review.
    pub fn awaiting_review(&self) -> u64 {
        self.plan.review.iter().map(|b| b.count() as u64).sum()
    }

    /// The report as JSON (what `--json` prints).
    pub fn to_json(&self) -> serde_json::Value {
        let reviews: Vec<serde_json::Value> = self
            .plan
            .review
            .iter()
            .map(|b| {
                serde_json::json!({
                    "series": b.series,
                    "count": b.count(),
                    "earliest_retain_until": b.earliest.to_string(),
                    "latest_retain_until": b.latest.to_string(),
                    "records_digest": b.digest().to_hex(),
                })
            })
            .collect();
        serde_json::json!({
            "dry_run": self.dry_run,
            "due_now": self.plan.count(),
            "in_progress": self.plan.in_progress,
            "deferred": self.plan.deferred,
            "already_destroyed": self.plan.destroyed,
            "blocked": self.plan.blocked.iter().map(|(k, v)| (k.as_str().to_owned(), *v)).collect::<BTreeMap<String, u64>>(),
            "review_batches": reviews,
            "finished": self.finished,
            "destroyed": self.destroyed,
            "refused": self.refused,
            "certificates": self.certificates,
            "stale_approvals": self.stale_approvals,
            "extended": self.extended,
            "reviews": self.reviews.iter().map(ReviewOutcome::to_json).collect::<Vec<_>>(),
            "log_size": self.log_size,
            "series": self.series,
            "log_warnings": self.log_warnings,
        })
    }

    /// The run in one line, in a records officer's words.
    pub fn summary(&self) -> String {
        let awaiting = self.awaiting_review();
        let mut parts = Vec::new();
        if self.dry_run {
            parts.push(format!(
                "dry run: {} records would be destroyed{}, nothing was changed",
                self.plan.count() as u64 + self.plan.in_progress,
                if self.plan.in_progress > 0 {
                    format!(" ({} of them already authorized)", self.plan.in_progress)
                } else {
                    String::new()
                }
            ));
        } else {
            let mut s = format!("{} records destroyed", self.destroyed);
            if !self.certificates.is_empty() {
                let _ = write!(s, ", certificate {}", self.certificates.join(", "));
            }
            parts.push(s);
        }
        if !self.refused.is_empty() {
            parts.push(format!(
                "{} records could not be deleted yet (Object Lock still in force); the next run finishes them",
                self.refused.len()
            ));
        }
        if awaiting > 0 {
            parts.push(format!("{awaiting} records await review"));
        }
        if self.plan.deferred > 0 {
            parts.push(format!(
                "{} more due records are left for the next run",
                self.plan.deferred
            ));
        }
        for s in &self.stale_approvals {
            parts.push(format!(
                "approval {s} no longer matches its batch (its records changed): not used, review again"
            ));
        }
        for r in &self.reviews {
            if r.decision == ReviewDecision::Extended {
                parts.push(format!("{}: {}", r.review, r.message()));
            }
        }
        parts.join("; ")
    }
}

/// Whether a decided review was carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewState {
    /// Its batch is the one the officer saw; the decision is carried out.
    CarriedOut,
    /// Its batch changed since the review was created: the decision was not used.
    Stale,
    /// The decision cannot be carried out as written (the reason, in words).
    Refused(String),
}

/// What became of one decided review in a run: what the operator writes into its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewOutcome {
    /// `namespace/name`.
    pub review: String,
    /// `Approved` or `Extended`.
    pub decision: ReviewDecision,
    /// Carried out, stale or refused.
    pub state: ReviewState,
    /// Approved: records of the batch destroyed so far.
    pub destroyed: u64,
    /// Extended: records of the batch retained until `extend_until` (earlier runs included).
    pub extended: u64,
    /// Extended: the date.
    pub extend_until: Option<UnixTime>,
    /// Approved: keys of the certificates this run stored that list records of the batch.
    pub certificates: Vec<String>,
}

impl ReviewOutcome {
    /// The outcome as JSON (in the report `--json` prints).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "review": self.review,
            "decision": format!("{:?}", self.decision),
            "state": match self.state {
                ReviewState::CarriedOut => "CarriedOut",
                ReviewState::Stale => "Stale",
                ReviewState::Refused(_) => "Refused",
            },
            "destroyed": self.destroyed,
            "extended": self.extended,
            "extend_until": self.extend_until.map(|t| t.to_string()),
            "certificates": self.certificates,
            "message": self.message(),
        })
    }

    /// The outcome in a records officer's words.
    pub fn message(&self) -> String {
        match (&self.state, self.decision) {
            (ReviewState::Refused(why), _) => why.clone(),
            (ReviewState::Stale, _) => "the batch's records changed since this review was \
                created (records destroyed, held, extended or ingested): this decision was not \
                used; decide on the newer DispositionReview the operator creates for the batch"
                .to_owned(),
            (ReviewState::CarriedOut, ReviewDecision::Extended) => format!(
                "{} records retained until {} (lock extended, retention-extended logged); they \
                 fall due again then, in a new DispositionReview",
                self.extended,
                self.extend_until.map(|t| t.to_string()).unwrap_or_default()
            ),
            (ReviewState::CarriedOut, _) => format!(
                "{} records of the batch destroyed under this approval; the others are \
                 destroyed once their lock has ended and no legal hold is in force",
                self.destroyed
            ),
        }
    }
}

/// Carries out (or, `act` false, only decides) every `Extended` review: lock first, then the
/// entry, for each record still short of its `extendUntil`.
async fn extend_reviews<S: Store>(
    store: &S,
    writer: Option<&mut RecordWriter<'_, S>>,
    replay: &mut Replay,
    orders: &[ExtensionOrder],
    now: UnixTime,
) -> Result<(Vec<ReviewOutcome>, u64)> {
    let mut outcomes = Vec::new();
    let mut extended = 0;
    let mut writer = writer;
    for order in orders {
        let mut outcome = ReviewOutcome {
            review: order.batch.review.clone(),
            decision: ReviewDecision::Extended,
            state: ReviewState::CarriedOut,
            destroyed: 0,
            extended: 0,
            extend_until: Some(order.extend_until),
            certificates: Vec::new(),
        };
        match extension_decision(replay, order) {
            ExtensionDecision::Refused(why) => outcome.state = ReviewState::Refused(why),
            ExtensionDecision::Stale => outcome.state = ReviewState::Stale,
            ExtensionDecision::Extend { records, already } => {
                outcome.extended = already;
                if let Some(w) = writer.as_deref_mut() {
                    let entries =
                        super::policy_edit::extend_records(store, w, &records, now).await?;
                    for entry in entries {
                        apply(replay, entry)?;
                        outcome.extended += 1;
                        extended += 1;
                    }
                }
            }
        }
        outcomes.push(outcome);
    }
    Ok((outcomes, extended))
}

/// The outcome of every `Approved` review after the run: records of its batch destroyed, the
/// certificates of this run that list them.
fn approval_outcomes(
    replay: &Replay,
    approvals: &[ReviewApproval],
    certificates: &[(String, BTreeSet<String>)],
) -> Vec<ReviewOutcome> {
    approvals
        .iter()
        .map(|a| ReviewOutcome {
            review: a.approval.review.clone(),
            decision: ReviewDecision::Approved,
            state: if approval_is_current(replay, a) {
                ReviewState::CarriedOut
            } else {
                ReviewState::Stale
            },
            destroyed: replay
                .histories()
                .filter(|h| a.approval.covers(h) && h.destroyed.is_some())
                .count() as u64,
            extended: 0,
            extend_until: None,
            certificates: certificates
                .iter()
                .filter(|(_, reviews)| reviews.contains(&a.approval.review))
                .map(|(key, _)| key.clone())
                .collect(),
        })
        .collect()
}

/// The inputs of a run besides the store and the key.
#[derive(Debug)]
pub struct DestructionRun<'a> {
    /// The archive's origin (the name of its key).
    pub origin: &'a str,
    /// The policy in force.
    pub schedule: &'a RetentionSchedule,
    /// Approved reviews.
    pub approvals: &'a [ReviewApproval],
    /// Extended reviews.
    pub extensions: &'a [ExtensionOrder],
    /// The run's time.
    pub now: UnixTime,
    /// Report only; change nothing.
    pub dry_run: bool,
    /// For crash tests only: abort the process (as `kill -9` would end it) right after this
    /// many steps (each deletion, each entry appended, each checkpoint, the certificate).
    pub abort_after_step: Option<u64>,
}

/// Reads and replays the log, refusing one whose entries do not tell the story mailvault
/// writes.
async fn replay_of<S: Store>(
    store: &S,
    origin: &str,
    verifier: &NoteVerifier,
) -> Result<(Replay, RecordLog, Vec<String>)> {
    let read = replay_log(store, origin, verifier).await?;
    if let Some((index, anomaly)) = read.first_anomaly {
        return Err(Error::Conflict(format!(
            "the log has an entry mailvault never writes (entry {index}: {anomaly:?}); \
             nothing is destroyed from a log with an anomaly; run `mailvault verify`"
        )));
    }
    Ok((read.replay, read.log.records, read.log.warnings))
}

/// The approvals that still match their batch, and the names of those that do not.
fn current_approvals(
    replay: &Replay,
    approvals: &[ReviewApproval],
) -> (Vec<Approval>, Vec<String>) {
    let mut ok = Vec::new();
    let mut stale = Vec::new();
    for a in approvals {
        if approval_is_current(replay, a) {
            ok.push(a.approval.clone());
        } else {
            stale.push(a.approval.review.clone());
        }
    }
    (ok, stale)
}

/// The plan and its per-series view: the one computation `plan`, a dry run and a run share.
fn plan_of(
    replay: &Replay,
    dispositions: &SeriesDispositions,
    approvals: &[Approval],
    now: UnixTime,
) -> (DestructionPlan, Vec<SeriesSummary>) {
    let rule = |h: &RecordHistory<'_>| dispositions.disposition(h.series);
    let plan = DestructionPlan::new(replay.histories(), &rule, approvals, now);
    let mut by_series: BTreeMap<&str, SeriesSummary> = BTreeMap::new();
    let mut ranges: BTreeMap<&str, (Option<UnixTime>, Option<UnixTime>)> = BTreeMap::new();
    for h in replay.histories() {
        let s = by_series.entry(h.series).or_insert_with(|| {
            let known = dispositions.get(h.series);
            SeriesSummary {
                series: h.series.to_owned(),
                rule: known.map(|r| r.rule.clone()).unwrap_or_default(),
                disposition: format!("{:?}", dispositions.disposition(h.series)),
                ..SeriesSummary::default()
            }
        });
        let eligibility = destruction_eligibility(&h, now, rule(&h), approvals);
        if eligibility == Eligibility::Destroyed {
            s.destroyed += 1;
            continue;
        }
        s.records += 1;
        s.bytes += h.stored_size;
        if let RetainUntil::Until(t) = h.retain_until {
            let r = ranges.entry(h.series).or_default();
            r.0 = Some(r.0.map_or(t, |e| e.min(t)));
            r.1 = Some(r.1.map_or(t, |l| l.max(t)));
        }
        match eligibility {
            Eligibility::InProgress => s.in_progress += 1,
            Eligibility::Permanent => s.permanent += 1,
            Eligibility::Held(_) => s.held += 1,
            Eligibility::Retained(_) => s.retained += 1,
            Eligibility::AwaitingReview => s.awaiting_review += 1,
            // Counted from the plan below (it defers past MAX_RECORDS_PER_RUN).
            Eligibility::Eligible { .. } | Eligibility::Destroyed => {}
        }
    }
    for batch in &plan.destroy {
        if let Some(s) = by_series.get_mut(batch.series.as_str()) {
            s.due_now = batch.count() as u64;
        }
    }
    let series = by_series
        .into_iter()
        .map(|(name, mut s)| {
            if let Some((e, l)) = ranges.get(name) {
                s.earliest_due = e.map(|t| t.to_string());
                s.latest_due = l.map(|t| t.to_string());
            }
            s
        })
        .collect();
    (plan, series)
}

/// What the next run would do, read-only: `mailvault plan`, and a dry run.
pub async fn preview<S: Store>(
    store: &S,
    verifier: &NoteVerifier,
    run: &DestructionRun<'_>,
) -> Result<DestructionReport> {
    let (mut replay, _, log_warnings) = replay_of(store, run.origin, verifier).await?;
    let (approvals, stale_approvals) = current_approvals(&replay, run.approvals);
    let dispositions = SeriesDispositions::of(run.schedule);
    let (mut reviews, _) =
        extend_reviews::<S>(store, None, &mut replay, run.extensions, run.now).await?;
    let (plan, series) = plan_of(&replay, &dispositions, &approvals, run.now);
    reviews.extend(approval_outcomes(&replay, run.approvals, &[]));
    Ok(DestructionReport {
        plan,
        series,
        stale_approvals,
        reviews,
        log_size: replay.size(),
        dry_run: true,
        log_warnings,
        ..DestructionReport::default()
    })
}

/// Counts the steps of a run, for the crash tests' `abort_after_step` (shared by the records
/// being deleted at once: any order they finish in is one a crash can leave).
struct Steps {
    done: AtomicU64,
    abort_after: Option<u64>,
}

impl Steps {
    fn step(&self, what: &str) {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if self.abort_after == Some(done) {
            eprintln!(
                "mailvault: aborting after step {done} ({what}), as --abort-after-step asked"
            );
            std::process::abort();
        }
    }
}

/// The record ids every stored certificate of this archive lists (certificates that do not
/// open with the archive's key list nothing: they are not ours).
pub async fn certified_records<S: Store>(
    store: &S,
    origin: &str,
    verifier: &NoteVerifier,
) -> Result<Vec<(String, Certificate)>> {
    let mut out = Vec::new();
    for key in store.list_keys(CERTIFICATES_PREFIX).await? {
        if parse_certificate_key(&key).is_none() {
            continue;
        }
        let Some(object) = store.get(&key, None, MAX_CERTIFICATE_LEN as u64).await? else {
            continue;
        };
        if let Ok(cert) =
            Certificate::open(&object.bytes, std::slice::from_ref(verifier), Some(origin))
        {
            out.push((key, cert));
        }
    }
    Ok(out)
}

/// Runs destruction for one archive: finishes what an earlier run authorized, plans, authorizes
/// (checkpoint), deletes, logs tombstones (checkpoint), and stores a signed certificate for
/// every destroyed record no certificate lists yet. `dry_run` only previews.
pub async fn run<S: Store>(
    store: &S,
    signer: NoteSigner,
    run: &DestructionRun<'_>,
) -> Result<DestructionReport> {
    let verifier = NoteVerifier::parse(&signer.verifier_key())?;
    if run.dry_run {
        return preview(store, &verifier, run).await;
    }
    let certificate_signer = NoteSigner::from_key_string(&signer.to_key_string())?;
    let steps = Steps {
        done: AtomicU64::new(0),
        abort_after: run.abort_after_step,
    };
    // The writer first: it signs an unsigned tail it can vouch for and adopts unlogged
    // records, so the log read next is the one it appends to.
    let mut writer =
        RecordWriter::open(store, run.origin, signer, run.schedule.clone(), run.now).await?;
    let (mut replay, read_back, log_warnings) = replay_of(store, run.origin, &verifier).await?;
    writer.check_same_log(&read_back)?;
    drop(read_back);
    let (approvals, stale_approvals) = current_approvals(&replay, run.approvals);
    let dispositions = SeriesDispositions::of(run.schedule);
    let mut report = DestructionReport {
        stale_approvals,
        log_warnings,
        ..DestructionReport::default()
    };

    // Phase 2 for whatever an earlier run authorized and did not finish.
    let unfinished: Vec<String> = pending(&replay).map(|h| h.record.to_owned()).collect();
    let logged = destroy_records(
        store,
        &mut writer,
        &mut replay,
        &unfinished,
        &steps,
        &mut report,
    )
    .await?;
    report.finished += logged;
    if logged > 0 {
        writer.checkpoint().await?;
        steps.step("checkpoint of the finished tombstones");
    }

    // Extended reviews: before the plan, so an extended record is retained, not due.
    let (extension_outcomes, extended) = extend_reviews(
        store,
        Some(&mut writer),
        &mut replay,
        run.extensions,
        now_after(run.now),
    )
    .await?;
    report.extended = extended;
    if extended > 0 {
        writer.checkpoint().await?;
        steps.step("checkpoint of the extensions");
    }

    // Plan, then phase 1: authorize, checkpoint.
    let (plan, series) = plan_of(&replay, &dispositions, &approvals, run.now);
    report.log_size = replay.size();
    report.series = series;
    let authorizations = plan.authorizations();
    let planned: Vec<String> = authorizations
        .iter()
        .map(|(r, _)| r.as_str().to_owned())
        .collect();
    for (record, body) in authorizations {
        let entry = writer.append(record, body, now_after(run.now)).await?;
        apply(&mut replay, entry)?;
        steps.step("destroy-authorized appended");
    }
    if !planned.is_empty() {
        writer.checkpoint().await?;
        steps.step("checkpoint of the authorizations");
    }
    report.plan = plan;

    // Phase 2: delete, tombstone, checkpoint.
    let logged = destroy_records(
        store,
        &mut writer,
        &mut replay,
        &planned,
        &steps,
        &mut report,
    )
    .await?;
    // Always: a tombstone left in an unsigned tail by a crash is signed before it is certified.
    if writer.checkpoint().await?.is_some() && logged > 0 {
        steps.step("checkpoint of the tombstones");
    }

    // Certify every destroyed record no certificate lists.
    let certify = Certify {
        origin: run.origin,
        now: run.now,
        signer: &certificate_signer,
        verifier: &verifier,
        dispositions: &dispositions,
        approvals: &approvals,
    };
    let certificates = certify.run(store, &writer, &replay, &steps).await?;
    report.certificates = certificates.iter().map(|(k, _)| k.clone()).collect();
    report.reviews = extension_outcomes;
    report
        .reviews
        .extend(approval_outcomes(&replay, run.approvals, &certificates));
    writer.finish().await?;
    Ok(report)
}

/// What a run needs to certify its destroyed records.
struct Certify<'a> {
    origin: &'a str,
    now: UnixTime,
    signer: &'a NoteSigner,
    verifier: &'a NoteVerifier,
    dispositions: &'a SeriesDispositions,
    approvals: &'a [Approval],
}

impl Certify<'_> {
    /// Stores a signed certificate (several past [`MAX_RECORDS_PER_RUN`]) for every destroyed
    /// record no stored certificate lists, covering the writer's newest checkpoint; returns
    /// their keys, each with the reviews whose approval it names.
    async fn run<S: Store>(
        &self,
        store: &S,
        writer: &RecordWriter<'_, S>,
        replay: &Replay,
        steps: &Steps,
    ) -> Result<Vec<(String, BTreeSet<String>)>> {
        let head = writer.log_head();
        let root = head
            .root_hash
            .as_deref()
            .map(Hash::from_hex)
            .transpose()
            .map_err(|e| Error::Conflict(format!("the log head's root is not a hash: {e}")))?;
        let certified = certified_records(store, self.origin, self.verifier).await?;
        let certified_ids: BTreeSet<&str> = certified
            .iter()
            .flat_map(|(_, c)| c.records().map(RecordId::as_str))
            .collect();
        let to_certify = uncertified(replay, &certified_ids);
        let mut keys = Vec::new();
        let Some(root) = root.filter(|_| !to_certify.is_empty()) else {
            return Ok(keys);
        };
        let method = match writer.store_info().lock_mode {
            LockMode::None => METHOD_LOCAL_DIRECTORY,
            _ => METHOD_S3_COMPLIANCE,
        };
        let records: Vec<CertifiedRecord> = to_certify
            .iter()
            .map(|h| certified_record(h, self.dispositions, self.approvals))
            .collect();
        let base = run_id(self.now);
        for (n, chunk) in records.chunks(MAX_RECORDS_PER_RUN).enumerate() {
            let key = free_certificate_key(store, &base, n).await?;
            let run_name = key
                .strip_prefix(CERTIFICATES_PREFIX)
                .unwrap_or(&base)
                .to_owned();
            let note = Certificate::new(
                self.origin,
                &run_name,
                crate::unix_now().max(self.now),
                (head.size, root),
                method,
                chunk.to_vec(),
                &|series: &str| series.to_owned(),
            )
            .and_then(|cert| cert.sign(self.signer))
            .map_err(|e| Error::Conflict(format!("destruction certificate: {e}")))?;
            store
                .put_immutable(
                    &key,
                    note.into_bytes(),
                    &ObjectMetadata::new(),
                    crate::writer::log_lock_until(crate::unix_now()),
                )
                .await?;
            steps.step("certificate stored");
            let reviews = chunk
                .iter()
                .filter_map(|r| match &r.authorization {
                    CertifiedAuthorization::Review { review, .. } => Some(review.clone()),
                    CertifiedAuthorization::Rule { .. } => None,
                })
                .collect();
            keys.push((key, reviews));
        }
        Ok(keys)
    }
}

/// A time for an entry appended now: never before the run's time.
fn now_after(now: UnixTime) -> UnixTime {
    crate::unix_now().max(now)
}

fn apply(replay: &mut Replay, entry: mailvault_core::entry::Entry) -> Result<()> {
    let index = entry.index;
    replay.apply(entry).map_err(|a| {
        Error::Conflict(format!(
            "entry {index} this run appended does not fit the log: {a:?}"
        ))
    })
}

/// The first certificate key for run `base` (the `n`th of the run) that no object holds: two
/// runs in one second, or a run that certifies in several parts, never write over each other.
async fn free_certificate_key<S: Store>(store: &S, base: &str, n: usize) -> Result<String> {
    for attempt in 0..1000usize {
        let suffix = match (n, attempt) {
            (0, 0) => String::new(),
            (n, a) => format!("-{}", n * 1000 + a + 1),
        };
        let key = certificate_key(&format!("{base}{suffix}"));
        // Taken by anything, even an object too large to be a certificate.
        match store.get(&key, None, MAX_CERTIFICATE_LEN as u64).await {
            Ok(None) => return Ok(key),
            Ok(Some(_)) | Err(Error::TooLarge { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict(format!(
        "no free certificate key for run {base}"
    )))
}

/// A destroyed record as its certificate lists it: the rule of its series, or the approval
/// that covers it.
fn certified_record(
    h: &RecordHistory<'_>,
    dispositions: &SeriesDispositions,
    approvals: &[Approval],
) -> CertifiedRecord {
    use mailvault_core::entry::Disposition;
    let retain_until = match h.retain_until {
        RetainUntil::Until(t) => t,
        RetainUntil::Permanent => UnixTime(0),
    };
    let authorization = match h.authorized.map(|a| a.disposition) {
        Some(Disposition::ReviewApproved) => match approvals.iter().find(|a| a.covers(h)) {
            Some(a) => CertifiedAuthorization::Review {
                review: a.review.clone(),
                decided_by: a.decided_by.clone(),
                reference: a.reference.clone(),
            },
            // The approval was withdrawn between the authorization and this run: the log
            // still says the record was approved, the certificate says who is unknown.
            None => CertifiedAuthorization::Review {
                review: "unknown/approval-no-longer-present".into(),
                decided_by: "unknown".into(),
                reference: "unknown".into(),
            },
        },
        _ => CertifiedAuthorization::Rule {
            name: dispositions.get(h.series).map_or_else(
                || "not-in-the-current-policy".to_owned(),
                |r| r.rule.clone(),
            ),
        },
    };
    CertifiedRecord {
        record: RecordId::new(h.record)
            .unwrap_or_else(|_| RecordId::from_hash(&Hash::of(h.record.as_bytes()))),
        series: h.series.to_owned(),
        retain_until,
        authorization,
    }
}

/// Phase two for authorized records (`ids`): for each, list what the store holds under its key,
/// delete it, list again, delete its header index, and log the tombstone once nothing remains.
/// The store side runs for [`DELETING_AT_ONCE`] records at once; tombstones are appended in
/// `ids`' order as each record's deletions finish. Returns how many tombstones were logged; a
/// deletion refused by Object Lock leaves its record for a later run (in `report.refused`).
async fn destroy_records<S: Store>(
    store: &S,
    writer: &mut RecordWriter<'_, S>,
    replay: &mut Replay,
    ids: &[String],
    steps: &Steps,
    report: &mut DestructionReport,
) -> Result<u64> {
    // Only what is authorized and not destroyed yet (the replay says; nothing else appends
    // to this log meanwhile), with its key owned: the deletions run while the replay takes
    // the tombstones.
    let todo: Vec<(String, String)> = ids
        .iter()
        .filter_map(|id| {
            let history = replay.get(id)?;
            (history.authorized.is_some() && history.destroyed.is_none())
                .then(|| (id.clone(), history.object_key.into_owned()))
        })
        .collect();
    // An error stops records from starting, and the run fails once the ones under way are
    // done (tombstoned, while the log can be written): dropping them half-way would leave up
    // to DELETING_AT_ONCE - 1 records part-deleted by an ordinary error, not only by a crash
    // (on a `file:` store a record's object, sidecar and lock go one after the other).
    let failed = &AtomicBool::new(false);
    let mut emptied = futures::stream::iter(todo)
        .map(|(id, key)| async move {
            if failed.load(Ordering::SeqCst) {
                return (id, Ok(Emptied::NotStarted));
            }
            let emptied = empty_record(store, &id, &key, steps).await;
            (id, emptied)
        })
        .buffered(DELETING_AT_ONCE);
    let mut logged = 0;
    let mut first_error: Option<Error> = None;
    // Once an append fails the log takes no more: the rest only finish their deletions.
    let mut log_failed = false;
    while let Some((id, emptied)) = emptied.next().await {
        let deleted = match emptied {
            Ok(Emptied::Deleted(deleted)) => deleted,
            Ok(Emptied::Refused(why)) => {
                report.refused.push(why);
                continue;
            }
            Ok(Emptied::NotStarted) => continue,
            Err(e) => {
                failed.store(true, Ordering::SeqCst);
                first_error.get_or_insert(e);
                continue;
            }
        };
        if log_failed {
            continue;
        }
        let Some(history) = replay.get(&id) else {
            continue;
        };
        // Nothing is held any more: the core names the tombstone (the logged version first
        // when an earlier, crashed run deleted it).
        let NextStep::Tombstone(record, body) = next_step(&history, &[], &deleted) else {
            continue;
        };
        drop(history);
        let appended = writer.append(record, *body, now_after(UnixTime(0))).await;
        if let Err(e) = appended.and_then(|entry| apply(replay, entry)) {
            failed.store(true, Ordering::SeqCst);
            log_failed = true;
            first_error.get_or_insert(e);
            continue;
        }
        report.destroyed += 1;
        logged += 1;
        steps.step("tombstone appended");
    }
    let Some(error) = first_error else {
        return Ok(logged);
    };
    // The tombstones logged before the run fails are signed, so the log shows those records
    // destroyed rather than deleted without a tombstone; the error the run reports stays the
    // first one.
    if logged > 0
        && !log_failed
        && let Err(e) = writer.checkpoint().await
    {
        tracing::warn!(error = %e, "the checkpoint of the tombstones logged before the run's error failed too");
    }
    Err(error)
}

/// The store side of phase two for one record, done.
enum Emptied {
    /// Nothing is left under the record's key or its header index; these versions (of the
    /// record's key) were deleted by this run.
    Deleted(Vec<HeldVersion>),
    /// Object Lock refused a deletion: why, for the report.
    Refused(String),
    /// Not started: an earlier record's error stopped the run.
    NotStarted,
}

/// Deletes every version under record `id`'s object `key` (listing again after each round,
/// in [`deletion_order`]), then its header index.
async fn empty_record<S: Store>(store: &S, id: &str, key: &str, steps: &Steps) -> Result<Emptied> {
    let mut deleted: Vec<HeldVersion> = Vec::new();
    for _ in 0..MAX_DELETE_ROUNDS {
        let held: Vec<HeldVersion> = store
            .versions_of(key)
            .await?
            .into_iter()
            .map(|(key, version_id, delete_marker)| HeldVersion {
                key,
                version_id,
                delete_marker,
            })
            .collect();
        if held.is_empty() {
            // The header index dies with the record, before the tombstone: a crash in
            // between deletes it again on the next run, never leaves it behind.
            // A locked index (mailvault never locks one: someone else did, or a bucket
            // default retention) may hold the record's headers: no tombstone and no
            // certificate for the record until it can be deleted; the others go on.
            return match delete_index(store, id).await {
                Ok(()) => Ok(Emptied::Deleted(deleted)),
                Err(Error::ObjectLocked(message)) => Ok(Emptied::Refused(format!(
                    "record {id}: its header index is under Object Lock, which mailvault \
                     never sets on one, so the record is not destroyed until the index \
                     can be deleted (its stored message is deleted already): {message}"
                ))),
                Err(e) => Err(e),
            };
        }
        for v in deletion_order(&held) {
            match store.delete_version(&v.key, &v.version_id).await {
                Ok(()) => {}
                Err(Error::ObjectLocked(message)) => {
                    return Ok(Emptied::Refused(format!("record {id}: {message}")));
                }
                Err(e) => return Err(e),
            }
            deleted.push(v);
            steps.step("version deleted");
        }
    }
    Err(Error::Conflict(format!(
        "record {id}: the store still lists versions after {MAX_DELETE_ROUNDS} rounds of deleting them"
    )))
}

/// Deletes every version of a record's header index (`index/<id>`, unlocked: it is a search
/// hint, not evidence) and checks that none remain. A version under Object Lock is refused by
/// the store ([`Error::ObjectLocked`]): the caller holds the record's tombstone back, since the
/// index may hold the record's headers.
async fn delete_index<S: Store>(store: &S, id: &str) -> Result<()> {
    let key = index_key(id);
    for _ in 0..MAX_DELETE_ROUNDS {
        let versions = store.versions_of(&key).await?;
        if versions.is_empty() {
            return Ok(());
        }
        for (k, version, _) in versions {
            store.delete_version(&k, &version).await?;
        }
    }
    Err(Error::Conflict(format!(
        "record {id}: the store still lists versions of its header index after {MAX_DELETE_ROUNDS} rounds of deleting them"
    )))
}

/// Review batches that need a `DispositionReview`: the plan's review batches.
pub fn review_batches(report: &DestructionReport) -> &[SeriesBatch] {
    &report.plan.review
}

#[cfg(test)]
mod tests;
