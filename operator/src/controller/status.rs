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

/// How often a status write is retried on the current object when another write got in first.
const STATUS_WRITE_ATTEMPTS: usize = 5;

/// Writes `status` of `obj` with server-side apply, as the operator, to that object and no
/// other. See [`apply_status_as`].
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, status: &S) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    apply_status_as(api, &DecidedOn::of(obj), FIELD_MANAGER, status)
        .await
        .map(drop)
}

/// The object a status was decided on: its name, and the uid and resourceVersion read.
#[derive(Debug, Clone, Default)]
pub struct DecidedOn {
    /// The object's name.
    pub name: String,
    /// Its uid.
    pub uid: Option<String>,
    /// The version the status was decided on.
    pub resource_version: Option<String>,
}

impl DecidedOn {
    /// What `obj` says of itself.
    pub fn of<K: Resource>(obj: &K) -> Self {
        Self {
            name: obj.name_any(),
            uid: obj.uid(),
            resource_version: obj.resource_version(),
        }
    }
}

/// Writes `status` with server-side apply as `manager`, to the object it was decided on and no
/// other. The whole status is applied each time, so a field the manager stops setting
/// disappears.
///
/// A write by name lands on whatever has that name now: an archive deleted and created again
/// while a reconcile or a run was under way would get the old one's status (its last sync, so
/// no run for the new one). The apply carries the `resourceVersion` it was decided on, which
/// the apiserver refuses (409) once the object changed; a `metadata.uid` in the body would not
/// do, the status subresource ignores metadata. A refused write is applied again on the
/// current version while the uid is still the one decided on, and dropped when the object is
/// gone or is another one: `Ok(false)`.
pub async fn apply_status_as<K, S>(
    api: &Api<K>,
    decided_on: &DecidedOn,
    manager: &str,
    status: &S,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let name = &decided_on.name;
    let params = PatchParams::apply(manager).force();
    let mut version = decided_on.resource_version.clone();
    let mut attempt = 0;
    loop {
        if version.is_none() {
            // A conflict, or nothing to compare against: read the current version.
            match api.get_opt(name).await? {
                Some(current) if current.uid() == decided_on.uid => {
                    version = current.resource_version();
                }
                _ => return Ok(not_written::<K>(decided_on)),
            }
        }
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": {"resourceVersion": version},
            "status": status,
        });
        attempt += 1;
        match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(not_written::<K>(decided_on)),
            // Forced: a 409 is the resourceVersion, never another manager's field.
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < STATUS_WRITE_ATTEMPTS => {
                version = None;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Logs a status write dropped because its object is gone; `false` (not written).
fn not_written<K: Resource<DynamicType = ()>>(decided_on: &DecidedOn) -> bool {
    tracing::debug!(kind = %K::kind(&()), name = %decided_on.name, uid = ?decided_on.uid,
        "not writing the status: the object was deleted (or deleted and created again)");
    false
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
