//! Hostile and broken mail, archived byte for byte without crashing and within bounded memory,
//! through the real path: Dovecot -> `mailvault archive --policy` -> versitygw, and the local
//! readers (mbox, Maildir, .eml) -> `file:`. The policy uses every matcher kind, so every
//! matcher sees every hostile message; a message whose headers cannot be parsed takes the
//! default rule and is counted. Each record is exported back and compared byte for byte.
//!
//! The corpus is generated here from a fixed seed (nothing large is committed). The large
//! message is `MAILVAULT_HOSTILE_LARGE_MIB` MiB (default 200), written to the mailbox as it is
//! generated.

use mailvault_tests::{MailUser, S3Flavour, TestEnv, mailvault_binary, unique_name};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every matcher kind, in an order that lets each hostile message land under a known rule.
const POLICY: &str = r#"
apiVersion: mailvault.io/v1alpha1
kind: RetentionPolicy
metadata:
  name: hostile
  namespace: records
spec:
  rules:
    - name: folder
      recordSeries: "H-1 Folder"
      match: { folders: ["Hostile/*"] }
      retain: P1D
      disposition: Destroy
    - name: from
      recordSeries: "H-2 From"
      match: { from: ["attacker@evil.example"] }
      retain: P1D
      disposition: Destroy
    - name: to
      recordSeries: "H-3 To"
      match: { to: ["records@city.example"] }
      retain: P1D
      disposition: Destroy
    - name: cc
      recordSeries: "H-4 Cc domain"
      match: { cc: ["@victims.example"] }
      retain: P1D
      disposition: Destroy
    - name: subject
      recordSeries: "H-5 Subject"
      match: { subjectRegex: "^(a|aa)+$" }
      retain: P1D
      disposition: Destroy
    - name: header
      recordSeries: "H-6 Header"
      match: { header: { name: x-hostile, equals: "10000 lines" } }
      retain: P1D
      disposition: Destroy
    - name: size
      recordSeries: "H-7 Size"
      match: { minSize: 50000000, maxSize: 4000000000 }
      retain: P1D
      disposition: Destroy
    - name: attachment
      recordSeries: "H-8 Attachment"
      match: { hasAttachment: true }
      retain: P1D
      disposition: Destroy
  defaultRule:
    recordSeries: "H-0 Default"
    retain: P1D
    disposition: Destroy
"#;

/// A seeded pseudo-random stream (xorshift64*): the same corpus on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next().to_le_bytes()[3]).collect()
    }
}

/// One hostile message: where it goes, its bytes, the rule it must land under (`None`: any,
/// as long as it is archived and exported intact) and whether its headers are unparseable.
struct Hostile {
    name: &'static str,
    folder: &'static str,
    bytes: Vec<u8>,
    rule: Option<&'static str>,
    unparseable: bool,
    /// Dovecot delivers these bytes unchanged over IMAP (no NUL, no bare CR or LF).
    imap_clean: bool,
}

fn nested_multipart(depth: usize) -> Vec<u8> {
    let mut m = b"From: nobody@city.example\r\nCc: Victim <v@Victims.Example>\r\nSubject: nested\r\nMIME-Version: 1.0\r\n".to_vec();
    for i in 0..depth {
        m.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n")
                .as_bytes(),
        );
    }
    m.extend_from_slice(b"Content-Type: text/plain\r\n\r\ninnermost\r\n");
    for i in (0..depth).rev() {
        m.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
    }
    m
}

/// The small hostile messages (the large one is generated separately).
fn corpus() -> Vec<Hostile> {
    let mut rng = Rng(0x5eed_0014);
    let mut ten_thousand = Vec::new();
    for i in 0..10_000 {
        ten_thousand.extend_from_slice(format!("X-Filler-{i}: {}\r\n", i * 7919).as_bytes());
    }
    ten_thousand
        .extend_from_slice(b"X-Hostile: 10000\r\n lines\r\n\r\nten thousand header lines\r\n");
    let mut megabyte_line = b"From: attacker@evil.example\r\nSubject: ".to_vec();
    megabyte_line.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    megabyte_line.extend_from_slice(b"\r\n\r\nbody after a 1 MiB header line\r\n");
    let mut redos = b"From: someone@city.example\r\nSubject: ".to_vec();
    redos.extend(std::iter::repeat_n(b'a', 4000));
    redos.extend_from_slice(b"\r\n\r\nthe subject regex must stay linear\r\n");
    // Random binary in a body, NULs and all, behind a From the rules know.
    let mut binary = b"From: attacker@evil.example\r\nSubject: binary body\r\n\r\n".to_vec();
    binary.extend(rng.bytes(64 * 1024));
    binary.extend_from_slice(b"\r\n");
    vec![
        Hostile {
            name: "no header fields, a blank first line",
            folder: "INBOX",
            bytes: b"\r\nThis message has no header fields at all.\r\n".to_vec(),
            rule: Some("default"),
            unparseable: true,
            imap_clean: true,
        },
        Hostile {
            name: "no header fields, no blank line",
            folder: "INBOX",
            bytes: b"just some text\r\nwith no colon anywhere\r\n".to_vec(),
            rule: Some("default"),
            unparseable: true,
            imap_clean: true,
        },
        Hostile {
            name: "NUL bytes in headers and body",
            folder: "INBOX",
            bytes: b"From: attacker@evil.example\r\nSubject: a\x00b\r\n\r\nbody\x00with\x00nuls\r\n"
                .to_vec(),
            rule: Some("from"),
            unparseable: false,
            imap_clean: false,
        },
        Hostile {
            name: "random binary body",
            folder: "INBOX",
            bytes: binary,
            rule: Some("from"),
            unparseable: false,
            imap_clean: false,
        },
        Hostile {
            name: "bare CR and LF mixes",
            folder: "INBOX",
            bytes: b"From: attacker@evil.example\r\nX-Mix: cr\rX-Mix2: lf\nSubject: mixed\r\n\nbody\rline\n\r\rend\r\n"
                .to_vec(),
            rule: None,
            unparseable: false,
            imap_clean: false,
        },
        Hostile {
            name: "10,000 header lines",
            folder: "INBOX",
            bytes: ten_thousand,
            rule: Some("header"),
            unparseable: false,
            imap_clean: true,
        },
        Hostile {
            name: "a 1 MiB header line",
            folder: "INBOX",
            bytes: megabyte_line,
            rule: Some("default"),
            unparseable: true,
            imap_clean: true,
        },
        Hostile {
            name: "1,000-deep multipart nesting",
            folder: "INBOX",
            bytes: nested_multipart(1000),
            rule: Some("cc"),
            unparseable: false,
            imap_clean: true,
        },
        Hostile {
            name: "invalid encodings and encoded words",
            folder: "INBOX",
            bytes: b"Subject: =?utf-8?B?!!!not-base64?= =?x-unknown?Q?=FF=FE?= =?utf-8?Q?=E2=82?=\r\n\
                     To: =?utf-8?Q?=E2=82?= <Records@City.Example>\r\n\
                     Date: Thu, 31 Feb 2026 25:61:61 +9999\r\n\
                     MIME-Version: 1.0\r\n\
                     Content-Type: text/plain; charset=\"no-such-charset\"\r\n\
                     Content-Transfer-Encoding: base64\r\n\r\n!!! not base64 at all ===\r\n"
                .to_vec(),
            rule: Some("to"),
            unparseable: false,
            imap_clean: true,
        },
        Hostile {
            name: "8-bit header bytes that are not UTF-8",
            folder: "INBOX",
            bytes: b"From: \xff\xfe <x@city.example>\r\nSubject: \xc3\x28 bad utf-8\r\n\r\n\xff\r\n".to_vec(),
            rule: Some("default"),
            unparseable: false,
            imap_clean: true,
        },
        Hostile {
            name: "a subject built to make a backtracking regex explode",
            folder: "INBOX",
            bytes: redos,
            rule: Some("subject"),
            unparseable: false,
            imap_clean: true,
        },
        Hostile {
            name: "an attachment with no closing boundary",
            folder: "INBOX",
            bytes: b"From: clerk@city.example\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
                     Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
                     Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"r.pdf\"\r\n\r\n\
                     JVBERi0xLjQK\r\n"
                .to_vec(),
            rule: Some("attachment"),
            unparseable: false,
            imap_clean: true,
        },
        Hostile {
            name: "a folder the folder rule names",
            folder: "Hostile/Folder",
            bytes: b"From: attacker@evil.example\r\nSubject: in a named folder\r\n\r\nx\r\n".to_vec(),
            rule: Some("folder"),
            unparseable: false,
            imap_clean: true,
        },
    ]
}

/// Writes the large message (`mib` MiB: headers, then pseudo-random base64 lines) to `out` as
/// it is generated, ending in CRLF; returns its SHA-256 and length.
fn write_large(out: &mut dyn std::io::Write, mib: usize) -> std::io::Result<(String, u64)> {
    let len = mib * 1024 * 1024 - 2;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut sha = sha2::Sha256::new();
    let head = b"From: scanner@city.example\r\nSubject: a very large scan\r\nMIME-Version: 1.0\r\n\
        Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n";
    let mut written = 0usize;
    let mut emit = |bytes: &[u8], out: &mut dyn std::io::Write| -> std::io::Result<bool> {
        let take = bytes.len().min(len - written);
        out.write_all(&bytes[..take])?;
        sha.update(&bytes[..take]);
        written += take;
        Ok(written < len)
    };
    emit(head, out)?;
    let mut rng = Rng(0x1a49_e000);
    let mut block = Vec::with_capacity(78 * 1024);
    loop {
        block.clear();
        for _ in 0..1024 {
            for _ in 0..10 {
                let r = rng.next();
                for k in 0..8 {
                    if block.len() % 78 < 76 {
                        block.push(alphabet[((r >> (k * 6)) & 63) as usize]);
                    }
                }
            }
            while block.len() % 78 != 76 {
                block.push(b'A');
            }
            block.extend_from_slice(b"\r\n");
        }
        if !emit(&block, out)? {
            break;
        }
    }
    out.write_all(b"\r\n")?;
    sha.update(b"\r\n");
    Ok((hex(&sha.finalize()), len as u64 + 2))
}

fn large_mib() -> usize {
    std::env::var("MAILVAULT_HOSTILE_LARGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn sha256_of_file(path: &Path) -> String {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).unwrap();
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    hex(&sha.finalize())
}

fn peak_mib(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak memory (RSS): "))
        .and_then(|l| l.trim_end_matches(" MiB").parse().ok())
        .unwrap_or_else(|| panic!("no peak memory line in {stdout}"))
}

/// Bodies of every message of `user`'s mailbox as Dovecot delivers them (`BODY.PEEK[]`), by
/// content hash, skipping messages larger than `max` bytes.
async fn delivered(env: &TestEnv, user: &MailUser, max: u32) -> BTreeMap<String, Vec<u8>> {
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
        let Ok(mbox) = session.examine(&name).await else {
            continue;
        };
        if mbox.exists == 0 {
            continue;
        }
        let sizes: Vec<(u32, u32)> = session
            .uid_fetch("1:*", "(UID RFC822.SIZE)")
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .iter()
            .filter_map(|f| Some((f.uid?, f.size?)))
            .collect();
        for (uid, size) in sizes {
            if size > max {
                continue;
            }
            let fetches: Vec<_> = session
                .uid_fetch(uid.to_string(), "BODY.PEEK[]")
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            let body = fetches[0].body().unwrap().to_vec();
            out.insert(hex(&sha2::Sha256::digest(&body)), body);
        }
    }
    session.logout().await.unwrap();
    out
}

/// A scratch directory with a signing key.
struct Workdir {
    dir: PathBuf,
}

impl Workdir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(name));
        std::fs::create_dir_all(&dir).unwrap();
        let w = Self { dir };
        let keygen = std::process::Command::new(mailvault_binary())
            .args(["keygen", "--name", "mailvault.io/test/hostile", "--out"])
            .arg(w.path("key"))
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{}", text(&keygen));
        std::fs::write(w.path("key.pub"), &keygen.stdout).unwrap();
        std::fs::write(w.path("policy.yaml"), POLICY).unwrap();
        w
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Verifies `store`, exports every record to a file and returns the files by content hash
/// (each hash must occur once).
fn verify_and_export(
    w: &Workdir,
    store: &str,
    command: &dyn Fn(&[&str]) -> std::process::Command,
) -> BTreeMap<String, PathBuf> {
    let public = w.p("key.pub");
    let o = command(&["verify", store, "--public-key", &public, "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "verify: {}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out = BTreeMap::new();
    for r in report["records"].as_array().unwrap() {
        let id = r["record"].as_str().unwrap();
        let file = w.path(&format!("export-{id}.eml"));
        let o = command(&[
            "export",
            store,
            "--record",
            id,
            "--public-key",
            &public,
            "--out",
            &file.display().to_string(),
        ])
        .output()
        .unwrap();
        assert!(o.status.success(), "export {id}: {}", text(&o));
        let sha = sha256_of_file(&file);
        assert!(
            out.insert(sha.clone(), file).is_none(),
            "two records hold {sha}"
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_mail_through_dovecot_is_archived_byte_exact_and_classified() {
    let env = TestEnv::load();
    let user = env.new_mail_user("hostile");
    let bucket = unique_name("hostile");
    env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
    let w = Workdir::new("mv-hostile");
    let corpus = corpus();
    for m in &corpus {
        env.seed_message(&user, m.folder, &m.bytes, "");
    }
    let mib = large_mib();
    let started = std::time::Instant::now();
    let mut large = None;
    env.seed_message_with(&user, "INBOX", "", |f| {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        large = Some(write_large(&mut out, mib)?);
        out.flush()
    });
    let (large_sha, large_len) = large.unwrap();
    eprintln!("generated a {mib} MiB message in {:.1?}", started.elapsed());

    let store = format!("s3://{bucket}/hostile");
    let command = |args: &[&str]| {
        let mut c = env.mailvault_s3(S3Flavour::Versitygw, args);
        c.env("MAILVAULT_IMAP_PASSWORD", &user.password);
        c
    };
    let spool = w.path("spool");
    let started = std::time::Instant::now();
    let o = command(&[
        "archive",
        "--from",
        &format!(
            "imap://{}@{}:{}",
            user.name,
            env.imap_host(),
            env.imaps_port()
        ),
        "--imap-ca",
        &env.ca_path().display().to_string(),
        "--to",
        &store,
        "--key",
        &w.p("key"),
        "--policy",
        &w.p("policy.yaml"),
        "--spool-dir",
        &spool.display().to_string(),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("archive took {:.1?}:\n{stdout}", started.elapsed());
    let total = corpus.len() + 1;
    assert!(
        stdout.contains(&format!("archived {total} new records")),
        "{stdout}"
    );
    let unparseable = corpus.iter().filter(|m| m.unparseable).count();
    assert!(
        stdout.contains(&format!("{unparseable} archived with unparseable headers")),
        "{stdout}"
    );
    let peak = peak_mib(&stdout);
    assert!(
        peak < 160,
        "a {mib} MiB message and a 1 MiB header line should not need {peak} MiB"
    );
    assert_eq!(
        std::fs::read_dir(&spool).map_or(0, Iterator::count),
        0,
        "spool files left behind"
    );

    // What Dovecot delivers is what is kept: NULs become 0x80 over IMAP (docs/pipeline.md),
    // so the small messages are compared with the server's own bytes, and the clean ones with
    // the seeded bytes too.
    let served = delivered(&env, &user, 16 * 1024 * 1024).await;
    assert_eq!(
        served.len(),
        corpus.len(),
        "Dovecot does not serve the corpus"
    );
    for m in corpus.iter().filter(|m| m.imap_clean) {
        let sha = hex(&sha2::Sha256::digest(&m.bytes));
        assert!(
            served.contains_key(&sha),
            "{}: Dovecot changed its bytes",
            m.name
        );
    }
    let exported = verify_and_export(&w, &store, &command);
    assert_eq!(exported.len(), total);
    for (sha, bytes) in &served {
        let file = exported
            .get(sha)
            .unwrap_or_else(|| panic!("a delivered message was not exported byte for byte: {sha}"));
        assert_eq!(&std::fs::read(file).unwrap(), bytes);
    }
    assert!(exported.contains_key(&large_sha), "the {mib} MiB message");
    assert_eq!(
        std::fs::metadata(&exported[&large_sha]).unwrap().len(),
        large_len
    );

    // Each record's rule, from its sidecar (S3 user metadata on the record's version).
    let s3 = env.s3_client(S3Flavour::Versitygw);
    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("hostile/records/")
        .send()
        .await
        .unwrap();
    let mut rules = BTreeMap::new();
    for object in listed.contents() {
        let head = s3
            .head_object()
            .bucket(&bucket)
            .key(object.key().unwrap())
            .send()
            .await
            .unwrap();
        let meta = head.metadata().unwrap();
        let sha = meta["mailvault-identity"]
            .rsplit("%00")
            .next()
            .unwrap()
            .to_owned();
        rules.insert(sha, meta["mailvault-rule"].clone());
    }
    assert_eq!(rules.len(), total);
    assert_eq!(rules[&large_sha], "size");
    for m in &corpus {
        let Some(rule) = m.rule else { continue };
        let sha = hex(&sha2::Sha256::digest(&m.bytes));
        // A message Dovecot changed is found by the rule of its only delivered form.
        let got = rules.get(&sha).cloned().unwrap_or_else(|| {
            assert!(!m.imap_clean, "{}: not archived", m.name);
            String::new()
        });
        if m.imap_clean {
            assert_eq!(got, rule, "{}", m.name);
        }
    }
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rules.values() {
        *by_rule.entry(r.as_str()).or_default() += 1;
    }
    for rule in [
        "folder",
        "from",
        "to",
        "cc",
        "subject",
        "header",
        "size",
        "attachment",
        "default",
    ] {
        assert!(
            by_rule.contains_key(rule),
            "no record under {rule}: {by_rule:?}"
        );
    }
}

/// Writes the corpus as an mbox (mboxrd: `>From ` quoting, a blank line after each message).
fn write_mbox(path: &Path, messages: &[&[u8]]) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for m in messages {
        out.write_all(b"From hostile@city.example Thu Jan  1 00:00:00 2026\n")
            .unwrap();
        for line in m.split_inclusive(|&b| b == b'\n') {
            let quoted = line
                .iter()
                .position(|&b| b != b'>')
                .is_some_and(|i| line[i..].starts_with(b"From "));
            if quoted {
                out.write_all(b">").unwrap();
            }
            out.write_all(line).unwrap();
        }
        out.write_all(b"\n").unwrap();
    }
}

/// The same corpus (with a 24 MiB message in place of the largest) through each local reader
/// into a `file:` store: every byte comes back, NULs and bare CRs included.
#[test]
fn hostile_mail_through_the_local_readers_is_archived_byte_exact() {
    let w = Workdir::new("mv-hostile-local");
    let corpus = corpus();
    let mut large = Vec::new();
    write_large(&mut large, 24).unwrap();
    let mut messages: Vec<(&str, &[u8])> =
        corpus.iter().map(|m| (m.folder, &m.bytes[..])).collect();
    messages.push(("INBOX", &large));
    // mbox needs a line end at the end of each message; every message of the corpus has one.
    assert!(messages.iter().all(|(_, b)| b.ends_with(b"\n")));

    let eml = w.path("eml");
    let maildir = w.path("maildir");
    for (i, (folder, bytes)) in messages.iter().enumerate() {
        let sub = if *folder == "INBOX" {
            String::new()
        } else {
            (*folder).to_owned()
        };
        std::fs::create_dir_all(eml.join(&sub)).unwrap();
        std::fs::write(eml.join(&sub).join(format!("{i}.eml")), bytes).unwrap();
        let md = if *folder == "INBOX" {
            maildir.clone()
        } else {
            maildir.join(format!(".{}", folder.replace('/', ".")))
        };
        for s in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(md.join(s)).unwrap();
        }
        std::fs::write(md.join("new").join(format!("{i}.hostile")), bytes).unwrap();
    }
    let mbox = w.path("hostile.mbox");
    write_mbox(&mbox, &messages.iter().map(|(_, b)| *b).collect::<Vec<_>>());

    let expected: BTreeMap<String, &[u8]> = messages
        .iter()
        .map(|(_, b)| (hex(&sha2::Sha256::digest(b)), *b))
        .collect();
    let command = |args: &[&str]| {
        let mut c = std::process::Command::new(mailvault_binary());
        c.args(args);
        c
    };
    for (n, from) in [
        format!("eml:{}", eml.display()),
        format!("maildir:{}", maildir.display()),
        format!("mbox:{}", mbox.display()),
    ]
    .iter()
    .enumerate()
    {
        let store = format!("file:{}", w.p(&format!("store{n}")));
        let o = command(&[
            "archive",
            "--from",
            from,
            "--to",
            &store,
            "--key",
            &w.p("key"),
            "--policy",
            &w.p("policy.yaml"),
            "--spool-dir",
            &w.p("spool"),
        ])
        .output()
        .unwrap();
        assert!(o.status.success(), "{from}: {}", text(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains(&format!("archived {} new records", messages.len())),
            "{from}: {stdout}"
        );
        let unparseable = corpus.iter().filter(|m| m.unparseable).count();
        assert!(
            stdout.contains(&format!("{unparseable} archived with unparseable headers")),
            "{from}: {stdout}"
        );
        assert!(peak_mib(&stdout) < 128, "{from}: {stdout}");
        let exported = verify_and_export(&w, &store, &command);
        assert_eq!(exported.len(), expected.len(), "{from}");
        for (sha, bytes) in &expected {
            let file = exported
                .get(sha)
                .unwrap_or_else(|| panic!("{from}: a message was not exported byte for byte"));
            assert_eq!(std::fs::read(file).unwrap(), *bytes, "{from}");
        }
    }
}
