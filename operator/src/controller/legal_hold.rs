//! The `LegalHold` reconciler: checks what the schema could not, resolves the archives a hold
//! names or selects, keeps its finalizer, and keeps its status current. It never writes a log:
//! each archive's run applies the hold ([`super::holds`]) and reports into `status.held`; a
//! hold edit re-queues those archives (see [`super::run`]).
//!
//! `[ LegalHold ] -names/selects-> [ MailboxArchive ]* -> status.archives, Ready; finalizer`
//!
//! Deleting a hold that is not released is refused: the finalizer keeps the resource (and the
//! hold stays in force on every record) until `spec.released` is true and every archive it
//! applies to has applied the release (hold-released logged, S3 flag cleared where no other
//! hold remains). A deletion never ends a hold by itself: ending one is a recorded decision.

use super::status::{apply_status, set_condition};
use super::{Context, hold_applies_to, publish};
use crate::crd::{LegalHold, LegalHoldStatus, MailboxArchive};
use crate::{Error, Reason, Result};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::sync::Arc;

/// The finalizer that keeps an unreleased hold from being deleted.
pub const FINALIZER: &str = "mailvault.io/legal-hold";

/// The archives a hold names or selects, and those it names that do not exist.
fn resolve_hold(
    hold: &LegalHold,
    archives: &[Arc<MailboxArchive>],
) -> Result<(Vec<String>, Vec<String>)> {
    if let Some(names) = &hold.spec.archives.names {
        let (found, missing) = names
            .iter()
            .cloned()
            .partition(|n| archives.iter().any(|a| &a.name_any() == n));
        return Ok((found, missing));
    }
    let Some(selector) = &hold.spec.archives.selector else {
        return Ok((Vec::new(), Vec::new()));
    };
    kube::core::Selector::try_from(selector.clone())
        .map_err(|e| Error::Spec(format!("archives.selector: {e}")))?;
    Ok((
        archives
            .iter()
            .filter(|a| hold_applies_to(hold, a))
            .map(|a| a.name_any())
            .collect(),
        Vec::new(),
    ))
}

/// What the finalizer does with a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalizerStep {
    /// Not being deleted and the finalizer is missing: add it.
    Add,
    /// Being deleted but not released: keep it (and say so).
    Refuse,
    /// Released, being deleted, but these archives have not applied the release yet.
    WaitFor(Vec<String>),
    /// Released and applied everywhere: remove it, the deletion completes.
    Remove,
    /// Nothing to do.
    None,
}

/// The finalizer's decision (pure): `archives` are those the hold applies to now.
pub fn finalizer_step(hold: &LegalHold, archives: &[String]) -> FinalizerStep {
    let has = hold.finalizers().iter().any(|f| f == FINALIZER);
    let deleting = hold.metadata.deletion_timestamp.is_some();
    if !deleting {
        return if has {
            FinalizerStep::None
        } else {
            FinalizerStep::Add
        };
    }
    if !has {
        return FinalizerStep::None;
    }
    if !hold.spec.released {
        return FinalizerStep::Refuse;
    }
    let generation = hold.metadata.generation.unwrap_or_default();
    let entries = hold
        .status
        .as_ref()
        .map(|s| s.held.as_slice())
        .unwrap_or_default();
    let waiting: Vec<String> = archives
        .iter()
        .filter(|a| {
            !entries
                .iter()
                .any(|e| &e.archive == *a && e.generation == generation && e.records == 0)
        })
        .cloned()
        .collect();
    if waiting.is_empty() {
        FinalizerStep::Remove
    } else {
        FinalizerStep::WaitFor(waiting)
    }
}

/// Sets the finalizers to `finalizers` (a merge patch guarded by the resource version, so a
/// concurrent change is retried, never overwritten).
async fn set_finalizers(
    api: &Api<LegalHold>,
    hold: &LegalHold,
    finalizers: Vec<String>,
) -> Result<()> {
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": hold.resource_version(),
        }
    });
    api.patch(
        &hold.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// What a hold holds, per archive, in words: `chief: 12 records, clerk: pending`.
fn held_words(hold: &LegalHold, archives: &[String]) -> String {
    let generation = hold.metadata.generation.unwrap_or_default();
    let entries = hold
        .status
        .as_ref()
        .map(|s| s.held.as_slice())
        .unwrap_or_default();
    archives
        .iter()
        .map(|a| match entries.iter().find(|e| &e.archive == a) {
            Some(e) if e.generation == generation => format!("{a}: {} records", e.records),
            Some(e) => format!("{a}: {} records, this edit pending", e.records),
            None => format!("{a}: pending"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reconciles one `LegalHold`.
#[allow(clippy::needless_pass_by_value)] // kube-runtime hands reconcilers owned Arcs
pub async fn reconcile(hold: Arc<LegalHold>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = hold
        .namespace()
        .ok_or_else(|| Error::Spec("LegalHold without a namespace".into()))?;
    let api: Api<LegalHold> = Api::namespaced(ctx.client.clone(), &namespace);
    let generation = hold.metadata.generation;
    let old = hold.status.clone().unwrap_or_default();
    let mut status = LegalHoldStatus {
        conditions: old.conditions.clone(),
        observed_generation: generation,
        archives: Vec::new(),
        // Each archive's run owns its entry (another field manager); never written here.
        held: Vec::new(),
    };
    let (found, missing) = resolve_hold(&hold, &ctx.archives_in(&namespace).await)?;
    let step = finalizer_step(&hold, &found);
    match &step {
        FinalizerStep::Add => {
            let mut f = hold.finalizers().to_vec();
            f.push(FINALIZER.to_owned());
            set_finalizers(&api, &hold, f).await?;
        }
        FinalizerStep::Remove => {
            let f = hold
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            publish(
                &ctx,
                &*hold,
                EventType::Normal,
                Reason::Released,
                "released in every archive it applied to; the deletion completes",
            )
            .await;
            set_finalizers(&api, &hold, f).await?;
            return Ok(Action::await_change());
        }
        FinalizerStep::Refuse | FinalizerStep::WaitFor(_) | FinalizerStep::None => {}
    }
    let (ready, reason, message) = if let Err(problems) = hold.spec.validate() {
        (false, Reason::InvalidSpec, problems.join("; "))
    } else {
        status.archives.clone_from(&found);
        let per_archive = held_words(&hold, &found);
        if step == FinalizerStep::Refuse {
            (
                false,
                Reason::ReleaseRequired,
                format!(
                    "deletion refused: the hold is not released and stays in force ({per_archive}). To end it, set spec.released: true; each archive then releases its records (hold-released logged, the S3 legal hold cleared where no other hold remains) and the deletion completes"
                ),
            )
        } else if !missing.is_empty() {
            (
                false,
                Reason::ArchiveNotFound,
                format!(
                    "no MailboxArchive named {} in {namespace}: records not yet archived cannot be held; held so far: {per_archive}",
                    missing.join(", ")
                ),
            )
        } else if hold.spec.released {
            let waiting = match &step {
                FinalizerStep::WaitFor(a) => format!("; the deletion waits for {}", a.join(", ")),
                _ => String::new(),
            };
            (
                true,
                Reason::Released,
                format!("released ({per_archive}){waiting}"),
            )
        } else {
            (true, Reason::Placed, format!("placed ({per_archive})"))
        }
    };
    set_condition(
        &mut status.conditions,
        "Ready",
        ready,
        reason,
        &message,
        generation,
    );
    let mut compared = old.clone();
    compared.held.clear();
    if status != compared {
        if !ready {
            ctx.metrics.error(reason);
            publish(&ctx, &*hold, EventType::Warning, reason, &message).await;
        }
        apply_status(&api, &*hold, &status).await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(
        released: bool,
        deleting: bool,
        finalizer: bool,
        held: &serde_json::Value,
    ) -> LegalHold {
        let mut meta = serde_json::json!({"name": "prr", "namespace": "police", "generation": 2});
        if deleting {
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        if finalizer {
            meta["finalizers"] = serde_json::json!([FINALIZER]);
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "mailvault.io/v1alpha1", "kind": "LegalHold",
            "metadata": meta,
            "spec": {"reason": "r", "caseReference": "c", "archives": {"names": ["chief"]},
                     "released": released},
            "status": {"held": held}
        }))
        .unwrap()
    }

    #[test]
    fn an_unreleased_hold_is_never_let_go_and_a_released_one_once_applied_everywhere() {
        let archives = vec!["chief".to_owned()];
        let none = serde_json::json!([]);
        assert_eq!(
            finalizer_step(&hold(false, false, false, &none), &archives),
            FinalizerStep::Add
        );
        assert_eq!(
            finalizer_step(&hold(false, false, true, &none), &archives),
            FinalizerStep::None
        );
        assert_eq!(
            finalizer_step(&hold(false, true, true, &none), &archives),
            FinalizerStep::Refuse
        );
        assert_eq!(
            finalizer_step(&hold(true, true, true, &none), &archives),
            FinalizerStep::WaitFor(archives.clone())
        );
        let stale = serde_json::json!([{"archive": "chief", "records": 0, "generation": 1, "appliedAt": "t"}]);
        assert_eq!(
            finalizer_step(&hold(true, true, true, &stale), &archives),
            FinalizerStep::WaitFor(archives.clone())
        );
        let applied = serde_json::json!([{"archive": "chief", "records": 0, "generation": 2, "appliedAt": "t"}]);
        assert_eq!(
            finalizer_step(&hold(true, true, true, &applied), &archives),
            FinalizerStep::Remove
        );
        // An archive that no longer exists is not waited for.
        assert_eq!(
            finalizer_step(&hold(true, true, true, &serde_json::json!([])), &[]),
            FinalizerStep::Remove
        );
    }
}
