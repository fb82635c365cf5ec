//! `make bench-resume`: what a run with no new mail costs on an archive whose log has N entries
//! (default 1,000,000): wall time and peak RSS of `mailvault archive` from an empty mbox into a
//! `file:` store, before and after the writer has a resume state.
//!
//! The log is generated, not archived: N ingest entries written as the writer writes them
//! (bundles under its MAC, a signed checkpoint, a finished run marker), without record objects
//! (`verify` would report them missing; the writer does not read them). Kept between runs in
//! `$TMPDIR/mailvault-resume-bench-N` (about 350 bytes an entry).
//!
//! Runs, each timed by GNU time: 1. no resume state yet (the whole log is read, as every run
//! did before), 2. and 3. from the resume state it left.

use mailvault::core::Hash;
use mailvault::core::checkpoint::CheckpointSigner;
use mailvault::core::entry::{EntryBody, LockMode, RecordId, RetainUntil};
use mailvault::core::layout::{RESUME_KEY, RUN_MARKER_KEY, checkpoint_key, record_key};
use mailvault::core::log::RecordLog;
use mailvault::core::mac::MacKind;
use mailvault::core::note::NoteSigner;
use mailvault::core::time::UnixTime;
use mailvault::store::fs::FsStore;
use mailvault::store::{ObjectMetadata, Store as _};
use mailvault::writer::trust;
use mailvault_tests::mailvault_binary;
use std::path::Path;
use std::process::Command;

const ORIGIN: &str = "mailvault.io/bench/resume";

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("mailvault-resume-bench-{n}"));
    let key_file = dir.join("signing.key");
    let store_dir = dir.join("store");
    if !dir.join("complete").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench directory");
        let started = std::time::Instant::now();
        generate(n, &store_dir, &key_file).await;
        std::fs::write(dir.join("complete"), b"").expect("bench marker");
        println!(
            "generated a log of {n} entries in {:.1} s ({})",
            started.elapsed().as_secs_f64(),
            store_dir.display()
        );
    }
    // Every run starts without a resume state, as the first run after an upgrade would.
    let _ = std::fs::remove_file(store_dir.join("objects").join(RESUME_KEY));
    let mbox = dir.join("empty.mbox");
    std::fs::write(&mbox, b"").expect("empty mbox");
    println!("no-new-mail runs of `mailvault archive` on a log of {n} entries (file: store):");
    for (run, what) in [
        (1, "no resume state: reads the whole log"),
        (2, "from the resume state"),
        (3, "from the resume state"),
    ] {
        let (seconds, kib) = timed_run(&store_dir, &key_file, &mbox);
        println!(
            "  run {run} ({what}): {seconds:.2} s, peak RSS {:.1} MB",
            kib as f64 / 1024.0
        );
    }
}

/// Writes N ingest entries, their bundles (with the writer's MAC), a signed checkpoint and a
/// finished run marker; the signing key goes to `key_file`.
async fn generate(n: u64, store_dir: &Path, key_file: &Path) {
    let signer = NoteSigner::new(ORIGIN, &[7; 32]).expect("bench key");
    mailvault::signing_key::write_signer_key(key_file, &signer).expect("key file");
    let mac = signer.mac_key();
    let store = FsStore::new(store_dir);
    let mut log = RecordLog::new();
    let now = UnixTime(1_795_836_120);
    for i in 0..n {
        let id = RecordId::from_hash(&Hash::of(&i.to_le_bytes()));
        log.append(
            now,
            id.clone(),
            EntryBody::Ingest {
                series: "MO-GS-003".into(),
                retain_until: RetainUntil::Until(UnixTime(now.0 + 3 * 365 * 86_400)),
                lock_mode: LockMode::Compliance,
                object_key: record_key(id.as_str()),
                object_version: "1".into(),
                stored_sha256: Hash::of(id.as_str().as_bytes()),
                stored_size: 2_000,
                original_commitment: Hash::of(&[i as u8]),
                dictionary: None,
                header_index: None,
            },
        )
        .expect("entry");
        if log.size().is_multiple_of(65_536) || log.size() == n {
            for bundle in log.take_bundles() {
                let metadata = trust::tagged(&mac, MacKind::Bundle, &bundle.key, &bundle.bytes);
                store
                    .put_immutable(&bundle.key, bundle.bytes, &metadata, now)
                    .await
                    .expect("bundle");
            }
        }
    }
    let mut checkpoints = CheckpointSigner::new(ORIGIN, signer, None);
    let note = checkpoints.sign(n, log.root(), &[]).expect("checkpoint");
    store
        .put_immutable(
            &checkpoint_key(n),
            note.into_bytes(),
            &ObjectMetadata::new(),
            now,
        )
        .await
        .expect("checkpoint object");
    let marker = serde_json::to_vec(&mailvault::writer::RunMarker {
        in_progress: false,
        run: "bench".into(),
    })
    .expect("run marker");
    let metadata = trust::tagged(&mac, MacKind::State, RUN_MARKER_KEY, &marker);
    store
        .put_mutable(RUN_MARKER_KEY, marker, &metadata)
        .await
        .expect("run marker object");
}

/// One `mailvault archive` run under GNU time: wall seconds and peak RSS in KiB.
fn timed_run(store_dir: &Path, key_file: &Path, mbox: &Path) -> (f64, u64) {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .arg(mailvault_binary())
        .arg("archive")
        .arg("--from")
        .arg(format!("mbox:{}", mbox.display()))
        .arg("--to")
        .arg(format!("file:{}", store_dir.display()))
        .arg("--key")
        .arg(key_file)
        .args(["--series", "MO-GS-003", "--retain", "P3Y"])
        .output()
        .expect("GNU time (apt-get install time) and the mailvault binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mailvault archive failed: {stderr}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let last = stderr.lines().last().unwrap_or_default();
    let mut fields = last.split_whitespace();
    let seconds = fields
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    let kib = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (seconds, kib)
}
