//! Network faults through a real proxy (`tests/support/fault_proxy.rs`) between mailvault and
//! each real server: S3 (versitygw) resets, 500s, `503 SlowDown` and answers lost after the
//! server acted; IMAP (Dovecot) resets mid-FETCH and mid-piece and a server that stalls; the
//! operator with one archive's IMAP server stalled, and with the apiserver restarting under it.
//! Each ends with `verify` passing and as many records as the mailbox has messages: nothing
//! lost, nothing logged twice.

use mailvault_tests::fault_proxy::{FaultProxy, HttpFault, Request, TcpFault};
use mailvault_tests::{MailUser, S3Flavour, TestEnv, unique_name};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

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
