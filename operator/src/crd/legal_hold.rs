//! LegalHold: freezes matching records of some archives until it is released.

use super::matcher::RecordMatch;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why records are held, which archives, which records.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailvault.io",
    version = "v1alpha1",
    kind = "LegalHold",
    namespaced,
    status = "LegalHoldStatus",
    shortname = "lh",
    category = "mailvault",
    printcolumn = r#"{"name":"Case","type":"string","jsonPath":".spec.caseReference"}"#,
    printcolumn = r#"{"name":"Released","type":"boolean","jsonPath":".spec.released"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.released) || !oldSelf.released || self.released").message("a released hold stays released; place a new LegalHold instead").field_path(".released"))]
pub struct LegalHoldSpec {
    /// Why the records are held, in words.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// The case, request or matter (e.g. a docket number).
    #[schemars(length(min = 1, max = 200))]
    pub case_reference: String,
    /// Which archives (same namespace) the hold applies to.
    pub archives: ArchiveSelector,
    /// Which of their records; absent: every record.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<RecordMatch>,
    /// Only records whose message is dated in this range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_range: Option<DateRange>,
    /// Only these records (ids as `mailvault ls` prints them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    pub record_ids: Vec<String>,
    /// Released: the records may be destroyed again when their retention ends. Once true it
    /// cannot be set back.
    #[serde(default)]
    pub released: bool,
}

/// Archives by name or by label selector; exactly one of the two.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.names) != has(self.selector)").message("give either archives.names or archives.selector, not both and not neither"))]
pub struct ArchiveSelector {
    /// MailboxArchive names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    pub names: Option<Vec<String>>,
    /// MailboxArchives whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// An inclusive range of message dates (RFC 3339 dates or date-times).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.from) || !has(self.to) || self.from <= self.to").message("dateRange.from must not be after dateRange.to"))]
pub struct DateRange {
    /// First date (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9:.]+(Z|[+\-][0-9]{2}:[0-9]{2}))?$"
    ))]
    pub from: Option<String>,
    /// Last date (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9:.]+(Z|[+\-][0-9]{2}:[0-9]{2}))?$"
    ))]
    pub to: Option<String>,
}

/// What the operator found.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegalHoldStatus {
    /// `Ready`: the hold is valid and names archives that exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The MailboxArchives the hold applies to now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archives: Vec<String>,
    /// Per archive: the records the hold holds there, as of the generation applied. Written by
    /// each archive's run (one entry per archive), not by the hold's reconciler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["archive"]))]
    pub held: Vec<ArchiveHeld>,
}

/// What a hold holds in one archive.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveHeld {
    /// The MailboxArchive.
    pub archive: String,
    /// Records of it the hold holds (S3 legal hold on, hold-placed logged).
    pub records: u64,
    /// The hold's generation the archive applied (a later generation is pending there).
    pub generation: i64,
    /// When it was applied.
    pub applied_at: String,
}

impl LegalHoldSpec {
    /// What the schema cannot check.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Some(m) = &self.matcher
            && let Err(e) = m.validate()
        {
            problems.push(format!("match: {e}"));
        }
        if let Some(sel) = &self.archives.selector
            && let Err(e) = kube::core::Selector::try_from(sel.clone())
        {
            problems.push(format!("archives.selector: {e}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
