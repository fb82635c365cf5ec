//! The `RetentionPolicy` reconciler: checks what the schema could not, lists the archives that
//! use the policy, and keeps its status current. A policy edit re-queues the archives that name
//! it (see [`super::run`]), which pick the change up there.
//!
//! `[ RetentionPolicy ] <-named by- [ MailboxArchive ]* -> status.archives, Ready`

use super::status::{apply_status, set_condition};
use super::{Context, publish};
use crate::crd::{RetentionPolicy, RetentionPolicyStatus};
use crate::{Error, Reason, Result};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use std::sync::Arc;

/// Reconciles one `RetentionPolicy`.
#[allow(clippy::needless_pass_by_value)] // kube-runtime hands reconcilers owned Arcs
pub async fn reconcile(policy: Arc<RetentionPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = policy
        .namespace()
        .ok_or_else(|| Error::Spec("RetentionPolicy without a namespace".into()))?;
    let generation = policy.metadata.generation;
    let old = policy.status.clone().unwrap_or_default();
    let mut status = RetentionPolicyStatus {
        conditions: old.conditions.clone(),
        observed_generation: generation,
        rule_count: u32::try_from(policy.spec.rules.len() + 1).unwrap_or(u32::MAX),
        archives: ctx
            .archives_in(&namespace)
            .await
            .iter()
            .filter(|a| a.spec.retention_policy_ref.name == policy.name_any())
            .map(|a| a.name_any())
            .collect(),
        // Written by the archives' destruction runs; kept for the archives still using it.
        destruction: Vec::new(),
    };
    status.destruction = old
        .destruction
        .iter()
        .filter(|d| status.archives.contains(&d.archive))
        .cloned()
        .collect();
    match policy.spec.validate() {
        Ok(()) => set_condition(
            &mut status.conditions,
            "Ready",
            true,
            Reason::Valid,
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
                Reason::InvalidSpec,
                &message,
                generation,
            );
            if old.observed_generation != generation {
                ctx.metrics.error(Reason::InvalidSpec);
                publish(
                    &ctx,
                    &*policy,
                    EventType::Warning,
                    Reason::InvalidSpec,
                    &message,
                )
                .await;
            }
        }
    }
    if status != old {
        let api: Api<RetentionPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(&api, &*policy, &status).await?;
    }
    Ok(Action::await_change())
}
