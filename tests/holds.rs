//! Legal holds and policy edits on records already archived, end to end: a Dovecot mailbox
//! archived into versitygw; holds by record ids, by matcher and by date range set the S3 legal
//! hold (read back with the S3 API) and log `hold-placed`; a new message matching a hold is
//! held by the next run; release clears the flag only when no other hold remains; S3 refuses to
//! delete a held version; an edited policy extends the S3 locks and logs `retention-extended`, a
//! shortening one logs nothing and is counted; `verify` passes after each step. Then the same
//! through the operator, with its finalizer refusing to drop an unreleased hold.

use mailvault::core::entry::EntryBody;
use mailvault::core::note::NoteVerifier;
use mailvault::reader::StoredLog;
use mailvault::store::Store as _;
use mailvault::store::s3::S3Store;
use mailvault_tests::{MailUser, S3Flavour, TestEnv, unique_name};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const CHIEF: &[u8] = b"From: Chief <chief@city.gov>\r\nTo: staff@city.gov\r\nSubject: staffing\r\n\
    Date: Sun, 1 Mar 2026 10:00:00 +0000\r\n\r\nPlease see me.\r\n";
const CLERK: &[u8] = b"From: clerk@city.gov\r\nTo: desk@city.gov\r\nSubject: minutes\r\n\
    Date: Sun, 15 Jun 2025 10:00:00 +0000\r\n\r\nMinutes.\r\n";
const RESIDENT: &[u8] = b"From: resident@example.org\r\nTo: desk@city.gov\r\nSubject: pothole\r\n\
    Date: Wed, 1 Apr 2026 10:00:00 +0000\r\n\r\nThere is a pothole.\r\n";
const CHIEF_LATER: &[u8] = b"From: chief@city.gov\r\nTo: staff@city.gov\r\nSubject: overtime\r\n\
    Date: Thu, 2 Apr 2026 10:00:00 +0000\r\n\r\nNo overtime.\r\n";

fn policy(retain: &str) -> String {
    format!(
        "apiVersion: mailvault.io/v1alpha1\nkind: RetentionPolicy\nmetadata: {{name: holds-e2e, namespace: records}}\n\
         spec:\n  defaultRule: {{recordSeries: \"GS 1-03 General\", retain: {retain}, disposition: Destroy}}\n"
    )
}

fn hold_yaml(name: &str, spec: &str, released: bool) -> String {
    format!(
        "apiVersion: mailvault.io/v1alpha1\nkind: LegalHold\nmetadata: {{name: {name}, namespace: records}}\n\
         spec:\n  reason: records request\n  caseReference: PRR-2026-17\n  archives: {{names: [clerk]}}\n  released: {released}\n{spec}"
    )
}

/// One archive in versitygw, read back the way an auditor and the S3 API see it.
struct Archive<'a> {
    env: &'a TestEnv,
    bucket: String,
    /// Key prefix of the archive (no trailing slash).
    prefix: String,
    public_key: PathBuf,
}

impl Archive<'_> {
    fn store(&self) -> S3Store {
        self.env
            .s3_store(S3Flavour::Versitygw, &self.bucket, &self.prefix)
    }

    fn cli(&self, args: &[&str]) -> String {
        let store = format!("s3://{}/{}", self.bucket, self.prefix);
        let o = self
            .env
            .mailvault_s3(S3Flavour::Versitygw, &[args[0], &store])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn verify(&self) {
        let key = self.public_key.display().to_string();
        let report = self.cli(&["verify", "--public-key", &key]);
        assert!(report.contains("result: VERIFIED"), "{report}");
    }

    async fn log(&self) -> StoredLog {
        let key = NoteVerifier::parse(&std::fs::read_to_string(&self.public_key).unwrap()).unwrap();
        StoredLog::load(&self.store(), key.name(), &key, true)
            .await
            .unwrap()
    }

    /// `(record, hold)` of every entry of a kind, in log order.
    async fn hold_entries(&self, kind: &str) -> Vec<(String, String)> {
        self.log()
            .await
            .entries
            .iter()
            .filter(|e| e.body.kind() == kind)
            .map(|e| match &e.body {
                EntryBody::HoldPlaced { hold } | EntryBody::HoldReleased { hold } => {
                    (e.record.to_string(), hold.clone())
                }
                _ => (e.record.to_string(), String::new()),
            })
            .collect()
    }

    /// Record id by the SHA-256 of the message it holds (its sidecar's identity).
    async fn ids(&self) -> BTreeMap<String, String> {
        let s3 = self.env.s3_client(S3Flavour::Versitygw);
        let listed = s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}/records/", self.prefix))
            .send()
            .await
            .unwrap();
        let mut out = BTreeMap::new();
        for o in listed.contents() {
            let key = o.key().unwrap();
            let head = s3
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            let identity = &head.metadata().unwrap()["mailvault-identity"];
            let sha = identity.rsplit("%00").next().unwrap().to_owned();
            out.insert(sha, key.rsplit('/').next().unwrap().to_owned());
        }
        out
    }

    /// The logged version of a record: (full key, version id).
    async fn version(&self, id: &str) -> (String, String) {
        let log = self.log().await;
        match &log.ingest_of(id).unwrap().body {
            EntryBody::Ingest { object_version, .. } => (
                format!("{}/records/{id}", self.prefix),
                object_version.clone(),
            ),
            _ => unreachable!(),
        }
    }

    /// The S3 legal-hold flag of a record's logged version, read with the S3 API.
    async fn legal_hold(&self, id: &str) -> bool {
        let (key, version) = self.version(id).await;
        let out = self
            .env
            .s3_client(S3Flavour::Versitygw)
            .get_object_legal_hold()
            .bucket(&self.bucket)
            .key(key)
            .version_id(version)
            .send()
            .await;
        match out {
            Ok(o) => o.legal_hold().and_then(|h| h.status()).map(|s| s.as_str()) == Some("ON"),
            // versitygw answers NoSuchObjectLockConfiguration for a version never held.
            Err(_) => false,
        }
    }

    /// The S3 retain-until of a record's logged version.
    async fn lock(&self, id: &str) -> i64 {
        let (key, version) = self.version(id).await;
        // HEAD: versitygw's GetObjectRetention answer does not decode (docs/s3-servers.md).
        self.env
            .s3_client(S3Flavour::Versitygw)
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .version_id(version)
            .send()
            .await
            .unwrap()
            .object_lock_retain_until_date()
            .unwrap()
            .secs()
    }
}

fn sha(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

fn imap_args(env: &TestEnv, user: &MailUser) -> Vec<String> {
    vec![
        "--from".into(),
        format!(
            "imap://{}@{}:{}",
            user.name,
            env.imap_host(),
            env.imaps_port()
        ),
        "--imap-tls".into(),
        "required".into(),
        "--imap-ca".into(),
        env.ca_path().display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn from_the_cli_holds_place_release_and_hold_new_records_and_policy_edits_extend_locks() {
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let user = env.new_mail_user("holds");
    let bucket = unique_name("holds");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let dir: PathBuf = std::env::temp_dir().join(unique_name("mv-holds"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |n: &str| dir.join(n).display().to_string();
    let run = |args: &[&str]| {
        let o = env
            .mailvault_s3(S3Flavour::Versitygw, args)
            .env("MAILVAULT_IMAP_PASSWORD", &user.password)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let public = run(&[
        "keygen",
        "--name",
        "mailvault.io/records/clerk",
        "--out",
        &path("key"),
    ]);
    std::fs::write(path("key.pub"), public).unwrap();
    for (n, retain) in [("p1y", "P1Y"), ("p2y", "P2Y"), ("p30d", "P30D")] {
        std::fs::write(path(&format!("{n}.yaml")), policy(retain)).unwrap();
    }
    for m in [CHIEF, CLERK, RESIDENT] {
        env.seed_message(&user, "INBOX", m, "S");
    }
    let archive_with = |policy_file: &str| {
        let mut args: Vec<String> = vec!["archive".into()];
        args.extend(imap_args(&env, &user));
        args.extend([
            "--to".into(),
            format!("s3://{bucket}/clerk"),
            "--key".into(),
            path("key"),
            "--policy".into(),
            path(policy_file),
        ]);
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = archive_with("p1y.yaml");
    assert!(out.contains("archived 3 new records"), "{out}");
    let a = Archive {
        env: &env,
        bucket: bucket.clone(),
        prefix: "clerk".into(),
        public_key: dir.join("key.pub"),
    };
    let ids = a.ids().await;
    let (chief, clerk, resident) = (&ids[&sha(CHIEF)], &ids[&sha(CLERK)], &ids[&sha(RESIDENT)]);
    let hold = |name: &str, spec: &str, released: bool| {
        std::fs::write(
            path(&format!("{name}.yaml")),
            hold_yaml(name, spec, released),
        )
        .unwrap();
        run(&[
            "hold",
            &format!("s3://{bucket}/clerk"),
            "--hold",
            &path(&format!("{name}.yaml")),
            "--key",
            &path("key"),
        ])
    };

    // By record ids (the resident's and the chief's), by matcher (the chief), by date range
    // (June 2025: the clerk's minutes).
    let ids_spec = format!("  recordIds: [\"{resident}\", \"{chief}\"]\n");
    let out = hold("by-ids", &ids_spec, false);
    assert!(
        out.contains("hold records/by-ids placed: it holds 2 records"),
        "{out}"
    );
    let out = hold(
        "by-sender",
        "  match: {from: [\"chief@city.gov\"]}\n",
        false,
    );
    assert!(out.contains("it holds 1 records"), "{out}");
    let out = hold(
        "by-date",
        "  dateRange: {from: \"2025-06-01\", to: \"2025-06-30\"}\n",
        false,
    );
    assert!(out.contains("it holds 1 records"), "{out}");
    for id in [chief, clerk, resident] {
        assert!(a.legal_hold(id).await, "{id} must carry the S3 legal hold");
    }
    let placed = a.hold_entries("hold-placed").await;
    for (id, h) in [
        (resident, "records/by-ids"),
        (chief, "records/by-ids"),
        (chief, "records/by-sender"),
        (clerk, "records/by-date"),
    ] {
        assert!(placed.contains(&(id.clone(), h.into())), "{placed:?}");
    }
    assert_eq!(placed.len(), 4, "{placed:?}");
    let ls = a.cli(&["ls", "--public-key", &path("key.pub")]);
    assert_eq!(ls.matches(" held ").count(), 3, "{ls}");
    a.verify();

    // S3 itself refuses to delete a held version (a version without a retention lock, so that
    // the hold alone is what refuses), and allows it once released.
    let store = a.store();
    store
        .put_mutable("scratch/held", b"x".to_vec(), &Default::default())
        .await
        .unwrap();
    let s3 = env.s3_client(S3Flavour::Versitygw);
    let scratch = s3
        .head_object()
        .bucket(&bucket)
        .key("clerk/scratch/held")
        .send()
        .await
        .unwrap();
    let scratch_version = scratch.version_id().unwrap().to_owned();
    store
        .set_legal_hold("scratch/held", &scratch_version, true)
        .await
        .unwrap();
    let refused = s3
        .delete_object()
        .bucket(&bucket)
        .key("clerk/scratch/held")
        .version_id(&scratch_version)
        .send()
        .await;
    assert!(refused.is_err(), "S3 deleted a version under legal hold");
    store
        .set_legal_hold("scratch/held", &scratch_version, false)
        .await
        .unwrap();
    s3.delete_object()
        .bucket(&bucket)
        .key("clerk/scratch/held")
        .version_id(&scratch_version)
        .send()
        .await
        .unwrap();

    // Present and future: a new message from the chief is held by the next run.
    env.seed_message(&user, "INBOX", CHIEF_LATER, "S");
    let out = archive_with("p1y.yaml");
    assert!(out.contains("archived 1 new records"), "{out}");
    assert!(
        out.contains("legal holds: 4 records held (1 hold-placed"),
        "{out}"
    );
    let later = a.ids().await[&sha(CHIEF_LATER)].clone();
    assert!(a.legal_hold(&later).await);
    assert!(
        a.hold_entries("hold-placed")
            .await
            .contains(&(later.clone(), "records/by-sender".into()))
    );
    a.verify();

    // Two holds on the chief's record: releasing one keeps the flag, releasing both clears it.
    let out = hold("by-ids", &ids_spec, true);
    assert!(out.contains("released: it holds 0 records"), "{out}");
    assert!(
        a.legal_hold(chief).await,
        "records/by-sender still holds it"
    );
    assert!(
        !a.legal_hold(resident).await,
        "no hold is left on the resident's"
    );
    let released = a.hold_entries("hold-released").await;
    assert!(
        released.contains(&(chief.clone(), "records/by-ids".into())),
        "{released:?}"
    );
    assert!(released.contains(&(resident.clone(), "records/by-ids".into())));
    a.verify();
    hold("by-sender", "  match: {from: [\"chief@city.gov\"]}\n", true);
    assert!(!a.legal_hold(chief).await);
    assert!(!a.legal_hold(&later).await);
    assert!(
        a.legal_hold(clerk).await,
        "records/by-date is still in force"
    );
    a.verify();

    // A policy edit that lengthens retention extends every lock and logs retention-extended.
    let before: BTreeMap<String, i64> = {
        let mut m = BTreeMap::new();
        for id in [chief, clerk, resident, &later] {
            m.insert(id.clone(), a.lock(id).await);
        }
        m
    };
    let out = archive_with("p2y.yaml");
    assert!(
        out.contains("policy re-applied to archived records: 4 records extended, 0 shortened"),
        "{out}"
    );
    let log = a.log().await;
    let extended = log
        .entries
        .iter()
        .filter(|e| e.body.kind() == "retention-extended")
        .count();
    assert_eq!(extended, 4);
    for (id, old) in &before {
        let new = a.lock(id).await;
        assert!(
            new > *old + 300 * 86_400,
            "{id}: lock {old} -> {new} is not a year longer"
        );
    }
    a.verify();
    // S3 refuses to shorten a COMPLIANCE lock directly.
    let (key, version) = a.version(chief).await;
    let shorten = s3
        .put_object_retention()
        .bucket(&bucket)
        .key(key)
        .version_id(version)
        .retention(
            aws_sdk_s3::types::ObjectLockRetention::builder()
                .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Compliance)
                .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(before[chief]))
                .build(),
        )
        .send()
        .await;
    assert!(shorten.is_err(), "versitygw shortened a COMPLIANCE lock");

    // A shortening edit logs nothing, keeps the locks and is counted.
    let size = log.entries.len();
    let locks: Vec<i64> = {
        let mut v = Vec::new();
        for id in before.keys() {
            v.push(a.lock(id).await);
        }
        v
    };
    let out = archive_with("p30d.yaml");
    assert!(
        out.contains(
            "0 records extended, 4 shortened by the edit (destroyable when their lock ends)"
        ),
        "{out}"
    );
    assert_eq!(
        a.log().await.entries.len(),
        size,
        "a shortening edit logs nothing"
    );
    let mut after = Vec::new();
    for id in before.keys() {
        after.push(a.lock(id).await);
    }
    assert_eq!(after, locks);
    // Applied once: the same policy again changes nothing and says nothing.
    let out = archive_with("p30d.yaml");
    assert!(!out.contains("policy re-applied"), "{out}");
    a.verify();

    // Someone with write access to the bucket deletes the holds' state: the next run says
    // so and names the hold it no longer knows, which keeps what it holds (flag and log)
    // but cannot judge new mail until it is given again.
    s3.delete_object()
        .bucket(&bucket)
        .key("clerk/state/holds.json")
        .send()
        .await
        .unwrap();
    let clerk_later = b"From: clerk@city.gov\r\nTo: desk@city.gov\r\nSubject: more minutes\r\n\
        Date: Mon, 16 Jun 2025 10:00:00 +0000\r\n\r\nMore minutes.\r\n";
    env.seed_message(&user, "INBOX", clerk_later, "S");
    let out = archive_with("p30d.yaml");
    assert!(out.contains("archived 1 new records"), "{out}");
    assert!(
        out.contains("state/holds.json was deleted from the bucket"),
        "{out}"
    );
    assert!(
        out.contains("in force in the log but not given to this run: records/by-date (1 records)"),
        "{out}"
    );
    assert!(a.legal_hold(clerk).await, "a lost state released a hold");
    let clerk_later_id = a.ids().await[&sha(clerk_later)].clone();
    assert!(!a.legal_hold(&clerk_later_id).await);
    a.verify();
    // Given again, the hold judges every record again and holds the new minutes too.
    let out = hold(
        "by-date",
        "  dateRange: {from: \"2025-06-01\", to: \"2025-06-30\"}\n",
        false,
    );
    assert!(out.contains("it holds 2 records"), "{out}");
    assert!(a.legal_hold(&clerk_later_id).await);
    a.verify();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The operator: a LegalHold by matcher holds the archive's matching records (the same
/// messages the CLI's `hold` holds), records archived later are held by the next run, deleting
/// the unreleased hold is refused by its finalizer, and `released: true` releases the records
/// and lets the deletion complete.
#[tokio::test(flavor = "multi_thread")]
async fn from_the_operator_a_hold_is_placed_kept_on_delete_and_released() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::ResourceExt as _;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
    use mailvault::crd::{LegalHold, MailboxArchive, RetentionPolicy};
    use serde_json::json;
    use std::time::{Duration, Instant};

    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let admin = env.kube_admin().await;
    mailvault_tests::apply_crds(&admin).await;
    let ns = mailvault_tests::new_namespace(&admin, "holds").await;
    let dir: PathBuf = std::env::temp_dir().join(unique_name("mv-op-holds"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig =
        mailvault_tests::operator::install_chart_rbac(&env, &admin, &ns, &unique_name("mv"), &dir)
            .await;
    let user = env.new_mail_user("op-holds");
    let bucket = unique_name("op-holds");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let ca = std::fs::read(env.ca_path()).unwrap();
    for (name, data) in [
        (
            "imap",
            vec![("password", user.password.as_bytes().to_vec())],
        ),
        ("imap-ca", vec![("ca.crt", ca)]),
        (
            "s3",
            vec![
                (
                    "AWS_ACCESS_KEY_ID",
                    env.var("VERSITYGW_ACCESS_KEY").as_bytes().to_vec(),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY",
                    env.var("VERSITYGW_SECRET_KEY").as_bytes().to_vec(),
                ),
            ],
        ),
    ] {
        use base64::Engine as _;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"mailvault.io/allowed-archives": "clerk"}},
            "data": data.iter().map(|(k, v)| ((*k).to_owned(),
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(v))))
                .collect::<serde_json::Map<_, _>>()
        }))
        .unwrap();
        secrets
            .patch(
                name,
                &PatchParams::apply("mailvault-tests").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }
    let mut policy: RetentionPolicy = serde_norway::from_str(&policy("P1Y")).unwrap();
    policy.metadata.namespace = Some(ns.clone());
    Api::<RetentionPolicy>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    for m in [CHIEF, CLERK, RESIDENT] {
        env.seed_message(&user, "INBOX", m, "S");
    }
    let archive: MailboxArchive = serde_json::from_value(json!({
        "apiVersion": "mailvault.io/v1alpha1", "kind": "MailboxArchive",
        "metadata": {"name": "clerk"},
        "spec": {
            "imap": {"host": env.imap_host(), "port": env.imaps_port(),
                     "tls": "Required", "username": user.name,
                     "passwordSecretRef": {"name": "imap", "key": "password"},
                     "caSecretRef": {"name": "imap-ca", "key": "ca.crt"}},
            "storage": {"bucket": bucket, "region": env.var("S3_REGION"),
                        "endpoint": env.s3_endpoint(S3Flavour::Versitygw), "pathStyle": true,
                        "credentialsSecretRef": {"name": "s3"}},
            "schedule": "* * * * *",
            "retentionPolicyRef": {"name": "holds-e2e"}
        }
    }))
    .unwrap();
    let archives: Api<MailboxArchive> = Api::namespaced(admin.clone(), &ns);
    let holds: Api<LegalHold> = Api::namespaced(admin.clone(), &ns);
    let operator = mailvault_tests::operator::OperatorProcess::start(
        &kubeconfig,
        &ns,
        "mailvault-operator",
        "solo",
        &dir,
    );
    archives
        .create(&PostParams::default(), &archive)
        .await
        .unwrap();
    let wait = |what: &str| (what.to_owned(), Instant::now() + Duration::from_secs(150));
    let (what, deadline) = wait("the first run");
    let public = loop {
        let status = archives
            .get("clerk")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if status.totals.as_ref().is_some_and(|t| t.records == 3)
            && let Some(k) = status.public_key
        {
            break k;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {status:#?}\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let public_key = dir.join("clerk.pub");
    std::fs::write(&public_key, format!("{public}\n")).unwrap();
    let a = Archive {
        env: &env,
        bucket: bucket.clone(),
        prefix: format!("{ns}/clerk"),
        public_key,
    };

    // The same document the CLI test gives `mailvault hold`.
    let mut hold: LegalHold = serde_norway::from_str(&hold_yaml(
        "by-sender",
        "  match: {from: [\"chief@city.gov\"]}\n",
        false,
    ))
    .unwrap();
    hold.metadata.namespace = Some(ns.clone());
    holds.create(&PostParams::default(), &hold).await.unwrap();
    let held_in_status = |h: &LegalHold, n: u64| {
        h.status.as_ref().is_some_and(|s| {
            s.held.iter().any(|e| {
                e.archive == "clerk"
                    && e.records == n
                    && Some(e.generation) == h.metadata.generation
            })
        })
    };
    let (what, deadline) = wait("the hold placed");
    loop {
        let h = holds.get("by-sender").await.unwrap();
        if held_in_status(&h, 1) {
            assert!(
                h.finalizers()
                    .contains(&"mailvault.io/legal-hold".to_owned())
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {:#?}\n{}",
            h.status,
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ids = a.ids().await;
    let chief = ids[&sha(CHIEF)].clone();
    assert!(a.legal_hold(&chief).await);
    assert!(!a.legal_hold(&ids[&sha(CLERK)]).await);
    let hold_id = format!("{ns}/by-sender");
    assert_eq!(
        a.hold_entries("hold-placed").await,
        vec![(chief.clone(), hold_id.clone())]
    );
    a.verify();

    // Present and future: the next scheduled run holds a new message from the chief.
    env.seed_message(&user, "INBOX", CHIEF_LATER, "S");
    let (what, deadline) = wait("the new record held");
    loop {
        let h = holds.get("by-sender").await.unwrap();
        if held_in_status(&h, 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {:#?}\n{}",
            h.status,
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let later = a.ids().await[&sha(CHIEF_LATER)].clone();
    assert!(a.legal_hold(&later).await);

    // Deleting it unreleased is refused: it stays, in force, and says what to do.
    holds
        .delete("by-sender", &DeleteParams::default())
        .await
        .unwrap();
    let (what, deadline) = wait("the refusal");
    loop {
        let h = holds.get("by-sender").await.unwrap();
        let refused = h.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.reason == "ReleaseRequired" && c.message.contains("released: true"))
        });
        if h.metadata.deletion_timestamp.is_some() && refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {:#?}\n{}",
            h.status,
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(a.legal_hold(&chief).await && a.legal_hold(&later).await);

    // Released: the records are released (logged), the flag cleared, the deletion completes.
    holds
        .patch(
            "by-sender",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"released": true}})),
        )
        .await
        .unwrap();
    let (what, deadline) = wait("the release and the deletion");
    while holds.get_opt("by-sender").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "{what}\n{}", operator.log_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(operator);
    assert!(!a.legal_hold(&chief).await && !a.legal_hold(&later).await);
    let released = a.hold_entries("hold-released").await;
    assert_eq!(released.len(), 2, "{released:?}");
    assert!(released.contains(&(chief, hold_id.clone())));
    a.verify();
    let _ = std::fs::remove_dir_all(&dir);
}
