//! The lifecycle steps of a run on records already in the log: an edited policy re-applied,
//! then legal holds. Called by an archive run after ingest (CLI and operator alike), and alone
//! by `mailvault hold` and the operator's hold runs.
//!
//! `RecordWriter (checkpointed) -> StoredLog::load + Replay -> policy_edit -> holds -> checkpoint`

use super::holds::{GivenHold, HoldsOutcome, apply_holds};
use super::policy_edit::reapply_policy;
use crate::Result;
use crate::reader::{ReplayedLog, replay_log};
use crate::store::Store;
use crate::writer::{LogHead, RecordWriter, RunSummary};
use mailvault_core::lifecycle::policy_edit::PolicyDiff;
use mailvault_core::note::{NoteSigner, NoteVerifier};
use mailvault_core::rules::RetentionSchedule;

/// What the lifecycle steps of a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleOutcome {
    /// The policy re-applied (it had changed since last time), per rule.
    pub policy: Option<PolicyDiff>,
    /// The legal holds.
    pub holds: HoldsOutcome,
}

impl LifecycleOutcome {
    /// Lines for a run summary (nothing when nothing was to say).
    pub fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(p) = self
            .policy
            .as_ref()
            .filter(|p| p.extended() + p.shortened() + p.same() + p.unreadable > 0)
        {
            lines.push(format!("policy re-applied to archived records: {p}"));
        }
        lines.extend(self.holds.summary());
        lines
    }
}

/// Re-applies `schedule` (when given and changed) to records ingested before log position
/// `before`, then applies the holds, through `writer` (whose stores in flight are logged and
/// checkpointed first).
pub async fn apply<S: Store>(
    store: &S,
    writer: &mut RecordWriter<'_, S>,
    verifier: &NoteVerifier,
    schedule: Option<&RetentionSchedule>,
    holds: &[GivenHold],
    before: u64,
) -> Result<LifecycleOutcome> {
    writer.checkpoint().await?;
    // The whole log is read only when there is something to apply: an edited policy, or legal
    // holds. Otherwise a run stays as cheap as its resume (docs/record-log.md).
    let policy_due = match schedule {
        Some(s) => super::policy_edit::policy_changed(store, writer, s).await?,
        None => false,
    };
    if !policy_due && !super::holds::holds_due(store, writer.mac(), holds).await? {
        return Ok(LifecycleOutcome::default());
    }
    // Anomalies are the verifier's to report; the replay keeps the story mailvault wrote.
    let ReplayedLog { replay, log, .. } = replay_log(store, verifier.name(), verifier).await?;
    writer.check_same_log(&log.records)?;
    drop(log);
    let now = crate::unix_now();
    let policy = match schedule {
        Some(s) if policy_due => reapply_policy(store, writer, &replay, s, before, now).await?,
        _ => None,
    };
    let holds = apply_holds(store, writer, &replay, holds, now).await?;
    Ok(LifecycleOutcome { policy, holds })
}

/// Opens the archive signed by `signer`, applies the lifecycle steps to every record, and
/// finishes: what `mailvault hold` and the operator's hold runs do. Nothing is ingested.
pub async fn apply_to_archive<S: Store>(
    store: &S,
    signer: NoteSigner,
    schedule: Option<&RetentionSchedule>,
    holds: &[GivenHold],
) -> Result<(LifecycleOutcome, LogHead, RunSummary)> {
    let verifier = NoteVerifier::parse(&signer.verifier_key())?;
    let origin = signer.name().to_owned();
    // Nothing is ingested: the writer's schedule is never used.
    let placeholder =
        RetentionSchedule::single("unclassified", mailvault_core::retention::Period::Permanent)
            .map_err(|e| crate::Error::Usage(e.to_string()))?;
    let mut writer =
        RecordWriter::open(store, &origin, signer, placeholder, crate::unix_now()).await?;
    let before = writer.log_head().size;
    let outcome = apply(store, &mut writer, &verifier, schedule, holds, before).await;
    writer.finish().await?;
    let outcome = outcome?;
    Ok((outcome, writer.log_head(), writer.summary().clone()))
}
