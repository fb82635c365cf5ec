//! Archive runs as Kubernetes Jobs (`runner: Job`) on the local stack: the operator (its own
//! process, under the chart's RBAC) creates the Jobs, kube-controller-manager's Job controller
//! creates their Pods, and the test kubelet (tests/support/kubelet.rs) runs each Pod's
//! `mailvault run` with the Pod's ServiceAccount token; Dovecot and versitygw are the real ones.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mailvault::crd::{MailboxArchive, RetentionPolicy};
use mailvault_tests::cluster::{condition, ready, records};
use mailvault_tests::kubelet::Kubelet;
use mailvault_tests::operator::{OperatorProcess, install_chart_rbac};
use mailvault_tests::{
    MailUser, S3Flavour, TestEnv, apply_crds, json_merge, new_namespace, unique_name,
};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A namespace with the chart's RBAC, a mail user, a locked bucket, the Secrets an archive
/// needs, a RetentionPolicy `city`, the test kubelet, and an operator whose default runner is
/// Job.
struct JobCluster {
    env: TestEnv,
    admin: kube::Client,
    ns: String,
    dir: PathBuf,
    user: MailUser,
    bucket: String,
    kubelet: Kubelet,
    operator: OperatorProcess,
    kubeconfig: PathBuf,
}

impl JobCluster {
    async fn new(name: &str, backoff_limit: u32) -> Self {
        let env = TestEnv::load();
        require_controller_manager(&env);
        let admin = env.kube_admin().await;
        apply_crds(&admin).await;
        let ns = new_namespace(&admin, name).await;
        let dir = std::env::temp_dir().join(unique_name(&format!("mv-job-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = install_chart_rbac(&env, &admin, &ns, &unique_name("mv"), &dir).await;
        let user = env.new_mail_user(name);
        let bucket = unique_name(name);
        env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
        let kubelet = Kubelet::start(&env, admin.clone(), &ns, &dir);
        let job_config = json!({"image": "mailvault:test", "backoffLimit": backoff_limit,
                                "ttlSecondsAfterFinished": 3600, "maxInFlight": 4})
        .to_string();
        let operator = job_operator(&kubeconfig, &ns, "jobs", &dir, &job_config);
        let c = Self {
            env,
            admin,
            ns,
            dir,
            user,
            bucket,
            kubelet,
            operator,
            kubeconfig,
        };
        c.secret("imap", &[("password", c.user.password.as_bytes())])
            .await;
        let ca = std::fs::read(c.env.ca_path()).unwrap();
        c.secret("imap-ca", &[("ca.crt", &ca)]).await;
        let p = c.env.var("VERSITYGW_ACCESS_KEY").as_bytes().to_vec();
        let s = c.env.var("VERSITYGW_SECRET_KEY").as_bytes().to_vec();
        c.secret(
            "s3",
            &[("AWS_ACCESS_KEY_ID", &p), ("AWS_SECRET_ACCESS_KEY", &s)],
        )
        .await;
        let policy: RetentionPolicy = serde_json::from_value(json!({
            "apiVersion": "mailvault.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": "city"},
            "spec": {"defaultRule": {"recordSeries": "GS 1-01 general correspondence",
                                     "retain": "P1D", "disposition": "Destroy"}}
        }))
        .unwrap();
        Api::<RetentionPolicy>::namespaced(c.admin.clone(), &c.ns)
            .create(&PostParams::default(), &policy)
            .await
            .unwrap();
        c
    }

    async fn secret(&self, name: &str, data: &[(&str, &[u8])]) {
        use base64::Engine as _;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"mailvault.io/allowed-archives": "*"}},
            "data": data.iter().map(|(k, v)| ((*k).to_owned(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(v))))
                .collect::<serde_json::Map<_, _>>()
        }))
        .unwrap();
        Api::<Secret>::namespaced(self.admin.clone(), &self.ns)
            .patch(
                name,
                &PatchParams::apply("mailvault-tests").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }

    fn archives(&self) -> Api<MailboxArchive> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// An archive of this cluster's mailbox with a yearly schedule: only the initial run and
    /// retries happen during a test.
    async fn create_archive(&self, name: &str, patch: &Value) {
        let mut spec = json!({
            "imap": {"host": self.env.imap_host(), "port": self.env.imaps_port(),
                     "tls": "Required", "username": self.user.name,
                     "passwordSecretRef": {"name": "imap", "key": "password"},
                     "caSecretRef": {"name": "imap-ca", "key": "ca.crt"}},
            "storage": {"bucket": self.bucket, "region": self.env.var("S3_REGION"),
                        "endpoint": self.env.s3_endpoint(S3Flavour::Versitygw), "pathStyle": true,
                        "credentialsSecretRef": {"name": "s3"}},
            "schedule": "0 0 1 1 *",
            "retentionPolicyRef": {"name": "city"}
        });
        json_merge(&mut spec, patch);
        let archive: MailboxArchive = serde_json::from_value(json!({
            "apiVersion": "mailvault.io/v1alpha1", "kind": "MailboxArchive",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap();
        self.archives()
            .create(&PostParams::default(), &archive)
            .await
            .unwrap();
    }

    fn seed(&self, n: usize, tag: &str, filler: usize) {
        let filler = "x".repeat(filler);
        for i in 0..n {
            let msg = format!(
                "From: chief@city.gov\r\nTo: clerk@city.gov\r\nSubject: {tag} {i}\r\nMessage-ID: <{tag}-{i}@city.gov>\r\n\r\nbody {tag} {i} {filler}\r\n"
            );
            self.env
                .seed_message(&self.user, "INBOX", msg.as_bytes(), "");
        }
    }

    /// Polls archive `name` until `pred` holds; on time-out panics with its status, the Jobs,
    /// the operator's log and every Pod's log.
    async fn wait_for(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&MailboxArchive) -> bool,
    ) -> MailboxArchive {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(a) = self.archives().get_opt(name).await.unwrap() {
                if pred(&a) {
                    return a;
                }
                last = Some(a);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let jobs: Vec<String> = self
            .jobs()
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .map(|j| {
                        format!(
                            "{}: {:?}",
                            j.metadata.name.clone().unwrap_or_default(),
                            j.status
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let op_log = self.operator.log_text();
        let op_tail: Vec<&str> = op_log.lines().rev().take(30).collect();
        panic!(
            "{name}: not {what} within {within:?}; status: {:#?}\njobs: {jobs:#?}\n--- operator ---\n{}\n{}",
            last.and_then(|a| a.status),
            op_tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            self.kubelet.logs()
        );
    }

    /// The Jobs of archive `name`.
    async fn jobs_of(&self, name: &str) -> Vec<Job> {
        self.jobs()
            .list(&ListParams::default().labels(&format!("mailvault.io/archive={name}")))
            .await
            .unwrap()
            .items
    }

    /// The Jobs of archive `name` once none is in flight (the Job controller counts a pod's
    /// end after the run has recorded its outcome).
    async fn finished_jobs_of(&self, name: &str) -> Vec<Job> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let jobs = self.jobs_of(name).await;
            let done = |j: &Job| {
                j.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                        })
                    })
            };
            if jobs.iter().all(done) {
                return jobs;
            }
            assert!(Instant::now() < deadline, "Jobs still in flight: {jobs:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `mailvault verify` with the public key the status publishes: passes with `n` records
    /// PRESENT_OK.
    fn assert_verifies(&self, archive: &MailboxArchive, n: u64) {
        let name = archive.metadata.name.as_deref().unwrap();
        let public_key = archive
            .status
            .as_ref()
            .and_then(|s| s.public_key.clone())
            .unwrap();
        let key = self.dir.join(format!("{name}.pub"));
        std::fs::write(&key, format!("{public_key}\n")).unwrap();
        let out = self
            .env
            .mailvault_s3(
                S3Flavour::Versitygw,
                &[
                    "verify",
                    &format!("s3://{}/{}/{name}", self.bucket, self.ns),
                ],
            )
            .arg("--public-key")
            .arg(&key)
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{report}");
        assert!(mailvault_tests::cluster::present(&report, n), "{report}");
    }

    /// Objects stored under archive `name`'s prefix so far.
    async fn stored_objects(&self, name: &str) -> usize {
        self.env
            .s3_client(S3Flavour::Versitygw)
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}/{name}/", self.ns))
            .send()
            .await
            .map(|o| o.contents().len())
            .unwrap_or(0)
    }

    async fn event_reasons(&self, name: &str) -> Vec<String> {
        Api::<Event>::namespaced(self.admin.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect()
    }

    /// A client authenticated as ServiceAccount `account` (a TokenRequest, as a Pod gets).
    async fn client_as(&self, account: &str) -> kube::Client {
        let token = Api::<ServiceAccount>::namespaced(self.admin.clone(), &self.ns)
            .create_token_request(account, &PostParams::default(), &Default::default())
            .await
            .unwrap()
            .status
            .unwrap()
            .token;
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.env.var("KUBE_APISERVER"),
                "certificate-authority": self.env.ca_path()}}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
            "current-context": "sa"
        });
        let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }
}

/// An operator whose default runner is Job.
fn job_operator(
    kubeconfig: &std::path::Path,
    ns: &str,
    identity: &str,
    dir: &std::path::Path,
    job_config: &str,
) -> OperatorProcess {
    OperatorProcess::start_with(
        kubeconfig,
        ns,
        "mailvault-operator",
        identity,
        dir,
        20,
        &["--default-runner", "Job", "--job-config", job_config],
        &[],
    )
}

fn require_controller_manager(env: &TestEnv) {
    let url = env.var("KUBE_CONTROLLER_MANAGER_HEALTHZ");
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("a port in KUBE_CONTROLLER_MANAGER_HEALTHZ");
    TestEnv::require_listening("kube-controller-manager", "127.0.0.1", port);
}

fn last_job(a: &MailboxArchive) -> Option<String> {
    a.status.as_ref()?.last_job.clone()
}

fn job_counts(job: &Job) -> (i32, i32) {
    let s = job.status.clone().unwrap_or_default();
    (s.succeeded.unwrap_or(0), s.failed.unwrap_or(0))
}

#[tokio::test]
async fn an_archive_reaches_ready_through_a_job_whose_identity_reads_only_its_own_secrets() {
    let c = JobCluster::new("job-ready", 3).await;
    c.seed(5, "first", 0);
    c.create_archive("chief", &json!({})).await;

    let a = c
        .wait_for(
            "chief",
            Duration::from_secs(120),
            "Ready with 5 records",
            |a| ready(a) && records(a) == 5,
        )
        .await;
    // The run was the Job's: its name is in the status, the Job completed, its pod exited 0,
    // and the operator itself ran nothing.
    let job_name = last_job(&a).expect("status.lastJob");
    let jobs = c.finished_jobs_of("chief").await;
    assert_eq!(jobs.len(), 1, "one Job for the initial run: {jobs:#?}");
    let job = &jobs[0];
    assert_eq!(job.metadata.name.as_deref(), Some(job_name.as_str()));
    assert_eq!(job_counts(job), (1, 0));
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("mailvault-run-chief")
    );
    assert_eq!(
        pod.containers[0].args.as_ref().unwrap()[0],
        "run",
        "the pod runs `mailvault run`"
    );
    assert!(
        c.kubelet.finished().values().any(|code| *code == Some(0)),
        "{:?}",
        c.kubelet.finished()
    );
    assert_eq!(
        c.operator
            .metric("mailvault_runs_total{result=\"succeeded\"}")
            .await
            .unwrap_or(0.0),
        0.0,
        "the operator ran the archive itself"
    );
    let status = a.status.clone().unwrap();
    assert_eq!(status.last_sync.as_ref().unwrap().messages, 5);
    assert!(status.public_key.is_some() && status.log.is_some());
    let reasons = c.event_reasons("chief").await;
    assert!(reasons.iter().any(|r| r == "SyncStarted"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Synced"), "{reasons:?}");
    c.assert_verifies(&a, 5);

    // The run's identity reads the Secrets its archive names, and no other.
    c.secret("imap-clerk", &[("password", b"the clerk's password")])
        .await;
    let run = c.client_as("mailvault-run-chief").await;
    let secrets = Api::<Secret>::namespaced(run.clone(), &c.ns);
    for own in ["imap", "imap-ca", "s3", "chief-signing-key"] {
        secrets
            .get(own)
            .await
            .unwrap_or_else(|e| panic!("the run cannot read its own Secret {own}: {e}"));
    }
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    assert!(forbidden(secrets.get("imap-clerk").await.map(|_| ())));
    assert!(forbidden(
        secrets.list(&ListParams::default()).await.map(|_| ())
    ));
    // Nor another archive's status.
    c.create_archive(
        "clerk",
        &json!({"imap": {"passwordSecretRef": {"name": "imap-clerk", "key": "password"}},
                "suspend": true}),
    )
    .await;
    let archives = Api::<MailboxArchive>::namespaced(run, &c.ns);
    assert!(archives.get("chief").await.is_ok());
    assert!(forbidden(archives.get("clerk").await.map(|_| ())));
    assert!(forbidden(
        archives
            .patch_status(
                "clerk",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"consecutiveFailures": 7}}))
            )
            .await
            .map(|_| ())
    ));
}

#[tokio::test]
async fn many_archives_due_at_once_never_have_more_jobs_in_flight_than_the_cap() {
    use mailvault::controller::jobs::JobPhase;
    // The cluster's operator runs with maxInFlight 4.
    const CAP: usize = 4;
    const ARCHIVES: usize = 16;
    let c = JobCluster::new("job-cap", 3).await;
    c.seed(3, "cap", 0);
    // Pods wait, so every Job started stays in flight: without the cap every archive would
    // have one within seconds.
    c.kubelet.hold();
    let cluster = &c;
    futures::future::join_all((0..ARCHIVES).map(|i| async move {
        cluster
            .create_archive(&format!("a{i:02}"), &json!({}))
            .await;
    }))
    .await;
    let unfinished = || async {
        c.jobs()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            // What the operator counts: not finished, and no pod succeeded yet (the Job
            // controller may count a pod's success before it writes `Complete`).
            .filter(|j| {
                JobPhase::of(j) == JobPhase::Active
                    && j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) == 0
            })
            .count()
    };
    // The archives reconcile concurrently; the count must reach the cap and never pass it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut most = 0;
    while Instant::now() < deadline {
        most = most.max(unfinished().await);
        assert!(most <= CAP, "{most} Jobs in flight with a cap of {CAP}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        most, CAP,
        "the cap was never reached: the test shows nothing"
    );
    // Then the pods run; the rest start as room frees up, one Job each, all Ready.
    c.kubelet.release();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(
            unfinished().await <= CAP,
            "more Jobs in flight than the cap"
        );
        let list = c.archives().list(&ListParams::default()).await.unwrap();
        if list
            .items
            .iter()
            .filter(|a| ready(a) && records(a) == 3)
            .count()
            == ARCHIVES
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every archive Ready within 240 s: {}",
            c.operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for i in 0..ARCHIVES {
        let name = format!("a{i:02}");
        let jobs = c.jobs_of(&name).await;
        assert_eq!(jobs.len(), 1, "{name} ran as one Job: {jobs:#?}");
    }
}

#[tokio::test]
async fn a_job_whose_pod_is_killed_mid_run_is_retried_and_the_archive_converges_once() {
    let c = JobCluster::new("job-kill", 3).await;
    // Enough mail that the run takes a while.
    c.seed(3000, "bulk", 4000);
    c.create_archive("chief", &json!({})).await;

    // Kill the first pod once it has stored records.
    let deadline = Instant::now() + Duration::from_secs(120);
    let victim = loop {
        assert!(
            Instant::now() < deadline,
            "no pod stored anything: {}",
            c.kubelet.logs()
        );
        if let Some(pod) = c.kubelet.running().first()
            && c.stored_objects("chief").await >= 50
        {
            break pod.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.kubelet.kill(&victim);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.kubelet.finished().contains_key(&victim) {
        assert!(Instant::now() < deadline, "the pod did not die");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        c.kubelet.finished()[&victim],
        None,
        "the run ended before the kill; make the mailbox larger: {}",
        c.kubelet.log(&victim)
    );

    // The Job controller starts another pod for the same Job; it resumes from the bucket.
    let a = c
        .wait_for(
            "chief",
            Duration::from_secs(240),
            "Ready with 3000 records",
            |a| ready(a) && records(a) == 3000,
        )
        .await;
    let jobs = c.finished_jobs_of("chief").await;
    assert_eq!(jobs.len(), 1, "the slot ran as one Job: {jobs:#?}");
    assert_eq!(job_counts(&jobs[0]), (1, 1), "{:?}", jobs[0].status);
    assert_eq!(last_job(&a).as_deref(), jobs[0].metadata.name.as_deref());
    assert_eq!(a.status.as_ref().unwrap().consecutive_failures, 0);
    // Nothing lost, nothing twice: the log verifies with exactly the mailbox's messages.
    c.assert_verifies(&a, 3000);
}

#[tokio::test]
async fn a_job_that_fails_as_a_whole_is_a_failed_run_with_backoff_then_the_retry_job_succeeds() {
    // backoffLimit 0: the first pod's failure fails the Job.
    let c = JobCluster::new("job-failed", 0).await;
    c.seed(3, "first", 0);
    c.kubelet.refuse_next(1);
    c.create_archive("chief", &json!({})).await;

    let a = c
        .wait_for(
            "chief",
            Duration::from_secs(120),
            "failed with JobFailed",
            |a| {
                condition(a, "Ready")
                    .is_some_and(|c| c.status == "False" && c.reason == "JobFailed")
            },
        )
        .await;
    let status = a.status.clone().unwrap();
    assert_eq!(status.consecutive_failures, 1);
    let failed_job = status
        .last_job
        .clone()
        .expect("lastJob names the failed Job");
    assert!(
        condition(&a, "Degraded").is_some_and(|c| c.status == "True"),
        "{:?}",
        status.conditions
    );
    let reasons = c.event_reasons("chief").await;
    assert!(reasons.iter().any(|r| r == "JobFailed"), "{reasons:?}");

    // The retry (10 s later, as for any failed run) is a new Job, and it succeeds.
    let a = c
        .wait_for(
            "chief",
            Duration::from_secs(120),
            "Ready with 3 records",
            |a| ready(a) && records(a) == 3,
        )
        .await;
    assert_ne!(last_job(&a), Some(failed_job));
    assert_eq!(a.status.as_ref().unwrap().consecutive_failures, 0);
    let jobs = c.finished_jobs_of("chief").await;
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    c.assert_verifies(&a, 3);
}

#[tokio::test]
async fn a_leader_failover_while_a_job_is_in_flight_does_not_start_the_slot_twice() {
    let mut c = JobCluster::new("job-failover", 3).await;
    c.seed(3, "first", 0);
    // The Job's pod waits: the run is in flight when the leader dies.
    c.kubelet.hold();
    c.create_archive("chief", &json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(job) = c.jobs_of("chief").await.first() {
            break job.metadata.name.clone().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no Job: {}",
            c.operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    c.operator.kill9();
    let job_config = json!({"image": "mailvault:test"}).to_string();
    let successor = job_operator(&c.kubeconfig, &c.ns, "successor", &c.dir, &job_config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !successor.is_leader().await {
        assert!(
            Instant::now() < deadline,
            "no takeover: {}",
            successor.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The new leader sees the run in flight and starts nothing; the held pod then runs it.
    c.kubelet.release();
    let a = c
        .wait_for(
            "chief",
            Duration::from_secs(120),
            "Ready with 3 records",
            |a| ready(a) && records(a) == 3,
        )
        .await;
    let jobs = c.finished_jobs_of("chief").await;
    assert_eq!(jobs.len(), 1, "the slot ran twice: {jobs:#?}");
    assert_eq!(jobs[0].metadata.name.as_deref(), Some(first.as_str()));
    assert_eq!(last_job(&a), Some(first));
    c.assert_verifies(&a, 3);
}

#[tokio::test]
async fn scheduled_destruction_of_a_job_archive_runs_as_a_job_under_an_identity_without_the_imap_password()
 {
    let c = JobCluster::new("job-destroy", 3).await;
    let policy: RetentionPolicy = serde_json::from_value(json!({
        "apiVersion": "mailvault.io/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": "seconds"},
        "spec": {
            "rules": [{"name": "reviewed", "recordSeries": "GS 9-01 Reviewed",
                       "match": {"subjectRegex": "^review"}, "retain": "PT5S",
                       "disposition": "Review"}],
            "defaultRule": {"recordSeries": "GS 1-01 Seconds", "retain": "PT5S",
                            "disposition": "Destroy"},
            "destruction": {"schedule": "* * * * *"}
        }
    }))
    .unwrap();
    Api::<RetentionPolicy>::namespaced(c.admin.clone(), &c.ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    c.seed(3, "note", 0);
    c.seed(1, "review", 0);
    c.create_archive("chief", &json!({"retentionPolicyRef": {"name": "seconds"}}))
        .await;

    // Archived by a Job, then destroyed by destruction Jobs (every minute; the records fall
    // due 5 s after archiving).
    let a = c
        .wait_for(
            "chief",
            Duration::from_secs(240),
            "with 3 records destroyed",
            |a| {
                a.status
                    .as_ref()
                    .and_then(|s| s.destruction.as_ref())
                    .and_then(|d| d.plan.as_ref())
                    .is_some_and(|p| p.destroyed == 3)
            },
        )
        .await;
    let d = a.status.as_ref().unwrap().destruction.clone().unwrap();
    assert_eq!(d.plan.as_ref().unwrap().awaiting_review, 1, "{d:?}");
    // The status was written by a destruction Job's pod: only that path sets lastJob.
    let job_name = d.last_job.clone().expect("destruction.lastJob");
    let jobs = c.finished_jobs_of("chief").await;
    let job = jobs
        .iter()
        .find(|j| j.metadata.name.as_deref() == Some(job_name.as_str()))
        .unwrap_or_else(|| panic!("no Job {job_name}: {jobs:#?}"));
    assert_eq!(
        job.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("mailvault.io/run-kind"))
            .map(String::as_str),
        Some("destruction")
    );
    assert_eq!(job_counts(job), (1, 0));
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("mailvault-destroy-chief")
    );
    assert!(
        pod.containers[0]
            .args
            .as_ref()
            .unwrap()
            .iter()
            .any(|a| a == "--destruction"),
        "{pod:#?}"
    );
    // Archive and destruction Jobs never overlapped: each started after the previous ended.
    let mut spans: Vec<(String, String)> = jobs
        .iter()
        .filter_map(|j| {
            let s = j.status.as_ref()?;
            Some((
                s.start_time.as_ref()?.0.to_string(),
                s.completion_time.as_ref()?.0.to_string(),
            ))
        })
        .collect();
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "Jobs of one archive overlapped: {spans:?}"
    );
    let reasons = c.event_reasons("chief").await;
    assert!(
        reasons.iter().any(|r| r == "RecordsDestroyed"),
        "{reasons:?}"
    );
    let reviews = Api::<mailvault::crd::DispositionReview>::namespaced(c.admin.clone(), &c.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        reviews
            .iter()
            .any(|r| r.spec.archive == "chief" && r.spec.count == 1),
        "the destruction Job created no review: {reviews:#?}"
    );
    // The auditor's view: three tombstones, one record kept, the certificate verifies.
    let public_key = a.status.as_ref().unwrap().public_key.clone().unwrap();
    let key = c.dir.join("chief-destroy.pub");
    std::fs::write(&key, format!("{public_key}\n")).unwrap();
    let out = c
        .env
        .mailvault_s3(
            S3Flavour::Versitygw,
            &["verify", &format!("s3://{}/{}/chief", c.bucket, c.ns)],
        )
        .arg("--public-key")
        .arg(&key)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("DESTROYED_OK             3"), "{report}");
    assert!(
        report.contains("destruction certificates verified: "),
        "{report}"
    );

    // The destruction identity reads the store's Secrets, not the mailbox password.
    let destroy = c.client_as("mailvault-destroy-chief").await;
    let secrets = Api::<Secret>::namespaced(destroy, &c.ns);
    for own in ["s3", "chief-signing-key"] {
        secrets
            .get(own)
            .await
            .unwrap_or_else(|e| panic!("the destruction run cannot read {own}: {e}"));
    }
    for other in ["imap", "imap-ca"] {
        assert!(
            matches!(secrets.get(other).await, Err(kube::Error::Api(s)) if s.code == 403),
            "the destruction identity reads {other}"
        );
    }
}
