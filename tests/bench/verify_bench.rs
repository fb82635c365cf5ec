//! `make bench-verify`: how fast an auditor's `mailvault verify` reads an archive, and how
//! `mailvault archive` into S3 holds up when the S3 server is a network away.
//!
//! The mailboxes are the archive benchmark's (`small`: 50,000 short messages; `mixed`: 10,000
//! of mostly text with attachments), written as an mbox file and archived from it (no IMAP
//! server in the way) into a `file:` directory and into versitygw. Then:
//! - verify, this build and `BENCH_BASELINE_BIN` (an older build, e.g. main's) alternating, two
//!   rounds, on both stores: records/s and MB/s of original bytes, and the ratio;
//! - latency (`BENCH_DELAYS_MS`, default `20,80`): the same archive into a fresh bucket through a
//!   TCP proxy that delays every byte by half the round trip in each direction, against the
//!   loopback figure; with a baseline, both builds alternate at every round trip, each against
//!   its own loopback figure of the run.
//!
//! `BENCH_PHASES=latency` (or `verify`) runs one part only; the default is both.
//!
//! Needs only versitygw from the environment (`MAILVAULT_ENV_DIR`); unique bucket names, so it
//! runs beside other tests on a shared environment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

#[path = "common.rs"]
mod common;

use common::{Measured, timed};
use mailvault_tests::{S3Flavour, TestEnv, mailvault_binary, unique_name};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Writes the mailbox as an mbox file; returns (messages, original bytes).
fn write_mbox(kind: &str, path: &Path) -> (usize, u64) {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let (mut n, mut bytes) = (0usize, 0u64);
    common::for_each_message(kind, |_, _, m| {
        n += 1;
        bytes += m.len() as u64;
        out.write_all(b"From bench@city.example Mon Nov  2 09:00:00 2026\n")
            .unwrap();
        // The generator never starts a line with "From ", so nothing needs quoting.
        out.write_all(&m).unwrap();
        out.write_all(b"\n").unwrap();
    });
    out.flush().unwrap();
    (n, bytes)
}

/// A `mailvault` command against versitygw at `endpoint` (the server itself, or the proxy).
fn s3_command(env: &TestEnv, binary: &Path, endpoint: &str, args: &[&str]) -> Command {
    let mut c = Command::new(binary);
    c.args(args)
        .args(["--s3-endpoint", endpoint, "--s3-path-style"])
        .args(["--s3-region", env.var("S3_REGION")])
        .env("AWS_ACCESS_KEY_ID", env.var("VERSITYGW_ACCESS_KEY"))
        .env("AWS_SECRET_ACCESS_KEY", env.var("VERSITYGW_SECRET_KEY"))
        .env_remove("AWS_REGION");
    c
}

fn verify_row(name: &str, m: &Measured, n: usize, bytes: u64) {
    println!(
        "| {name:<44} | {:>7.1} | {:>9.0} | {:>6.0} | {:>6.1} | {:>7.0} |",
        m.wall,
        n as f64 / m.wall,
        bytes as f64 / 1e6 / m.wall,
        m.cpu,
        m.rss_mb
    );
}

/// Which parts of the benchmark run (`BENCH_PHASES`, default `verify,latency`).
#[derive(Clone, Copy)]
struct Phases {
    verify: bool,
    latency: bool,
}

async fn bench(env: &TestEnv, kind: &str, baseline: Option<&Path>, delays: &[u64], phases: Phases) {
    let dir = std::env::temp_dir().join(unique_name(&format!("mailvault-verify-bench-{kind}")));
    std::fs::create_dir_all(&dir).unwrap();
    let mbox = dir.join("mail.mbox");
    eprintln!("writing the {kind} mailbox ...");
    let (n, bytes) = write_mbox(kind, &mbox);
    let bin = mailvault_binary();
    let key = dir.join("key");
    let k = Command::new(&bin)
        .args(["keygen", "--name", "mailvault.io/bench/verify", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(k.status.success());
    let public_key = dir.join("key.pub");
    std::fs::write(&public_key, &k.stdout).unwrap();
    let (key, public_key) = (key.display().to_string(), public_key.display().to_string());
    let from = format!("mbox:{}", mbox.display());
    let archive_args = |to: &str| -> Vec<String> {
        [
            "archive",
            "--from",
            &from,
            "--to",
            to,
            "--key",
            &key,
            "--series",
            "MO-GS-003",
            "--retain",
            "P1D",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let endpoint = env.s3_endpoint(S3Flavour::Versitygw).to_owned();
    eprintln!("archiving {n} messages ({:.0} MB) ...", bytes as f64 / 1e6);
    let file_store = format!("file:{}", dir.join("store").display());
    let mut c = Command::new(&bin);
    c.args(archive_args(&file_store));
    let to_file = timed(c);
    println!(
        "\n### {kind} mailbox: {n} messages, {:.1} MB\n",
        bytes as f64 / 1e6
    );
    let mut builds: Vec<(&str, PathBuf)> = vec![("this build", bin.clone())];
    if let Some(b) = baseline {
        builds.push(("baseline", b.to_owned()));
    }
    let s3_store = if phases.verify {
        let bucket = unique_name(&format!("vbench-{kind}"));
        env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
        let to = format!("s3://{bucket}/bench");
        let args = archive_args(&to);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        timed(s3_command(env, &bin, &endpoint, &args));
        println!("| verify | wall s | records/s | MB/s | CPU s | peak RSS MB |");
        println!("|---|---:|---:|---:|---:|---:|");
        to
    } else {
        String::new()
    };
    let mut walls: std::collections::BTreeMap<(&str, &str), Vec<f64>> = Default::default();
    let rounds = if phases.verify { 2 } else { 0 };
    for round in 1..=rounds {
        for (name, binary) in &builds {
            for (store_name, store) in [("file:", &file_store), ("versitygw", &s3_store)] {
                let args = ["verify", store.as_str(), "--public-key", &public_key];
                let cmd = if store_name == "file:" {
                    let mut c = Command::new(binary);
                    c.args(args);
                    c
                } else {
                    s3_command(env, binary, &endpoint, &args)
                };
                let m = timed(cmd);
                assert!(m.stdout.contains("result: VERIFIED"), "{}", m.stdout);
                verify_row(
                    &format!("{name}, {store_name}, round {round}"),
                    &m,
                    n,
                    bytes,
                );
                walls.entry((*name, store_name)).or_default().push(m.wall);
            }
        }
    }
    if baseline.is_some() && phases.verify {
        for store_name in ["file:", "versitygw"] {
            let best = |b: &str| {
                walls[&(b, store_name)]
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min)
            };
            println!(
                "\nverify on {store_name}: this build is {:.2}× the baseline's speed (best of 2 each)",
                best("baseline") / best("this build")
            );
        }
    }

    if !phases.latency {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    // Every build at every round trip into a fresh bucket, the builds alternating, each
    // against its own loopback figure of this run.
    println!(
        "\n| archive → versitygw, {kind} | round trip | wall s | msg/s | MB/s | CPU s | of its loopback |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| file: directory, this build, for scale | - | {:.1} | {:.0} | {:.1} | {:.1} | - |",
        to_file.wall,
        n as f64 / to_file.wall,
        bytes as f64 / 1e6 / to_file.wall,
        to_file.cpu
    );
    let mut own_loopback: std::collections::BTreeMap<&str, f64> = Default::default();
    for rtt in std::iter::once(0).chain(delays.iter().copied()) {
        for (name, binary) in &builds {
            let fresh = unique_name(&format!("vbench-{kind}-{rtt}"));
            env.create_bucket(S3Flavour::Versitygw, &fresh, true).await;
            let via = if rtt == 0 {
                endpoint.clone()
            } else {
                let upstream = endpoint.trim_start_matches("http://").to_owned();
                mailvault_tests::delay_proxy::start(upstream, Duration::from_millis(rtt) / 2).await
            };
            let to = format!("s3://{fresh}/bench");
            let args = archive_args(&to);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let m = timed(s3_command(env, binary, &via, &args));
            let base = *own_loopback.entry(name).or_insert(m.wall);
            println!(
                "| {name} | {rtt} ms | {:.1} | {:.0} | {:.1} | {:.1} | {:.0}% |",
                m.wall,
                n as f64 / m.wall,
                bytes as f64 / 1e6 / m.wall,
                m.cpu,
                100.0 * base / m.wall
            );
            if rtt != 0 && rtt == delays[0] && *name == "this build" && phases.verify {
                // The auditor is remote too.
                let v = timed(s3_command(
                    env,
                    &bin,
                    &via,
                    &["verify", &to, "--public-key", &public_key],
                ));
                assert!(v.stdout.contains("result: VERIFIED"), "{}", v.stdout);
                println!(
                    "| verify through the {rtt} ms proxy, this build | {rtt} ms | {:.1} | {:.0} | {:.1} | {:.1} | - |",
                    v.wall,
                    n as f64 / v.wall,
                    bytes as f64 / 1e6 / v.wall,
                    v.cpu
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
    let baseline = std::env::var_os("BENCH_BASELINE_BIN").map(PathBuf::from);
    let delays: Vec<u64> = std::env::var("BENCH_DELAYS_MS")
        .unwrap_or_else(|_| "20,80".into())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .expect("BENCH_DELAYS_MS: milliseconds, comma-separated")
        })
        .collect();
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "verify,latency".into());
    let phases = Phases {
        verify: phases.split(',').any(|p| p.trim() == "verify"),
        latency: phases.split(',').any(|p| p.trim() == "latency"),
    };
    for kind in ["mixed", "small"] {
        if which.is_empty() || which.iter().any(|w| w == kind) {
            bench(&env, kind, baseline.as_deref(), &delays, phases).await;
        }
    }
}
