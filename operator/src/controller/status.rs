//! Conditions and status writes (server-side apply, one field manager).

use super::FIELD_MANAGER;
use crate::{Reason, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt as _};
use serde::Serialize;

/// Sets condition `type_` to `status`, keeping its `lastTransitionTime` when the status did
/// not change (the time says when it last flipped, not when it was last written).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
) {
    let reason = reason.as_str();
    let status = if status { "True" } else { "False" };
    let now = Time(jiff::Timestamp::now());
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            status.clone_into(&mut c.status);
            reason.clone_into(&mut c.reason);
            message.clone_into(&mut c.message);
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: generation,
            last_transition_time: now,
        }),
    }
}

/// Writes `status` of `obj` with server-side apply. The whole status is applied each time, so
/// a field the operator stops setting disappears.
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, status: &S) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut c = Vec::new();
        set_condition(
            &mut c,
            "Ready",
            false,
            Reason::SecretNotUsable,
            "missing",
            Some(1),
        );
        let first = c[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        set_condition(
            &mut c,
            "Ready",
            false,
            Reason::SecretNotUsable,
            "still missing",
            Some(2),
        );
        assert_eq!(c[0].last_transition_time, first);
        assert_eq!(c[0].message, "still missing");
        assert_eq!(c[0].observed_generation, Some(2));
        set_condition(&mut c, "Ready", true, Reason::Synced, "ok", Some(2));
        assert_ne!(c[0].last_transition_time, first);
        assert_eq!(c[0].status, "True");
        assert_eq!(c.len(), 1);
    }
}
