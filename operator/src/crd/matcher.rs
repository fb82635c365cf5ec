//! The record matcher shared by retention rules and legal holds.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which records a rule or a hold covers. Every field given must match (AND); within a list,
/// any entry may match (OR). An empty matcher matches every record.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minSize) || !has(self.maxSize) || self.minSize <= self.maxSize").message("minSize must not exceed maxSize").field_path(".minSize"))]
pub struct RecordMatch {
    /// Folder globs (`*` within a level, `**` across levels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub folders: Vec<String>,
    /// Sender addresses (`chief@city.gov`) or domains (`@city.gov`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub from: Vec<String>,
    /// Recipient (To) addresses or domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub to: Vec<String>,
    /// Cc addresses or domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub cc: Vec<String>,
    /// Regular expression (Rust `regex` syntax) the Subject must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub subject_regex: Option<String>,
    /// A header that must have exactly this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderEquals>,
    /// Smallest message size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_size: Option<u64>,
    /// Largest message size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_size: Option<u64>,
    /// Whether the message has an attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_attachment: Option<bool>,
}

/// A header name and the exact value it must have.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct HeaderEquals {
    /// Header field name, e.g. `X-Records-Series`.
    #[schemars(regex(pattern = r"^[!-9;-~]+$"))]
    pub name: String,
    /// Value, compared after unfolding.
    pub equals: String,
}

impl RecordMatch {
    /// What the schema cannot check: the subject regex compiles.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(re) = &self.subject_regex {
            regex::Regex::new(re)
                .map_err(|e| format!("subjectRegex {re:?} does not compile: {e}"))?;
        }
        Ok(())
    }
}
