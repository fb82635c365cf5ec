//! Benchmark harness (not a test): archives a realistic mailbox from the local Dovecot into
//! versitygw with `mailvault archive`, and copies the same mailbox with `mbsync` (isync) to a
//! local Maildir, with its default per-message fsync and with `FSync no`. Prints one table.
//!
//! Run with `make bench-archive` (starts the environment). Mailboxes:
//! - mixed: 10,000 messages, mostly 2–20 KB text, a quarter with 50–500 KB attachments, a few
//!   of 1–10 MB (the shape of a government mailbox);
//! - small: 50,000 short text messages.
//!
//! Each run is timed with GNU time (wall, user+sys CPU, peak RSS of the process).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use mailvault_tests::{MailUser, S3Flavour, TestEnv, mailvault_binary, unique_name};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tiny deterministic generator, so every run seeds the same mailbox.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() as usize) % (hi - lo)
    }
}

const WORDS: &[&str] = &[
    "the",
    "department",
    "records",
    "officer",
    "retention",
    "schedule",
    "request",
    "please",
    "incident",
    "report",
    "attached",
    "meeting",
    "patrol",
    "shift",
    "budget",
    "training",
    "policy",
    "council",
    "city",
    "public",
    "law",
    "review",
    "case",
    "evidence",
    "court",
    "disclosure",
    "email",
    "thank",
    "you",
    "regards",
    "sergeant",
    "chief",
    "dispatch",
];

fn text(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 80);
    let mut line = 0;
    while s.len() < bytes {
        let w = WORDS[rng.range(0, WORDS.len())];
        s.push_str(w);
        line += w.len() + 1;
        if line > 70 {
            s.push_str("\r\n");
            line = 0;
        } else {
            s.push(' ');
        }
    }
    s.push_str("\r\n");
    s
}

fn base64_noise(rng: &mut Rng, bytes: usize) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes + bytes / 76 * 2);
    let mut col = 0;
    for _ in 0..bytes {
        s.push(char::from(T[(rng.next() % 64) as usize]));
        col += 1;
        if col == 76 {
            s.push_str("\r\n");
            col = 0;
        }
    }
    s.push_str("\r\n");
    s
}

fn message(rng: &mut Rng, i: usize, body: usize, attachment: usize) -> Vec<u8> {
    let mut m = format!(
        "Received: from mx1.city.example by mail.city.example; Mon, 2 Nov 2026 09:{:02}:00 -0600\r\n\
         From: Officer {i} <officer{i}@police.city.example>\r\nTo: Records <records@city.example>\r\n\
         Subject: Report {i} {}\r\nDate: Mon, 2 Nov 2026 09:{:02}:00 -0600\r\nMessage-ID: <{i}.{}@police.city.example>\r\n\
         MIME-Version: 1.0\r\n",
        i % 60,
        WORDS[i % WORDS.len()],
        i % 60,
        rng.next()
    );
    if attachment == 0 {
        m.push_str("Content-Type: text/plain; charset=us-ascii\r\n\r\n");
        m.push_str(&text(rng, body));
    } else {
        m.push_str("Content-Type: multipart/mixed; boundary=\"bnd\"\r\n\r\n--bnd\r\nContent-Type: text/plain\r\n\r\n");
        m.push_str(&text(rng, body));
        m.push_str("--bnd\r\nContent-Type: application/pdf; name=\"scan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        m.push_str(&base64_noise(rng, attachment));
        m.push_str("--bnd--\r\n");
    }
    m.into_bytes()
}

/// Seeds a mailbox; returns (messages, bytes).
fn seed(env: &TestEnv, user: &MailUser, kind: &str) -> (usize, u64) {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut bytes = 0u64;
    let n = if kind == "mixed" { 10_000 } else { 50_000 };
    for i in 0..n {
        let folder = match i % 10 {
            0..=5 => "INBOX",
            6 | 7 => "Sent",
            8 => "Archive/2026",
            _ => "Trash",
        };
        let m = if kind == "small" {
            message(&mut rng, i, 1_200, 0)
        } else if i % 500 == 7 {
            let size = rng.range(1_000_000, 10_000_000);
            message(&mut rng, i, 2_000, size)
        } else if i % 4 == 1 {
            let size = rng.range(50_000, 500_000);
            message(&mut rng, i, 3_000, size)
        } else {
            let size = rng.range(2_000, 20_000);
            message(&mut rng, i, size, 0)
        };
        bytes += m.len() as u64;
        env.seed_message(user, folder, &m, if i % 3 == 0 { "S" } else { "" });
    }
    (n, bytes)
}

/// What GNU time measured.
struct Measured {
    wall: f64,
    cpu: f64,
    rss_mb: f64,
    stdout: String,
}

fn timed(cmd: Command) -> Measured {
    let out_file = std::env::temp_dir().join(unique_name("time"));
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let envs: Vec<_> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    let mut t = Command::new("/usr/bin/time");
    t.arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(&out_file)
        .arg(program)
        .args(args);
    for (k, v) in envs {
        t.env(k, v);
    }
    let out = t.output().expect("GNU time (Debian package `time`)");
    assert!(
        out.status.success(),
        "benchmark command failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = std::fs::read_to_string(&out_file).unwrap();
    let f: Vec<f64> = line
        .split_whitespace()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|x| x.parse().unwrap())
        .collect();
    let _ = std::fs::remove_file(out_file);
    Measured {
        wall: f[0],
        cpu: f[1] + f[2],
        rss_mb: f[3] / 1024.0,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

fn mbsync_config(env: &TestEnv, user: &MailUser, dir: &Path, fsync: bool) -> PathBuf {
    let conf = dir.join("mbsyncrc");
    let local = dir.join("maildir");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(
        &conf,
        format!(
            "FSync {}\n\nIMAPAccount bench\nHost {}\nPort {}\nUser {}\nPass {}\nSSLType IMAPS\nCertificateFile {}\n\n\
             IMAPStore remote\nAccount bench\n\nMaildirStore local\nPath {}/\nInbox {}/INBOX\nSubFolders Verbatim\n\n\
             Channel bench\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\nSync Pull\nSyncState *\n",
            if fsync { "yes" } else { "no" },
            env.imap_host(),
            env.imaps_port(),
            user.name,
            user.password,
            env.ca_path().display(),
            local.display(),
            local.display()
        ),
    )
    .unwrap();
    conf
}

fn mbsync(conf: &Path) -> Command {
    let mut c = Command::new("mbsync");
    c.arg("-q").arg("-c").arg(conf).arg("-a");
    c
}

fn row(name: &str, m: &Measured, n: usize, bytes: u64) {
    println!(
        "| {name:<44} | {:>7.1} | {:>8.0} | {:>6.1} | {:>6.1} | {:>7.0} |",
        m.wall,
        n as f64 / m.wall,
        bytes as f64 / 1e6 / m.wall,
        m.cpu,
        m.rss_mb
    );
}

async fn bench(env: &TestEnv, kind: &str) {
    let user = env.new_mail_user(&format!("bench-{kind}"));
    eprintln!("seeding the {kind} mailbox ...");
    let (n, bytes) = seed(env, &user, kind);
    let dir = std::env::temp_dir().join(unique_name(&format!("mailvault-bench-{kind}")));
    std::fs::create_dir_all(&dir).unwrap();
    let bucket = unique_name(&format!("bench-{kind}"));
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let key = dir.join("key");
    let bin = mailvault_binary();
    let k = Command::new(&bin)
        .args(["keygen", "--name", "mailvault.io/bench/archive", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(k.status.success());
    let public_key = dir.join("key.pub");
    std::fs::write(&public_key, &k.stdout).unwrap();
    let imap = format!(
        "imap://{}@{}:{}",
        user.name,
        env.imap_host(),
        env.imaps_port()
    );
    let ca = env.ca_path().display().to_string();
    let key_path = key.display().to_string();
    let archive_with = |binary: &std::path::Path, to: String| {
        let mut c = env.mailvault_s3_with(
            binary,
            S3Flavour::Versitygw,
            &[
                "archive",
                "--from",
                &imap,
                "--imap-tls",
                "required",
                "--imap-ca",
                &ca,
            ],
        );
        c.args(["--to", &to, "--key", &key_path, "--retain", "P1D"])
            .env("MAILVAULT_IMAP_PASSWORD", &user.password);
        c
    };
    eprintln!(
        "running mailvault and mbsync on {n} messages ({:.0} MB) ...",
        bytes as f64 / 1e6
    );
    let archive_to = |to: String| archive_with(&bin, to);
    let archive = || archive_to(format!("s3://{bucket}/bench"));
    let full = timed(archive());
    let rerun = timed(archive());
    // The auditor's side: read back, hash and classify every record.
    let public_key = public_key.display().to_string();
    let store = format!("s3://{bucket}/bench");
    let verify = env.mailvault_s3(
        S3Flavour::Versitygw,
        &["verify", &store, "--public-key", &public_key],
    );
    let verified = timed(verify);
    // The same job into a local directory: what mailvault costs without an S3 server beside it.
    let to_dir = timed(archive_to(format!("file:{}", dir.join("store").display())));
    let summary = full
        .stdout
        .lines()
        .filter(|l| l.starts_with("archived ") || l.starts_with("peak memory"))
        .collect::<Vec<_>>()
        .join("; ");
    let fs_dir = dir.join("fsync");
    let conf = mbsync_config(env, &user, &fs_dir, true);
    let mb_full = timed(mbsync(&conf));
    let mb_rerun = timed(mbsync(&conf));
    let nofs_dir = dir.join("nofsync");
    let conf_nofs = mbsync_config(env, &user, &nofs_dir, false);
    let mb_nofs = timed(mbsync(&conf_nofs));

    println!(
        "\n### {kind} mailbox: {n} messages, {:.1} MB\n",
        bytes as f64 / 1e6
    );
    println!("| run | wall s | msg/s | MB/s | CPU s | peak RSS MB |");
    println!("|---|---:|---:|---:|---:|---:|");
    row("mailvault archive → versitygw (full)", &full, n, bytes);
    row("mailvault archive (no change)", &rerun, n, bytes);
    row(
        "mailvault verify (every record read and hashed)",
        &verified,
        n,
        bytes,
    );
    row(
        "mailvault archive → file: directory (full)",
        &to_dir,
        n,
        bytes,
    );
    row(
        "mbsync → Maildir, FSync yes (default, full)",
        &mb_full,
        n,
        bytes,
    );
    row("mbsync (no change)", &mb_rerun, n, bytes);
    row("mbsync → Maildir, FSync no (full)", &mb_nofs, n, bytes);
    println!("\nmailvault: {summary}");

    // A/B against another build, on this same mailbox, alternating so that drift in the
    // machine's speed hits both alike: BENCH_BASELINE_BIN=/path/to/older/mailvault.
    if let Ok(baseline) = std::env::var("BENCH_BASELINE_BIN") {
        let baseline = std::path::PathBuf::from(baseline);
        println!("\n| full archive → versitygw, alternating | wall s | CPU s | peak RSS MB |");
        println!("|---|---:|---:|---:|");
        for round in 1..=2 {
            for (name, binary) in [("this build", &bin), ("baseline", &baseline)] {
                let fresh = unique_name(&format!("bench-ab-{kind}"));
                env.create_bucket(S3Flavour::Versitygw, &fresh, true).await;
                let t = timed(archive_with(binary, format!("s3://{fresh}/bench")));
                println!(
                    "| {name}, round {round} | {:.1} | {:.1} | {:.0} |",
                    t.wall, t.cpu, t.rss_mb
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::main]
async fn main() {
    let env = TestEnv::load();
    let which: Vec<String> = std::env::args().skip(1).collect();
    for kind in ["mixed", "small"] {
        if which.is_empty() || which.iter().any(|w| w == kind) {
            bench(&env, kind).await;
        }
    }
}
