//! The `mailvault` command line.

// Doc comments here are clap's help text, read in a terminal, not rustdoc.
#![allow(clippy::doc_markdown)]

use clap::{Args, Parser, Subcommand};
use mailvault::archive::{self, ArchiveLog};
use mailvault::core::UnixTime;
use mailvault::core::entry::EntryBody;
use mailvault::core::note::NoteVerifier;
use mailvault::core::proof::ProofBundle;
use mailvault::core::retention::Period;
use mailvault::core::rules::RetentionSchedule;
use mailvault::core::verify::Trust;
use mailvault::pipeline::Archiver;
use mailvault::source::imap::{CaBundle, Credentials, ImapConfig, ImapSource, TlsMode};
use mailvault::source::local::{self, LocalSource};
use mailvault::spool::Spool;
use mailvault::store_url::{AnyStore, S3Options, open_store};
use mailvault::sync::{FolderFilter, sync_mailbox};
use mailvault::{Error, Result};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mailvault: an e-mail records archive with a verifiable, signed record log.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a store is and how to reach it.
#[derive(Args, Clone)]
#[allow(clippy::struct_field_names)] // the flags are --s3-*
struct StoreArgs {
    /// S3 endpoint URL, for S3 servers other than AWS.
    #[arg(long, global = true)]
    s3_endpoint: Option<String>,
    /// S3 region (default: $AWS_REGION).
    #[arg(long, global = true)]
    s3_region: Option<String>,
    /// Path-style S3 addressing (most non-AWS servers need it).
    #[arg(long, global = true)]
    s3_path_style: bool,
}

impl StoreArgs {
    fn open(&self, location: &str) -> Result<AnyStore> {
        open_store(
            location,
            &S3Options {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                path_style: self.s3_path_style,
            },
        )
    }
}

/// How to read an IMAP source.
#[derive(Args, Clone, Default)]
struct ImapArgs {
    /// IMAP: file holding the password (default: $MAILVAULT_IMAP_PASSWORD). Never a flag
    /// value, which would show in `ps`.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// IMAP: file holding an OAuth2 bearer token, for AUTHENTICATE XOAUTH2.
    #[arg(long)]
    oauth2_token_file: Option<PathBuf>,
    /// IMAP: CA bundle (PEM) to trust instead of the public web roots.
    #[arg(long)]
    imap_ca: Option<PathBuf>,
    /// IMAP: required (TLS from the start; default for port 993), starttls (default otherwise),
    /// or disabled (loopback only, unless --insecure-plaintext).
    #[arg(long)]
    imap_tls: Option<String>,
    /// IMAP: allow a connection without TLS to a host that is not loopback.
    #[arg(long)]
    insecure_plaintext: bool,
    /// Folders to archive (globs, repeatable; default: every folder, Trash and Junk too).
    #[arg(long)]
    include: Vec<String>,
    /// Folders to leave out (globs, repeatable).
    #[arg(long)]
    exclude: Vec<String>,
}

/// Flags of `mailvault operator`.
#[derive(Args)]
struct OperatorArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "MAILVAULT_NAMESPACE")]
    namespace: Option<String>,
    /// Directory where messages larger than 4 MiB are spooled during a run (default: the
    /// system's temporary directory; in a pod, an emptyDir).
    #[arg(long, env = "MAILVAULT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Archive runs at once; further due runs wait (mailvault_runs_waiting).
    #[arg(long, default_value_t = 4)]
    concurrent_runs: usize,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Name of the coordination Lease replicas compete for.
    #[arg(long, default_value = "mailvault-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: --namespace, else $POD_NAMESPACE, else default).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Seconds a lease lasts without renewal: a killed leader is replaced after at most this.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// This replica's identity in the Lease and in Events (default: $POD_NAME, else
    /// hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a shutdown waits for runs in flight before abandoning them.
    #[arg(long, default_value_t = 25)]
    shutdown_grace: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an Ed25519 checkpoint signing key.
    ///
    /// Writes the secret key to --out (mode 0600, never overwritten) and prints the public
    /// verifier key that auditors use.
    Keygen {
        /// Key name: the origin of the log it signs, e.g. mailvault.io/<namespace>/<archive>.
        #[arg(long)]
        name: String,
        /// File for the secret key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Archive a mailbox (imap://USER@HOST:PORT) or local mail (mbox:FILE, maildir:DIR,
    /// eml:DIR) into a store.
    ///
    /// Each message is stored zstd-compressed (under Object Lock on S3) and logged; a message
    /// already in the archive is skipped, so running it again archives only what is new. IMAP
    /// is read-only: EXAMINE and BODY.PEEK, no flag ever changes.
    Archive {
        /// Source: imap://USER@HOST:PORT, mbox:FILE, maildir:DIR or eml:DIR.
        #[arg(long)]
        from: String,
        /// Store: file:DIR or s3://bucket/prefix.
        #[arg(long)]
        to: String,
        /// Signing key written by `mailvault keygen`; its name is the log's origin.
        #[arg(long)]
        key: PathBuf,
        /// Record series of the archived messages (a citation of the retention schedule item),
        /// when there is no --policy.
        #[arg(long, default_value = "unclassified")]
        series: String,
        /// Retention period, ISO 8601 (P3Y, P18M, P30D) or Permanent, counted from archiving,
        /// when there is no --policy.
        #[arg(long, default_value = "Permanent")]
        retain: String,
        /// A RetentionPolicy YAML document (the resource the operator reads): each message
        /// takes the first rule that matches it, else the default rule.
        #[arg(long, conflicts_with_all = ["series", "retain"])]
        policy: Option<PathBuf>,
        /// Directory where messages larger than 4 MiB are spooled while they are fetched and
        /// compressed (default: the system's temporary directory).
        #[arg(long, env = "MAILVAULT_SPOOL_DIR")]
        spool_dir: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        imap: ImapArgs,
    },
    /// Verify an archive: the log, its signed checkpoints, and every record in the store.
    ///
    /// Exit status: 0 verified, 1 verification failed, 2 usage or I/O error.
    Verify {
        /// Store: file:DIR or s3://bucket/prefix.
        store_location: String,
        /// File with the archive's public verifier key (`name+keyid+key`).
        #[arg(long)]
        public_key: PathBuf,
        /// A checkpoint saved from an earlier audit; the log must still extend it.
        #[arg(long)]
        trusted_checkpoint: Option<PathBuf>,
        /// Print the report as JSON, with every record's verdict.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write a self-contained proof bundle for one record (message, salt, inclusion proof and
    /// signed checkpoint), for disclosure.
    Prove {
        /// Store: file:DIR or s3://bucket/prefix.
        store_location: String,
        /// Record id.
        #[arg(long)]
        record: String,
        /// File to write the proof bundle to.
        #[arg(long)]
        out: PathBuf,
        /// The archive's public verifier key (to check what is read).
        #[arg(long)]
        public_key: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check a proof bundle offline, with the archive's public key alone.
    VerifyProof {
        /// The proof bundle.
        file: PathBuf,
        /// File with the archive's public verifier key.
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Write a record's original RFC 5322 bytes, exactly as archived (checked against the log).
    Export {
        /// Store: file:DIR or s3://bucket/prefix.
        store_location: String,
        /// Record id.
        #[arg(long)]
        record: String,
        /// The archive's public verifier key.
        #[arg(long)]
        public_key: PathBuf,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Run the Kubernetes operator: reconcile MailboxArchive, RetentionPolicy and LegalHold.
    ///
    /// Every replica serves /metrics, /healthz and /readyz and competes for a coordination
    /// Lease; only the holder runs archives and writes status. Reads the cluster from
    /// $KUBECONFIG or the in-cluster service account.
    Operator(OperatorArgs),
    /// Print the CustomResourceDefinitions (YAML) of MailboxArchive, RetentionPolicy and
    /// LegalHold, as committed under crds/.
    Crd,
    /// List the records of an archive, from its log.
    Ls {
        /// Store: file:DIR or s3://bucket/prefix.
        store_location: String,
        /// The archive's public verifier key.
        #[arg(long)]
        public_key: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn read_public_key(path: &Path) -> Result<NoteVerifier> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(NoteVerifier::parse(&text)?)
}

fn now() -> UnixTime {
    mailvault::unix_now()
}

/// Opens the log of the archive signed by `key` (its name is the origin).
async fn open_log(store: &AnyStore, key: &NoteVerifier) -> Result<ArchiveLog> {
    ArchiveLog::load(store, key.name(), key, true).await
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Keygen { name, out } => {
            let signer = mailvault::keys::generate(&name)?;
            mailvault::keys::write_signer_key(&out, &signer)?;
            println!("{}", signer.verifier_key());
            Ok(ExitCode::SUCCESS)
        }
        Command::Archive {
            from,
            to,
            key,
            series,
            retain,
            policy,
            spool_dir,
            store,
            imap,
        } => {
            let retention = retention_schedule(policy.as_deref(), series, &retain)?;
            let spool = Spool::new(spool_dir.unwrap_or_else(std::env::temp_dir));
            let store = store.open(&to)?;
            archive_command(&from, &store, &key, retention, &imap, spool).await
        }
        Command::Verify {
            store_location,
            public_key,
            trusted_checkpoint,
            json,
            store,
        } => {
            let store = store.open(&store_location)?;
            verify_command(&store, &public_key, trusted_checkpoint.as_deref(), json).await
        }
        Command::Prove {
            store_location,
            record,
            out,
            public_key,
            store,
        } => {
            let key = read_public_key(&public_key)?;
            let store = store.open(&store_location)?;
            let log = open_log(&store, &key).await?;
            let bundle = archive::prove(&store, &log, &record, &Spool::from_env()).await?;
            write_file(&out, bundle.to_json().as_bytes())?;
            println!("proof for record {record} written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyProof { file, public_key } => verify_proof_command(&file, &public_key),
        Command::Operator(args) => {
            operator_command(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd => {
            print!("{}", mailvault::crd::all_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            store_location,
            record,
            public_key,
            out,
            store,
        } => {
            let key = read_public_key(&public_key)?;
            let store = store.open(&store_location)?;
            let log = open_log(&store, &key).await?;
            // Written only once the record has passed both checks, in blocks.
            let exported = archive::export(&store, &log, &record, &Spool::from_env()).await?;
            let written = match &out {
                Some(path) => std::fs::File::create(path)
                    .and_then(|mut f| exported.original.copy_to(&mut f).and_then(|_| f.sync_all())),
                None => exported
                    .original
                    .copy_to(&mut std::io::stdout().lock())
                    .map(|_| ()),
            };
            written.map_err(|source| Error::Io {
                path: out.map_or_else(|| "standard output".into(), |p| p.display().to_string()),
                source,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls {
            store_location,
            public_key,
            store,
        } => {
            let key = read_public_key(&public_key)?;
            let log = open_log(&store.open(&store_location)?, &key).await?;
            list_records(&log);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn operator_command(args: OperatorArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,aws=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = if args.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = installed {
        eprintln!("mailvault: logging not set up: {e}");
    }
    let instance = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "mailvault".into(), |h| h.trim().to_owned());
        format!("{host}-{}", std::process::id())
    });
    let lease_namespace = args
        .lease_namespace
        .or_else(|| args.namespace.clone())
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    mailvault::operator::run(mailvault::operator::OperatorConfig {
        settings: mailvault::controller::Settings {
            namespace: args.namespace,
            concurrent_runs: args.concurrent_runs,
            instance,
            spool_dir: args.spool_dir.unwrap_or_else(std::env::temp_dir),
        },
        lease_name: args.lease_name,
        lease_namespace,
        lease_duration: args.lease_duration.max(3),
        listen: args.listen,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace),
    })
    .await
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The schedule of an archive run: a RetentionPolicy file, or one rule made of
/// `--series/--retain` counted from archiving.
fn retention_schedule(
    policy: Option<&Path>,
    series: String,
    retain: &str,
) -> Result<RetentionSchedule> {
    if let Some(path) = policy {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        return mailvault::lifecycle::policy_from_yaml(&text);
    }
    let period: Period = retain
        .parse()
        .map_err(|e: mailvault::core::retention::PeriodParseError| Error::Usage(e.to_string()))?;
    RetentionSchedule::single(series, period).map_err(|e| Error::Usage(format!("--series: {e}")))
}

async fn archive_command(
    from: &str,
    store: &AnyStore,
    key: &Path,
    retention: RetentionSchedule,
    imap: &ImapArgs,
    spool: Spool,
) -> Result<ExitCode> {
    let signer = mailvault::keys::read_signer_key(key)?;
    let origin = signer.name().to_owned();
    if let Some(rest) = from.strip_prefix("imap://") {
        let config = imap_config(rest, imap)?;
        let mut source = ImapSource::connect(&config).await?;
        let mut archiver = Archiver::open(store, &origin, signer, retention, now())
            .await?
            .with_spool(spool);
        eprintln!(
            "archiving {}@{} into {}",
            config.username,
            config.host,
            archiver.store_info().description
        );
        let filter = FolderFilter {
            include: imap.include.clone(),
            exclude: imap.exclude.clone(),
        };
        let terminal = std::io::stderr().is_terminal();
        let mut progress = |folder: &str, fetched: u64, exists: u32| {
            if terminal && (fetched.is_multiple_of(50) || fetched == u64::from(exists)) {
                eprint!("\r{folder}: {fetched}/{exists}   ");
                let _ = std::io::stderr().flush();
            }
        };
        let reports = sync_mailbox(
            &mut source,
            &mut archiver,
            store,
            &filter,
            now,
            &mut progress,
        )
        .await?;
        if terminal {
            eprintln!();
        }
        archiver.finish().await?;
        source.logout().await?;
        for r in &reports {
            let mut notes = Vec::new();
            if r.unchanged {
                notes.push("unchanged".to_owned());
            }
            if r.uid_validity_reset {
                notes.push("UIDVALIDITY changed: re-read in full".to_owned());
            }
            if r.capture_gaps > 0 {
                notes.push(format!(
                    "{} message(s) expunged before they could be captured",
                    r.capture_gaps
                ));
            }
            println!(
                "  {:<30} {:>7} fetched  {}",
                r.folder,
                r.fetched,
                notes.join("; ")
            );
        }
        print_summary(archiver.summary());
        return Ok(ExitCode::SUCCESS);
    }
    archive_local(from, store, &origin, signer, retention, spool).await
}

/// Archives a local source (mbox, Maildir, .eml directory), one message at a time.
async fn archive_local(
    from: &str,
    store: &AnyStore,
    origin: &str,
    signer: mailvault::core::note::NoteSigner,
    retention: RetentionSchedule,
    spool: Spool,
) -> Result<ExitCode> {
    let LocalSource {
        mut messages,
        total,
    } = local::open(from, &spool)?;
    let mut archiver = Archiver::open(store, origin, signer, retention, now())
        .await?
        .with_spool(spool);
    eprintln!(
        "archiving {} into {}",
        total.map_or_else(|| from.to_owned(), |n| format!("{n} messages")),
        archiver.store_info().description
    );
    let progress = std::io::stderr().is_terminal();
    let mut n = 0usize;
    loop {
        // Reading a message is blocking file I/O.
        let (rest, next) = tokio::task::spawn_blocking(move || {
            let next = messages.next();
            (messages, next)
        })
        .await
        .map_err(|e| Error::Source(format!("reading {from}: {e}")))?;
        messages = rest;
        let Some(msg) = next else { break };
        archiver.archive(msg?, now()).await?;
        n += 1;
        if progress && (n % 50 == 1 || Some(n) == total) {
            match total {
                Some(total) => eprint!("\r{n}/{total}"),
                None => eprint!("\r{n}"),
            }
            let _ = std::io::stderr().flush();
        }
    }
    archiver.finish().await?;
    if progress {
        eprintln!();
    }
    print_summary(archiver.summary());
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &mailvault::pipeline::RunSummary) {
    println!(
        "archived {} new records ({} already archived, {} recovered from an interrupted run); {} bytes of mail stored as {} bytes",
        s.archived, s.skipped, s.adopted, s.original_bytes, s.stored_bytes
    );
    println!(
        "{} archived with unparseable headers (stored byte for byte under the default rule)",
        s.unparseable
    );
    // For sizing a pod's memory: what this run needed at its peak.
    if let Some(peak) = mailvault::peak_memory_bytes() {
        println!("peak memory (RSS): {} MiB", peak.div_ceil(1024 * 1024));
    }
}

/// `USER@HOST:PORT` and the IMAP flags as a connection configuration.
fn imap_config(rest: &str, args: &ImapArgs) -> Result<ImapConfig> {
    let usage = || Error::Usage(format!("imap://{rest} is not imap://USER@HOST:PORT"));
    let (user, hostport) = rest
        .trim_end_matches('/')
        .rsplit_once('@')
        .ok_or_else(usage)?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| usage())?),
        None => (hostport, 993),
    };
    if user.is_empty() || host.is_empty() {
        return Err(usage());
    }
    let tls = match args.imap_tls.as_deref() {
        None if port == 993 => TlsMode::Required,
        Some("required") => TlsMode::Required,
        None | Some("starttls") => TlsMode::StartTls,
        Some("disabled") => TlsMode::Disabled,
        Some(other) => {
            return Err(Error::Usage(format!(
                "--imap-tls {other:?}: use required, starttls or disabled"
            )));
        }
    };
    let read_secret = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|source| Error::Io {
                path: p.display().to_string(),
                source,
            })
    };
    let credentials = match (&args.oauth2_token_file, &args.password_file) {
        (Some(t), _) => Credentials::OAuth2Token(read_secret(t)?),
        (None, Some(p)) => Credentials::Password(read_secret(p)?),
        (None, None) => {
            Credentials::Password(std::env::var("MAILVAULT_IMAP_PASSWORD").map_err(|_| {
                Error::Usage(
                    "IMAP password: pass --password-file or set MAILVAULT_IMAP_PASSWORD".into(),
                )
            })?)
        }
    };
    Ok(ImapConfig {
        host: host.to_owned(),
        port,
        tls,
        ca: args
            .imap_ca
            .as_deref()
            .map(CaBundle::from_file)
            .transpose()?,
        insecure_plaintext: args.insecure_plaintext,
        username: user.to_owned(),
        credentials,
        timeout: std::time::Duration::from_mins(1),
    })
}

async fn verify_command(
    store: &AnyStore,
    public_key: &Path,
    trusted_checkpoint: Option<&Path>,
    json: bool,
) -> Result<ExitCode> {
    let key = read_public_key(public_key)?;
    let trusted = match trusted_checkpoint {
        Some(p) => Some(std::fs::read(p).map_err(|source| Error::Io {
            path: p.display().to_string(),
            source,
        })?),
        None => None,
    };
    let trust = Trust {
        origin: Some(key.name().to_owned()),
        keys: vec![key],
        trusted_checkpoint: trusted,
        now: now(),
    };
    let mut verdicts = Vec::new();
    let report = archive::verify(store, trust, &mut |v| {
        if json {
            verdicts.push(v.clone());
        }
    })
    .await?;
    if json {
        let to_json = |e: serde_json::Error| Error::Usage(e.to_string());
        let mut value = serde_json::to_value(&report).map_err(to_json)?;
        value["verified"] = serde_json::Value::Bool(report.verified());
        value["records"] = serde_json::to_value(&verdicts).map_err(to_json)?;
        println!("{}", serde_json::to_string_pretty(&value).map_err(to_json)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.verified() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn verify_proof_command(file: &Path, public_key: &Path) -> Result<ExitCode> {
    let key = read_public_key(public_key)?;
    let bytes = std::fs::read(file).map_err(|source| Error::Io {
        path: file.display().to_string(),
        source,
    })?;
    Ok(
        match ProofBundle::parse(&bytes).and_then(|b| b.verify(&[key])) {
            Ok(p) => {
                println!(
                    "VERIFIED: record {} ({} entry {}) is in {} as of its signed checkpoint of size {}{}",
                    p.record,
                    p.entry_type,
                    p.leaf_index,
                    p.origin,
                    p.tree_size,
                    if p.message_verified {
                        "; the enclosed message is the one archived"
                    } else {
                        ""
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("VERIFICATION FAILED: {e}");
                ExitCode::from(1)
            }
        },
    )
}

fn list_records(log: &ArchiveLog) {
    println!(
        "{:<34} {:<22} {:<12} series",
        "record", "retain-until", "state"
    );
    for e in &log.entries {
        if let EntryBody::Ingest {
            series,
            retain_until,
            ..
        } = &e.body
        {
            let state = log
                .latest_of(e.record.as_str())
                .map_or("", |l| match l.body {
                    EntryBody::Destroyed { .. } => "destroyed",
                    _ => "kept",
                });
            println!(
                "{:<34} {:<22} {state:<12} {series}",
                e.record,
                retain_until.to_string()
            );
        }
    }
}

fn main() -> ExitCode {
    mailvault::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailvault: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailvault: {e}");
            ExitCode::from(2)
        }
    }
}
