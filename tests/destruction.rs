//! Destruction end to end, against versitygw (which enforces Object Lock fully) and moto (which
//! lets COMPLIANCE retention be shortened): records kept seconds are archived with
//! `mailvault archive --policy`, previewed with `mailvault plan`, destroyed with
//! `mailvault destroy` (tombstones, a signed certificate), and audited with `mailvault verify`
//! and `mailvault certificates`. A destruction run killed (`abort`, as `kill -9` would) after
//! every one of its steps completes on the next run. What someone does behind mailvault's back
//! is caught by the verifier.

use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{
    ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockRetention, ObjectLockRetentionMode,
};
use mailvault::core::entry::{EntryBody, RecordId};
use mailvault::core::note::NoteVerifier;
use mailvault::reader::StoredLog;
use mailvault::store::Store as _;
use mailvault::store::s3::S3Store;
use mailvault_tests::fault_proxy::{FaultProxy, HttpFault};
use mailvault_tests::{S3Flavour, TestEnv, mailvault_binary, unique_name};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Records by subject: `destroy*` kept 5 s then destroyed, `review*` kept 5 s then reviewed,
/// `held*` kept 5 s (a hold is placed in the test), `keep*` kept a day, `forever*` permanent.
const POLICY: &str = r#"
apiVersion: mailvault.io/v1alpha1
kind: RetentionPolicy
metadata:
  name: destruction-e2e
spec:
  rules:
    - name: seconds
      recordSeries: "T 1-01 Seconds"
      match: { subjectRegex: "^destroy" }
      retain: PT5S
      disposition: Destroy
    - name: reviewed
      recordSeries: "T 1-02 Reviewed"
      match: { subjectRegex: "^review" }
      retain: PT5S
      disposition: Review
    - name: held
      recordSeries: "T 1-03 Held"
      match: { subjectRegex: "^held" }
      retain: PT5S
      disposition: Destroy
    - name: day
      recordSeries: "T 1-04 Day"
      match: { subjectRegex: "^keep" }
      retain: P1D
      disposition: Destroy
    - name: forever
      recordSeries: "T 1-05 Forever"
      match: { subjectRegex: "^forever" }
      retain: Permanent
      disposition: Permanent
  defaultRule:
    recordSeries: "T 1-01 Seconds"
    retain: PT5S
    disposition: Destroy
"#;

/// One archive in a fresh bucket prefix, with its key, policy and a local mail directory.
struct Archive {
    env: TestEnv,
    flavour: S3Flavour,
    bucket: String,
    prefix: String,
    dir: PathBuf,
}

impl Archive {
    async fn new(env: &TestEnv, flavour: S3Flavour, bucket: &str, prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(&format!("destruction-{prefix}")));
        std::fs::create_dir_all(dir.join("mail/INBOX")).unwrap();
        std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
        let a = Self {
            env: env.clone(),
            flavour,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            dir,
        };
        let key = a.path("archive.key");
        let out = a.run(&[
            "keygen",
            "--name",
            &format!("mailvault.io/test/{prefix}"),
            "--out",
            &key,
        ]);
        assert!(out.status.success(), "{}", text(&out));
        std::fs::write(a.dir.join("archive.pub"), &out.stdout).unwrap();
        a
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.env.mailvault_s3(self.flavour, args).output().unwrap()
    }

    /// Writes messages with these subjects and archives them under the policy.
    fn archive(&self, subjects: &[&str]) {
        for (i, s) in subjects.iter().enumerate() {
            std::fs::write(
                self.dir.join(format!("mail/INBOX/{i:03}-{s}.eml")),
                format!("From: clerk@city.example\r\nSubject: {s}\r\nMessage-ID: <{s}.{i}@city.example>\r\n\r\nbody of {s}\r\n"),
            )
            .unwrap();
        }
        let out = self.run(&[
            "archive",
            "--from",
            &format!("eml:{}", self.path("mail")),
            "--to",
            &self.location(),
            "--key",
            &self.path("archive.key"),
            "--policy",
            &self.path("policy.yaml"),
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }

    fn with_store(&self, command: &str, extra: &[&str]) -> Output {
        let location = self.location();
        let mut args = vec![command, location.as_str()];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn destroy(&self, extra: &[&str]) -> Output {
        let key = self.path("archive.key");
        let policy = self.path("policy.yaml");
        let mut args = vec!["--key", key.as_str(), "--policy", policy.as_str()];
        args.extend_from_slice(extra);
        self.with_store("destroy", &args)
    }

    /// `destroy` with versitygw reached at `endpoint` (a fault proxy).
    fn destroy_through(&self, endpoint: &str) -> Output {
        assert!(matches!(self.flavour, S3Flavour::Versitygw));
        std::process::Command::new(mailvault_binary())
            .args([
                "destroy",
                &self.location(),
                "--key",
                &self.path("archive.key"),
            ])
            .args([
                "--policy",
                &self.path("policy.yaml"),
                "--s3-endpoint",
                endpoint,
            ])
            .args(["--s3-path-style", "--s3-region", self.env.var("S3_REGION")])
            .env("AWS_ACCESS_KEY_ID", self.env.var("VERSITYGW_ACCESS_KEY"))
            .env(
                "AWS_SECRET_ACCESS_KEY",
                self.env.var("VERSITYGW_SECRET_KEY"),
            )
            .env_remove("AWS_REGION")
            .output()
            .unwrap()
    }

    /// A destruction run that finishes what an interrupted one left: nothing refused, then
    /// `verify` passes with `destroyed` records destroyed and `kept` present, and every record
    /// has each kind of entry once. `when` names the case in failures.
    async fn resume_destruction(&self, destroyed: u64, kept: u64, when: &str) {
        let resumed = self.destroy_json(&[]);
        assert!(
            resumed["refused"].as_array().unwrap().is_empty(),
            "{when}: {resumed:#}"
        );
        let verify = self.verify();
        let report = String::from_utf8_lossy(&verify.stdout).into_owned();
        assert!(verify.status.success(), "{when}: {}", text(&verify));
        assert_eq!(
            count(&report, "DESTROYED_OK"),
            destroyed,
            "{when}: {report}"
        );
        assert_eq!(count(&report, "PRESENT_OK"), kept, "{when}: {report}");
        for ((record, kind), n) in self.entry_counts().await {
            assert_eq!(n, 1, "{when}: record {record} has {n} {kind} entries");
        }
    }

    fn destroy_json(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.destroy(&args);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }

    fn plan_json(&self, extra: &[&str]) -> serde_json::Value {
        let public = self.path("archive.pub");
        let policy = self.path("policy.yaml");
        let mut args = vec![
            "--public-key",
            public.as_str(),
            "--policy",
            policy.as_str(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = self.with_store("plan", &args);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }

    fn verify(&self) -> Output {
        self.with_store("verify", &["--public-key", &self.path("archive.pub")])
    }

    fn certificates(&self) -> Output {
        self.with_store("certificates", &["--public-key", &self.path("archive.pub")])
    }

    /// Polls `plan` until `ready` holds (records kept seconds fall due, and their locks end).
    fn plan_when(
        &self,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let plan = self.plan_json(&[]);
            if ready(&plan) {
                return plan;
            }
            assert!(Instant::now() < deadline, "{what} never happened: {plan:#}");
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn store(&self) -> S3Store {
        self.env.s3_store(self.flavour, &self.bucket, &self.prefix)
    }

    fn verifier(&self) -> NoteVerifier {
        NoteVerifier::parse(&std::fs::read_to_string(self.dir.join("archive.pub")).unwrap())
            .unwrap()
    }

    async fn log(&self) -> StoredLog {
        let v = self.verifier();
        StoredLog::load(&self.store(), v.name(), &v, true)
            .await
            .unwrap()
    }

    /// Record ids by series, from the log's ingest entries.
    async fn records_by_series(&self) -> BTreeMap<String, Vec<RecordId>> {
        let mut out: BTreeMap<String, Vec<RecordId>> = BTreeMap::new();
        for e in self.log().await.entries {
            if let EntryBody::Ingest { series, .. } = e.body {
                out.entry(series).or_default().push(e.record);
            }
        }
        out
    }

    /// Entries of each kind, per record.
    async fn entry_counts(&self) -> BTreeMap<(String, &'static str), usize> {
        let mut out = BTreeMap::new();
        for e in self.log().await.entries {
            *out.entry((e.record.as_str().to_owned(), e.body.kind()))
                .or_insert(0) += 1;
        }
        out
    }

    /// Every object version and delete marker under the archive: (key, version, marker).
    async fn versions(&self) -> Vec<(String, String, bool)> {
        self.store().list_version_ids("").await.unwrap()
    }

    /// Appends entries as the archive's writer (what the legal-hold reconciler, or a signer
    /// gone wrong, would log).
    async fn append(&self, entries: Vec<(RecordId, EntryBody)>) {
        let store = self.store();
        let mut writer = mailvault_tests::open_writer(&store, &self.dir.join("archive.key")).await;
        for (record, body) in entries {
            writer
                .append(record, body, mailvault::unix_now())
                .await
                .unwrap();
        }
        writer.finish().await.unwrap();
    }
}

fn count(report: &str, verdict: &str) -> u64 {
    report
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(verdict)).then(|| words.next().and_then(|n| n.parse().ok()))?
        })
        .unwrap_or(0)
}

fn series<'a>(plan: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    plan["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["series"] == name)
        .unwrap_or_else(|| panic!("series {name} not in {plan:#}"))
}

/// A `DispositionReview` of the plan's first review batch, as a records officer writes it,
/// with `decision` (YAML lines under spec, indented by two after the first).
fn review_yaml(plan: &serde_json::Value, name: &str, decision: &str) -> String {
    let batch = &plan["review_batches"][0];
    format!(
        "apiVersion: mailvault.io/v1alpha1\nkind: DispositionReview\nmetadata:\n  name: {name}\n  namespace: records\nspec:\n  archive: chief\n  policy: destruction-e2e\n  rule: reviewed\n  recordSeries: \"{}\"\n  count: {}\n  earliestRetainUntil: \"{}\"\n  latestRetainUntil: \"{}\"\n  recordsDigest: \"{}\"\n  logSize: {}\n  {decision}\n",
        batch["series"].as_str().unwrap(),
        batch["count"],
        batch["earliest_retain_until"].as_str().unwrap(),
        batch["latest_retain_until"].as_str().unwrap(),
        batch["records_digest"].as_str().unwrap(),
        plan["log_size"],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn records_kept_seconds_are_destroyed_on_schedule_and_nothing_else_is() {
    let env = TestEnv::load();
    let bucket = unique_name("destroy");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let a = Archive::new(&env, S3Flavour::Versitygw, &bucket, "police/chief").await;
    a.archive(&[
        "destroy-a",
        "destroy-b",
        "review-a",
        "held-a",
        "keep-a",
        "forever-a",
    ]);
    let by_series = a.records_by_series().await;
    let held = by_series["T 1-03 Held"][0].clone();
    let kept = by_series["T 1-04 Day"][0].clone();

    // A legal hold on one record: the S3 flag (what the hold reconciler sets) and the entry.
    let s3 = env.s3_client(S3Flavour::Versitygw);
    let held_key = format!("police/chief/records/{held}");
    s3.put_object_legal_hold()
        .bucket(&bucket)
        .key(&held_key)
        .legal_hold(
            ObjectLockLegalHold::builder()
                .status(ObjectLockLegalHoldStatus::On)
                .build(),
        )
        .send()
        .await
        .unwrap();
    a.append(vec![(
        held.clone(),
        EntryBody::HoldPlaced {
            hold: "records/case-2026-17".into(),
        },
    )])
    .await;

    // S3 itself refuses an early delete: the record kept a day, by a plain client and through
    // the store (which names the lock).
    let kept_key = format!("police/chief/records/{kept}");
    let kept_version = a
        .versions()
        .await
        .into_iter()
        .find(|(k, _, _)| *k == format!("records/{kept}"))
        .unwrap()
        .1;
    let refused = s3
        .delete_object()
        .bucket(&bucket)
        .key(&kept_key)
        .version_id(&kept_version)
        .send()
        .await;
    let e = refused.expect_err("versitygw deleted a version under a running COMPLIANCE lock");
    println!(
        "S3 refused the early delete: {:?}",
        aws_sdk_s3::error::ProvideErrorMetadata::code(&e)
    );
    match a
        .store()
        .delete_version(&format!("records/{kept}"), &kept_version)
        .await
    {
        Err(mailvault::Error::ObjectLocked(m)) => println!("store: {m}"),
        other => panic!("expected an Object Lock refusal, got {other:?}"),
    }

    // The plan, once the seconds have passed.
    let plan = a.plan_when("two records due", |p| p["due_now"] == 2);
    // The lock date is whole seconds; the server compares with its sub-second clock.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(series(&plan, "T 1-01 Seconds")["due_now"], 2, "{plan:#}");
    assert_eq!(
        series(&plan, "T 1-02 Reviewed")["awaiting_review"],
        1,
        "{plan:#}"
    );
    assert_eq!(series(&plan, "T 1-03 Held")["held"], 1, "{plan:#}");
    assert_eq!(series(&plan, "T 1-04 Day")["due_now"], 0, "{plan:#}");
    assert_eq!(series(&plan, "T 1-05 Forever")["permanent"], 1, "{plan:#}");
    assert_eq!(plan["review_batches"].as_array().unwrap().len(), 1);

    // A dry run changes nothing: same log, same versions.
    let log_before = a.log().await.records.size();
    let versions_before = a.versions().await;
    let dry = a.destroy_json(&["--dry-run"]);
    assert_eq!(dry["due_now"], 2, "{dry:#}");
    assert_eq!(dry["destroyed"], 0);
    assert_eq!(a.log().await.records.size(), log_before);
    assert_eq!(
        a.versions().await,
        versions_before,
        "a dry run changed the store"
    );

    // The run does what the plan said.
    let done = a.destroy_json(&[]);
    assert_eq!(done["destroyed"], plan["due_now"], "{done:#}");
    let certificates = done["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 1, "{done:#}");
    let after = a.versions().await;
    for id in &by_series["T 1-01 Seconds"] {
        assert!(
            !after.iter().any(|(k, _, _)| *k == format!("records/{id}")),
            "{id} still has versions: {after:?}"
        );
    }
    for id in [&held, &kept] {
        assert!(after.iter().any(|(k, _, _)| *k == format!("records/{id}")));
    }
    let verify = a.verify();
    let report = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert!(verify.status.success(), "{}", text(&verify));
    assert_eq!(count(&report, "DESTROYED_OK"), 2, "{report}");
    assert!(report.contains("result: VERIFIED"), "{report}");
    assert!(
        report.contains("destruction certificates verified: 1"),
        "{report}"
    );
    let listed = a.certificates();
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(
        listing.contains(certificates[0].as_str().unwrap()),
        "{listing}"
    );
    assert!(listing.contains("authorized by rule seconds"), "{listing}");
    assert!(listing.contains("1 certificates, 0 failed"), "{listing}");

    // A second run has nothing to do, and never touches the held, the running, the permanent or
    // the unreviewed record.
    let again = a.destroy_json(&[]);
    assert_eq!(again["destroyed"], 0, "{again:#}");
    assert_eq!(again["certificates"].as_array().unwrap().len(), 0);

    // An approval of the review batch, as a records officer writes it.
    let batch = &plan["review_batches"][0];
    let review = review_yaml(
        &plan,
        "t-1-02-batch",
        "decision: Approved\n  decidedBy: J. Smith, Custodian of Records\n  reference: MO-OD-2026-17",
    );
    std::fs::write(a.dir.join("approvals.yaml"), &review).unwrap();
    // A tampered digest is not an approval of this batch.
    std::fs::write(
        a.dir.join("stale.yaml"),
        review.replace(batch["records_digest"].as_str().unwrap(), &"0".repeat(64)),
    )
    .unwrap();
    let stale = a.destroy_json(&["--approvals", &a.path("stale.yaml")]);
    assert_eq!(stale["destroyed"], 0, "{stale:#}");
    assert_eq!(stale["stale_approvals"][0], "records/t-1-02-batch");
    let approved = a.destroy_json(&["--approvals", &a.path("approvals.yaml")]);
    assert_eq!(approved["destroyed"], 1, "{approved:#}");
    let listing = String::from_utf8_lossy(&a.certificates().stdout).into_owned();
    assert!(
        listing.contains(
            "review records/t-1-02-batch approved by J. Smith, Custodian of Records (MO-OD-2026-17)"
        ),
        "{listing}"
    );
    let verify = a.verify();
    let report = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert!(verify.status.success(), "{}", text(&verify));
    assert_eq!(count(&report, "DESTROYED_OK"), 3, "{report}");
    assert!(
        report.contains("destruction certificates verified: 2"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_extended_review_extends_each_records_lock_then_logs_it_and_refuses_a_shorter_date() {
    let env = TestEnv::load();
    let bucket = unique_name("extend");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let a = Archive::new(&env, S3Flavour::Versitygw, &bucket, "police/chief").await;
    a.archive(&["review-a", "review-b"]);
    let reviewed = a.records_by_series().await["T 1-02 Reviewed"].clone();
    assert_eq!(reviewed.len(), 2);
    let plan = a.plan_when("the review batch", |p| p["review_batches"][0]["count"] == 2);
    let latest = plan["review_batches"][0]["latest_retain_until"]
        .as_str()
        .unwrap();
    let latest = mailvault::core::UnixTime::parse(latest).unwrap();
    let until = mailvault::core::UnixTime(latest.0 + 86_400).to_string();
    let decided = "decision: Extended\n  decidedBy: J. Smith, Custodian of Records";

    // An extendUntil not after the batch's latest retain-until: refused, in words; nothing done.
    std::fs::write(
        a.dir.join("short.yaml"),
        review_yaml(
            &plan,
            "t-1-02-short",
            &format!("{decided}\n  extendUntil: \"{latest}\""),
        ),
    )
    .unwrap();
    let log_before = a.log().await.records.size();
    let refused = a.destroy_json(&["--approvals", &a.path("short.yaml")]);
    assert_eq!(refused["extended"], 0, "{refused:#}");
    assert_eq!(refused["reviews"][0]["state"], "Refused", "{refused:#}");
    let message = refused["reviews"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("is not after the batch's latest"),
        "{message}"
    );
    assert_eq!(a.log().await.records.size(), log_before);

    // Extended: each record's lock is extended, then retention-extended is logged.
    std::fs::write(
        a.dir.join("extend.yaml"),
        review_yaml(
            &plan,
            "t-1-02-extend",
            &format!("{decided}\n  extendUntil: \"{until}\""),
        ),
    )
    .unwrap();
    let extended = a.destroy_json(&["--approvals", &a.path("extend.yaml")]);
    assert_eq!(extended["extended"], 2, "{extended:#}");
    assert_eq!(extended["destroyed"], 0, "{extended:#}");
    assert_eq!(
        extended["reviews"][0]["state"], "CarriedOut",
        "{extended:#}"
    );
    assert_eq!(extended["reviews"][0]["extended"], 2, "{extended:#}");
    let s3 = env.s3_client(S3Flavour::Versitygw);
    let counts = a.entry_counts().await;
    for id in &reviewed {
        let head = s3
            .head_object()
            .bucket(&bucket)
            .key(format!("police/chief/records/{id}"))
            .send()
            .await
            .unwrap();
        let lock = head.object_lock_retain_until_date().unwrap();
        assert_eq!(
            lock.secs(),
            mailvault::core::UnixTime::parse(&until).unwrap().0,
            "{id}: lock {lock:?}, extendUntil {until}"
        );
        assert_eq!(
            counts.get(&(id.as_str().to_owned(), "retention-extended")),
            Some(&1),
            "{counts:?}"
        );
    }

    // A second run finds the batch carried out: nothing extended twice.
    let again = a.destroy_json(&["--approvals", &a.path("extend.yaml")]);
    assert_eq!(again["extended"], 0, "{again:#}");
    assert_eq!(again["reviews"][0]["state"], "CarriedOut", "{again:#}");
    assert_eq!(again["reviews"][0]["extended"], 2, "{again:#}");
    // The records are retained until then, no longer awaiting review.
    let plan = a.plan_json(&[]);
    let s = series(&plan, "T 1-02 Reviewed");
    assert_eq!(s["retained"], 2, "{plan:#}");
    assert_eq!(s["awaiting_review"], 0, "{plan:#}");
    assert_eq!(s["earliest_due"].as_str(), Some(until.as_str()), "{plan:#}");

    let verify = a.verify();
    let report = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(report.contains("result: VERIFIED"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_after_any_step_completes_on_the_next_run_with_each_tombstone_logged_once() {
    let env = TestEnv::load();
    let bucket = unique_name("destroy-crash");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    // Two records due, one kept: authorizations (2), their checkpoint, per record a deletion
    // and a tombstone, the tombstones' checkpoint, the certificate: 9 steps. One archive per
    // step, archived up front so that they all fall due together.
    const ARCHIVES: usize = 11;
    let mut archives = Vec::new();
    for k in 1..=ARCHIVES {
        let a = Archive::new(&env, S3Flavour::Versitygw, &bucket, &format!("crash-{k}")).await;
        a.archive(&["destroy-a", "destroy-b", "keep-a"]);
        archives.push(a);
    }
    archives[ARCHIVES - 1].plan_when("two records due", |p| p["due_now"] == 2);
    std::thread::sleep(Duration::from_secs(1));
    let mut incomplete_seen = false;
    let mut steps = 0;
    for (i, a) in archives.iter().enumerate() {
        let step = (i + 1).to_string();
        let crashed = a.destroy(&["--abort-after-step", &step]);
        if crashed.status.success() {
            // The run has fewer steps than this: every step has been crashed after.
            steps = i;
            break;
        }
        assert_eq!(
            crashed.status.signal(),
            Some(6),
            "step {step}: the run did not die by abort: {}",
            text(&crashed)
        );
        assert!(
            String::from_utf8_lossy(&crashed.stderr)
                .contains(&format!("aborting after step {step} ")),
            "{}",
            text(&crashed)
        );
        // What an auditor sees between the crash and the next run: never a false VERIFIED
        // about a half-done destruction.
        let between = String::from_utf8_lossy(&a.verify().stdout).into_owned();
        if between.contains("DESTRUCTION_INCOMPLETE") {
            incomplete_seen = true;
            assert!(!between.contains("result: VERIFIED"), "{between}");
        }
        a.resume_destruction(2, 1, &format!("step {step}")).await;
        let listed = a.certificates();
        assert!(listed.status.success(), "step {step}: {}", text(&listed));
        let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
        // Every destroyed record is in exactly one certificate (verify says so too: a record
        // listed twice is CERTIFICATE_MISMATCH).
        let total: usize = listing
            .lines()
            .filter_map(|l| {
                l.split(" records, covering")
                    .next()?
                    .rsplit(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum();
        assert_eq!(total, 2, "step {step}: {listing}");
        // Nothing left under the destroyed records' keys.
        let left: Vec<_> = a
            .versions()
            .await
            .into_iter()
            .filter(|(k, _, _)| k.starts_with("records/"))
            .collect();
        assert_eq!(left.len(), 1, "step {step}: {left:?}");
    }
    assert!(steps >= 9, "the loop stopped after {steps} steps");
    assert!(
        incomplete_seen,
        "no crash left a deletion without its tombstone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_error_on_one_record_fails_the_run_after_the_others_under_way_are_tombstoned() {
    let env = TestEnv::load();
    let bucket = unique_name("destroy-error");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let a = Archive::new(&env, S3Flavour::Versitygw, &bucket, "error").await;
    let due: Vec<String> = (1..=8).map(|i| format!("due-{i}")).collect();
    let mut subjects: Vec<&str> = due.iter().map(String::as_str).collect();
    subjects.push("keep-a");
    a.archive(&subjects);
    a.plan_when("eight records due", |p| p["due_now"] == 8);
    std::thread::sleep(Duration::from_secs(1));
    // Every DELETE under the first record key the run deletes from fails (500, as a broken
    // server answers, after the SDK's retries too); the other records are deleted at the
    // same time (the run deletes several records' versions at once).
    let mut failing: Option<String> = None;
    let proxy = FaultProxy::http(env.s3_endpoint(S3Flavour::Versitygw), move |r| {
        if r.method != "DELETE" || !r.path().contains("/records/") {
            return None;
        }
        let failing = failing.get_or_insert_with(|| r.path().to_owned());
        (r.path() == failing.as_str()).then_some(HttpFault::Answer {
            status: 500,
            code: "InternalError",
        })
    })
    .await;
    let failed = a.destroy_through(&proxy.url());
    assert!(
        proxy.injected() >= 1,
        "no DELETE failed: the test proved nothing"
    );
    assert_eq!(failed.status.code(), Some(2), "{}", text(&failed));
    // The error ended the run, but not half-way through the records under way beside it:
    // each of those was deleted and tombstoned, none left deleted without its tombstone.
    let between = String::from_utf8_lossy(&a.verify().stdout).into_owned();
    assert_eq!(count(&between, "DESTRUCTION_INCOMPLETE"), 0, "{between}");
    assert!(count(&between, "DESTROYED_OK") >= 1, "{between}");
    // The next run, with the store answering, finishes the record the error stopped.
    a.resume_destruction(8, 1, "after the error").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_done_behind_mailvaults_back_is_reported_by_verify() {
    let env = TestEnv::load();
    // moto lets COMPLIANCE retention be shortened: the lock weakened, then the record deleted
    // early (no tombstone: MISSING, which is how a premature deletion by someone without the
    // key shows).
    let bucket = unique_name("destroy-moto");
    env.create_bucket(S3Flavour::Moto, &bucket, true).await;
    let m = Archive::new(&env, S3Flavour::Moto, &bucket, "behind").await;
    m.archive(&["keep-a", "keep-b"]);
    let by_series = m.records_by_series().await;
    let (weakened, deleted) = (&by_series["T 1-04 Day"][0], &by_series["T 1-04 Day"][1]);
    let s3 = env.s3_client(S3Flavour::Moto);
    let version_of = |id: &RecordId, versions: &[(String, String, bool)]| {
        versions
            .iter()
            .find(|(k, _, _)| *k == format!("records/{id}"))
            .unwrap()
            .1
            .clone()
    };
    let versions = m.versions().await;
    let soon = DateTime::from_secs(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
            + 2,
    );
    for id in [weakened, deleted] {
        let shortened = s3
            .put_object_retention()
            .bucket(&bucket)
            .key(format!("behind/records/{id}"))
            .version_id(version_of(id, &versions))
            .retention(
                ObjectLockRetention::builder()
                    .mode(ObjectLockRetentionMode::Compliance)
                    .retain_until_date(soon)
                    .build(),
            )
            .send()
            .await;
        assert!(
            shortened.is_ok(),
            "moto refused to shorten a COMPLIANCE lock: {shortened:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    s3.delete_object()
        .bucket(&bucket)
        .key(format!("behind/records/{deleted}"))
        .version_id(version_of(deleted, &versions))
        .send()
        .await
        .expect("moto deletes a version whose shortened lock ended");
    let verify = m.verify();
    let report = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert_eq!(count(&report, "LOCK_WEAKENED"), 1, "{report}");
    assert_eq!(count(&report, "MISSING"), 1, "{report}");

    // A signer gone wrong (someone with the key) destroying a held record, and destroying one
    // before its retention ended: HELD_BUT_DESTROYED, PREMATURE_DESTRUCTION. Its own
    // versitygw archive; the deletions are possible because the records' locks have ended.
    let bucket = unique_name("destroy-rogue");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let a = Archive::new(&env, S3Flavour::Versitygw, &bucket, "rogue").await;
    a.archive(&["held-a", "destroy-a"]);
    a.plan_when("the locks ended", |p| p["due_now"] == 2);
    std::thread::sleep(Duration::from_secs(1));
    let by_series = a.records_by_series().await;
    let held = by_series["T 1-03 Held"][0].clone();
    let early = by_series["T 1-01 Seconds"][0].clone();
    a.append(vec![(
        held.clone(),
        EntryBody::HoldPlaced {
            hold: "records/case-9".into(),
        },
    )])
    .await;
    let versions = a.versions().await;
    let store = a.store();
    let mut entries = Vec::new();
    for (id, retain_until) in [
        (&held, None),
        // Logged as if retention ran another year: the tombstone comes before it.
        (
            &early,
            Some(mailvault::core::UnixTime(
                mailvault::unix_now().0 + 365 * 86_400,
            )),
        ),
    ] {
        let version = version_of(id, &versions);
        store
            .delete_version(&format!("records/{id}"), &version)
            .await
            .unwrap();
        if let Some(t) = retain_until {
            entries.push((
                id.clone(),
                EntryBody::RetentionExtended {
                    retain_until: mailvault::core::entry::RetainUntil::Until(t),
                },
            ));
        }
        entries.push((
            id.clone(),
            EntryBody::DestroyAuthorized {
                retain_until: mailvault::core::entry::RetainUntil::Until(mailvault::unix_now()),
                disposition: mailvault::core::entry::Disposition::Destroy,
            },
        ));
        entries.push((
            id.clone(),
            EntryBody::Destroyed {
                object_key: format!("records/{id}"),
                object_versions: vec![version],
            },
        ));
    }
    a.append(entries).await;
    let verify = a.verify();
    let report = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert_eq!(count(&report, "HELD_BUT_DESTROYED"), 1, "{report}");
    assert_eq!(count(&report, "PREMATURE_DESTRUCTION"), 1, "{report}");
}

/// A legal hold hidden behind delete markers still holds. Someone with write access to the
/// bucket and no key removes the S3 legal-hold flag (anyone allowed `PutObjectLegalHold` can)
/// and puts delete markers on the newest checkpoint and the bundle holding the `hold-placed`
/// entry (Object Lock allows both): a reader going by current keys would see the log from
/// before the hold. Every reader lists versions instead: `plan` counts the record held and
/// names the markers, and the destruction run destroys only the record no hold covers.
#[tokio::test(flavor = "multi_thread")]
async fn a_hold_hidden_behind_delete_markers_still_holds() {
    let env = TestEnv::load();
    let bucket = unique_name("destroy-markers");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let a = Archive::new(&env, S3Flavour::Versitygw, &bucket, "police/marked").await;
    a.archive(&["held-a", "destroy-a"]);
    let by_series = a.records_by_series().await;
    let held = by_series["T 1-03 Held"][0].clone();
    let destroyed = by_series["T 1-01 Seconds"][0].clone();
    a.append(vec![(
        held.clone(),
        EntryBody::HoldPlaced {
            hold: "records/case-2026-44".into(),
        },
    )])
    .await;
    let store = a.store();
    let newest = |keys: Vec<String>| {
        keys.into_iter()
            .max_by_key(|k| {
                k.rsplit('/')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .unwrap()
    };
    let checkpoint = newest(store.list_keys("checkpoints/").await.unwrap());
    let bundle = newest(store.list_keys("log/tile/entries/").await.unwrap());
    let s3 = env.s3_client(S3Flavour::Versitygw);
    for key in [&checkpoint, &bundle] {
        s3.delete_object()
            .bucket(&bucket)
            .key(format!("police/marked/{key}"))
            .send()
            .await
            .unwrap();
    }
    let plan = a.plan_when("the unheld record due", |p| p["due_now"] == 1);
    assert_eq!(series(&plan, "T 1-03 Held")["held"], 1, "{plan:#}");
    let warnings = plan["log_warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{plan:#}");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .starts_with(&format!("{checkpoint} is hidden behind a delete marker"))),
        "{plan:#}"
    );
    // The lock date is whole seconds; the server compares with its sub-second clock.
    std::thread::sleep(Duration::from_secs(1));
    let report = a.destroy_json(&[]);
    assert_eq!(report["destroyed"], 1, "{report:#}");
    let counts = a.entry_counts().await;
    assert_eq!(
        counts.get(&(destroyed.as_str().to_owned(), "destroyed")),
        Some(&1)
    );
    assert_eq!(counts.get(&(held.as_str().to_owned(), "destroyed")), None);
    assert!(
        a.versions()
            .await
            .iter()
            .any(|(k, _, marker)| *k == format!("records/{held}") && !marker),
        "the held record is still in the store"
    );
}
