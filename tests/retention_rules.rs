//! Retention rules applied at ingest, end to end: a Dovecot mailbox whose messages hit every
//! matcher kind (encoded-word subjects and addresses included) archived with
//! `mailvault archive --policy` into versitygw; each record's series and retain-until checked in
//! the log (`mailvault ls`) and in the S3 Object Lock (HEAD), and its rule and date source in
//! its sidecar.

use mailvault_tests::{MailUser, S3Flavour, TestEnv, unique_name};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const POLICY: &str = r#"
apiVersion: mailvault.io/v1alpha1
kind: RetentionPolicy
metadata:
  name: rules-e2e
  namespace: records
spec:
  rules:
    - name: chief
      recordSeries: "GS 1-07 Executive"
      match: { from: ["chief@police.city.example"] }
      retain: Permanent
      disposition: Permanent
    - name: council-cc
      recordSeries: "GS 1-08 Council"
      match: { cc: ["@council.city.example"] }
      retain: P2Y
      from: MessageDate
      disposition: Destroy
    - name: records-to
      recordSeries: "GS 1-09 Records"
      match: { to: ["records@city.example"] }
      retain: P5Y
      disposition: Review
    - name: internal-affairs
      recordSeries: "PD 3-12 IA"
      match: { subjectRegex: "(?i)^überprüfung\\b" }
      retain: P10Y
      from: EndOfCalendarYear
      disposition: Review
    - name: tagged
      recordSeries: "PD 9-99 Tagged"
      match: { header: { name: x-records-series, equals: "PD 9-99" } }
      retain: P7Y
      from: MessageDate
      disposition: Destroy
    - name: large
      recordSeries: "GS 2-01 Large"
      match: { minSize: 50000 }
      retain: P1Y
      disposition: Destroy
    - name: tiny
      recordSeries: "GS 2-02 Tiny"
      match: { maxSize: 80 }
      retain: P30D
      disposition: Destroy
    - name: attachments
      recordSeries: "GS 2-03 Attachments"
      match: { hasAttachment: true }
      retain: P4Y
      disposition: Destroy
    - name: drafts
      recordSeries: "GS 1-02 Transitory"
      match: { folders: ["Entwürfe", "Newsletters/*"] }
      retain: P90D
      disposition: Destroy
  defaultRule:
    recordSeries: "GS 1-03 General"
    retain: P3Y
    from: EndOfCalendarYear
    disposition: Destroy
"#;

/// Where each seeded message must land.
struct Expect {
    rule: &'static str,
    series: &'static str,
    date_source: &'static str,
    retain: Retain,
}

enum Retain {
    /// A fixed instant.
    At(&'static str),
    /// This period after archiving.
    AfterArchiving(jiff::Span),
    Permanent,
    /// Already over when archived: logged as is, locked two seconds (plus the server's clock
    /// lead) from archiving.
    PastAt(&'static str),
}

fn ts(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_second()
}

fn plus(secs: i64, span: jiff::Span) -> i64 {
    jiff::Timestamp::from_second(secs)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .checked_add(span)
        .unwrap()
        .timestamp()
        .as_second()
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Delivers a message with an internal date (Maildir: the file's mtime).
fn seed(env: &TestEnv, user: &MailUser, folder: &str, bytes: &[u8], internal: &str) {
    let path = env.seed_message(user, folder, bytes, "S");
    let when = UNIX_EPOCH + Duration::from_secs(u64::try_from(ts(internal)).unwrap());
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

fn mailbox() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let attachment = "From: clerk@city.example\r\nSubject: report\r\nDate: Tue, 3 Mar 2026 09:00:00 +0000\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
        Content-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\n\
        Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\n\
        Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n--b1--\r\n";
    let mut large = b"From: scanner@city.example\r\nSubject: scan\r\nDate: Tue, 3 Mar 2026 09:00:00 +0000\r\n\r\n".to_vec();
    while large.len() < 60_000 {
        large.extend_from_slice(&[b'x'; 78]);
        large.extend_from_slice(b"\r\n");
    }
    vec![
        (
            "INBOX",
            b"From: =?UTF-8?Q?Chief_J=C3=BCrgen?= <Chief@Police.City.Example>\r\nSubject: staffing\r\n\
              Date: Mon, 4 May 2026 10:00:00 +0000\r\n\r\nPlease see me.\r\n"
                .to_vec(),
            Expect {
                rule: "chief",
                series: "GS 1-07 Executive",
                date_source: "archived-at",
                retain: Retain::Permanent,
            },
        ),
        (
            "INBOX",
            b"From: clerk@city.example\r\nCc: =?ISO-8859-1?Q?Conseill=E8re?= <Member@Council.City.Example>\r\n\
              Subject: minutes\r\nDate: Tue, 10 Mar 2020 10:00:00 +0000\r\n\r\nMinutes attached inline.\r\n"
                .to_vec(),
            Expect {
                rule: "council-cc",
                series: "GS 1-08 Council",
                date_source: "date-header",
                retain: Retain::PastAt("2022-03-10T10:00:00Z"),
            },
        ),
        (
            "Sent",
            b"From: clerk@city.example\r\nTo: Records Office: \"Records\" <records@city.example>;\r\n\
              Subject: transfer\r\nDate: Tue, 3 Mar 2026 09:00:00 +0000\r\n\r\nTransfer list.\r\n"
                .to_vec(),
            Expect {
                rule: "records-to",
                series: "GS 1-09 Records",
                date_source: "archived-at",
                retain: Retain::AfterArchiving(jiff::Span::new().years(5)),
            },
        ),
        (
            "INBOX",
            // "Überprüfung IA-2026-4", base64 encoded word; 23:30 in UTC-06:00 on 31 December
            // 2025 is 2026 in UTC: P10Y after the end of 2026.
            b"From: sgt@police.city.example\r\nSubject: =?UTF-8?B?w5xiZXJwcsO8ZnVuZyBJQS0yMDI2LTQ=?=\r\n\
              Date: Wed, 31 Dec 2025 23:30:00 -0600\r\n\r\nCase notes.\r\n"
                .to_vec(),
            Expect {
                rule: "internal-affairs",
                series: "PD 3-12 IA",
                date_source: "date-header",
                retain: Retain::At("2037-01-01T00:00:00Z"),
            },
        ),
        (
            "INBOX",
            // No Date header: the internal date counts.
            b"From: dispatch@city.example\r\nSubject: tagged\r\nX-Records-Series: PD\r\n 9-99\r\n\r\nTagged.\r\n"
                .to_vec(),
            Expect {
                rule: "tagged",
                series: "PD 9-99 Tagged",
                date_source: "internal-date",
                retain: Retain::At("2031-06-01T00:00:00Z"),
            },
        ),
        (
            "INBOX",
            large,
            Expect {
                rule: "large",
                series: "GS 2-01 Large",
                date_source: "archived-at",
                retain: Retain::AfterArchiving(jiff::Span::new().years(1)),
            },
        ),
        (
            "INBOX",
            b"From: a@b.example\r\nSubject: hi\r\n\r\nhi\r\n".to_vec(),
            Expect {
                rule: "tiny",
                series: "GS 2-02 Tiny",
                date_source: "archived-at",
                retain: Retain::AfterArchiving(jiff::Span::new().days(30)),
            },
        ),
        (
            "Sent",
            attachment.as_bytes().to_vec(),
            Expect {
                rule: "attachments",
                series: "GS 2-03 Attachments",
                date_source: "archived-at",
                retain: Retain::AfterArchiving(jiff::Span::new().years(4)),
            },
        ),
        (
            // "Entwürfe" in IMAP's modified UTF-7, as Dovecot names the Maildir folder.
            "Entw&APw-rfe",
            b"From: clerk@city.example\r\nSubject: draft of the budget memo\r\n\
              Date: Tue, 3 Mar 2026 09:00:00 +0000\r\n\r\nDraft text.\r\n"
                .to_vec(),
            Expect {
                rule: "drafts",
                series: "GS 1-02 Transitory",
                date_source: "archived-at",
                retain: Retain::AfterArchiving(jiff::Span::new().days(90)),
            },
        ),
        (
            // No headers at all, in a folder a rule names: unparseable, so the default rule,
            // counted from the internal date's year (2024): 2025-01-01 + P3Y.
            "Newsletters/2026",
            b"\r\nThis message has no header fields at all.\r\n".to_vec(),
            Expect {
                rule: "default",
                series: "GS 1-03 General",
                date_source: "internal-date",
                retain: Retain::At("2028-01-01T00:00:00Z"),
            },
        ),
        (
            "INBOX",
            b"From: resident@example.org\r\nTo: desk@city.example\r\nSubject: pothole on Main St\r\n\
              Date: Sat, 4 May 2024 10:00:00 +0200\r\n\r\nThere is a pothole.\r\n"
                .to_vec(),
            Expect {
                rule: "default",
                series: "GS 1-03 General",
                date_source: "date-header",
                retain: Retain::At("2028-01-01T00:00:00Z"),
            },
        ),
    ]
}

/// Seeds [`mailbox`] into `user`'s mailbox; returns what each message's content must become.
fn seed_mailbox(env: &TestEnv, user: &MailUser) -> BTreeMap<String, Expect> {
    let mut expected = BTreeMap::new();
    for (folder, bytes, expect) in mailbox() {
        let internal = if expect.rule == "tagged" {
            "2024-06-01T00:00:00Z"
        } else {
            "2024-02-01T00:00:00Z"
        };
        seed(env, user, folder, &bytes, internal);
        expected.insert(hex(&sha2::Sha256::digest(&bytes)), expect);
    }
    expected
}

/// One archive to check: where it is and the window its run took place in.
struct Archived<'a> {
    env: &'a TestEnv,
    bucket: &'a str,
    /// Key prefix of the archive in the bucket (no trailing slash).
    prefix: String,
    public_key: PathBuf,
    before: i64,
    after: i64,
}

impl Archived<'_> {
    fn mailvault(&self, args: &[&str]) -> String {
        let store = format!("s3://{}/{}", self.bucket, self.prefix);
        let o = self
            .env
            .mailvault_s3(S3Flavour::Versitygw, &[args[0], &store])
            .args(&args[1..])
            .arg("--public-key")
            .arg(&self.public_key)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Every record under its expected rule: series and retain-until in the log (`ls`), the
    /// same retain-until as the S3 lock (HEAD), rule and date source in the sidecar; and the
    /// archive verifies.
    async fn check(&self, expected: &BTreeMap<String, Expect>) {
        let ls = self.mailvault(&["ls"]);
        let logged: BTreeMap<String, (String, String)> = ls
            .lines()
            .skip(1)
            .map(|l| {
                let mut f = l.split_whitespace();
                let id = f.next().unwrap().to_owned();
                let retain = f.next().unwrap().to_owned();
                let series = f.skip(1).collect::<Vec<_>>().join(" ");
                (id, (retain, series))
            })
            .collect();
        assert_eq!(logged.len(), expected.len(), "{ls}");

        let s3 = self.env.s3_client(S3Flavour::Versitygw);
        let listed = s3
            .list_objects_v2()
            .bucket(self.bucket)
            .prefix(format!("{}/records/", self.prefix))
            .send()
            .await
            .unwrap();
        let mut seen = 0;
        for object in listed.contents() {
            let key = object.key().unwrap();
            let id = key.rsplit('/').next().unwrap();
            let head = s3
                .head_object()
                .bucket(self.bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            let meta = head.metadata().unwrap();
            let sha = meta["mailvault-identity"].rsplit("%00").next().unwrap();
            let expect = expected
                .get(sha)
                .unwrap_or_else(|| panic!("{key}: no seeded message has content {sha}"));
            let what = format!("{key} (rule {})", expect.rule);
            assert_eq!(meta["mailvault-rule"], expect.rule, "{what}");
            assert_eq!(meta["mailvault-date-source"], expect.date_source, "{what}");
            let (log_retain, log_series) = &logged[id];
            assert_eq!(log_series, expect.series, "{what}");
            assert_eq!(meta["mailvault-series"], expect.series, "{what}");
            assert_eq!(
                head.object_lock_mode().map(|m| m.as_str().to_owned()),
                Some("COMPLIANCE".to_owned())
            );
            let lock = head.object_lock_retain_until_date().unwrap().secs();
            let (before, after) = (self.before, self.after);
            match &expect.retain {
                Retain::At(t) => {
                    assert_eq!(log_retain, t, "{what}");
                    assert_eq!(lock, ts(t), "{what}: the lock is the retain-until");
                }
                Retain::AfterArchiving(span) => {
                    let logged_at = ts(log_retain);
                    assert!(
                        (plus(before, *span)..=plus(after, *span)).contains(&logged_at),
                        "{what}: {log_retain} is not {span} after the run"
                    );
                    assert_eq!(lock, logged_at, "{what}");
                }
                Retain::Permanent => {
                    assert_eq!(log_retain, "permanent", "{what}");
                    let century = jiff::Span::new().years(100);
                    // Locked as of its PUT, the time waited rounded up: up to 1 s past `after`.
                    assert!(
                        (plus(before, century)..=plus(after, century) + 1).contains(&lock),
                        "{what}: a permanent record is locked 100 years ahead: {lock} not in {}..={}",
                        plus(before, century),
                        plus(after, century) + 1
                    );
                }
                Retain::PastAt(t) => {
                    assert_eq!(log_retain, t, "{what}");
                    assert!(
                        // 2 s ahead, plus the server's clock lead (local: 0 or 1 s).
                        (before + 2..=after + 4).contains(&lock),
                        "{what}: retention already over, locked seconds ahead"
                    );
                }
            }
            seen += 1;
        }
        assert_eq!(seen, expected.len());
        let report = self.mailvault(&["verify"]);
        assert!(report.contains("PRESENT_OK"), "{report}"); // and exit 0, checked above
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn from_the_cli_every_matcher_kind_lands_in_the_log_and_the_object_lock() {
    let env = TestEnv::load();
    let user = env.new_mail_user("rules");
    let bucket = unique_name("rules");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let dir: PathBuf = std::env::temp_dir().join(unique_name("mv-rules"));
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
    let key_pub = run(&[
        "keygen",
        "--name",
        "mailvault.io/test/rules",
        "--out",
        &path("key"),
    ]);
    std::fs::write(path("key.pub"), key_pub).unwrap();
    std::fs::write(path("policy.yaml"), POLICY).unwrap();
    let expected = seed_mailbox(&env, &user);

    let before = now();
    let out = run(&[
        "archive",
        "--from",
        &format!(
            "imap://{}@{}:{}",
            user.name,
            env.imap_host(),
            env.imaps_port()
        ),
        "--imap-tls",
        "required",
        "--imap-ca",
        &env.ca_path().display().to_string(),
        "--to",
        &format!("s3://{bucket}/rules"),
        "--key",
        &path("key"),
        "--policy",
        &path("policy.yaml"),
    ]);
    let after = now();
    assert!(
        out.contains(&format!("archived {} new records", expected.len())),
        "{out}"
    );
    assert!(out.contains("1 archived with unparseable headers"), "{out}");
    Archived {
        env: &env,
        bucket: &bucket,
        prefix: "rules".into(),
        public_key: dir.join("key.pub"),
        before,
        after,
    }
    .check(&expected)
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The same mailbox and policy through the operator: the records land exactly as from the CLI.
#[tokio::test(flavor = "multi_thread")]
async fn from_the_operator_the_same_records_land_identically() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use mailvault::crd::{MailboxArchive, RetentionPolicy};
    use serde_json::json;

    let env = TestEnv::load();
    let admin = env.kube_admin().await;
    mailvault_tests::apply_crds(&admin).await;
    let ns = mailvault_tests::new_namespace(&admin, "rules").await;
    let dir: PathBuf = std::env::temp_dir().join(unique_name("mv-op-rules"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig =
        mailvault_tests::operator::install_chart_rbac(&env, &admin, &ns, &unique_name("mv"), &dir)
            .await;
    let user = env.new_mail_user("op-rules");
    let bucket = unique_name("op-rules");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let ca = std::fs::read(env.ca_path()).unwrap();
    let access = env.var("VERSITYGW_ACCESS_KEY").as_bytes().to_vec();
    let secret_key = env.var("VERSITYGW_SECRET_KEY").as_bytes().to_vec();
    for (name, data) in [
        (
            "imap",
            vec![("password", user.password.as_bytes().to_vec())],
        ),
        ("imap-ca", vec![("ca.crt", ca)]),
        (
            "s3",
            vec![
                ("AWS_ACCESS_KEY_ID", access),
                ("AWS_SECRET_ACCESS_KEY", secret_key),
            ],
        ),
    ] {
        use base64::Engine as _;
        // Each Secret opts in for the archive that uses it (docs/guide-platform.md).
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
    // The very document the CLI test reads with --policy.
    let mut policy: RetentionPolicy = serde_norway::from_str(POLICY).unwrap();
    policy.metadata.namespace = Some(ns.clone());
    let policies: Api<RetentionPolicy> = Api::namespaced(admin.clone(), &ns);
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let expected = seed_mailbox(&env, &user);

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
            "schedule": "0 0 1 1 *",
            "retentionPolicyRef": {"name": "rules-e2e"}
        }
    }))
    .unwrap();
    let archives: Api<MailboxArchive> = Api::namespaced(admin.clone(), &ns);
    let before = now();
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

    // The first run starts at once; wait for it to have archived everything.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        let a = archives.get("clerk").await.unwrap();
        let status = a.status.clone().unwrap_or_default();
        let records = status.totals.as_ref().map_or(0, |t| t.records);
        if records == expected.len() as u64 && status.public_key.is_some() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not archived in time: {status:#?}\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let after = now();
    drop(operator);
    let public_key = dir.join("clerk.pub");
    std::fs::write(&public_key, format!("{}\n", status.public_key.unwrap())).unwrap();
    Archived {
        env: &env,
        bucket: &bucket,
        prefix: format!("{ns}/clerk"),
        public_key,
        before,
        after,
    }
    .check(&expected)
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
