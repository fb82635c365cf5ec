//! A policy edit re-applied to the records already archived, through the archive's one writer.
//!
//! `schedule fingerprint != state/policy.json --> facts of every record --core policy_diff-->
//!  longer: extend_retention (lock), then retention-extended; shorter: counted; checkpoint;
//!  state/policy.json`
//!
//! Done only when the policy differs from the one last re-applied to the archive: the
//! fingerprint of the schedule ([`RetentionSchedule::fingerprint`]) is kept in
//! `state/policy.json`, MAC'd like the cursor; a marker without the writer's MAC counts as
//! absent (everything is re-applied, which changes nothing that is already right). The marker
//! is written only once every record could be read, so a record that could not be is tried
//! again on the next run.

use super::holds::read_capped;
use super::stored;
use crate::store::Store;
use crate::writer::{RecordWriter, lock_until, trust};
use crate::{Error, Result};
use mailvault_core::UnixTime;
use mailvault_core::entry::Entry;
use mailvault_core::layout::POLICY_STATE_KEY;
use mailvault_core::lifecycle::Replay;
use mailvault_core::lifecycle::policy_edit::{Extension, PolicyDiff, policy_diff};
use mailvault_core::mac::MacKind;
use mailvault_core::rules::RetentionSchedule;
use serde::{Deserialize, Serialize};

/// `state/policy.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PolicyState {
    /// Fingerprint (hex) of the schedule last re-applied to every record.
    fingerprint: String,
    /// The log's size then.
    applied_through: u64,
}

/// Whether `schedule` differs from the one last re-applied to every record (a state that is
/// not the writer's counts as none, and is reported).
pub async fn policy_changed<S: Store>(
    store: &S,
    writer: &mut RecordWriter<'_, S>,
    schedule: &RetentionSchedule,
) -> Result<bool> {
    let fingerprint = schedule.fingerprint().to_hex();
    match read_capped(store, POLICY_STATE_KEY).await? {
        Some(object)
            if trust::authentic(writer.mac(), MacKind::State, POLICY_STATE_KEY, &object) =>
        {
            Ok(!serde_json::from_slice::<PolicyState>(&object.bytes)
                .is_ok_and(|s| s.fingerprint == fingerprint))
        }
        Some(_) => {
            writer.report_unauthenticated(POLICY_STATE_KEY);
            Ok(true)
        }
        None => Ok(true),
    }
}

/// What `schedule` would change for the records ingested before log position `before`
/// (every record's facts read back from the store): what a re-apply does, and what
/// `mailvault plan` previews.
pub async fn diff_before<S: Store>(
    store: &S,
    replay: &Replay,
    schedule: &RetentionSchedule,
    before: u64,
) -> Result<PolicyDiff> {
    let records: Vec<_> = replay
        .histories()
        .filter(|h| h.ingest_index < before && h.authorized.is_none() && h.destroyed.is_none())
        .collect();
    let facts = stored::facts_of(store, records).await?;
    Ok(policy_diff(
        replay.histories().filter(|h| h.ingest_index < before),
        schedule,
        &facts,
    ))
}

/// Re-applies `schedule` to every record ingested before log position `before` (the records
/// of this run were classified by it already). The caller asks [`policy_changed`] first.
pub(crate) async fn reapply_policy<S: Store>(
    store: &S,
    writer: &mut RecordWriter<'_, S>,
    replay: &Replay,
    schedule: &RetentionSchedule,
    before: u64,
    now: UnixTime,
) -> Result<Option<PolicyDiff>> {
    let mac = writer.mac().clone();
    let fingerprint = schedule.fingerprint().to_hex();
    let diff = diff_before(store, replay, schedule, before).await?;
    extend_records(store, writer, &diff.extensions, now).await?;
    writer.checkpoint().await?;
    if diff.unreadable == 0 {
        let state = PolicyState {
            fingerprint,
            applied_through: replay.size(),
        };
        let bytes =
            serde_json::to_vec_pretty(&state).map_err(|e| Error::encoding(POLICY_STATE_KEY, e))?;
        let metadata = trust::tagged(&mac, MacKind::State, POLICY_STATE_KEY, &bytes);
        store
            .put_mutable(POLICY_STATE_KEY, bytes, &metadata)
            .await?;
    }
    Ok(Some(diff))
}

/// Lengthens each record's retention: its Object Lock first, then `retention-extended` logged
/// (the entry says what is already true; a crash in between leaves a lock longer than the log,
/// which the next run logs). What a policy edit and an `Extended` review both do. Returns the
/// entries appended, in order.
pub(crate) async fn extend_records<S: Store>(
    store: &S,
    writer: &mut RecordWriter<'_, S>,
    extensions: &[Extension],
    now: UnixTime,
) -> Result<Vec<Entry>> {
    let mut entries = Vec::with_capacity(extensions.len());
    for e in extensions {
        store
            .extend_retention(
                &e.object_key,
                &e.object_version,
                lock_until(e.retain_until, now, None),
            )
            .await?;
        entries.push(writer.append(e.record.clone(), e.entry(), now).await?);
    }
    Ok(entries)
}
