//! The archive job end to end against the real components: Dovecot over IMAPS with the test
//! CA, versitygw with Object Lock (and moto), through the `mailvault` binary.

use mailvault_tests::fault_proxy::{FaultProxy, HttpFault};
use mailvault_tests::{MailUser, S3Flavour, TestEnv, unique_name};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// One archive under test: a mail user, a bucket, a key, and a scratch directory.
struct Case {
    env: TestEnv,
    user: MailUser,
    flavour: S3Flavour,
    bucket: String,
    dir: PathBuf,
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Case {
    async fn new(name: &str, flavour: S3Flavour) -> Self {
        let env = TestEnv::load();
        let user = env.new_mail_user(name);
        let bucket = unique_name(name);
        env.create_bucket(flavour, &bucket, true).await;
        let dir = std::env::temp_dir().join(unique_name(&format!("mv-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        let case = Self {
            env,
            user,
            flavour,
            bucket,
            dir,
        };
        let keygen = case.mailvault(&[
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
        format!("s3://{}/police/chief", self.bucket)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.env.mailvault_s3(self.flavour, args);
        c.env("MAILVAULT_IMAP_PASSWORD", &self.user.password);
        c
    }

    fn mailvault(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running mailvault")
    }

    fn archive_args(&self) -> Vec<String> {
        vec![
            "archive".into(),
            "--from".into(),
            format!(
                "imap://{}@{}:{}",
                self.user.name,
                self.env.imap_host(),
                self.env.imaps_port()
            ),
            "--imap-tls".into(),
            "required".into(),
            "--imap-ca".into(),
            self.env.ca_path().display().to_string(),
            "--to".into(),
            self.store(),
            "--key".into(),
            self.path("key"),
            "--series".into(),
            "MO-GS-003".into(),
            "--retain".into(),
            "P1D".into(),
        ]
    }

    /// Archives with S3 requests sent to `endpoint` (a fault-injecting proxy in front of
    /// versitygw), on a blocking thread so that a proxy on this runtime keeps running.
    async fn archive_through(&self, endpoint: String) -> Output {
        let args = self.archive_args();
        let env = self.env.clone();
        let password = self.user.password.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(mailvault_tests::mailvault_binary())
                .args(&args)
                .args(["--s3-endpoint", &endpoint, "--s3-path-style"])
                .args(["--s3-region", env.var("S3_REGION")])
                .env("AWS_ACCESS_KEY_ID", env.var("VERSITYGW_ACCESS_KEY"))
                .env("AWS_SECRET_ACCESS_KEY", env.var("VERSITYGW_SECRET_KEY"))
                .env("MAILVAULT_IMAP_PASSWORD", password)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    }

    fn archive(&self) -> Output {
        let args = self.archive_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.mailvault(&args)
    }

    fn verify_json(&self) -> (Option<i32>, serde_json::Value) {
        let o = self.mailvault(&[
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

    /// Exports every record; returns their bytes by record id.
    fn export_all(&self, report: &serde_json::Value) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for r in report["records"].as_array().unwrap() {
            let id = r["record"].as_str().unwrap();
            // A trained dictionary is verified beside the records; it is not mail.
            if id.starts_with("dictionaries/") {
                continue;
            }
            let file = self.path(&format!("{id}.eml"));
            let o = self.mailvault(&[
                "export",
                &self.store(),
                "--record",
                id,
                "--public-key",
                &self.path("key.pub"),
                "--out",
                &file,
            ]);
            assert!(o.status.success(), "{}", text(&o));
            out.insert(id.to_owned(), std::fs::read(&file).unwrap());
        }
        out
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A mailbox like a department's: several folders, plain, HTML, attachments, 8-bit, malformed
/// MIME, one large message.
fn seed_mailbox(case: &Case, large_bytes: usize) -> Vec<Vec<u8>> {
    let mut msgs: Vec<(&str, Vec<u8>, &str)> = vec![
        ("INBOX", b"From: a@city.example\r\nTo: b@city.example\r\nSubject: plain\r\nMessage-ID: <1@city.example>\r\n\r\nplain text\r\n".to_vec(), ""),
        ("INBOX", b"From: a@city.example\r\nSubject: html\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello</p>\r\n".to_vec(), "S"),
        ("INBOX", "From: a@city.example\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCafé — 8-bit body ✓\r\n".as_bytes().to_vec(), "F"),
        ("INBOX", b"From: clerk@city.example\r\nSubject: malformed\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nno closing boundary\r\n".to_vec(), ""),
        ("Sent", b"From: b@city.example\r\nTo: a@city.example\r\nSubject: attachment\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n--b1--\r\n".to_vec(), "S"),
        ("Archive/2026", b"From: a@city.example\r\nSubject: archived\r\n\r\nold\r\n".to_vec(), "S"),
        ("Trash", b"From: a@city.example\r\nSubject: deleted but still a record\r\n\r\nbin\r\n".to_vec(), "S"),
    ];
    if large_bytes > 0 {
        msgs.push(("INBOX", large_message(large_bytes, 12345), ""));
    }
    for (folder, bytes, flags) in &msgs {
        case.env.seed_message(&case.user, folder, bytes, flags);
    }
    msgs.into_iter().map(|(_, b, _)| b).collect()
}

/// A scanned document of exactly `len` bytes: headers, then pseudo-random base64 lines
/// (incompressible past base64's own redundancy), different for each `seed`.
fn large_message(len: usize, seed: u32) -> Vec<u8> {
    let mut big = format!(
        "From: scanner@city.example\r\nSubject: large scan {seed}\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u32 = seed;
    while big.len() < len {
        for _ in 0..76 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            big.push(alphabet[(x >> 16) as usize % 64]);
        }
        big.extend_from_slice(b"\r\n");
    }
    big.truncate(len);
    big
}

/// Flags of every message in every folder, as the server reports them (read-only look).
async fn all_flags(env: &TestEnv, user: &MailUser) -> BTreeMap<(String, u32), Vec<String>> {
    use futures::TryStreamExt as _;
    let mut session = env.imap_login(user).await;
    let names: Vec<String> = session
        .list(None, Some("*"))
        .await
        .unwrap()
        .map_ok(|n| n.name().to_owned())
        .try_collect()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for name in names {
        // Parents that only hold children cannot be examined.
        let Ok(mbox) = session.examine(&name).await else {
            continue;
        };
        if mbox.exists == 0 {
            continue;
        }
        let fetches: Vec<_> = session
            .uid_fetch("1:*", "(UID FLAGS)")
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        for f in &fetches {
            let mut flags: Vec<String> = f
                .flags()
                .map(|x| format!("{x:?}"))
                .filter(|x| !x.contains("Recent"))
                .collect();
            flags.sort();
            out.insert((name.clone(), f.uid.unwrap()), flags);
        }
    }
    session.logout().await.unwrap();
    out
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_a_mailbox_byte_for_byte_incrementally_and_read_only() {
    let case = Case::new("imap-e2e", S3Flavour::Versitygw).await;
    let seeded = seed_mailbox(&case, 30 * 1024 * 1024);
    let flags_before = all_flags(&case.env, &case.user).await;

    let first = case.archive();
    assert_archived(&first, seeded.len());

    // Archiving changed nothing in the mailbox: every flag as it was, \Seen included.
    assert_eq!(all_flags(&case.env, &case.user).await, flags_before);

    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["records"].as_array().unwrap().len(), seeded.len());
    let exported = case.export_all(&report);
    assert_eq!(
        sorted(exported.into_values().collect()),
        sorted(seeded.clone()),
        "export is not byte for byte"
    );

    // No new mail: no message body is fetched.
    let again = case.archive();
    assert!(again.status.success(), "{}", text(&again));
    let out = String::from_utf8_lossy(&again.stdout);
    assert!(out.contains("archived 0 new records"), "{out}");
    for line in out.lines().filter(|l| l.starts_with("  ")) {
        assert!(
            line.contains(" 0 fetched") && line.contains("unchanged"),
            "a folder was fetched again: {line}"
        );
    }

    // New mail adds exactly the new records.
    case.env.seed_message(
        &case.user,
        "INBOX",
        b"From: a@city.example\r\nSubject: new\r\n\r\nnew\r\n",
        "",
    );
    let third = case.archive();
    assert!(
        String::from_utf8_lossy(&third.stdout).contains("archived 1 new records"),
        "{}",
        text(&third)
    );
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        report["records"].as_array().unwrap().len(),
        seeded.len() + 1
    );
}

/// Messages around the 4 MiB piece size, then one of 64 MiB: every byte comes back, and the
/// run that archives the large one needs no more memory than the run that archived the small
/// ones, give or take a quarter of its size (it is fetched in pieces with
/// `BODY.PEEK[]<offset.length>`, compressed file to file and uploaded from the file). The peak
/// is compared with a run of the same binary, not with the message's size alone: the resident
/// set of a debug build (code pages, thread stacks, allocator arenas) is itself some 50 MiB.
#[tokio::test(flavor = "multi_thread")]
async fn large_messages_are_archived_in_pieces_within_bounded_memory() {
    const PIECE: usize = 4 * 1024 * 1024;
    const LARGEST: usize = 64 * 1024 * 1024;
    let case = Case::new("imap-large", S3Flavour::Versitygw).await;
    let spool = case.dir.join("spool");
    let archive = |expected: usize| {
        let mut args = case.archive_args();
        args.extend(["--spool-dir".into(), spool.display().to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = case.mailvault(&args);
        assert!(run.status.success(), "{}", text(&run));
        let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
        assert!(
            stdout.contains(&format!("archived {expected} new records")),
            "{}",
            text(&run)
        );
        assert_eq!(
            std::fs::read_dir(&spool).map_or(0, Iterator::count),
            0,
            "spool files left behind"
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("peak memory (RSS): "))
            .and_then(|l| l.trim_end_matches(" MiB").parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no peak memory line: {}", text(&run)))
    };
    let archive = |expected: usize| {
        let peak = archive(expected);
        eprintln!("archived {expected} records, peak memory (RSS) {peak} MiB");
        peak
    };

    let mut seeded = Vec::new();
    for (seed, len) in [PIECE - 1, PIECE, PIECE + 1, 2 * PIECE]
        .into_iter()
        .enumerate()
    {
        let message = large_message(len, u32::try_from(seed).unwrap() + 1);
        case.env.seed_message(&case.user, "INBOX", &message, "");
        seeded.push(message);
    }
    let small_peak_mib = archive(seeded.len());

    let largest = large_message(LARGEST, 99);
    case.env.seed_message(&case.user, "INBOX", &largest, "");
    seeded.push(largest);
    let peak_mib = archive(1);
    let largest_mib = LARGEST / 1024 / 1024;
    assert!(
        peak_mib < small_peak_mib + largest_mib / 4,
        "the run held a whole {largest_mib} MiB message in memory: peak {peak_mib} MiB, \
         against {small_peak_mib} MiB for messages of at most {} MiB",
        2 * PIECE / 1024 / 1024
    );

    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        sorted(case.export_all(&report).into_values().collect()),
        sorted(seeded),
        "export is not byte for byte"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_uidvalidity_reset_loses_nothing_and_duplicates_nothing() {
    let case = Case::new("imap-uidvalidity", S3Flavour::Versitygw).await;
    let seeded = seed_mailbox(&case, 0);
    assert!(case.archive().status.success());

    // Recreate "Sent" with the same message plus one new one: a new UIDVALIDITY.
    let mut session = case.env.imap_login(&case.user).await;
    let before = session.examine("Sent").await.unwrap().uid_validity;
    // Dovecot disconnects a session whose selected mailbox is deleted: select another first.
    session.examine("INBOX").await.unwrap();
    session.delete("Sent").await.unwrap();
    session.create("Sent").await.unwrap();
    let sent_msg = &seeded[4];
    session.append("Sent", None, None, sent_msg).await.unwrap();
    session
        .append(
            "Sent",
            None,
            None,
            b"From: b@city.example\r\nSubject: after reset\r\n\r\nx\r\n",
        )
        .await
        .unwrap();
    let after = session.examine("Sent").await.unwrap().uid_validity;
    session.logout().await.unwrap();
    assert_ne!(before, after, "Dovecot kept UIDVALIDITY");

    let run = case.archive();
    assert!(run.status.success(), "{}", text(&run));
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.contains("UIDVALIDITY changed"), "{out}");
    assert!(
        out.contains("archived 1 new records (1 already archived"),
        "{out}"
    );
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        report["records"].as_array().unwrap().len(),
        seeded.len() + 1
    );
}

/// The run marker as the store holds it now: the run that wrote it and whether it says a run
/// is in progress (`None` before any run).
async fn run_marker(case: &Case) -> Option<(String, bool)> {
    let out = case
        .env
        .s3_client(case.flavour)
        .get_object()
        .bucket(&case.bucket)
        .key("police/chief/state/run.json")
        .send()
        .await
        .ok()?;
    let bytes = out.body.collect().await.ok()?.into_bytes();
    let marker: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some((
        marker["run"].as_str()?.to_owned(),
        marker["in_progress"].as_bool()?,
    ))
}

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed with
/// `MAILVAULT_KILL_SEED`.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// SIGKILL at seeded random points of archive runs while mail keeps arriving: at least 50 kills
/// that landed mid-run (the process was still running, and the run marker it wrote says a run
/// is in progress), then one run to the end. Nothing is lost, nothing is logged twice, every
/// record exports byte for byte and `verify` passes.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_seeded_points_mid_run_then_resume_without_loss_or_double_logging() {
    use std::os::unix::process::ExitStatusExt as _;
    const LANDED: usize = 50;
    let case = Case::new("imap-kill", S3Flavour::Versitygw).await;
    let seed = std::env::var("MAILVAULT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6d61_696c_7661_756c_u64);
    println!("MAILVAULT_KILL_SEED={seed}");
    let mut random = Seeded(seed.max(1));
    let folders = ["INBOX", "Sent", "Archive/2026"];
    let mut seeded = Vec::new();
    let mut seed_messages = |count: usize, random: &mut Seeded| {
        for _ in 0..count {
            let i = seeded.len();
            let body = format!(
                "From: a@city.example\r\nSubject: message {i}\r\nMessage-ID: <{i}@city.example>\r\n\r\n{}\r\n",
                "line of text\r\n".repeat(20 + i % 50)
            );
            let folder = folders[(random.next() % 3) as usize];
            case.env
                .seed_message(&case.user, folder, body.as_bytes(), "");
            seeded.push(body.into_bytes());
        }
    };
    seed_messages(150, &mut random);
    let args = case.archive_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut landed, mut attempts) = (0usize, 0usize);
    // How long after its marker appears a run may be killed. It adapts to this machine's
    // speed: it shrinks when runs finish before the kill and grows when kills land, so kill
    // points stay spread over the whole run on a fast or a slow (cold CI) machine alike.
    let mut window_ms = 1500u64;
    while landed < LANDED {
        attempts += 1;
        assert!(
            attempts <= 6 * LANDED,
            "only {landed} of {attempts} kills landed mid-run (seed {seed})"
        );
        // Mail keeps arriving, so every run has something to store.
        let arriving = random.between(1, 10) as usize;
        seed_messages(arriving, &mut random);
        let before = run_marker(&case).await.map(|(run, _)| run);
        let mut child = case
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // One attempt in five kills while the run is still opening (connecting, reading the
        // log), before its marker exists; those are not counted as landed mid-run.
        let early = random.between(1, 5) == 1;
        let early_kill_at =
            tokio::time::Instant::now() + Duration::from_millis(random.between(10, 600));
        let started_at = tokio::time::Instant::now();
        let mut marked: Option<String> = None;
        while child.try_wait().unwrap().is_none() && started_at.elapsed() < Duration::from_secs(60)
        {
            if early && tokio::time::Instant::now() >= early_kill_at {
                break;
            }
            if let Some((run, true)) = run_marker(&case).await
                && before.as_ref() != Some(&run)
            {
                marked = Some(run);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if marked.is_some() {
            tokio::time::sleep(Duration::from_millis(random.between(0, window_ms))).await;
        }
        let still_running = child.try_wait().unwrap().is_none();
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let Some(run) = marked else {
            continue;
        };
        // Mid-run: the process was still running, and the marker it wrote still says its run
        // is in progress (it died before marking itself finished).
        let after = run_marker(&case).await;
        if still_running && status.signal() == Some(9) && after == Some((run, true)) {
            landed += 1;
            window_ms = (window_ms * 11 / 10).min(5000);
        } else {
            window_ms = (window_ms * 2 / 3).max(50);
        }
    }
    println!("{landed} kills landed mid-run out of {attempts} (seed {seed})");
    let last = case.archive();
    assert!(last.status.success(), "{}", text(&last));
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    let n = seeded.len();
    assert_eq!(
        report["records"].as_array().unwrap().len(),
        n,
        "records lost or duplicated (seed {seed})"
    );
    assert_eq!(
        report["log_faults"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
    // The log has exactly one ingest per record: size equals the record count.
    assert_eq!(report["log_size"].as_u64().unwrap(), n as u64, "{report:#}");
    let exported = case.export_all(&report);
    assert_eq!(sorted(exported.into_values().collect()), sorted(seeded));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_a_bucket_without_object_lock_are_refused_clearly() {
    let mut case = Case::new("imap-refusals", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0);
    let real = case.user.password.clone();
    case.user.password = "not-the-password".into();
    let o = case.archive();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused"), "{err}");
    assert!(
        !err.contains("not-the-password") && !err.contains(&real),
        "a password reached the output: {err}"
    );

    case.user.password = real;
    let plain = unique_name("nolock");
    case.env
        .create_bucket(S3Flavour::Versitygw, &plain, false)
        .await;
    case.bucket = plain;
    let o = case.archive();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not have Object Lock enabled"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn moto_flavour_archives_and_verifies() {
    let case = Case::new("imap-moto", S3Flavour::Moto).await;
    let seeded = seed_mailbox(&case, 0);
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    let exported = case.export_all(&report);
    assert_eq!(sorted(exported.into_values().collect()), sorted(seeded));
}

#[tokio::test(flavor = "multi_thread")]
async fn folder_globs_choose_what_is_archived() {
    let case = Case::new("imap-globs", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0); // INBOX 4, Sent 1, Archive/2026 1, Trash 1
    let mut args = case.archive_args();
    args.extend(["--exclude", "Trash", "--exclude", "Archive/*"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = case.mailvault(&args);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("archived 5 new records"), "{out}");
    assert!(
        !out.contains("Trash") && !out.contains("Archive/2026"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_slipped_into_the_bucket_fails_verification() {
    let case = Case::new("imap-intruder", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0);
    assert!(case.archive().status.success());
    // Someone with write access adds an object the log never saw: the auditor must see it.
    case.env
        .s3_client(S3Flavour::Versitygw)
        .put_object()
        .bucket(&case.bucket)
        .key("police/chief/records/forged")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"forged"))
        .send()
        .await
        .unwrap();
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(1), "{report:#}");
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["record"] == "records/forged" && p["status"] == "UNLOGGED_OBJECT"),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_with_nul_bytes_is_archived_as_imap_delivers_it() {
    // Plain IMAP literals cannot carry NUL; Dovecot sends 0x80 in its place unless the client
    // uses BINARY (RFC 3516), which mailvault does not yet (docs/pipeline.md). The record is
    // still archived and verified: what is kept is exactly what the server delivered.
    let case = Case::new("imap-nul", S3Flavour::Versitygw).await;
    case.env
        .seed_message(&case.user, "INBOX", b"Subject: nul\r\n\r\na\x00b\r\n", "");
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    let exported = case.export_all(&report);
    assert_eq!(
        exported.into_values().collect::<Vec<_>>(),
        vec![b"Subject: nul\r\n\r\na\x80b\r\n".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn xoauth2_with_a_token_from_a_file() {
    // The test Dovecot offers XOAUTH2 and, having no OAuth2 server, checks the bearer token
    // against the passwd-file as if it were the password (docs/environment.md).
    let case = Case::new("imap-xoauth2", S3Flavour::Versitygw).await;
    let seeded = seed_mailbox(&case, 0);
    let token = case.dir.join("token");
    let run = |token_value: &str| {
        std::fs::write(&token, format!("{token_value}\n")).unwrap();
        let mut args = case.archive_args();
        args.extend([
            "--oauth2-token-file".to_owned(),
            token.display().to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = case.command(&args);
        cmd.env_remove("MAILVAULT_IMAP_PASSWORD");
        cmd.output().unwrap()
    };
    let refused = run("not-the-token");
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("refused") && !err.contains("not-the-token"),
        "{err}"
    );
    let ok = run(&case.user.password);
    assert_archived(&ok, seeded.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_slowdowns_are_retried_with_backoff_and_nothing_is_lost() {
    let case = Case::new("imap-slowdown", S3Flavour::Versitygw).await;
    let seeded = seed_mailbox(&case, 0);
    // Every second request after the first (the preflight) answered `503 SlowDown`, as a
    // busy S3 endpoint does, five times; everything else reaches versitygw.
    let mut requests = 0;
    let proxy = FaultProxy::http(case.env.s3_endpoint(S3Flavour::Versitygw), move |_| {
        requests += 1;
        (requests % 2 == 0 && requests <= 10).then_some(HttpFault::Answer {
            status: 503,
            code: "SlowDown",
        })
    })
    .await;
    let out = case.archive_through(proxy.url()).await;
    assert!(out.status.success(), "{}", text(&out));
    let sent = proxy.injected();
    assert!(
        sent >= 1,
        "the proxy injected no 503: the test proved nothing"
    );
    eprintln!("503 SlowDown answers injected: {sent}");
    // Straight to versitygw now: every message once, the archive verifies.
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["records"].as_array().unwrap().len(), seeded.len());
}

/// Asserts that a run succeeded and archived `n` new records.
fn assert_archived(out: &Output, n: usize) {
    assert!(out.status.success(), "{}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("archived {n} new records")),
        "{}",
        text(out)
    );
}

/// A plaintext IMAP proxy on loopback that records what the client sends and, with
/// `hide_auth_plain`, hides `AUTH=PLAIN` from every capability list the server sends.
async fn recording_proxy(
    upstream: String,
    hide_auth_plain: bool,
    accepted: usize,
) -> RecordingProxy {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sessions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let record = sent.clone();
    let count = sessions.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            // Past `accepted` connections, the answer of a server at its limit per user.
            if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= accepted {
                let _ = inbound
                    .write_all(b"* BYE Maximum number of connections from user+IP exceeded\r\n")
                    .await;
                continue;
            }
            let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let (mut client_read, mut client_write) = inbound.into_split();
            let (server_read, mut server_write) = outbound.into_split();
            let record = record.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 8192];
                // Whole lines only: several connections record into one buffer.
                let mut pending = Vec::new();
                while let Ok(n) = client_read.read(&mut chunk).await {
                    if n == 0 || server_write.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                    if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                        let lines: Vec<u8> = pending.drain(..=end).collect();
                        record.lock().unwrap().extend_from_slice(&lines);
                    }
                }
            });
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(server_read);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match lines.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&line);
                    let out = if hide_auth_plain && text.contains("CAPABILITY") {
                        text.replace(" AUTH=PLAIN", "").into_bytes()
                    } else {
                        line.clone()
                    };
                    if client_write.write_all(&out).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    RecordingProxy {
        port,
        sent,
        sessions,
    }
}

/// A [`recording_proxy`]: its port, what clients sent, and how many connections it took.
struct RecordingProxy {
    port: u16,
    sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    sessions: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A server that does not list AUTHENTICATE PLAIN gets the IMAP LOGIN command (real Dovecot
/// behind a proxy that hides `AUTH=PLAIN`).
#[tokio::test(flavor = "multi_thread")]
async fn login_is_used_when_the_server_does_not_offer_authenticate_plain() {
    let case = Case::new("imap-login", S3Flavour::Versitygw).await;
    let seeded = seed_mailbox(&case, 0);
    let (out, commands) = archive_through_imap_proxy(&case, true).await;
    assert_archived(&out, seeded.len());
    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    assert!(commands.contains(&"LOGIN"), "{commands:?}");
    assert!(!commands.contains(&"AUTHENTICATE"), "{commands:?}");
}

/// An HTTP proxy to `upstream` that moves the `Date` of the first answer on each connection
/// by `shift_secs`: an S3 server whose clock differs from this machine's.
async fn clock_shifting_proxy(upstream: &str, shift_secs: i64) -> String {
    use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = inbound.split();
                let (mut server_read, mut server_write) = outbound.split();
                let requests = tokio::io::copy(&mut client_read, &mut server_write);
                let answers = async {
                    // The first answer's header block, with its Date moved.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if server_read.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head)
                        .split_inclusive("\r\n")
                        .map(|line| {
                            let Some(value) = line
                                .strip_prefix("Date: ")
                                .or_else(|| line.strip_prefix("date: "))
                            else {
                                return line.to_owned();
                            };
                            let shifted =
                                DateTime::from_str(value.trim(), DateTimeFormat::HttpDate)
                                    .map(|d| DateTime::from_secs(d.secs() + shift_secs))
                                    .and_then(|d| {
                                        d.fmt(DateTimeFormat::HttpDate).map_err(|e| panic!("{e}"))
                                    })
                                    .unwrap();
                            format!("Date: {shifted}\r\n")
                        })
                        .collect::<String>();
                    if client_write.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                };
                let _ = tokio::join!(requests, answers);
            });
        }
    });
    format!("http://{addr}")
}

/// A machine whose clock is two hours behind the S3 server's is refused before anything is
/// stored (aws-sdk-s3 would quietly correct its signatures; the records would be misdated),
/// with a ClockSkew error that says by how much.
#[tokio::test(flavor = "multi_thread")]
async fn a_clock_two_hours_off_the_s3_servers_is_refused_before_anything_is_stored() {
    let case = Case::new("imap-clock", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0);
    let proxy = clock_shifting_proxy(case.env.s3_endpoint(S3Flavour::Versitygw), 2 * 3600).await;
    let out = case.archive_through(proxy).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("clock is 2 h 0 min behind the S3 server's") && err.contains("NTP"),
        "{err}"
    );
    let listed = case
        .env
        .s3_client(S3Flavour::Versitygw)
        .list_objects_v2()
        .bucket(&case.bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "something was stored");

    // Straight to the server, same clocks: the run goes through.
    let ok = case.archive();
    assert!(ok.status.success(), "{}", text(&ok));
}

/// The IMAP commands a client sent (their names), from what a recording proxy saw.
fn commands_sent(sent: &std::sync::Mutex<Vec<u8>>) -> Vec<String> {
    String::from_utf8_lossy(&sent.lock().unwrap())
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Archives the case's mailbox over plaintext IMAP to loopback, through a [`recording_proxy`] in
/// front of Dovecot's STARTTLS port; returns the run's output and the commands it sent.
async fn archive_through_imap_proxy(case: &Case, hide_auth_plain: bool) -> (Output, Vec<String>) {
    let (out, commands, _) =
        archive_through_imap_proxy_with(case, hide_auth_plain, usize::MAX, &[]).await;
    (out, commands)
}

/// [`archive_through_imap_proxy`] with `extra` flags, the proxy serving the first `accepted`
/// connections only; also returns the IMAP connections the run opened.
async fn archive_through_imap_proxy_with(
    case: &Case,
    hide_auth_plain: bool,
    accepted: usize,
    extra: &[&str],
) -> (Output, Vec<String>, usize) {
    let upstream = format!("{}:{}", case.env.imap_host(), case.env.imap_starttls_port());
    let proxy = recording_proxy(upstream, hide_auth_plain, accepted).await;
    let mut args = case.archive_args();
    args[2] = format!("imap://{}@127.0.0.1:{}", case.user.name, proxy.port);
    args[4] = "disabled".into(); // --imap-tls: plaintext, allowed to loopback
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let out = tokio::task::spawn_blocking({
        let mut command = case.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    let sessions = proxy.sessions.load(std::sync::atomic::Ordering::SeqCst);
    (out, commands_sent(&proxy.sent), sessions)
}

/// A mailbox of many folders is read over several IMAP sessions at once (one more for every 4
/// folders past the first 4, up to `--imap-connections`), large messages among them: every
/// message is archived once, byte for byte, the archive verifies, and a second run over as
/// many sessions finds nothing new and fetches nothing.
#[tokio::test(flavor = "multi_thread")]
async fn many_folders_are_read_over_several_sessions_each_message_once() {
    let case = Case::new("imap-sessions", S3Flavour::Versitygw).await;
    let mut seeded = Vec::new();
    let folders: Vec<String> = std::iter::once("INBOX".to_owned())
        .chain((1..=10).map(|i| format!("Cases/{i:02}")))
        .collect();
    for (i, folder) in folders.iter().enumerate() {
        for j in 0..2 {
            let msg = format!(
                "From: clerk@city.example\r\nSubject: case {i} note {j}\r\nMessage-ID: <{i}.{j}@city.example>\r\n\r\nnote {j} of folder {folder}\r\n"
            )
            .into_bytes();
            case.env.seed_message(&case.user, folder, &msg, "S");
            seeded.push(msg);
        }
    }
    // Two messages past the 4 MiB piece size, in folders that different sessions read: each
    // is put together from pieces while the other sessions' FETCHes run on.
    for (folder, seed) in [("Cases/03", 3), ("Cases/07", 7)] {
        let big = large_message(5 << 20, seed);
        case.env.seed_message(&case.user, folder, &big, "");
        seeded.push(big);
    }
    let (out, _, sessions) =
        archive_through_imap_proxy_with(&case, false, usize::MAX, &["--imap-connections", "3"])
            .await;
    assert_archived(&out, seeded.len());
    // 11 folders: 1 + 10 / 4 = 3 sessions, the most allowed.
    assert_eq!(sessions, 3);
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    let exported = case.export_all(&report);
    assert_eq!(
        sorted(exported.into_values().collect()),
        sorted(seeded.clone())
    );
    // Nothing new: as many sessions, each folder examined, nothing fetched.
    let (out, commands, sessions) =
        archive_through_imap_proxy_with(&case, false, usize::MAX, &["--imap-connections", "3"])
            .await;
    assert_archived(&out, 0);
    assert_eq!(sessions, 3);
    assert_eq!(
        commands.iter().filter(|c| *c == "EXAMINE").count(),
        folders.len(),
        "{commands:?}"
    );
    assert!(
        !commands.iter().any(|c| c == "FETCH" || c == "UID"),
        "{commands:?}"
    );
    // One new message in one folder, read over one session.
    let late = b"From: clerk@city.example\r\nSubject: late\r\n\r\nlate\r\n".to_vec();
    case.env.seed_message(&case.user, "Cases/05", &late, "");
    let (out, _, sessions) =
        archive_through_imap_proxy_with(&case, false, usize::MAX, &["--imap-connections", "1"])
            .await;
    assert_archived(&out, 1);
    assert_eq!(sessions, 1);
}

/// A run that finds nothing new sends no FETCH at all, also after flags changed in a folder
/// (HIGHESTMODSEQ moved, UIDNEXT did not): `UID FETCH <uidnext>:*` would return the folder's
/// last message by IMAP's rules and move its bytes for nothing.
#[tokio::test(flavor = "multi_thread")]
async fn no_new_mail_means_no_fetch_even_after_flag_changes() {
    let case = Case::new("imap-nofetch", S3Flavour::Versitygw).await;
    let seeded = seed_mailbox(&case, 0);
    let first = case.archive();
    assert!(first.status.success(), "{}", text(&first));
    let run_through_proxy = || async {
        let (out, commands) = archive_through_imap_proxy(&case, false).await;
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("archived 0 new records"),
            "{}",
            text(&out)
        );
        commands
    };

    let unchanged = run_through_proxy().await;
    assert!(unchanged.iter().any(|c| c == "EXAMINE"), "{unchanged:?}");
    assert!(
        !unchanged.iter().any(|c| c == "FETCH" || c == "UID"),
        "{unchanged:?}"
    );

    // Flag a message in INBOX: its folder's HIGHESTMODSEQ moves, UIDNEXT does not.
    let mut session = case.env.imap_login(&case.user).await;
    session.select("INBOX").await.unwrap();
    {
        use futures::TryStreamExt as _;
        let _: Vec<_> = session
            .uid_store("1", "+FLAGS (\\Flagged)")
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
    }
    session.logout().await.unwrap();
    let flags = all_flags(&case.env, &case.user).await;
    assert!(
        flags[&("INBOX".to_owned(), 1)]
            .iter()
            .any(|f| f.contains("Flagged")),
        "the test did not change a flag: {flags:?}"
    );
    let after_flags = run_through_proxy().await;
    assert!(
        !after_flags.iter().any(|c| c == "FETCH" || c == "UID"),
        "{after_flags:?}"
    );
    assert!(!seeded.is_empty());
}

/// A server at its limit of connections per user answers the run's extra sessions with BYE:
/// the session it accepted reads every folder, the run succeeds, and nothing is missing.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_refuses_more_sessions_leaves_every_folder_to_the_one_it_accepted() {
    let case = Case::new("imap-one-session", S3Flavour::Versitygw).await;
    let mut seeded = Vec::new();
    for i in 0..9 {
        let folder = if i == 0 {
            "INBOX".to_owned()
        } else {
            format!("Cases/{i:02}")
        };
        let msg = format!(
            "From: clerk@city.example\r\nSubject: case {i}\r\nMessage-ID: <one.{i}@city.example>\r\n\r\nnote\r\n"
        )
        .into_bytes();
        case.env.seed_message(&case.user, &folder, &msg, "S");
        seeded.push(msg);
    }
    // 9 folders: 1 + 8 / 4 = 3 sessions wanted, 1 accepted.
    let (out, _, sessions) =
        archive_through_imap_proxy_with(&case, false, 1, &["--imap-connections", "3"]).await;
    assert_archived(&out, seeded.len());
    assert_eq!(sessions, 3, "the run did not try its extra sessions");
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    let exported = case.export_all(&report);
    assert_eq!(sorted(exported.into_values().collect()), sorted(seeded));
}

/// What someone with the bucket's write credentials and no key can still do to locked objects:
/// put delete markers over them (a plain GET or LIST no longer sees them) and put new versions
/// on top of log objects. The verifier reads by version: the record under a delete marker is
/// HIDDEN, a delete marker over a checkpoint is HIDDEN_LOG_OBJECT (and the checkpoint is still
/// read, so nothing is rewound), a second data version of a bundle is FOREIGN_LOG_VERSION.
#[tokio::test(flavor = "multi_thread")]
async fn delete_markers_and_extra_versions_in_the_bucket_fail_verification() {
    let case = Case::new("imap-markers", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0);
    assert!(case.archive().status.success());
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    let records = report["records"].as_array().unwrap();
    let victim = records[0]["record"].as_str().unwrap().to_owned();
    let s3 = case.env.s3_client(S3Flavour::Versitygw);
    let list = |prefix: &'static str| {
        let s3 = s3.clone();
        let bucket = case.bucket.clone();
        async move {
            s3.list_objects_v2()
                .bucket(&bucket)
                .prefix(format!("police/chief/{prefix}"))
                .send()
                .await
                .unwrap()
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    let checkpoints = list("checkpoints/").await;
    let newest = checkpoints
        .iter()
        .max_by_key(|k| k.rsplit('/').next().unwrap().parse::<u64>().unwrap())
        .unwrap()
        .clone();
    let bundle = list("log/").await.into_iter().next().unwrap();
    for key in [format!("police/chief/records/{victim}"), newest.clone()] {
        // No version id: S3 adds a delete marker, which Object Lock allows.
        s3.delete_object()
            .bucket(&case.bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
    }
    assert!(list("checkpoints/").await.len() < checkpoints.len());

    let (code, report) = case.verify_json();
    assert_eq!(code, Some(1), "{report:#}");
    let faults = report["log_faults"].as_array().unwrap();
    let has = |kind: &str, key: &str| {
        faults
            .iter()
            .any(|f| f["kind"] == kind && f["detail"].as_str().is_some_and(|d| d.contains(key)))
    };
    let short = |k: &str| k.strip_prefix("police/chief/").unwrap().to_owned();
    assert!(has("HIDDEN_LOG_OBJECT", &short(&newest)), "{report:#}");
    // The hidden checkpoint was still read: the log is vouched for up to it.
    assert!(!has("UNCHECKPOINTED_ENTRIES", ""), "{report:#}");
    assert!(!has("NO_CHECKPOINT", ""), "{report:#}");
    let problems = report["problems"].as_array().unwrap();
    // The victim is HIDDEN (versitygw's HeadObject of a version under a delete marker also
    // omits its lock, which reads as LOCK_WEAKENED, a more severe status: either fails).
    assert!(
        problems.iter().any(|p| p["record"] == victim.as_str()
            && p["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f.as_str().unwrap().starts_with("HIDDEN: delete marker"))),
        "{report:#}"
    );
    assert_eq!(problems.len(), 1, "{report:#}");

    // A second data version of a log bundle (Object Lock does not stop new versions).
    s3.put_object()
        .bucket(&case.bucket)
        .key(&bundle)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"\x00\x01x",
        ))
        .send()
        .await
        .unwrap();
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(1), "{report:#}");
    assert!(
        report["log_faults"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "FOREIGN_LOG_VERSION"
                && f["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(&short(&bundle)))),
        "{report:#}"
    );
}

// ---- Writer trust (issue 11): an attacker with the bucket's write credentials but no key. ----

/// Current keys under the archive's `under` (relative to the archive root), relative keys.
async fn current_keys(case: &Case, under: &str) -> Vec<String> {
    let out = case
        .env
        .s3_client(case.flavour)
        .list_objects_v2()
        .bucket(&case.bucket)
        .prefix(format!("police/chief/{under}"))
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key()?.strip_prefix("police/chief/").map(str::to_owned))
        .collect()
}

async fn put_plain(
    case: &Case,
    key: &str,
    bytes: Vec<u8>,
    metadata: Option<&std::collections::HashMap<String, String>>,
) {
    case.env
        .s3_client(case.flavour)
        .put_object()
        .bucket(&case.bucket)
        .key(format!("police/chief/{key}"))
        .set_metadata(metadata.cloned())
        .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
        .send()
        .await
        .unwrap();
}

async fn get_plain(case: &Case, key: &str) -> (Vec<u8>, std::collections::HashMap<String, String>) {
    let out = case
        .env
        .s3_client(case.flavour)
        .get_object()
        .bucket(&case.bucket)
        .key(format!("police/chief/{key}"))
        .send()
        .await
        .unwrap();
    let metadata = out.metadata().cloned().unwrap_or_default();
    (
        out.body.collect().await.unwrap().into_bytes().to_vec(),
        metadata,
    )
}

fn newest_checkpoint(keys: &[String]) -> u64 {
    keys.iter()
        .filter_map(|k| k.strip_prefix("checkpoints/")?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn log_objects_are_locked_and_s3_refuses_to_delete_their_versions() {
    let case = Case::new("imap-locked-log", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0);
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let s3 = case.env.s3_client(case.flavour);
    let listed = s3
        .list_object_versions()
        .bucket(&case.bucket)
        .prefix("police/chief/")
        .send()
        .await
        .unwrap();
    let horizon = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
        + 99 * 365 * 86_400;
    let mut log_objects = 0;
    for v in listed.versions() {
        let key = v.key().unwrap();
        if !(key.contains("/log/") || key.contains("/checkpoints/")) {
            continue;
        }
        log_objects += 1;
        let version = v.version_id().unwrap();
        let head = s3
            .head_object()
            .bucket(&case.bucket)
            .key(key)
            .version_id(version)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.object_lock_mode(),
            Some(&aws_sdk_s3::types::ObjectLockMode::Compliance),
            "{key}"
        );
        assert!(
            head.object_lock_retain_until_date().unwrap().secs() > horizon,
            "{key}: {:?}",
            head.object_lock_retain_until_date()
        );
        if key.contains("/log/") {
            assert!(
                head.metadata()
                    .is_some_and(|m| m.contains_key("mailvault-mac")),
                "{key}: {:?}",
                head.metadata()
            );
        }
        let deleted = s3
            .delete_object()
            .bucket(&case.bucket)
            .key(key)
            .version_id(version)
            .send()
            .await;
        assert!(
            deleted.is_err(),
            "S3 deleted the locked version {version} of {key}"
        );
    }
    assert!(log_objects >= 2, "{listed:?}");
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hiding_the_newest_checkpoint_and_its_entries_does_not_rewind_the_writer() {
    let case = Case::new("imap-hidden-head", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0);
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let keys = current_keys(&case, "").await;
    let newest = newest_checkpoint(&keys);
    assert_eq!(newest, 7);
    let s3 = case.env.s3_client(case.flavour);
    // Delete markers (plain DELETEs are allowed) over the newest checkpoint and over the
    // bundle object that holds its last entries: a listing now shows an older, consistent log.
    for key in [
        format!("checkpoints/{newest}"),
        format!("log/tile/entries/000.p/{newest}"),
    ] {
        assert!(keys.contains(&key), "{key}: {keys:?}");
        s3.delete_object()
            .bucket(&case.bucket)
            .key(format!("police/chief/{key}"))
            .send()
            .await
            .unwrap();
    }
    let hidden = current_keys(&case, "checkpoints/").await;
    assert!(newest_checkpoint(&hidden) < newest, "{hidden:?}");
    case.env.seed_message(
        &case.user,
        "INBOX",
        b"Subject: after the attack\r\n\r\nx\r\n",
        "",
    );
    // The writer reads the versions beneath the markers: it goes on from entry 7, not from
    // the shorter log (which would log a fork), and names both markers.
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("archived 1 new records")
            && stdout.contains(&format!("checkpoints/{newest} (delete marker)"))
            && stdout.contains(&format!("log/tile/entries/000.p/{newest} (delete marker)")),
        "{}",
        text(&o)
    );
    let after = current_keys(&case, "checkpoints/").await;
    assert_eq!(newest_checkpoint(&after), newest + 1, "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_marker_over_the_newest_checkpoint_is_reported_and_not_a_rewind() {
    let case = Case::new("imap-hidden-cp", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0);
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let newest = newest_checkpoint(&current_keys(&case, "checkpoints/").await);
    let (note, _) = get_plain(&case, &format!("checkpoints/{newest}")).await;
    let s3 = case.env.s3_client(case.flavour);
    s3.delete_object()
        .bucket(&case.bucket)
        .key(format!("police/chief/checkpoints/{newest}"))
        .send()
        .await
        .unwrap();
    case.env.seed_message(
        &case.user,
        "INBOX",
        b"Subject: after the marker\r\n\r\ny\r\n",
        "",
    );
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("checkpoints/{newest} (delete marker)")),
        "{}",
        text(&o)
    );
    // Every checkpoint version: one root per size, and the hidden one is still what it was.
    let versions = s3
        .list_object_versions()
        .bucket(&case.bucket)
        .prefix("police/chief/checkpoints/")
        .send()
        .await
        .unwrap();
    let mut roots: BTreeMap<String, String> = BTreeMap::new();
    for v in versions.versions() {
        let body = s3
            .get_object()
            .bucket(&case.bucket)
            .key(v.key().unwrap())
            .version_id(v.version_id().unwrap())
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        let mut lines = text.lines().skip(1);
        let (size, root) = (
            lines.next().unwrap().to_owned(),
            lines.next().unwrap().to_owned(),
        );
        if let Some(seen) = roots.insert(size.clone(), root.clone()) {
            assert_eq!(seen, root, "two roots for size {size}");
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&note)
            .lines()
            .nth(2)
            .map(str::to_owned),
        roots.get(&newest.to_string()).cloned()
    );
    assert_eq!(
        newest_checkpoint(&current_keys(&case, "checkpoints/").await),
        newest + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_orphan_and_an_edited_run_marker_are_reported_not_adopted() {
    let case = Case::new("imap-forged-orphan", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0);
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    // A real record's bytes and sidecar (MAC included) copied under a new id, and a run
    // marker saying a run was interrupted.
    let records = current_keys(&case, "records/").await;
    let (bytes, metadata) = get_plain(&case, &records[0]).await;
    assert!(metadata.contains_key("mailvault-mac"), "{metadata:?}");
    let forged = "records/0123456789abcdef0123456789abcdef";
    put_plain(&case, forged, bytes, Some(&metadata)).await;
    put_plain(
        &case,
        "state/run.json",
        br#"{"in_progress":true}"#.to_vec(),
        None,
    )
    .await;
    case.env
        .seed_message(&case.user, "INBOX", b"Subject: new\r\n\r\nz\r\n", "");
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("warning: unauthenticated objects in the archive")
            && stdout.contains(forged)
            && stdout.contains("state/run.json")
            && stdout.contains("archived 1 new records (0 already archived, 0 recovered"),
        "{}",
        text(&o)
    );
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(1), "{report:#}");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report:#}");
    assert_eq!(problems[0]["record"], forged, "{report:#}");
    assert_eq!(problems[0]["status"], "UNLOGGED_OBJECT", "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_cursor_is_not_trusted_and_nothing_is_missed() {
    let case = Case::new("imap-edited-cursor", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0);
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    // Moved far ahead (its old MAC kept), so that the next message would be skipped.
    let (cursor, metadata) = get_plain(&case, "state/cursor.json").await;
    let mut edited: serde_json::Value = serde_json::from_slice(&cursor).unwrap();
    for folder in edited["folders"].as_object_mut().unwrap().values_mut() {
        folder["uid_next"] = serde_json::json!(100_000);
    }
    put_plain(
        &case,
        "state/cursor.json",
        serde_json::to_vec_pretty(&edited).unwrap(),
        Some(&metadata),
    )
    .await;
    case.env.seed_message(
        &case.user,
        "INBOX",
        b"Subject: hidden by the cursor\r\n\r\nw\r\n",
        "",
    );
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("state/cursor.json")
            && stdout.contains("archived 1 new records (7 already archived"),
        "{}",
        text(&o)
    );
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["log_size"], 8, "one ingest per record: {report:#}");
}

/// A valid chain extended by one forged entry, planted without the writer's MAC under exactly
/// the partial key the writer writes next. The writer does not take it (past what is signed it
/// reads only objects with its MAC, and names the others), so nothing forged is signed; its own
/// create-only PUT of that key then fails, and the run stops saying so (a planted key is a
/// denial of that run, docs/faults.md). The newest checkpoint stays the first run's.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_tail_entry_is_refused_and_nothing_is_signed() {
    use mailvault::core::entry::{EntryBody, LockMode, RecordId, RetainUntil};
    let case = Case::new("imap-forged-tail", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0);
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let (bundle, _) = get_plain(&case, "log/tile/entries/000.p/7").await;
    let mut log = mailvault::core::log::RecordLog::resume([bundle.as_slice()]).unwrap();
    let _ = log.take_bundles();
    let id = RecordId::new("0123456789abcdef0123456789abcdef").unwrap();
    log.append(
        mailvault::core::UnixTime(1_800_000_000),
        id.clone(),
        EntryBody::Ingest {
            series: "MO-GS-003".into(),
            retain_until: RetainUntil::Permanent,
            lock_mode: LockMode::Compliance,
            object_key: format!("records/{id}"),
            object_version: "forged".into(),
            stored_sha256: mailvault::core::Hash::of(b"x"),
            stored_size: 1,
            original_commitment: mailvault::core::Hash::of(b"y"),
            dictionary: None,
            header_index: None,
        },
    )
    .unwrap();
    let forged = log.take_bundles().pop().unwrap();
    assert_eq!(forged.key, "log/tile/entries/000.p/8");
    put_plain(&case, &forged.key, forged.bytes, None).await;
    case.env
        .seed_message(&case.user, "INBOX", b"Subject: new\r\n\r\nv\r\n", "");
    let o = case.archive();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "{} already exists with different content",
            forged.key
        )),
        "{}",
        text(&o)
    );
    assert_eq!(
        newest_checkpoint(&current_keys(&case, "checkpoints/").await),
        7
    );
}

/// Objects far larger than anything mailvault writes under their keys, put into the bucket by
/// someone with its write credentials, are not read whole: a run marker of 1 MiB is reported
/// as unauthenticated and the run goes on; a 5 MiB "partial bundle" under `log/` (no bundle
/// can exceed 256 entries of 16 KiB), wider than the real one, is not read: the log is read
/// from the next widest, the run goes on and names it.
#[tokio::test(flavor = "multi_thread")]
async fn objects_larger_than_mailvault_writes_are_not_read() {
    let case = Case::new("imap-oversized", S3Flavour::Versitygw).await;
    seed_mailbox(&case, 0);
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    put_plain(&case, "state/run.json", vec![b' '; 1 << 20], None).await;
    case.env
        .seed_message(&case.user, "INBOX", b"Subject: new\r\n\r\nu\r\n", "");
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("warning: unauthenticated object")
            && stdout.contains("state/run.json")
            && stdout.contains("archived 1 new records"),
        "{}",
        text(&o)
    );
    let signed = newest_checkpoint(&current_keys(&case, "checkpoints/").await);
    let planted = "log/tile/entries/000.p/200";
    put_plain(&case, planted, vec![0; 5 << 20], None).await;
    case.env
        .seed_message(&case.user, "INBOX", b"Subject: newer\r\n\r\nt\r\n", "");
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("{planted} (version"))
            && stdout.contains("archived 1 new records"),
        "{}",
        text(&o)
    );
    assert_eq!(
        newest_checkpoint(&current_keys(&case, "checkpoints/").await),
        signed + 1
    );
    // The auditor is told the same, by name.
    let o = case.mailvault(&[
        "verify",
        &case.store(),
        "--public-key",
        &case.path("key.pub"),
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(planted)
            || String::from_utf8_lossy(&o.stdout).contains(planted),
        "{}",
        text(&o)
    );
}

/// The writer's resume state (`state/resume.json`) only saves reads: an older one put back
/// (its MAC valid), an edited one (MAC broken) and a cursor that makes every message come again
/// all end with nothing stored twice and nothing missed, and `verify` passing.
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_or_edited_resume_state_neither_skips_nor_duplicates() {
    let case = Case::new("imap-resume-state", S3Flavour::Versitygw).await;
    let mut n = 0;
    let mut seed = |count: usize| {
        for _ in 0..count {
            let body = format!(
                "Subject: resume {n}\r\nMessage-ID: <r{n}@city.example>\r\n\r\nbody {n}\r\n"
            );
            case.env
                .seed_message(&case.user, "INBOX", body.as_bytes(), "");
            n += 1;
        }
    };
    seed(300);
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    // The edge is at 256: the state's filter holds the first 256 ids.
    let (old_state, old_metadata) = get_plain(&case, "state/resume.json").await;
    let state: serde_json::Value = serde_json::from_slice(&old_state).unwrap();
    assert_eq!(state["edge_size"], 256, "{state}");
    seed(300);
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));

    // An older state of the writer's own, put back: the run reads more of the log, and is
    // still right about what is archived.
    put_plain(
        &case,
        "state/resume.json",
        old_state.clone(),
        Some(&old_metadata),
    )
    .await;
    seed(10);
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("archived 10 new records"), "{}", text(&o));

    // An edited state (a smaller ingest count, its old MAC kept) is reported and not used.
    let mut edited: serde_json::Value = serde_json::from_slice(&old_state).unwrap();
    edited["ingested"] = serde_json::json!(1);
    put_plain(
        &case,
        "state/resume.json",
        serde_json::to_vec(&edited).unwrap(),
        Some(&old_metadata),
    )
    .await;
    // And a cursor without its MAC: every message comes again, and each one the state's filter
    // may hold is looked up in the log before anything is stored.
    put_plain(
        &case,
        "state/cursor.json",
        b"{\"folders\":{}}".to_vec(),
        None,
    )
    .await;
    let o = case.archive();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("state/resume.json")
            && stdout.contains("state/cursor.json")
            && stdout.contains("archived 0 new records (610 already archived"),
        "{}",
        text(&o)
    );
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["log_size"], 610, "one ingest per record: {report:#}");
}

/// Deletes the Maildir file of the INBOX message whose bytes contain `marker`, as a user's
/// expunge does (Dovecot notices at its next look). Dovecot may have moved it to cur/.
fn expunge_by_marker(case: &Case, marker: &str) {
    let maildir = std::path::Path::new(case.env.var("IMAP_MAIL_ROOT"))
        .join(&case.user.name)
        .join("Maildir");
    for sub in ["new", "cur"] {
        for entry in std::fs::read_dir(maildir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if String::from_utf8_lossy(&std::fs::read(&path).unwrap()).contains(marker) {
                std::fs::remove_file(&path).unwrap();
                return;
            }
        }
    }
    panic!("no message with {marker}");
}

/// Mail expunged before archiving began is not a capture gap: a first run reports the empty
/// UIDs below UIDNEXT apart. Mail that arrives and is expunged between two runs is one, and is
/// reported as such.
#[tokio::test(flavor = "multi_thread")]
async fn mail_gone_before_archiving_began_and_capture_gaps_are_told_apart() {
    let case = Case::new("imap-gaps", S3Flavour::Versitygw).await;
    let msg = |i: u32| {
        format!(
            "From: a@city.example\r\nSubject: m{i}\r\nMessage-ID: <gap-{i}@city.example>\r\n\r\nbody {i}\r\n"
        )
    };
    for i in 1..=5 {
        case.env
            .seed_message(&case.user, "INBOX", msg(i).as_bytes(), "");
    }
    // Another archive (a scratch `file:` store) makes Dovecot assign UIDs 1-5 first.
    let scratch = format!("file:{}", case.path("scratch"));
    let mut args = case.archive_args();
    let to = args.iter().position(|a| a == "--to").unwrap() + 1;
    args[to] = scratch;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = case.mailvault(&args);
    assert!(o.status.success(), "{}", text(&o));
    expunge_by_marker(&case, "<gap-2@");
    expunge_by_marker(&case, "<gap-3@");
    let first = case.archive();
    assert!(first.status.success(), "{}", text(&first));
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains("2 UID(s) below UIDNEXT already empty when first read (expunged before archiving began; not capture gaps)"),
        "{out}"
    );
    assert!(
        !out.contains("expunged before they could be captured"),
        "{out}"
    );
    // UIDs 6 and 7 arrive; 6 is expunged before the next run of this archive sees it.
    for i in 6..=7 {
        case.env
            .seed_message(&case.user, "INBOX", msg(i).as_bytes(), "");
    }
    let o = case.mailvault(&args);
    assert!(o.status.success(), "{}", text(&o));
    expunge_by_marker(&case, "<gap-6@");
    let second = case.archive();
    assert!(second.status.success(), "{}", text(&second));
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(
        out.contains("1 message(s) expunged before they could be captured"),
        "{out}"
    );
    assert!(!out.contains("already empty when first read"), "{out}");
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["records"].as_array().unwrap().len(), 4);
}

/// Two `archive` commands on one store at once (the CLI takes no lock; the operator's Lease is
/// what keeps its runs apart): they race for the same record keys and log objects, which are
/// all create-only. Whatever the interleaving, the log never forks, no record is stored twice,
/// a run that lost a race fails naming the conflict, and the next run converges.
#[tokio::test(flavor = "multi_thread")]
async fn two_archive_runs_at_once_on_one_store_end_in_a_conflict_not_a_fork() {
    let case = Case::new("imap-two-writers", S3Flavour::Versitygw).await;
    let mut seeded = Vec::new();
    for i in 0..600 {
        let body = format!(
            "From: a@city.example\r\nSubject: message {i}\r\nMessage-ID: <w{i}@city.example>\r\n\r\n{}\r\n",
            "line of text\r\n".repeat(10 + i % 40)
        );
        case.env
            .seed_message(&case.user, "INBOX", body.as_bytes(), "");
        seeded.push(body.into_bytes());
    }
    let args = case.archive_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let spawn = || {
        case.command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outputs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let failed: Vec<&Output> = outputs.iter().filter(|o| !o.status.success()).collect();
    assert!(
        !failed.is_empty(),
        "both runs succeeded on one store at once; the race did not happen: {}\n{}",
        text(&outputs[0]),
        text(&outputs[1])
    );
    for o in &failed {
        assert_eq!(o.status.code(), Some(2), "{}", text(o));
        let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
        assert!(
            err.contains("another run on this archive at the same time")
                || err.contains("conflict"),
            "a lost race must name the conflict: {}",
            text(o)
        );
    }
    // The next run converges: every message once, one version per record, the log verifies.
    let next = case.archive();
    assert!(next.status.success(), "{}", text(&next));
    let (code, report) = case.verify_json();
    assert_eq!(code, Some(0), "{report:#}");
    let exported = case.export_all(&report);
    assert_eq!(sorted(exported.into_values().collect()), sorted(seeded));
    let versions = case
        .env
        .s3_client(S3Flavour::Versitygw)
        .list_object_versions()
        .bucket(&case.bucket)
        .prefix("police/chief/records/")
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 600, "a record stored twice");
    assert!(versions.delete_markers().is_empty());
}
