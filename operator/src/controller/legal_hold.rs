//! The `LegalHold` reconciler: checks what the schema could not, resolves the archives a hold
//! names or selects, and keeps its status current. A hold edit re-queues those archives (see
//! [`super::run`]).
//!
//! `[ LegalHold ] -names/selects-> [ MailboxArchive ]* -> status.archives, Ready`

use super::status::{apply_status, set_condition};
use super::{Context, hold_applies_to, publish};
use crate::crd::{LegalHold, LegalHoldStatus, MailboxArchive};
use crate::{Error, Reason, Result};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::sync::Arc;

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

/// Reconciles one `LegalHold`.
#[allow(clippy::needless_pass_by_value)] // kube-runtime hands reconcilers owned Arcs
pub async fn reconcile(hold: Arc<LegalHold>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = hold
        .namespace()
        .ok_or_else(|| Error::Spec("LegalHold without a namespace".into()))?;
    let generation = hold.metadata.generation;
    let old = hold.status.clone().unwrap_or_default();
    let mut status = LegalHoldStatus {
        conditions: old.conditions.clone(),
        observed_generation: generation,
        archives: Vec::new(),
    };
    let (ready, reason, message) = if let Err(problems) = hold.spec.validate() {
        (false, Reason::InvalidSpec, problems.join("; "))
    } else {
        let (found, missing) = resolve_hold(&hold, &ctx.archives_in(&namespace).await)?;
        status.archives = found;
        if !missing.is_empty() {
            (
                false,
                Reason::ArchiveNotFound,
                format!(
                    "no MailboxArchive named {} in {namespace}: records not yet archived cannot be held",
                    missing.join(", ")
                ),
            )
        } else if hold.spec.released {
            (
                true,
                Reason::Released,
                format!("released; it applied to {}", status.archives.join(", ")),
            )
        } else {
            (
                true,
                Reason::Placed,
                format!("placed on {}", status.archives.join(", ")),
            )
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
    if status != old {
        if !ready {
            ctx.metrics.error(reason);
            publish(&ctx, &*hold, EventType::Warning, reason, &message).await;
        }
        let api: Api<LegalHold> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(&api, &*hold, &status).await?;
    }
    Ok(Action::await_change())
}
