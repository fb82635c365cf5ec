//! Benchmark of the record log (not a test): builds a log of N ingest entries as the pipeline
//! would (bundles and checkpoints written to a directory), then verifies it in a separate
//! process that streams the bundles back one at a time, and measures inclusion proofs.
//!
//! `cargo bench -p mailvault-core --bench record_log [-- N]` (default N = 1,000,000).
//! Prints wall time and peak RSS (`VmHWM`) of each phase.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss
)]

use mailvault_core::checkpoint::CheckpointSigner;
use mailvault_core::entry::{EntryBody, LockMode, RecordId, RetainUntil};
use mailvault_core::layout::checkpoint_key;
use mailvault_core::log::RecordLog;
use mailvault_core::merkle::verify_inclusion;
use mailvault_core::note::{NoteSigner, NoteVerifier};
use mailvault_core::verify::{LogListing, StoredVersion, Trust, Verifier};
use mailvault_core::{Hash, UnixTime};
use std::path::{Path, PathBuf};
use std::time::Instant;

const ORIGIN: &str = "mailvault.io/bench/archive";
const T0: i64 = 1_795_836_120;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn signer() -> CheckpointSigner {
    CheckpointSigner::new(ORIGIN, NoteSigner::new(ORIGIN, &[9; 32]).unwrap(), None)
}

fn stored_sha(i: u64) -> Hash {
    Hash::of(&i.to_be_bytes())
}

fn object_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(key.replace('/', "__"))
}

fn build(n: u64, dir: &Path) {
    let start = Instant::now();
    let mut log = RecordLog::new();
    let mut signer = signer();
    let mut bytes_written = 0u64;
    // Checkpoint every 10,000 entries, as a pipeline batch would.
    for i in 0..n {
        log.append(
            UnixTime(T0 + i.cast_signed()),
            RecordId::new(format!("20261128-{i:012}")).unwrap(),
            EntryBody::Ingest {
                series: "MO-GS-003 Correspondence, general".into(),
                retain_until: RetainUntil::Until(UnixTime(T0 + 3 * 365 * 86_400)),
                lock_mode: LockMode::Compliance,
                object_key: format!("records/20261128-{i:012}"),
                object_version: format!("{:032x}", i * 7919),
                stored_sha256: stored_sha(i),
                stored_size: 4096 + i % 1000,
                original_commitment: Hash::of(&(i ^ 0xdead).to_be_bytes()),
                dictionary: None,
                header_index: None,
            },
        )
        .unwrap();
        if (i + 1) % 10_000 == 0 || i + 1 == n {
            for b in log.take_bundles() {
                bytes_written += b.bytes.len() as u64;
                std::fs::write(object_path(dir, &b.key), &b.bytes).unwrap();
            }
            let last = signer.last_signed().map_or(0, |h| h.size);
            let proof = if last == 0 {
                vec![]
            } else {
                log.tree().consistency_proof(last, log.size()).unwrap()
            };
            let note = signer.sign(log.size(), log.root(), &proof).unwrap();
            std::fs::write(object_path(dir, &checkpoint_key(log.size())), note).unwrap();
        }
    }
    let build_s = start.elapsed().as_secs_f64();
    println!(
        "build   {n} entries in {build_s:.2} s ({:.0} entries/s), {:.1} MB of bundles, peak RSS {:.0} MB",
        n as f64 / build_s,
        bytes_written as f64 / 1e6,
        peak_rss_mb()
    );

    // Inclusion proofs against the final tree.
    let root = log.root();
    let samples = 10_000u64;
    let mut max_len = 0;
    let t = Instant::now();
    let proofs: Vec<(u64, Vec<Hash>)> = (0..samples)
        .map(|s| {
            let idx = (s * 104_729) % n;
            let p = log.tree().inclusion_proof(idx, n).unwrap();
            max_len = max_len.max(p.len());
            (idx, p)
        })
        .collect();
    let gen_us = t.elapsed().as_secs_f64() * 1e6 / samples as f64;
    let t = Instant::now();
    for (idx, p) in &proofs {
        verify_inclusion(*idx, n, &log.tree().leaf(*idx).unwrap(), p, &root).unwrap();
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / samples as f64;
    println!(
        "proof   inclusion proof of at most {max_len} hashes = {} bytes; built in {gen_us:.1} us, verified in {verify_us:.1} us (mean of {samples})",
        max_len * 32
    );
}

fn verify(dir: &Path, n: u64) {
    let start = Instant::now();
    let key = NoteVerifier::parse(&signer().verifier_key()).unwrap();
    let mut keys: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().replace("__", "/"))
        .collect();
    keys.sort();
    let listing = LogListing::from_keys(keys.iter().map(String::as_str));
    let mut v = Verifier::new(Trust {
        keys: vec![key],
        origin: Some(ORIGIN.into()),
        trusted_checkpoint: None,
        now: UnixTime(T0 + n.cast_signed() + 1),
    });
    for k in &listing.checkpoints {
        v.add_checkpoint(k, &std::fs::read(object_path(dir, k)).unwrap());
    }
    // Stream bundles one index at a time, as the S3 adapter does.
    for (index, group) in &listing.bundles {
        let full = group
            .full
            .as_ref()
            .map(|k| std::fs::read(object_path(dir, k)).unwrap());
        let partial_bytes: Vec<(u64, Vec<u8>)> = group
            .partials
            .iter()
            .map(|(w, k)| (*w, std::fs::read(object_path(dir, k)).unwrap()))
            .collect();
        let partials: Vec<(u64, &[u8])> = partial_bytes
            .iter()
            .map(|(w, b)| (*w, b.as_slice()))
            .collect();
        v.add_bundle(*index, full.as_deref(), &partials);
    }
    let log_s = start.elapsed().as_secs_f64();
    let log_rss = peak_rss_mb();
    // The store's listing, streamed in key order as ListObjectVersions pages arrive: one locked
    // version per record, hashes read.
    let listing = (0..n).map(|i| {
        (
            format!("records/20261128-{i:012}"),
            vec![StoredVersion {
                version_id: format!("{:032x}", i * 7919),
                delete_marker: false,
                sha256: Some(stored_sha(i)),
                lock_mode: Some(LockMode::Compliance),
                retain_until: Some(UnixTime(T0 + 3 * 365 * 86_400)),
                legal_hold: false,
                opened: None,
            }],
        )
    });
    let mut classified = 0u64;
    let report = v.finish_streaming(listing, &mut |_| classified += 1);
    let total_s = start.elapsed().as_secs_f64();
    assert!(report.verified(), "{}", report.to_text());
    assert_eq!(report.log_size, n);
    println!(
        "verify  log (chain, tree, {} checkpoints) in {log_s:.2} s, peak RSS {log_rss:.0} MB",
        report.checkpoints_verified
    );
    println!(
        "verify  + classify {} records against an inventory of {n} objects: {total_s:.2} s total, peak RSS {:.0} MB",
        classified,
        peak_rss_mb()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; ignore flags.
    let positional: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match positional.first().map(|s| s.as_str()) {
        Some("build-phase") => build(positional[1].parse().unwrap(), Path::new(positional[2])),
        Some("verify-phase") => verify(Path::new(positional[2]), positional[1].parse().unwrap()),
        other => {
            let n: u64 = other.map_or(1_000_000, |s| s.parse().expect("N"));
            let dir =
                std::env::temp_dir().join(format!("mailvault-bench-log-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let exe = std::env::current_exe().unwrap();
            // Separate processes, so each phase's peak RSS is its own.
            for phase in ["build-phase", "verify-phase"] {
                let status = std::process::Command::new(&exe)
                    .args([phase, &n.to_string(), dir.to_str().unwrap()])
                    .status()
                    .unwrap();
                assert!(status.success(), "{phase} failed");
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
