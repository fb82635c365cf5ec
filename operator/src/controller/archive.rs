//! The `MailboxArchive` reconciler: where a custom resource turns into a pipeline run.
//!
//! `[ MailboxArchive ] -> Secrets + RetentionPolicy -> ImapSource -> Archiver -> status + Event`
//!
//! Resume state lives in the bucket (cursor, log), never only in status: deleting and
//! re-creating the resource resumes from the bucket.

use super::schedule::{Decision, History, Schedule};
use super::secrets::{SIGNING_KEY_KEY, Secrets};
use super::status::{apply_status, set_condition};
use super::{Context, publish};
use crate::crd::{
    FolderStatus, ImapTls, LastSync, LogStatus, MailboxArchive, MailboxArchiveStatus,
    RetentionPolicy, RunResult, Totals,
};
use crate::pipeline::{Archiver, LogHead, RetentionChoice, RunSummary};
use crate::source::imap::{CaBundle, Credentials, ImapConfig, ImapSource, TlsMode};
use crate::store::s3::{S3Config, S3Store};
use crate::sync::{Cursor, FolderFilter, FolderReport, sync_mailbox};
use crate::{Error, Result};
use jiff::Timestamp;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest a reconciler sleeps before it looks again (schedules are recomputed on wake-up,
/// so a far slot costs nothing but this).
const MAX_REQUEUE: Duration = Duration::from_hours(1);

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

/// What a finished run found.
struct RunOutcome {
    summary: RunSummary,
    reports: Vec<FolderReport>,
    cursor: Cursor,
    log: LogHead,
    public_key: String,
}

/// Reconciles one `MailboxArchive`.
#[allow(clippy::needless_pass_by_value)] // kube-runtime hands reconcilers owned Arcs
pub async fn reconcile(archive: Arc<MailboxArchive>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled("MailboxArchive");
    let namespace = archive
        .namespace()
        .ok_or_else(|| Error::Spec("MailboxArchive without a namespace".into()))?;
    let api: Api<MailboxArchive> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = archive.metadata.generation;
    let old = archive.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;

    // What the schema could not check.
    let schedule = match archive
        .spec
        .validate()
        .map_err(|p| p.join("; "))
        .and_then(|()| Schedule::parse(&archive.spec.schedule, &archive.spec.time_zone))
    {
        Ok(s) => s,
        Err(problem) => {
            return refuse(&ctx, &api, &archive, status, "InvalidSpec", &problem, None).await;
        }
    };
    let policy = match check_policy(&ctx, &namespace, &archive).await? {
        Ok(p) => p,
        Err((reason, message)) => {
            let retry = Some(Duration::from_mins(1));
            return refuse(&ctx, &api, &archive, status, reason, &message, retry).await;
        }
    };

    if archive.spec.suspend {
        set_condition(
            &mut status.conditions,
            "Suspended",
            true,
            "Suspended",
            "spec.suspend is true: no run starts until it is false",
            generation,
        );
        status.next_sync = None;
        write_if_changed(&api, &archive, &old, &status).await?;
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    if matches!(schedule.decide(history(&status), now), Decision::Run { .. }) {
        // The object handed in comes from the watch cache, which may not have seen the status
        // the previous run wrote yet (another watch, e.g. a policy edit, can trigger this
        // reconcile first). Decide a run on what the apiserver holds, never on a stale copy:
        // otherwise one slot could run twice.
        let fresh = api.get(&archive.name_any()).await?;
        if fresh.metadata.uid != archive.metadata.uid {
            return Ok(Action::await_change());
        }
        if let Some(fresh_status) = fresh.status {
            status = MailboxArchiveStatus {
                observed_generation: generation,
                ..fresh_status
            };
        }
    }
    set_condition(
        &mut status.conditions,
        "Suspended",
        false,
        "Scheduled",
        "runs on its schedule",
        generation,
    );
    let decision = schedule.decide(history(&status), now);
    match decision {
        Decision::Wait { until } => {
            status.next_sync = Some(until.to_string());
            conditions_from_last_run(&mut status, generation);
            write_if_changed(&api, &archive, &old, &status).await?;
            Ok(Action::requeue(until_from(now, until)))
        }
        Decision::Run { slot } => {
            status.last_schedule_time = Some(slot.to_string());
            run_and_record(&ctx, &namespace, &archive, &policy, &mut status).await;
            let wake = match schedule.decide(history(&status), Timestamp::now()) {
                Decision::Wait { until } => {
                    status.next_sync = Some(until.to_string());
                    until_from(Timestamp::now(), until)
                }
                Decision::Run { .. } => Duration::from_secs(1),
            };
            apply_status(&api, &*archive, &status).await?;
            Ok(Action::requeue(wake))
        }
    }
}

/// Runs the pipeline once (waiting for a run slot first) and records the outcome in `status`,
/// metrics and an Event.
async fn run_and_record(
    ctx: &Context,
    namespace: &str,
    archive: &MailboxArchive,
    policy: &RetentionPolicy,
    status: &mut MailboxArchiveStatus,
) {
    let start = Timestamp::now();
    publish(
        ctx,
        archive,
        EventType::Normal,
        "SyncStarted",
        &format!(
            "archiving {} into {}",
            archive.spec.imap.username,
            bucket_url(archive)
        ),
    )
    .await;
    ctx.metrics.runs_waiting.inc();
    // The semaphore is never closed; a failed acquire would only mean running unthrottled.
    let permit = ctx.run_slots.acquire().await.ok();
    ctx.metrics.runs_waiting.dec();
    ctx.metrics.runs_in_progress.inc();
    let clock = Instant::now();
    let result = run_once(ctx, namespace, archive, policy).await;
    drop(permit);
    ctx.metrics.runs_in_progress.dec();
    ctx.metrics
        .run_duration
        .observe(clock.elapsed().as_secs_f64());
    let end = Timestamp::now();
    match result {
        Ok(outcome) => succeeded(ctx, archive, status, &outcome, start, end).await,
        Err(failure) => failed(ctx, archive, status, &failure, start, end).await,
    }
}

/// Between runs, Ready and Degraded describe the last run, so a refusal that has been fixed
/// (a spec, a policy) no longer shows. A condition that already says so keeps its message.
fn conditions_from_last_run(status: &mut MailboxArchiveStatus, generation: Option<i64>) {
    let (ready, reason, message) = match &status.last_sync {
        None => (
            false,
            "NotYetSynced".to_owned(),
            "waiting for the first run".to_owned(),
        ),
        Some(last) if last.result == RunResult::Succeeded => (
            true,
            "Synced".to_owned(),
            format!("the last run succeeded at {}", last.end),
        ),
        Some(last) => (
            false,
            last.reason.clone().unwrap_or_else(|| "RunFailed".into()),
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
            Some(c) if c.status == want && (c.reason == reason || type_ == "Degraded" && ready) => {
                c.observed_generation = generation;
            }
            _ => set_condition(
                &mut status.conditions,
                type_,
                want == "True",
                &reason,
                &message,
                generation,
            ),
        }
    }
}

fn until_from(now: Timestamp, until: Timestamp) -> Duration {
    let d = until.duration_since(now);
    Duration::try_from(d)
        .unwrap_or(Duration::ZERO)
        .saturating_add(Duration::from_secs(1))
        .min(MAX_REQUEUE)
}

fn history(status: &MailboxArchiveStatus) -> History {
    let parse = |s: &Option<String>| s.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    History {
        last_slot: parse(&status.last_schedule_time),
        last_end: parse(&status.last_sync.as_ref().map(|s| s.end.clone())),
        failures: status.consecutive_failures,
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
    reason: &str,
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
    reason: &str,
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

/// The policy the archive names: `Ok(Ok(policy))` if it exists and is valid, `Ok(Err((reason,
/// message)))` if the user has something to fix, `Err` if the apiserver could not be asked (a
/// transient failure: retried by the error policy, never shown as a problem with the spec).
async fn check_policy(
    ctx: &Context,
    namespace: &str,
    archive: &MailboxArchive,
) -> Result<std::result::Result<RetentionPolicy, (&'static str, String)>> {
    let name = &archive.spec.retention_policy_ref.name;
    let policies: Api<RetentionPolicy> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(match policies.get_opt(name).await? {
        Some(p) => match p.spec.validate() {
            Ok(()) => Ok(p),
            Err(problems) => Err((
                "RetentionPolicyInvalid",
                format!(
                    "RetentionPolicy {namespace}/{name} is invalid: {}",
                    problems.join("; ")
                ),
            )),
        },
        None => Err((
            "RetentionPolicyNotFound",
            format!(
                "RetentionPolicy {namespace}/{name} does not exist: no record can be archived without a retention schedule"
            ),
        )),
    })
}

/// A failed run, with what it archived before it failed (kept, logged and checkpointed).
struct RunFailure {
    error: Error,
    partial: RunSummary,
}

impl From<Error> for RunFailure {
    fn from(error: Error) -> Self {
        Self {
            error,
            partial: RunSummary::default(),
        }
    }
}

/// One run: read the Secrets, connect, archive every new message, checkpoint.
async fn run_once(
    ctx: &Context,
    namespace: &str,
    archive: &MailboxArchive,
    policy: &RetentionPolicy,
) -> std::result::Result<RunOutcome, RunFailure> {
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
    let public_key = signer.verifier_key();
    let origin = signer.name().to_owned();
    let default = &policy.spec.default_rule;
    let retention = RetentionChoice {
        series: default.record_series.clone(),
        period: crate::crd::parse_retain(&default.retain).map_err(Error::Spec)?,
    };
    let store = S3Store::new(&S3Config {
        bucket: spec.storage.bucket.clone(),
        prefix: store_prefix(&spec.storage.prefix, namespace, &name),
        region: spec.storage.region.clone(),
        endpoint: spec.storage.endpoint.clone(),
        path_style: spec.storage.path_style,
        credentials,
        insecure_http: spec.storage.insecure_http,
    })?;
    let config = ImapConfig {
        host: spec.imap.host.clone(),
        port: spec.imap.effective_port(),
        tls: match spec.imap.tls {
            ImapTls::Required => TlsMode::Required,
            ImapTls::StartTls => TlsMode::StartTls,
            ImapTls::Disabled => TlsMode::Disabled,
        },
        ca,
        insecure_plaintext: spec.imap.insecure_plaintext,
        username: spec.imap.username.clone(),
        credentials: Credentials::Password(password),
        timeout: ctx.imap_timeout,
    };
    // The store first: a bucket without Object Lock is refused before the mailbox is touched.
    let mut archiver = Archiver::open(&store, &origin, signer, retention, crate::unix_now())
        .await?
        .with_spool(ctx.spool.clone());
    let filter = FolderFilter {
        include: spec.imap.include.clone(),
        exclude: spec.imap.exclude.clone(),
    };
    let synced = match ImapSource::connect(&config).await {
        Ok(mut source) => sync_mailbox(
            &mut source,
            &mut archiver,
            &store,
            &filter,
            crate::unix_now,
            &mut |_, _, _| {},
        )
        .await
        .map(|reports| (source, reports)),
        Err(e) => Err(e),
    };
    // Whatever was stored before a failure is logged and checkpointed now (not adopted by a
    // later run), and the run marker says the run ended.
    let finished = archiver.finish().await;
    let partial = archiver.summary().clone();
    let (source, reports) = synced.map_err(|error| RunFailure {
        error,
        partial: partial.clone(),
    })?;
    finished.map_err(|error| RunFailure { error, partial })?;
    // The run is complete; a failed LOGOUT changes nothing in the archive.
    if let Err(e) = source.logout().await {
        tracing::debug!(archive = %name, error = %e, "IMAP logout failed after a complete run");
    }
    Ok(RunOutcome {
        summary: archiver.summary().clone(),
        reports,
        cursor: Cursor::load(&store).await?,
        log: archiver.log_head(),
        public_key,
    })
}

async fn succeeded(
    ctx: &Context,
    archive: &MailboxArchive,
    status: &mut MailboxArchiveStatus,
    outcome: &RunOutcome,
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
    status.last_sync = Some(LastSync {
        start: start.to_string(),
        end: end.to_string(),
        messages: s.archived + s.adopted,
        bytes: s.original_bytes,
        capture_gaps: gaps,
        result: RunResult::Succeeded,
        reason: None,
        message: None,
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
    status.public_key = Some(outcome.public_key.clone());
    let mut message = format!(
        "archived {} new messages ({} bytes) in {} folders; the archive holds {} records, log size {}",
        s.archived + s.adopted,
        s.original_bytes,
        outcome.reports.len(),
        outcome.log.records,
        outcome.log.size
    );
    if gaps > 0 {
        let _ = write!(
            message,
            "; {gaps} messages were expunged before they could be captured"
        );
    }
    if !resets.is_empty() {
        let _ = write!(
            message,
            "; UIDVALIDITY changed in {}: re-read in full, duplicates skipped by content",
            resets.join(", ")
        );
    }
    for (type_, value, reason) in [
        ("Ready", true, "Synced"),
        ("Synced", true, "RunSucceeded"),
        ("Degraded", false, "RunSucceeded"),
    ] {
        set_condition(
            &mut status.conditions,
            type_,
            value,
            reason,
            &message,
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
    publish(ctx, archive, EventType::Normal, "Synced", &message).await;
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
        reason: Some(reason.to_owned()),
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
    tracing::warn!(archive = %archive.name_any(), namespace = %archive.namespace().unwrap_or_default(), reason,
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

    #[test]
    fn history_reads_the_status() {
        let status = MailboxArchiveStatus {
            last_schedule_time: Some("2026-11-28T02:00:00Z".into()),
            last_sync: Some(LastSync {
                start: "2026-11-28T02:00:00Z".into(),
                end: "2026-11-28T02:03:00Z".into(),
                messages: 1,
                bytes: 1,
                capture_gaps: 0,
                result: RunResult::Failed,
                reason: Some("AuthenticationFailed".into()),
                message: None,
            }),
            consecutive_failures: 2,
            ..Default::default()
        };
        let h = history(&status);
        assert_eq!(h.failures, 2);
        assert_eq!(h.last_end, Some("2026-11-28T02:03:00Z".parse().unwrap()));
    }

    #[test]
    fn requeue_is_capped() {
        let now: Timestamp = "2026-11-28T00:00:00Z".parse().unwrap();
        let far: Timestamp = "2027-11-28T00:00:00Z".parse().unwrap();
        assert_eq!(until_from(now, far), MAX_REQUEUE);
        assert_eq!(until_from(far, now), Duration::from_secs(1));
    }
}
