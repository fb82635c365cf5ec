//! Legal holds carried to the archives they apply to: the holds an archive's run applies,
//! hold runs when a hold changed between scheduled runs, and what each archive reports back
//! into the hold's status.
//!
//! `[ LegalHold ]* -holds_for-> archive run (run.rs, lifecycle::holds) -report-> LegalHold
//!  status.held[archive] + Event`
//!
//! Only an archive's run writes its log (one task per archive, `runs.rs`): the `LegalHold`
//! reconciler never does, so two writers never fork a log. A hold whose generation an archive
//! has not applied yet (no `status.held` entry for it at that generation) starts a hold run
//! for that archive at once: no IMAP, the holds (and an edited policy) applied to the records
//! in the store. A failed hold run is retried after [`HOLD_RUN_RETRY`].

use super::mailbox_archive::archive_store;
use super::secrets::Secrets;
use super::status::{DecidedOn, apply_status_as};
use super::{Context, hold_applies_to, publish};
use crate::crd::{ArchiveHeld, LegalHold, MailboxArchive, RetentionPolicy};
use crate::lifecycle::holds::{GivenHold, HoldsOutcome};
use crate::{Error, Reason, Result};
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a failed hold run of an archive waits before the next one.
pub const HOLD_RUN_RETRY: Duration = Duration::from_mins(1);

/// When each archive's last hold run failed (by uid).
static FAILED_HOLD_RUNS: LazyLock<Mutex<HashMap<String, Instant>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A hold as one run applied it: which resource, at which generation.
#[derive(Debug, Clone)]
pub struct AppliedHold {
    /// What the run was given.
    pub given: GivenHold,
    /// The resource as listed (its status entry is written to it and no other).
    pub decided_on: DecidedOn,
    /// Its generation when listed.
    pub generation: i64,
    /// The status entry the archive wrote last time, if any.
    pub previous: Option<ArchiveHeld>,
}

/// The `LegalHold`s (of the archive's namespace) that name or select `archive`, released ones
/// included (their records are released by the run) and ones being deleted (in force until
/// released).
pub async fn holds_for(ctx: &Context, archive: &MailboxArchive) -> Result<Vec<AppliedHold>> {
    let namespace = archive.namespace().unwrap_or_default();
    let api: Api<LegalHold> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = archive.name_any();
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|h| hold_applies_to(h, archive))
        .map(|h| AppliedHold {
            given: GivenHold {
                id: format!("{namespace}/{}", h.name_any()),
                spec: h.spec.clone(),
            },
            decided_on: DecidedOn::of(&h),
            generation: h.metadata.generation.unwrap_or_default(),
            previous: h
                .status
                .as_ref()
                .and_then(|s| s.held.iter().find(|e| e.archive == name).cloned()),
        })
        .collect())
}

/// The field manager of one archive's entry in a hold's `status.held` (a list-map keyed by
/// archive, so each archive's run owns its entry and no other).
fn field_manager(archive: &str) -> String {
    let manager = format!("{}/archive/{archive}", super::FIELD_MANAGER);
    manager.chars().take(128).collect()
}

/// Writes, into each hold's status, what it holds in `archive` now, and an Event on the hold
/// when that changed. Failures are logged (the next run writes again).
pub async fn report(
    ctx: &Context,
    archive: &MailboxArchive,
    holds: &[AppliedHold],
    outcome: &HoldsOutcome,
) {
    let namespace = archive.namespace().unwrap_or_default();
    let name = archive.name_any();
    let api: Api<LegalHold> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = jiff::Timestamp::now().to_string();
    for h in holds {
        if outcome
            .invalid
            .iter()
            .any(|i| i.starts_with(&format!("{}:", h.given.id)))
        {
            continue;
        }
        let records = outcome.held.get(&h.given.id).copied().unwrap_or(0);
        let entry = ArchiveHeld {
            archive: name.clone(),
            records,
            generation: h.generation,
            applied_at: now.clone(),
        };
        let hold_name = &h.decided_on.name;
        let status = serde_json::json!({"held": [entry]});
        match apply_status_as(&api, &h.decided_on, &field_manager(&name), &status).await {
            Ok(true) => {}
            // The hold was deleted (or created again) since the run listed it.
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(hold = %hold_name, archive = %name, error = %e, "cannot write a hold's status");
                continue;
            }
        }
        let before = h.previous.as_ref().map(|p| (p.records, p.generation));
        if before != Some((records, h.generation)) {
            let (reason, note) = if h.given.spec.released {
                (
                    Reason::Released,
                    format!(
                        "released in archive {name}: {records} records still held by it (S3 legal hold cleared where no other hold remains, hold-released logged)"
                    ),
                )
            } else {
                (
                    Reason::Placed,
                    format!(
                        "holds {records} records of archive {name} (S3 legal hold on, hold-placed logged); records archived later that match are held too"
                    ),
                )
            };
            if let Ok(hold) = api.get(hold_name).await
                && hold.uid() == h.decided_on.uid
            {
                publish(ctx, &hold, EventType::Normal, reason, &note).await;
            }
        }
    }
}

/// Whether some hold on `archive` has a generation the archive has not applied.
fn pending(holds: &[AppliedHold]) -> bool {
    holds.iter().any(|h| {
        h.previous
            .as_ref()
            .is_none_or(|p| p.generation != h.generation)
    })
}

/// What [`start_if_pending`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldRunStart {
    /// A hold run started.
    Started,
    /// No hold is pending, or a run of the archive is in flight (its end re-queues it).
    NotNeeded,
    /// A hold run of the archive failed less than [`HOLD_RUN_RETRY`] ago: the archive must be
    /// re-queued after this long (nothing else would: a suspended archive waits for a change).
    RetryIn(Duration),
}

/// Starts a hold run for `archive` when a hold on it changed since it was last applied there
/// and no run is in flight.
pub async fn start_if_pending(
    ctx: &Arc<Context>,
    archive: &Arc<MailboxArchive>,
    policy: Option<&RetentionPolicy>,
) -> Result<HoldRunStart> {
    let uid = archive.metadata.uid.clone().unwrap_or_default();
    if ctx.runs.is_running(&uid) {
        return Ok(HoldRunStart::NotNeeded);
    }
    let failed_ago = FAILED_HOLD_RUNS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&uid)
        .map(Instant::elapsed);
    if let Some(left) = failed_ago.and_then(|ago| HOLD_RUN_RETRY.checked_sub(ago))
        && !left.is_zero()
    {
        return Ok(HoldRunStart::RetryIn(left));
    }
    let holds = holds_for(ctx, archive).await?;
    if !pending(&holds) {
        return Ok(HoldRunStart::NotNeeded);
    }
    let schedule = policy.and_then(|p| p.spec.schedule().ok());
    let task_ctx = ctx.clone();
    let task_archive = archive.clone();
    let task_uid = uid.clone();
    let run = async move {
        let result = Box::pin(hold_run(&task_ctx, &task_archive, &holds, schedule)).await;
        let mut failed = FAILED_HOLD_RUNS
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if result.is_ok() {
            failed.remove(&task_uid);
        } else {
            failed.insert(task_uid, Instant::now());
        }
    };
    Ok(
        if ctx.runs.start(
            &uid,
            ObjectRef::from_obj(&**archive),
            ctx.run_ended.clone(),
            run,
        ) {
            HoldRunStart::Started
        } else {
            HoldRunStart::NotNeeded
        },
    )
}

/// One hold run: the holds (and an edited policy, when the policy is usable) applied to the
/// records in the archive's store; reported into the holds' status and Events.
async fn hold_run(
    ctx: &Context,
    archive: &MailboxArchive,
    holds: &[AppliedHold],
    schedule: Option<mailvault_core::rules::RetentionSchedule>,
) -> Result<()> {
    let namespace = archive.namespace().unwrap_or_default();
    let name = archive.name_any();
    let secrets = Secrets::new(ctx.client.clone(), &namespace, &name);
    let result = async {
        let (store, signer) = archive_store(&secrets, &namespace, archive).await?;
        let given: Vec<GivenHold> = holds.iter().map(|h| h.given.clone()).collect();
        Box::pin(crate::lifecycle::apply::apply_to_archive(
            &store,
            signer,
            schedule.as_ref(),
            &given,
        ))
        .await
    }
    .await;
    match result {
        Ok((outcome, _, summary)) => {
            report(ctx, archive, holds, &outcome.holds).await;
            let mut lines = outcome.summary();
            lines.extend(summary.unauthenticated_warning());
            if !lines.is_empty() {
                publish(
                    ctx,
                    archive,
                    EventType::Normal,
                    Reason::Placed,
                    &lines.join("; "),
                )
                .await;
            }
            Ok(())
        }
        Err(e) => {
            let reason = e.reason();
            ctx.metrics.error(reason);
            tracing::warn!(archive = %name, namespace = %namespace, error = %e, "hold run failed");
            publish(
                ctx,
                archive,
                EventType::Warning,
                reason,
                &format!(
                    "legal holds could not be applied to this archive (retried in {} s): {e}",
                    HOLD_RUN_RETRY.as_secs()
                ),
            )
            .await;
            Err(Error::Spec(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(generation: i64, previous: Option<i64>) -> AppliedHold {
        AppliedHold {
            given: GivenHold {
                id: "police/h".into(),
                spec: serde_json::from_value(serde_json::json!({
                    "reason": "r", "caseReference": "c", "archives": {"names": ["chief"]}
                }))
                .unwrap(),
            },
            decided_on: DecidedOn::default(),
            generation,
            previous: previous.map(|g| ArchiveHeld {
                archive: "chief".into(),
                records: 1,
                generation: g,
                applied_at: String::new(),
            }),
        }
    }

    #[test]
    fn a_hold_is_pending_until_the_archive_applied_its_generation() {
        assert!(pending(&[applied(1, None)]));
        assert!(pending(&[applied(2, Some(1))]));
        assert!(!pending(&[applied(2, Some(2))]));
        assert!(!pending(&[]));
        assert!(field_manager(&"x".repeat(300)).len() <= 128);
    }
}
