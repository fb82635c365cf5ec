//! `mailvault plan`: what the next destruction run would do, per record series — the same plan
//! `mailvault destroy` and the operator's scheduled run carry out.

use super::{StoreArgs, read_public_key};
use clap::Args;
use mailvault::lifecycle::destroy::{self, DestructionReport, DestructionRun};
use mailvault::{Error, Result};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `mailvault plan`.
#[derive(Args)]
pub struct PlanArgs {
    /// Store: file:DIR or s3://bucket/prefix.
    store_location: String,
    /// The archive's public verifier key (`name+keyid+key`).
    #[arg(long)]
    public_key: PathBuf,
    /// The RetentionPolicy YAML document to plan under (the one in force, or an edit to
    /// preview).
    #[arg(long)]
    policy: PathBuf,
    /// DispositionReview YAML documents whose approvals count, as for `mailvault destroy`.
    #[arg(long)]
    approvals: Option<PathBuf>,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Leave out the comparison of the policy with the retention each record was logged with
    /// (it reads every record's headers back from the store).
    #[arg(long)]
    no_compare: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// The plan per series, as a table.
pub fn table(report: &DestructionReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<20} {:<11} {:>8} {:>12} {:<21} {:<21} {:>6} {:>8} {:>8} {:>10}",
        "SERIES",
        "RULE",
        "DISPOSITION",
        "RECORDS",
        "BYTES",
        "EARLIEST DUE",
        "LATEST DUE",
        "HELD",
        "DUE NOW",
        "REVIEW",
        "PERMANENT"
    );
    for s in &report.series {
        let _ = writeln!(
            out,
            "{:<24} {:<20} {:<11} {:>8} {:>12} {:<21} {:<21} {:>6} {:>8} {:>8} {:>10}",
            s.series,
            if s.rule.is_empty() {
                "(not in the policy)"
            } else {
                &s.rule
            },
            s.disposition,
            s.records,
            s.bytes,
            s.earliest_due.as_deref().unwrap_or("-"),
            s.latest_due.as_deref().unwrap_or("-"),
            s.held,
            s.due_now,
            s.awaiting_review,
            s.permanent
        );
    }
    out
}

/// Runs `mailvault plan`.
pub async fn run(args: PlanArgs) -> Result<ExitCode> {
    let key = read_public_key(&args.public_key)?;
    let store = args.store.open(&args.store_location)?;
    let schedule = super::destroy::read_policy(&args.policy)?;
    let approvals = super::destroy::read_approvals(args.approvals.as_deref())?;
    let report = destroy::preview(
        &store,
        &key,
        &DestructionRun {
            origin: key.name(),
            schedule: &schedule,
            approvals: &approvals.approvals,
            extensions: &approvals.extensions,
            now: mailvault::unix_now(),
            dry_run: true,
            abort_after_step: None,
        },
    )
    .await?;
    if args.json {
        let text = serde_json::to_string_pretty(&report.to_json())
            .map_err(|e| Error::encoding("plan as JSON", e))?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", table(&report));
    println!(
        "next run: {} records destroyed{}, {} await review, {} held, {} permanent",
        report.plan.count() as u64 + report.plan.in_progress,
        if report.plan.in_progress > 0 {
            format!(" ({} already authorized)", report.plan.in_progress)
        } else {
            String::new()
        },
        report.awaiting_review(),
        report.series.iter().map(|s| s.held).sum::<u64>(),
        report.series.iter().map(|s| s.permanent).sum::<u64>(),
    );
    for s in &report.stale_approvals {
        println!("approval {s} no longer matches its batch: not counted; review again");
    }
    print_log_warnings(&report);
    if !args.no_compare {
        print!("{}", compare(&store, &key, &schedule).await?);
    }
    Ok(ExitCode::SUCCESS)
}

/// What was found on the log's objects that mailvault never does there (the log was read from
/// beneath it).
pub(super) fn print_log_warnings(report: &destroy::DestructionReport) {
    for w in &report.log_warnings {
        println!("warning: {w} (run `mailvault verify`)");
    }
}

/// Per rule of `schedule`: the records it takes and how their logged retention compares with
/// what the policy gives them (what applying it as an edit would do: extensions are carried
/// out, shortenings only counted).
async fn compare(
    store: &mailvault::store::AnyStore,
    key: &mailvault::core::note::NoteVerifier,
    schedule: &mailvault::core::rules::RetentionSchedule,
) -> Result<String> {
    // Anomalies are verify's to report; the comparison keeps the story the log tells.
    let replay = mailvault::reader::replay_log(store, key.name(), key)
        .await?
        .replay;
    let diff =
        mailvault::lifecycle::policy_edit::diff_before(store, &replay, schedule, replay.size())
            .await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ncompared with the retention each record was logged with:\n{:<24} {:<24} {:>8} {:>8} {:>9} {:>9} {:>14}",
        "RULE", "SERIES", "RECORDS", "EXTEND", "SHORTEN", "SAME", "SERIES CHANGE"
    );
    for (rule, r) in &diff.rules {
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:>8} {:>8} {:>9} {:>9} {:>14}",
            rule, r.series, r.records, r.extend, r.shorten, r.same, r.series_changed
        );
    }
    let _ = writeln!(out, "as an edit: {diff}");
    Ok(out)
}
