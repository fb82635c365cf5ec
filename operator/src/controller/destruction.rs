//! Scheduled destruction of an archive's records: the `RetentionPolicy`'s
//! `destruction.schedule` applied to every `MailboxArchive` that uses the policy.
//!
//! `MailboxArchive reconcile (between archive runs) -> decide (pure) -> run task in the
//! archive's slot -> lifecycle::destroy::run -> DispositionReviews, status, Events`
//!
//! A destruction run takes the archive's slot in the [`super::runs::RunRegistry`] (keyed by
//! the archive's uid): it never runs while the archive's own run does, since two writers on one
//! log would fork it. It starts only when no archive run is due (the archive run goes first).
//! Approved `DispositionReview`s of the archive become approvals; every due review batch that no
//! pending review covers gets a new `DispositionReview`. `dryRun: true` reports only.
//!
//! An archive with `runner: Job` runs its destruction as a Job too (`jobs::start_destruction`;
//! the pod calls [`destroy_and_record`] with its Job's name, recorded as `destruction.lastJob`).

use super::mailbox_archive::archive_store;
use super::schedule::{self, History, Schedule};
use super::secrets::Secrets;
use super::status::{apply_status, set_condition};
use super::{Context, publish};
use crate::crd::{
    DestructionRunStatus, DestructionStatus, DispositionReview, DispositionReviewSpec,
    DispositionReviewStatus, MailboxArchive, MailboxArchiveStatus, PlanCounts, PolicyDestruction,
    RetentionPolicy, ReviewDecision,
};
use crate::lifecycle::destroy::{
    self, Decisions, DestructionReport, DestructionRun, ReviewOutcome, ReviewState,
};
use crate::{Error, Reason, Result};
use jiff::Timestamp;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use mailvault_core::UnixTime;
use mailvault_core::lifecycle::SeriesBatch;
use mailvault_core::lifecycle::disposition::SeriesDispositions;
use std::fmt::Write as _;
use std::sync::Arc;

/// Whether a destruction run of an archive is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The policy has no destruction schedule (or an invalid one, which its Ready says).
    Off,
    /// Nothing due before `until`.
    Wait {
        /// The next destruction slot (or retry).
        until: Timestamp,
    },
    /// Due now, for `slot`.
    Run {
        /// The slot the run stands for.
        slot: Timestamp,
    },
}

/// What the archive's status says its destruction runs did.
fn destruction_history(status: &MailboxArchiveStatus) -> History {
    let parse = |s: Option<&String>| s.and_then(|t| t.parse::<Timestamp>().ok());
    let d = status.destruction.as_ref();
    History {
        last_slot: parse(d.and_then(|d| d.last_schedule_time.as_ref())),
        last_end: parse(d.and_then(|d| d.last_run.as_ref()).map(|r| &r.end)),
        failures: d.map_or(0, |d| d.consecutive_failures),
    }
}

/// Decides whether a destruction run of the archive is due: the policy's schedule, the
/// archive's destruction history, the clock. A first run is due at once.
pub fn decide(
    policy: Option<&RetentionPolicy>,
    status: &MailboxArchiveStatus,
    now: Timestamp,
) -> Decision {
    let Some(spec) = policy.and_then(|p| p.spec.destruction.as_ref()) else {
        return Decision::Off;
    };
    let Ok(schedule) = Schedule::parse(&spec.schedule, &spec.time_zone) else {
        return Decision::Off;
    };
    match schedule.decide(destruction_history(status), now) {
        schedule::Decision::Wait { until } => Decision::Wait { until },
        schedule::Decision::Run { slot } => Decision::Run { slot },
    }
}

/// [`decide`] on the archive's status as the apiserver holds it: the watch cache may not have
/// seen the status the last destruction run wrote yet, and a stale copy would run a slot twice.
/// Only a `Run` costs the GET.
pub async fn decide_fresh(
    api: &Api<MailboxArchive>,
    archive: &MailboxArchive,
    policy: Option<&RetentionPolicy>,
    now: Timestamp,
) -> Result<(Decision, Option<RetentionPolicy>)> {
    let cached = archive.status.clone().unwrap_or_default();
    let decision = match decide(policy, &cached, now) {
        Decision::Run { .. } => {
            let fresh = api.get(&archive.name_any()).await?;
            if fresh.metadata.uid != archive.metadata.uid {
                return Ok((Decision::Off, None));
            }
            decide(policy, &fresh.status.unwrap_or_default(), now)
        }
        other => other,
    };
    Ok((decision, policy.cloned()))
}

/// Records the next destruction slot in the status.
pub fn note_next_run(status: &mut MailboxArchiveStatus, decision: Decision) {
    match decision {
        Decision::Wait { until } => {
            status.destruction.get_or_insert_default().next_run = Some(until.to_string());
        }
        Decision::Off => {
            if let Some(d) = &mut status.destruction {
                d.next_run = None;
            }
        }
        Decision::Run { .. } => {}
    }
}

/// Starts a destruction run in the archive's slot (unless a run of the archive is in flight).
pub fn start(
    ctx: &Arc<Context>,
    api: &Api<MailboxArchive>,
    archive: &Arc<MailboxArchive>,
    policy: RetentionPolicy,
    slot: Timestamp,
) -> bool {
    let uid = archive.metadata.uid.clone().unwrap_or_default();
    let task_ctx = ctx.clone();
    let task_api = api.clone();
    let task_archive = archive.clone();
    let run = async move {
        // A status not written is logged there; the next reconcile decides again.
        let _ = Box::pin(destroy_and_record(
            &task_ctx,
            &task_api,
            &task_archive,
            &policy,
            slot,
            None,
        ))
        .await;
    };
    ctx.runs.start(
        &uid,
        ObjectRef::from_obj(&**archive),
        ctx.run_ended.clone(),
        run,
    )
}

/// The decisions among the archive's reviews (a malformed one is skipped, with a warning).
fn decisions(reviews: &[DispositionReview]) -> Decisions {
    let mut out = Decisions::default();
    for r in reviews {
        match Decisions::of([r]) {
            Ok(d) => {
                out.approvals.extend(d.approvals);
                out.extensions.extend(d.extensions);
            }
            Err(e) => tracing::warn!(review = %r.name_any(), error = %e, "decision not used"),
        }
    }
    out
}

/// One destruction run of the archive: its store and key, its approvals, the run.
async fn run_destruction(
    ctx: &Context,
    namespace: &str,
    archive: &MailboxArchive,
    policy: &RetentionPolicy,
    reviews: &[DispositionReview],
) -> Result<DestructionReport> {
    let secrets = Secrets::new(ctx.client.clone(), namespace, &archive.name_any());
    let (store, signer) = archive_store(&secrets, namespace, archive).await?;
    let schedule = policy
        .spec
        .schedule()
        .map_err(|problems| Error::Spec(problems.join("; ")))?;
    let origin = signer.name().to_owned();
    let decisions = decisions(reviews);
    let dry_run = policy.spec.destruction.as_ref().is_some_and(|d| d.dry_run);
    // Boxed: a run's future holds the writer (clippy::large_futures).
    Box::pin(destroy::run(
        &store,
        signer,
        &DestructionRun {
            origin: &origin,
            schedule: &schedule,
            approvals: &decisions.approvals,
            extensions: &decisions.extensions,
            now: UnixTime(Timestamp::now().as_second()),
            dry_run,
            abort_after_step: None,
        },
    ))
    .await
}

/// A Kubernetes name for a review of `batch` of `archive`: the archive, the series in lowercase
/// letters and digits, and the first 10 hex digits of the batch's digest.
pub fn review_name(archive: &str, batch: &SeriesBatch) -> String {
    let mut slug = String::new();
    for c in batch.series.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    let digest = batch.digest().to_hex();
    let mut name = format!("{archive}-{slug}");
    name.truncate(240);
    format!("{}-{}", name.trim_end_matches('-'), &digest[..10])
}

/// Creates a `DispositionReview` for every due review batch that no pending review of the
/// archive covers (same series, a range that contains the batch's). Returns the names created.
async fn create_reviews(
    ctx: &Context,
    namespace: &str,
    archive: &MailboxArchive,
    policy: &RetentionPolicy,
    report: &DestructionReport,
    existing: &[DispositionReview],
) -> Result<Vec<(String, u64)>> {
    let api: Api<DispositionReview> = Api::namespaced(ctx.client.clone(), namespace);
    let dispositions = policy
        .spec
        .schedule()
        .map(|s| SeriesDispositions::of(&s))
        .unwrap_or_default();
    let mut created = Vec::new();
    for batch in &report.plan.review {
        let (earliest, latest) = (batch.earliest.to_string(), batch.latest.to_string());
        let covered = existing.iter().any(|r| {
            r.spec.decision == ReviewDecision::Pending
                && r.spec.record_series == batch.series
                && r.spec.earliest_retain_until <= earliest
                && latest <= r.spec.latest_retain_until
        });
        if covered {
            continue;
        }
        let rule = match dispositions.get(&batch.series).map(|r| r.rule.as_str()) {
            Some(mailvault_core::rules::DEFAULT_RULE) => "defaultRule".to_owned(),
            Some(r) => r.to_owned(),
            None => "not-in-the-policy".to_owned(),
        };
        let name = review_name(&archive.name_any(), batch);
        let review = DispositionReview::new(
            &name,
            DispositionReviewSpec {
                archive: archive.name_any(),
                policy: policy.name_any(),
                rule,
                record_series: batch.series.clone(),
                count: batch.count() as u64,
                earliest_retain_until: earliest,
                latest_retain_until: latest,
                records_digest: batch.digest().to_hex(),
                log_size: report.log_size,
                decision: ReviewDecision::Pending,
                decided_by: None,
                reference: None,
                extend_until: None,
            },
        );
        match api.create(&PostParams::default(), &review).await {
            Ok(_) => created.push((format!("{namespace}/{name}"), batch.count() as u64)),
            // The same batch (same digest) was created by an earlier run.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(created)
}

/// The plan's numbers after the run.
fn plan_counts(report: &DestructionReport) -> PlanCounts {
    let sum = |f: fn(&destroy::SeriesSummary) -> u64| report.series.iter().map(f).sum::<u64>();
    PlanCounts {
        // What is still due: left past the per-run cap, or refused by a running lock.
        due_now: if report.dry_run {
            report.plan.count() as u64 + report.plan.in_progress
        } else {
            report.plan.deferred + report.refused.len() as u64
        },
        awaiting_review: sum(|s| s.awaiting_review),
        held: sum(|s| s.held),
        retained: sum(|s| s.retained),
        permanent: sum(|s| s.permanent),
        destroyed: sum(|s| s.destroyed)
            + if report.dry_run {
                0
            } else {
                report.destroyed - report.finished
            },
        next_due: report
            .series
            .iter()
            .filter(|s| s.retained > 0)
            .filter_map(|s| s.earliest_due.clone())
            .min(),
    }
}

/// The archive's `DispositionReview`s (none if they cannot be listed: no approval is used).
async fn reviews_of(
    ctx: &Context,
    namespace: &str,
    archive: &MailboxArchive,
) -> Vec<DispositionReview> {
    match Api::<DispositionReview>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list
            .items
            .into_iter()
            .filter(|r| r.spec.archive == archive.name_any())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list DispositionReviews; no approval is used");
            Vec::new()
        }
    }
}

/// A run's outcome as status, plan numbers and the Event that says it.
fn outcome(
    result: &Result<DestructionReport>,
    created: &Result<Vec<(String, u64)>>,
    start: Timestamp,
    end: Timestamp,
) -> (
    DestructionRunStatus,
    Option<PlanCounts>,
    (EventType, Reason, String),
) {
    match (result, created) {
        (Ok(report), Ok(created)) => {
            let mut message = report.summary();
            for (name, count) in created {
                let _ = write!(
                    message,
                    "; {count} records await review: DispositionReview {name}"
                );
            }
            let (result_word, reason) = match report {
                r if r.dry_run => ("DryRun", Reason::DestructionDryRun),
                r if r.destroyed > 0 => ("Succeeded", Reason::RecordsDestroyed),
                r if r.awaiting_review() > 0 => ("Succeeded", Reason::RecordsAwaitReview),
                _ => ("Succeeded", Reason::NothingDue),
            };
            (
                DestructionRunStatus {
                    start: start.to_string(),
                    end: end.to_string(),
                    result: result_word.into(),
                    destroyed: report.destroyed,
                    certificates: report.certificates.clone(),
                    message: message.clone(),
                },
                Some(plan_counts(report)),
                (EventType::Normal, reason, message),
            )
        }
        (Err(e), _) | (Ok(_), Err(e)) => {
            let message = format!("destruction run failed: {e}");
            (
                DestructionRunStatus {
                    start: start.to_string(),
                    end: end.to_string(),
                    result: "Failed".into(),
                    destroyed: result.as_ref().map_or(0, |r| r.destroyed),
                    certificates: result
                        .as_ref()
                        .map(|r| r.certificates.clone())
                        .unwrap_or_default(),
                    message: message.clone(),
                },
                None,
                (EventType::Warning, Reason::DestructionFailed, message),
            )
        }
    }
}

/// The body of a destruction task (or of a destruction Job's pod, `job` naming the Job):
/// runs, then records the outcome in the archive's and the policy's status, with Events a
/// records officer acts on. An error means the archive's status could not be written (logged
/// here; a Job's pod then exits non-zero and is retried).
pub(super) async fn destroy_and_record(
    ctx: &Context,
    api: &Api<MailboxArchive>,
    archive: &MailboxArchive,
    policy: &RetentionPolicy,
    slot: Timestamp,
    job: Option<&str>,
) -> Result<()> {
    let namespace = archive.namespace().unwrap_or_default();
    let start = Timestamp::now();
    let permit = ctx.run_slots.acquire().await.ok();
    let reviews = reviews_of(ctx, &namespace, archive).await;
    let result = Box::pin(run_destruction(ctx, &namespace, archive, policy, &reviews)).await;
    drop(permit);
    let created = match &result {
        Ok(report) => create_reviews(ctx, &namespace, archive, policy, report, &reviews).await,
        Err(_) => Ok(Vec::new()),
    };
    let end = Timestamp::now();
    let (run_status, counts, event) = outcome(&result, &created, start, end);
    let failed = run_status.result == "Failed";
    tracing::info!(archive = %archive.name_any(), namespace = %namespace, message = %run_status.message, "destruction run");
    publish(ctx, archive, event.0, event.1, &event.2).await;
    if matches!(
        event.1,
        Reason::RecordsDestroyed | Reason::RecordsAwaitReview
    ) {
        publish(
            ctx,
            policy,
            event.0,
            event.1,
            &format!("{}: {}", archive.name_any(), event.2),
        )
        .await;
    }
    // The archive's status as the apiserver has it now, with this run's part.
    let mut status = match api.get(&archive.name_any()).await {
        Ok(fresh) => fresh.status.unwrap_or_default(),
        Err(_) => archive.status.clone().unwrap_or_default(),
    };
    let d = status
        .destruction
        .get_or_insert_with(DestructionStatus::default);
    d.last_schedule_time = Some(slot.to_string());
    d.consecutive_failures = if failed {
        d.consecutive_failures.saturating_add(1)
    } else {
        0
    };
    d.last_run = Some(run_status.clone());
    if let Some(c) = &counts {
        d.plan = Some(c.clone());
    }
    if let Some(job) = job {
        d.last_job = Some(job.to_owned());
    }
    let next = decide(Some(policy), &status, Timestamp::now());
    note_next_run(&mut status, next);
    let written = apply_status(api, archive, &status).await;
    if let Err(e) = &written {
        tracing::warn!(archive = %archive.name_any(), error = %e, "cannot write the destruction status");
    }
    if let Some(plan) = counts {
        update_policy(ctx, &namespace, policy, archive, plan, &run_status.message).await;
    }
    if let Ok(report) = &result
        && !report.dry_run
    {
        update_reviews(ctx, &namespace, &reviews, report).await;
    }
    written
}

/// Records a destruction Job that failed with no outcome as a failed destruction run: the
/// same status, Event and backoff as a failed run in the operator.
pub async fn record_unrecorded_failure(
    ctx: &Context,
    api: &Api<MailboxArchive>,
    archive: &MailboxArchive,
    job: &k8s_openapi::api::batch::v1::Job,
) -> Result<()> {
    let name = job.name_any();
    // Decided on what the apiserver holds: the pod may have recorded after all.
    let fresh = api.get(&archive.name_any()).await?;
    let mut status = fresh.status.unwrap_or_default();
    let d = status.destruction.get_or_insert_default();
    if d.last_job.as_deref() == Some(name.as_str()) {
        return Ok(());
    }
    let message = format!(
        "destruction run failed: Job {name} ended without an outcome: its pods failed or were killed {} times (kubectl -n {} describe job {name}); the next run resumes what it began",
        ctx.jobs.backoff_limit.saturating_add(1),
        archive.namespace().unwrap_or_default()
    );
    let start = job
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0)
        .to_string();
    d.last_schedule_time = job
        .annotations()
        .get(super::jobs::SLOT)
        .cloned()
        .or(d.last_schedule_time.take());
    d.consecutive_failures = d.consecutive_failures.saturating_add(1);
    d.last_job = Some(name);
    d.last_run = Some(DestructionRunStatus {
        start,
        end: Timestamp::now().to_string(),
        result: "Failed".into(),
        destroyed: 0,
        certificates: Vec::new(),
        message: message.clone(),
    });
    publish(
        ctx,
        archive,
        EventType::Warning,
        Reason::DestructionFailed,
        &message,
    )
    .await;
    apply_status(api, archive, &status).await
}

/// Most certificate keys a review's status lists (the newest kept).
const MAX_REVIEW_CERTIFICATES: usize = 100;

/// A decided review's status after a run: counts, the certificates that list its records
/// (earlier runs' kept), and `Ready`/`Stale` conditions in a records officer's words.
pub fn review_status(
    current: Option<&DispositionReviewStatus>,
    outcome: &ReviewOutcome,
    generation: Option<i64>,
) -> DispositionReviewStatus {
    let mut status = current.cloned().unwrap_or_default();
    status.observed_generation = generation;
    if outcome.decision == ReviewDecision::Extended {
        status.extended = Some(outcome.extended);
    } else {
        status.destroyed = Some(outcome.destroyed);
        for key in &outcome.certificates {
            if !status.certificates.contains(key) {
                status.certificates.push(key.clone());
            }
        }
        status.certificates.sort();
        let excess = status
            .certificates
            .len()
            .saturating_sub(MAX_REVIEW_CERTIFICATES);
        status.certificates.drain(..excess);
    }
    let message = outcome.message();
    let (ready, reason) = match outcome.state {
        ReviewState::CarriedOut => (true, Reason::DecisionCarriedOut),
        ReviewState::Stale => (false, Reason::BatchChanged),
        ReviewState::Refused(_) => (false, Reason::DecisionRefused),
    };
    set_condition(
        &mut status.conditions,
        "Ready",
        ready,
        reason,
        &message,
        generation,
    );
    set_condition(
        &mut status.conditions,
        "Stale",
        outcome.state == ReviewState::Stale,
        reason,
        &message,
        generation,
    );
    status
}

/// Writes what the run did with each decided review into its status (status subresource).
async fn update_reviews(
    ctx: &Context,
    namespace: &str,
    reviews: &[DispositionReview],
    report: &DestructionReport,
) {
    let api: Api<DispositionReview> = Api::namespaced(ctx.client.clone(), namespace);
    for outcome in &report.reviews {
        let Some(review) = reviews
            .iter()
            .find(|r| destroy::review_name(r) == outcome.review)
        else {
            continue;
        };
        let status = review_status(review.status.as_ref(), outcome, review.metadata.generation);
        if review.status.as_ref() == Some(&status) {
            continue;
        }
        if let Err(e) = apply_status(&api, review, &status).await {
            tracing::warn!(review = %outcome.review, error = %e, "cannot write the review's status");
        }
    }
}

/// Writes this archive's numbers into its policy's status (the policy reconciler keeps them).
async fn update_policy(
    ctx: &Context,
    namespace: &str,
    policy: &RetentionPolicy,
    archive: &MailboxArchive,
    plan: PlanCounts,
    message: &str,
) {
    let api: Api<RetentionPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    let Ok(fresh) = api.get(&policy.name_any()).await else {
        return;
    };
    let mut status = fresh.status.clone().unwrap_or_default();
    let name = archive.name_any();
    status.destruction.retain(|d| d.archive != name);
    status.destruction.push(PolicyDestruction {
        archive: name,
        plan,
        last_run: Some(message.chars().take(1000).collect()),
    });
    status.destruction.sort_by(|a, b| a.archive.cmp(&b.archive));
    if let Err(e) = apply_status(&api, &fresh, &status).await {
        tracing::warn!(policy = %policy.name_any(), error = %e, "cannot write the policy's destruction status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn policy(destruction: Option<serde_json::Value>) -> RetentionPolicy {
        let mut spec = serde_json::json!({
            "defaultRule": {"recordSeries": "GS 1", "retain": "PT5S", "disposition": "Destroy"}
        });
        if let Some(d) = destruction {
            spec["destruction"] = d;
        }
        RetentionPolicy::new("p", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn destruction_runs_on_the_policys_schedule_and_backs_off_after_failures() {
        let now = at("2026-11-28T02:07:30Z");
        let none = MailboxArchiveStatus::default();
        assert_eq!(decide(None, &none, now), Decision::Off);
        assert_eq!(decide(Some(&policy(None)), &none, now), Decision::Off);
        let every_minute = policy(Some(serde_json::json!({"schedule": "* * * * *"})));
        // Never ran: due at once.
        assert_eq!(
            decide(Some(&every_minute), &none, now),
            Decision::Run { slot: now }
        );
        // Ran for 02:07: the next slot is 02:08.
        let mut ran = MailboxArchiveStatus {
            destruction: Some(DestructionStatus {
                last_schedule_time: Some("2026-11-28T02:07:00Z".into()),
                last_run: Some(DestructionRunStatus {
                    end: "2026-11-28T02:07:10Z".into(),
                    ..DestructionRunStatus::default()
                }),
                ..DestructionStatus::default()
            }),
            ..MailboxArchiveStatus::default()
        };
        assert_eq!(
            decide(Some(&every_minute), &ran, now),
            Decision::Wait {
                until: at("2026-11-28T02:08:00Z")
            }
        );
        assert_eq!(
            decide(Some(&every_minute), &ran, at("2026-11-28T02:08:01Z")),
            Decision::Run {
                slot: at("2026-11-28T02:08:00Z")
            }
        );
        // A failure is retried 10 s after it ended, before the next slot.
        ran.destruction.as_mut().unwrap().consecutive_failures = 1;
        assert_eq!(
            decide(Some(&every_minute), &ran, at("2026-11-28T02:07:15Z")),
            Decision::Wait {
                until: at("2026-11-28T02:07:20Z")
            }
        );
        let invalid = policy(Some(serde_json::json!({"schedule": "61 * * * *"})));
        assert_eq!(decide(Some(&invalid), &none, now), Decision::Off);
    }

    #[test]
    fn a_reviews_status_says_what_was_done_and_whether_its_batch_is_stale() {
        let outcome = ReviewOutcome {
            review: "records/b".into(),
            decision: ReviewDecision::Extended,
            state: ReviewState::CarriedOut,
            destroyed: 0,
            extended: 2,
            extend_until: Some(UnixTime(1_800_000_000)),
            certificates: Vec::new(),
        };
        let s = review_status(None, &outcome, Some(1));
        assert_eq!(s.extended, Some(2));
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "DecisionCarriedOut")
        );
        assert!(
            ready
                .message
                .contains("2 records retained until 2027-01-15T08:00:00Z"),
            "{}",
            ready.message
        );
        let stale = s.conditions.iter().find(|c| c.type_ == "Stale").unwrap();
        assert_eq!(stale.status, "False");

        let approved = ReviewOutcome {
            decision: ReviewDecision::Approved,
            destroyed: 1,
            extended: 0,
            extend_until: None,
            certificates: vec!["certificates/2".into()],
            ..outcome.clone()
        };
        let earlier = DispositionReviewStatus {
            certificates: vec!["certificates/1".into()],
            ..DispositionReviewStatus::default()
        };
        let s = review_status(Some(&earlier), &approved, Some(1));
        assert_eq!(s.destroyed, Some(1));
        assert_eq!(s.certificates, ["certificates/1", "certificates/2"]);

        let stale = ReviewOutcome {
            state: ReviewState::Stale,
            ..approved
        };
        let s = review_status(None, &stale, Some(1));
        let c = |t: &str| s.conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(
            (c("Ready").status.as_str(), c("Ready").reason.as_str()),
            ("False", "BatchChanged")
        );
        assert_eq!(c("Stale").status, "True");
        assert!(
            c("Stale")
                .message
                .contains("decide on the newer DispositionReview")
        );
    }

    #[test]
    fn review_names_are_kubernetes_names_unique_per_batch() {
        let batch = SeriesBatch {
            series: "GS 1-09 Records (Review)".into(),
            records: Vec::new(),
            bytes: 0,
            earliest: UnixTime(0),
            latest: UnixTime(0),
        };
        let name = review_name("chief", &batch);
        assert!(name.starts_with("chief-gs-1-09-records-review-"), "{name}");
        assert_eq!(name.len(), "chief-gs-1-09-records-review-".len() + 10);
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
}
