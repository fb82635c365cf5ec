//! Controllers: kube-runtime reconcilers that turn custom resources into runs, one file per
//! kind.
//!
//! `[ RetentionPolicy ] --edit--> [ MailboxArchive ] <--edit-- [ LegalHold ]`
//! `[ MailboxArchive ] --reconcile(Context)--> plan --> run task (run.rs) --> status (SSA) + Event`
//!
//! They run only while this replica holds the lease ([`crate::operator`]); the run never
//! calls back into kube. Policies and holds read the archives from one reflector cache fed by
//! one watch whose events pass only when an archive appears, goes, or changes its spec or
//! labels: an archive's status write re-queues no policy and no hold.

pub mod destruction;
pub mod holds;
pub mod jobs;
pub mod legal_hold;
pub mod mailbox_archive;
pub mod plan;
pub mod retention_policy;
pub mod runs;
pub mod schedule;
mod secrets;
pub mod status;

use crate::crd::{LegalHold, MailboxArchive, RetentionPolicy};
use crate::metrics::Metrics;
use crate::spool::Spool;
use crate::{Error, Reason, Result, Retry};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures::{Stream, StreamExt as _};
use kube::api::Api;
use kube::core::SelectorExt as _;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt as _};
use runs::RunRegistry;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

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
    /// Archive runs in flight.
    pub runs: Arc<RunRegistry>,
    /// Where a run's end asks for the next reconcile of its archive.
    pub run_ended: UnboundedSender<ObjectRef<MailboxArchive>>,
    /// Every `MailboxArchive` (of the watched namespace), as the reflector has them.
    pub archives: Store<MailboxArchive>,
    /// The runner of archives that name none.
    pub default_runner: crate::crd::Runner,
    /// How run Jobs are built.
    pub jobs: jobs::JobSettings,
    /// Held from counting the Jobs in flight to creating one: archives reconcile concurrently,
    /// and without it each could count the same free room and all start (69 unfinished Jobs
    /// under a cap of 4 were seen with 500 archives arriving at once).
    pub job_starts: tokio::sync::Mutex<()>,
    /// The namespace watched, if only one.
    pub namespace: Option<String>,
    /// Reconcile failures in a row, per object (kind/namespace/name), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
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
    /// Spool space one run keeps itself within (`Spool::max_bytes`).
    pub max_spool_bytes: u64,
    /// The runner of archives that name none (`--default-runner`).
    pub default_runner: crate::crd::Runner,
    /// How run Jobs are built (`--job-config`).
    pub jobs: jobs::JobSettings,
}

impl Context {
    /// A context for `client`, with the archive cache `archives` and the channel where runs
    /// report their end.
    pub fn new(
        client: kube::Client,
        settings: &Settings,
        metrics: Arc<Metrics>,
        archives: Store<MailboxArchive>,
        run_ended: UnboundedSender<ObjectRef<MailboxArchive>>,
    ) -> Self {
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
            spool: Spool::new(&settings.spool_dir).with_max_bytes(settings.max_spool_bytes),
            runs: Arc::new(RunRegistry::default()),
            run_ended,
            archives,
            default_runner: settings.default_runner,
            jobs: settings.jobs.clone(),
            job_starts: tokio::sync::Mutex::new(()),
            namespace: settings.namespace.clone(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The archives of `namespace` in the cache (complete once the first list is in).
    pub async fn archives_in(&self, namespace: &str) -> Vec<Arc<MailboxArchive>> {
        // Only fails when the reflector is gone, i.e. the controllers are stopping.
        let _ = self.archives.wait_until_ready().await;
        let mut archives = self
            .archives
            .state_filter(|a| a.namespace().as_deref() == Some(namespace));
        archives.sort_by_key(|a| a.name_any());
        archives
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Publishes an Event about `obj`. An Event that cannot be written is logged, not fatal: the
/// status says the same.
pub(crate) async fn publish<K>(ctx: &Context, obj: &K, type_: EventType, reason: Reason, note: &str)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.as_str().to_owned(),
        // The Events API caps a note at 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(reason = %reason, error = %e, "cannot publish an Event");
    }
}

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// How long the error policy waits after the `failures`-th failure in a row: a transient
/// cause 1 s, 2 s, 4 s … at most 5 minutes; a permanent one (something a person must change,
/// and which a watch may not see, e.g. RBAC) 5 minutes.
pub fn error_backoff(retry: Retry, failures: u32) -> Duration {
    let cap = Duration::from_mins(5);
    match retry {
        Retry::Transient => Duration::from_secs(1u64 << failures.saturating_sub(1).min(9)).min(cap),
        Retry::Permanent => cap,
    }
}

/// An error the reconciler could not turn into status (usually the apiserver itself): count
/// it, log it, retry with backoff.
#[allow(clippy::needless_pass_by_value)] // kube-runtime's error_policy signature
fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    ctx.metrics.error(error.reason());
    let failures = {
        let mut all = ctx.failures();
        let n = all.entry(object_key(&*obj)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let wait = error_backoff(error.retry(), failures);
    tracing::warn!(kind = %K::kind(&()), name = %obj.name_any(), namespace = %obj.namespace().unwrap_or_default(),
        reason = %error.reason(), transient = error.is_transient(), error = %error, retry_in = ?wait,
        "reconcile failed");
    Action::requeue(wait)
}

/// Runs a reconciler inside a span naming the object, and records its duration.
async fn observed<K, F, Fut>(reconcile: F, obj: Arc<K>, ctx: Arc<Context>) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    let kind = K::kind(&());
    let span = tracing::info_span!("reconcile", kind = %kind, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    let key = object_key(&*obj);
    let start = Instant::now();
    let result = reconcile(obj, ctx.clone()).instrument(span).await;
    ctx.metrics.reconciled(&kind, start.elapsed());
    if result.is_ok() {
        ctx.failures().remove(&key);
    }
    result
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

/// What makes an archive matter to a policy or a hold: its existence, its spec (generation)
/// and its labels (hold selectors), not its status.
fn spec_or_labels_changed(
    seen: &mut HashMap<String, (Option<i64>, std::collections::BTreeMap<String, String>)>,
    event: watcher::Event<MailboxArchive>,
) -> Option<MailboxArchive> {
    match event {
        watcher::Event::Apply(a) | watcher::Event::InitApply(a) => {
            let key = a.metadata.uid.clone().unwrap_or_default();
            let now = (a.metadata.generation, a.labels().clone());
            (seen.insert(key, now.clone()).as_ref() != Some(&now)).then_some(a)
        }
        watcher::Event::Delete(a) => {
            seen.remove(&a.metadata.uid.clone().unwrap_or_default());
            Some(a)
        }
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// Feeds the archive cache and re-queues the policies and holds an archive touches, when it
/// appears, goes, or changes its spec or labels. The cache is updated before the event is
/// passed on, so a reconcile it triggers reads the archive as it is now.
fn archive_events(
    archives: impl Stream<Item = watcher::Result<watcher::Event<MailboxArchive>>> + Send,
    writer: reflector::store::Writer<MailboxArchive>,
    holds: Store<LegalHold>,
    to_policies: UnboundedSender<ObjectRef<RetentionPolicy>>,
    to_holds: UnboundedSender<ObjectRef<LegalHold>>,
) -> impl Future<Output = ()> + Send {
    let mut seen = HashMap::new();
    archives
        .default_backoff()
        .reflect(writer)
        .filter_map(move |event| {
            let changed = match event {
                Ok(e) => spec_or_labels_changed(&mut seen, e),
                Err(e) => {
                    tracing::warn!(error = %e, "MailboxArchive watch failed; retrying");
                    None
                }
            };
            async move { changed }
        })
        .for_each(move |a| {
            let namespace = a.namespace().unwrap_or_default();
            let _ = to_policies.unbounded_send(
                ObjectRef::new(&a.spec.retention_policy_ref.name).within(&namespace),
            );
            // A hold's status lists the archives it applies to; they come and go.
            for h in holds.state_filter(|h| h.namespace().as_deref() == Some(&namespace)) {
                let _ = to_holds.unbounded_send(ObjectRef::from_obj(&*h));
            }
            async {}
        })
}

/// Whether `hold` names or selects `archive`.
pub fn hold_applies_to(hold: &LegalHold, archive: &MailboxArchive) -> bool {
    if hold.namespace() != archive.namespace() {
        return false;
    }
    match (&hold.spec.archives.names, &hold.spec.archives.selector) {
        (Some(names), _) => names.contains(&archive.name_any()),
        (None, Some(selector)) => kube::core::Selector::try_from(selector.clone())
            .is_ok_and(|s| s.matches(archive.labels())),
        (None, None) => false,
    }
}

/// The objects of a watch whose spec changed: created, edited (a new `metadata.generation`) or
/// deleted, including deletions missed while the watch was re-listing. Status-only changes are
/// left out: a policy's and a hold's status list the archives they apply to and change after
/// every run, and re-queuing every archive on each of those made an operator's work quadratic
/// in its archives (5,000 archives on one policy: 221,000 reconciles before 3,000 had run once;
/// docs/benchmarks.md).
fn spec_changes<K>(
    events: impl Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Send + 'static,
{
    // By uid: the generation last passed on and the object (to pass on if it is gone after a
    // re-list); a re-list's uids, to find those gone.
    let mut seen: HashMap<String, (Option<i64>, K)> = HashMap::new();
    let mut relisted: Option<std::collections::HashSet<String>> = None;
    events
        .map(move |event| {
            let changed: Vec<std::result::Result<K, watcher::Error>> = match event {
                Err(e) => vec![Err(e)],
                Ok(watcher::Event::Init) => {
                    relisted = Some(std::collections::HashSet::new());
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(object) | watcher::Event::Apply(object)) => {
                    let uid = object.meta().uid.clone().unwrap_or_default();
                    if let Some(relisted) = &mut relisted {
                        relisted.insert(uid.clone());
                    }
                    let generation = object.meta().generation;
                    // Kept to pass on if it goes during a re-list; its field managers (one per
                    // archive on a hold's status) are not needed for that.
                    let mut kept = object.clone();
                    kept.meta_mut().managed_fields = None;
                    match seen.insert(uid, (generation, kept)) {
                        Some((before, _)) if before == generation => Vec::new(),
                        _ => vec![Ok(object)],
                    }
                }
                Ok(watcher::Event::Delete(object)) => {
                    seen.remove(&object.meta().uid.clone().unwrap_or_default());
                    vec![Ok(object)]
                }
                Ok(watcher::Event::InitDone) => {
                    let relisted = relisted.take().unwrap_or_default();
                    let gone: Vec<String> = seen
                        .keys()
                        .filter(|uid| !relisted.contains(*uid))
                        .cloned()
                        .collect();
                    gone.iter()
                        .filter_map(|uid| seen.remove(uid))
                        .map(|(_, object)| Ok(object))
                        .collect()
                }
            };
            futures::stream::iter(changed)
        })
        .flatten()
}

/// Runs the three controllers until `shutdown` resolves. Runs in flight are then awaited; the
/// caller bounds how long (dropping this future abandons them: the next leader resumes them
/// from the bucket).
#[allow(clippy::too_many_lines)] // the wiring of three controllers and one cache, in one place
pub async fn run(
    client: kube::Client,
    metrics: Arc<Metrics>,
    settings: &Settings,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let ns = settings.namespace.as_deref();
    let trigger = move || {
        let mut rx = shutdown.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let (archive_cache, archive_writer) = reflector::store::<MailboxArchive>();
    let (ended_sender, ended_runs): (_, UnboundedReceiver<_>) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics,
        archive_cache,
        ended_sender,
    ));
    // Dropped with this future (a lost lease, the end of the grace): abandons the runs.
    let _abandon = AbortRunsOnDrop(ctx.runs.clone());
    let client = &ctx.client;

    let archives = Controller::new(
        api::<MailboxArchive>(client, ns),
        watcher::Config::default(),
    );
    let store = archives.store();
    let by_policy = store.clone();
    let archives = archives
        // A policy edit re-queues every archive that names it (not a status change: see
        // `spec_changes`).
        .watches_stream(
            spec_changes(
                watcher(
                    api::<RetentionPolicy>(client, ns),
                    watcher::Config::default(),
                )
                .default_backoff(),
            ),
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
        .watches_stream(
            spec_changes(
                watcher(api::<LegalHold>(client, ns), watcher::Config::default()).default_backoff(),
            ),
            move |hold| {
                store
                    .state()
                    .into_iter()
                    .filter(|a| hold_applies_to(&hold, a))
                    .map(|a| ObjectRef::from_obj(&*a))
                    .collect::<Vec<_>>()
            },
        )
        // A run Job's progress (runner: Job): its end re-triggers the archive.
        .owns(
            api::<k8s_openapi::api::batch::v1::Job>(client, ns),
            watcher::Config::default().labels(&format!(
                "{}={}",
                jobs::MANAGED_BY.0,
                jobs::MANAGED_BY.1
            )),
        )
        // A run's end.
        .reconcile_on(ended_runs)
        .graceful_shutdown_on(trigger())
        .run(
            |a, ctx| observed(mailbox_archive::reconcile, a, ctx),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move { log_outcome("MailboxArchive", r) });

    let (to_policies, policies_touched) = futures::channel::mpsc::unbounded();
    let (to_holds, holds_touched) = futures::channel::mpsc::unbounded();
    let policies = Controller::new(
        api::<RetentionPolicy>(client, ns),
        watcher::Config::default(),
    )
    // The policy's status lists the archives that use it.
    .reconcile_on(policies_touched)
    .graceful_shutdown_on(trigger())
    .run(
        |p, ctx| observed(retention_policy::reconcile, p, ctx),
        error_policy,
        ctx.clone(),
    )
    .for_each(|r| async move { log_outcome("RetentionPolicy", r) });

    let holds = Controller::new(api::<LegalHold>(client, ns), watcher::Config::default());
    let hold_store = holds.store();
    let holds = holds
        // A hold's status lists the archives it applies to; they come and go.
        .reconcile_on(holds_touched)
        .graceful_shutdown_on(trigger())
        .run(
            |h, ctx| observed(legal_hold::reconcile, h, ctx),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move { log_outcome("LegalHold", r) });

    let archive_events = archive_events(
        watcher(
            api::<MailboxArchive>(client, ns),
            watcher::Config::default(),
        ),
        archive_writer,
        hold_store,
        to_policies,
        to_holds,
    );
    let stop = trigger();
    let archive_events = async move {
        tokio::select! {
            () = archive_events => {}
            () = stop => {}
        }
    };

    tokio::join!(archives, policies, holds, archive_events);
    // The controllers are stopped; runs in flight finish (bounded by the caller's grace).
    ctx.runs.wait_all().await;
}

/// Abandons every run in flight when dropped.
struct AbortRunsOnDrop(Arc<RunRegistry>);

impl Drop for AbortRunsOnDrop {
    fn drop(&mut self) {
        self.0.abort_all();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_back_off_and_permanent_ones_wait() {
        assert_eq!(error_backoff(Retry::Transient, 1), Duration::from_secs(1));
        assert_eq!(error_backoff(Retry::Transient, 3), Duration::from_secs(4));
        assert_eq!(error_backoff(Retry::Transient, 40), Duration::from_mins(5));
        assert_eq!(error_backoff(Retry::Permanent, 1), Duration::from_mins(5));
    }

    fn archive(name: &str, generation: i64, label: &str) -> MailboxArchive {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "mailvault.io/v1alpha1", "kind": "MailboxArchive",
            "metadata": {"name": name, "namespace": "police", "uid": name,
                         "generation": generation, "labels": {"unit": label}},
            "spec": {
                "imap": {"host": "mail", "username": "u",
                         "passwordSecretRef": {"name": "imap", "key": "password"}},
                "storage": {"bucket": "records", "region": "us-east-1",
                            "credentialsSecretRef": {"name": "s3"}},
                "schedule": "0 2 * * *",
                "retentionPolicyRef": {"name": "city"}
            }
        }))
        .unwrap()
    }

    /// Status-only changes of a watched policy or hold re-queue nothing; creation, a spec
    /// edit, a deletion, and a deletion missed during a re-list do.
    #[tokio::test]
    async fn only_spec_changes_pass() {
        use watcher::Event as E;
        let a1 = archive("a", 1, "x");
        let a2 = archive("a", 2, "x");
        let b = archive("b", 1, "x");
        let c = archive("c", 1, "x");
        let events = vec![
            E::Init,
            E::InitApply(a1.clone()),
            E::InitApply(b.clone()),
            E::InitDone,
            E::Apply(a1.clone()), // its status changed
            E::Apply(a2.clone()), // its spec changed
            E::Apply(a2.clone()),
            E::Delete(b.clone()),
            E::Apply(c.clone()),
            // The watch re-lists; `c` was deleted meanwhile, `a` is unchanged.
            E::Init,
            E::InitApply(a2.clone()),
            E::InitDone,
        ];
        let passed: Vec<String> = spec_changes(futures::stream::iter(events.into_iter().map(Ok)))
            .map(|o| {
                let o = o.unwrap();
                format!(
                    "{}@{}",
                    o.name_any(),
                    o.metadata.generation.unwrap_or_default()
                )
            })
            .collect()
            .await;
        assert_eq!(passed, ["a@1", "b@1", "a@2", "b@1", "c@1", "c@1"]);
    }

    #[test]
    fn a_status_write_reaches_no_policy_or_hold() {
        let mut seen = HashMap::new();
        let first = archive("chief", 1, "ia");
        assert!(
            spec_or_labels_changed(&mut seen, watcher::Event::InitApply(first.clone())).is_some()
        );
        // Same generation and labels: a status write.
        let mut status_write = first.clone();
        status_write.status = Some(crate::crd::MailboxArchiveStatus {
            consecutive_failures: 1,
            ..Default::default()
        });
        assert!(spec_or_labels_changed(&mut seen, watcher::Event::Apply(status_write)).is_none());
        assert!(
            spec_or_labels_changed(&mut seen, watcher::Event::Apply(archive("chief", 2, "ia")))
                .is_some()
        );
        assert!(
            spec_or_labels_changed(&mut seen, watcher::Event::Apply(archive("chief", 2, "pr")))
                .is_some()
        );
        assert!(spec_or_labels_changed(&mut seen, watcher::Event::Delete(first)).is_some());
        assert!(spec_or_labels_changed(&mut seen, watcher::Event::InitDone).is_none());
    }

    #[test]
    fn holds_apply_by_name_or_selector_within_their_namespace() {
        let hold = |archives: serde_json::Value| -> LegalHold {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "mailvault.io/v1alpha1", "kind": "LegalHold",
                "metadata": {"name": "prr", "namespace": "police"},
                "spec": {"reason": "r", "caseReference": "c", "archives": archives}
            }))
            .unwrap()
        };
        let chief = archive("chief", 1, "ia");
        assert!(hold_applies_to(
            &hold(serde_json::json!({"names": ["chief"]})),
            &chief
        ));
        assert!(!hold_applies_to(
            &hold(serde_json::json!({"names": ["other"]})),
            &chief
        ));
        assert!(hold_applies_to(
            &hold(serde_json::json!({"selector": {"matchLabels": {"unit": "ia"}}})),
            &chief
        ));
        assert!(!hold_applies_to(
            &hold(serde_json::json!({"selector": {"matchLabels": {"unit": "pr"}}})),
            &chief
        ));
    }
}
