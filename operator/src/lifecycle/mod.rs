//! The records lifecycle: the retention rules applied to every record as it is archived.
//!
//! `RetentionPolicy (CR or YAML file) -> RetentionSchedule; message -> facts -> Classification`
//!
//! The CLI (`mailvault archive --policy FILE`) and the operator (the archive's
//! `retentionPolicyRef`) read the same `RetentionPolicy` document and classify through the same
//! [`classify`], so a record lands under the same rule, series and retain-until either way.

pub mod apply;
pub mod destroy;
pub use mailvault_core::facts;
pub mod holds;
pub mod policy_edit;
pub mod stored;

use crate::crd::{RetentionPolicy, RetentionPolicySpec};
use crate::spool::Body;
use crate::{Error, Result};
use mailvault_core::UnixTime;
use mailvault_core::rules::{Classification, RetentionSchedule};
use std::io::Read as _;
use std::sync::Arc;

pub use facts::Envelope;

/// A record's classification, and whether its headers could be read (an unreadable message
/// takes the default rule; the run counts them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// Rule, series, disposition, retain-until and the date it was counted from.
    pub classification: Classification,
    /// The message's headers could not be parsed.
    pub unparseable: bool,
    /// What the rules matched on: also the record's header index (parsed once).
    pub facts: mailvault_core::rules::MessageFacts,
}

/// Classifies a message from (a prefix of) its bytes: facts, then the first matching rule.
pub fn classify(
    schedule: &RetentionSchedule,
    bytes: &[u8],
    envelope: Envelope<'_>,
    archived_at: UnixTime,
) -> Classified {
    let facts = facts::extract(bytes, envelope);
    Classified {
        classification: schedule.classify(&facts, archived_at),
        unparseable: facts.unparseable,
        facts,
    }
}

/// [`classify`] for a message body in memory or in a file, on a blocking thread (parsing is
/// CPU work and a spooled body is read from disk), or in place for a short one
/// ([`Body::inline_bytes`]): at most [`facts::PREFIX_BYTES`] are read.
pub async fn classify_body(
    schedule: Arc<RetentionSchedule>,
    body: &Body,
    folder: &str,
    internal_date: Option<UnixTime>,
    archived_at: UnixTime,
) -> Result<Classified> {
    let size = body.len();
    if let Some(bytes) = body.inline_bytes() {
        let envelope = Envelope {
            folder,
            size,
            internal_date,
        };
        return Ok(classify(&schedule, bytes, envelope, archived_at));
    }
    let prefix = match body {
        Body::Memory(bytes) => {
            Prefix::Bytes(bytes[..bytes.len().min(facts::PREFIX_BYTES)].to_vec())
        }
        Body::File(file) => Prefix::File(file.path().to_path_buf()),
    };
    let folder = folder.to_owned();
    tokio::task::spawn_blocking(move || {
        let bytes = match prefix {
            Prefix::Bytes(bytes) => bytes,
            Prefix::File(path) => read_prefix(&path)?,
        };
        let envelope = Envelope {
            folder: &folder,
            size,
            internal_date,
        };
        Ok(classify(&schedule, &bytes, envelope, archived_at))
    })
    .await
    .map_err(|e| Error::Source(format!("classifying a message failed: {e}")))?
}

enum Prefix {
    Bytes(Vec<u8>),
    File(std::path::PathBuf),
}

fn read_prefix(path: &std::path::Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(facts::PREFIX_BYTES as u64)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok(bytes)
}

/// Sidecar field: when the record was captured (Unix seconds).
pub const ARCHIVED_AT_FIELD: &str = "mailvault-archived-at";

/// The sidecar fields that say how a record was classified: `mailvault-rule` (a rule name or
/// `default`), `mailvault-date-source` (`date-header`, `internal-date`, `archived-at`) and
/// `mailvault-archived-at` (when it was captured, Unix seconds: what an `ArchivedAt` rule
/// counts from when a policy is re-applied, also for a record logged later by adoption).
pub fn sidecar_fields(c: &Classification, archived_at: UnixTime) -> [(String, String); 3] {
    [
        (ARCHIVED_AT_FIELD.into(), archived_at.0.to_string()),
        ("mailvault-rule".into(), c.rule.clone()),
        (
            "mailvault-date-source".into(),
            c.date_source.as_str().into(),
        ),
    ]
}

/// A `RetentionPolicy` document (`kind: RetentionPolicy`, as `kubectl apply` takes it) as a
/// schedule, checked exactly as the operator checks the resource.
pub fn policy_from_yaml(text: &str) -> Result<RetentionSchedule> {
    let usage = |e: String| Error::Usage(format!("retention policy: {e}"));
    let value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| usage(e.to_string()))?;
    let field = |k: &str| value.get(k).and_then(serde_norway::Value::as_str);
    let expected = format!("{}/v1alpha1", crate::crd::GROUP);
    if field("kind") != Some("RetentionPolicy") || field("apiVersion") != Some(&expected) {
        return Err(usage(format!(
            "expected a document with apiVersion: {expected} and kind: RetentionPolicy"
        )));
    }
    let policy: RetentionPolicy =
        serde_norway::from_value(value.clone()).map_err(|e| usage(e.to_string()))?;
    // As `kubectl apply` (strict field validation) would: a misspelt field is an error, not
    // silently dropped — a `mtach:` would otherwise leave a rule that matches every record.
    let read_back = serde_norway::to_value(&policy.spec).map_err(|e| usage(e.to_string()))?;
    if let Some(spec) = value.get("spec")
        && let Some(field) = unknown_field(spec, &read_back, "spec")
    {
        return Err(usage(format!("{field}: unknown field")));
    }
    schedule_of(&policy.spec).map_err(|problems| usage(problems.join("; ")))
}

/// The first field of `given` that the types did not read (absent from `read_back`, and not an
/// empty value that serialization leaves out).
fn unknown_field(
    given: &serde_norway::Value,
    read_back: &serde_norway::Value,
    path: &str,
) -> Option<String> {
    use serde_norway::Value;
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        _ => false,
    };
    match (given, read_back) {
        (Value::Mapping(g), Value::Mapping(r)) => g.iter().find_map(|(k, v)| {
            let name = k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned);
            let here = format!("{path}.{name}");
            match r.get(k) {
                Some(back) => unknown_field(v, back, &here),
                None if empty(v) => None,
                None => Some(here),
            }
        }),
        (Value::Sequence(g), Value::Sequence(r)) => g
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(i, (v, back))| unknown_field(v, back, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// A policy's schedule, after every check the operator makes ([`RetentionPolicySpec::validate`]).
pub fn schedule_of(
    spec: &RetentionPolicySpec,
) -> std::result::Result<RetentionSchedule, Vec<String>> {
    spec.validate()?;
    spec.schedule()
}

#[cfg(test)]
mod tests;
