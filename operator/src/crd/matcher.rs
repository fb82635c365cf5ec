//! The record matcher shared by retention rules and legal holds.

use kube::KubeSchema;
use mailvault_core::rules::{self, AddressPattern, Matcher};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which records a rule or a hold covers. Every field given must match (AND); within a list,
/// any entry may match (OR). An empty matcher matches every record.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minSize) || !has(self.maxSize) || self.minSize <= self.maxSize").message("minSize must not exceed maxSize").field_path(".minSize"))]
pub struct RecordMatch {
    /// Folder globs on the folder's decoded name (`/` between levels): `*` within a level,
    /// `**` across levels, `?` one character; INBOX in any case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub folders: Vec<String>,
    /// Sender addresses (`chief@city.gov`) or domains (`@city.gov`: that domain exactly, not
    /// its subdomains), compared case-insensitively.
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
    /// Regular expression (Rust `regex` syntax) searched for in the decoded Subject (its first
    /// 4096 bytes); anchor it with ^ and $ to match the whole subject.
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
    /// Whether the message has an attachment: a MIME part with Content-Disposition attachment,
    /// a file name, or an attached message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_attachment: Option<bool>,
}

/// A header name and the exact value it must have.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct HeaderEquals {
    /// Header field name, e.g. `X-Records-Series`.
    #[schemars(regex(pattern = r"^[!-9;-~]+$"))]
    pub name: String,
    /// Value, compared exactly after unfolding and trimming (encoded words are not decoded).
    pub equals: String,
}

impl RecordMatch {
    /// What the schema cannot check: the subject regex compiles (within the core's size
    /// limit), addresses are addresses or domains, minSize does not exceed maxSize.
    pub fn validate(&self) -> Result<(), String> {
        self.to_matcher().map(|_| ())
    }

    /// The core's matcher for this one.
    pub fn to_matcher(&self) -> Result<Matcher, String> {
        let addresses = |field: &str, list: &[String]| {
            list.iter()
                .map(|a| AddressPattern::parse(a).map_err(|e| format!("{field}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let matcher = Matcher {
            folders: self.folders.clone(),
            from: addresses("from", &self.from)?,
            to: addresses("to", &self.to)?,
            cc: addresses("cc", &self.cc)?,
            subject: self
                .subject_regex
                .as_deref()
                .map(rules::subject_regex)
                .transpose()
                .map_err(|e| e.to_string())?,
            header: self
                .header
                .as_ref()
                .map(|h| rules::HeaderEquals::new(&h.name, &h.equals))
                .transpose()
                .map_err(|e| format!("header: {e}"))?,
            min_size: self.min_size,
            max_size: self.max_size,
            has_attachment: self.has_attachment,
        };
        matcher.check().map_err(|e| e.to_string())?;
        Ok(matcher)
    }
}
