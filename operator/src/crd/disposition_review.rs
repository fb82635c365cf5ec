//! DispositionReview: one due batch of records whose rule says `Review`, waiting for a records
//! officer's decision (Missouri's "order of destruction").
//!
//! `[ RetentionPolicy rule: Review ] --due batch--> [ DispositionReview ] --Approved--> destruction`
//!
//! The operator writes the batch (archive, policy, rule, series, count, retain-until range,
//! log size, records digest) when it creates the review; those fields are immutable. A records officer
//! writes the decision: `Approved` (with who and a reference), or `Extended` (with who and a
//! new date). A decided review is final; a new batch gets a new review.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A UTC instant as the log spells it.
const INSTANT_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$";

/// One due batch of records and the records officer's decision on it.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailvault.io",
    version = "v1alpha1",
    kind = "DispositionReview",
    namespaced,
    status = "DispositionReviewStatus",
    shortname = "dr",
    category = "mailvault",
    printcolumn = r#"{"name":"Archive","type":"string","jsonPath":".spec.archive"}"#,
    printcolumn = r#"{"name":"Series","type":"string","jsonPath":".spec.recordSeries"}"#,
    printcolumn = r#"{"name":"Count","type":"integer","jsonPath":".spec.count"}"#,
    printcolumn = r#"{"name":"Decision","type":"string","jsonPath":".spec.decision"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.decision != 'Approved' || (has(self.decidedBy) && has(self.reference))").message("decision: Approved requires decidedBy and reference (e.g. the order of destruction number)"))]
#[x_kube(validation = Rule::new("self.decision != 'Extended' || (has(self.decidedBy) && has(self.extendUntil))").message("decision: Extended requires decidedBy and extendUntil"))]
#[x_kube(validation = Rule::new("!has(self.extendUntil) || timestamp(self.extendUntil) > timestamp(self.latestRetainUntil)").message("extendUntil must be after latestRetainUntil").field_path(".extendUntil"))]
#[x_kube(validation = Rule::new("oldSelf.decision == 'Pending' || self == oldSelf").message("a decided review is final; the operator creates a new review for a new batch"))]
pub struct DispositionReviewSpec {
    /// The MailboxArchive (same namespace) whose records these are. Set by the operator.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("archive is set by the operator and cannot change"))]
    pub archive: String,
    /// The RetentionPolicy whose rule says Review. Set by the operator.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("policy is set by the operator and cannot change"))]
    pub policy: String,
    /// The rule's name (defaultRule for the default rule). Set by the operator.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("rule is set by the operator and cannot change"))]
    pub rule: String,
    /// The record series of the batch. Set by the operator.
    #[schemars(length(min = 1, max = 200), regex(pattern = r"^[ -~]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("recordSeries is set by the operator and cannot change"))]
    pub record_series: String,
    /// How many records the batch holds. Set by the operator.
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("count is set by the operator and cannot change"))]
    pub count: u64,
    /// Earliest retain-until in the batch (UTC, YYYY-MM-DDTHH:MM:SSZ). Set by the operator.
    #[schemars(regex(pattern = INSTANT_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("earliestRetainUntil is set by the operator and cannot change"))]
    pub earliest_retain_until: String,
    /// Latest retain-until in the batch. Set by the operator.
    #[schemars(regex(pattern = INSTANT_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("latestRetainUntil is set by the operator and cannot change"))]
    pub latest_retain_until: String,
    /// SHA-256 (hex) over the batch's record ids, sorted, each followed by a newline: the
    /// same digest a destruction certificate carries. Set by the operator.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("recordsDigest is set by the operator and cannot change"))]
    pub records_digest: String,
    /// The log's size (entries) when the batch was computed: records ingested later are not in
    /// it, whatever their retain-until. Set by the operator.
    #[x_kube(validation = Rule::new("self == oldSelf").message("logSize is set by the operator and cannot change"))]
    pub log_size: u64,
    /// The records officer's decision.
    #[serde(default)]
    pub decision: ReviewDecision,
    /// Who decided (name and title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), regex(pattern = r"^[ -~]+$"))]
    pub decided_by: Option<String>,
    /// The authority for the decision, e.g. the order of destruction number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), regex(pattern = r"^[ -~]+$"))]
    pub reference: Option<String>,
    /// For Extended: keep the batch until then (UTC, YYYY-MM-DDTHH:MM:SSZ); the operator
    /// extends each record's retention and lock, and reviews it again when that ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = INSTANT_PATTERN))]
    pub extend_until: Option<String>,
}

/// A records officer's decision on a batch.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ReviewDecision {
    /// Not decided yet: nothing in the batch is destroyed.
    #[default]
    Pending,
    /// Destroy the batch (each record still only once its retention has ended and no legal
    /// hold is in force).
    Approved,
    /// Keep the batch until extendUntil.
    Extended,
}

/// What the operator did with the decision.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DispositionReviewStatus {
    /// `Ready`: True once the operator carried out the decision (Approved: records destroyed
    /// as their locks end; Extended: retention extended); False when it cannot (the batch
    /// changed, or extendUntil is not after latestRetainUntil), with what to do. `Stale`: True
    /// when the batch changed since the review was created: decide on the newer review.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Records of the batch destroyed under this approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroyed: Option<u64>,
    /// Records of the batch whose retention was extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended: Option<u64>,
    /// Object keys (relative to the archive root) of the destruction certificates that list
    /// the batch's records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
}
