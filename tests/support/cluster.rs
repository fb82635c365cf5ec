//! A namespace ready for `mailvault operator` tests: the CRDs, the chart's RBAC, a mail user, a
//! locked bucket, the Secrets a MailboxArchive needs, a RetentionPolicy, and how to wait for
//! and check an archive's status.

#![allow(missing_docs)] // test helpers, named for what they do

use crate::operator::{OperatorProcess, install_chart_rbac};
use crate::{MailUser, S3Flavour, TestEnv, apply_crds, json_merge, new_namespace, unique_name};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use mailvault::crd::{MailboxArchive, RetentionPolicy};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A namespace with the CRDs, the chart's RBAC, a mail user, a locked bucket, the Secrets a
/// MailboxArchive needs and a RetentionPolicy `city`.
pub struct Cluster {
    pub env: TestEnv,
    pub admin: kube::Client,
    pub ns: String,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub user: MailUser,
    pub bucket: String,
}

impl Cluster {
    /// A fresh namespace `name-<unique>` with everything above.
    pub async fn new(name: &str) -> Self {
        let env = TestEnv::load();
        let admin = env.kube_admin().await;
        apply_crds(&admin).await;
        let ns = new_namespace(&admin, name).await;
        let dir = std::env::temp_dir().join(unique_name(&format!("mv-op-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = install_chart_rbac(&env, &admin, &ns, &unique_name("mv"), &dir).await;
        let user = env.new_mail_user(name);
        let bucket = unique_name(name);
        env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
        let c = Self {
            env,
            admin,
            ns,
            dir,
            kubeconfig,
            user,
            bucket,
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
        c.create_policy("city").await;
        c
    }

    pub async fn secret(&self, name: &str, data: &[(&str, &[u8])]) {
        // Opted in for every archive of the test's namespace (tests/chart.rs checks the refusal
        // of a Secret that has not).
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"mailvault.io/allowed-archives": "*"}},
            "data": data.iter().map(|(k, v)| {
                use base64::Engine as _;
                ((*k).to_owned(), Value::String(base64::engine::general_purpose::STANDARD.encode(v)))
            }).collect::<serde_json::Map<_, _>>()
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

    pub async fn create_policy(&self, name: &str) {
        let policy: RetentionPolicy = serde_json::from_value(json!({
            "apiVersion": "mailvault.io/v1alpha1", "kind": "RetentionPolicy",
            "metadata": {"name": name},
            "spec": {"defaultRule": {"recordSeries": "GS 1-01 general correspondence",
                                     "retain": "P1D", "disposition": "Destroy"}}
        }))
        .unwrap();
        self.policies()
            .create(&PostParams::default(), &policy)
            .await
            .unwrap();
    }

    pub fn archives(&self) -> Api<MailboxArchive> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    pub fn policies(&self) -> Api<RetentionPolicy> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// A MailboxArchive of this cluster's mailbox and bucket, with `patch` merged into its spec.
    pub fn archive_spec(&self, name: &str, patch: &Value) -> MailboxArchive {
        let mut spec = json!({
            "imap": {"host": self.env.imap_host(), "port": self.env.imaps_port(),
                     "tls": "Required", "username": self.user.name,
                     "passwordSecretRef": {"name": "imap", "key": "password"},
                     "caSecretRef": {"name": "imap-ca", "key": "ca.crt"}},
            "storage": {"bucket": self.bucket, "region": self.env.var("S3_REGION"),
                        "endpoint": self.env.s3_endpoint(S3Flavour::Versitygw), "pathStyle": true,
                        "credentialsSecretRef": {"name": "s3"}},
            "schedule": "* * * * *",
            "retentionPolicyRef": {"name": "city"}
        });
        json_merge(&mut spec, patch);
        serde_json::from_value(json!({
            "apiVersion": "mailvault.io/v1alpha1", "kind": "MailboxArchive",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap()
    }

    pub async fn create_archive(&self, name: &str, patch: &Value) {
        self.archives()
            .create(&PostParams::default(), &self.archive_spec(name, patch))
            .await
            .unwrap();
    }

    pub fn operator(&self, identity: &str) -> OperatorProcess {
        OperatorProcess::start(
            &self.kubeconfig,
            &self.ns,
            "mailvault-operator",
            identity,
            &self.dir,
        )
    }

    pub fn seed(&self, folder: &str, n: usize, tag: &str) {
        for i in 0..n {
            let msg = format!(
                "From: chief@city.gov\r\nTo: clerk@city.gov\r\nSubject: {tag} {i}\r\nMessage-ID: <{tag}-{i}@city.gov>\r\n\r\nbody {tag} {i}\r\n"
            );
            self.env
                .seed_message(&self.user, folder, msg.as_bytes(), "");
        }
    }

    /// `mailvault verify` of archive `name` with the public key its status publishes.
    pub fn verify(&self, name: &str, public_key: &str) -> (Option<i32>, String) {
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
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    pub async fn events_of(&self, name: &str) -> Vec<Event> {
        Api::<Event>::namespaced(self.admin.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }
}

pub fn condition<'a>(
    a: &'a MailboxArchive,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    a.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn ready(a: &MailboxArchive) -> bool {
    condition(a, "Ready").is_some_and(|c| c.status == "True")
}

pub fn records(a: &MailboxArchive) -> u64 {
    a.status
        .as_ref()
        .and_then(|s| s.totals.as_ref())
        .map_or(0, |t| t.records)
}

/// Waits until archive `name` is `Ready=False` with `reason`; returns it and the condition's
/// message.
pub async fn refused(
    c: &Cluster,
    op: &OperatorProcess,
    name: &str,
    within: Duration,
    reason: &'static str,
) -> (MailboxArchive, String) {
    let a = wait_for(c, &[op], name, within, reason, |a| {
        condition(a, "Ready").is_some_and(|c| c.status == "False" && c.reason == reason)
    })
    .await;
    let message = condition(&a, "Ready").unwrap().message.clone();
    (a, message)
}

/// Polls archive `name` until `pred` holds; on time-out panics with its status and the logs.
pub async fn wait_for(
    c: &Cluster,
    operators: &[&OperatorProcess],
    name: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&MailboxArchive) -> bool,
) -> MailboxArchive {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(a) = c.archives().get_opt(name).await.unwrap() {
            if pred(&a) {
                return a;
            }
            last = Some(a);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let logs: Vec<String> = operators
        .iter()
        .map(|o| {
            let t = o.log_text();
            let tail: Vec<&str> = t.lines().rev().take(30).collect();
            format!(
                "--- {} ---\n{}",
                o.identity,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect();
    panic!(
        "{name}: not {what} within {within:?}; status: {:#?}\n{}",
        last.and_then(|a| a.status),
        logs.join("\n")
    );
}

/// `mailvault verify` of `archive` with the key its status publishes passes with `n` records
/// PRESENT_OK.
pub fn assert_verifies(c: &Cluster, archive: &MailboxArchive, n: u64) {
    let name = archive.metadata.name.as_deref().unwrap();
    let key = archive
        .status
        .as_ref()
        .and_then(|s| s.public_key.as_deref())
        .unwrap();
    let (code, report) = c.verify(name, key);
    assert_eq!(code, Some(0), "{report}");
    assert!(present(&report, n), "{report}");
}

/// Whether a verify report counts `n` records PRESENT_OK. A run of many short messages trains
/// one compression dictionary, which verify reports like a record (docs/guide-auditor.md), so
/// `n + 1` counts too.
pub fn present(report: &str, n: u64) -> bool {
    report.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        matches!(words.as_slice(), ["PRESENT_OK", v] if v.parse::<u64>().is_ok_and(|v| v == n || v == n + 1))
    })
}

pub fn assert_no_secret_in(text: &str, c: &Cluster) {
    for secret in [c.user.password.as_str(), c.env.var("VERSITYGW_SECRET_KEY")] {
        assert!(!text.contains(secret), "a secret value leaked into: {text}");
    }
}
