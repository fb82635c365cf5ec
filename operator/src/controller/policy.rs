//! The `RetentionPolicy` and `LegalHold` reconcilers: check what the schema could not, say which
//! archives each one touches, and keep their status current. Their edits re-queue the archives
//! they touch (see [`super::run`]), which pick the change up there.

use super::status::{apply_status, set_condition};
use super::{Context, publish};
use crate::crd::{
    LegalHold, LegalHoldStatus, MailboxArchive, RetentionPolicy, RetentionPolicyStatus,
};
use crate::{Error, Result};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::SelectorExt as _;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::sync::Arc;

/// The `MailboxArchive`s of `namespace`.
async fn archives_in(ctx: &Context, namespace: &str) -> Result<Vec<MailboxArchive>> {
    let api: Api<MailboxArchive> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api.list(&ListParams::default()).await?.items)
}

/// Reconciles one `RetentionPolicy`.
#[allow(clippy::needless_pass_by_value)] // kube-runtime hands reconcilers owned Arcs
pub async fn reconcile_policy(policy: Arc<RetentionPolicy>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled("RetentionPolicy");
    let namespace = policy
        .namespace()
        .ok_or_else(|| Error::Spec("RetentionPolicy without a namespace".into()))?;
    let generation = policy.metadata.generation;
    let old = policy.status.clone().unwrap_or_default();
    let mut status = RetentionPolicyStatus {
        conditions: old.conditions.clone(),
        observed_generation: generation,
        rule_count: u32::try_from(policy.spec.rules.len() + 1).unwrap_or(u32::MAX),
        archives: archives_in(&ctx, &namespace)
            .await?
            .iter()
            .filter(|a| a.spec.retention_policy_ref.name == policy.name_any())
            .map(ResourceExt::name_any)
            .collect(),
    };
    match policy.spec.validate() {
        Ok(()) => set_condition(
            &mut status.conditions,
            "Ready",
            true,
            "Valid",
            &format!(
                "{} rules; used by {} archives",
                status.rule_count,
                status.archives.len()
            ),
            generation,
        ),
        Err(problems) => {
            let message = problems.join("; ");
            set_condition(
                &mut status.conditions,
                "Ready",
                false,
                "InvalidSpec",
                &message,
                generation,
            );
            if old.observed_generation != generation {
                ctx.metrics.error("InvalidSpec");
                publish(&ctx, &*policy, EventType::Warning, "InvalidSpec", &message).await;
            }
        }
    }
    if status != old {
        let api: Api<RetentionPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(&api, &*policy, &status).await?;
    }
    Ok(Action::await_change())
}

/// The archives a hold names or selects, and those it names that do not exist.
fn resolve_hold(
    hold: &LegalHold,
    archives: &[MailboxArchive],
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
    let selector = kube::core::Selector::try_from(selector.clone())
        .map_err(|e| Error::Spec(format!("archives.selector: {e}")))?;
    Ok((
        archives
            .iter()
            .filter(|a| selector.matches(a.labels()))
            .map(ResourceExt::name_any)
            .collect(),
        Vec::new(),
    ))
}

/// Reconciles one `LegalHold`.
#[allow(clippy::needless_pass_by_value)] // kube-runtime hands reconcilers owned Arcs
pub async fn reconcile_hold(hold: Arc<LegalHold>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled("LegalHold");
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
        (false, "InvalidSpec", problems.join("; "))
    } else {
        let (found, missing) = resolve_hold(&hold, &archives_in(&ctx, &namespace).await?)?;
        status.archives = found;
        if !missing.is_empty() {
            (
                false,
                "ArchiveNotFound",
                format!(
                    "no MailboxArchive named {} in {namespace}: records not yet archived cannot be held",
                    missing.join(", ")
                ),
            )
        } else if hold.spec.released {
            (
                true,
                "Released",
                format!("released; it applied to {}", status.archives.join(", ")),
            )
        } else {
            (
                true,
                "Placed",
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
