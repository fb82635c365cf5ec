//! Controllers: kube-runtime reconcilers that turn custom resources into pipeline runs.
//!
//! `[ RetentionPolicy ] --edit--> [ MailboxArchive ] <--edit-- [ LegalHold ]`
//! `[ MailboxArchive ] --reconcile(Context)--> pipeline run --> status (SSA) + Event`
//!
//! They run only while this replica holds the lease ([`crate::operator`]); the pipeline never
//! calls back into kube.

pub mod archive;
pub mod policy;
pub mod schedule;
mod secrets;
mod status;

use crate::Error;
use crate::crd::{LegalHold, MailboxArchive, RetentionPolicy};
use crate::metrics::Metrics;
use crate::spool::Spool;
use futures::StreamExt as _;
use kube::api::Api;
use kube::core::SelectorExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt as _};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The field manager of every status the operator writes.
pub const FIELD_MANAGER: &str = "mailvault-operator";

/// Everything a reconciler touches, so a test can build one.
pub struct Context {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Archive runs allowed at once; a due run waits here (`mailvault_runs_waiting`).
    pub run_slots: Semaphore,
    /// Network time-out for each IMAP step.
    pub imap_timeout: Duration,
    /// Where messages above the memory limit are spooled during a run.
    pub spool: Spool,
}

/// How the controllers run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch one namespace, or every namespace.
    pub namespace: Option<String>,
    /// Archive runs at once.
    pub concurrent_runs: usize,
    /// This replica's name, in Events (`reportingInstance`).
    pub instance: String,
    /// Directory for spooling large messages (an emptyDir in a pod).
    pub spool_dir: std::path::PathBuf,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: kube::Client, settings: &Settings, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(settings.instance.clone()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            run_slots: Semaphore::new(settings.concurrent_runs.max(1)),
            imap_timeout: Duration::from_mins(1),
            spool: Spool::new(&settings.spool_dir),
        }
    }
}

/// Publishes an Event about `obj`. An Event that cannot be written is logged, not fatal: the
/// status says the same.
pub(crate) async fn publish<K>(ctx: &Context, obj: &K, type_: EventType, reason: &str, note: &str)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.to_owned(),
        // The Events API caps a note at 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(reason, error = %e, "cannot publish an Event");
    }
}

/// An error the reconciler could not turn into status (usually the apiserver itself): count
/// it, log it, retry.
#[allow(clippy::needless_pass_by_value)] // kube-runtime's error_policy signature
fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    ctx.metrics.error(error.reason());
    tracing::warn!(kind = %K::kind(&()), name = %obj.name_any(), namespace = %obj.namespace().unwrap_or_default(),
        reason = error.reason(), error = %error, "reconcile failed; retrying in 30 s");
    Action::requeue(Duration::from_secs(30))
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the three controllers until `shutdown` resolves. Reconciliations in flight (archive
/// runs among them) are allowed to finish; the caller bounds how long it waits.
pub async fn run(
    ctx: Arc<Context>,
    settings: &Settings,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let ns = settings.namespace.as_deref();
    let client = &ctx.client;
    let trigger = move || {
        let mut rx = shutdown.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let archives = Controller::new(
        api::<MailboxArchive>(client, ns),
        watcher::Config::default(),
    );
    let store = archives.store();
    let by_policy = store.clone();
    let archives = archives
        // A policy edit re-queues every archive that names it.
        .watches(
            api::<RetentionPolicy>(client, ns),
            watcher::Config::default(),
            move |policy| {
                by_policy
                    .state()
                    .into_iter()
                    .filter(|a| {
                        a.namespace() == policy.namespace()
                            && a.spec.retention_policy_ref.name == policy.name_any()
                    })
                    .map(|a| ObjectRef::from_obj(&*a))
                    .collect::<Vec<_>>()
            },
        )
        // A hold edit re-queues the archives it names or selects.
        .watches(
            api::<LegalHold>(client, ns),
            watcher::Config::default(),
            move |hold| {
                let selector = hold
                    .spec
                    .archives
                    .selector
                    .clone()
                    .and_then(|s| kube::core::Selector::try_from(s).ok());
                store
                    .state()
                    .into_iter()
                    .filter(|a| a.namespace() == hold.namespace())
                    .filter(|a| match (&hold.spec.archives.names, &selector) {
                        (Some(names), _) => names.contains(&a.name_any()),
                        (None, Some(sel)) => sel.matches(a.labels()),
                        (None, None) => false,
                    })
                    .map(|a| ObjectRef::from_obj(&*a))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(trigger())
        .run(archive::reconcile, error_policy, ctx.clone())
        .for_each(|r| async move { log_outcome("MailboxArchive", r) });

    let policies = Controller::new(
        api::<RetentionPolicy>(client, ns),
        watcher::Config::default(),
    )
    // The policy's status lists the archives that use it.
    .watches(
        api::<MailboxArchive>(client, ns),
        watcher::Config::default(),
        |a| {
            Some(
                ObjectRef::new(&a.spec.retention_policy_ref.name)
                    .within(&a.namespace().unwrap_or_default()),
            )
        },
    )
    .graceful_shutdown_on(trigger())
    .run(policy::reconcile_policy, error_policy, ctx.clone())
    .for_each(|r| async move { log_outcome("RetentionPolicy", r) });

    let holds_api = api::<LegalHold>(client, ns);
    let holds = Controller::new(holds_api.clone(), watcher::Config::default());
    let hold_store = holds.store();
    let holds = holds
        // A hold's status lists the archives it applies to; they come and go.
        .watches(
            api::<MailboxArchive>(client, ns),
            watcher::Config::default(),
            move |a| {
                hold_store
                    .state()
                    .into_iter()
                    .filter(|h| h.namespace() == a.namespace())
                    .map(|h| ObjectRef::from_obj(&*h))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(trigger())
        .run(policy::reconcile_hold, error_policy, ctx.clone())
        .for_each(|r| async move { log_outcome("LegalHold", r) });

    tokio::join!(archives, policies, holds);
}

fn log_outcome<K, E1, E2>(
    kind: &str,
    r: std::result::Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E1, E2>>,
) where
    K: Resource,
    E1: std::error::Error,
    E2: std::error::Error,
{
    match r {
        Ok((obj, _)) => tracing::debug!(kind, name = %obj.name, "reconciled"),
        // Reconciler errors were logged by error_policy; here only the controller's own.
        Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
        Err(e) => tracing::warn!(kind, error = %e, "controller error"),
    }
}
