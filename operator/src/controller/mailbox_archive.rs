//! The `MailboxArchive` reconciler: where a custom resource turns into a run.
//!
//! `[ MailboxArchive ] -> plan (pure, plan.rs) -> status + Event | start a run task (runs.rs)`
//! `run task: Secrets + RetentionPolicy -> run::archive_mailbox -> status + Event -> re-trigger`
//!
//! The reconcile itself is short: it reads the policy, asks [`plan`] what to do and does it. A
//! due run is started as a task in the [`super::runs::RunRegistry`] (never twice for one
//! archive) and the reconcile returns; the task writes the run's status and its end triggers
//! the next reconcile. Resume state lives in the bucket (cursor, log), never only in status:
//! deleting and re-creating the resource resumes from the bucket.

use super::plan::{Plan, PolicyState, history, plan, until_from};
use super::schedule::{Decision, Schedule};
use super::secrets::{SIGNING_KEY_KEY, Secrets};
use super::status::{apply_status, set_condition};
use super::{Context, publish};
use crate::crd::{
    FolderStatus, LastSync, LogStatus, MailboxArchive, MailboxArchiveStatus, RetentionPolicy,
    RunResult, Runner, Totals,
};
use crate::run::{ImapServer, MailboxRun, RunFailure, RunOutcome, archive_mailbox};
use crate::source::imap::sync::FolderFilter;
use crate::source::imap::{CaBundle, Credentials};
use crate::store::s3::{S3Config, S3Store};
use crate::{Error, Reason, Result};
use jiff::Timestamp;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// While a run is in flight the reconcile waits for its end (which re-triggers it); this is
/// only the safety net.
const WHILE_RUNNING: Duration = Duration::from_mins(5);

/// The log origin (and signing key name) of an archive whose key mailvault generates.
pub fn origin(namespace: &str, name: &str) -> String {
    format!("mailvault.io/{namespace}/{name}")
}

/// Where the archive lives in its bucket: `<prefix>/<namespace>/<name>`.
pub fn store_prefix(prefix: &str, namespace: &str, name: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{namespace}/{name}")
    } else {
        format!("{prefix}/{namespace}/{name}")
    }
}

/// Reconciles one `MailboxArchive`: gathers what [`plan`] needs, then carries the plan out.
#[allow(clippy::needless_pass_by_value)] // kube-runtime hands reconcilers owned Arcs
pub async fn reconcile(archive: Arc<MailboxArchive>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = archive
        .namespace()
        .ok_or_else(|| Error::Spec("MailboxArchive without a namespace".into()))?;
    let api: Api<MailboxArchive> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = archive.metadata.uid.clone().unwrap_or_default();
    let policies: Api<RetentionPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    // A failure to ask is transient (the error policy retries it), never a problem with the
    // spec.
    let policy = policies
        .get_opt(&archive.spec.retention_policy_ref.name)
        .await?;
    let policy_state = PolicyState::of(policy.as_ref());
    let old = archive.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    // Runs as Jobs (now, or before a switch to InProcess: a Job in flight still writes).
    let jobs = if super::jobs::observed(&ctx, &archive, &old) {
        let seen = super::jobs::observe(&ctx, &namespace, &uid, &old).await?;
        if let Some(job) = &seen.unrecorded_failure {
            super::jobs::record_unrecorded_failure(&ctx, &api, &archive, job).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        if let Some(job) = &seen.unrecorded_destruction_failure {
            super::destruction::record_unrecorded_failure(&ctx, &api, &archive, job).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        seen
    } else {
        super::jobs::Seen::default()
    };
    let running = ctx.runs.is_running(&uid) || jobs.in_flight;
    let mut decided = plan(&archive.spec, &old, &policy_state, running, now);
    let mut status = old.clone();
    if let Plan::Run { .. } = decided {
        // The object handed in comes from the watch cache, which may not have seen the status
        // the previous run wrote yet (another watch, e.g. a policy edit, can trigger this
        // reconcile first). Decide a run on what the apiserver holds, never on a stale copy:
        // otherwise one slot could run twice.
        let fresh = api.get(&archive.name_any()).await?;
        if fresh.metadata.uid != archive.metadata.uid {
            return Ok(Action::await_change());
        }
        if let Some(fresh_status) = fresh.status {
            status = fresh_status;
            decided = plan(&archive.spec, &status, &policy_state, running, now);
        }
    }
    // A legal hold changed since this archive applied it: a hold run now, whatever the
    // schedule or suspension (a hold must not wait for the next sync).
    let mut hold_retry = None;
    if matches!(decided, Plan::Wait { .. } | Plan::Suspended) {
        use super::holds::HoldRunStart;
        match super::holds::start_if_pending(&ctx, &archive, policy.as_ref()).await? {
            HoldRunStart::Started => return Ok(Action::requeue(WHILE_RUNNING)),
            HoldRunStart::RetryIn(wait) => hold_retry = Some(wait),
            HoldRunStart::NotNeeded => {}
        }
    }
    let action = execute(&ctx, &api, &archive, policy, decided, status, now).await?;
    // A failed hold run is retried when its window ends, whatever else the archive waits for.
    Ok(hold_retry.map_or(action, Action::requeue))
}

/// Carries out a plan.
async fn execute(
    ctx: &Arc<Context>,
    api: &Api<MailboxArchive>,
    archive: &Arc<MailboxArchive>,
    policy: Option<RetentionPolicy>,
    decided: Plan,
    mut status: MailboxArchiveStatus,
    now: Timestamp,
) -> Result<Action> {
    let generation = archive.metadata.generation;
    let old = archive.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    match decided {
        Plan::Refuse {
            reason,
            message,
            retry,
        } => refuse(ctx, api, archive, status, reason, &message, retry).await,
        Plan::Suspended => {
            set_condition(
                &mut status.conditions,
                "Suspended",
                true,
                Reason::Suspended,
                "spec.suspend is true: no run starts until it is false",
                generation,
            );
            status.next_sync = None;
            write_if_changed(api, archive, &old, &status).await?;
            Ok(Action::await_change())
        }
        Plan::Running => Ok(Action::requeue(WHILE_RUNNING)),
        Plan::Wait { until } => {
            scheduled(&mut status, generation);
            status.next_sync = Some(until.to_string());
            conditions_from_last_run(&mut status, generation);
            write_if_changed(api, archive, &old, &status).await?;
            // Between archive runs, in the same slot: destruction on the policy's schedule
            // (its task records its own status; decided on what the apiserver holds).
            match super::destruction::decide_fresh(api, archive, policy.as_ref(), now).await? {
                (super::destruction::Decision::Run { slot }, Some(_))
                    if super::jobs::runner_of(ctx, archive) == Runner::Job =>
                {
                    match super::jobs::start_destruction(ctx, archive, &status, slot).await? {
                        super::jobs::Started::Job(_) => Ok(Action::requeue(WHILE_RUNNING)),
                        super::jobs::Started::AtCapacity => {
                            Ok(Action::requeue(Duration::from_secs(5)))
                        }
                    }
                }
                (super::destruction::Decision::Run { slot }, Some(policy)) => {
                    super::destruction::start(ctx, api, archive, policy, slot);
                    Ok(Action::requeue(WHILE_RUNNING))
                }
                (super::destruction::Decision::Wait { until: next }, _) => {
                    Ok(Action::requeue(until_from(now, until.min(next))))
                }
                _ => Ok(Action::requeue(until_from(now, until))),
            }
        }
        Plan::Run { slot } => {
            let Some(mut policy) = policy else {
                // plan() refuses a missing policy; nothing to run with.
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            // A run needs the policy's spec only. Its status lists every archive using it
            // (with a field manager each): held by every run waiting for a slot, that cost
            // the operator ~150 KiB per waiting run with 5,000 archives on one policy.
            policy.status = None;
            policy.metadata.managed_fields = None;
            if super::jobs::runner_of(ctx, archive) == Runner::Job {
                return start_job(ctx, api, archive, status, slot).await;
            }
            scheduled(&mut status, generation);
            status.last_schedule_time = Some(slot.to_string());
            let uid = archive.metadata.uid.clone().unwrap_or_default();
            let task_ctx = ctx.clone();
            let task_api = api.clone();
            let task_archive = archive.clone();
            let run = async move {
                // A status not written is logged there and written by the next reconcile.
                let _ = Box::pin(run_and_record(
                    &task_ctx,
                    &task_api,
                    &task_archive,
                    &policy,
                    status,
                ))
                .await;
            };
            ctx.runs.start(
                &uid,
                ObjectRef::from_obj(&**archive),
                ctx.run_ended.clone(),
                run,
            );
            Ok(Action::requeue(WHILE_RUNNING))
        }
    }
}

/// A due run as a Job (`runner: Job`, jobs.rs). The Job's pod records the outcome; what
/// fails before a Job exists (a Secret for the signing key, the run's identity) is recorded
/// here as a failed run, with the same backoff.
async fn start_job(
    ctx: &Arc<Context>,
    api: &Api<MailboxArchive>,
    archive: &Arc<MailboxArchive>,
    mut status: MailboxArchiveStatus,
    slot: Timestamp,
) -> Result<Action> {
    match super::jobs::start(ctx, archive, &status, slot).await {
        Ok(super::jobs::Started::Job(_)) => Ok(Action::requeue(WHILE_RUNNING)),
        Ok(super::jobs::Started::AtCapacity) => {
            tracing::debug!(archive = %archive.name_any(), "Jobs at capacity: the run waits");
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        // The apiserver itself failed: the error policy retries the reconcile.
        Err(e @ Error::Kube(_)) if e.is_transient() => Err(e),
        Err(e) => {
            let generation = archive.metadata.generation;
            scheduled(&mut status, generation);
            status.last_schedule_time = Some(slot.to_string());
            let now = Timestamp::now();
            let _ = record_outcome(ctx, api, archive, status, Err(e.into()), now, now).await;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
    }
}

/// `Suspended=False`: the archive runs on its schedule.
pub(super) fn scheduled(status: &mut MailboxArchiveStatus, generation: Option<i64>) {
    set_condition(
        &mut status.conditions,
        "Suspended",
        false,
        Reason::Scheduled,
        "runs on its schedule",
        generation,
    );
}

/// The body of a run task: waits for a run slot, runs, and records the outcome in the status
/// (with the next sync), metrics and an Event.
pub(super) async fn run_and_record(
    ctx: &Context,
    api: &Api<MailboxArchive>,
    archive: &MailboxArchive,
    policy: &RetentionPolicy,
    status: MailboxArchiveStatus,
) -> Result<()> {
    let namespace = archive.namespace().unwrap_or_default();
    let start = Timestamp::now();
    publish(
        ctx,
        archive,
        EventType::Normal,
        Reason::SyncStarted,
        &format!(
            "archiving {} into {}",
            archive.spec.imap.username,
            bucket_url(archive)
        ),
    )
    .await;
    let waiting = crate::metrics::Counted::new(&ctx.metrics.runs_waiting);
    // The semaphore is never closed; a failed acquire would only mean running unthrottled.
    let permit = ctx.run_slots.acquire().await.ok();
    drop(waiting);
    let in_progress = crate::metrics::Counted::new(&ctx.metrics.runs_in_progress);
    let clock = Instant::now();
    // Boxed: a run's future is large (the writer's open and sync state machines).
    let result = Box::pin(run_once(ctx, &namespace, archive, policy)).await;
    drop(permit);
    drop(in_progress);
    ctx.metrics
        .run_duration
        .observe(clock.elapsed().as_secs_f64());
    record_outcome(ctx, api, archive, status, result, start, Timestamp::now()).await
}

/// Records a run's outcome: status (with the next sync), metrics and an Event. An error means
/// the status could not be written (logged and counted here).
pub(super) async fn record_outcome(
    ctx: &Context,
    api: &Api<MailboxArchive>,
    archive: &MailboxArchive,
    mut status: MailboxArchiveStatus,
    result: std::result::Result<(RunOutcome, String), RunFailure>,
    start: Timestamp,
    end: Timestamp,
) -> Result<()> {
    let namespace = archive.namespace().unwrap_or_default();
    match result {
        Ok((outcome, public_key)) => {
            succeeded(ctx, archive, &mut status, &outcome, &public_key, start, end).await;
        }
        Err(failure) => failed(ctx, archive, &mut status, &failure, start, end).await,
    }
    if let Ok(schedule) = Schedule::parse(&archive.spec.schedule, &archive.spec.time_zone)
        && let Decision::Wait { until } = schedule.decide(history(&status), Timestamp::now())
    {
        status.next_sync = Some(until.to_string());
    }
    // The run's end triggers the next reconcile (runs.rs); a status that cannot be written
    // now is written by it, from a run that is then due again (the slot is not recorded).
    if let Err(e) = apply_status(api, archive, &status).await {
        tracing::warn!(archive = %archive.name_any(), namespace = %namespace, error = %e,
            "cannot write the status of a finished run");
        ctx.metrics.error(e.reason());
        return Err(e);
    }
    Ok(())
}

/// Between runs, Ready and Degraded describe the last run, so a refusal that has been fixed
/// (a spec, a policy) no longer shows. A condition that already says so keeps its message.
fn conditions_from_last_run(status: &mut MailboxArchiveStatus, generation: Option<i64>) {
    let (ready, reason, message) = match &status.last_sync {
        None => (
            false,
            Reason::NotYetSynced,
            "waiting for the first run".to_owned(),
        ),
        Some(last) if last.result == RunResult::Succeeded => (
            true,
            Reason::Synced,
            format!("the last run succeeded at {}", last.end),
        ),
        Some(last) => (
            false,
            last.reason
                .as_deref()
                .and_then(Reason::parse)
                .unwrap_or(Reason::RunFailed),
            format!(
                "run failed: {}",
                last.message.as_deref().unwrap_or("no reason recorded")
            ),
        ),
    };
    let status_word = if ready { "True" } else { "False" };
    for (type_, want) in [
        ("Ready", status_word),
        ("Degraded", if ready { "False" } else { "True" }),
    ] {
        match status.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c)
                if c.status == want
                    && (c.reason == reason.as_str() || type_ == "Degraded" && ready) =>
            {
                c.observed_generation = generation;
            }
            _ => set_condition(
                &mut status.conditions,
                type_,
                want == "True",
                reason,
                &message,
                generation,
            ),
        }
    }
}

fn bucket_url(archive: &MailboxArchive) -> String {
    let s = &archive.spec.storage;
    format!(
        "s3://{}/{}",
        s.bucket,
        store_prefix(
            &s.prefix,
            &archive.namespace().unwrap_or_default(),
            &archive.name_any()
        )
    )
}

/// The spec cannot be run as it is: say why in a condition and an Event, and wait for a change
/// (or retry after `retry`, for causes outside the spec).
async fn refuse(
    ctx: &Context,
    api: &Api<MailboxArchive>,
    archive: &MailboxArchive,
    mut status: MailboxArchiveStatus,
    reason: Reason,
    message: &str,
    retry: Option<Duration>,
) -> Result<Action> {
    let old = archive.status.clone().unwrap_or_default();
    let generation = archive.metadata.generation;
    needs_a_person(&mut status, reason, message, generation);
    status.next_sync = None;
    ctx.metrics.error(reason);
    if old.conditions != status.conditions || old.observed_generation != generation {
        publish(ctx, archive, EventType::Warning, reason, message).await;
    }
    write_if_changed(api, archive, &old, &status).await?;
    Ok(retry.map_or_else(Action::await_change, Action::requeue))
}

/// `Ready=False` and `Degraded=True`, both saying why.
fn needs_a_person(
    status: &mut MailboxArchiveStatus,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
) {
    for (type_, value) in [("Ready", false), ("Degraded", true)] {
        set_condition(
            &mut status.conditions,
            type_,
            value,
            reason,
            message,
            generation,
        );
    }
}

async fn write_if_changed(
    api: &Api<MailboxArchive>,
    archive: &MailboxArchive,
    old: &MailboxArchiveStatus,
    new: &MailboxArchiveStatus,
) -> Result<()> {
    if old != new {
        apply_status(api, archive, new).await?;
    }
    Ok(())
}

/// One run: read the Secrets, connect, archive every new message, checkpoint.
/// Returns the outcome and the archive's public verifier key.
async fn run_once(
    ctx: &Context,
    namespace: &str,
    archive: &MailboxArchive,
    policy: &RetentionPolicy,
) -> std::result::Result<(RunOutcome, String), RunFailure> {
    let spec = &archive.spec;
    let name = archive.name_any();
    let secrets = Secrets::new(ctx.client.clone(), namespace, &name);
    let password = secrets
        .text(
            &spec.imap.password_secret_ref.name,
            &spec.imap.password_secret_ref.key,
        )
        .await?;
    let ca = match &spec.imap.ca_secret_ref {
        Some(r) => Some(CaBundle {
            origin: format!("CA bundle in Secret {namespace}/{} key {:?}", r.name, r.key),
            pem: secrets.bytes(&r.name, &r.key).await?,
        }),
        None => None,
    };
    let (store, signer) = archive_store(&secrets, namespace, archive).await?;
    let holds = super::holds::holds_for(ctx, archive).await?;
    let public_key = signer.verifier_key();
    let retention = policy
        .spec
        .schedule()
        .map_err(|problems| Error::Spec(problems.join("; ")))?;
    let mut imap = ImapServer::new(spec.imap.host.clone(), spec.imap.port, spec.imap.tls).config(
        spec.imap.username.clone(),
        Credentials::Password(password),
        ca,
        spec.imap.insecure_plaintext,
        spec.imap
            .timeout_seconds
            .map_or(ctx.imap_timeout, |s| Duration::from_secs(u64::from(s))),
    );
    if let Some(max) = spec.imap.max_message_bytes {
        imap.max_message_bytes = max;
    }
    if let Some(connections) = spec.imap.connections {
        imap.connections = usize::from(connections);
    }
    let run = MailboxRun {
        imap,
        folders: FolderFilter {
            include: spec.imap.include.clone(),
            exclude: spec.imap.exclude.clone(),
        },
        signer,
        retention,
        spool: ctx.spool.clone(),
        holds: holds.iter().map(|h| h.given.clone()).collect(),
        max_duration: spec
            .max_run_duration_seconds
            .map(|s| Duration::from_secs(u64::from(s))),
    };
    let outcome = Box::pin(archive_mailbox(&store, run, &mut |_| {})).await?;
    super::holds::report(ctx, archive, &holds, &outcome.lifecycle.holds).await;
    Ok((outcome, public_key))
}

/// The archive's store and signing key, from its spec and Secrets (a key is generated when it
/// names none): what every run that writes the archive opens (archive, hold and destruction
/// runs).
pub(super) async fn archive_store(
    secrets: &Secrets,
    namespace: &str,
    archive: &MailboxArchive,
) -> Result<(S3Store, mailvault_core::note::NoteSigner)> {
    let spec = &archive.spec;
    let name = archive.name_any();
    let credentials = secrets.s3_credentials(&spec.storage).await?;
    let signer = if let Some(r) = &spec.signing_key_secret_ref {
        secrets.signing_key(&r.name, &r.key, None).await?
    } else {
        let key_secret = format!("{name}-signing-key");
        let origin = origin(namespace, &name);
        secrets
            .signing_key(&key_secret, SIGNING_KEY_KEY, Some(&origin))
            .await?
    };
    let store = S3Store::new(&S3Config {
        bucket: spec.storage.bucket.clone(),
        prefix: store_prefix(&spec.storage.prefix, namespace, &name),
        region: spec.storage.region.clone(),
        endpoint: spec.storage.endpoint.clone(),
        path_style: spec.storage.path_style,
        credentials,
        insecure_http: spec.storage.insecure_http,
        timeout: spec
            .storage
            .timeout_seconds
            .map_or(crate::store::s3::DEFAULT_TIMEOUT, |s| {
                Duration::from_secs(u64::from(s))
            }),
    })?;
    Ok((store, signer))
}

/// The words a successful run reports in its condition and Event.
fn success_message(
    outcome: &RunOutcome,
    gaps: u64,
    resets: &[&str],
    warning: Option<&str>,
) -> String {
    let s = &outcome.summary;
    let mut message = format!(
        "archived {} new messages ({} bytes) in {} folders; the archive holds {} records, log size {}",
        s.archived + s.adopted,
        s.original_bytes,
        outcome.reports.len(),
        outcome.log.records,
        outcome.log.size
    );
    let refused: u64 = outcome.reports.iter().map(|r| r.refused.len() as u64).sum();
    let expunged = gaps.saturating_sub(refused);
    if expunged > 0 {
        let _ = write!(
            message,
            "; {expunged} messages were expunged before they could be captured"
        );
    }
    if s.unparseable > 0 {
        let _ = write!(
            message,
            "; {} had unparseable headers and took the default rule",
            s.unparseable
        );
    }
    if !resets.is_empty() {
        let _ = write!(
            message,
            "; UIDVALIDITY changed in {}: re-read in full, duplicates skipped by content",
            resets.join(", ")
        );
    }
    for line in outcome.lifecycle.summary() {
        let _ = write!(message, "; {line}");
    }
    for r in &outcome.reports {
        if !r.refused.is_empty() {
            let uids: Vec<String> = r.refused.iter().map(|(uid, _)| uid.to_string()).collect();
            let _ = write!(
                message,
                "; {}: UID {} over spec.imap.maxMessageBytes, not archived (capture gaps)",
                r.folder,
                uids.join(", ")
            );
        }
        for fault in &r.server_faults {
            let _ = write!(message, "; IMAP server fault in {}: {fault}", r.folder);
        }
    }
    if let Some(w) = warning {
        let _ = write!(message, "; warning: {w}");
    }
    message
}

async fn succeeded(
    ctx: &Context,
    archive: &MailboxArchive,
    status: &mut MailboxArchiveStatus,
    outcome: &RunOutcome,
    public_key: &str,
    start: Timestamp,
    end: Timestamp,
) {
    let generation = archive.metadata.generation;
    let s = &outcome.summary;
    let gaps: u64 = outcome.reports.iter().map(|r| r.capture_gaps).sum();
    let resets: Vec<&str> = outcome
        .reports
        .iter()
        .filter(|r| r.uid_validity_reset)
        .map(|r| r.folder.as_str())
        .collect();
    let warning = glob_warning(&outcome.unmatched_includes);
    status.last_sync = Some(LastSync {
        start: start.to_string(),
        end: end.to_string(),
        messages: s.archived + s.adopted,
        bytes: s.original_bytes,
        capture_gaps: gaps,
        result: RunResult::Succeeded,
        reason: None,
        message: warning.as_ref().map(|w| format!("warning: {w}")),
    });
    status.consecutive_failures = 0;
    status.totals = Some(Totals {
        records: outcome.log.records,
    });
    status.folders = outcome
        .cursor
        .folders
        .iter()
        .map(|(name, c)| FolderStatus {
            name: name.clone(),
            uid_validity: c.uid_validity,
            last_uid: c.uid_next.saturating_sub(1),
            highest_mod_seq: c.highest_modseq,
        })
        .collect();
    status.log = Some(LogStatus {
        size: outcome.log.size,
        root_hash: outcome.log.root_hash.clone(),
        checkpoint: outcome.log.checkpoint.clone(),
    });
    status.public_key = Some(public_key.to_owned());
    let message = success_message(outcome, gaps, &resets, warning.as_deref());
    // Objects the writer could not authenticate: the run succeeded, but the archive needs an
    // audit (`mailvault verify`).
    let unauthenticated = s.unauthenticated_warning();
    for (type_, value, reason, text) in [
        ("Ready", true, Reason::Synced, &message),
        ("Synced", true, Reason::RunSucceeded, &message),
        match &unauthenticated {
            Some(w) => ("Degraded", true, Reason::UnauthenticatedObject, w),
            None => ("Degraded", false, Reason::RunSucceeded, &message),
        },
    ] {
        set_condition(
            &mut status.conditions,
            type_,
            value,
            reason,
            text,
            generation,
        );
    }
    ctx.metrics.run_finished("succeeded");
    ctx.metrics.archive_synced(
        &archive.namespace().unwrap_or_default(),
        &archive.name_any(),
        end.as_second(),
        gaps,
    );
    ctx.metrics.records.inc_by(s.archived + s.adopted);
    ctx.metrics.bytes.inc_by(s.original_bytes);
    tracing::info!(archive = %archive.name_any(), namespace = %archive.namespace().unwrap_or_default(),
        archived = s.archived + s.adopted, bytes = s.original_bytes, records = outcome.log.records,
        "run succeeded");
    publish(ctx, archive, EventType::Normal, Reason::Synced, &message).await;
    if let Some(w) = &warning {
        publish(
            ctx,
            archive,
            EventType::Warning,
            Reason::FolderGlobMatchedNothing,
            w,
        )
        .await;
    }
    if let Some(w) = &unauthenticated {
        publish(
            ctx,
            archive,
            EventType::Warning,
            Reason::UnauthenticatedObject,
            w,
        )
        .await;
    }
}

/// The warning for include globs that matched no folder, if any did not.
fn glob_warning(unmatched: &[String]) -> Option<String> {
    (!unmatched.is_empty()).then(|| {
        let globs: Vec<String> = unmatched.iter().map(|g| format!("{g:?}")).collect();
        format!(
            "spec.imap.include {} matched no folder of the mailbox",
            globs.join(", ")
        )
    })
}

async fn failed(
    ctx: &Context,
    archive: &MailboxArchive,
    status: &mut MailboxArchiveStatus,
    failure: &RunFailure,
    start: Timestamp,
    end: Timestamp,
) {
    let generation = archive.metadata.generation;
    let error = &failure.error;
    let reason = error.reason();
    let saved = &failure.partial;
    let mut message = format!("run failed: {error}");
    if saved.archived + saved.adopted > 0 {
        let _ = write!(
            message,
            " ({} messages archived before the failure are kept and logged)",
            saved.archived + saved.adopted
        );
    }
    ctx.metrics.records.inc_by(saved.archived + saved.adopted);
    ctx.metrics.bytes.inc_by(saved.original_bytes);
    status.last_sync = Some(LastSync {
        start: start.to_string(),
        end: end.to_string(),
        messages: saved.archived + saved.adopted,
        bytes: saved.original_bytes,
        capture_gaps: 0,
        result: RunResult::Failed,
        reason: Some(reason.as_str().to_owned()),
        message: Some(error.to_string()),
    });
    status.consecutive_failures = status.consecutive_failures.saturating_add(1);
    needs_a_person(status, reason, &message, generation);
    set_condition(
        &mut status.conditions,
        "Synced",
        false,
        reason,
        &message,
        generation,
    );
    ctx.metrics.run_finished("failed");
    ctx.metrics.error(reason);
    tracing::warn!(archive = %archive.name_any(), namespace = %archive.namespace().unwrap_or_default(), reason = %reason,
        error = %error, "run failed");
    publish(ctx, archive, EventType::Warning, reason, &message).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_archive_has_its_own_place_in_the_bucket() {
        assert_eq!(store_prefix("", "police", "chief"), "police/chief");
        assert_eq!(
            store_prefix("/records/", "police", "chief"),
            "records/police/chief"
        );
        assert_eq!(origin("police", "chief"), "mailvault.io/police/chief");
    }
}
