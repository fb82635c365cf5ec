//! The quick path with no servers, through the real binary: archive the bundled example mail
//! into a local directory, archive again (nothing new), verify, export byte for byte, prove and
//! check the proof offline; then tamper and see verification fail with exit status 1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mailvault(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailvault"))
        .args(args)
        .output()
        .expect("running mailvault")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn examples() -> PathBuf {
    // This checkout's directory (set by cargo when it runs the test), not the one the binary
    // was built in: the build cache is shared between checkouts.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../examples/mail")
}

struct Workdir(PathBuf);

impl Workdir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("mailvault-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn p(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Archives the examples; returns (store, public key path, record ids).
fn archived(w: &Workdir) -> (String, String, Vec<String>) {
    let key = w.p("key");
    let keygen = mailvault(&["keygen", "--name", "mailvault.io/test/quick", "--out", &key]);
    assert!(keygen.status.success(), "{}", text(&keygen));
    let public = w.p("key.pub");
    std::fs::write(&public, &keygen.stdout).unwrap();
    let store = format!("file:{}", w.p("store"));
    let from = format!("eml:{}", examples().display());
    let run = mailvault(&[
        "archive",
        "--from",
        &from,
        "--to",
        &store,
        "--key",
        &key,
        "--series",
        "MO-GS-003",
        "--retain",
        "P3Y",
    ]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("archived 4 new records"),
        "{}",
        text(&run)
    );
    let ids = record_ids(&store, &public);
    (store, public, ids)
}

/// The record ids of an archive, as `ls` lists them.
fn record_ids(store: &str, public: &str) -> Vec<String> {
    let ls = mailvault(&["ls", store, "--public-key", public]);
    assert!(ls.status.success(), "{}", text(&ls));
    String::from_utf8_lossy(&ls.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Exports each record to a file in `w`; returns their bytes.
fn export_each(w: &Workdir, store: &str, public: &str, ids: &[String]) -> Vec<Vec<u8>> {
    ids.iter()
        .map(|id| {
            let out = w.p(&format!("{id}.eml"));
            let e = mailvault(&[
                "export",
                store,
                "--record",
                id,
                "--public-key",
                public,
                "--out",
                &out,
            ]);
            assert!(e.status.success(), "{}", text(&e));
            std::fs::read(&out).unwrap()
        })
        .collect()
}

#[test]
fn archive_again_verify_export_prove() {
    let w = Workdir::new("happy");
    let (store, public, ids) = archived(&w);
    assert_eq!(ids.len(), 4);

    let again = mailvault(&[
        "archive",
        "--from",
        &format!("eml:{}", examples().display()),
        "--to",
        &store,
        "--key",
        &w.p("key"),
    ]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .contains("archived 0 new records (4 already archived"),
        "{}",
        text(&again)
    );

    let verify = mailvault(&["verify", &store, "--public-key", &public]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("result: VERIFIED"));
    let json = mailvault(&["verify", &store, "--public-key", &public, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["records"].as_array().unwrap().len(), 4);

    // Every example comes back byte for byte.
    let mut originals: Vec<Vec<u8>> = walk(&examples());
    let mut exported = export_each(&w, &store, &public, &ids);
    originals.sort();
    exported.sort();
    assert_eq!(originals, exported);

    let proof = w.p("proof.json");
    let p = mailvault(&[
        "prove",
        &store,
        "--record",
        &ids[0],
        "--out",
        &proof,
        "--public-key",
        &public,
    ]);
    assert!(p.status.success(), "{}", text(&p));
    let ok = mailvault(&["verify-proof", &proof, "--public-key", &public]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("the enclosed message is the one archived")
    );

    // A proof whose message was swapped fails offline.
    let mut bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&proof).unwrap()).unwrap();
    bundle["message"] = serde_json::Value::String("U3ViamVjdDogZm9yZ2VkDQoNCg==".into());
    std::fs::write(&proof, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let bad = mailvault(&["verify-proof", &proof, "--public-key", &public]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
}

fn walk(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(std::fs::read(&p).unwrap());
        }
    }
    out
}

#[test]
fn tampering_fails_verification_naming_the_record() {
    let w = Workdir::new("tamper");
    let (store, public, ids) = archived(&w);
    let dir = Path::new(store.strip_prefix("file:").unwrap()).join("objects");
    // Swap one record's bytes for another's, delete a second, add an unlogged object.
    std::fs::copy(
        dir.join("records").join(&ids[1]),
        dir.join("records").join(&ids[0]),
    )
    .unwrap();
    std::fs::remove_file(dir.join("records").join(&ids[2])).unwrap();
    std::fs::write(dir.join("records/intruder"), b"x").unwrap();
    let v = mailvault(&["verify", &store, "--public-key", &public]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(out.contains(&format!("TAMPERED {}", ids[0])), "{out}");
    assert!(out.contains(&format!("MISSING {}", ids[2])), "{out}");
    assert!(out.contains("UNLOGGED_OBJECT records/intruder"), "{out}");

    // A truncated log bundle and an edited checkpoint are log faults.
    let bundle = dir.join("log/tile/entries/000.p/4");
    let bytes = std::fs::read(&bundle).unwrap();
    std::fs::write(&bundle, &bytes[..bytes.len() - 10]).unwrap();
    let cp = dir.join("checkpoints/4");
    let note = std::fs::read_to_string(&cp).unwrap();
    std::fs::write(&cp, note.replacen("\n4\n", "\n5\n", 1)).unwrap();
    let v = mailvault(&["verify", &store, "--public-key", &public]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(out.contains("MALFORMED_BUNDLE"), "{out}");
    assert!(out.contains("BAD_SIGNATURE"), "{out}");

    // With the log damaged, writing on top of it is refused.
    let again = mailvault(&[
        "archive",
        "--from",
        &format!("eml:{}", examples().display()),
        "--to",
        &store,
        "--key",
        &w.p("key"),
    ]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("damaged"),
        "{}",
        text(&again)
    );
}

#[test]
fn bad_input_is_a_usage_error() {
    let w = Workdir::new("usage");
    let (store, public, _) = archived(&w);
    for args in [
        vec!["verify", "nowhere:/x", "--public-key", public.as_str()],
        vec![
            "verify",
            store.as_str(),
            "--public-key",
            "/nonexistent/key.pub",
        ],
        vec![
            "export",
            store.as_str(),
            "--record",
            "no-such-record",
            "--public-key",
            public.as_str(),
        ],
        vec![
            "archive",
            "--from",
            "pop3://x",
            "--to",
            store.as_str(),
            "--key",
            "/nonexistent",
        ],
    ] {
        let o = mailvault(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(!o.stderr.is_empty(), "{args:?}: no message");
    }
    let key = w.p("key");
    let bad_retain = mailvault(&[
        "archive",
        "--from",
        &format!("eml:{}", examples().display()),
        "--to",
        &store,
        "--key",
        &key,
        "--retain",
        "3 years",
    ]);
    assert_eq!(bad_retain.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad_retain.stderr).contains("ISO 8601"),
        "{}",
        text(&bad_retain)
    );
    // A verifier key for another archive: nothing verifies.
    let other = w.p("other");
    let o = mailvault(&[
        "keygen",
        "--name",
        "mailvault.io/test/other",
        "--out",
        &other,
    ]);
    std::fs::write(w.p("other.pub"), &o.stdout).unwrap();
    let v = mailvault(&["verify", &store, "--public-key", &w.p("other.pub")]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
}

/// A scanned document of exactly `len` bytes with LF line ends, as an mbox holds it.
fn large_message(len: usize) -> Vec<u8> {
    let mut m = b"From: scanner@city.example\nSubject: large scan\n\n".to_vec();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u32 = 7;
    while m.len() < len {
        for _ in 0..76 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            m.push(alphabet[(x >> 16) as usize % 64]);
        }
        m.push(b'\n');
    }
    m.truncate(len);
    m.push(b'\n');
    m
}

fn peak_mib(run: &Output) -> usize {
    String::from_utf8_lossy(&run.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("peak memory (RSS): "))
        .and_then(|l| l.trim_end_matches(" MiB").parse().ok())
        .unwrap_or_else(|| panic!("no peak memory line: {}", text(run)))
}

/// A 48 MiB message in an mbox (spooled while it is split out) and as an .eml file (read in
/// place): archived below its own size in memory, exported byte for byte, no spool file left.
#[test]
fn large_local_messages_are_archived_within_bounded_memory() {
    const LARGE: usize = 48 * 1024 * 1024;
    let w = Workdir::new("large");
    let key = w.p("key");
    let keygen = mailvault(&["keygen", "--name", "mailvault.io/test/large", "--out", &key]);
    assert!(keygen.status.success(), "{}", text(&keygen));
    let public = w.p("key.pub");
    std::fs::write(&public, &keygen.stdout).unwrap();
    let large = large_message(LARGE);
    let small = b"From: a@city.example\nSubject: small\n\nhello\n".to_vec();
    let mut mbox = Vec::new();
    for m in [&small, &large, &small] {
        mbox.extend_from_slice(b"From a@city.example Sat Nov 28 03:00:00 2026\n");
        mbox.extend_from_slice(m);
        mbox.push(b'\n');
    }
    std::fs::write(w.p("box.mbox"), &mbox).unwrap();
    std::fs::create_dir_all(w.p("eml")).unwrap();
    std::fs::write(w.p("eml/scan.eml"), &large).unwrap();
    let spool = w.p("spool");

    for (source, records) in [
        (format!("mbox:{}", w.p("box.mbox")), 2),
        (format!("eml:{}", w.p("eml")), 1),
    ] {
        let store = format!("file:{}", w.p(&format!("store-{records}")));
        let run = mailvault(&[
            "archive",
            "--from",
            &source,
            "--to",
            &store,
            "--key",
            &key,
            "--spool-dir",
            &spool,
        ]);
        assert!(run.status.success(), "{}", text(&run));
        assert!(
            String::from_utf8_lossy(&run.stdout)
                .contains(&format!("archived {records} new records")),
            "the same small message twice in an mbox is one record: {}",
            text(&run)
        );
        let peak = peak_mib(&run);
        assert!(peak * 1024 * 1024 < LARGE, "{source}: peak {peak} MiB");
        assert_eq!(std::fs::read_dir(&spool).map_or(0, Iterator::count), 0);

        let exported = export_each(&w, &store, &public, &record_ids(&store, &public));
        assert!(
            exported.contains(&large),
            "{source}: the large message is not byte for byte"
        );
    }
    assert!(std::path::Path::new(&w.p("eml/scan.eml")).exists());
}

/// VERIFIED means every present record can be exported and proven: a corrupted salt, a
/// deleted sidecar and an unreadable sidecar each make their record UNPROVABLE (exit 1), and
/// `export` of those records fails too. The report stays deterministic.
#[test]
fn a_corrupted_salt_or_a_lost_sidecar_is_unprovable() {
    let w = Workdir::new("sidecar");
    let (store, public, ids) = archived(&w);
    let sidecars = Path::new(store.strip_prefix("file:").unwrap()).join("sidecars/records");
    // One hex digit of the salt changed (the sidecar is still well-formed).
    let path = sidecars.join(format!("{}.json", ids[0]));
    let mut sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let salt = sidecar["mailvault-salt"].as_str().unwrap().to_owned();
    let flipped = if salt.starts_with('0') { "1" } else { "0" };
    sidecar["mailvault-salt"] = serde_json::Value::String(format!("{flipped}{}", &salt[1..]));
    std::fs::write(&path, serde_json::to_vec(&sidecar).unwrap()).unwrap();
    // One sidecar deleted, one that is not JSON.
    std::fs::remove_file(sidecars.join(format!("{}.json", ids[1]))).unwrap();
    std::fs::write(sidecars.join(format!("{}.json", ids[2])), b"{not json").unwrap();

    let v = mailvault(&["verify", &store, "--public-key", &public]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    let out = String::from_utf8_lossy(&v.stdout);
    for id in &ids[..3] {
        assert!(out.contains(&format!("UNPROVABLE {id}")), "{out}");
    }
    assert!(out.contains("do not open the logged commitment"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("PRESENT_OK") && l.ends_with(" 1")),
        "{out}"
    );
    assert!(out.contains("result: VERIFICATION FAILED"), "{out}");
    for id in &ids[..3] {
        let e = mailvault(&[
            "export",
            &store,
            "--record",
            id,
            "--public-key",
            &public,
            "--out",
            &w.p("out.eml"),
        ]);
        assert_ne!(e.status.code(), Some(0), "{}", text(&e));
    }

    let a = mailvault(&["verify", &store, "--public-key", &public, "--json"]);
    let b = mailvault(&["verify", &store, "--public-key", &public, "--json"]);
    assert_eq!(a.status.code(), Some(1));
    assert_eq!(a.stdout, b.stdout, "verify --json must be deterministic");
    let report: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(report["verified"], false);
    assert_eq!(report["counts"]["UNPROVABLE"], 3);
}

/// `keygen` prints the key's fingerprint, `verify` prints the fingerprint of the key it audits
/// against: the auditor compares the two (docs/guide-auditor.md).
#[test]
fn keygen_and_verify_print_the_same_fingerprint() {
    let w = Workdir::new("fingerprint");
    let key = w.p("key");
    let keygen = mailvault(&["keygen", "--name", "mailvault.io/test/fp", "--out", &key]);
    assert!(keygen.status.success(), "{}", text(&keygen));
    let stderr = String::from_utf8_lossy(&keygen.stderr);
    let fingerprint = stderr
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap_or_else(|| panic!("{}", text(&keygen)))
        .to_owned();
    assert!(
        fingerprint.starts_with("mailvault.io/test/fp+") && fingerprint.contains(" sha256:"),
        "{fingerprint}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let public = w.p("key.pub");
    std::fs::write(&public, &keygen.stdout).unwrap();
    let store = format!("file:{}", w.p("store"));
    let v = mailvault(&["verify", &store, "--public-key", &public]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    assert!(
        String::from_utf8_lossy(&v.stdout).starts_with(&format!("public key: {fingerprint}\n")),
        "{}",
        text(&v)
    );
    let json = mailvault(&["verify", &store, "--public-key", &public, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["public_key_fingerprint"], fingerprint.as_str());
}

/// `--trusted-checkpoint`: a checkpoint saved from one audit is accepted by the next audit of
/// the same log grown further, and refuses a log rewritten from scratch with the same key
/// (which, without it, verifies: only a checkpoint kept outside the system catches a fork by
/// someone holding the key).
#[test]
fn a_trusted_checkpoint_catches_a_rewritten_log() {
    let w = Workdir::new("trusted");
    let key = w.p("key");
    let keygen = mailvault(&[
        "keygen",
        "--name",
        "mailvault.io/test/trusted",
        "--out",
        &key,
    ]);
    assert!(keygen.status.success(), "{}", text(&keygen));
    let public = w.p("key.pub");
    std::fs::write(&public, &keygen.stdout).unwrap();
    let store_dir = w.p("store");
    let store = format!("file:{store_dir}");
    let archive = |from: &str| {
        let run = mailvault(&[
            "archive",
            "--from",
            &format!("eml:{}", examples().join(from).display()),
            "--to",
            &store,
            "--key",
            &key,
            "--series",
            "MO-GS-003",
            "--retain",
            "P3Y",
        ]);
        assert!(run.status.success(), "{}", text(&run));
    };
    archive("INBOX");
    let v = mailvault(&["verify", &store, "--public-key", &public]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    // The auditor keeps the newest checkpoint, outside the audited system.
    let trusted = w.p("trusted-checkpoint");
    std::fs::copy(format!("{store_dir}/objects/checkpoints/3"), &trusted).unwrap();

    // Happy path: more mail archived since; the log extends the trusted checkpoint.
    archive("Sent");
    let v = mailvault(&[
        "verify",
        &store,
        "--public-key",
        &public,
        "--trusted-checkpoint",
        &trusted,
    ]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));

    // The whole archive replaced by a new history signed with the same key: Sent first.
    std::fs::remove_dir_all(&store_dir).unwrap();
    archive("Sent");
    archive("INBOX");
    let plain = mailvault(&["verify", &store, "--public-key", &public]);
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain));
    let v = mailvault(&[
        "verify",
        &store,
        "--public-key",
        &public,
        "--trusted-checkpoint",
        &trusted,
    ]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("TRUSTED_CHECKPOINT_INCONSISTENT"),
        "{}",
        text(&v)
    );
}
