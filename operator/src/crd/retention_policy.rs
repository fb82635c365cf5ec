//! RetentionPolicy: what records officers edit — which record series a message belongs to and
//! how long it is kept.

use super::matcher::RecordMatch;
use super::{CRON_PATTERN, RETAIN_PATTERN};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use mailvault_core::rules::{self, RetentionSchedule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Ordered rules (first match wins) and the default rule for everything else.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "mailvault.io",
    version = "v1alpha1",
    kind = "RetentionPolicy",
    namespaced,
    status = "RetentionPolicyStatus",
    shortname = "rp",
    category = "mailvault",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Rules","type":"integer","jsonPath":".status.ruleCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicySpec {
    /// Rules in order; a record takes the first rule that matches. Names are unique (a
    /// list-map keyed by name, so the apiserver refuses duplicates and server-side apply
    /// merges rules by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub rules: Vec<RetentionRule>,
    /// The rule for records no other rule matches. Required: every record has a series.
    pub default_rule: RuleOutcome,
    /// When destruction runs; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destruction: Option<DestructionSpec>,
}

/// A named rule: a matcher and what happens to the records it matches.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionRule {
    /// Rule name, unique within the policy.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?$")
    )]
    pub name: String,
    /// Which records the rule covers.
    #[serde(default, rename = "match")]
    pub matcher: RecordMatch,
    /// What happens to them.
    #[serde(flatten)]
    pub outcome: RuleOutcome,
}

/// Series, retention and disposition of the records a rule covers.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.retain == 'Permanent') == (self.disposition == 'Permanent')").message("retain: Permanent and disposition: Permanent go together").field_path(".disposition"))]
#[x_kube(validation = Rule::new("self.retain != 'P' && !self.retain.endsWith('T')").message("retain needs a period, e.g. P3Y (and a time after T, e.g. PT5S)").field_path(".retain"))]
pub struct RuleOutcome {
    /// Record series: the citation of the state schedule item (e.g. `GS 1-07`).
    #[schemars(length(min = 1, max = 200), regex(pattern = r"^[ -~]+$"))]
    pub record_series: String,
    /// How long: an ISO 8601 period (`P3Y`, `P18M`, `P30D`) or `Permanent`.
    #[schemars(regex(pattern = RETAIN_PATTERN))]
    pub retain: String,
    /// What the period is counted from.
    #[serde(default)]
    pub from: RetentionStart,
    /// What happens when it ends.
    pub disposition: Disposition,
}

/// What a retention period is counted from.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum RetentionStart {
    /// The message's Date header (falling back to the IMAP internal date).
    MessageDate,
    /// The moment the record was archived.
    #[default]
    ArchivedAt,
    /// The end of the calendar year the message is dated in (schedules such as "3 years
    /// after the end of the calendar year").
    EndOfCalendarYear,
}

/// What happens when retention ends.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Disposition {
    /// Destroyed by the scheduled destruction run, with tombstones and a certificate.
    Destroy,
    /// Held for a person's approval before destruction.
    Review,
    /// Kept for ever.
    Permanent,
}

/// When destruction runs.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestructionSpec {
    /// Cron, five fields or a macro.
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub schedule: String,
    /// IANA time zone of the schedule.
    #[serde(default = "utc")]
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_+\-/]*$"))]
    pub time_zone: String,
    /// Report what would be destroyed, destroy nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// What the operator found in the policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicyStatus {
    /// `Ready`: the policy is valid and archives may use it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Rules, the default rule included.
    #[serde(default)]
    pub rule_count: u32,
    /// MailboxArchives (same namespace) that use this policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archives: Vec<String>,
    /// Per archive: the destruction plan's numbers as of its last destruction run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["archive"]))]
    pub destruction: Vec<super::PolicyDestruction>,
}

impl RetentionPolicySpec {
    /// What the schema cannot check: the policy converts to a schedule ([`Self::schedule`]:
    /// regexes compile, periods parse, addresses are addresses), the destruction schedule and
    /// its time zone are real. Every problem, one line each.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = match self.schedule() {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        };
        if let Some(d) = &self.destruction {
            if let Err(e) = super::parse_cron(&d.schedule) {
                problems.push(format!("destruction.schedule: {e}"));
            }
            if let Err(e) = super::parse_time_zone(&d.time_zone) {
                problems.push(format!("destruction.timeZone: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Rule names as the schema spells them (checked here too, for a policy read from a file).
fn rule_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

impl RuleOutcome {
    /// The core's outcome for this one.
    pub fn to_outcome(&self) -> Result<rules::Outcome, String> {
        let series = &self.record_series;
        if series.is_empty()
            || series.len() > 200
            || !series.bytes().all(|b| (b' '..=b'~').contains(&b))
        {
            return Err(format!(
                "recordSeries {:?} is not 1-200 printable ASCII characters",
                series.chars().take(220).collect::<String>()
            ));
        }
        let period = super::parse_retain(&self.retain)?;
        let from = match self.from {
            RetentionStart::MessageDate => rules::RetentionStart::MessageDate,
            RetentionStart::ArchivedAt => rules::RetentionStart::ArchivedAt,
            RetentionStart::EndOfCalendarYear => rules::RetentionStart::EndOfCalendarYear,
        };
        let disposition = match self.disposition {
            Disposition::Destroy => rules::Disposition::Destroy,
            Disposition::Review => rules::Disposition::Review,
            Disposition::Permanent => rules::Disposition::Permanent,
        };
        rules::Outcome::new(series.clone(), period, from, disposition).map_err(|e| e.to_string())
    }
}

impl RetentionPolicySpec {
    /// The core's schedule: rules in order, then the default. Every problem, one line each.
    pub fn schedule(&self) -> Result<RetentionSchedule, Vec<String>> {
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for rule in &self.rules {
            if !rule_name_ok(&rule.name) {
                problems.push(format!(
                    "rule {:?}: a name is 1-63 lowercase letters, digits and '-', not starting or ending with '-'",
                    rule.name.chars().take(80).collect::<String>()
                ));
                continue;
            }
            let built = rule
                .matcher
                .to_matcher()
                .and_then(|m| Ok((m, rule.outcome.to_outcome()?)))
                .and_then(|(m, o)| {
                    rules::Rule::new(rule.name.clone(), m, o).map_err(|e| e.to_string())
                });
            match built {
                Ok(r) => rules.push(r),
                Err(e) => problems.push(format!("rule {}: {e}", rule.name)),
            }
        }
        let default = self
            .default_rule
            .to_outcome()
            .map_err(|e| problems.push(format!("defaultRule: {e}")));
        if let (true, Ok(default)) = (problems.is_empty(), default) {
            return RetentionSchedule::new(rules, default).map_err(|e| vec![e.to_string()]);
        }
        Err(problems)
    }
}
