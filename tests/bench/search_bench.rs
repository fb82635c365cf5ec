//! `make bench-search`: a records request on an archive of N records (default 1,000,000): wall
//! time and peak RSS of `mailvault ls | wc -l`, `mailvault plan` and `mailvault export` by a
//! query that matches one record in a thousand, on a `file:` store.
//!
//! `make bench-destroy` (`search-bench N --destroy D`): the same archive with D records whose
//! retention has ended (one in N/D): wall time and peak RSS of `mailvault plan` and of the
//! `mailvault destroy` run that destroys them (authorizations, deletions, tombstones,
//! certificate), then `ls` again.
//!
//! The archive is generated, not archived: N ingest entries (bundles under the writer's MAC, a
//! signed checkpoint), a header index object for every record, and record objects only for the
//! records the query matches and the records due (the export and the destruction read those;
//! the search reads only index objects). Kept between runs in
//! `$TMPDIR/mailvault-search-bench-N` (`…-destroy-bench-N-D`: a destruction changes it, so it
//! is generated again for each run).

use futures::StreamExt as _;
use mailvault::core::Hash;
use mailvault::core::checkpoint::CheckpointSigner;
use mailvault::core::entry::{EntryBody, LockMode, RecordId, RetainUntil};
use mailvault::core::layout::{checkpoint_key, index_key, record_key};
use mailvault::core::log::RecordLog;
use mailvault::core::mac::MacKind;
use mailvault::core::note::NoteSigner;
use mailvault::core::record::{SALT_LEN, commitment_from_digest};
use mailvault::core::records_request::{HeaderIndex, INDEX_SALT_LEN};
use mailvault::core::rules::MessageFacts;
use mailvault::core::time::UnixTime;
use mailvault::sidecar::Sidecar;
use mailvault::spool::Body;
use mailvault::store::fs::FsStore;
use mailvault::store::{ObjectMetadata, RecordPut, Store as _};
use mailvault::writer::trust;
use mailvault_tests::mailvault_binary;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};

const ORIGIN: &str = "mailvault.io/bench/search";
/// One record in this many matches the query.
const ONE_IN: u64 = 1000;
const POLICY: &str = "apiVersion: mailvault.io/v1alpha1\nkind: RetentionPolicy\nmetadata: {name: bench}\nspec:\n  defaultRule: {recordSeries: MO-GS-003, retain: P3Y, disposition: Destroy}\n";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let due: Option<u64> = args
        .iter()
        .position(|a| a == "--destroy")
        .and_then(|i| args.get(i + 1))
        .and_then(|a| a.parse().ok());
    if let Some(due) = due {
        destroy_bench(n, due).await;
        return;
    }
    let dir = std::env::temp_dir().join(format!("mailvault-search-bench-{n}"));
    let store_dir = dir.join("store");
    if !dir.join("complete").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench directory");
        let started = std::time::Instant::now();
        generate(n, None, &store_dir, &dir).await;
        std::fs::write(dir.join("complete"), b"").expect("bench marker");
        println!(
            "generated {n} records (log, index objects, {} record objects) in {:.1} s ({})",
            n.div_ceil(ONE_IN),
            started.elapsed().as_secs_f64(),
            store_dir.display()
        );
    }
    let store = format!("file:{}", store_dir.display());
    let public = dir.join("archive.pub").display().to_string();
    let policy = dir.join("policy.yaml").display().to_string();
    let export_key = dir.join("export.key").display().to_string();
    let out = dir.join("request");
    let _ = std::fs::remove_dir_all(&out);
    let out = out.display().to_string();
    println!("on an archive of {n} records (file: store):");
    let (s, kib, lines) = timed(&["ls", &store, "--public-key", &public]);
    println!(
        "  ls | wc -l ({lines} lines): {s:.2} s, peak RSS {:.1} MB",
        mb(kib)
    );
    let (s, kib, _) = timed(&["plan", &store, "--public-key", &public, "--policy", &policy]);
    println!("  plan: {s:.2} s, peak RSS {:.1} MB", mb(kib));
    let (s, kib, _) = timed(&[
        "export",
        &store,
        "--public-key",
        &public,
        "--from",
        "chief@police.city.example",
        "--out",
        &out,
        "--signing-key",
        &export_key,
    ]);
    let exported = std::fs::read_dir(Path::new(&out).join("messages"))
        .map(Iterator::count)
        .unwrap_or(0);
    println!(
        "  export --from (matches {exported}): {s:.2} s, peak RSS {:.1} MB",
        mb(kib)
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// An archive of `n` records of which `due` have reached the end of their retention: `plan`,
/// then the `destroy` run that destroys them, then `ls`.
async fn destroy_bench(n: u64, due: u64) {
    assert!(
        due > 0 && due <= n / 2,
        "--destroy D: between 1 and half of N"
    );
    let dir = std::env::temp_dir().join(format!("mailvault-destroy-bench-{n}-{due}"));
    let store_dir = dir.join("store");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    let started = std::time::Instant::now();
    generate(n, Some(n / due), &store_dir, &dir).await;
    println!(
        "generated {n} records ({due} due, with their record objects) in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        store_dir.display()
    );
    let store = format!("file:{}", store_dir.display());
    let public = dir.join("archive.pub").display().to_string();
    let key = dir.join("archive.key").display().to_string();
    let policy = dir.join("policy.yaml").display().to_string();
    println!("on an archive of {n} records with {due} due (file: store):");
    let (s, kib, _) = timed(&[
        "plan",
        &store,
        "--public-key",
        &public,
        "--policy",
        &policy,
        "--no-compare",
    ]);
    println!("  plan --no-compare: {s:.2} s, peak RSS {:.1} MB", mb(kib));
    let (s, kib, _) = timed(&["destroy", &store, "--key", &key, "--policy", &policy]);
    let left = std::fs::read_dir(store_dir.join("objects/records"))
        .map(Iterator::count)
        .unwrap_or(0);
    println!(
        "  destroy: {s:.2} s, peak RSS {:.1} MB ({left} record objects left)",
        mb(kib)
    );
    let (s, kib, lines) = timed(&["ls", &store, "--public-key", &public]);
    println!(
        "  ls | wc -l ({lines} lines) after: {s:.2} s, peak RSS {:.1} MB",
        mb(kib)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[allow(clippy::cast_precision_loss)] // megabytes for people
fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn facts(i: u64, matching: bool) -> (MessageFacts, Vec<u8>) {
    let (from, subject) = if matching {
        ("chief@police.city.example", format!("Budget {i}"))
    } else {
        ("clerk@city.example", format!("Routine {i}"))
    };
    let message = format!(
        "From: {from}\r\nTo: records@city.example\r\nSubject: {subject}\r\nMessage-ID: <b{i}@city.example>\r\n\r\nmessage {i}\r\n"
    )
    .into_bytes();
    let facts = MessageFacts {
        folder: "INBOX".into(),
        from: vec![from.into()],
        to: vec!["records@city.example".into()],
        subject,
        size: message.len() as u64,
        ..MessageFacts::default()
    };
    (facts, message)
}

/// Writes the log of N ingest entries, the index objects, the matching records, a signed
/// checkpoint, and the keys and policy the runs use. With `due_one_in`, one record in that many
/// (none of the matching ones) was kept until a day before the log's time and has its record
/// object: a destruction run destroys it.
async fn generate(n: u64, due_one_in: Option<u64>, store_dir: &Path, dir: &Path) {
    let signer = NoteSigner::new(ORIGIN, &[7; 32]).expect("bench key");
    std::fs::write(dir.join("archive.pub"), signer.verifier_key()).expect("public key");
    mailvault::signing_key::write_signer_key(&dir.join("archive.key"), &signer)
        .expect("archive key");
    let export = NoteSigner::new("records.city.example/export", &[9; 32]).expect("export key");
    mailvault::signing_key::write_signer_key(&dir.join("export.key"), &export).expect("key");
    std::fs::write(dir.join("policy.yaml"), POLICY).expect("policy");
    let mac = signer.mac_key();
    let store = FsStore::new(store_dir);
    let mut log = RecordLog::new();
    let now = UnixTime(1_795_836_120);
    let retain = UnixTime(now.0 + 3 * 365 * 86_400);
    let mut indexes = Vec::new();
    for i in 0..n {
        let id = RecordId::from_hash(&Hash::of(&i.to_le_bytes()));
        let matching = i % ONE_IN == 0;
        let due = due_one_in.is_some_and(|d| i % d == 1);
        let retain = if due {
            UnixTime(now.0 - 86_400)
        } else {
            retain
        };
        let (facts, message) = facts(i, matching);
        // Salted as the writer salts it; the entry commits to its hash.
        let mut index_salt = [0; INDEX_SALT_LEN];
        index_salt[..8].copy_from_slice(&i.to_le_bytes());
        let index = HeaderIndex::new(&facts, now, &index_salt).encode();
        let index_sha256 = Hash::of(&index);
        indexes.push((index_key(id.as_str()), index));
        let (stored_sha256, commitment) = if matching || due {
            let salt = [u8::try_from(i % 251).unwrap_or(0); SALT_LEN];
            let commitment = commitment_from_digest(&salt, &Hash::of(&message));
            let stored = zstd::encode_all(message.as_slice(), 3).expect("zstd");
            let sha256 = Hash::of(&stored);
            let sidecar = Sidecar {
                series: "MO-GS-003".into(),
                retain_until: RetainUntil::Until(retain),
                commitment,
                salt,
                folder: "INBOX".into(),
                identity: format!("bench/{i}"),
                location: format!("bench:{i}"),
                internal_date: None,
                flags: Vec::new(),
                original_size: message.len() as u64,
            }
            .to_map();
            store
                .put_record(RecordPut {
                    key: &record_key(id.as_str()),
                    body: Body::Memory(stored),
                    sha256,
                    retain_until: retain,
                    sidecar: &sidecar,
                    companion: None,
                })
                .await
                .expect("record");
            (sha256, commitment)
        } else {
            (Hash::of(id.as_str().as_bytes()), Hash::of(&[i as u8]))
        };
        log.append(
            now,
            id.clone(),
            EntryBody::Ingest {
                series: "MO-GS-003".into(),
                retain_until: RetainUntil::Until(retain),
                lock_mode: LockMode::None,
                object_key: record_key(id.as_str()),
                // The directory store's one version.
                object_version: "0".into(),
                stored_sha256,
                stored_size: 200,
                original_commitment: commitment,
                dictionary: None,
                header_index: Some(index_sha256),
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
            let store = &store;
            futures::stream::iter(std::mem::take(&mut indexes))
                .for_each_concurrent(16, |(key, bytes)| async move {
                    store
                        .put_mutable(&key, bytes, &ObjectMetadata::new())
                        .await
                        .expect("index");
                })
                .await;
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
}

/// One `mailvault` command under GNU time, its standard output counted in lines: wall
/// seconds, peak RSS in KiB, lines.
fn timed(args: &[&str]) -> (f64, u64, u64) {
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .arg(mailvault_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU time (apt-get install time) and the mailvault binary");
    let mut lines = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut stdout = child.stdout.take().expect("stdout");
    loop {
        let got = stdout.read(&mut buf).expect("reading stdout");
        if got == 0 {
            break;
        }
        lines += buf[..got].iter().filter(|b| **b == b'\n').count() as u64;
    }
    let out = child.wait_with_output().expect("waiting");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mailvault {args:?} failed: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let mut fields = last.split_whitespace();
    let seconds = fields
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    let kib = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (seconds, kib, lines)
}
