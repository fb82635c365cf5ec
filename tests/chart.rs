//! The Helm chart (charts/mailvault) with the real helm and kubectl against the real apiserver:
//! lint and schema, a server-side dry run of every value combination, install and uninstall,
//! least privilege that holds (a rule removed, watched namespaces, Secrets that opt in), the
//! alerts' metrics, and the image's binary built the way the Dockerfile builds it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mailvault::crd::{MailboxArchive, RetentionPolicy};
use mailvault_tests::operator::{
    OperatorProcess, install_chart_rbac, install_chart_rbac_with, render_chart,
};
use mailvault_tests::{
    MailUser, S3Flavour, TestEnv, apply_crds, json_merge, new_namespace, repo_root, unique_name,
};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ALLOWED: &str = "mailvault.io/allowed-archives";

fn chart() -> PathBuf {
    repo_root().join("charts/mailvault")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The environment's helm, as the admin.
fn helm(env: &TestEnv, args: &[&str]) -> Output {
    Command::new(env.var("HELM"))
        .args(args)
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .output()
        .expect("running helm")
}

/// The environment's kubectl, as the admin, with `stdin`.
fn kubectl(env: &TestEnv, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env.var("KUBECTL"))
        .args(args)
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn helm_template(env: &TestEnv, ns: &str, release: &str, sets: &[&str]) -> Output {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        ns,
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    helm(env, &args)
}

#[test]
fn the_charts_crds_are_the_committed_crds() {
    let chart = std::fs::read_to_string(chart().join("crds/mailvault.yaml")).unwrap();
    let committed = std::fs::read_to_string(repo_root().join("crds/mailvault.yaml")).unwrap();
    assert!(
        chart == committed,
        "charts/mailvault/crds/mailvault.yaml drifted from crds/mailvault.yaml: cp crds/mailvault.yaml charts/mailvault/crds/"
    );
}

#[test]
fn the_operator_may_write_a_reviews_status_but_never_its_spec() {
    use k8s_openapi::api::rbac::v1::PolicyRule;
    use serde::Deserialize as _;
    let env = TestEnv::load();
    for sets in [
        vec![],
        vec!["rbac.watchNamespaces={police}"],
        vec!["rbac.watchNamespaces={police,fire}"],
    ] {
        let out = helm_template(&env, "mailvault", "mv", &sets);
        assert!(
            out.status.success(),
            "helm template {sets:?}: {}",
            text(&out)
        );
        let mut rules: Vec<PolicyRule> = Vec::new();
        for document in serde_norway::Deserializer::from_slice(&out.stdout) {
            let value = Value::deserialize(document).unwrap();
            let operator_role = matches!(value["kind"].as_str(), Some("ClusterRole" | "Role"))
                && value["metadata"]["name"] == "mv-operator";
            if operator_role {
                rules.extend(
                    serde_json::from_value::<Vec<PolicyRule>>(value["rules"].clone()).unwrap(),
                );
            }
        }
        let verbs = |resource: &str| -> Vec<String> {
            rules
                .iter()
                .filter(|r| {
                    r.resources
                        .as_ref()
                        .is_some_and(|rs| rs.iter().any(|x| x == resource))
                })
                .flat_map(|r| r.verbs.clone())
                .collect()
        };
        assert_eq!(verbs("dispositionreviews/status"), ["patch"], "{sets:?}");
        let spec = verbs("dispositionreviews");
        assert!(!spec.is_empty(), "{sets:?}");
        for forbidden in ["patch", "update", "delete", "*"] {
            assert!(!spec.iter().any(|v| v == forbidden), "{sets:?}: {spec:?}");
        }
    }
}

#[test]
fn helm_lint_passes_and_the_schema_refuses_bad_values() {
    let env = TestEnv::load();
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for sets in [
        vec![],
        vec![
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "networkPolicy.enabled=true",
            "s3.webIdentity.enabled=true",
            "rbac.watchNamespaces={police,fire}",
        ],
    ] {
        let mut args = vec!["lint", chart];
        for s in &sets {
            args.extend(["--set", s]);
        }
        let out = helm(&env, &args);
        assert!(out.status.success(), "helm lint {sets:?}: {}", text(&out));
    }
    for bad in [
        "replicaCount=0",
        "operator.concurrentRuns=0",
        "operator.logFormat=xml",
        "image.pullPolicy=Sometimes",
        "image.digest=latest",
        "rbac.watchNamespaces={Not_A_Namespace}",
        "securityContext.readOnlyRootFilesystem=false",
        "securityContext.allowPrivilegeEscalation=true",
        "podSecurityContext.runAsNonRoot=false",
        "spool.largestMessageMiB=0",
        "spool.medium=Disk",
        "resources.limits.memory=lots",
        "metrics.prometheusRule.noSuccessForSeconds=10",
        "networkPolicy.s3.cidrs={not-a-cidr}",
        "a.typo=1",
    ] {
        let out = helm_template(&env, "records", "mv", &[bad]);
        assert!(
            !out.status.success(),
            "the schema let {bad} through:\n{}",
            text(&out)
        );
        assert!(
            text(&out).contains("schema"),
            "{bad}: not refused by the schema: {}",
            text(&out)
        );
    }
}

/// Minimal CRDs for the Prometheus Operator's kinds, written for this test (the environment
/// has no Prometheus Operator): enough for the apiserver to accept or refuse the chart's
/// ServiceMonitor and PrometheusRule by the fields the chart uses.
async fn apply_monitoring_crds(admin: &kube::Client) {
    let path = repo_root().join("tests/data/monitoring-crds.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for doc in serde_norway::Deserializer::from_str(&text) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("mailvault-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        tokio::time::timeout(
            Duration::from_secs(60),
            kube::runtime::wait::await_condition(
                api.clone(),
                &name,
                kube::runtime::wait::conditions::is_crd_established(),
            ),
        )
        .await
        .unwrap()
        .unwrap();
    }
}

#[tokio::test]
async fn every_value_combination_passes_a_server_side_dry_run_under_restricted_pod_security() {
    let env = TestEnv::load();
    let admin = env.kube_admin().await;
    apply_crds(&admin).await;
    apply_monitoring_crds(&admin).await;
    let ns = new_namespace(&admin, "chart-dry").await;
    let a = new_namespace(&admin, "chart-dry-a").await;
    let b = new_namespace(&admin, "chart-dry-b").await;
    // The release namespace enforces the restricted Pod Security Standard; kubectl prints a
    // warning for a Deployment whose pods it would refuse.
    let label = kubectl(
        &env,
        &[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ],
        "",
    );
    assert!(label.status.success(), "{}", text(&label));
    let one = format!("rbac.watchNamespaces={{{a}}}");
    let two = format!("rbac.watchNamespaces={{{a},{b}}}");
    let combinations: Vec<Vec<&str>> = vec![
        vec![],
        vec![&one],
        vec![&two],
        vec![
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "networkPolicy.enabled=true",
            "networkPolicy.imap.cidrs={10.0.0.0/8}",
            "networkPolicy.s3.cidrs={192.0.2.0/24,2001:db8::/32}",
            "s3.webIdentity.enabled=true",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/mailvault",
        ],
        vec![
            "rbac.recordsOfficer.create=false",
            "rbac.aggregateToBuiltinRoles=false",
            "podDisruptionBudget.enabled=false",
            "replicaCount=1",
            "spool.medium=Memory",
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ],
        vec![
            "rbac.recordsOfficer.extraRules[0].apiGroups={mailvault.io}",
            "rbac.recordsOfficer.extraRules[0].resources={mailboxarchives}",
            "rbac.recordsOfficer.extraRules[0].verbs={get}",
            "serviceAccount.name=archiver",
        ],
    ];
    for sets in combinations {
        let release = unique_name("dry");
        let out = helm_template(&env, &ns, &release, &sets);
        assert!(
            out.status.success(),
            "helm template {sets:?}: {}",
            text(&out)
        );
        let manifest = String::from_utf8(out.stdout).unwrap();
        let applied = kubectl(
            &env,
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager=mailvault-tests",
                "-f",
                "-",
            ],
            &manifest,
        );
        assert!(
            applied.status.success(),
            "server-side dry run of {sets:?} refused:\n{}",
            text(&applied)
        );
        let said = text(&applied);
        assert!(
            !said.contains("would violate PodSecurity"),
            "{sets:?} breaks the restricted Pod Security Standard:\n{said}"
        );
        assert!(said.contains("deployment.apps/"), "{said}");
    }
}

#[tokio::test]
async fn install_creates_everything_and_uninstall_keeps_the_crds_and_every_record() {
    let env = TestEnv::load();
    let admin = env.kube_admin().await;
    apply_crds(&admin).await;
    let ns = new_namespace(&admin, "chart-install").await;
    let release = unique_name("mv");
    let chart = chart();
    let out = helm(
        &env,
        &[
            "install",
            &release,
            chart.to_str().unwrap(),
            "--namespace",
            &ns,
        ],
    );
    assert!(out.status.success(), "helm install: {}", text(&out));
    // NOTES.txt says what to do next.
    let notes = text(&out);
    assert!(
        notes.contains(ALLOWED) && notes.contains("publicKey"),
        "{notes}"
    );

    let operator = format!("{release}-operator");
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &ns)
        .get(&operator)
        .await
        .unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/mailvault/mailvault:0.1.0")
    );
    let args = container.args.clone().unwrap();
    for expected in [
        "operator",
        &format!("--lease-namespace={ns}"),
        "--spool-dir=/spool",
        "--concurrent-runs=4",
    ] {
        assert!(args.iter().any(|a| a == expected), "{args:?}");
    }
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let spool = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "spool")
        .unwrap();
    // 50 MiB largest message x 4 x 4 runs; each run keeps within its share.
    assert_eq!(
        spool.empty_dir.unwrap().size_limit.unwrap().0,
        "800Mi".to_owned()
    );
    assert!(
        container
            .args
            .as_ref()
            .unwrap()
            .contains(&"--max-spool-size=200MiB".to_owned())
    );
    for probe in [&container.liveness_probe, &container.readiness_probe] {
        assert!(probe.as_ref().unwrap().http_get.is_some());
    }
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .get(&operator)
        .await
        .unwrap();
    Api::<Service>::namespaced(admin.clone(), &ns)
        .get(&format!("{operator}-metrics"))
        .await
        .unwrap();
    Api::<PodDisruptionBudget>::namespaced(admin.clone(), &ns)
        .get(&operator)
        .await
        .unwrap();
    Api::<Role>::namespaced(admin.clone(), &ns)
        .get(&format!("{release}-leader-election"))
        .await
        .unwrap();
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    roles.get(&operator).await.unwrap();
    let officer = roles
        .get(&format!("{release}-records-officer"))
        .await
        .unwrap();
    assert!(officer.aggregation_rule.is_some());
    let officer_rules = roles
        .get(&format!("{release}-records-officer-rules"))
        .await
        .unwrap();
    assert_eq!(
        officer_rules.metadata.labels.unwrap()["mailvault.io/aggregate-to-records-officer"],
        "true"
    );
    // A records officer never deletes a LegalHold (it is released instead) and never reads a
    // Secret.
    for rule in officer_rules.rules.unwrap() {
        assert!(!rule.resources.clone().unwrap().contains(&"secrets".into()));
        if rule.resources.unwrap().contains(&"legalholds".into()) {
            assert!(!rule.verbs.contains(&"delete".into()));
        }
    }

    // Records the release does not own: a policy, an archive, a Secret.
    let policies: Api<RetentionPolicy> = Api::namespaced(admin.clone(), &ns);
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "mailvault.io/v1alpha1", "kind": "RetentionPolicy",
                "metadata": {"name": "city"},
                "spec": {"defaultRule": {"recordSeries": "GS 1-01", "retain": "P3Y",
                                         "disposition": "Destroy"}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let archives: Api<MailboxArchive> = Api::namespaced(admin.clone(), &ns);
    archives
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "mailvault.io/v1alpha1", "kind": "MailboxArchive",
                "metadata": {"name": "chief"},
                "spec": {"imap": {"host": "mail.example", "username": "chief",
                                  "passwordSecretRef": {"name": "imap", "key": "password"}},
                         "storage": {"bucket": "records", "region": "us-east-1",
                                     "credentialsSecretRef": {"name": "s3"}},
                         "schedule": "@hourly", "retentionPolicyRef": {"name": "city"}}}))
            .unwrap(),
        )
        .await
        .unwrap();

    let out = helm(&env, &["uninstall", &release, "--namespace", &ns]);
    assert!(out.status.success(), "helm uninstall: {}", text(&out));
    assert!(
        Api::<Deployment>::namespaced(admin.clone(), &ns)
            .get_opt(&operator)
            .await
            .unwrap()
            .is_none()
    );
    assert!(roles.get_opt(&operator).await.unwrap().is_none());
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for crd in [
        "mailboxarchives.mailvault.io",
        "retentionpolicies.mailvault.io",
        "legalholds.mailvault.io",
    ] {
        assert!(
            crds.get_opt(crd).await.unwrap().is_some(),
            "{crd} removed by helm uninstall"
        );
    }
    assert!(archives.get_opt("chief").await.unwrap().is_some());
    assert!(policies.get_opt("city").await.unwrap().is_some());
}

#[tokio::test]
async fn the_alerts_use_metrics_the_operator_exports() {
    let env = TestEnv::load();
    let docs = render_chart(
        &env,
        "records",
        "mv",
        &["metrics.prometheusRule.enabled=true"],
    );
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let metrics = mailvault::metrics::Metrics::default();
    metrics.run_finished("failed");
    metrics.error(mailvault::Reason::StoreError);
    metrics.archive_synced("police", "chief", 1, 1);
    let exported = metrics.render();
    let mut alerts = Vec::new();
    for r in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        alerts.push(r["alert"].as_str().unwrap().to_owned());
        let expr = r["expr"].as_str().unwrap();
        let names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("mailvault_"))
            .collect();
        assert!(!names.is_empty(), "{expr}");
        for name in names {
            assert!(
                exported
                    .lines()
                    .any(|l| !l.starts_with('#') && l.starts_with(name)),
                "alert {} uses {name}, which the operator does not export:\n{exported}",
                r["alert"]
            );
        }
    }
    for expected in [
        "MailvaultRunsFailing",
        "MailvaultArchiveNotSyncing",
        "MailvaultCaptureGaps",
        "MailvaultNoLeader",
    ] {
        assert!(alerts.iter().any(|a| a == expected), "{alerts:?}");
    }
}

// ---- the operator under the chart's permissions ----------------------------------------------

/// One namespace with a mailbox, a locked bucket, a RetentionPolicy `city`, and the Secrets
/// `imap`, `imap-ca`, `s3` (opted in as `opt_in` says, or not at all).
struct Setup {
    env: TestEnv,
    admin: kube::Client,
    ns: String,
    dir: PathBuf,
    user: MailUser,
    bucket: String,
}

impl Setup {
    async fn new(name: &str) -> Self {
        let env = TestEnv::load();
        let admin = env.kube_admin().await;
        apply_crds(&admin).await;
        let ns = new_namespace(&admin, name).await;
        let dir = std::env::temp_dir().join(unique_name(&format!("mv-chart-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        let user = env.new_mail_user(name);
        let bucket = unique_name(name);
        env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
        for i in 0..2 {
            let msg = format!(
                "From: chief@city.gov\r\nSubject: m {i}\r\nMessage-ID: <{name}-{i}@city.gov>\r\n\r\nbody {i}\r\n"
            );
            env.seed_message(&user, "INBOX", msg.as_bytes(), "");
        }
        let s = Self {
            env,
            admin,
            ns,
            dir,
            user,
            bucket,
        };
        let policy: RetentionPolicy = serde_json::from_value(json!({
            "apiVersion": "mailvault.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": "city"},
            "spec": {"defaultRule": {"recordSeries": "GS 1-01", "retain": "P1D",
                                     "disposition": "Destroy"}}
        }))
        .unwrap();
        Api::<RetentionPolicy>::namespaced(s.admin.clone(), &s.ns)
            .create(&PostParams::default(), &policy)
            .await
            .unwrap();
        s
    }

    /// The three Secrets, with `allowed` as their opt-in annotation (None: no annotation).
    async fn secrets(&self, allowed: Option<&str>) {
        let ca = std::fs::read_to_string(self.env.ca_path()).unwrap();
        for (name, data) in [
            ("imap", json!({"password": self.user.password})),
            ("imap-ca", json!({"ca.crt": ca})),
            (
                "s3",
                json!({"AWS_ACCESS_KEY_ID": self.env.var("VERSITYGW_ACCESS_KEY"),
                       "AWS_SECRET_ACCESS_KEY": self.env.var("VERSITYGW_SECRET_KEY")}),
            ),
        ] {
            let mut secret = json!({"apiVersion": "v1", "kind": "Secret",
                                    "metadata": {"name": name}, "stringData": data});
            if let Some(allowed) = allowed {
                secret["metadata"]["annotations"] = json!({ ALLOWED: allowed });
            }
            Api::<Secret>::namespaced(self.admin.clone(), &self.ns)
                .patch(
                    name,
                    &PatchParams::apply("mailvault-tests").force(),
                    &Patch::Apply(&secret),
                )
                .await
                .unwrap();
        }
    }

    fn archives(&self) -> Api<MailboxArchive> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    async fn create_archive(&self, name: &str, patch: &Value) {
        let mut spec = json!({
            "imap": {"host": self.env.imap_host(), "port": self.env.imaps_port(),
                     "username": self.user.name,
                     "passwordSecretRef": {"name": "imap", "key": "password"},
                     "caSecretRef": {"name": "imap-ca", "key": "ca.crt"}},
            "storage": {"bucket": self.bucket, "region": self.env.var("S3_REGION"),
                        "endpoint": self.env.s3_endpoint(S3Flavour::Versitygw), "pathStyle": true,
                        "credentialsSecretRef": {"name": "s3"}},
            "schedule": "* * * * *",
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

    fn operator(&self, kubeconfig: &Path) -> OperatorProcess {
        OperatorProcess::start(
            kubeconfig,
            &self.ns,
            "mailvault-operator",
            "solo",
            &self.dir,
        )
    }

    /// Waits until archive `name`'s Ready condition satisfies `pred`; returns the condition's
    /// (status, reason, message).
    async fn ready_when(
        &self,
        op: &OperatorProcess,
        name: &str,
        what: &str,
        pred: impl Fn(&str, &str, &str) -> bool,
    ) -> (String, String, String) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(a) = self.archives().get_opt(name).await.unwrap()
                && let Some(c) = a
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            {
                let seen = (c.status.clone(), c.reason.clone(), c.message.clone());
                if pred(&seen.0, &seen.1, &seen.2) {
                    return seen;
                }
                last = Some(seen);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!(
            "{name}: not {what} within 90 s; Ready: {last:?}\n{}",
            op.log_text()
        );
    }

    async fn event_reasons(&self, name: &str) -> Vec<(String, String)> {
        Api::<Event>::namespaced(self.admin.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }
}

/// A kube client that authenticates with the token in `kubeconfig`.
async fn client_of(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn a_secret_that_has_not_opted_in_is_refused_with_a_condition_and_an_event() {
    let s = Setup::new("chart-optin").await;
    let kubeconfig = install_chart_rbac(&s.env, &s.admin, &s.ns, &unique_name("mv"), &s.dir).await;
    s.secrets(None).await;
    let op = s.operator(&kubeconfig);
    s.create_archive("chief", &json!({})).await;
    let (_, _, message) = s
        .ready_when(&op, "chief", "refused", |status, reason, _| {
            status == "False" && reason == "SecretNotUsable"
        })
        .await;
    let fix = format!("kubectl -n {} annotate secret imap {ALLOWED}=chief", s.ns);
    assert!(
        message.contains("has not opted in for MailboxArchive chief") && message.contains(&fix),
        "{message}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = s.event_reasons("chief").await;
        if events
            .iter()
            .any(|(r, note)| r == "SecretNotUsable" && note.contains("has not opted in"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no SecretNotUsable Event: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Opted in for another archive only: still refused, and the fix keeps the other name.
    s.secrets(Some("deputy")).await;
    let (_, _, message) = s
        .ready_when(&op, "chief", "refused naming deputy", |_, _, m| {
            m.contains("deputy,chief")
        })
        .await;
    assert!(message.contains("--overwrite"), "{message}");

    // Opted in: the archive runs (the retry picks the fix up on its own).
    s.secrets(Some("deputy, chief")).await;
    s.ready_when(&op, "chief", "Ready", |status, _, _| status == "True")
        .await;
    // The signing key the operator generated is opted in for its own archive only.
    let key = Api::<Secret>::namespaced(s.admin.clone(), &s.ns)
        .get("chief-signing-key")
        .await
        .unwrap();
    assert_eq!(key.metadata.annotations.unwrap()[ALLOWED], "chief");

    // Another archive naming the same Secrets (as a namespace editor could) is refused, and
    // the mail server it names is never sent the password.
    s.create_archive("intruder", &json!({})).await;
    let (_, _, message) = s
        .ready_when(&op, "intruder", "refused", |status, reason, _| {
            status == "False" && reason == "SecretNotUsable"
        })
        .await;
    assert!(message.contains("MailboxArchive intruder"), "{message}");
}

#[tokio::test]
async fn with_one_rule_removed_the_operator_names_the_missing_permission() {
    let s = Setup::new("chart-rule").await;
    let release = unique_name("mv");
    let kubeconfig = install_chart_rbac(&s.env, &s.admin, &s.ns, &release, &s.dir).await;
    s.secrets(Some("*")).await;
    // The chart's ClusterRole without its Secret rule.
    let roles: Api<ClusterRole> = Api::all(s.admin.clone());
    let name = format!("{release}-operator");
    let mut role = roles.get(&name).await.unwrap();
    let rules = role.rules.take().unwrap();
    let before = rules.len();
    role.rules = Some(
        rules
            .into_iter()
            .filter(|r| !r.resources.as_ref().unwrap().contains(&"secrets".into()))
            .collect(),
    );
    assert_eq!(role.rules.as_ref().unwrap().len(), before - 1);
    role.metadata.managed_fields = None;
    role.metadata.resource_version = None;
    roles
        .replace(&name, &PostParams::default(), &role)
        .await
        .unwrap();
    let op = s.operator(&kubeconfig);
    s.create_archive("chief", &json!({})).await;
    let (_, _, message) = s
        .ready_when(&op, "chief", "refused", |status, _, m| {
            status == "False" && m.contains("forbidden")
        })
        .await;
    assert!(
        message.contains("cannot get resource \"secrets\""),
        "the condition does not name the missing permission: {message}"
    );
}

#[tokio::test]
async fn watched_namespaces_mode_archives_there_and_reads_no_secret_elsewhere() {
    let s = Setup::new("chart-watched").await;
    let release_ns = new_namespace(&s.admin, "chart-watched-op").await;
    let outside = new_namespace(&s.admin, "chart-outside").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "elsewhere", "annotations": {ALLOWED: "*"}},
        "stringData": {"password": "not for the operator"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(s.admin.clone(), &outside)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    // One watched namespace: every grant is a Role there (and the Lease's in the release
    // namespace); no ClusterRole at all.
    let sets = [format!("rbac.watchNamespaces={{{}}}", s.ns)];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let rendered = render_chart(&s.env, &release_ns, "mv", &sets);
    assert!(
        !rendered
            .iter()
            .any(|d| d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == "mv-operator"),
        "a ClusterRoleBinding in single-namespace mode"
    );
    let deployment = rendered.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!(format!("--namespace={}", s.ns))),
        "{args}"
    );
    let release = unique_name("mv");
    let kubeconfig =
        install_chart_rbac_with(&s.env, &s.admin, &release_ns, &release, &s.dir, &sets).await;
    let operator_client = client_of(&kubeconfig).await;
    let e = Api::<Secret>::namespaced(operator_client.clone(), &outside)
        .get("elsewhere")
        .await
        .unwrap_err();
    let said = e.to_string();
    assert!(
        said.contains("forbidden")
            && said.contains(&format!(
                "cannot get resource \"secrets\" in API group \"\" in the namespace \"{outside}\""
            )),
        "{said}"
    );
    // It does its job where it is allowed to, with its Lease in the release namespace (as the
    // Deployment runs it: --lease-namespace).
    s.secrets(Some("chief")).await;
    let op = OperatorProcess::start_with(
        &kubeconfig,
        &s.ns,
        "mailvault-operator",
        "watched",
        &s.dir,
        20,
        &["--lease-namespace", &release_ns],
        &[],
    );
    s.create_archive("chief", &json!({})).await;
    s.ready_when(&op, "chief", "Ready", |status, _, _| status == "True")
        .await;
    assert_eq!(
        s.archives()
            .get("chief")
            .await
            .unwrap()
            .status
            .and_then(|st| st.totals)
            .map(|t| t.records),
        Some(2)
    );

    // Several watched namespaces: archives are watched everywhere, Secrets only there.
    let sets = [format!("rbac.watchNamespaces={{{},{release_ns}}}", s.ns)];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let kubeconfig = install_chart_rbac_with(
        &s.env,
        &s.admin,
        &release_ns,
        &unique_name("mv"),
        &s.dir,
        &sets,
    )
    .await;
    let operator_client = client_of(&kubeconfig).await;
    Api::<MailboxArchive>::all(operator_client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<Secret>::namespaced(operator_client.clone(), &s.ns)
        .get("imap")
        .await
        .unwrap();
    let said = Api::<Secret>::namespaced(operator_client, &outside)
        .get("elsewhere")
        .await
        .unwrap_err()
        .to_string();
    assert!(said.contains("cannot get resource \"secrets\""), "{said}");
}

#[tokio::test]
async fn s3_credentials_by_web_identity_through_sts() {
    // moto server answers STS as well as S3: the operator exchanges a token file for
    // temporary keys (AssumeRoleWithWebIdentity over the real protocol) and archives with them.
    let s = Setup::new("chart-webid").await;
    let kubeconfig = install_chart_rbac(&s.env, &s.admin, &s.ns, &unique_name("mv"), &s.dir).await;
    s.secrets(Some("*")).await;
    let bucket = unique_name("webid");
    s.env.create_bucket(S3Flavour::Moto, &bucket, true).await;
    let token = s.dir.join("web-identity-token");
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWlsdmF1bHQifQ.c2ln",
    )
    .unwrap();
    let moto = s.env.s3_endpoint(S3Flavour::Moto).to_owned();
    let op = OperatorProcess::start_with(
        &kubeconfig,
        &s.ns,
        "mailvault-operator",
        "webid",
        &s.dir,
        20,
        &[],
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
            ("AWS_ENDPOINT_URL_STS", &moto),
        ],
    );
    s.create_archive(
        "chief",
        &json!({"storage": {"bucket": bucket, "endpoint": moto, "credentialsSecretRef": null,
                            "webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/records"}}}),
    )
    .await;
    s.ready_when(&op, "chief", "Ready", |status, _, _| status == "True")
        .await;
    let objects = s
        .env
        .s3_client(S3Flavour::Moto)
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(format!("{}/chief/records/", s.ns))
        .send()
        .await
        .unwrap();
    assert_eq!(objects.key_count(), Some(2), "{objects:?}");

    // Without a token file the archive is told why, not left to probe instance metadata.
    drop(op);
    let op = OperatorProcess::start_with(
        &kubeconfig,
        &s.ns,
        "mailvault-operator",
        "no-token",
        &s.dir,
        20,
        &[],
        &[],
    );
    s.create_archive(
        "deputy",
        &json!({"storage": {"bucket": bucket, "endpoint": moto, "credentialsSecretRef": null,
                            "webIdentity": {"roleArn": "arn:aws:iam::123456789012:role/records"}}}),
    )
    .await;
    let (_, _, message) = s
        .ready_when(&op, "deputy", "refused", |status, _, _| status == "False")
        .await;
    assert!(message.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{message}");
}

// ---- the image -------------------------------------------------------------------------------

/// What distroless/cc-debian12 provides: glibc, libgcc_s and the loader.
const DISTROLESS_CC_LIBS: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
];

#[test]
fn the_image_binary_builds_the_way_the_dockerfile_builds_it() {
    let root = repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let joined = dockerfile.replace("\\\n", " ");
    // The build stage's command, exactly: `RUN cargo build ... && install ...`.
    let run = joined
        .lines()
        .find_map(|l| l.trim().strip_prefix("RUN cargo "))
        .expect("a RUN cargo line in the Dockerfile");
    let args: Vec<&str> = run.split("&&").next().unwrap().split_whitespace().collect();
    assert_eq!(args[..2], ["build", "--release"], "{run}");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(&args)
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo {args:?}: {}", text(&out));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target.join("release/mailvault");

    // Nothing the runtime image lacks: no OpenSSL, only glibc and libgcc_s.
    let elf = Command::new("readelf")
        .arg("-d")
        .arg(&binary)
        .output()
        .unwrap();
    assert!(elf.status.success(), "{}", text(&elf));
    let needed: Vec<String> = String::from_utf8_lossy(&elf.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_owned()))
        .collect();
    assert!(!needed.is_empty());
    for lib in &needed {
        assert!(
            DISTROLESS_CC_LIBS.contains(&lib.as_str()),
            "the binary needs {lib}, which distroless/cc does not have"
        );
    }
    // The binary works and knows the CRDs the chart ships.
    let crd = Command::new(&binary).arg("crd").output().unwrap();
    assert!(crd.status.success(), "{}", text(&crd));
    assert_eq!(
        String::from_utf8(crd.stdout).unwrap(),
        std::fs::read_to_string(chart().join("crds/mailvault.yaml")).unwrap()
    );

    // The runtime stage: distroless, non-root, the uid the chart runs as, entrypoint the binary.
    assert!(joined.contains("FROM gcr.io/distroless/cc-debian12:nonroot"));
    assert!(joined.contains("USER 65532:65532"));
    let values: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    assert_eq!(values["podSecurityContext"]["runAsUser"], 65532);
    assert!(joined.contains(r#"ENTRYPOINT ["/usr/local/bin/mailvault"]"#));

    // `make image` tags what the chart pulls by default.
    let chart_yaml: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    let default_image = format!(
        "{}:{}",
        values["image"]["repository"].as_str().unwrap(),
        chart_yaml["appVersion"].as_str().unwrap()
    );
    let make = Command::new("make")
        .args(["-n", "image"])
        .current_dir(&root)
        .env_remove("IMAGE")
        .output()
        .unwrap();
    assert!(make.status.success(), "{}", text(&make));
    assert!(
        String::from_utf8_lossy(&make.stdout).contains(&format!("build -t {default_image} .")),
        "make image does not build {default_image}: {}",
        text(&make)
    );
}
