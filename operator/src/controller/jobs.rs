//! Archive runs as Kubernetes Jobs (`runner: Job`): one Job per due run, whose pod runs
//! `mailvault run` (the same run and status code as an in-process run) under a `ServiceAccount`
//! that may read only its archive's Secrets.
//!
//! `reconcile --Plan::Run--> [ SA + Role + RoleBinding ] + Job <name>-<hash(uid, slot, failures)>`
//! `Job pod: mailvault run --> run_once --> status (last_job = its Job) + Events --> exit 0`
//! `Job failed (no pod recorded an outcome) --> the operator records JobFailed --> backoff`
//!
//! The Job's name is a function of what the status says (the archive's uid, the slot, the
//! failures in a row): two leaders deciding the same run create the same Job, and the second
//! create fails with `AlreadyExists`, so a slot runs once even across a leader change. The pod
//! writes the outcome into the archive's status itself, through the operator's field manager,
//! with `lastJob` set to its Job: the same conditions, Events and `consecutiveFailures` (hence
//! the same backoff) as an in-process run. A pod that dies before it recorded anything exits
//! non-zero, and the Job controller starts another (`backoffLimit`); the run resumes from the
//! bucket. Only a Job that failed as a whole, with no outcome recorded, is recorded by the
//! operator, as a failed run with reason `JobFailed`.
//!
//! Destruction runs of a `runner: Job` archive are Jobs too ([`RunKind::Destruction`],
//! `mailvault run --destruction`), under an identity of their own that may read the store's
//! Secrets but not the IMAP password, and write `DispositionReview`s and the policy's status.
//! Both kinds share the archive's slot: while a Job of either kind is unfinished, no other run
//! of the archive starts.

use super::mailbox_archive::{record_outcome, scheduled};
use super::secrets::{SIGNING_KEY_KEY, Secrets};
use super::{Context, FIELD_MANAGER, Settings};
use crate::crd::{MailboxArchive, MailboxArchiveStatus, RetentionPolicy, Runner};
use crate::metrics::Metrics;
use crate::run::RunFailure;
use crate::{Error, Result};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SecurityContext, ServiceAccount, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource as _, ResourceExt as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Label on everything the operator creates for Job runs.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "mailvault-operator");
/// Label naming the archive (by uid) a Job runs.
pub const ARCHIVE_UID: &str = "mailvault.io/archive-uid";
/// Label naming the archive a Job runs.
pub const ARCHIVE: &str = "mailvault.io/archive";
/// Annotation on a Job: the schedule slot it runs (RFC 3339).
pub const SLOT: &str = "mailvault.io/slot";
/// Label on a Job: what it runs ([`RunKind`]); Jobs without it are archive runs.
pub const RUN_KIND: &str = "mailvault.io/run-kind";

/// What a Job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// An archive run (`mailvault run`).
    Archive,
    /// A destruction run (`mailvault run --destruction`).
    Destruction,
}

impl RunKind {
    /// The [`RUN_KIND`] label's value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Archive => "archive",
            Self::Destruction => "destruction",
        }
    }

    /// The kind of a Job, from its label (an archive run when it has none).
    pub fn of(job: &Job) -> Self {
        match job.labels().get(RUN_KIND).map(String::as_str) {
            Some("destruction") => Self::Destruction,
            _ => Self::Archive,
        }
    }
}

/// How the operator builds a run's Job (`--job-config`, JSON; the chart renders it from the
/// `jobs` values).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct JobSettings {
    /// The mailvault image (the operator's own, normally). Empty: Job mode is refused.
    pub image: String,
    /// `imagePullPolicy`.
    pub image_pull_policy: String,
    /// The run container's resources.
    pub resources: Option<ResourceRequirements>,
    /// Where run pods may go.
    pub node_selector: BTreeMap<String, String>,
    /// Taints run pods tolerate.
    pub tolerations: Vec<Toleration>,
    /// The spool emptyDir's size limit (largest message x 4), which the run keeps within
    /// (`--max-spool-size`).
    #[serde(rename = "spoolSizeMiB")]
    pub spool_size_mib: u32,
    /// A finished Job is deleted this long after it ended.
    pub ttl_seconds_after_finished: i32,
    /// Pods a Job may lose (killed, evicted) before it fails as a whole.
    pub backoff_limit: i32,
    /// Jobs in flight at once across the watched namespaces; a due run waits for a place.
    pub max_in_flight: usize,
    /// Jobs in flight at once in one namespace (0: no cap of its own), so that one team's
    /// thousand mailboxes cannot take every place.
    pub max_in_flight_per_namespace: usize,
    /// The run pod's security context.
    pub pod_security_context: Option<PodSecurityContext>,
    /// The run container's security context.
    pub security_context: Option<SecurityContext>,
    /// `RUST_LOG` of the run.
    pub log_level: String,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            image: String::new(),
            image_pull_policy: "IfNotPresent".into(),
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            spool_size_mib: 200,
            ttl_seconds_after_finished: 3600,
            backoff_limit: 3,
            max_in_flight: 20,
            max_in_flight_per_namespace: 10,
            pod_security_context: None,
            security_context: None,
            log_level: "info,kube=warn,aws=warn".into(),
        }
    }
}

/// The runner an archive uses.
pub fn runner_of(ctx: &Context, archive: &MailboxArchive) -> Runner {
    archive.spec.runner.unwrap_or(ctx.default_runner)
}

/// The name of the Job that runs `archive` for `key` (see [`run_key`]): the archive's name
/// (cut to leave room) and a hash of its uid and the key. At most 52 characters, so the pods'
/// generated names and the `job-name` label stay within 63.
pub fn job_name(archive: &str, uid: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{uid}\n{key}").as_bytes());
    let hash = hex::encode(&digest[..5]);
    let stem: String = archive.chars().take(41).collect();
    format!("{}-{hash}", stem.trim_end_matches(['-', '.']))
}

/// What identifies one run of an archive in its status: the slot (or `initial` for the first
/// run, whose slot is the clock's "now" and would differ between two leaders) and the failures
/// in a row (each retry of a slot is a new run).
pub fn run_key(status: &MailboxArchiveStatus, slot: Timestamp) -> String {
    let slot = if status.last_schedule_time.is_some() {
        slot.to_string()
    } else {
        "initial".to_owned()
    };
    format!("{slot}#{}", status.consecutive_failures)
}

/// What identifies one destruction run in the archive's status: `destruction/`, the slot and
/// the destruction failures in a row.
pub fn destruction_run_key(status: &MailboxArchiveStatus, slot: Timestamp) -> String {
    let failures = status
        .destruction
        .as_ref()
        .map_or(0, |d| d.consecutive_failures);
    format!("destruction/{slot}#{failures}")
}

/// Where a Job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    /// Not finished.
    Active,
    /// Complete: a pod recorded the run's outcome.
    Succeeded,
    /// Failed as a whole: no pod recorded an outcome.
    Failed,
}

impl JobPhase {
    /// From the Job's conditions.
    pub fn of(job: &Job) -> Self {
        let conditions = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let holds = |t: &str| {
            conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        if holds("Complete") {
            Self::Succeeded
        } else if holds("Failed") {
            Self::Failed
        } else {
            Self::Active
        }
    }
}

/// What the Jobs of one archive say.
#[derive(Debug, Default)]
pub struct Seen {
    /// A Job of the archive (of either kind) has not finished.
    pub in_flight: bool,
    /// The newest archive-run Job failed without recording an outcome (its name is not
    /// `lastJob`).
    pub unrecorded_failure: Option<Job>,
    /// The newest destruction Job failed without recording an outcome (its name is not
    /// `destruction.lastJob`).
    pub unrecorded_destruction_failure: Option<Job>,
}

/// Reads the Jobs of the archive with this uid from the apiserver (never a cache: deciding on
/// a stale list could start a slot twice).
pub async fn observe(
    ctx: &Context,
    namespace: &str,
    uid: &str,
    status: &MailboxArchiveStatus,
) -> Result<Seen> {
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{ARCHIVE_UID}={uid}")))
        .await?
        .items;
    Ok(seen(jobs, status))
}

fn seen(jobs: Vec<Job>, status: &MailboxArchiveStatus) -> Seen {
    let in_flight = jobs.iter().any(|j| JobPhase::of(j) == JobPhase::Active);
    let (destruction, archive): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| RunKind::of(j) == RunKind::Destruction);
    let unrecorded = |jobs: Vec<Job>, recorded: Option<&str>| {
        jobs.into_iter()
            .max_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0))
            .filter(|j| {
                JobPhase::of(j) == JobPhase::Failed && recorded != j.metadata.name.as_deref()
            })
    };
    Seen {
        in_flight,
        unrecorded_failure: unrecorded(archive, status.last_job.as_deref()),
        unrecorded_destruction_failure: unrecorded(
            destruction,
            status
                .destruction
                .as_ref()
                .and_then(|d| d.last_job.as_deref()),
        ),
    }
}

/// Whether the archive's runs have been, or are, Jobs: then its Jobs must be observed even
/// after a switch to `InProcess` (a Job in flight still writes).
pub fn observed(ctx: &Context, archive: &MailboxArchive, status: &MailboxArchiveStatus) -> bool {
    runner_of(ctx, archive) == Runner::Job
        || status.last_job.is_some()
        || status
            .destruction
            .as_ref()
            .is_some_and(|d| d.last_job.is_some())
}

/// Records a Job that failed with no outcome as a failed run (reason `JobFailed`): the same
/// conditions, Event and backoff as any failed run.
pub async fn record_unrecorded_failure(
    ctx: &Context,
    api: &Api<MailboxArchive>,
    archive: &MailboxArchive,
    job: &Job,
) -> Result<()> {
    let name = job.name_any();
    // Decided on what the apiserver holds: the pod may have recorded after all.
    let fresh = api.get(&archive.name_any()).await?;
    let mut status = fresh.status.unwrap_or_default();
    if status.last_job.as_deref() == Some(name.as_str()) {
        return Ok(());
    }
    let slot = job.annotations().get(SLOT).cloned();
    status.last_schedule_time = slot.or(status.last_schedule_time);
    status.last_job = Some(name.clone());
    let start = job
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0);
    let failure = RunFailure::from(Error::Job(format!(
        "Job {name} ended without an outcome: its pods failed or were killed {} times (kubectl -n {} describe job {name})",
        ctx.jobs.backoff_limit.saturating_add(1),
        archive.namespace().unwrap_or_default()
    )));
    record_outcome(
        ctx,
        api,
        archive,
        status,
        Err(failure),
        start,
        Timestamp::now(),
    )
    .await
}

/// Whether another Job may start in `namespace`: fewer than `maxInFlight` of the operator's
/// Jobs unfinished across the namespaces it watches, and fewer than
/// `maxInFlightPerNamespace` in this one (one list answers both).
async fn has_room(ctx: &Context, namespace: &str) -> Result<bool> {
    let api: Api<Job> = match &ctx.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    // Only Jobs without a successful pod: finished Jobs stay until their TTL (an hour by
    // default) and listing them all for every start made starts quadratic in the archives.
    let jobs = api
        .list(
            &ListParams::default()
                .labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1))
                .fields("status.successful=0"),
        )
        .await?
        .items;
    Ok(room(&ctx.jobs, &jobs, namespace))
}

fn room(settings: &JobSettings, jobs: &[Job], namespace: &str) -> bool {
    let active: Vec<&Job> = jobs
        .iter()
        .filter(|j| JobPhase::of(j) == JobPhase::Active)
        .collect();
    let here = active
        .iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(namespace))
        .count();
    active.len() < settings.max_in_flight.max(1)
        && (settings.max_in_flight_per_namespace == 0
            || here < settings.max_in_flight_per_namespace)
}

/// What `start` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    /// The Job exists (created now, or by an earlier leader for the same run).
    Job(String),
    /// `maxInFlight` Jobs are running (or `maxInFlightPerNamespace` in the archive's
    /// namespace): look again later.
    AtCapacity,
}

/// Starts the run for `slot` as a Job: the signing key (generated here, so the run needs no
/// right to create Secrets), the run's identity, then the Job.
pub async fn start(
    ctx: &Context,
    archive: &MailboxArchive,
    status: &MailboxArchiveStatus,
    slot: Timestamp,
) -> Result<Started> {
    start_kind(ctx, archive, RunKind::Archive, &run_key(status, slot), slot).await
}

/// Starts the destruction run for `slot` as a Job (the archive's `runner` is `Job`).
pub async fn start_destruction(
    ctx: &Context,
    archive: &MailboxArchive,
    status: &MailboxArchiveStatus,
    slot: Timestamp,
) -> Result<Started> {
    let key = destruction_run_key(status, slot);
    start_kind(ctx, archive, RunKind::Destruction, &key, slot).await
}

async fn start_kind(
    ctx: &Context,
    archive: &MailboxArchive,
    kind: RunKind,
    key: &str,
    slot: Timestamp,
) -> Result<Started> {
    if ctx.jobs.image.is_empty() {
        return Err(Error::Usage(
            "runner Job needs the operator's --job-config with an image (chart value jobs.image, default the operator's image)".into(),
        ));
    }
    let namespace = archive.namespace().unwrap_or_default();
    // One start at a time in this operator (the only one acting: it holds the lease), from the
    // count to the create, so the caps hold while many archives are due at once.
    // Bounded: a request stuck on a dead connection must not stop every start for good.
    let _starting = ctx.job_starts.lock().await;
    tokio::time::timeout(
        JOB_START_TIMEOUT,
        start_locked(ctx, archive, kind, key, slot),
    )
    .await
    .map_err(|_| {
        Error::Job(format!(
            "starting a Job for {}/{} took over {} s: the apiserver is not answering",
            namespace,
            archive.name_any(),
            JOB_START_TIMEOUT.as_secs()
        ))
    })?
}

/// How long one Job start (the count, the run's key and identity, the create) may take.
const JOB_START_TIMEOUT: std::time::Duration = std::time::Duration::from_mins(1);

/// [`start_kind`] with the start lock held.
async fn start_locked(
    ctx: &Context,
    archive: &MailboxArchive,
    kind: RunKind,
    key: &str,
    slot: Timestamp,
) -> Result<Started> {
    let namespace = archive.namespace().unwrap_or_default();
    if !has_room(ctx, &namespace).await? {
        return Ok(Started::AtCapacity);
    }
    let name = archive.name_any();
    let uid = archive.metadata.uid.clone().unwrap_or_default();
    let secrets = Secrets::new(ctx.client.clone(), &namespace, &name);
    if archive.spec.signing_key_secret_ref.is_none() {
        let origin = super::mailbox_archive::origin(&namespace, &name);
        secrets
            .signing_key(&key_secret(&name), SIGNING_KEY_KEY, Some(&origin))
            .await?;
    }
    apply_identity(ctx, archive, kind).await?;
    let job_name = job_name(&name, &uid, key);
    let job = job_manifest(&ctx.jobs, archive, kind, &job_name, slot);
    match Api::<Job>::namespaced(ctx.client.clone(), &namespace)
        .create(&PostParams::default(), &job)
        .await
    {
        Ok(_) => {
            tracing::info!(archive = %name, namespace = %namespace, job = %job_name, slot = %slot, kind = kind.label(), "run started as a Job");
        }
        // Another leader (or this one, before a restart) started this very run.
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Started::Job(job_name))
}

fn key_secret(archive: &str) -> String {
    format!("{archive}-signing-key")
}

/// The `ServiceAccount` (and Role) of an archive's runs of one kind.
pub fn identity_name(kind: RunKind, archive: &str) -> String {
    match kind {
        RunKind::Archive => format!("mailvault-run-{archive}"),
        RunKind::Destruction => format!("mailvault-destroy-{archive}"),
    }
}

fn owner(archive: &MailboxArchive) -> OwnerReference {
    // The controller reference: the Job watch maps a Job back to its archive, and deleting the
    // archive lets the garbage collector remove its Jobs and its run identity.
    archive.controller_owner_ref(&()).unwrap_or_default()
}

/// What one archive's run of `kind` may do, and nothing more. Both may read the store's
/// Secrets (S3 keys, signing key) by name, read their archive and policy, write their archive's
/// status and publish Events. An archive run also reads the IMAP password and CA bundle and
/// applies legal holds; a destruction run instead reads and creates `DispositionReview`s and
/// writes their status and its policy's status. Neither may read another archive's Secrets.
pub fn role_rules(archive: &MailboxArchive, kind: RunKind) -> Vec<PolicyRule> {
    let spec = &archive.spec;
    let name = archive.name_any();
    let mut secrets = vec![
        spec.signing_key_secret_ref
            .as_ref()
            .map_or_else(|| key_secret(&name), |r| r.name.clone()),
    ];
    secrets.extend(
        spec.storage
            .credentials_secret_ref
            .as_ref()
            .map(|r| r.name.clone()),
    );
    if kind == RunKind::Archive {
        secrets.push(spec.imap.password_secret_ref.name.clone());
        secrets.extend(spec.imap.ca_secret_ref.as_ref().map(|r| r.name.clone()));
    }
    secrets.sort();
    secrets.dedup();
    let policy = spec.retention_policy_ref.name.clone();
    let rule =
        |group: &str, resource: &str, verbs: &[&str], names: Option<Vec<String>>| PolicyRule {
            api_groups: Some(vec![group.to_owned()]),
            resources: Some(vec![resource.to_owned()]),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            resource_names: names,
            ..Default::default()
        };
    let mut rules = vec![
        rule("", "secrets", &["get"], Some(secrets)),
        rule(
            "mailvault.io",
            "mailboxarchives",
            &["get"],
            Some(vec![name.clone()]),
        ),
        rule(
            "mailvault.io",
            "mailboxarchives/status",
            &["patch"],
            Some(vec![name]),
        ),
        rule(
            "mailvault.io",
            "retentionpolicies",
            &["get"],
            Some(vec![policy.clone()]),
        ),
        rule("events.k8s.io", "events", &["create", "patch"], None),
    ];
    match kind {
        RunKind::Archive => {
            rules.push(rule("mailvault.io", "legalholds", &["get", "list"], None));
            rules.push(rule("mailvault.io", "legalholds/status", &["patch"], None));
        }
        RunKind::Destruction => {
            // Reviews are listed and created by the batch's digest, so not by name. Creating
            // one adds no power: this identity holds the signing key and the S3 keys, which
            // can already delete records whose lock has expired (docs/operator.md).
            rules.push(rule(
                "mailvault.io",
                "dispositionreviews",
                &["get", "list", "create"],
                None,
            ));
            rules.push(rule(
                "mailvault.io",
                "dispositionreviews/status",
                &["patch"],
                None,
            ));
            rules.push(rule(
                "mailvault.io",
                "retentionpolicies/status",
                &["patch"],
                Some(vec![policy]),
            ));
        }
    }
    rules
}

/// Applies the `ServiceAccount`, `Role` and `RoleBinding` of the archive's runs of `kind`
/// (owned by the archive). The Role follows the spec: a Secret named later is readable from
/// the next run on.
async fn apply_identity(ctx: &Context, archive: &MailboxArchive, kind: RunKind) -> Result<()> {
    let namespace = archive.namespace().unwrap_or_default();
    let id = identity_name(kind, &archive.name_any());
    let meta = ObjectMeta {
        name: Some(id.clone()),
        namespace: Some(namespace.clone()),
        labels: Some(labels(archive)),
        owner_references: Some(vec![owner(archive)]),
        ..Default::default()
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let account = ServiceAccount {
        metadata: meta.clone(),
        ..Default::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(role_rules(archive, kind)),
    };
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: id.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: id.clone(),
            namespace: Some(namespace.clone()),
            ..Default::default()
        }]),
    };
    let client = &ctx.client;
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .patch(&id, &params, &Patch::Apply(with_kind(&account)?))
        .await?;
    Api::<Role>::namespaced(client.clone(), &namespace)
        .patch(&id, &params, &Patch::Apply(with_kind(&role)?))
        .await?;
    Api::<RoleBinding>::namespaced(client.clone(), &namespace)
        .patch(&id, &params, &Patch::Apply(with_kind(&binding)?))
        .await?;
    Ok(())
}

/// Server-side apply needs apiVersion and kind in the body.
fn with_kind<K: kube::Resource<DynamicType = ()> + Serialize>(
    obj: &K,
) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(obj).map_err(|e| Error::encoding("an apply body", e))?;
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    Ok(value)
}

fn labels(archive: &MailboxArchive) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())]);
    // A label value is at most 63 characters; the uid label is the exact one.
    labels.insert(
        ARCHIVE.to_owned(),
        archive.name_any().chars().take(63).collect(),
    );
    labels.insert(
        ARCHIVE_UID.to_owned(),
        archive.metadata.uid.clone().unwrap_or_default(),
    );
    labels
}

/// The run's container: `mailvault run` for this archive (by name and uid), Job and slot
/// (`--destruction` for a destruction run).
fn run_container(
    settings: &JobSettings,
    archive: &MailboxArchive,
    kind: RunKind,
    name: &str,
    slot: Timestamp,
) -> Container {
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let env = vec![
        EnvVar {
            name: "RUST_LOG".into(),
            value: Some(settings.log_level.clone()),
            ..Default::default()
        },
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(field("metadata.name")),
            ..Default::default()
        },
    ];
    let mut args = vec![
        "run".into(),
        format!("--namespace={}", archive.namespace().unwrap_or_default()),
        format!("--archive={}", archive.name_any()),
        format!(
            "--archive-uid={}",
            archive.metadata.uid.as_deref().unwrap_or_default()
        ),
        format!("--job={name}"),
        format!("--slot={slot}"),
        "--spool-dir=/spool".into(),
        format!("--max-spool-size={}MiB", settings.spool_size_mib.max(1)),
    ];
    if kind == RunKind::Destruction {
        args.push("--destruction".into());
    }
    Container {
        name: "run".into(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        command: Some(vec!["/usr/local/bin/mailvault".into()]),
        args: Some(args),
        env: Some(env),
        resources: settings.resources.clone(),
        security_context: settings.security_context.clone(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "spool".into(),
                mount_path: "/spool".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

/// The Job of one run.
pub fn job_manifest(
    settings: &JobSettings,
    archive: &MailboxArchive,
    kind: RunKind,
    name: &str,
    slot: Timestamp,
) -> Job {
    let namespace = archive.namespace().unwrap_or_default();
    let mut labels = labels(archive);
    labels.insert(RUN_KIND.to_owned(), kind.label().to_owned());
    let container = run_container(settings, archive, kind, name, slot);
    let empty_dir = |mib: u32| EmptyDirVolumeSource {
        size_limit: Some(Quantity(format!("{mib}Mi"))),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(SLOT.to_owned(), slot.to_string())])),
            owner_references: Some(vec![owner(archive)]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(settings.backoff_limit),
            ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(identity_name(kind, &archive.name_any())),
                    automount_service_account_token: Some(true),
                    restart_policy: Some("Never".into()),
                    security_context: settings.pod_security_context.clone(),
                    node_selector: (!settings.node_selector.is_empty())
                        .then(|| settings.node_selector.clone()),
                    tolerations: (!settings.tolerations.is_empty())
                        .then(|| settings.tolerations.clone()),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "spool".into(),
                            empty_dir: Some(empty_dir(settings.spool_size_mib.max(1))),
                            ..Default::default()
                        },
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(empty_dir(16)),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// What `mailvault run` was asked to run (the flags the operator wrote into the Job).
#[derive(Debug)]
pub struct JobRun<'a> {
    /// Archive or destruction run.
    pub kind: RunKind,
    /// The archive's namespace.
    pub namespace: &'a str,
    /// The archive's name.
    pub archive: &'a str,
    /// The uid of the archive the Job was made for (none from a Job of an older operator).
    pub archive_uid: Option<&'a str>,
    /// The Job (recorded as `lastJob` or `destruction.lastJob`).
    pub job: &'a str,
    /// The slot (RFC 3339).
    pub slot: &'a str,
    /// Where large messages are spooled.
    pub spool_dir: std::path::PathBuf,
    /// The spool cap.
    pub max_spool_bytes: u64,
}

/// The body of `mailvault run`: one run of archive `name` as Job `job`, for `slot`; the
/// outcome goes into the archive's status (with `lastJob`, or `destruction.lastJob`) and
/// Events, as an in-process run's. An error means no outcome was recorded (the process should
/// exit non-zero so the Job controller tries again).
pub async fn run_as_job(client: kube::Client, run: &JobRun<'_>) -> Result<()> {
    let JobRun {
        kind,
        namespace,
        archive: name,
        job,
        slot,
        ..
    } = *run;
    let api = Api::<MailboxArchive>::namespaced(client.clone(), namespace);
    let archive = api.get(name).await?;
    // The Job is the archive's (an owner reference), but its pod can start before the garbage
    // collector removes it: an archive deleted and created again under the name is not this
    // Job's to run, and is left to the operator (a Job of its own).
    if let Some(uid) = run.archive_uid
        && archive.metadata.uid.as_deref() != Some(uid)
    {
        tracing::info!(archive = %name, namespace = %namespace, job = %job,
            "the archive this Job was made for was deleted; nothing to run");
        return Ok(());
    }
    let policy = Api::<RetentionPolicy>::namespaced(client.clone(), namespace)
        .get(&archive.spec.retention_policy_ref.name)
        .await?;
    let settings = Settings {
        namespace: Some(namespace.to_owned()),
        concurrent_runs: 1,
        instance: job.to_owned(),
        spool_dir: run.spool_dir.clone(),
        max_spool_bytes: run.max_spool_bytes,
        default_runner: Runner::Job,
        jobs: JobSettings::default(),
    };
    // No controllers run here: an empty archive cache and nobody listening for the run's end.
    let (archives, _writer) = kube::runtime::reflector::store::<MailboxArchive>();
    let (ended, _) = futures::channel::mpsc::unbounded();
    let ctx = Context::new(
        client,
        &settings,
        Arc::new(Metrics::default()),
        archives,
        ended,
    );
    if kind == RunKind::Destruction {
        let slot = slot
            .parse::<Timestamp>()
            .map_err(|e| Error::Usage(format!("--slot {slot}: {e}")))?;
        return super::destruction::destroy_and_record(
            &ctx,
            &api,
            &archive,
            &policy,
            slot,
            Some(job),
        )
        .await;
    }
    let generation = archive.metadata.generation;
    let mut status = archive.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    scheduled(&mut status, generation);
    status.last_schedule_time = Some(slot.to_owned());
    status.last_job = Some(job.to_owned());
    super::mailbox_archive::run_and_record(&ctx, &api, &archive, &policy, status).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn the_same_run_gets_the_same_name_and_each_retry_a_new_one() {
        let slot: Timestamp = "2026-12-01T17:00:00Z".parse().unwrap();
        let fresh = MailboxArchiveStatus::default();
        // The first run's key does not depend on the clock.
        assert_eq!(run_key(&fresh, slot), run_key(&fresh, Timestamp::now()));
        let mut after = MailboxArchiveStatus {
            last_schedule_time: Some("2026-12-01T16:00:00Z".into()),
            ..Default::default()
        };
        let a = job_name("chief", "uid-1", &run_key(&after, slot));
        assert_eq!(a, job_name("chief", "uid-1", &run_key(&after, slot)));
        after.consecutive_failures = 1;
        assert_ne!(a, job_name("chief", "uid-1", &run_key(&after, slot)));
        assert_ne!(a, job_name("chief", "uid-2", &run_key(&fresh, slot)));
        let long = job_name(&"x".repeat(200), "uid", "k");
        assert!(long.len() <= 52, "{long}");
    }

    fn job(name: &str, created: &str, condition: Option<&str>) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(created.parse().unwrap())),
                ..Default::default()
            },
            status: Some(JobStatus {
                conditions: condition.map(|c| {
                    vec![JobCondition {
                        type_: c.into(),
                        status: "True".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_newest_failed_job_without_its_outcome_is_recorded() {
        let recorded = |last: Option<&str>| MailboxArchiveStatus {
            last_job: last.map(Into::into),
            ..Default::default()
        };
        let old_failed = job("a", "2026-12-01T10:00:00Z", Some("Failed"));
        let done = job("b", "2026-12-01T11:00:00Z", Some("Complete"));
        let running = job("c", "2026-12-01T12:00:00Z", None);
        let s = seen(vec![old_failed.clone(), done.clone()], &recorded(Some("b")));
        assert!(!s.in_flight && s.unrecorded_failure.is_none());
        let s = seen(vec![done, running], &recorded(Some("b")));
        assert!(s.in_flight && s.unrecorded_failure.is_none());
        let s = seen(vec![old_failed.clone()], &recorded(None));
        assert_eq!(
            s.unrecorded_failure.and_then(|j| j.metadata.name),
            Some("a".into())
        );
        assert!(
            seen(vec![old_failed], &recorded(Some("a")))
                .unrecorded_failure
                .is_none()
        );
    }

    #[test]
    fn a_failed_destruction_job_is_told_apart_from_a_failed_archive_job() {
        let mut destruction = job("d", "2026-12-01T13:00:00Z", Some("Failed"));
        destruction.metadata.labels = Some(BTreeMap::from([(
            RUN_KIND.to_owned(),
            "destruction".to_owned(),
        )]));
        let archive_done = job("a", "2026-12-01T12:00:00Z", Some("Complete"));
        let status = MailboxArchiveStatus {
            last_job: Some("a".into()),
            ..Default::default()
        };
        let s = seen(vec![archive_done, destruction], &status);
        assert!(s.unrecorded_failure.is_none());
        assert_eq!(
            s.unrecorded_destruction_failure
                .and_then(|j| j.metadata.name),
            Some("d".into())
        );
    }

    #[test]
    fn jobs_wait_for_room_in_all_and_in_their_namespace() {
        let settings = JobSettings {
            max_in_flight: 3,
            max_in_flight_per_namespace: 2,
            ..Default::default()
        };
        let active = |ns: &str| {
            let mut j = job("x", "2026-12-01T12:00:00Z", None);
            j.metadata.namespace = Some(ns.into());
            j
        };
        let mut done = active("police");
        done.status = job("y", "2026-12-01T12:00:00Z", Some("Complete")).status;
        let jobs = vec![active("police"), done.clone(), done];
        assert!(room(&settings, &jobs, "police"));
        let jobs = vec![active("police"), active("police")];
        assert!(!room(&settings, &jobs, "police"), "namespace cap");
        assert!(room(&settings, &jobs, "fire"));
        let jobs = vec![active("police"), active("fire"), active("parks")];
        assert!(!room(&settings, &jobs, "courts"), "cluster-wide cap");
        let unlimited = JobSettings {
            max_in_flight_per_namespace: 0,
            ..settings
        };
        let jobs = vec![active("police"), active("police")];
        assert!(room(&unlimited, &jobs, "police"));
    }

    /// The archive `chief` with an IMAP CA bundle, S3 keys and a generated signing key.
    fn chief() -> MailboxArchive {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "mailvault.io/v1alpha1", "kind": "MailboxArchive",
            "metadata": {"name": "chief", "namespace": "police", "uid": "u"},
            "spec": {
                "imap": {"host": "mail", "username": "u",
                         "passwordSecretRef": {"name": "imap", "key": "password"},
                         "caSecretRef": {"name": "imap-ca", "key": "ca.crt"}},
                "storage": {"bucket": "records", "region": "us-east-1",
                            "credentialsSecretRef": {"name": "s3"}},
                "schedule": "0 2 * * *",
                "retentionPolicyRef": {"name": "city"}
            }
        }))
        .unwrap()
    }

    /// The Secrets the Role of `kind` lets a run of [`chief`] read.
    fn readable_secrets(kind: RunKind) -> Vec<String> {
        let rules = role_rules(&chief(), kind);
        let secrets = rules
            .iter()
            .find(|r| r.resources.as_deref() == Some(&["secrets".to_owned()]))
            .unwrap();
        assert_eq!(secrets.verbs, ["get"]);
        secrets.resource_names.clone().unwrap()
    }

    #[test]
    fn a_destruction_run_may_not_read_the_mailbox_password() {
        assert_eq!(
            readable_secrets(RunKind::Destruction),
            ["chief-signing-key", "s3"]
        );
        let archive = chief();
        let manifest = job_manifest(
            &JobSettings::default(),
            &archive,
            RunKind::Destruction,
            "chief-d",
            "2026-12-01T12:00:00Z".parse().unwrap(),
        );
        let pod = manifest.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("mailvault-destroy-chief")
        );
        let args = pod.containers[0].args.clone().unwrap();
        assert!(args.contains(&"--destruction".to_owned()), "{args:?}");
        assert!(args.contains(&"--archive-uid=u".to_owned()), "{args:?}");
        assert!(
            args.contains(&"--max-spool-size=200MiB".to_owned()),
            "{args:?}"
        );
    }

    #[test]
    fn a_run_may_read_only_the_secrets_its_archive_names() {
        assert_eq!(
            readable_secrets(RunKind::Archive),
            ["chief-signing-key", "imap", "imap-ca", "s3"]
        );
    }
}
