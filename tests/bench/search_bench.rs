//! `make bench-search`: a records request on an archive of N records (default 1,000,000): wall
//! time and peak RSS of `mailvault ls | wc -l`, `mailvault plan` and `mailvault export` by a
//! query that matches one record in a thousand, on a `file:` store, or with `BENCH_STORE=versitygw`
//! in a fresh bucket of the environment's versitygw (`MAILVAULT_ENV_DIR`; Object Lock on).
//!
//! `make bench-destroy` (`search-bench N --destroy D`): the same archive with D records whose
//! retention has ended (one in N/D): wall time and peak RSS of `mailvault plan` and of the
//! `mailvault destroy` run that destroys them (authorizations, deletions, tombstones,
//! certificate), then `ls` again (`BENCH_STORE=versitygw` too; `BENCH_RTT_MS` puts that round trip
//! between the destruction run and versitygw, through a delaying proxy).
//!
//! `make bench-verify-since` (`search-bench N --verify-since K`): an auditor's yearly check of an
//! archive of N records of which K were logged after the checkpoint the auditor kept from the
//! last audit: wall time and peak RSS of `mailvault verify --since` (consistency, the K new
//! records read in full, a random sample of the older ones) and, beside it, of the full
//! `mailvault verify`. Every record has its object here (the sample may pick any of them).
//!
//! The archive is generated, not archived: N ingest entries (bundles under the writer's MAC, a
//! signed checkpoint), a header index object for every record, and record objects only for the
//! records the query matches and the records due (the export and the destruction read those;
//! the search reads only index objects). A `file:` archive is kept between runs in
//! `$TMPDIR/mailvault-search-bench-N` (`…-destroy-bench-N-D`: a destruction changes it, so it
//! is generated again for each run); a versitygw one is generated into a new bucket each run.
//!
//! Records due for destruction are locked (and logged as kept) until a few seconds after they
//! were written: S3 refuses a lock date in the past, and destruction needs it to have passed.

use futures::StreamExt as _;
use mailvault::core::Hash;
use mailvault::core::checkpoint::CheckpointSigner;
use mailvault::core::entry::{EntryBody, RetainUntil};
use mailvault::core::layout::{checkpoint_key, index_key, record_key};
use mailvault::core::log::RecordLog;
use mailvault::core::mac::MacKind;
use mailvault::core::note::NoteSigner;
use mailvault::core::record::{SALT_LEN, commitment_from_digest, record_id};
use mailvault::core::records_request::{HeaderIndex, INDEX_SALT_LEN};
use mailvault::core::rules::MessageFacts;
use mailvault::core::time::UnixTime;
use mailvault::sidecar::Sidecar;
use mailvault::spool::Body;
use mailvault::store::fs::FsStore;
use mailvault::store::{ObjectMetadata, RecordPut, Store};
use mailvault::writer::trust;
use mailvault_tests::{S3Flavour, TestEnv, mailvault_binary, unique_name};
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};

const ORIGIN: &str = "mailvault.io/bench/search";
/// One record in this many matches the query.
const ONE_IN: u64 = 1000;
/// A due record's lock (and logged retain-until) ends this long after it is written.
const DUE_AFTER_SECS: i64 = 5;
const POLICY: &str = "apiVersion: mailvault.io/v1alpha1\nkind: RetentionPolicy\nmetadata: {name: bench}\nspec:\n  defaultRule: {recordSeries: MO-GS-003, retain: P3Y, disposition: Destroy}\n";

/// What [`generate`] synthesises beside the log and the index objects.
#[derive(Clone, Copy, Default)]
struct Shape {
    /// One record in this many is due for destruction (and has its record object).
    due_one_in: Option<u64>,
    /// Every record has its record object, not only the matching and due ones.
    every_record_object: bool,
    /// A signed checkpoint of the log at this size is also written, and saved for the auditor
    /// as `trusted.checkpoint` in the bench directory.
    trusted_at: Option<u64>,
}

/// Where the synthesised archive lives, and how `mailvault` is pointed at it.
enum Target {
    /// A directory (`file:`).
    File(std::path::PathBuf),
    /// A bucket with Object Lock in the environment's versitygw.
    Versitygw { env: TestEnv, bucket: String },
}

impl Target {
    /// `BENCH_STORE=versitygw` for a fresh bucket in the environment's versitygw; else `dir`.
    async fn from_env(dir: &Path) -> Self {
        match std::env::var("BENCH_STORE").as_deref() {
            Ok("versitygw") => {
                let env = TestEnv::load();
                let bucket = unique_name("search-bench");
                env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
                Self::Versitygw { env, bucket }
            }
            Ok("file") | Err(_) => Self::File(dir.join("store")),
            Ok(other) => panic!("BENCH_STORE={other}: file or versitygw"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::File(_) => "file: store",
            Self::Versitygw { .. } => "versitygw",
        }
    }

    fn url(&self) -> String {
        match self {
            Self::File(dir) => format!("file:{}", dir.display()),
            Self::Versitygw { bucket, .. } => format!("s3://{bucket}/bench"),
        }
    }

    /// Synthesises the archive (see [`generate`]) into this target.
    async fn generate(&self, n: u64, shape: Shape, dir: &Path) {
        match self {
            Self::File(store) => generate(&FsStore::new(store), n, shape, dir).await,
            Self::Versitygw { env, bucket } => {
                let store = env.s3_store(S3Flavour::Versitygw, bucket, "bench");
                generate(&store, n, shape, dir).await;
            }
        }
    }

    /// Record objects in the store.
    async fn records_left(&self) -> usize {
        let keys = match self {
            Self::File(store) => FsStore::new(store).list_keys("records/").await,
            Self::Versitygw { env, bucket } => {
                env.s3_store(S3Flavour::Versitygw, bucket, "bench")
                    .list_keys("records/")
                    .await
            }
        };
        keys.expect("listing record objects").len()
    }

    /// `mailvault ARGS` against this target, under GNU time (see [`timed`]).
    fn timed(&self, args: &[&str]) -> Timed {
        self.timed_via(args, None)
    }

    /// As [`Self::timed`], with versitygw reached at `endpoint` (a delaying proxy) when given.
    fn timed_via(&self, args: &[&str], endpoint: Option<&str>) -> Timed {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%e %M"]).arg(mailvault_binary()).args(args);
        if let Self::Versitygw { env, .. } = self {
            let endpoint = endpoint.unwrap_or(env.s3_endpoint(S3Flavour::Versitygw));
            c.args(["--s3-endpoint", endpoint])
                .args(["--s3-path-style", "--s3-region", env.var("S3_REGION")])
                .env("AWS_ACCESS_KEY_ID", env.var("VERSITYGW_ACCESS_KEY"))
                .env("AWS_SECRET_ACCESS_KEY", env.var("VERSITYGW_SECRET_KEY"))
                .env_remove("AWS_REGION");
        }
        timed(c, args)
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    if let Some(due) = flag_value(&args, "--destroy") {
        destroy_bench(n, due).await;
        return;
    }
    if let Some(new) = flag_value(&args, "--verify-since") {
        verify_since_bench(n, new).await;
        return;
    }
    let dir = std::env::temp_dir().join(format!("mailvault-search-bench-{n}"));
    let target = Target::from_env(&dir).await;
    let what = format!(
        "{n} records (log, index objects, {} record objects)",
        n.div_ceil(ONE_IN)
    );
    generate_kept(&target, n, Shape::default(), &dir, &what).await;
    let store = target.url();
    let public = dir.join("archive.pub").display().to_string();
    let policy = dir.join("policy.yaml").display().to_string();
    println!("on an archive of {n} records ({}):", target.name());
    let Timed { s, kib, lines, .. } = target.timed(&["ls", &store, "--public-key", &public]);
    println!(
        "  ls | wc -l ({lines} lines): {s:.2} s, peak RSS {:.1} MB",
        mb(kib)
    );
    // The comparison reads every record's object back; here most have none, and S3 refuses
    // the placeholder version id the log names for them.
    let no_compare = matches!(target, Target::Versitygw { .. });
    let mut plan = vec!["plan", &store, "--public-key", &public, "--policy", &policy];
    if no_compare {
        plan.push("--no-compare");
    }
    let Timed { s, kib, .. } = target.timed(&plan);
    let flag = if no_compare { " --no-compare" } else { "" };
    println!("  plan{flag}: {s:.2} s, peak RSS {:.1} MB", mb(kib));
    export_matches(&target, &store, &public, &dir);
}

/// The number after `flag` on the command line, if any.
fn flag_value(args: &[String], flag: &str) -> Option<u64> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1)?.parse().ok()
}

/// Generates the archive into `target` unless `dir` holds a complete one: a directory archive
/// is kept for the next run, a bucket is new each run. `what` names it in the line printed.
async fn generate_kept(target: &Target, n: u64, shape: Shape, dir: &Path, what: &str) {
    if matches!(target, Target::File(_)) && dir.join("complete").exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("bench directory");
    let started = std::time::Instant::now();
    target.generate(n, shape, dir).await;
    std::fs::write(dir.join("complete"), b"").expect("bench marker");
    println!(
        "generated {what} in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        target.url()
    );
}

/// `mailvault export --from …` of the one record in [`ONE_IN`] that matches, timed.
fn export_matches(target: &Target, store: &str, public: &str, dir: &Path) {
    let export_key = dir.join("export.key").display().to_string();
    let out = dir.join("request");
    let _ = std::fs::remove_dir_all(&out);
    let out = out.display().to_string();
    let Timed { s, kib, .. } = target.timed(&[
        "export",
        store,
        "--public-key",
        public,
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
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    let target = Target::from_env(&dir).await;
    let started = std::time::Instant::now();
    let shape = Shape {
        due_one_in: Some(n / due),
        ..Shape::default()
    };
    target.generate(n, shape, &dir).await;
    println!(
        "generated {n} records ({due} due, with their record objects) in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        target.url()
    );
    // The last due record's lock ends DUE_AFTER_SECS after it was written.
    std::thread::sleep(std::time::Duration::from_secs(
        DUE_AFTER_SECS.unsigned_abs() + 1,
    ));
    let store = target.url();
    let public = dir.join("archive.pub").display().to_string();
    let key = dir.join("archive.key").display().to_string();
    let policy = dir.join("policy.yaml").display().to_string();
    println!(
        "on an archive of {n} records with {due} due ({}):",
        target.name()
    );
    let Timed { s, kib, lines, .. } = target.timed(&["ls", &store, "--public-key", &public]);
    println!(
        "  ls | wc -l ({lines} lines): {s:.2} s, peak RSS {:.1} MB",
        mb(kib)
    );
    export_matches(&target, &store, &public, &dir);
    let Timed { s, kib, .. } = target.timed(&[
        "plan",
        &store,
        "--public-key",
        &public,
        "--policy",
        &policy,
        "--no-compare",
    ]);
    println!("  plan --no-compare: {s:.2} s, peak RSS {:.1} MB", mb(kib));
    // BENCH_RTT_MS: the destruction run reaches versitygw through a proxy that adds this round
    // trip, as a remote S3 would (its requests per record are what a round trip multiplies).
    let rtt_ms: u64 = std::env::var("BENCH_RTT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let via = match &target {
        Target::Versitygw { env, .. } if rtt_ms > 0 => {
            let upstream = env
                .s3_endpoint(S3Flavour::Versitygw)
                .trim_start_matches("http://")
                .to_owned();
            let one_way = std::time::Duration::from_millis(rtt_ms) / 2;
            Some(mailvault_tests::delay_proxy::start(upstream, one_way).await)
        }
        _ => None,
    };
    let through = if via.is_some() {
        format!(", through a {rtt_ms} ms round trip")
    } else {
        String::new()
    };
    let Timed { s, kib, .. } = target.timed_via(
        &["destroy", &store, "--key", &key, "--policy", &policy],
        via.as_deref(),
    );
    let left = target.records_left().await;
    println!(
        "  destroy{through}: {s:.2} s, peak RSS {:.1} MB ({left} record objects left)",
        mb(kib)
    );
    let Timed { s, kib, lines, .. } = target.timed(&["ls", &store, "--public-key", &public]);
    println!(
        "  ls | wc -l ({lines} lines) after: {s:.2} s, peak RSS {:.1} MB",
        mb(kib)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An archive of `n` records, `new` of them logged after the checkpoint an auditor kept:
/// `verify --since` that checkpoint, then the full `verify`, each timed.
async fn verify_since_bench(n: u64, new: u64) {
    assert!(new > 0 && new < n, "--verify-since K: between 1 and N - 1");
    let dir = std::env::temp_dir().join(format!("mailvault-verify-since-bench-{n}-{new}"));
    let target = Target::from_env(&dir).await;
    let shape = Shape {
        every_record_object: true,
        trusted_at: Some(n - new),
        ..Shape::default()
    };
    let what = format!(
        "{n} records with their objects, a checkpoint at {} and one at {n},",
        n - new
    );
    generate_kept(&target, n, shape, &dir, &what).await;
    let store = target.url();
    let public = dir.join("archive.pub").display().to_string();
    let trusted = dir.join("trusted.checkpoint").display().to_string();
    println!(
        "on an archive of {n} records, {new} logged since the auditor's checkpoint ({}):",
        target.name()
    );
    let since = target.timed(&[
        "verify",
        &store,
        "--public-key",
        &public,
        "--since",
        &trusted,
    ]);
    println!(
        "  verify --since: {:.2} s, peak RSS {:.1} MB",
        since.s,
        mb(since.kib)
    );
    for line in since
        .text
        .iter()
        .filter(|l| l.contains("sample") || l.starts_with("  "))
    {
        println!("    | {line}");
    }
    let full = target.timed(&["verify", &store, "--public-key", &public]);
    println!(
        "  verify (every record): {:.2} s, peak RSS {:.1} MB",
        full.s,
        mb(full.kib)
    );
    if matches!(target, Target::Versitygw { .. }) {
        let _ = std::fs::remove_dir_all(&dir);
    }
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
/// checkpoint, and the keys and policy the runs use; what else, `shape` says. A due record
/// (none of the matching ones) is kept until [`DUE_AFTER_SECS`] after it is written and has its
/// record object: a destruction run destroys it.
async fn generate<S: Store>(store: &S, n: u64, shape: Shape, dir: &Path) {
    let signer = NoteSigner::new(ORIGIN, &[7; 32]).expect("bench key");
    std::fs::write(dir.join("archive.pub"), signer.verifier_key()).expect("public key");
    mailvault::signing_key::write_signer_key(&dir.join("archive.key"), &signer)
        .expect("archive key");
    let export = NoteSigner::new("records.city.example/export", &[9; 32]).expect("export key");
    mailvault::signing_key::write_signer_key(&dir.join("export.key"), &export).expect("key");
    std::fs::write(dir.join("policy.yaml"), POLICY).expect("policy");
    let mac = signer.mac_key();
    let mut checkpoints = CheckpointSigner::new(ORIGIN, signer, None);
    let lock_mode = store.preflight().await.expect("store preflight").lock_mode;
    let mut log = RecordLog::new();
    let now = mailvault::unix_now();
    let retain = UnixTime(now.0 + 3 * 365 * 86_400);
    // Log objects stay locked past the benchmark's runs (a store's lock must be in the future).
    let log_lock = UnixTime(now.0 + 86_400);
    let mut indexes = Vec::new();
    for i in 0..n {
        // As the writer names it: verify checks a record's id against its identity.
        let identity = format!("bench/{i}");
        let id = record_id(ORIGIN, &identity);
        let matching = i % ONE_IN == 0;
        let due = shape.due_one_in.is_some_and(|d| i % d == 1);
        let retain = if due {
            UnixTime(mailvault::unix_now().0 + DUE_AFTER_SECS)
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
        let (stored_sha256, stored_size, commitment, object_version) =
            if matching || due || shape.every_record_object {
                let salt = [u8::try_from(i % 251).unwrap_or(0); SALT_LEN];
                let commitment = commitment_from_digest(&salt, &Hash::of(&message));
                let stored = zstd::encode_all(message.as_slice(), 3).expect("zstd");
                let sha256 = Hash::of(&stored);
                let stored_size = stored.len() as u64;
                let sidecar = Sidecar {
                    series: "MO-GS-003".into(),
                    retain_until: RetainUntil::Until(retain),
                    commitment,
                    salt,
                    folder: "INBOX".into(),
                    identity,
                    location: format!("bench:{i}"),
                    internal_date: None,
                    flags: Vec::new(),
                    original_size: message.len() as u64,
                }
                .to_map();
                let version = store
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
                (sha256, stored_size, commitment, version)
            } else {
                // No object: what the log says of it is never read back.
                let absent = (Hash::of(id.as_str().as_bytes()), Hash::of(&[i as u8]));
                (absent.0, 200, absent.1, "0".to_owned())
            };
        log.append(
            now,
            id.clone(),
            EntryBody::Ingest {
                series: "MO-GS-003".into(),
                retain_until: RetainUntil::Until(retain),
                lock_mode,
                object_key: record_key(id.as_str()),
                object_version,
                stored_sha256,
                stored_size,
                original_commitment: commitment,
                dictionary: None,
                header_index: Some(index_sha256),
            },
        )
        .expect("entry");
        let trusted_here = shape.trusted_at == Some(log.size());
        if log.size().is_multiple_of(65_536) || log.size() == n || trusted_here {
            for bundle in log.take_bundles() {
                let metadata = trust::tagged(&mac, MacKind::Bundle, &bundle.key, &bundle.bytes);
                store
                    .put_immutable(&bundle.key, bundle.bytes, &metadata, log_lock)
                    .await
                    .expect("bundle");
            }
            futures::stream::iter(std::mem::take(&mut indexes))
                .for_each_concurrent(16, |(key, bytes)| async move {
                    store
                        .put_mutable(&key, bytes, &ObjectMetadata::new())
                        .await
                        .expect("index");
                })
                .await;
        }
        if trusted_here {
            let size = log.size();
            let note = checkpoints.sign(size, log.root(), &[]).expect("checkpoint");
            std::fs::write(dir.join("trusted.checkpoint"), &note).expect("trusted checkpoint");
            store
                .put_immutable(
                    &checkpoint_key(size),
                    note.into_bytes(),
                    &ObjectMetadata::new(),
                    log_lock,
                )
                .await
                .expect("checkpoint object");
        }
    }
    let proof = match shape.trusted_at {
        Some(size) => log
            .tree()
            .consistency_proof(size, n)
            .expect("consistency proof"),
        None => Vec::new(),
    };
    let note = checkpoints.sign(n, log.root(), &proof).expect("checkpoint");
    store
        .put_immutable(
            &checkpoint_key(n),
            note.into_bytes(),
            &ObjectMetadata::new(),
            log_lock,
        )
        .await
        .expect("checkpoint object");
}

/// What [`timed`] measured of one command.
struct Timed {
    /// Wall seconds.
    s: f64,
    /// Peak RSS in KiB.
    kib: u64,
    /// Lines on standard output.
    lines: u64,
    /// The first [`KEPT_LINES`] of them.
    text: Vec<String>,
}

/// How many lines of a command's output [`Timed`] keeps (`ls` prints one per record).
const KEPT_LINES: usize = 64;

/// One `mailvault` command under GNU time (`command`, run with `args`). `warning:` lines on
/// standard output are printed (an export that names what is odd exits 1 and is still timed);
/// any other failure stops the benchmark.
fn timed(mut command: Command, args: &[&str]) -> Timed {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU time (apt-get install time) and the mailvault binary");
    let mut lines = 0u64;
    let mut text = Vec::new();
    let mut warnings = Vec::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = Vec::new();
    loop {
        line.clear();
        if stdout.read_until(b'\n', &mut line).expect("reading stdout") == 0 {
            break;
        }
        lines += 1;
        if text.len() < KEPT_LINES {
            text.push(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        if line.starts_with(b"warning:") {
            warnings.push(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
    }
    let out = child.wait_with_output().expect("waiting");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warned = out.status.code() == Some(1) && !warnings.is_empty();
    assert!(
        out.status.success() || warned,
        "mailvault {args:?} failed: {stderr}"
    );
    if !warnings.is_empty() {
        println!("  {} warning lines; the first:", warnings.len());
        for w in warnings.iter().take(3) {
            println!("    {w}");
        }
    }
    let last = stderr.lines().last().unwrap_or_default();
    let mut fields = last.split_whitespace();
    let seconds = fields
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    let kib = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Timed {
        s: seconds,
        kib,
        lines,
        text,
    }
}
