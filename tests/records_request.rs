//! A records request end to end: a Dovecot mailbox of 500 messages (two folders, three senders,
//! nine months of dates, two kinds of subject) archived over IMAPS into versitygw; `mailvault
//! export` by a query selects exactly the messages the query describes (checked by Message-ID
//! against the seeded mailbox), `mailvault verify-export` checks the export offline with the
//! public keys alone, and refuses an altered message and an altered manifest. A header index
//! edited behind mailvault's back can neither add a record to an export nor hide one from it:
//! it no longer hashes to what the record's log entry commits to, so the record is read
//! instead, and the edit is reported; `--verify-search` reads every record. Destruction
//! deletes the destroyed records' index objects; a locked version planted under one holds that
//! record (named, not certified) until the lock ends. A message too large to index and a
//! tombstone forged into the log's unsigned tail hide nothing either (the second test).

use mailvault::store::Store as _;
use mailvault::store::s3::S3Store;
use mailvault_tests::{S3Flavour, TestEnv, mailvault_binary, unique_name};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `Budget` messages are kept seconds and destroyed; everything else is permanent.
const POLICY: &str = r#"
apiVersion: mailvault.io/v1alpha1
kind: RetentionPolicy
metadata:
  name: records-request
spec:
  rules:
    - name: budget
      recordSeries: "T 2-01 Budget drafts"
      match: { subjectRegex: "^Budget" }
      retain: PT5S
      disposition: Destroy
  defaultRule:
    recordSeries: "T 2-02 Case correspondence"
    retain: Permanent
    disposition: Permanent
"#;

const MESSAGES: u32 = 500;

/// One seeded message: where it went and what it says.
struct Seeded {
    message_id: String,
    folder: &'static str,
    from: &'static str,
    subject: String,
    /// Days after 2026-01-01.
    day: u32,
}

fn seeded(i: u32) -> Seeded {
    Seeded {
        message_id: format!("<rr-{i}@city.example>"),
        folder: if i.is_multiple_of(5) { "Sent" } else { "INBOX" },
        from: match i % 3 {
            0 => "chief@police.city.example",
            1 => "dispatch@police.city.example",
            _ => "clerk@city.example",
        },
        subject: if i.is_multiple_of(7) {
            format!("Budget draft {i}")
        } else {
            format!("Re: case {i}")
        },
        day: i / 2,
    }
}

fn rfc5322_date(day: u32) -> String {
    // 2026-01-01 was a Thursday; the weekday is not checked by anyone, so leave it out.
    let t = 1_767_225_600 + u64::from(day) * 86_400 + 10 * 3600;
    let days = t / 86_400;
    let (y, m, d) = mailvault::core::time::civil_from_days(i64::try_from(days).unwrap());
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!("{d:02} {} {y} 10:00:00 +0000", MONTHS[m as usize - 1])
}

/// The query of the request, as the test states it: police senders, `case` subjects, INBOX,
/// February to August 2026.
const QUERY: &[&str] = &[
    "--from",
    "@police.city.example",
    "--subject",
    "(?i)case",
    "--folder",
    "INBOX",
    "--since",
    "2026-02-01",
    "--until",
    "2026-08-31",
];

fn matches_query(s: &Seeded) -> bool {
    // 2026-02-01 is day 31, 2026-08-31 is day 242.
    s.from.ends_with("@police.city.example")
        && s.subject.to_lowercase().contains("case")
        && s.folder == "INBOX"
        && (31..=242).contains(&s.day)
}

/// The Message-IDs of the `.eml` files of an export.
fn exported_ids(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("messages"))
        .unwrap()
        .map(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect()
}

/// The record id of an exported message, by Message-ID.
fn record_of(dir: &Path, message_id: &str) -> Option<String> {
    std::fs::read_dir(dir.join("messages"))
        .unwrap()
        .find_map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            String::from_utf8_lossy(&bytes)
                .contains(&format!("Message-ID: {message_id}"))
                .then(|| path.file_stem().unwrap().to_string_lossy().into_owned())
        })
}

struct Request {
    env: TestEnv,
    dir: PathBuf,
    bucket: String,
    flavour: S3Flavour,
}

impl Request {
    /// A fresh bucket (Object Lock) on versitygw and directory with the policy and the two key
    /// pairs.
    async fn new(env: &TestEnv, name: &str) -> Self {
        Self::on(env, name, S3Flavour::Versitygw).await
    }

    /// [`Self::new`] on another S3 server.
    async fn on(env: &TestEnv, name: &str, flavour: S3Flavour) -> Self {
        let bucket = unique_name(name);
        env.create_bucket(flavour, &bucket, true).await;
        let r = Request {
            env: env.clone(),
            dir: std::env::temp_dir().join(unique_name(&format!("mv-{name}"))),
            bucket,
            flavour,
        };
        std::fs::create_dir_all(&r.dir).unwrap();
        std::fs::write(r.dir.join("policy.yaml"), POLICY).unwrap();
        for (name, key) in [
            ("mailvault.io/test/records-request", "archive"),
            ("records.city.example/export", "export"),
        ] {
            let out = r.mailvault(&[
                "keygen",
                "--name",
                name,
                "--out",
                &r.path(&format!("{key}.key")),
            ]);
            assert!(out.status.success(), "{}", text(&out));
            std::fs::write(r.dir.join(format!("{key}.pub")), &out.stdout).unwrap();
        }
        r
    }

    /// Writes `mail/<name>.eml`, a message the request's query matches (From the chief,
    /// subject "Re: case <name>", dated in range, in INBOX) addressed `To: <to>`.
    fn write_matching_eml(&self, name: &str, to: &str) {
        let mail = self.dir.join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        std::fs::write(
            mail.join(format!("{name}.eml")),
            format!(
                "From: chief@police.city.example\r\nTo: {to}\r\nSubject: Re: case {name}\r\nDate: {date}\r\nMessage-ID: <{name}@city.example>\r\n\r\nbody\r\n",
                date = rfc5322_date(60),
            ),
        )
        .unwrap();
    }

    /// Two runs, so two checkpoints: `older`, then `newer` (two messages the query matches);
    /// the log is then bundle 0's partial of two entries.
    fn archive_older_then_newer(&self) {
        for name in ["older", "newer"] {
            self.write_matching_eml(name, "records@city.example");
            self.archive_eml();
        }
    }

    /// `mailvault archive` of `mail/` (the .eml files written so far) into the request's store.
    fn archive_eml(&self) {
        let out = self.try_archive_eml();
        assert!(out.status.success(), "{}", text(&out));
    }

    /// [`Self::archive_eml`], whatever its outcome.
    fn try_archive_eml(&self) -> Output {
        self.mailvault(&[
            "archive",
            "--from",
            &format!("eml:{}", self.dir.join("mail").display()),
            "--to",
            &self.location(),
            "--key",
            &self.path("archive.key"),
            "--policy",
            &self.path("policy.yaml"),
        ])
    }

    /// Puts `bytes` as a new version of `key` in the request's archive, as someone with the
    /// bucket's write credentials and no key can (no lock, no metadata).
    async fn plant(&self, s3: &aws_sdk_s3::Client, key: &str, bytes: Vec<u8>) {
        s3.put_object()
            .bucket(&self.bucket)
            .key(format!("rr/{key}"))
            .body(bytes.into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("planting {key}: {e}"));
    }

    /// `mailvault ls` of the request's store with the archive's public key.
    fn ls(&self) -> Output {
        self.mailvault(&[
            "ls",
            &self.location(),
            "--public-key",
            &self.path("archive.pub"),
        ])
    }

    /// [`Self::ls`], which succeeds and lists `records` records (after its header line).
    fn assert_lists(&self, records: usize) -> Output {
        let ls = self.ls();
        assert!(ls.status.success(), "{}", text(&ls));
        assert_eq!(
            String::from_utf8_lossy(&ls.stdout).lines().count(),
            1 + records,
            "{}",
            text(&ls)
        );
        ls
    }

    /// `mailvault verify` of the request's store with the archive's public key.
    fn verify(&self) -> Output {
        self.mailvault(&[
            "verify",
            &self.location(),
            "--public-key",
            &self.path("archive.pub"),
        ])
    }

    /// [`Self::verify`], which fails (exit 1) saying `words`, and not by a log that no longer
    /// matches its checkpoints: the planted object is the finding, nothing genuine is blamed.
    fn assert_verify_names_only_the_planted(&self, words: &str) {
        let verify = self.verify();
        let report = text(&verify);
        assert_eq!(verify.status.code(), Some(1), "{report}");
        assert!(report.contains(words), "{words}: {report}");
        for not in [
            "FORKED_CHECKPOINT",
            "BROKEN_CHAIN",
            "UNCHECKPOINTED_ENTRIES",
        ] {
            assert!(!report.contains(not), "{not}: {report}");
        }
    }

    /// The entries of the archive's signed bundle 0, a partial of `width` entries.
    async fn signed_entries(&self, width: u64) -> Vec<Vec<u8>> {
        use mailvault::core::bundle::{MAX_BUNDLE_LEN, decode_bundle};
        let bytes = self
            .store()
            .get(
                &mailvault::core::layout::bundle_key(0, width),
                None,
                MAX_BUNDLE_LEN,
            )
            .await
            .unwrap()
            .expect("the signed bundle")
            .bytes;
        decode_bundle(&bytes)
            .unwrap()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn location(&self) -> String {
        format!("s3://{}/rr", self.bucket)
    }

    fn mailvault(&self, args: &[&str]) -> Output {
        self.env.mailvault_s3(self.flavour, args).output().unwrap()
    }

    /// `mailvault export` of the request's query into `out`, plus `extra` flags.
    fn export(&self, out: &str, extra: &[&str]) -> Output {
        let location = self.location();
        let public = self.path("archive.pub");
        let key = self.path("export.key");
        let out = self.path(out);
        let mut args = vec![
            "export",
            location.as_str(),
            "--public-key",
            public.as_str(),
            "--out",
            out.as_str(),
            "--signing-key",
            key.as_str(),
        ];
        args.extend_from_slice(QUERY);
        args.extend_from_slice(extra);
        self.mailvault(&args)
    }

    /// [`Self::export`] where something in the store is odd: it exits 1, prints every line of
    /// `warnings`, and still exports exactly the messages `expected`.
    fn export_warned(&self, out: &str, warnings: &[String], expected: &BTreeSet<String>) {
        let output = self.export(out, &[]);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        for line in warnings {
            assert!(stdout.contains(line.as_str()), "{line}: {}", text(&output));
        }
        assert_eq!(&exported_ids(&self.dir.join(out)), expected);
    }

    /// `mailvault verify-export`, as the requester runs it: no store, no credentials, only the
    /// export directory and two public keys.
    fn verify_export(&self, out: &str) -> Output {
        std::process::Command::new(mailvault_binary())
            .args([
                "verify-export",
                &self.path(out),
                "--public-key",
                &self.path("archive.pub"),
                "--export-key",
                &self.path("export.pub"),
            ])
            .env_clear()
            .output()
            .unwrap()
    }

    fn store(&self) -> S3Store {
        self.env.s3_store(self.flavour, &self.bucket, "rr")
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_records_request_exports_exactly_the_matching_mail_and_verifies_offline() {
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let user = env.new_mail_user("rr");
    let r = Request::new(&env, "rr").await;
    let mut expected = BTreeSet::new();
    for i in 0..MESSAGES {
        let s = seeded(i);
        let message = format!(
            "From: {from}\r\nTo: records@city.example\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: {id}\r\n\r\nmessage {i}\r\n",
            from = s.from,
            subject = s.subject,
            date = rfc5322_date(s.day),
            id = s.message_id,
        );
        env.seed_message(&user, s.folder, message.as_bytes(), "S");
        if matches_query(&s) {
            expected.insert(s.message_id.clone());
        }
    }
    assert!(
        (150..=300).contains(&expected.len()),
        "{} expected",
        expected.len()
    );

    let archive = env
        .mailvault_s3(
            S3Flavour::Versitygw,
            &[
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
                &r.location(),
                "--key",
                &r.path("archive.key"),
                "--policy",
                &r.path("policy.yaml"),
            ],
        )
        .env("MAILVAULT_IMAP_PASSWORD", &user.password)
        .output()
        .unwrap();
    assert!(archive.status.success(), "{}", text(&archive));
    let store = r.store();
    let indexed = store.list_keys("index/").await.unwrap();
    assert_eq!(
        indexed.len(),
        MESSAGES as usize,
        "one header index per record"
    );

    // The archive's own key is refused as an export key.
    let location = r.location();
    let public = r.path("archive.pub");
    let archive_key = r.path("archive.key");
    let wrong_key = r.path("wrong-key");
    let mut args = vec![
        "export",
        location.as_str(),
        "--public-key",
        public.as_str(),
        "--out",
        wrong_key.as_str(),
        "--signing-key",
        archive_key.as_str(),
    ];
    args.extend_from_slice(QUERY);
    let refused = r.mailvault(&args);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("separate export key"),
        "{}",
        text(&refused)
    );

    // The export: exactly the expected messages, each judged by its index.
    let out = r.export("request-1", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "searched {MESSAGES} records ({MESSAGES} by header index, 0 read in full)"
        )),
        "{stdout}"
    );
    assert_eq!(exported_ids(&r.dir.join("request-1")), expected);

    // Offline, with the public keys alone.
    let verified = r.verify_export("request-1");
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains(&format!(
            "VERIFIED: {} messages of mailvault.io/test/records-request",
            expected.len()
        )),
        "{}",
        text(&verified)
    );
    // Each message's proof also verifies on its own with verify-proof.
    let some = record_of(&r.dir.join("request-1"), expected.first().unwrap()).unwrap();
    let proof = std::process::Command::new(mailvault_binary())
        .args([
            "verify-proof",
            &r.path(&format!("request-1/proofs/{some}.json")),
            "--public-key",
            &r.path("archive.pub"),
        ])
        .output()
        .unwrap();
    assert!(proof.status.success(), "{}", text(&proof));

    // An altered message is refused.
    let copy = |from: &str, to: &str| {
        let status = std::process::Command::new("cp")
            .args(["-r", &r.path(from), &r.path(to)])
            .status()
            .unwrap();
        assert!(status.success());
    };
    copy("request-1", "altered-message");
    let eml = r.dir.join(format!("altered-message/messages/{some}.eml"));
    let altered = String::from_utf8(std::fs::read(&eml).unwrap())
        .unwrap()
        .replace("message ", "massage ");
    std::fs::write(&eml, altered).unwrap();
    let refused = r.verify_export("altered-message");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains(&format!(
            "record {some}: the message file is not the one the manifest lists"
        )),
        "{}",
        text(&refused)
    );
    // An altered manifest (a message dropped from the list, the file removed) is refused.
    copy("request-1", "altered-manifest");
    let manifest_path = r.dir.join("altered-manifest/manifest");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let n = expected.len();
    let edited: String = manifest
        .lines()
        .filter(|l| !l.contains(&some))
        .map(|l| {
            if l == format!("records {n}") {
                format!("records {}\n", n - 1)
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&manifest_path, edited).unwrap();
    std::fs::remove_file(r.dir.join(format!("altered-manifest/messages/{some}.eml"))).unwrap();
    std::fs::remove_file(r.dir.join(format!("altered-manifest/proofs/{some}.json"))).unwrap();
    let refused = r.verify_export("altered-manifest");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("manifest signature"),
        "{}",
        text(&refused)
    );

    // Indexes edited behind mailvault's back (by someone with the bucket's write credentials
    // and no key): one that claims a non-matching record matches, one that hides a matching
    // record. Neither hashes to its entry's `header-index`: both records are read in full and
    // judged on their own headers, both edits are reported, and the export is the same.
    let outsider = (0..MESSAGES)
        .map(seeded)
        .find(|s| !matches_query(s) && !s.subject.starts_with("Budget"))
        .unwrap();
    let hidden = expected.iter().nth(1).unwrap().clone();
    let hidden_record = record_of(&r.dir.join("request-1"), &hidden).unwrap();
    // A third, replaced by an object far larger than any index (it is not read whole).
    let swamped = expected.iter().nth(2).unwrap().clone();
    let swamped_record = record_of(&r.dir.join("request-1"), &swamped).unwrap();
    let mut outsider_record = None;
    for key in &indexed {
        let object = store.get(key, None, u64::MAX).await.unwrap().unwrap();
        let mut index: serde_json::Value = serde_json::from_slice(&object.bytes).unwrap();
        // The outsider: found by reading its record's Message-ID is costly; its index says
        // its subject and folder, which together identify it.
        if index["subject"] == outsider.subject && index["folder"] == outsider.folder {
            index["from"] = serde_json::json!(["chief@police.city.example"]);
            index["subject"] = serde_json::json!("Re: case");
            index["folder"] = serde_json::json!("INBOX");
            index["date"] = serde_json::json!(1_775_000_000);
            store
                .put_mutable(
                    key,
                    serde_json::to_vec(&index).unwrap(),
                    &Default::default(),
                )
                .await
                .unwrap();
            outsider_record = Some(key.trim_start_matches("index/").to_owned());
        }
        if key.ends_with(&hidden_record) {
            index["from"] = serde_json::json!(["nobody@elsewhere.example"]);
            store
                .put_mutable(
                    key,
                    serde_json::to_vec(&index).unwrap(),
                    &Default::default(),
                )
                .await
                .unwrap();
        }
        if key.ends_with(&swamped_record) {
            let mut huge = serde_json::to_vec(&index).unwrap();
            huge.resize(8 << 20, b' ');
            store
                .put_mutable(key, huge, &Default::default())
                .await
                .unwrap();
        }
    }
    let outsider_record = outsider_record.expect("the outsider's index");
    let out = r.export("request-2", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for edited in [&outsider_record, &hidden_record, &swamped_record] {
        assert!(
            stdout.contains(&format!(
                "warning: record {edited}: its header index is not the one its log entry commits to"
            )),
            "{}",
            text(&out)
        );
    }
    assert!(
        stdout.contains(&format!(
            "searched {MESSAGES} records ({} by header index, 3 read in full)",
            MESSAGES - 3
        )),
        "{}",
        text(&out)
    );
    assert!(
        !stdout.contains("its header index matched but"),
        "{}",
        text(&out)
    );
    assert_eq!(exported_ids(&r.dir.join("request-2")), expected);
    let verified = r.verify_export("request-2");
    assert!(verified.status.success(), "{}", text(&verified));
    let out = r.export("request-3", &["--verify-search"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "searched {MESSAGES} records (0 by header index, {MESSAGES} read in full)"
        )),
        "{}",
        text(&out)
    );
    assert_eq!(exported_ids(&r.dir.join("request-3")), expected);
    let verified = r.verify_export("request-3");
    assert!(verified.status.success(), "{}", text(&verified));

    // Someone with the bucket's write credentials (and no key) puts a COMPLIANCE-locked
    // version under the header index of a record due for destruction. A locked index may hold
    // the record's headers, so that record is not certified destroyed while the lock lasts:
    // it is named as refused and the other records are destroyed; once the lock ends, the next
    // run deletes the index and logs the tombstone.
    let mut planted = None;
    for key in store.list_keys("index/").await.unwrap() {
        let index = store.get(&key, None, u64::MAX).await.unwrap().unwrap();
        if String::from_utf8_lossy(&index.bytes).contains("Budget draft") {
            planted = Some(key.trim_start_matches("index/").to_owned());
            break;
        }
    }
    let planted = planted.expect("a header index of a Budget record");
    env.s3_client(S3Flavour::Versitygw)
        .put_object()
        .bucket(&r.bucket)
        .key(format!("rr/index/{planted}"))
        .body(b"{\"planted\":true}".to_vec().into())
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
        .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from(
            std::time::SystemTime::now() + Duration::from_secs(20),
        ))
        .send()
        .await
        .expect("a locked version planted under the index");

    // Destruction deletes the destroyed records' index objects with them.
    let budget = (0..MESSAGES).filter(|i| i % 7 == 0).count();
    let kept = MESSAGES as usize - budget;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut held_named = false;
    loop {
        let out = r.mailvault(&[
            "destroy",
            &r.location(),
            "--key",
            &r.path("archive.key"),
            "--policy",
            &r.path("policy.yaml"),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let names_planted = stdout.contains(&format!(
            "record {planted}: its header index is under Object Lock, which mailvault never sets"
        ));
        held_named |= names_planted;
        assert!(
            out.status.success() || (out.status.code() == Some(1) && names_planted),
            "{}",
            text(&out)
        );
        let left = store.list_keys("records/").await.unwrap().len();
        if left == kept && out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} records left: {}",
            text(&out)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let ids = |keys: Vec<String>, prefix: &str| -> BTreeSet<String> {
        keys.into_iter()
            .map(|k| k.trim_start_matches(prefix).to_owned())
            .collect()
    };
    let records = ids(store.list_keys("records/").await.unwrap(), "records/");
    let index_versions = ids(
        store
            .list_version_ids("index/")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _, _)| k)
            .collect(),
        "index/",
    );
    assert_eq!(records.len(), kept);
    assert!(
        held_named,
        "no destruction run named the record held by the version locked under its index"
    );
    assert!(
        !records.contains(&planted),
        "the record {planted} was not destroyed"
    );
    assert_eq!(
        index_versions, records,
        "an index object for every kept record, no version left for a destroyed one"
    );
    let verify = r.verify();
    assert!(verify.status.success(), "{}", text(&verify));

    // A search after destruction: the destroyed records are counted as such, not mistaken for
    // records whose index went missing, and the export is the same (the indexes edited above
    // are still reported).
    let out = r.export("after-destruction", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{budget} records were destroyed under the schedule"
        )) && !stdout.contains("had none in the store"),
        "{}",
        text(&out)
    );
    assert_eq!(exported_ids(&r.dir.join("after-destruction")), expected);
}

/// Two more ways a matching record could drop out of a search, neither silent. A message with a
/// thousand long addresses has a header index too large for a search to read: the writer
/// stores none and its entry commits to having none, so the record is read in full, without a
/// warning (an empty object planted as its index is reported). A `destroyed` entry forged after
/// the newest signed checkpoint (the hash chain needs no key) does not take a matching record
/// out of the export: the record is still in the store, so the tombstone is not a destruction
/// run's; the export names it and exits 1, and `verify` fails on the unsigned entry.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_too_large_to_index_and_a_forged_tail_tombstone_hide_nothing() {
    use mailvault::core::entry::EntryBody;
    use mailvault::store::Store as _;
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let r = Request::new(&env, "rr-tail").await;
    let crowd: Vec<String> = (0..1000)
        .map(|i| format!("{}{i}@city.example", "x".repeat(550)))
        .collect();
    r.write_matching_eml("plain", "records@city.example");
    r.write_matching_eml("crowded", &crowd.join(",\r\n "));
    r.archive_eml();
    let store = r.store();
    assert_eq!(
        store.list_keys("index/").await.unwrap().len(),
        1,
        "the crowded message has no index"
    );
    let out = r.export("first", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("searched 2 records (1 by header index, 1 read in full); 2 match")
            && !stdout.contains("had none in the store")
            && !stdout.contains("warning:"),
        "{}",
        text(&out)
    );
    let both: BTreeSet<String> = ["<plain@city.example>", "<crowded@city.example>"]
        .map(String::from)
        .into();
    assert_eq!(exported_ids(&r.dir.join("first")), both);

    // The forged tombstone: the newest partial bundle, one `destroyed` entry longer.
    let plain = record_of(&r.dir.join("first"), "<plain@city.example>").unwrap();
    let newest = store
        .list_keys("log/tile/entries/")
        .await
        .unwrap()
        .into_iter()
        .max_by_key(|k| k.rsplit('/').next().and_then(|w| w.parse::<u32>().ok()))
        .unwrap();
    let bundle = store.get(&newest, None, u64::MAX).await.unwrap().unwrap();
    let mut log = mailvault::core::log::RecordLog::resume([bundle.bytes.as_slice()]).unwrap();
    let _ = log.take_bundles();
    log.append(
        mailvault::core::UnixTime(1_800_000_000),
        mailvault::core::entry::RecordId::new(plain.clone()).unwrap(),
        EntryBody::Destroyed {
            object_key: format!("records/{plain}"),
            object_versions: vec!["forged".into()],
        },
    )
    .unwrap();
    let forged = log.take_bundles().pop().unwrap();
    store
        .put_mutable(&forged.key, forged.bytes, &Default::default())
        .await
        .unwrap();
    // And an empty object where the crowded record has no index.
    let crowded = record_of(&r.dir.join("first"), "<crowded@city.example>").unwrap();
    store
        .put_mutable(&format!("index/{crowded}"), Vec::new(), &Default::default())
        .await
        .unwrap();
    let out = r.export("second", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "warning: record {plain}: it matches and is still in the store, but a tombstone logged after the newest signed checkpoint"
        )) && stdout.contains(&format!(
            "warning: record {crowded}: its header index is not the one its log entry commits to"
        )),
        "{}",
        text(&out)
    );
    assert_eq!(exported_ids(&r.dir.join("second")), both);
    // `ls` shows the log as it reads (the record destroyed) but says no signature vouches for
    // the last entry.
    let ls = r.ls();
    assert!(ls.status.success(), "{}", text(&ls));
    assert!(
        String::from_utf8_lossy(&ls.stderr).contains(
            "warning: 1 entries after the newest signed checkpoint (size 2) are not vouched for by a signature yet"
        ),
        "{}",
        text(&ls)
    );
    let verify = r.verify();
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
}

/// Delete markers (which Object Lock allows on locked objects) put over the newest checkpoint
/// and the bundle it signs roll a search back to the checkpoint before: the export is made
/// against it and cannot include what was logged since, but it names every hidden log object
/// and exits 1, and `verify` fails.
#[tokio::test(flavor = "multi_thread")]
async fn delete_markers_and_second_versions_on_log_objects_roll_nothing_back() {
    use mailvault::store::Store as _;
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let r = Request::new(&env, "rr-markers").await;
    // Two runs, so two checkpoints: the newer one signs the second message.
    r.archive_older_then_newer();
    let store = r.store();
    let newest_key = |keys: Vec<String>| {
        keys.into_iter()
            .max_by_key(|k| {
                k.rsplit('/')
                    .next()
                    .and_then(|w| w.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .unwrap()
    };
    let newest_checkpoint = newest_key(store.list_keys("checkpoints/").await.unwrap());
    let newest_bundle = newest_key(store.list_keys("log/tile/entries/").await.unwrap());
    // Someone with write access and no key hides the newest checkpoint and its bundle behind
    // delete markers (Object Lock allows that): a reader going by current keys would see the
    // log as it was after the first run.
    let s3 = env.s3_client(S3Flavour::Versitygw);
    for key in [&newest_checkpoint, &newest_bundle] {
        s3.delete_object()
            .bucket(&r.bucket)
            .key(format!("rr/{key}"))
            .send()
            .await
            .unwrap();
    }
    let both: BTreeSet<String> = ["<older@city.example>", "<newer@city.example>"]
        .map(str::to_owned)
        .into();
    // The export reads the versions beneath: both messages, and the markers named.
    let hidden = [&newest_checkpoint, &newest_bundle].map(|key| {
        format!(
            "warning: {key} is hidden behind a delete marker (mailvault never deletes a log object); the version beneath it was read"
        )
    });
    r.export_warned("beneath", &hidden, &both);
    let checked = r.verify_export("beneath");
    assert!(checked.status.success(), "{}", text(&checked));
    // `ls` lists both records and names the markers on standard error.
    let ls = r.assert_lists(2);
    assert!(
        String::from_utf8_lossy(&ls.stderr).contains(&format!(
            "{newest_checkpoint} is hidden behind a delete marker"
        )),
        "{}",
        text(&ls)
    );
    // The writer is not rewound either: a third run logs only the new message (a writer going
    // by current keys would log `newer` again on a fork of the log).
    r.write_matching_eml("third", "records@city.example");
    r.archive_eml();
    r.assert_lists(3);
    // Two versions planted over the bundle the log is now read from: the reader keeps the one
    // that follows the log.
    let current_bundle = newest_key(store.list_keys("log/tile/entries/").await.unwrap());
    for body in [b"not a bundle".to_vec(), vec![0u8; 64]] {
        r.plant(&s3, &current_bundle, body).await;
    }
    let all: BTreeSet<String> = [
        "<older@city.example>",
        "<newer@city.example>",
        "<third@city.example>",
    ]
    .map(str::to_owned)
    .into();
    r.export_warned(
        "rewritten",
        &[format!(
            "warning: {current_bundle} has 3 versions (mailvault writes a log object once)"
        )],
        &all,
    );
    // Objects planted under locks (they cannot be removed, and a delete marker no longer hides
    // anything): a checkpoint far above the log that no key signs, and a bundle far past its
    // end. Neither stops a reader; both are named.
    let far_checkpoint = "checkpoints/99999999".to_owned();
    let far_bundle = mailvault::core::layout::bundle_key(999, 256);
    for key in [&far_checkpoint, &far_bundle] {
        s3.put_object()
            .bucket(&r.bucket)
            .key(format!("rr/{key}"))
            .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
            .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                i64::try_from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs(),
                )
                .unwrap()
                    + 3600,
            ))
            .body(b"planted".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    r.export_warned(
        "planted",
        &[
            format!("warning: {far_checkpoint} is not a checkpoint of this archive"),
            format!("warning: {far_bundle} lies after a gap in the log's bundles"),
        ],
        &all,
    );
    // The writer goes on too, reporting them.
    r.write_matching_eml("fourth", "records@city.example");
    r.archive_eml();
    // And `verify` reports the markers and the planted versions.
    let verify = r.verify();
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
}

/// Someone with write access and no key puts versions over the newest bundle that chain: copies
/// with the last entry's time moved, so indices and `prev` hold and only the checkpoint's root
/// tells them apart. Object Lock allows that. Every reader takes the version mailvault wrote (the
/// first written, which nobody can put a version beneath), on a server whose version ids sort
/// by time (versitygw) as on one whose ids are random (moto, like AWS).
async fn versions_that_chain_over_a_bundle_do_not_displace_the_writers(flavour: S3Flavour) {
    use mailvault::core::bundle::{MAX_BUNDLE_LEN, decode_bundle, encode_bundle};
    use mailvault::core::entry::Entry;
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let r = Request::on(&env, "rr-chained", flavour).await;
    r.archive_older_then_newer();
    let store = r.store();
    // The newest bundle object: the widest partial of bundle 0 (two entries).
    let bundle = mailvault::core::layout::bundle_key(0, 2);
    let genuine = store
        .get(&bundle, None, MAX_BUNDLE_LEN)
        .await
        .unwrap()
        .expect("the log's newest bundle")
        .bytes;
    let entries = decode_bundle(&genuine).unwrap();
    assert_eq!(entries.len(), 2);
    let s3 = env.s3_client(flavour);
    for moved in 1..=3 {
        let mut last = Entry::decode(entries[1]).unwrap();
        last.logged_at.0 += moved;
        let forged = encode_bundle([entries[0], last.encode().as_slice()]);
        r.plant(&s3, &bundle, forged).await;
    }
    let both: BTreeSet<String> = ["<older@city.example>", "<newer@city.example>"]
        .map(str::to_owned)
        .into();
    // The export reads mailvault's version: both messages, the planted versions named.
    r.export_warned(
        "chained",
        &[format!(
            "warning: {bundle} has 4 versions (mailvault writes a log object once)"
        )],
        &both,
    );
    let checked = r.verify_export("chained");
    assert!(checked.status.success(), "{}", text(&checked));
    // `ls` and the writer read it too: a third run logs the new message on top.
    let ls = r.ls();
    assert!(ls.status.success(), "{}", text(&ls));
    r.write_matching_eml("third", "records@city.example");
    r.archive_eml();
    r.assert_lists(3);
    // The auditor's verify replays the same version: the planted ones are a finding of their
    // own, not a log that no longer matches its checkpoints.
    let verify = r.verify();
    let report = text(&verify);
    assert_eq!(verify.status.code(), Some(1), "{report}");
    assert!(report.contains("FOREIGN_LOG_VERSION"), "{report}");
    for not in ["FORKED_CHECKPOINT", "BROKEN_CHAIN", "ENTRY_OUT_OF_PLACE"] {
        assert!(!report.contains(not), "{not}: {report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_that_chain_over_a_bundle_on_versitygw_do_not_displace_the_writers() {
    versions_that_chain_over_a_bundle_do_not_displace_the_writers(S3Flavour::Versitygw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_that_chain_over_a_bundle_on_moto_do_not_displace_the_writers() {
    versions_that_chain_over_a_bundle_do_not_displace_the_writers(S3Flavour::Moto).await;
}

/// Someone with write access and no key watches a run and, between two of its checkpoints,
/// plants under the log key the writer writes next a bundle that follows the log as the
/// writer's will (the same first entry, a second one that chains), hidden behind a delete
/// marker. AWS S3 (and moto) then let the writer's conditional PUT through, so the planted
/// version is the key's first written: the one readers read. The writer sees it after its PUT
/// and signs nothing over it; the signed log stays readable, and later runs refuse the tail
/// (its own bundle there is the key's second version: a checkpoint naming the key would make
/// readers read the planted one). The same when the planted bundle changes the signed entry
/// (it chains, but does not extend what is signed: a later run does not take it, and must
/// still refuse its own bundle beneath it).
#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_planted_under_the_next_log_key_is_not_signed_over() {
    a_bundle_planted_under_the_next_log_key(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_planted_under_the_next_log_key_changing_the_signed_entry_is_not_signed_over() {
    a_bundle_planted_under_the_next_log_key(true).await;
}

async fn a_bundle_planted_under_the_next_log_key(changes_signed: bool) {
    use mailvault::core::bundle::{MAX_BUNDLE_LEN, decode_bundle, encode_bundle};
    use mailvault::core::entry::{Entry, EntryBody};
    use mailvault::core::layout::{bundle_key, checkpoint_key};
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let name = if changes_signed {
        "rr-under-changed"
    } else {
        "rr-under"
    };
    let r = Request::on(&env, name, S3Flavour::Moto).await;
    r.write_matching_eml("older", "records@city.example");
    r.archive_eml();
    let store = r.store();
    // The writer opens the log (one entry, signed) and logs a second entry, not yet written.
    let mut writer = mailvault_tests::open_writer(&store, &r.dir.join("archive.key")).await;
    let written = store
        .get(&bundle_key(0, 1), None, MAX_BUNDLE_LEN)
        .await
        .unwrap()
        .expect("the first bundle")
        .bytes;
    let first = decode_bundle(&written).unwrap()[0].to_vec();
    let logged = Entry::decode(&first).unwrap();
    writer
        .append(
            logged.record.clone(),
            EntryBody::HoldPlaced {
                hold: "records/request-1".into(),
            },
            mailvault::unix_now(),
        )
        .await
        .unwrap();
    // Meanwhile the planted bundle: the first entry (or a copy of it with its time moved),
    // then one that chains from it.
    let planted_first = if changes_signed {
        let mut changed = logged.clone();
        changed.logged_at.0 += 1;
        changed.encode()
    } else {
        first.clone()
    };
    let mut second = logged.clone();
    second.index = 1;
    second.prev = mailvault::core::Hash::of(&planted_first);
    let planted = encode_bundle([planted_first.as_slice(), second.encode().as_slice()]);
    let next = bundle_key(0, 2);
    let s3 = env.s3_client(S3Flavour::Moto);
    r.plant(&s3, &next, planted).await;
    s3.delete_object()
        .bucket(&r.bucket)
        .key(format!("rr/{next}"))
        .send()
        .await
        .unwrap();
    let refused = writer.checkpoint().await.unwrap_err().to_string();
    assert!(
        refused.contains(&format!(
            "{next} holds a version older than the one this writer wrote"
        )),
        "{refused}"
    );
    drop(writer);
    // Nothing signed over it: the newest checkpoint is still the first run's.
    let checkpoints = store.list_keys("checkpoints/").await.unwrap();
    assert_eq!(checkpoints, vec![checkpoint_key(1)], "{checkpoints:?}");
    // What was signed is still exported; a later run refuses the unsigned tail it finds.
    let out = r.export("signed", &[]);
    assert!(
        exported_ids(&r.dir.join("signed")).contains("<older@city.example>"),
        "{}",
        text(&out)
    );
    r.write_matching_eml("newer", "records@city.example");
    let again = r.try_archive_eml();
    assert!(!again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains(&format!(
            "{next} holds a version older than the one this writer wrote, which readers would \
             read instead"
        )),
        "{}",
        text(&again)
    );
    assert_eq!(
        store.list_keys("checkpoints/").await.unwrap(),
        vec![checkpoint_key(1)]
    );
}

/// Someone with write access and no key plants more versions under the full bundle key of the
/// log's last index than a reader tries of one key (garbage: none follows the log). Readers
/// budget their reads per key (and read only the first version of a key past what a
/// checkpoint signs, as this one is), so the partial mailvault wrote is still read: export,
/// `ls` and the writer go on, naming the planted versions; `verify` reports them.
#[tokio::test(flavor = "multi_thread")]
async fn versions_planted_under_the_full_bundle_key_do_not_hide_the_partial_mailvault_wrote() {
    use mailvault::core::layout::bundle_key;
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let r = Request::new(&env, "rr-budget").await;
    r.archive_older_then_newer();
    // The log is the partial bundle 0 of two entries; its full key was never written.
    let full = bundle_key(0, 256);
    let planted = 17;
    let s3 = env.s3_client(S3Flavour::Versitygw);
    for n in 0..planted {
        r.plant(&s3, &full, format!("planted {n}").into_bytes())
            .await;
    }
    let both: BTreeSet<String> = ["<older@city.example>", "<newer@city.example>"]
        .map(str::to_owned)
        .into();
    r.export_warned(
        "budget",
        &[
            format!("warning: {full} has {planted} versions (mailvault writes a log object once)"),
            format!(
                "of {full} was not read (past what a checkpoint signs, a reader reads only the \
                 first version of a log object)"
            ),
        ],
        &both,
    );
    let checked = r.verify_export("budget");
    assert!(checked.status.success(), "{}", text(&checked));
    r.assert_lists(2);
    // The writer reads the same log and goes on from it.
    r.write_matching_eml("third", "records@city.example");
    r.archive_eml();
    r.assert_lists(3);
    let verify = r.verify();
    let report = text(&verify);
    assert_eq!(verify.status.code(), Some(1), "{report}");
    assert!(report.contains("FOREIGN_LOG_VERSION"), "{report}");
}

/// `entries` and one more that chains on from the last (a copy of it, moved to the next
/// index), bundled: what someone without the key can make of a signed bundle.
fn extended_by_one(entries: &[Vec<u8>]) -> Vec<u8> {
    use mailvault::core::entry::Entry;
    let last = entries.last().expect("an entry");
    let mut next = Entry::decode(last).unwrap();
    next.index += 1;
    next.prev = mailvault::core::Hash::of(last);
    let next = next.encode();
    mailvault::core::bundle::encode_bundle(
        entries.iter().map(Vec::as_slice).chain([next.as_slice()]),
    )
}

/// Plants `n` versions under `key` and hides them behind a delete marker, as someone with write
/// access and no key can before mailvault writes the key: AWS S3 (and moto) then let the
/// writer's conditional PUT through, and its version comes after them.
async fn plant_beneath_a_marker(r: &Request, s3: &aws_sdk_s3::Client, key: &str, n: usize) {
    for i in 0..n {
        r.plant(s3, key, format!("planted {i}").into_bytes()).await;
    }
    s3.delete_object()
        .bucket(&r.bucket)
        .key(format!("rr/{key}"))
        .send()
        .await
        .unwrap();
}

/// Versions planted before the writer writes a log key (garbage, hidden behind a delete
/// marker), as many as readers try of one key: the writer's own version would never be read.
/// Under the next bundle key the writer signs nothing; under the next checkpoint key it says
/// so and fails the run (the checkpoint is written by then, and readers use the one before it).
#[tokio::test(flavor = "multi_thread")]
async fn versions_planted_before_a_log_key_is_written_that_put_the_writers_out_of_reach_stop_it() {
    use mailvault::core::bundle::MAX_BUNDLE_LEN;
    use mailvault::core::entry::{Entry, EntryBody};
    use mailvault::core::layout::{bundle_key, checkpoint_key};
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let s3 = env.s3_client(S3Flavour::Moto);
    for target in ["bundle", "checkpoint"] {
        let r = Request::on(&env, &format!("rr-reach-{target}"), S3Flavour::Moto).await;
        r.write_matching_eml("older", "records@city.example");
        r.archive_eml();
        let store = r.store();
        let mut writer = mailvault_tests::open_writer(&store, &r.dir.join("archive.key")).await;
        let written = store
            .get(&bundle_key(0, 1), None, MAX_BUNDLE_LEN)
            .await
            .unwrap()
            .expect("the first bundle")
            .bytes;
        let first = mailvault::core::bundle::decode_bundle(&written).unwrap()[0].to_vec();
        writer
            .append(
                Entry::decode(&first).unwrap().record,
                EntryBody::HoldPlaced {
                    hold: "records/request-1".into(),
                },
                mailvault::unix_now(),
            )
            .await
            .unwrap();
        let key = if target == "bundle" {
            bundle_key(0, 2)
        } else {
            checkpoint_key(2)
        };
        plant_beneath_a_marker(&r, &s3, &key, 16).await;
        let refused = writer.checkpoint().await.unwrap_err().to_string();
        assert!(
            refused.contains(&format!(
                "{key} holds more versions written before the one this writer wrote than \
                 readers try (16)"
            )),
            "{target}: {refused}"
        );
        drop(writer);
        let checkpoints = store.list_keys("checkpoints/").await.unwrap();
        if target == "bundle" {
            // Nothing signed over it.
            assert_eq!(checkpoints, vec![checkpoint_key(1)], "{checkpoints:?}");
        }
        // What was signed is still exported.
        let out = r.export("signed", &[]);
        assert!(
            exported_ids(&r.dir.join("signed")).contains("<older@city.example>"),
            "{target}: {}",
            text(&out)
        );
        if target == "checkpoint" {
            // The writer, like readers, does not go by the checkpoint out of reach: the next
            // run with new mail signs a newer one, and readers read everything again.
            r.write_matching_eml("newer", "records@city.example");
            let next = r.try_archive_eml();
            assert!(next.status.success(), "{}", text(&next));
            assert!(
                text(&next).contains(&format!("{key} (version")),
                "the versions past reach are reported: {}",
                text(&next)
            );
            r.assert_lists(2);
        }
    }
}

/// Someone with write access and no key plants, under a wider partial key of the log's last
/// index, a bundle that chains but changes an entry the newest checkpoint vouches for. Readers
/// read the index from the key the checkpoint's size names first, and a wider object only if it
/// extends that one byte for byte: the planted one is named, not read (before, it was read and
/// failed the checkpoint: every reader stopped, "the log in the store is damaged").
#[tokio::test(flavor = "multi_thread")]
async fn a_chaining_bundle_planted_under_a_wider_key_does_not_stop_readers() {
    use mailvault::core::entry::Entry;
    use mailvault::core::layout::bundle_key;
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let r = Request::new(&env, "rr-wider").await;
    r.archive_older_then_newer();
    // Signed: bundle 0's partial of two entries. Planted: three entries that chain, the second
    // one changed (its time moved), the third following it.
    let mut entries = r.signed_entries(2).await;
    let mut changed = Entry::decode(&entries[1]).unwrap();
    changed.logged_at.0 += 1;
    entries[1] = changed.encode();
    let planted = extended_by_one(&entries);
    let wider = bundle_key(0, 3);
    r.plant(&env.s3_client(S3Flavour::Versitygw), &wider, planted)
        .await;
    let both: BTreeSet<String> = ["<older@city.example>", "<newer@city.example>"]
        .map(str::to_owned)
        .into();
    r.export_warned(
        "wider",
        &[format!(
            "of {wider} was not read (it chains but does not extend the entries a checkpoint \
             vouches for byte for byte)"
        )],
        &both,
    );
    let checked = r.verify_export("wider");
    assert!(checked.status.success(), "{}", text(&checked));
    let ls = r.assert_lists(2);
    assert!(
        String::from_utf8_lossy(&ls.stderr).contains(&wider),
        "{}",
        text(&ls)
    );
    // The auditor's verify chooses the same bytes: the planted object is the finding, not the
    // genuine partial or the checkpoint that signs it (before, it replayed the widest partial
    // and reported the checkpoint as forked).
    r.assert_verify_names_only_the_planted(
        "bundle 0: the 3-entry object does not extend the 2-entry partial the newest checkpoint \
         (size 2) names byte for byte",
    );
}

/// Past what a checkpoint signs, readers read only the first version of each bundle key: the
/// unsigned tail is no evidence, mailvault writes each key once, and 16 versions of each of an
/// index's wider keys would let planted objects cost every reader about 4,000 reads. Planted
/// under a wider partial key of the last index: junk first, then a copy that extends the signed
/// entries and chains (what someone without the key can make). The second is named, not read.
#[tokio::test(flavor = "multi_thread")]
async fn past_the_signed_log_readers_read_only_the_first_version_of_a_key() {
    use mailvault::core::layout::bundle_key;
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let r = Request::new(&env, "rr-tail-budget").await;
    r.archive_older_then_newer();
    let extension = extended_by_one(&r.signed_entries(2).await);
    let wider = bundle_key(0, 3);
    let s3 = env.s3_client(S3Flavour::Versitygw);
    r.plant(&s3, &wider, b"not a bundle".to_vec()).await;
    r.plant(&s3, &wider, extension).await;
    let ls = r.assert_lists(2);
    let stderr = String::from_utf8_lossy(&ls.stderr);
    assert!(
        stderr.contains(&wider)
            && stderr.contains(
                "past what a checkpoint signs, a reader reads only the first version of a log \
                 object"
            ),
        "{}",
        text(&ls)
    );
    let both: BTreeSet<String> = ["<older@city.example>", "<newer@city.example>"]
        .map(str::to_owned)
        .into();
    r.export_warned(
        "tail",
        &["reads only the first version of a log object".to_owned()],
        &both,
    );
}

/// Junk under the full key of the log's last index makes the listing go on past it, and an
/// object under the next index's first partial key would then be read as if the log went on:
/// every reader and the writer stopped ("the log in the store is damaged"). Readers now stop
/// after the partial they read; the next index is named, not read. An object larger than a
/// bundle of its key's width is not read by readers or `verify` (which stopped with an I/O
/// error on one over 4 MiB instead of giving a verdict).
#[tokio::test(flavor = "multi_thread")]
async fn objects_planted_past_a_partial_and_oversized_ones_stop_no_reader() {
    use mailvault::core::bundle::max_bundle_len;
    use mailvault::core::layout::bundle_key;
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let r = Request::new(&env, "rr-past-partial").await;
    r.archive_older_then_newer();
    let s3 = env.s3_client(S3Flavour::Versitygw);
    let (full, next, oversized) = (bundle_key(0, 256), bundle_key(1, 1), bundle_key(0, 5));
    r.plant(&s3, &full, b"not a bundle".to_vec()).await;
    r.plant(&s3, &next, b"not a bundle either".to_vec()).await;
    let limit = max_bundle_len(5);
    let too_large = usize::try_from(limit).unwrap() + 1;
    r.plant(&s3, &oversized, vec![b'x'; too_large]).await;
    let ls = r.assert_lists(2);
    let stderr = String::from_utf8_lossy(&ls.stderr);
    assert!(
        stderr.contains(&format!(
            "{next} lies after a gap in the log's bundles or after a partial bundle"
        )),
        "{}",
        text(&ls)
    );
    let both: BTreeSet<String> = ["<older@city.example>", "<newer@city.example>"]
        .map(str::to_owned)
        .into();
    r.export_warned("past", std::slice::from_ref(&next), &both);
    // The writer reads the same log and goes on from it.
    r.write_matching_eml("third", "records@city.example");
    r.archive_eml();
    r.assert_lists(3);
    r.assert_verify_names_only_the_planted(&format!(
        "{oversized}: not read (larger than {limit} bytes, which no object of its kind is)"
    ));
}

/// A log that ends on a bundle boundary (a full bundle, signed), and junk planted under a
/// partial key of the next index, which no checkpoint vouches for: it does not follow, and
/// readers stopped on it ("the log in the store is damaged") for as long as it stayed. Now the
/// log is read up to it, the object named; the writer goes on past it.
#[tokio::test(flavor = "multi_thread")]
async fn junk_after_a_log_that_ends_on_a_full_bundle_stops_no_reader() {
    use mailvault::core::bundle::{MAX_BUNDLE_LEN, decode_bundle};
    use mailvault::core::entry::{Entry, EntryBody};
    use mailvault::core::layout::bundle_key;
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let r = Request::new(&env, "rr-boundary").await;
    r.write_matching_eml("older", "records@city.example");
    r.archive_eml();
    let store = r.store();
    let first = store
        .get(&bundle_key(0, 1), None, MAX_BUNDLE_LEN)
        .await
        .unwrap()
        .expect("the first bundle")
        .bytes;
    let record = Entry::decode(decode_bundle(&first).unwrap()[0])
        .unwrap()
        .record;
    // 255 more entries: the log is the full bundle 0, signed.
    let mut writer = mailvault_tests::open_writer(&store, &r.dir.join("archive.key")).await;
    for n in 0..255 {
        let hold = format!("records/request-{n}");
        writer
            .append(
                record.clone(),
                EntryBody::HoldPlaced { hold },
                mailvault::unix_now(),
            )
            .await
            .unwrap();
    }
    assert_eq!(writer.checkpoint().await.unwrap(), Some(256));
    drop(writer);
    let planted = bundle_key(1, 5);
    let s3 = env.s3_client(S3Flavour::Versitygw);
    r.plant(&s3, &planted, b"not a bundle".to_vec()).await;
    // Past it, more indices: named, not read (thousands would cost every reader a read each).
    let further = [bundle_key(2, 1), bundle_key(3, 256)];
    for key in &further {
        r.plant(&s3, key, b"not a bundle either".to_vec()).await;
    }
    let ls = r.assert_lists(1);
    let stderr = String::from_utf8_lossy(&ls.stderr);
    assert!(
        stderr.contains(&format!("{planted} does not follow the log")),
        "{}",
        text(&ls)
    );
    for key in &further {
        assert!(
            stderr.contains(&format!(
                "{key} lies after a gap in the log's bundles or after a partial bundle"
            )),
            "{key}: {}",
            text(&ls)
        );
    }
    // The writer reads the same log and goes on (under the next index's first partial key).
    r.write_matching_eml("newer", "records@city.example");
    r.archive_eml();
    r.assert_lists(2);
    let both: BTreeSet<String> = ["<older@city.example>", "<newer@city.example>"]
        .map(str::to_owned)
        .into();
    r.export_warned("boundary", std::slice::from_ref(&planted), &both);
}

/// A checkpoint object the store will not give (an archived storage class answers GET with 403
/// `InvalidObjectState`; a customer-provided key with 400), planted above the newest one: one
/// such object stopped every reader and the writer, and `verify` with an I/O error (exit 2).
/// Now it is skipped and named, and `verify` gives its verdict on it. The refusal comes from a
/// proxy in front of versitygw (which has no archived storage class).
#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_the_store_refuses_for_good_stops_no_reader() {
    use mailvault::core::layout::checkpoint_key;
    use mailvault_tests::fault_proxy::{FaultProxy, HttpFault};
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let r = Request::new(&env, "rr-refused").await;
    r.archive_older_then_newer();
    let planted = checkpoint_key(1000);
    r.plant(
        &env.s3_client(S3Flavour::Versitygw),
        &planted,
        b"archived away".to_vec(),
    )
    .await;
    let refused = format!("/rr/{planted}");
    let proxy = FaultProxy::http(env.s3_endpoint(S3Flavour::Versitygw), move |request| {
        (request.method == "GET" && request.path().contains(&refused)).then_some(
            HttpFault::Refuse {
                status: 403,
                code: "InvalidObjectState",
                message: "The operation is not valid for the object's storage class",
            },
        )
    })
    .await;
    let through_proxy = |args: &[&str]| {
        std::process::Command::new(mailvault_binary())
            .args(args)
            .args(["--s3-endpoint", &proxy.url(), "--s3-path-style"])
            .args(["--s3-region", env.var("S3_REGION")])
            .env("AWS_ACCESS_KEY_ID", env.var("VERSITYGW_ACCESS_KEY"))
            .env("AWS_SECRET_ACCESS_KEY", env.var("VERSITYGW_SECRET_KEY"))
            .env_remove("AWS_REGION")
            .output()
            .unwrap()
    };
    let (location, public) = (r.location(), r.path("archive.pub"));
    let ls = through_proxy(&["ls", &location, "--public-key", &public]);
    assert!(ls.status.success(), "{}", text(&ls));
    assert_eq!(String::from_utf8_lossy(&ls.stdout).lines().count(), 3);
    assert!(
        String::from_utf8_lossy(&ls.stderr).contains(&planted),
        "{}",
        text(&ls)
    );
    let verify = through_proxy(&["verify", &location, "--public-key", &public]);
    let report = text(&verify);
    assert_eq!(verify.status.code(), Some(1), "{report}");
    assert!(
        report.contains("MALFORMED_CHECKPOINT")
            && report.contains(&format!("{planted}: not read (the store refuses it"))
            && report.contains("InvalidObjectState"),
        "{report}"
    );
    // The writer reads the same checkpoints and goes on.
    r.write_matching_eml("third", "records@city.example");
    let mail = format!("eml:{}", r.dir.join("mail").display());
    let (key, policy) = (r.path("archive.key"), r.path("policy.yaml"));
    let archive = through_proxy(&[
        "archive", "--from", &mail, "--to", &location, "--key", &key, "--policy", &policy,
    ]);
    assert!(archive.status.success(), "{}", text(&archive));
    assert!(text(&archive).contains(&planted), "{}", text(&archive));
    r.assert_lists(3);
    assert!(proxy.injected() >= 3, "{}", proxy.injected());
}

/// Planted under a wider partial key of the log's last signed index: a copy that extends the
/// signed entries byte for byte and chains on (what someone without the key can make). Readers
/// take it as the unsigned tail; the writer, which signs only what it wrote, refused every run
/// after it ("… holds log entries after the newest signed checkpoint … that this writer did
/// not write"). Now the writer takes past what is signed only objects with its own MAC: it
/// names the planted one, goes on from the signed log and signs the new records.
#[tokio::test(flavor = "multi_thread")]
async fn a_chaining_extension_planted_past_the_signed_log_does_not_stop_the_writer() {
    use mailvault::core::layout::bundle_key;
    mailvault_tests::install_crypto_provider();
    let env = TestEnv::load();
    let r = Request::new(&env, "rr-extension").await;
    r.archive_older_then_newer();
    let extension = extended_by_one(&r.signed_entries(2).await);
    let wider = bundle_key(0, 3);
    r.plant(&env.s3_client(S3Flavour::Versitygw), &wider, extension)
        .await;
    // Two new messages: the writer's next bundle is the 4-entry partial, not the planted key.
    r.write_matching_eml("third", "records@city.example");
    r.write_matching_eml("fourth", "records@city.example");
    let out = r.try_archive_eml();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{wider} (version")),
        "the planted object is named: {}",
        text(&out)
    );
    r.assert_lists(4);
    r.assert_verify_names_only_the_planted(
        "the 3-entry partial is not a prefix of the 4-entry partial",
    );
}
