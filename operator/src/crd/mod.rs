//! The custom resources (group `mailvault.io`, version `v1alpha1`, namespaced).
//!
//! `[ RetentionPolicy ] <- retentionPolicyRef - [ MailboxArchive ] <- archives - [ LegalHold ]`,
//! and `[ DispositionReview ] -> archive, policy, rule` for a due batch awaiting a decision.
//!
//! The apiserver rejects at admission what a schema can say (patterns, ranges, enums, CEL rules
//! for fields that depend on each other); what it cannot say (a cron expression that names a
//! 61st minute, an unknown time zone, a regex that does not compile) is checked by
//! [`MailboxArchiveSpec::validate`] and friends and reported as a `False` condition.

// Doc comments on these types become the CRD descriptions `kubectl explain` prints: plain words,
// not rustdoc markup.
#![allow(clippy::doc_markdown)]

mod destruction;
mod disposition_review;
mod legal_hold;
mod mailbox_archive;
mod matcher;
mod retention_policy;

pub use crate::source::imap::TlsMode;
pub use destruction::{DestructionRunStatus, DestructionStatus, PlanCounts, PolicyDestruction};
pub use disposition_review::{
    DispositionReview, DispositionReviewSpec, DispositionReviewStatus, ReviewDecision,
};
pub use legal_hold::{
    ArchiveHeld, ArchiveSelector, DateRange, LegalHold, LegalHoldSpec, LegalHoldStatus,
};
pub use mailbox_archive::{
    FolderStatus, ImapSpec, LastSync, LogStatus, MailboxArchive, MailboxArchiveSpec,
    MailboxArchiveStatus, RunResult, Runner, S3CredentialsRef, StorageSpec, Totals, WebIdentity,
};
pub use matcher::{HeaderEquals, RecordMatch};
pub use retention_policy::{
    DestructionSpec, Disposition, RetentionPolicy, RetentionPolicySpec, RetentionPolicyStatus,
    RetentionRule, RetentionStart, RuleOutcome,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every mailvault resource.
pub const GROUP: &str = "mailvault.io";

/// Every CRD, in the order `mailvault crd` prints them.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        MailboxArchive::crd(),
        RetentionPolicy::crd(),
        LegalHold::crd(),
        DispositionReview::crd(),
    ]
}

/// Every CRD as one multi-document YAML text, as committed under `crds/`.
pub fn all_yaml() -> crate::Result<String> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(
            &serde_norway::to_string(&crd).map_err(|e| crate::Error::encoding("CRD to YAML", e))?,
        );
    }
    Ok(out)
}

/// A key of a Secret in the resource's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A resource in the same namespace, by name.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalRef {
    /// Name of the resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A cron expression: five fields (minute hour day-of-month month day-of-week) or a macro.
/// The schema checks the shape; the controller parses the fields.
pub(crate) const CRON_PATTERN: &str =
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+\s+\S+\s+\S+\s+\S+\s+\S+)$";

/// An ISO 8601 period as records schedules write them (`P3Y`, `P18M`, `P2W`, `P30D`, `P1Y6M`),
/// or `Permanent`.
pub(crate) const RETAIN_PATTERN: &str =
    r"^(Permanent|P([0-9]+Y)?([0-9]+M)?([0-9]+W)?([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+S)?)?)$";

/// Parses a cron expression of five fields (or a macro) as the controller runs it.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if !expr.trim_start().starts_with('@') && fields != 5 {
        return Err(format!(
            "{expr:?} has {fields} fields; a schedule has five: minute hour day-of-month month day-of-week"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a valid cron expression: {e}"))
}

/// Parses an IANA time zone name (`UTC`, `America/Chicago`).
pub fn parse_time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::TimeZone::get(name)
        .map_err(|_| format!("{name:?} is not an IANA time zone such as UTC or America/Chicago"))
}

/// Parses a retention period (`P3Y`, `Permanent`).
pub fn parse_retain(text: &str) -> Result<mailvault_core::retention::Period, String> {
    text.parse()
        .map_err(|e: mailvault_core::retention::PeriodParseError| format!("retain {text:?}: {e}"))
}

#[cfg(test)]
mod tests;
