//! Network faults through a real proxy (`tests/support/fault_proxy.rs`) between mailvault and
//! each real server: S3 (versitygw) resets, 500s, `503 SlowDown` and answers lost after the
//! server acted; IMAP (Dovecot) resets mid-FETCH and mid-piece and a server that stalls; the
//! operator with one archive's IMAP server stalled, and with the apiserver restarting under it.
//! Each ends with `verify` passing and as many records as the mailbox has messages: nothing
//! lost, nothing logged twice.

use mailvault::crd::MailboxArchive;
use mailvault_tests::cluster::{Cluster, assert_verifies, condition, ready, records, wait_for};
use mailvault_tests::fault_proxy::{Diverter, FaultProxy, HttpFault, Request, TcpFault, header_of};
use mailvault_tests::operator::OperatorProcess;
use mailvault_tests::{MailUser, S3Flavour, TestEnv, unique_name};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A message of about `len` bytes, different for each `n`.
fn message(n: usize, len: usize) -> Vec<u8> {
    let mut m = format!(
        "From: clerk@city.example\r\nTo: chief@city.example\r\nSubject: minutes {n}\r\nMessage-ID: <{n}.{len}@city.example>\r\n\r\n"
    )
    .into_bytes();
    let mut x = u32::try_from(n).unwrap_or(0).wrapping_add(1);
    while m.len() < len {
        for _ in 0..76 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            m.push(b'A' + u8::try_from((x >> 16) % 26).unwrap_or(0));
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// One mailbox archived with the CLI into a versitygw bucket, IMAP and S3 each reached
/// directly or through a proxy.
struct Case {
    env: TestEnv,
    user: MailUser,
    bucket: String,
    dir: PathBuf,
    /// Every message seeded, by folder.
    seeded: Vec<Vec<u8>>,
}

impl Case {
    async fn new(name: &str) -> Self {
        let env = TestEnv::load();
        let user = env.new_mail_user(name);
        let bucket = unique_name(name);
        env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
        let dir = std::env::temp_dir().join(unique_name(&format!("mv-net-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        let keygen = Command::new(mailvault_tests::mailvault_binary())
            .args(["keygen", "--name", &format!("mailvault.io/test/{name}")])
            .arg("--out")
            .arg(dir.join("key"))
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{}", text(&keygen));
        std::fs::write(dir.join("key.pub"), &keygen.stdout).unwrap();
        Self {
            env,
            user,
            bucket,
            dir,
            seeded: Vec::new(),
        }
    }

    fn seed(&mut self, folder: &str, bytes: Vec<u8>) {
        self.env.seed_message(&self.user, folder, &bytes, "");
        self.seeded.push(bytes);
    }

    fn store(&self) -> String {
        format!("s3://{}/city/clerk", self.bucket)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `mailvault archive` with IMAP at `imap_port` (Dovecot's IMAPS port, or a proxy in front
    /// of it) and S3 at `s3` (versitygw, or a proxy), `extra` flags appended; run on a blocking
    /// thread so proxies on this runtime keep running. A run that has not ended after
    /// `MAX_RUN` is killed and fails the test: a hang is a failure, not a slow test.
    async fn archive(&self, imap_port: u16, s3: &str, extra: &[&str]) -> Output {
        const MAX_RUN: Duration = Duration::from_secs(300);
        let mut command = self.command(
            s3,
            &[
                "archive",
                "--from",
                &format!(
                    "imap://{}@{}:{imap_port}",
                    self.user.name,
                    self.env.imap_host()
                ),
                "--imap-tls",
                "required",
                "--imap-ca",
                &self.env.ca_path().display().to_string(),
                "--to",
                &self.store(),
                "--key",
                &self.path("key"),
                "--series",
                "GS-1-01",
                "--retain",
                "P1D",
                "--spool-dir",
                &self.path("spool"),
            ],
        );
        command
            .args(extra)
            .env("MAILVAULT_IMAP_PASSWORD", &self.user.password)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        tokio::task::spawn_blocking(move || {
            let child = command.spawn().unwrap();
            let pid = child.id();
            let (done, wait) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                if wait.recv_timeout(MAX_RUN).is_err() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            });
            let out = child.wait_with_output().unwrap();
            let _ = done.send(());
            assert!(
                out.status.code().is_some(),
                "mailvault archive hung for {MAX_RUN:?} and was killed: {}",
                text(&out)
            );
            out
        })
        .await
        .unwrap()
    }

    /// `mailvault` with `args`, S3 at `endpoint`, versitygw's credentials in the environment.
    fn command(&self, endpoint: &str, args: &[&str]) -> Command {
        let mut c = Command::new(mailvault_tests::mailvault_binary());
        c.args(args)
            .args(["--s3-endpoint", endpoint, "--s3-path-style"])
            .args(["--s3-region", self.env.var("S3_REGION")])
            .env("AWS_ACCESS_KEY_ID", self.env.var("VERSITYGW_ACCESS_KEY"))
            .env(
                "AWS_SECRET_ACCESS_KEY",
                self.env.var("VERSITYGW_SECRET_KEY"),
            )
            .env_remove("AWS_REGION");
        c
    }

    fn imaps_port(&self) -> u16 {
        self.env.imaps_port()
    }

    fn s3(&self) -> String {
        self.env.s3_endpoint(S3Flavour::Versitygw).to_owned()
    }

    /// `verify` passes (exit 0) and the archive holds exactly the seeded messages, each once:
    /// as many records as messages, every record exported to the bytes of a distinct message.
    fn assert_converged(&self) {
        let run = |args: &[&str]| {
            self.env
                .mailvault_s3(S3Flavour::Versitygw, args)
                .output()
                .unwrap()
        };
        let o = run(&[
            "verify",
            &self.store(),
            "--public-key",
            &self.path("key.pub"),
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "verify: {}", text(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let records = report["records"].as_array().unwrap();
        assert_eq!(records.len(), self.seeded.len(), "{report:#}");
        let mut expected: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for m in &self.seeded {
            *expected.entry(m.clone()).or_default() += 1;
        }
        let mut exported: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for r in records {
            let o = run(&[
                "export",
                &self.store(),
                "--record",
                r["record"].as_str().unwrap(),
                "--public-key",
                &self.path("key.pub"),
            ]);
            assert!(o.status.success(), "{}", text(&o));
            *exported.entry(o.stdout).or_default() += 1;
        }
        assert!(
            exported == expected,
            "exported records differ from the mailbox"
        );
    }

    /// How many versions each record object has in the bucket.
    async fn record_versions(&self) -> BTreeMap<String, usize> {
        let listed = self
            .env
            .s3_client(S3Flavour::Versitygw)
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix("city/clerk/records/")
            .send()
            .await
            .unwrap();
        let mut out = BTreeMap::new();
        for v in listed.versions() {
            *out.entry(v.key().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        out
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `r` writes a record object (a plain PUT, not `?legal-hold` or `?retention`).
fn record_put(r: &Request) -> bool {
    r.method == "PUT" && r.plain() && r.path().contains("/records/")
}

/// S3 breaking mid-run in every way it answers: a record PUT reset half-way through its body, a
/// `500 InternalError`, a `503 SlowDown`, a log bundle PUT reset, a checkpoint PUT whose answer
/// is lost after versitygw stored it. Each is retried; the run succeeds; every record is stored
/// once (one version), logged once, and verifies.
#[tokio::test(flavor = "multi_thread")]
async fn s3_resets_errors_and_slowdowns_mid_run_are_retried_and_nothing_is_lost_or_doubled() {
    let mut case = Case::new("net-s3-faults").await;
    for n in 0..8 {
        case.seed("INBOX", message(n, if n == 3 { 1 << 20 } else { 4000 }));
    }
    let mut records = 0;
    let mut bundles = 0;
    let mut checkpoints = 0;
    let proxy = FaultProxy::http(&case.s3(), move |r| {
        if record_put(r) {
            records += 1;
            return match records {
                2 => Some(HttpFault::ResetMidBody),
                4 => Some(HttpFault::Answer {
                    status: 500,
                    code: "InternalError",
                }),
                6 => Some(HttpFault::Answer {
                    status: 503,
                    code: "SlowDown",
                }),
                _ => None,
            };
        }
        if r.method == "PUT" && r.plain() && r.path().contains("/log/") {
            bundles += 1;
            return (bundles == 1).then_some(HttpFault::ResetMidBody);
        }
        if r.method == "PUT" && r.plain() && r.path().contains("/checkpoints/") {
            checkpoints += 1;
            return (checkpoints == 1).then_some(HttpFault::LoseAnswer);
        }
        None
    })
    .await;
    let out = case.archive(case.imaps_port(), &proxy.url(), &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(proxy.injected(), 5, "every fault landed");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("archived 8 new records"),
        "{}",
        text(&out)
    );
    drop(proxy);
    case.assert_converged();
    let versions = case.record_versions().await;
    assert_eq!(versions.len(), 8);
    assert!(versions.values().all(|&v| v == 1), "{versions:?}");
}

/// S3 a round trip away (40 ms through a delaying proxy, as a remote bucket is): the writer
/// raises its limit on stores in flight above loopback's, because the limit follows the
/// fastest store it has seen (`writer/in_flight.rs`), and says so; the archive is whole. The
/// figures checked are bounds the proxy guarantees, not timings: no store can be faster than
/// its PUT's and its HEAD's round trips, so the limit can be no lower than they make it.
#[tokio::test(flavor = "multi_thread")]
async fn stores_in_flight_follow_the_round_trip_to_a_remote_s3() {
    const ROUND_TRIP: Duration = Duration::from_millis(40);
    let mut case = Case::new("net-s3-far").await;
    for n in 0..150 {
        case.seed("INBOX", message(n, 600));
    }
    let upstream = case.s3().trim_start_matches("http://").to_owned();
    let far = mailvault_tests::delay_proxy::start(upstream, ROUND_TRIP / 2).await;
    let out = case.archive(case.imaps_port(), &far, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("archived 150 new records"),
        "{}",
        text(&out)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stores in flight: at most "))
        .unwrap_or_else(|| panic!("no stores-in-flight line: {}", text(&out)));
    let figures: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| w.parse().ok())
        .collect();
    let [peak, limit, fastest] = figures[..] else {
        panic!("unexpected line {line:?}")
    };
    let round_trip_ms = ROUND_TRIP.as_secs_f64() * 1e3;
    assert!(
        fastest >= 2.0 * round_trip_ms,
        "a record store is a PUT and then a HEAD, each a round trip: {line:?}"
    );
    // On loopback the limit stays near 32; over two 40 ms round trips it is at least 112.
    assert!(
        limit >= 32.0 + 2.0 * round_trip_ms && limit <= 256.0 && peak <= limit,
        "stores in flight did not follow the round trip: {line:?}"
    );
    case.assert_converged();
}

/// A record PUT that versitygw carried out but whose answer never came back: the retry must not
/// store the record a second time (a second locked version, unlogged, that nobody can delete).
/// Lost once, the retry finds the record it stored and the run goes on. Lost on every attempt,
/// the run fails saying so; the next run adopts the stored record. Either way each record has
/// one version and one log entry.
#[tokio::test(flavor = "multi_thread")]
async fn a_put_whose_answer_is_lost_is_stored_once_and_logged_once() {
    let mut case = Case::new("net-s3-lost").await;
    for n in 0..5 {
        case.seed("INBOX", message(n, 3000));
    }
    let mut records = 0;
    let proxy = FaultProxy::http(&case.s3(), move |r| {
        if record_put(r) {
            records += 1;
            return (records == 2).then_some(HttpFault::LoseAnswer);
        }
        None
    })
    .await;
    let out = case.archive(case.imaps_port(), &proxy.url(), &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(proxy.injected(), 1);
    drop(proxy);
    case.assert_converged();

    // Every answer for one record lost: the SDK's attempts all fail.
    for n in 5..8 {
        case.seed("INBOX", message(n, 3000));
    }
    let mut doomed: Option<String> = None;
    let proxy = FaultProxy::http(&case.s3(), move |r| {
        if !record_put(r) {
            return None;
        }
        let key = doomed.get_or_insert_with(|| r.path().to_owned());
        (r.path() == key.as_str()).then_some(HttpFault::LoseAnswer)
    })
    .await;
    let failed = case.archive(case.imaps_port(), &proxy.url(), &[]).await;
    assert_eq!(failed.status.code(), Some(2), "{}", text(&failed));
    assert!(
        proxy.injected() >= 2,
        "the SDK retried: {}",
        proxy.injected()
    );
    drop(proxy);
    let retried = case.archive(case.imaps_port(), &case.s3(), &[]).await;
    assert!(retried.status.success(), "{}", text(&retried));
    case.assert_converged();
    let versions = case.record_versions().await;
    assert_eq!(versions.len(), 8);
    assert!(versions.values().all(|&v| v == 1), "{versions:?}");
}

/// A record PUT refused because its lock date is no longer in the future (what AWS and
/// versitygw answer when a PUT reaches a loaded server after the few seconds' lead a record
/// whose retention has ended is locked with): sent again with a later date, the run goes on,
/// and each record is stored once, locked at least as long as its retention.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_date_refused_as_past_is_sent_again_later() {
    let mut case = Case::new("net-s3-past-lock").await;
    for n in 0..4 {
        case.seed("INBOX", message(n, 800));
    }
    let mut records = 0;
    let proxy = FaultProxy::http(&case.s3(), move |r| {
        if record_put(r) {
            records += 1;
            // The first record's first two attempts, and the third record's first.
            return matches!(records, 1 | 2 | 4).then_some(HttpFault::Refuse {
                status: 400,
                code: "InvalidArgument",
                message: "The retain until date must be in the future!",
            });
        }
        None
    })
    .await;
    let out = case.archive(case.imaps_port(), &proxy.url(), &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(proxy.injected(), 3);
    drop(proxy);
    case.assert_converged();
    let versions = case.record_versions().await;
    assert_eq!(versions.len(), 4);
    assert!(versions.values().all(|&v| v == 1), "{versions:?}");
}

/// Whether `r` reads a record's metadata (HEAD of an object under `records/`).
fn record_head(r: &Request) -> bool {
    r.method == "HEAD" && r.path().contains("/records/")
}

/// An answer head without any `x-amz-object-lock-*` header.
fn without_lock_headers(head: &str) -> String {
    head.split_inclusive("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("x-amz-object-lock-"))
        .collect()
}

/// An answer head claiming a COMPLIANCE lock a century ahead, whatever the object has.
fn with_a_made_up_lock(head: &str) -> String {
    let head = without_lock_headers(head);
    let (status, rest) = head.split_once("\r\n").unwrap_or((&head, ""));
    format!(
        "{status}\r\nx-amz-object-lock-mode: COMPLIANCE\r\nx-amz-object-lock-retain-until-date: 2126-01-01T00:00:00.000Z\r\n{rest}"
    )
}

/// A PUT answer head reporting the SHA-256 of other bytes.
fn with_another_checksum(head: &str) -> String {
    head.split_inclusive("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("x-amz-checksum-sha256:") {
                // SHA-256 of the empty string.
                "x-amz-checksum-sha256: 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\r\n".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect()
}

/// A server that takes a record PUT with its lock headers and stores the object without them:
/// the proxy makes the PUT itself, unlocked (same key, bytes, metadata and checksum), and
/// answers 200 with the version id, as if the lock had been placed.
fn store_without_lock(case: &Case) -> Diverter {
    let client = case.env.s3_client(S3Flavour::Versitygw);
    let bucket = case.bucket.clone();
    std::sync::Arc::new(move |head: String, body: Vec<u8>| {
        let client = client.clone();
        let bucket = bucket.clone();
        Box::pin(async move {
            assert!(
                header_of(&head, "content-encoding").is_none_or(|e| !e.contains("aws-chunked")),
                "a chunked record PUT cannot be diverted: {head}"
            );
            let target = head.split_whitespace().nth(1).unwrap_or_default();
            let path = target.split('?').next().unwrap_or_default();
            let key = path
                .trim_start_matches('/')
                .strip_prefix(&format!("{bucket}/"))
                .unwrap_or_default()
                .to_owned();
            let mut put = client
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .body(body.into());
            for line in head.lines().skip(1) {
                if let Some((k, v)) = line.split_once(':')
                    && let Some(name) = k.trim().to_ascii_lowercase().strip_prefix("x-amz-meta-")
                {
                    put = put.metadata(name, v.trim());
                }
            }
            if let Some(sum) = header_of(&head, "x-amz-checksum-sha256") {
                put = put
                    .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
                    .checksum_sha256(sum);
            }
            let out = put.send().await.expect("the unlocked PUT behind the lie");
            format!(
                "HTTP/1.1 200 OK\r\nx-amz-version-id: {}\r\nETag: {}\r\nx-amz-checksum-sha256: {}\r\nContent-Length: 0\r\n\r\n",
                out.version_id().unwrap_or_default(),
                out.e_tag().unwrap_or_default(),
                out.checksum_sha256().unwrap_or_default()
            )
            .into_bytes()
        })
    })
}

/// An S3 server that lies about Object Lock or checksums, three ways. (1) It stores records
/// under their lock but answers HEAD without lock headers; (2) it stores them without a lock
/// at all, answering the PUT as if it had; (3) it reports another SHA-256 in the PUT answer.
/// Each time the run fails (exit 2) naming the S3 server's fault, and no record is logged as
/// locked on the server's word; the next run, straight to versitygw, adopts them, placing the
/// lock where it is missing: `verify` passes, one version per record. (4) A server that lies
/// consistently (stores unlocked, HEAD invents the lock) cannot be caught while archiving, but
/// `verify` against the real bucket reports every such record `LOCK_WEAKENED`.
#[tokio::test(flavor = "multi_thread")]
async fn an_s3_server_that_lies_about_object_lock_or_checksums_is_caught_and_nothing_is_claimed() {
    let mut case = Case::new("net-s3-lies").await;
    let s3 = case.s3();
    let server_fault = |out: &Output, says: &str| {
        assert_eq!(out.status.code(), Some(2), "{}", text(out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(says) && err.contains("fault of the S3 server"),
            "{err}"
        );
    };

    // (1) Locked, but HEAD shows no lock.
    for n in 0..3 {
        case.seed("INBOX", message(n, 3000));
    }
    let proxy = FaultProxy::http(&s3, |r| {
        record_head(r).then_some(HttpFault::RewriteAnswerHead(without_lock_headers))
    })
    .await;
    let out = case.archive(case.imaps_port(), &proxy.url(), &[]).await;
    server_fault(&out, "no Object Lock at all");
    assert!(proxy.injected() >= 1);
    drop(proxy);
    let out = case.archive(case.imaps_port(), &s3, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    case.assert_converged();

    // (2) Stored without a lock, the PUT answered as if locked.
    for n in 3..6 {
        case.seed("INBOX", message(n, 3000));
    }
    let divert = store_without_lock(&case);
    let proxy = FaultProxy::http(&s3, move |r| {
        record_put(r).then(|| HttpFault::Divert(divert.clone()))
    })
    .await;
    let out = case.archive(case.imaps_port(), &proxy.url(), &[]).await;
    server_fault(&out, "no Object Lock at all");
    assert!(proxy.injected() >= 1);
    drop(proxy);
    let out = case.archive(case.imaps_port(), &s3, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    case.assert_converged();

    // (3) Another checksum in the PUT answer.
    for n in 6..9 {
        case.seed("INBOX", message(n, 3000));
    }
    let proxy = FaultProxy::http(&s3, |r| {
        record_put(r).then_some(HttpFault::RewriteAnswerHead(with_another_checksum))
    })
    .await;
    let out = case.archive(case.imaps_port(), &proxy.url(), &[]).await;
    server_fault(&out, "reports checksum SHA-256 47DEQpj8");
    drop(proxy);
    let out = case.archive(case.imaps_port(), &s3, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    case.assert_converged();
    let versions = case.record_versions().await;
    assert_eq!(versions.len(), 9);
    assert!(versions.values().all(|&v| v == 1), "{versions:?}");

    // (4) A consistent liar: stored unlocked, HEAD invents the lock.
    for n in 9..11 {
        case.seed("INBOX", message(n, 3000));
    }
    let divert = store_without_lock(&case);
    let proxy = FaultProxy::http(&s3, move |r| {
        if record_put(r) {
            return Some(HttpFault::Divert(divert.clone()));
        }
        record_head(r).then_some(HttpFault::RewriteAnswerHead(with_a_made_up_lock))
    })
    .await;
    let out = case.archive(case.imaps_port(), &proxy.url(), &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    drop(proxy);
    let o = case
        .env
        .mailvault_s3(
            S3Flavour::Versitygw,
            &[
                "verify",
                &case.store(),
                "--public-key",
                &case.path("key.pub"),
                "--json",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "verify: {}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let weakened = report["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "LOCK_WEAKENED")
        .count();
    assert_eq!(weakened, 2, "{report:#}");
}

/// The head of a stalled answer and none of its body.
const NO_BODY: usize = 0;

/// An S3 server that stops in the middle of its answers (`--s3-timeout 3`): the body of an
/// object read back while the run opens the archive never comes; every answer to one record's
/// PUT never comes (the SDK tries six times); `verify` reading a record whose body stops. Each
/// fails clearly ("no data within 3s", "no answer within the time-out"), none hangs, and the
/// next run straight to versitygw converges.
#[tokio::test(flavor = "multi_thread")]
async fn s3_stalling_mid_answer_fails_clearly_and_the_next_run_converges() {
    let mut case = Case::new("net-s3-stall").await;
    let s3 = case.s3();
    for n in 0..4 {
        case.seed("INBOX", message(n, 3000));
    }
    let out = case.archive(case.imaps_port(), &s3, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    for n in 4..7 {
        case.seed("INBOX", message(n, 3000));
    }

    // Reading the archive back on opening: a GET whose body never comes.
    let proxy = FaultProxy::http(&s3, |r| {
        let path = r.path();
        (r.method == "GET"
            && ["/state/", "/log/", "/checkpoints/"]
                .iter()
                .any(|p| path.contains(p)))
        .then_some(HttpFault::StallAnswerAfterHead(NO_BODY))
    })
    .await;
    let out = case
        .archive(case.imaps_port(), &proxy.url(), &["--s3-timeout", "3"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sent no data within 3s in the middle of the object's body"),
        "{err}"
    );
    drop(proxy);

    // A record PUT whose answer never comes, on every attempt.
    let mut doomed: Option<String> = None;
    let proxy = FaultProxy::http(&s3, move |r| {
        if !record_put(r) {
            return None;
        }
        let key = doomed.get_or_insert_with(|| r.path().to_owned());
        (r.path() == key.as_str()).then_some(HttpFault::StallAnswer)
    })
    .await;
    let out = case
        .archive(case.imaps_port(), &proxy.url(), &["--s3-timeout", "3"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no answer within the time-out"), "{err}");
    assert!(
        proxy.injected() >= 2,
        "the SDK retried: {}",
        proxy.injected()
    );
    drop(proxy);

    let out = case.archive(case.imaps_port(), &s3, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    case.assert_converged();
    let versions = case.record_versions().await;
    assert_eq!(versions.len(), 7);
    assert!(versions.values().all(|&v| v == 1), "{versions:?}");

    // verify, reading records whose bodies stop.
    let proxy = FaultProxy::http(&s3, |r| {
        (r.method == "GET" && r.path().contains("/records/"))
            .then_some(HttpFault::StallAnswerAfterHead(NO_BODY))
    })
    .await;
    let url = proxy.url();
    let verify = case.command(
        &url,
        &[
            "verify",
            &case.store(),
            "--public-key",
            &case.path("key.pub"),
            "--s3-timeout",
            "3",
        ],
    );
    let o = tokio::task::spawn_blocking(move || {
        let mut verify = verify;
        verify.output().unwrap()
    })
    .await
    .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.contains("no data within 3s"), "{said}");
}

/// The 4 MiB piece size of a large message (`docs/pipeline.md`).
const PIECE: u64 = 4 << 20;

/// IMAP connections broken at every stage of reading: reset half-way through a later piece of a
/// 9 MiB message, reset in the middle of a folder's FETCH, and a server that stops answering
/// mid-FETCH (`--imap-timeout 3`). Each run fails saying where and why, none hangs, and the
/// next run carries on: at the end every message is archived once and verifies.
#[tokio::test(flavor = "multi_thread")]
async fn imap_resets_mid_fetch_and_mid_piece_and_a_stall_fail_clearly_and_the_next_run_converges() {
    let mut case = Case::new("net-imap").await;
    let large = 9 << 20;
    case.seed("Archive", message(1000, large));
    for n in 0..80 {
        case.seed("INBOX", message(n, 12_000));
    }
    // Runs make one IMAP connection each; "Archive" is read before "INBOX".
    let proxy = FaultProxy::tcp(
        &format!("{}:{}", case.env.imap_host(), case.imaps_port()),
        move |n| match n {
            // In the second piece of the large message.
            0 => TcpFault::ResetAfter(PIECE + PIECE / 2),
            // Past the whole large message, in INBOX's FETCH.
            1 => TcpFault::ResetAfter(large as u64 + 400_000),
            2 => TcpFault::StallAfter(200_000),
            _ => TcpFault::Pass,
        },
    )
    .await;
    let s3 = case.s3();

    let mid_piece = case.archive(proxy.port(), &s3, &[]).await;
    assert_eq!(mid_piece.status.code(), Some(2), "{}", text(&mid_piece));
    let err = String::from_utf8_lossy(&mid_piece.stderr);
    assert!(
        err.contains("IMAP UID FETCH") && err.contains("in Archive at byte"),
        "{err}"
    );

    let mid_fetch = case.archive(proxy.port(), &s3, &[]).await;
    assert_eq!(mid_fetch.status.code(), Some(2), "{}", text(&mid_fetch));
    let err = String::from_utf8_lossy(&mid_fetch.stderr);
    assert!(err.contains("IMAP UID FETCH in INBOX"), "{err}");

    let stalled = case
        .archive(proxy.port(), &s3, &["--imap-timeout", "3"])
        .await;
    assert_eq!(stalled.status.code(), Some(2), "{}", text(&stalled));
    let err = String::from_utf8_lossy(&stalled.stderr);
    assert!(err.contains("within 3s"), "{err}");
    assert_eq!(proxy.injected(), 3, "every fault landed");

    let last = case.archive(proxy.port(), &s3, &[]).await;
    assert!(last.status.success(), "{}", text(&last));
    drop(proxy);
    case.assert_converged();
}

/// A run reading nine folders over three IMAP sessions, one of which the network resets in
/// the middle of its first folder's FETCH: the run fails saying which folder and why, the
/// other sessions stop, what was stored is logged, and the next run finishes the job. Every
/// message is archived once (one version of each record object) and verifies.
#[tokio::test(flavor = "multi_thread")]
async fn one_of_several_imap_sessions_reset_mid_fetch_loses_nothing_and_stores_nothing_twice() {
    let mut case = Case::new("net-sessions").await;
    for folder in 0..9 {
        for n in 0..10 {
            case.seed(&format!("Cases{folder}"), message(folder * 100 + n, 12_000));
        }
    }
    // Connection 0 is the first session (it lists the folders); 1 and 2 are the extra ones,
    // in whichever order they connect. 60 KB is past one's login and EXAMINE, inside the
    // FETCH of its first folder (120 KB).
    let proxy = FaultProxy::tcp(
        &format!("{}:{}", case.env.imap_host(), case.imaps_port()),
        move |n| match n {
            1 => TcpFault::ResetAfter(60_000),
            _ => TcpFault::Pass,
        },
    )
    .await;
    let s3 = case.s3();

    let broken = case.archive(proxy.port(), &s3, &[]).await;
    assert_eq!(broken.status.code(), Some(2), "{}", text(&broken));
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(err.contains("IMAP") && err.contains(" in Cases"), "{err}");
    assert_eq!(proxy.injected(), 1, "the fault landed");
    assert_eq!(proxy.connections(), 3, "three sessions for nine folders");

    let next = case.archive(proxy.port(), &s3, &[]).await;
    assert!(next.status.success(), "{}", text(&next));
    drop(proxy);
    let versions = case.record_versions().await;
    assert_eq!(versions.len(), case.seeded.len(), "{versions:?}");
    assert!(versions.values().all(|v| *v == 1), "{versions:?}");
    case.assert_converged();
}

/// A slow link to the IMAP server (12 KB/s through the proxy) and a run-duration cap of 6 s
/// (`--max-run-duration 6`): four folders of about 30 KB each cannot all be read in one run.
/// A run that reaches the cap stops (exit 2, "reached its maximum duration"), having logged
/// what it stored; the cursor moves only past folders read to the end; each next run goes on
/// from there until one finishes. Nothing lost, nothing stored or logged twice. One IMAP
/// session (`--imap-connections 1`): the proxy throttles each connection, so a second session
/// would double the link.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_link_and_a_run_duration_cap_stop_runs_cleanly_and_the_next_runs_go_on() {
    let mut case = Case::new("net-slow").await;
    for folder in ["F1", "F2", "F3", "F4"] {
        for n in 0..6 {
            case.seed(
                folder,
                message(
                    n + 100 * folder.len() + usize::from(folder.as_bytes()[1]) * 10,
                    5000,
                ),
            );
        }
    }
    let slow = FaultProxy::tcp(
        &format!("{}:{}", case.env.imap_host(), case.imaps_port()),
        |_| TcpFault::Throttle(12_000),
    )
    .await;
    let s3 = case.s3();
    let mut capped = 0;
    let mut finished = false;
    for _ in 0..15 {
        let out = case
            .archive(
                slow.port(),
                &s3,
                &["--max-run-duration", "6", "--imap-connections", "1"],
            )
            .await;
        if out.status.success() {
            finished = true;
            break;
        }
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("reached its maximum duration (6s"), "{err}");
        capped += 1;
    }
    assert!(finished, "no run finished within 15 runs");
    assert!(capped >= 1, "the cap never stopped a run");
    eprintln!("{capped} run(s) stopped at the cap before one finished");
    drop(slow);
    case.assert_converged();
    let versions = case.record_versions().await;
    assert_eq!(versions.len(), 24);
    assert!(versions.values().all(|&v| v == 1), "{versions:?}");
}

// ---- The operator ------------------------------------------------------------------------

/// `mailvault operator` for cluster `c`, reaching the apiserver with `kubeconfig`.
fn operator(c: &Cluster, kubeconfig: &Path, extra_args: &[&str]) -> OperatorProcess {
    OperatorProcess::start_with(
        kubeconfig,
        &c.ns,
        "mailvault-operator",
        "solo",
        &c.dir,
        20,
        extra_args,
        &[],
    )
}

fn not_ready(a: &MailboxArchive) -> bool {
    condition(a, "Ready").is_some_and(|c| c.status == "False")
}

/// Two archives under one operator with a single run slot (`--concurrent-runs 1`): the IMAP
/// server of one accepts connections and never says a word. Its runs fail after
/// `spec.imap.timeoutSeconds` with a clear error, each giving the slot back, so the other
/// archive still becomes Ready, holds every message and verifies.
#[tokio::test(flavor = "multi_thread")]
async fn an_archive_whose_imap_server_stalls_does_not_stop_the_other() {
    let c = Cluster::new("net-op-stall").await;
    c.seed("INBOX", 6, "stall");
    let dovecot = format!("{}:{}", c.env.imap_host(), c.env.imaps_port());
    let stalled = FaultProxy::tcp(&dovecot, |_| TcpFault::StallAfter(0)).await;
    let op = operator(&c, &c.kubeconfig, &["--concurrent-runs", "1"]);
    c.create_archive(
        "stuck",
        &json!({"imap": {"port": stalled.port(), "timeoutSeconds": 5}}),
    )
    .await;
    c.create_archive("fine", &json!({})).await;

    let stuck = wait_for(
        &c,
        &[&op],
        "stuck",
        Duration::from_secs(90),
        "Ready=False saying the server did not answer within 5s",
        |a| not_ready(a) && condition(a, "Ready").is_some_and(|c| c.message.contains("within 5s")),
    )
    .await;
    assert!(stalled.injected() >= 1);
    eprintln!("{}", condition(&stuck, "Ready").unwrap().message);
    let fine = wait_for(
        &c,
        &[&op],
        "fine",
        Duration::from_secs(120),
        "Ready with 6 records",
        |a| ready(a) && records(a) == 6,
    )
    .await;
    assert_verifies(&c, &fine, 6);
    // The stuck archive kept failing (and giving the slot back) meanwhile.
    let stuck = c.archives().get("stuck").await.unwrap();
    assert!(not_ready(&stuck));
    assert_eq!(records(&stuck), 0);
}

/// The apiserver "restarts" under the operator: a proxy in front of it resets every connection
/// (watches, the lease, status writes) and refuses new ones for 8 s, once as the first run
/// starts and once while it reports. The operator recovers on its own, and the archive
/// converges: Ready with every message once, verified.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_recovers_from_an_apiserver_restart_during_a_reconcile_and_a_run() {
    let c = Cluster::new("net-op-api").await;
    c.seed("INBOX", 120, "restart");
    let apiserver = FaultProxy::tcp(c.env.var("KUBE_APISERVER"), |_| TcpFault::Pass).await;
    let mut kubeconfig: Value =
        serde_json::from_slice(&std::fs::read(&c.kubeconfig).unwrap()).unwrap();
    kubeconfig["clusters"][0]["cluster"]["server"] =
        Value::String(format!("https://127.0.0.1:{}", apiserver.port()));
    let through_proxy = c.dir.join("kubeconfig-through-proxy");
    std::fs::write(&through_proxy, serde_json::to_vec(&kubeconfig).unwrap()).unwrap();
    let op = operator(&c, &through_proxy, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !op.is_leader().await {
        assert!(Instant::now() < deadline, "no leader: {}", op.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.create_archive("chief", &json!({})).await;
    // The reconcile has started the run once it says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c
        .events_of("chief")
        .await
        .iter()
        .any(|e| e.reason.as_deref() == Some("SyncStarted"))
    {
        assert!(
            Instant::now() < deadline,
            "no run started: {}",
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    apiserver.outage(Duration::from_secs(8));
    tokio::time::sleep(Duration::from_secs(10)).await;
    apiserver.outage(Duration::from_secs(8));

    let a = wait_for(
        &c,
        &[&op],
        "chief",
        Duration::from_secs(150),
        "Ready with 120 records",
        |a| ready(a) && records(a) == 120,
    )
    .await;
    assert_verifies(&c, &a, 120);
    assert!(
        apiserver.connections() > 1,
        "the operator reconnected after the restart"
    );
    assert!(op.is_leader().await, "{}", op.log_text());
    let log = op.log_text();
    let troubles: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .collect();
    eprintln!(
        "{} warnings and errors in the operator's log across the restarts, e.g.:\n{}",
        troubles.len(),
        troubles
            .iter()
            .take(8)
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
