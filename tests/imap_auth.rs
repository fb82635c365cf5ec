//! How mailvault protects and presents the IMAP password, and what `verify` says of a log
//! entry an attacker wrote: STARTTLS to Dovecot through `mailvault archive`; a server that does
//! not offer STARTTLS; plaintext to a host that is not loopback; AUTHENTICATE PLAIN answered
//! BAD or NO; LOGINDISABLED; a malformed entry added to a locked bucket, and one edited into a
//! `file:` store. The misbehaving servers are the scripted one (`tests/support/imap_script.rs`),
//! whose recorded commands show what mailvault sent.
//!
//! A folder skipped by HIGHESTMODSEQ (no FETCH when nothing changed, and none after a flag
//! change) is `no_new_mail_means_no_fetch_even_after_flag_changes` in tests/archive_imap.rs.

use base64::Engine as _;
use mailvault_tests::imap_script::{SCRIPTED_PASSWORD, Script, ScriptedArchive};
use mailvault_tests::{S3Flavour, TestEnv, mailvault_binary, output_text as text, unique_name};
use std::process::Output;

fn message(n: u32) -> Vec<u8> {
    format!("From: a@city.example\r\nSubject: auth {n}\r\n\r\nbody {n}\r\n").into_bytes()
}

/// A scripted INBOX of two messages, with `change` applied.
fn two_messages(change: impl FnOnce(&mut Script)) -> Script {
    let mut script = Script {
        uid_validity: 3,
        uid_next: 3,
        messages: vec![(1, message(1)), (2, message(2))],
        ..Script::default()
    };
    change(&mut script);
    script
}

/// Every line the scripted server received, and whether any of them carries the password in
/// clear or as an AUTHENTICATE PLAIN response (base64 of `\0user\0password`).
fn sent(case: &ScriptedArchive) -> (Vec<String>, bool) {
    let lines = case.server.commands.lock().unwrap().clone();
    let plain =
        base64::engine::general_purpose::STANDARD.encode(format!("\0clerk\0{SCRIPTED_PASSWORD}"));
    let leaked = lines
        .iter()
        .any(|l| l.contains(SCRIPTED_PASSWORD) || l.contains(&plain));
    (lines, leaked)
}

/// The verb of each command line (`a1 LOGIN …` → `LOGIN`); continuation lines give "".
fn verbs(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap_or("").to_ascii_uppercase())
        .collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `mailvault verify --json` of `store` (S3 through `env` when given): exit code and report.
fn verify_json(
    env: Option<&TestEnv>,
    store: &str,
    public_key: &str,
    text_output: bool,
) -> (Option<i32>, serde_json::Value, String) {
    let mut args = vec!["verify", store, "--public-key", public_key];
    let command = |args: &[&str]| match env {
        Some(env) => env.mailvault_s3(S3Flavour::Versitygw, args),
        None => {
            let mut c = std::process::Command::new(mailvault_binary());
            c.args(args);
            c
        }
    };
    let plain = if text_output {
        stdout(&command(&args).output().unwrap())
    } else {
        String::new()
    };
    args.push("--json");
    let o = command(&args).output().unwrap();
    let report = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("verify JSON: {e}\n{}", text(&o)));
    (o.status.code(), report, plain)
}

/// Whether the report has a log fault of `kind` whose detail contains `words`.
fn has_fault(report: &serde_json::Value, kind: &str, words: &str) -> bool {
    report["log_faults"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["kind"] == kind && f["detail"].as_str().is_some_and(|d| d.contains(words)))
}

/// A Dovecot mailbox archived into versitygw over STARTTLS: the user, the bucket and a scratch
/// directory with the key (removed on drop).
struct StartTlsArchive {
    env: TestEnv,
    bucket: String,
    dir: tempfile_dir::Dir,
    archived: Output,
}

/// A scratch directory removed on drop (the tests crate has no tempfile).
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl StartTlsArchive {
    async fn new(name: &str) -> Self {
        let env = TestEnv::load();
        let user = env.new_mail_user(name);
        let bucket = unique_name(name);
        env.create_bucket(S3Flavour::Versitygw, &bucket, true).await;
        let dir = tempfile_dir::Dir(std::env::temp_dir().join(unique_name(&format!("mv-{name}"))));
        std::fs::create_dir_all(&dir.0).unwrap();
        let key = dir.0.join("key").display().to_string();
        let keygen = std::process::Command::new(mailvault_binary())
            .args(["keygen", "--name", &format!("mailvault.io/test/{name}")])
            .args(["--out", &key])
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{}", text(&keygen));
        std::fs::write(dir.0.join("key.pub"), &keygen.stdout).unwrap();
        env.seed_message(&user, "INBOX", &message(1), "");
        env.seed_message(&user, "INBOX", &message(2), "S");
        env.seed_message(&user, "Sent", &message(3), "S");
        let from = format!(
            "imap://{}@{}:{}",
            user.name,
            env.imap_host(),
            env.imap_starttls_port()
        );
        let store = format!("s3://{bucket}/police/chief");
        let ca = env.ca_path().display().to_string();
        let archived = env
            .mailvault_s3(
                S3Flavour::Versitygw,
                &[
                    "archive",
                    "--from",
                    &from,
                    "--imap-tls",
                    "starttls",
                    "--imap-ca",
                    &ca,
                    "--to",
                    &store,
                    "--key",
                    &key,
                    "--series",
                    "MO-GS-003",
                    "--retain",
                    "P1D",
                ],
            )
            .env("MAILVAULT_IMAP_PASSWORD", &user.password)
            .output()
            .unwrap();
        Self {
            env,
            bucket,
            dir,
            archived,
        }
    }

    fn store(&self) -> String {
        format!("s3://{}/police/chief", self.bucket)
    }

    fn verify(&self, text_output: bool) -> (Option<i32>, serde_json::Value, String) {
        let public = self.dir.0.join("key.pub").display().to_string();
        verify_json(Some(&self.env), &self.store(), &public, text_output)
    }
}

/// `--imap-tls starttls` to Dovecot's port 143, which refuses LOGIN before STARTTLS: the
/// connection is upgraded, the password goes inside TLS, every message is archived and the
/// archive verifies.
#[tokio::test(flavor = "multi_thread")]
async fn starttls_to_dovecot_archives_everything_and_verifies() {
    let case = StartTlsArchive::new("auth-starttls").await;
    assert!(case.archived.status.success(), "{}", text(&case.archived));
    assert!(
        stdout(&case.archived).contains("archived 3 new records"),
        "{}",
        text(&case.archived)
    );
    let (code, report, _) = case.verify(false);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["records"].as_array().unwrap().len(), 3, "{report:#}");
}

/// A server that does not offer STARTTLS answers the command with BAD. mailvault stops there:
/// it sends nothing else, least of all the password, and says what to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_starttls_is_refused_and_nothing_is_sent_in_clear() {
    let case = ScriptedArchive::new(
        "no-starttls",
        two_messages(|s| s.refusals = vec![("STARTTLS", "BAD unknown command")]),
    )
    .await;
    let from = format!("imap://clerk@127.0.0.1:{}", case.server.port);
    let o = case.archive_from(&from, "starttls", &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("IMAP STARTTLS at 127.0.0.1")
            && stderr(&o).contains("the server said BAD: unknown command")
            && stderr(&o).contains("without TLS"),
        "{}",
        text(&o)
    );
    let (lines, leaked) = sent(&case);
    assert_eq!(verbs(&lines), ["STARTTLS"], "{lines:?}");
    assert!(!leaked);
}

/// `--imap-tls disabled` to an address that is not loopback by its spelling
/// (`::ffff:127.0.0.1`, which in fact reaches the scripted server on this machine): refused
/// before connecting, naming the flag; with `--insecure-plaintext` the run goes through.
/// The CRD's rule for the same is `tls: Disabled sends the password in clear` in tests/crds.rs.
#[tokio::test(flavor = "multi_thread")]
async fn plaintext_to_a_host_that_is_not_loopback_needs_the_insecure_flag() {
    let case = ScriptedArchive::new("not-loopback", two_messages(|_| {})).await;
    let from = format!("imap://clerk@[::ffff:127.0.0.1]:{}", case.server.port);
    let refused = case.archive_from(&from, "disabled", &[]).await;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        stderr(&refused).contains(
            "refusing to send the password for clerk to ::ffff:127.0.0.1 without TLS; use TLS \
             or STARTTLS (plaintext is allowed only to a loopback address, or with the insecure \
             flag)"
        ),
        "{}",
        text(&refused)
    );
    assert!(
        sent(&case).0.is_empty(),
        "it connected: {:?}",
        sent(&case).0
    );

    let allowed = case
        .archive_from(&from, "disabled", &["--insecure-plaintext"])
        .await;
    assert!(allowed.status.success(), "{}", text(&allowed));
    assert!(
        stdout(&allowed).contains("archived 2 new records"),
        "{}",
        text(&allowed)
    );
    assert_eq!(case.verified_records(), vec![message(1), message(2)]);
}

/// The server lists AUTH=PLAIN but answers AUTHENTICATE PLAIN with BAD (it does not take it
/// after all): LOGIN, the other standard way, is tried once, and the run goes through.
#[tokio::test(flavor = "multi_thread")]
async fn authenticate_plain_answered_bad_falls_back_to_login() {
    let case = ScriptedArchive::new(
        "plain-bad",
        two_messages(|s| {
            s.capabilities = vec!["AUTH=PLAIN"];
            s.refusals = vec![("AUTHENTICATE", "BAD mechanism not available")];
        }),
    )
    .await;
    let o = case.archive(&[]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("archived 2 new records"),
        "{}",
        text(&o)
    );
    let (lines, _) = sent(&case);
    let verbs = verbs(&lines);
    let auth = verbs.iter().position(|v| v == "AUTHENTICATE").unwrap();
    assert_eq!(verbs[auth + 2], "LOGIN", "{lines:?}");
    assert_eq!(
        verbs.iter().filter(|v| *v == "LOGIN").count(),
        1,
        "{lines:?}"
    );
    assert_eq!(case.verified_records(), vec![message(1), message(2)]);
}

/// AUTHENTICATE PLAIN answered with NO: the server judged the credentials and refused them.
/// LOGIN would be refused too (and would send the password once more): the run stops with
/// the server's words and does not try it.
#[tokio::test(flavor = "multi_thread")]
async fn authenticate_plain_answered_no_is_refused_without_trying_login() {
    let case = ScriptedArchive::new(
        "plain-no",
        two_messages(|s| {
            s.capabilities = vec!["AUTH=PLAIN"];
            s.refusals = vec![(
                "AUTHENTICATE",
                "NO [AUTHENTICATIONFAILED] invalid credentials",
            )];
        }),
    )
    .await;
    let o = case.archive(&[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains(
            "IMAP login as clerk at 127.0.0.1 was refused: the server said NO: [AUTHENTICATIONFAILED] invalid credentials"
        ),
        "{}",
        text(&o)
    );
    assert!(!stderr(&o).contains(SCRIPTED_PASSWORD), "{}", text(&o));
    let (lines, _) = sent(&case);
    assert!(!verbs(&lines).iter().any(|v| v == "LOGIN"), "{lines:?}");
}

/// LOGINDISABLED and no AUTH=PLAIN (what a server says before STARTTLS): no way to send a
/// password that the server accepts, so none is sent; the words name the cause and the ways out.
#[tokio::test(flavor = "multi_thread")]
async fn logindisabled_is_refused_and_the_password_is_never_sent() {
    let case = ScriptedArchive::new(
        "logindisabled",
        two_messages(|s| s.capabilities = vec!["LOGINDISABLED", "STARTTLS"]),
    )
    .await;
    let o = case.archive(&[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains(
            "IMAP login as clerk at 127.0.0.1: the server offers neither AUTHENTICATE PLAIN nor \
             LOGIN on this connection (LOGINDISABLED); use TLS or STARTTLS, or XOAUTH2"
        ),
        "{}",
        text(&o)
    );
    let (lines, leaked) = sent(&case);
    assert!(
        !verbs(&lines)
            .iter()
            .any(|v| v == "LOGIN" || v == "AUTHENTICATE"),
        "{lines:?}"
    );
    assert!(!leaked, "{lines:?}");
}

/// An attacker with the bucket's write credentials and no key adds an entry to the log: Object
/// Lock keeps the bundles as they are, so the entry goes into a new, wider partial bundle (a
/// key the layout allows) whose first entries copy the real ones. Its bytes are not a
/// canonical entry, so the object does not chain on from what the newest checkpoint signs:
/// `verify` fails naming that object (REWRITTEN_BUNDLE) and does not replay it, as readers do
/// not read it.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_entry_added_to_a_locked_bucket_fails_verification() {
    let case = StartTlsArchive::new("auth-malformed").await;
    assert!(case.archived.status.success(), "{}", text(&case.archived));
    let s3 = case.env.s3_client(S3Flavour::Versitygw);
    let listed = s3
        .list_objects_v2()
        .bucket(&case.bucket)
        .prefix("police/chief/log/tile/entries/000.p/")
        .send()
        .await
        .unwrap();
    let (width, key) = listed
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .filter_map(|k| Some((k.rsplit('/').next()?.parse::<u64>().ok()?, k.to_owned())))
        .max()
        .expect("a partial bundle");
    let mut bundle = s3
        .get_object()
        .bucket(&case.bucket)
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .to_vec();
    let forged = format!("mailvault-log-entry/1\nindex {width}\ntype ingest\n");
    bundle.extend_from_slice(&u16::try_from(forged.len()).unwrap().to_be_bytes());
    bundle.extend_from_slice(forged.as_bytes());
    let wider = format!("police/chief/log/tile/entries/000.p/{}", width + 1);
    s3.put_object()
        .bucket(&case.bucket)
        .key(&wider)
        .body(bundle.into())
        .send()
        .await
        .unwrap();

    let (code, report, plain) = case.verify(true);
    assert_eq!(code, Some(1), "{report:#}");
    let words = format!(
        "the {}-entry object starts with the {width}-entry partial the newest checkpoint \
         (size {width}) names, but its further entries do not chain on from it",
        width + 1
    );
    assert!(has_fault(&report, "REWRITTEN_BUNDLE", &words), "{report:#}");
    assert!(
        plain.contains("REWRITTEN_BUNDLE") && plain.contains(&words),
        "{plain}"
    );
}

/// The same attacker on a `file:` store, where nothing is locked: one byte of the last entry
/// in place is changed (`type ingest` → `type ingesT`, same length, so the bundle still
/// parses). `verify` names the entry as MALFORMED_ENTRY, and the signed checkpoint no longer
/// matches the log (FORKED_CHECKPOINT): the edit cannot pass for the original.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_entry_edited_into_a_file_store_fails_verification() {
    let case = ScriptedArchive::new("file-malformed", two_messages(|_| {})).await;
    let o = case.archive(&[]).await;
    assert!(o.status.success(), "{}", text(&o));
    let partials = case.dir.join("store/objects/log/tile/entries/000.p");
    let (width, path) = std::fs::read_dir(&partials)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            Some((path.file_name()?.to_str()?.parse::<u64>().ok()?, path))
        })
        .max()
        .expect("a partial bundle");
    let mut bundle = std::fs::read(&path).unwrap();
    let at = bundle
        .windows(b"type ingest\n".len())
        .rposition(|w| w == b"type ingest\n")
        .expect("an ingest entry");
    bundle[at + "type ingest".len() - 1] = b'T';
    std::fs::write(&path, &bundle).unwrap();

    let public = case.dir.join("key.pub").display().to_string();
    let (code, report, plain) = verify_json(None, &case.store(), &public, true);
    assert_eq!(code, Some(1), "{report:#}");
    let position = format!("entry at position {}", width - 1);
    assert!(
        has_fault(&report, "MALFORMED_ENTRY", &position),
        "{report:#}"
    );
    assert!(has_fault(&report, "FORKED_CHECKPOINT", ""), "{report:#}");
    assert!(
        plain.contains("MALFORMED_ENTRY") && plain.contains(&position),
        "{plain}"
    );
}
