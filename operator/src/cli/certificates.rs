//! `mailvault certificates`: every destruction certificate of an archive, each opened with the
//! archive's key and checked against the log (its covering checkpoint, and a tombstone for
//! every record it lists within that checkpoint).

use super::{StoreArgs, open_log, read_public_key};
use clap::Args;
use mailvault::Result;
use mailvault::core::layout::{CERTIFICATES_PREFIX, parse_certificate_key};
use mailvault::core::lifecycle::Replay;
use mailvault::core::lifecycle::certificate::{Certificate, CertifiedAuthorization};
use mailvault::store::Store as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `mailvault certificates`.
#[derive(Args)]
pub struct CertificatesArgs {
    /// Store: file:DIR or s3://bucket/prefix.
    store_location: String,
    /// The archive's public verifier key (`name+keyid+key`).
    #[arg(long)]
    public_key: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

/// What is wrong with a certificate against the log, if anything.
fn check(cert: &Certificate, log: &mailvault::reader::StoredLog, replay: &Replay) -> Vec<String> {
    let mut problems = Vec::new();
    if log.records.tree().root_at(cert.checkpoint_size) != Some(cert.checkpoint_root) {
        problems.push(format!(
            "its covering checkpoint (size {}) is not this log's root at that size",
            cert.checkpoint_size
        ));
    }
    let missing = cert
        .records()
        .filter(|r| {
            replay
                .get(r.as_str())
                .and_then(|h| h.destroyed)
                .is_none_or(|t| t.index >= cert.checkpoint_size)
        })
        .count();
    if missing > 0 {
        problems.push(format!(
            "{missing} of its records have no tombstone within its covering checkpoint"
        ));
    }
    problems
}

/// Runs `mailvault certificates`: 0 every certificate checks out, 1 otherwise.
pub async fn run(args: CertificatesArgs) -> Result<ExitCode> {
    let key = read_public_key(&args.public_key)?;
    let store = args.store.open(&args.store_location)?;
    let mut log = open_log(&store, &key).await?;
    let mut replay = Replay::new();
    for entry in std::mem::take(&mut log.entries) {
        // Anomalies are the verifier's to report; the listing goes on.
        let _ = replay.apply(entry);
    }
    let mut failed = 0usize;
    let mut listed = 0usize;
    for k in store.list_keys(CERTIFICATES_PREFIX).await? {
        if parse_certificate_key(&k).is_none() {
            println!("{k}: NOT A CERTIFICATE KEY");
            failed += 1;
            continue;
        }
        let Some(object) = store
            .get(
                &k,
                None,
                mailvault_core::lifecycle::certificate::MAX_CERTIFICATE_LEN as u64,
            )
            .await?
        else {
            continue;
        };
        listed += 1;
        let cert =
            match Certificate::open(&object.bytes, std::slice::from_ref(&key), Some(key.name())) {
                Ok(c) => c,
                Err(e) => {
                    println!("{k}: FAILED: {e}");
                    failed += 1;
                    continue;
                }
            };
        let problems = check(&cert, &log, &replay);
        println!(
            "{k}: {} — run {}, completed {}, {} records, covering checkpoint {}",
            if problems.is_empty() { "OK" } else { "FAILED" },
            cert.run,
            cert.completed_at,
            cert.quantity(),
            cert.checkpoint_size
        );
        for s in &cert.series {
            let authorizations: Vec<String> = s
                .authorizations
                .iter()
                .map(|a| match a {
                    CertifiedAuthorization::Rule { name } => format!("rule {name}"),
                    CertifiedAuthorization::Review {
                        review,
                        decided_by,
                        reference,
                    } => format!("review {review} approved by {decided_by} ({reference})"),
                })
                .collect();
            println!(
                "  series {}: {} records, retain-until {} .. {}, authorized by {}",
                s.series,
                s.records.len(),
                s.earliest_retain_until,
                s.latest_retain_until,
                authorizations.join("; ")
            );
        }
        for p in &problems {
            println!("  {p}");
        }
        failed += usize::from(!problems.is_empty());
    }
    println!("{listed} certificates, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
