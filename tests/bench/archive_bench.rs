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

#[path = "common.rs"]
mod common;

use common::{Measured, timed};
use mailvault_tests::{MailUser, S3Flavour, TestEnv, mailvault_binary, unique_name};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Seeds a mailbox; returns (messages, bytes).
fn seed(env: &TestEnv, user: &MailUser, kind: &str) -> (usize, u64) {
    let (mut n, mut bytes) = (0usize, 0u64);
    common::for_each_message(kind, |i, folder, m| {
        n += 1;
        bytes += m.len() as u64;
        env.seed_message(user, folder, &m, if i % 3 == 0 { "S" } else { "" });
    });
    (n, bytes)
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
