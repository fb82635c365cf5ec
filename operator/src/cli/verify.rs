//! `mailvault verify` (an archive, against its public key), `mailvault verify-proof` (one
//! proof bundle, offline) and `mailvault verify-export` (a records-request export, offline).

use super::{StoreArgs, read_file, read_public_key};
use clap::Args;
use mailvault::core::proof::ProofBundle;
use mailvault::core::verify::{Sample, Trust, key_fingerprint};
use mailvault::{Error, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `mailvault verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Store: file:DIR or s3://bucket/prefix.
    store_location: String,
    /// File with the archive's public verifier key (`name+keyid+key`).
    #[arg(long)]
    public_key: PathBuf,
    /// A checkpoint saved from an earlier audit; the log must still extend it.
    #[arg(long, conflicts_with = "since")]
    trusted_checkpoint: Option<PathBuf>,
    /// A checkpoint saved from an earlier audit (as --trusted-checkpoint): the log must extend
    /// it; every record logged since it is read in full, and of the older records only a
    /// random sample (the full check reads every record: leave this out).
    #[arg(long, value_name = "TRUSTED_CHECKPOINT")]
    since: Option<PathBuf>,
    /// With --since: how many older records to read (default: enough to catch, with
    /// probability 95%, at least one bad record if 1% of them were bad).
    #[arg(long, requires = "since")]
    sample: Option<u64>,
    /// With --since: the sample's seed (64 hex digits, printed by an earlier audit), to read
    /// the same sample again; by default a fresh random one.
    #[arg(long, requires = "since")]
    sample_seed: Option<String>,
    /// Objects read, hashed and decompressed at once.
    #[arg(long, default_value_t = mailvault::reader::DEFAULT_VERIFY_JOBS)]
    jobs: usize,
    /// Print the report as JSON, with every record's verdict.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

fn read_file_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Runs `mailvault verify`: 0 verified, 1 verification failed (errors are 2, in `main`).
pub async fn run(args: VerifyArgs) -> Result<ExitCode> {
    let store = args.store.open(&args.store_location)?;
    let key = read_public_key(&args.public_key)?;
    // Printed first, so the auditor compares it with the fingerprint they pinned
    // (docs/guide-auditor.md) before reading any verdict.
    let fingerprint = key_fingerprint(&read_file_text(&args.public_key)?)?;
    let trusted = args
        .trusted_checkpoint
        .as_deref()
        .or(args.since.as_deref())
        .map(read_file)
        .transpose()?;
    let sample = match &args.since {
        None => None,
        Some(_) => Some(Sample {
            size: args.sample,
            seed: if let Some(hex) = &args.sample_seed {
                mailvault::core::Hash::from_hex(hex)
                    .map_err(|e| Error::Usage(format!("--sample-seed: {e}")))?
                    .0
            } else {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(Error::Random)?;
                seed
            },
        }),
    };
    if args.jobs == 0 {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    let options = mailvault::reader::VerifyOptions {
        jobs: args.jobs,
        sample,
    };
    let trust = Trust {
        origin: Some(key.name().to_owned()),
        keys: vec![key],
        trusted_checkpoint: trusted,
        now: mailvault::unix_now(),
    };
    let json = args.json;
    let mut verdicts = Vec::new();
    let report = mailvault::reader::verify(&store, trust, &options, &mut |v| {
        if json {
            verdicts.push(v.clone());
        }
    })
    .await?;
    if json {
        let to_json = |e: serde_json::Error| Error::encoding("report as JSON", e);
        let mut value = serde_json::to_value(&report).map_err(to_json)?;
        value["verified"] = serde_json::Value::Bool(report.verified());
        value["public_key_fingerprint"] = serde_json::Value::String(fingerprint);
        value["records"] = serde_json::to_value(&verdicts).map_err(to_json)?;
        println!("{}", serde_json::to_string_pretty(&value).map_err(to_json)?);
    } else {
        println!("public key: {fingerprint}");
        print!("{}", report.to_text());
    }
    Ok(if report.verified() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Flags of `mailvault verify-proof`.
#[derive(Args)]
pub struct VerifyProofArgs {
    /// The proof bundle.
    file: PathBuf,
    /// File with the archive's public verifier key.
    #[arg(long)]
    public_key: PathBuf,
}

/// Runs `mailvault verify-proof`.
pub fn run_proof(args: &VerifyProofArgs) -> Result<ExitCode> {
    let key = read_public_key(&args.public_key)?;
    let bytes = read_file(&args.file)?;
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

/// Flags of `mailvault verify-export`.
#[derive(Args)]
pub struct VerifyExportArgs {
    /// The export directory (`mailvault export ... --out DIR`).
    dir: PathBuf,
    /// File with the archive's public verifier key (checks every message's proof).
    #[arg(long)]
    public_key: PathBuf,
    /// File with the export key's public verifier key (checks the manifest's signature).
    #[arg(long)]
    export_key: PathBuf,
}

/// Runs `mailvault verify-export`.
pub fn run_export(args: &VerifyExportArgs) -> Result<ExitCode> {
    let archive = read_public_key(&args.public_key)?;
    let export = read_public_key(&args.export_key)?;
    let verdict = mailvault::reader::records_request::verify_export(&args.dir, &archive, &export);
    for f in &verdict.failures {
        println!("FAILED: {f}");
    }
    if let (Some(m), true) = (&verdict.manifest, verdict.verified()) {
        println!(
            "VERIFIED: {} messages of {} as of its signed checkpoint of size {}, exported {} and signed by {}",
            verdict.verified,
            m.origin,
            m.checkpoint_size,
            m.exported_at,
            export.name()
        );
        for q in &m.query {
            println!("query: {q}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "VERIFICATION FAILED: {} of the manifest's messages verified, {} problems",
        verdict.verified,
        verdict.failures.len()
    );
    Ok(ExitCode::from(1))
}
