//! `mailvault verify --since TRUSTED_CHECKPOINT` against versitygw: an audit that reads every
//! record logged since the auditor's saved checkpoint and a random sample of the older ones,
//! and says how much the sample proves; the full audit still reads everything.
//!
//! Tampering is done on versitygw's posix backend (the logged version's file rewritten in
//! place), as someone with access to the server's disks could: Object Lock does not stop that,
//! only the hashes do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mailvault::core::checkpoint::CheckpointSigner;
use mailvault::core::layout::record_key;
use mailvault::core::note::NoteSigner;
use mailvault::core::verify::{DEFAULT_BAD_FRACTION, DEFAULT_CONFIDENCE, sample_size_for};
use mailvault_tests::{S3Flavour, TestEnv, unique_name};
use std::path::{Path, PathBuf};
use std::process::Output;

const ORIGIN: &str = "mailvault.io/test/since";
const OLDER: usize = 30;
const NEWER: usize = 5;

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn mbox(messages: std::ops::Range<usize>) -> Vec<u8> {
    let mut m = Vec::new();
    for i in messages {
        m.extend_from_slice(
            format!(
                "From officer{i}@police.city.example Mon Nov  2 09:00:00 2026\n\
                 From: Officer {i} <officer{i}@police.city.example>\nTo: records@city.example\n\
                 Subject: Report {i}\nDate: Mon, 2 Nov 2026 09:00:00 -0600\n\
                 Message-ID: <since-{i}@police.city.example>\n\nShift report number {i}.\n\n"
            )
            .as_bytes(),
        );
    }
    m
}

struct Case {
    env: TestEnv,
    dir: PathBuf,
    bucket: String,
    store: String,
    key: String,
    public: String,
}

impl Case {
    async fn new() -> Self {
        let env = TestEnv::load();
        let bucket = unique_name("since");
        env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
        let dir = std::env::temp_dir().join(unique_name("mailvault-since"));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key").display().to_string();
        let keygen = env
            .mailvault_s3(
                S3Flavour::Versitygw,
                &["keygen", "--name", ORIGIN, "--out", &key],
            )
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{}", text(&keygen));
        let public = dir.join("key.pub").display().to_string();
        std::fs::write(&public, &keygen.stdout).unwrap();
        let store = format!("s3://{bucket}/p");
        Self {
            env,
            dir,
            bucket,
            store,
            key,
            public,
        }
    }

    fn archive(&self, messages: std::ops::Range<usize>) {
        let file = self.dir.join("mail.mbox");
        std::fs::write(&file, mbox(messages)).unwrap();
        let from = format!("mbox:{}", file.display());
        let run = self
            .env
            .mailvault_s3(
                S3Flavour::Versitygw,
                &[
                    "archive",
                    "--from",
                    &from,
                    "--to",
                    &self.store,
                    "--key",
                    &self.key,
                    "--series",
                    "MO-GS-003",
                    "--retain",
                    "P1D",
                ],
            )
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", text(&run));
    }

    /// `verify ... --json` with `extra` flags: (exit status, report).
    fn verify(&self, extra: &[&str]) -> (i32, serde_json::Value) {
        let mut args = vec![
            "verify",
            &self.store,
            "--public-key",
            &self.public,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = self
            .env
            .mailvault_s3(S3Flavour::Versitygw, &args)
            .output()
            .unwrap();
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("report is not JSON ({e}): {}", text(&out)));
        (out.status.code().unwrap(), report)
    }

    /// The newest checkpoint, saved as an auditor saves it (docs/guide-auditor.md).
    async fn save_checkpoint(&self, size: u64, name: &str) -> String {
        let object = self
            .env
            .s3_client(S3Flavour::Versitygw)
            .get_object()
            .bucket(&self.bucket)
            .key(format!("p/checkpoints/{size}"))
            .send()
            .await
            .unwrap();
        let bytes = object.body.collect().await.unwrap().into_bytes();
        let path = self.dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        path.display().to_string()
    }

    /// The file versitygw keeps the current version of a record in.
    fn record_file(&self, id: &str) -> PathBuf {
        Path::new(self.env.var("MAILVAULT_ENV_DIR"))
            .join("versitygw/data")
            .join(&self.bucket)
            .join("p")
            .join(record_key(id))
    }

    /// Flips the first byte of a record's stored bytes in place; returns the original byte.
    fn flip(&self, id: &str) -> u8 {
        use std::io::{Read as _, Seek as _, Write as _};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.record_file(id))
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact(&mut b).unwrap();
        f.rewind().unwrap();
        f.write_all(&[b[0] ^ 0xff]).unwrap();
        b[0]
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Record ids in log order (the order `mailvault ls` prints, ingest order).
fn ids_in_log_order(case: &Case) -> Vec<String> {
    let out = case
        .env
        .mailvault_s3(
            S3Flavour::Versitygw,
            &["ls", &case.store, "--public-key", &case.public],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn status_of<'a>(report: &'a serde_json::Value, id: &str) -> &'a str {
    report["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["record"] == id)
        .and_then(|r| r["status"].as_str())
        .unwrap_or_else(|| panic!("no verdict for {id}: {report:#}"))
}

fn faults(report: &serde_json::Value) -> Vec<String> {
    report["log_faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn since_checks_every_newer_record_and_states_what_its_sample_proves() {
    let case = Case::new().await;
    case.archive(0..OLDER);
    let (status, first) = case.verify(&[]);
    assert_eq!(status, 0, "{first:#}");
    let size = first["checkpoint"][0].as_u64().unwrap();
    let trusted = case.save_checkpoint(size, "last-audit.checkpoint").await;
    case.archive(0..OLDER + NEWER);
    let ids = ids_in_log_order(&case);
    assert_eq!(ids.len(), OLDER + NEWER);
    let (older, newer) = ids.split_at(OLDER);

    // A clean archive: the newer records and the default sample are read, the rest listed.
    let (status, report) = case.verify(&["--since", &trusted]);
    assert_eq!(status, 0, "{report:#}");
    let since = &report["since"];
    let default_n = sample_size_for(OLDER as u64, DEFAULT_BAD_FRACTION, DEFAULT_CONFIDENCE);
    assert_eq!(since["trusted_size"], size);
    assert_eq!(since["records_since"], NEWER as u64);
    assert_eq!(since["older_records"], OLDER as u64);
    assert_eq!(since["older_sampled"], default_n);
    assert!(since["catch_probability"].as_f64().unwrap() >= DEFAULT_CONFIDENCE);
    assert_eq!(report["counts"]["PRESENT_OK"], NEWER as u64 + default_n);
    assert_eq!(
        report["counts"]["LISTED_ONLY"],
        (OLDER as u64 - default_n),
        "{report:#}"
    );
    for id in newer {
        assert_eq!(status_of(&report, id), "PRESENT_OK");
    }
    // The text report says the same in words.
    let out = case
        .env
        .mailvault_s3(
            S3Flavour::Versitygw,
            &[
                "verify",
                &case.store,
                "--public-key",
                &case.public,
                "--since",
                &trusted,
            ],
        )
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        words.contains(&format!(
            "and {default_n} of {OLDER} older records chosen at random: if at least 1% of the older records were bad"
        )),
        "{words}"
    );

    // A tampered newer record is found by --since whatever the sample, even an empty one.
    let byte = case.flip(&newer[2]);
    let (status, report) = case.verify(&["--since", &trusted, "--sample", "0"]);
    assert_eq!(status, 1, "{report:#}");
    assert_eq!(status_of(&report, &newer[2]), "TAMPERED");
    assert_eq!(report["since"]["older_sampled"], 0);
    assert_eq!(report["since"]["catch_probability"], 0.0);
    case.flip(&newer[2]);
    let _ = byte;

    // A tampered older record: the full audit finds it, always.
    case.flip(&older[7]);
    let (status, report) = case.verify(&[]);
    assert_eq!(status, 1, "{report:#}");
    assert_eq!(status_of(&report, &older[7]), "TAMPERED");
    assert!(report["since"].is_null());
    // --since with a sample of one states that it proves little, and its verdict agrees with
    // whether the tampered record was in its sample; over several seeds both happen.
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..12u8 {
        let seed = format!("{seed:02x}").repeat(32);
        let (status, report) =
            case.verify(&["--since", &trusted, "--sample", "1", "--sample-seed", &seed]);
        let p = report["since"]["catch_probability"].as_f64().unwrap();
        assert!((p - 1.0 / OLDER as f64).abs() < 1e-9, "{report:#}");
        assert_eq!(report["since"]["sample_seed"], seed);
        let tampered_status = status_of(&report, &older[7]);
        match tampered_status {
            "TAMPERED" => assert_eq!(status, 1, "{report:#}"),
            "LISTED_ONLY" => assert_eq!(status, 0, "{report:#}"),
            other => panic!("{other}: {report:#}"),
        }
        // The same seed draws the same sample.
        let (again, _) =
            case.verify(&["--since", &trusted, "--sample", "1", "--sample-seed", &seed]);
        assert_eq!(again, status);
        outcomes.insert(tampered_status.to_owned());
    }
    // A sample as large as the older records finds it, always.
    let all = OLDER.to_string();
    let (status, report) = case.verify(&["--since", &trusted, "--sample", &all]);
    assert_eq!(status, 1, "{report:#}");
    assert_eq!(status_of(&report, &older[7]), "TAMPERED");
    assert!(
        outcomes.contains("LISTED_ONLY"),
        "with 12 seeds a 1-in-30 sample should miss at least once: {outcomes:?}"
    );
    case.flip(&older[7]);
}

#[tokio::test]
async fn since_refuses_a_forged_checkpoint_and_a_log_that_does_not_extend_it() {
    let case = Case::new().await;
    case.archive(0..8);
    let (status, first) = case.verify(&[]);
    assert_eq!(status, 0, "{first:#}");
    let size = first["checkpoint"][0].as_u64().unwrap();

    // Signed by another key under the same name: it does not open with the pinned key.
    let stranger = NoteSigner::new(ORIGIN, &[9; 32]).unwrap();
    let forged = CheckpointSigner::new(ORIGIN, stranger, None)
        .sign(size, mailvault::core::Hash::of(b"another history"), &[])
        .unwrap();
    let forged_path = case.dir.join("forged.checkpoint");
    std::fs::write(&forged_path, forged).unwrap();
    let (status, report) = case.verify(&["--since", forged_path.to_str().unwrap()]);
    assert_eq!(status, 1, "{report:#}");
    assert!(
        faults(&report).contains(&"TRUSTED_CHECKPOINT_INCONSISTENT".to_owned()),
        "{report:#}"
    );
    // Nothing was left out on its word: every record was read.
    assert!(report["since"].is_null(), "{report:#}");
    assert_eq!(report["counts"]["PRESENT_OK"], 8);

    // Signed by the archive's own key, for a history that is not this log (what an auditor
    // holds after the key's holder rewrote the log): refused the same way.
    let signer = mailvault::signing_key::read_signer_key(Path::new(&case.key)).unwrap();
    let other = CheckpointSigner::new(ORIGIN, signer, None)
        .sign(size, mailvault::core::Hash::of(b"another history"), &[])
        .unwrap();
    let other_path = case.dir.join("other.checkpoint");
    std::fs::write(&other_path, other).unwrap();
    let (status, report) = case.verify(&["--since", other_path.to_str().unwrap()]);
    assert_eq!(status, 1, "{report:#}");
    assert!(
        faults(&report).contains(&"TRUSTED_CHECKPOINT_INCONSISTENT".to_owned()),
        "{report:#}"
    );
    assert!(report["since"].is_null(), "{report:#}");
    assert_eq!(report["counts"]["PRESENT_OK"], 8);
}
