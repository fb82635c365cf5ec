//! Network faults through a real proxy (`tests/support/fault_proxy.rs`) between mailvault and
//! each real server: S3 (versitygw) resets, 500s, `503 SlowDown` and answers lost after the
//! server acted; IMAP (Dovecot) resets mid-FETCH and mid-piece and a server that stalls; the
//! operator with one archive's IMAP server stalled, and with the apiserver restarting under it.
//! Each ends with `verify` passing and as many records as the mailbox has messages: nothing
//! lost, nothing logged twice.

use mailvault::crd::MailboxArchive;
use mailvault_tests::cluster::{Cluster, assert_verifies, condition, ready, records, wait_for};
use mailvault_tests::fault_proxy::{FaultProxy, HttpFault, Request, TcpFault};
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
