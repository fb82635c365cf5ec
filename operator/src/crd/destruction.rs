//! What destruction runs report in status: on the `MailboxArchive` (its last run and its plan)
//! and on the `RetentionPolicy` (the plan's numbers for every archive using it).
//!
//! `destruction run (lifecycle::destroy) -> DestructionStatus (archive) + PolicyDestruction (policy)`

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Destruction of one archive's records, as of its last destruction run.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestructionStatus {
    /// The destruction slot the last run stood for (RetentionPolicy `destruction.schedule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// When the next destruction run is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// Failed destruction runs in a row (retried with backoff).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<DestructionRunStatus>,
    /// The plan the last run found: what is due, waiting and kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanCounts>,
    /// The Job of the last destruction run that ran as a Job (`runner: Job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<String>,
}

/// One destruction run.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestructionRunStatus {
    /// When it started.
    pub start: String,
    /// When it ended.
    pub end: String,
    /// `Succeeded`, `DryRun` or `Failed`.
    pub result: String,
    /// Records destroyed (tombstones logged) by the run.
    pub destroyed: u64,
    /// Keys (under the archive's root) of the certificates it stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
    /// The run in words.
    pub message: String,
}

/// A destruction plan's numbers.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanCounts {
    /// Records the next run destroys (retention ended, disposition Destroy or approved, no hold).
    pub due_now: u64,
    /// Records whose retention ended and that wait for a records officer's review.
    pub awaiting_review: u64,
    /// Records under legal hold.
    pub held: u64,
    /// Records still retained.
    pub retained: u64,
    /// Permanent records.
    pub permanent: u64,
    /// Records destroyed so far.
    pub destroyed: u64,
    /// Earliest retain-until among records not destroyed (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due: Option<String>,
}

/// One archive's destruction numbers, in its policy's status.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDestruction {
    /// The MailboxArchive.
    pub archive: String,
    /// Its plan as of its last destruction run.
    #[serde(flatten)]
    pub plan: PlanCounts,
    /// The last run in words (with its certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
}
