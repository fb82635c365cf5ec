//! Trained zstd dictionaries end to end, against Dovecot and versitygw: a few hundred short
//! messages train one; it is stored locked and logged; records compressed with it export byte
//! for byte, prove offline and verify; and someone with write access to the bucket but no
//! signing key cannot swap, hide or replace it without `verify` saying so.

use mailvault::core::Hash;
use mailvault::core::bundle::decode_bundle;
use mailvault::core::entry::{Entry, EntryBody};
use mailvault::core::verify::LogListing;
use mailvault_tests::{MailUser, S3Flavour, TestEnv, unique_name};
use std::path::PathBuf;
use std::process::{Command, Output};

/// Messages seeded: above the 256 small messages a run samples before training.
const MESSAGES: usize = 400;
const ROOT: &str = "police/chief";

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A short, department-like message (headers, a line, a signature), different each time.
fn short_message(i: usize) -> Vec<u8> {
    let clerks = ["ada", "ben", "cleo", "dev", "eve", "finn", "gus"];
    let from = clerks[i % clerks.len()];
    format!(
        "Return-Path: <{from}@city.example>\r\nReceived: from mx1.city.example (mx1.city.example \
         [192.0.2.{h}]) by imap.city.example with ESMTPS id {i:08x}; Tue, 1 Dec 2026 09:{m:02}:{s:02} \
         +0000\r\nFrom: {from} <{from}@city.example>\r\nTo: records@city.example\r\nSubject: \
         Permit application {i} - status\r\nDate: Tue, 1 Dec 2026 09:{m:02}:{s:02} +0000\r\n\
         Message-ID: <{i}.{from}@city.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; \
         charset=utf-8\r\n\r\nHello,\r\n\r\nPermit application {i} was reviewed on {d} December and \
         is {state}.\r\n\r\nRegards,\r\n{from}\r\nCity Planning Department\r\n",
        h = i % 250,
        m = i % 60,
        s = (i * 7) % 60,
        d = 1 + i % 28,
        state = ["approved", "pending", "returned for changes"][i % 3],
    )
    .into_bytes()
}

struct Case {
    env: TestEnv,
    user: MailUser,
    bucket: String,
    dir: PathBuf,
}

impl Case {
    async fn new(name: &str) -> Self {
        let env = TestEnv::load();
        let user = env.new_mail_user(name);
        let bucket = unique_name(name);
        env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
        let dir = std::env::temp_dir().join(unique_name(&format!("mv-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        let case = Self {
            env,
            user,
            bucket,
            dir,
        };
        let keygen = case.run(&[
            "keygen",
            "--name",
            &format!("mailvault.io/test/{name}"),
            "--out",
            &case.path("key"),
        ]);
        assert!(keygen.status.success(), "{}", text(&keygen));
        std::fs::write(case.dir.join("key.pub"), &keygen.stdout).unwrap();
        case
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn store(&self) -> String {
        format!("s3://{}/{ROOT}", self.bucket)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.env.mailvault_s3(S3Flavour::Versitygw, args);
        c.env("MAILVAULT_IMAP_PASSWORD", &self.user.password);
        c.output().expect("running mailvault")
    }

    fn archive(&self) -> Output {
        let from = format!(
            "imap://{}@{}:{}",
            self.user.name,
            self.env.imap_host(),
            self.env.imaps_port()
        );
        let ca = self.env.ca_path().display().to_string();
        self.run(&[
            "archive",
            "--from",
            &from,
            "--imap-tls",
            "required",
            "--imap-ca",
            &ca,
            "--to",
            &self.store(),
            "--key",
            &self.path("key"),
            "--series",
            "MO-GS-003",
            "--retain",
            "P1D",
        ])
    }

    fn verify_json(&self) -> (Option<i32>, serde_json::Value) {
        let o = self.run(&[
            "verify",
            &self.store(),
            "--public-key",
            &self.path("key.pub"),
            "--json",
        ]);
        let v = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("verify JSON: {e}\n{}", text(&o)));
        (o.status.code(), v)
    }

    fn s3(&self) -> aws_sdk_s3::Client {
        self.env.s3_client(S3Flavour::Versitygw)
    }

    /// Every entry of the log, read from the bucket as an auditor would.
    async fn entries(&self) -> Vec<Entry> {
        let listed = self
            .s3()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{ROOT}/log/tile/entries/"))
            .send()
            .await
            .unwrap();
        let keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().and_then(|k| k.strip_prefix(&format!("{ROOT}/"))))
            .map(str::to_owned)
            .collect();
        // Each bundle: the full object, else its widest partial (docs/log-format.md §6).
        let listing = LogListing::from_keys(keys.iter().map(String::as_str));
        let mut entries = Vec::new();
        for group in listing.bundles.values() {
            let key = group
                .full
                .clone()
                .unwrap_or_else(|| group.partials.last().unwrap().1.clone());
            let bytes = self.get(&format!("{ROOT}/{key}")).await;
            entries.extend(
                decode_bundle(&bytes)
                    .unwrap()
                    .into_iter()
                    .map(|e| Entry::decode(e).unwrap()),
            );
        }
        entries
    }

    async fn get(&self, key: &str) -> Vec<u8> {
        self.s3()
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .to_vec()
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.s3()
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
            .send()
            .await
            .unwrap();
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn problem<'a>(report: &'a serde_json::Value, record: &str) -> Option<&'a serde_json::Value> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["record"] == record)
}

/// The statuses of every problem reported under `record` (a logged object can have two: its
/// own verdict and one for versions the log does not name).
fn statuses(report: &serde_json::Value, record: &str) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["record"] == record)
        .map(|p| p["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn short_mail_trains_a_logged_locked_dictionary_that_exports_proves_and_verifies() {
    let case = Case::new("dict-e2e").await;
    let seeded: Vec<Vec<u8>> = (0..MESSAGES).map(short_message).collect();
    for m in &seeded {
        case.env.seed_message(&case.user, "INBOX", m, "");
    }
    let first = case.archive();
    assert!(first.status.success(), "{}", text(&first));

    // One dictionary entry, content-free, naming dictionaries/<its sha256>; ingests before it
    // name none, ingests after it name it.
    let entries = case.entries().await;
    let dicts: Vec<(usize, Hash, String)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.body {
            EntryBody::Dictionary {
                stored_sha256,
                object_key,
                ..
            } => Some((i, *stored_sha256, object_key.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        dicts.len(),
        1,
        "one dictionary for {MESSAGES} short messages"
    );
    let (at, sha, key) = dicts[0].clone();
    assert_eq!(key, format!("dictionaries/{sha}"));
    let named: Vec<Option<Hash>> = entries
        .iter()
        .filter_map(|e| match &e.body {
            EntryBody::Ingest { dictionary, .. } => Some(*dictionary),
            _ => None,
        })
        .collect();
    assert_eq!(named.len(), MESSAGES);
    let with = named.iter().filter(|d| **d == Some(sha)).count();
    assert!(
        with >= MESSAGES - 256 - 32,
        "only {with} records use the dictionary"
    );
    assert!(
        entries[..at].iter().all(|e| matches!(
            e.body,
            EntryBody::Ingest {
                dictionary: None,
                ..
            }
        )),
        "a record named the dictionary before it was logged"
    );
    let stored = case.get(&format!("{ROOT}/{key}")).await;
    assert_eq!(Hash::of(&stored), sha);
    // Locked like the log: COMPLIANCE, a century ahead.
    let head = case
        .s3()
        .head_object()
        .bucket(&case.bucket)
        .key(format!("{ROOT}/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    let until = head.object_lock_retain_until_date().unwrap().secs();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    assert!(until > now + 99 * 365 * 86_400, "locked only until {until}");

    // verify: the dictionary gets its own verdict, and everything is well.
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    let verdicts = report["records"].as_array().unwrap();
    let dict_verdict = format!("dictionaries/{sha}");
    assert!(
        verdicts
            .iter()
            .any(|v| v["record"] == dict_verdict.as_str() && v["status"] == "PRESENT_OK"),
        "{report:#}"
    );

    // export: byte for byte, records with and without the dictionary alike.
    let mut exported = Vec::new();
    let mut a_dictionary_record = None;
    for e in &entries {
        let EntryBody::Ingest { dictionary, .. } = &e.body else {
            continue;
        };
        if dictionary.is_some() {
            a_dictionary_record.get_or_insert_with(|| e.record.to_string());
        }
        let file = case.path(&format!("{}.eml", e.record));
        let o = case.run(&[
            "export",
            &case.store(),
            "--record",
            e.record.as_str(),
            "--public-key",
            &case.path("key.pub"),
            "--out",
            &file,
        ]);
        assert!(o.status.success(), "{}", text(&o));
        exported.push(std::fs::read(&file).unwrap());
    }
    let mut want = seeded.clone();
    want.sort();
    exported.sort();
    assert!(exported == want, "export is not byte for byte");

    // prove a record compressed with the dictionary; verify-proof with the public key alone.
    let record = a_dictionary_record.unwrap();
    let proof = case.path("proof.json");
    let o = case.run(&[
        "prove",
        &case.store(),
        "--record",
        &record,
        "--public-key",
        &case.path("key.pub"),
        "--out",
        &proof,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let offline = Command::new(mailvault_tests::mailvault_binary())
        .args([
            "verify-proof",
            &proof,
            "--public-key",
            &case.path("key.pub"),
        ])
        .env_clear()
        .output()
        .unwrap();
    assert!(offline.status.success(), "{}", text(&offline));

    // A second run uses the same dictionary (its pointer in state/), and trains no other.
    for i in 0..20 {
        case.env
            .seed_message(&case.user, "INBOX", &short_message(MESSAGES + i), "");
    }
    let second = case.archive();
    assert!(second.status.success(), "{}", text(&second));
    let entries = case.entries().await;
    let dict_entries = entries
        .iter()
        .filter(|e| matches!(e.body, EntryBody::Dictionary { .. }))
        .count();
    assert_eq!(dict_entries, 1, "a second dictionary was trained");
    let tail: Vec<&Entry> = entries.iter().rev().take(20).collect();
    assert!(
        tail.iter().all(|e| matches!(
            e.body,
            EntryBody::Ingest { dictionary: Some(d), .. } if d == sha
        )),
        "the second run's records do not name the dictionary"
    );
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
}

/// Someone with write access to the bucket and no signing key: every way of replacing or
/// hiding the dictionary is caught by `verify`, and the locked, logged version still reads.
#[tokio::test(flavor = "multi_thread")]
async fn a_swapped_hidden_or_forged_dictionary_fails_verification() {
    let case = Case::new("dict-attack").await;
    for i in 0..300 {
        case.env
            .seed_message(&case.user, "INBOX", &short_message(i), "");
    }
    let first = case.archive();
    assert!(first.status.success(), "{}", text(&first));
    let entries = case.entries().await;
    let (sha, record) = {
        let sha = entries
            .iter()
            .find_map(|e| match &e.body {
                EntryBody::Dictionary { stored_sha256, .. } => Some(*stored_sha256),
                _ => None,
            })
            .expect("a dictionary entry");
        let record = entries
            .iter()
            .find(|e| {
                matches!(
                    e.body,
                    EntryBody::Ingest {
                        dictionary: Some(_),
                        ..
                    }
                )
            })
            .unwrap()
            .record
            .to_string();
        (sha, record)
    };
    let key = format!("dictionaries/{sha}");
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");

    // 1. Swap: other bytes PUT over the dictionary's key (a new version; the locked one stays).
    let original = case.get(&format!("{ROOT}/{key}")).await;
    let mut other = original.clone();
    let last = other.len() - 1;
    other[last] ^= 0xff;
    case.put(&format!("{ROOT}/{key}"), other).await;
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(1), "{report:#}");
    // versitygw also reports no lock on the older (logged) version once another is PUT over
    // it: LOCK_WEAKENED beside the UNLOGGED_OBJECT.
    assert!(
        statuses(&report, &key).contains(&"UNLOGGED_OBJECT".to_owned()),
        "{report:#}"
    );
    // The logged version is still what export reads (by version id, hash checked).
    let o = case.run(&[
        "export",
        &case.store(),
        "--record",
        &record,
        "--public-key",
        &case.path("key.pub"),
        "--out",
        &case.path("r.eml"),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // 2. Hide: a delete marker over it.
    case.s3()
        .delete_object()
        .bucket(&case.bucket)
        .key(format!("{ROOT}/{key}"))
        .send()
        .await
        .unwrap();
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(1), "{report:#}");
    let findings: String = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["record"] == key.as_str())
        .map(|p| p["findings"].to_string())
        .collect();
    assert!(findings.contains("HIDDEN"), "{report:#}");

    // 3. Point records at another dictionary: a forged dictionary under its own hash, and a
    //    record version compressed with it. Neither is in the log.
    let forged: Vec<u8> = zstd::dict::from_samples(
        &(1000..1300).map(short_message).collect::<Vec<_>>(),
        16 * 1024,
    )
    .unwrap();
    let forged_key = format!("dictionaries/{}", Hash::of(&forged));
    case.put(&format!("{ROOT}/{forged_key}"), forged.clone())
        .await;
    let mut c = zstd::bulk::Compressor::with_dictionary(3, &forged).unwrap();
    case.put(
        &format!("{ROOT}/records/{record}"),
        c.compress(&short_message(99_999)).unwrap(),
    )
    .await;
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(
        statuses(&report, &forged_key),
        vec!["UNLOGGED_OBJECT".to_owned()],
        "{report:#}"
    );
    assert!(
        statuses(&report, &format!("records/{record}")).contains(&"UNLOGGED_OBJECT".to_owned()),
        "{report:#}"
    );
    // The next run will not compress with a dictionary an attacker points it at.
    case.put(
        &format!("{ROOT}/state/dictionary.json"),
        format!(
            "{{\"origin\":\"mailvault.io/test/dict-attack\",\"sha256\":\"{}\",\"version\":\"x\",\"sample_ratio\":0.1}}",
            Hash::of(&forged)
        )
        .into_bytes(),
    )
    .await;
    case.env
        .seed_message(&case.user, "INBOX", &short_message(5000), "");
    let again = case.archive();
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("state/dictionary.json")
            || String::from_utf8_lossy(&again.stdout).contains("state/dictionary.json"),
        "the forged pointer was not reported: {}",
        text(&again)
    );
    let entries = case.entries().await;
    assert!(
        entries.iter().all(|e| !matches!(
            e.body,
            EntryBody::Ingest { dictionary: Some(d), .. } if d == Hash::of(&forged)
        )),
        "a record was compressed with the attacker's dictionary"
    );
}

/// A `file:` archive (no locks): rewriting the dictionary file in place is TAMPERED, and every
/// record that needs it is UNPROVABLE with the reason named.
#[tokio::test(flavor = "multi_thread")]
async fn a_dictionary_rewritten_in_place_is_tampered_and_its_records_unprovable() {
    let case = Case::new("dict-file").await;
    for i in 0..300 {
        case.env
            .seed_message(&case.user, "INBOX", &short_message(i), "");
    }
    let dir = case.path("archive");
    let store = format!("file:{dir}");
    let from = format!(
        "imap://{}@{}:{}",
        case.user.name,
        case.env.imap_host(),
        case.env.imaps_port()
    );
    let ca = case.env.ca_path().display().to_string();
    let o = case.run(&[
        "archive",
        "--from",
        &from,
        "--imap-tls",
        "required",
        "--imap-ca",
        &ca,
        "--to",
        &store,
        "--key",
        &case.path("key"),
        "--series",
        "MO-GS-003",
        "--retain",
        "P1D",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let dicts: Vec<PathBuf> = std::fs::read_dir(format!("{dir}/objects/dictionaries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dicts.len(), 1);
    let name = dicts[0].file_name().unwrap().to_str().unwrap().to_owned();
    let verify = || {
        let o = case.run(&[
            "verify",
            &store,
            "--public-key",
            &case.path("key.pub"),
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("verify JSON: {e}\n{}", text(&o)));
        (o.status.code(), v)
    };
    assert_eq!(verify().0, Some(0));
    let mut bytes = std::fs::read(&dicts[0]).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    std::fs::write(&dicts[0], bytes).unwrap();
    let (code, report) = verify();
    assert_eq!(code, Some(1), "{report:#}");
    let key = format!("dictionaries/{name}");
    assert_eq!(problem(&report, &key).unwrap()["status"], "TAMPERED");
    let unprovable = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "UNPROVABLE" && p["findings"].to_string().contains(&name))
        .count();
    assert!(unprovable > 0, "{report:#}");
}
