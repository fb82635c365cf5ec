//! Retention rules applied to a record at ingest: the first rule that matches decides.
//!
//! `MessageFacts -> [ rule 1 | rule 2 | ... | default ] -> Classification { series, retain-until }`
//!
//! A [`RetentionSchedule`] is built once from a policy (every matcher checked and its regex
//! compiled then, so a policy that would fail here is refused before any record sees it) and
//! classifies each message from the few facts the matchers need. The facts come from outside
//! bytes (a hostile sender writes them), so every comparison here is bounded: globs are
//! iterative, the subject regex has a compiled-size limit and sees at most
//! [`SUBJECT_MATCH_BYTES`] of the subject, and the `regex` crate matches in linear time.
//!
//! Retain-until is calendar arithmetic in UTC ([`Period::retain_until`]), counted from:
//! - `ArchivedAt`: the moment the record is archived;
//! - `MessageDate`: the message's Date header, else its internal date (when the source received
//!   it), else the archiving time; a date before 1970 or more than a day after archiving is not
//!   believed and the next source is used. The [`DateSource`] used is part of the outcome;
//! - `EndOfCalendarYear`: 1 January 00:00:00 UTC of the year after the message date's year
//!   (that date taken in UTC), so `P3Y` keeps a message dated 2026-05-04 until
//!   2030-01-01T00:00:00Z.

use crate::entry::RetainUntil;
use crate::glob;
use crate::retention::Period;
use crate::time::UnixTime;
use std::fmt;

/// The rule name a [`Classification`] carries when no rule matched.
pub const DEFAULT_RULE: &str = "default";
/// Bytes of the subject the regex sees; the rest is ignored (a subject longer than this is
/// hostile or broken, and matching is linear in it).
pub const SUBJECT_MATCH_BYTES: usize = 4096;
/// Compiled-program and lazy-DFA limits of a subject regex: a pattern needing more is refused
/// when the policy is loaded (e.g. `\w{1000}{1000}`), not when a message arrives.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// A date further than this after archiving is not believed (clock skew allowance).
const FUTURE_DATE_TOLERANCE_SECS: i64 = 86_400;

/// What the matchers look at, extracted from a message (by the operator crate) and its source.
///
/// Addresses are compared case-insensitively, header names case-insensitively and header
/// values exactly after unfolding and trimming ([`unfold`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFacts {
    /// Folder, as a person reads it (IMAP modified UTF-7 decoded).
    pub folder: String,
    /// From addresses (`local@domain`).
    pub from: Vec<String>,
    /// To addresses.
    pub to: Vec<String>,
    /// Cc addresses.
    pub cc: Vec<String>,
    /// Subject, RFC 2047 encoded words decoded; empty when absent.
    pub subject: String,
    /// Header fields as `(name, unfolded and trimmed value)`, in message order.
    pub headers: Vec<(String, String)>,
    /// Size of the whole message in bytes.
    pub size: u64,
    /// Whether a MIME part is an attachment (see the operator's facts extraction).
    pub has_attachment: bool,
    /// The Date header in UTC, if it parsed.
    pub date: Option<UnixTime>,
    /// When the source received the message (IMAP INTERNALDATE), if it says.
    pub internal_date: Option<UnixTime>,
    /// The headers could not be parsed: the message takes the default rule.
    pub unparseable: bool,
}

/// Unfolds a header value (RFC 5322: line breaks removed) and trims surrounding whitespace.
pub fn unfold(value: &str) -> String {
    value
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect::<String>()
        .trim()
        .to_owned()
}

/// What a retention period is counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetentionStart {
    /// The message date (Date header, else internal date, else archiving time).
    MessageDate,
    /// The moment of archiving.
    #[default]
    ArchivedAt,
    /// 1 January 00:00:00 UTC of the year after the message date's year.
    EndOfCalendarYear,
}

/// What happens when retention ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Destroyed on schedule.
    Destroy,
    /// Destroyed only after a person approves.
    Review,
    /// Never destroyed.
    Permanent,
}

impl Disposition {
    /// The policy's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Destroy => "Destroy",
            Self::Review => "Review",
            Self::Permanent => "Permanent",
        }
    }
}

/// Which date a retain-until was counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateSource {
    /// The message's Date header.
    DateHeader,
    /// The source's internal date (IMAP INTERNALDATE).
    InternalDate,
    /// The time of archiving.
    ArchivedAt,
}

impl DateSource {
    /// Spelling in sidecars and reports: `date-header`, `internal-date`, `archived-at`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DateHeader => "date-header",
            Self::InternalDate => "internal-date",
            Self::ArchivedAt => "archived-at",
        }
    }
}

impl fmt::Display for DateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a policy cannot become a schedule. Messages name the rule and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

/// Series, retention and disposition of the records a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    series: String,
    period: Period,
    from: RetentionStart,
    disposition: Disposition,
}

impl Outcome {
    /// An outcome; `Permanent` retention and disposition go together.
    pub fn new(
        series: impl Into<String>,
        period: Period,
        from: RetentionStart,
        disposition: Disposition,
    ) -> Result<Self, RuleError> {
        let series = series.into();
        if series.trim().is_empty() {
            return Err(RuleError("recordSeries is empty".into()));
        }
        if (period == Period::Permanent) != (disposition == Disposition::Permanent) {
            return Err(RuleError(
                "retain: Permanent and disposition: Permanent go together".into(),
            ));
        }
        Ok(Self {
            series,
            period,
            from,
            disposition,
        })
    }

    /// The record series.
    pub fn series(&self) -> &str {
        &self.series
    }

    /// The retention period.
    pub fn period(&self) -> Period {
        self.period
    }

    /// What happens when retention ends.
    pub fn disposition(&self) -> Disposition {
        self.disposition
    }
}

/// An address (`chief@city.gov`) or every address of one domain (`@city.gov`: that domain
/// exactly, not its subdomains). Compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressPattern {
    /// One address.
    Address(String),
    /// Every address whose domain is exactly this one.
    Domain(String),
}

impl AddressPattern {
    /// Parses `local@domain` or `@domain`.
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let bad = || {
            RuleError(format!(
                "{:?} is neither an address (chief@city.gov) nor a domain (@city.gov)",
                text.chars().take(80).collect::<String>()
            ))
        };
        let lower = text.trim().to_lowercase();
        if lower.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        let (local, domain) = lower.rsplit_once('@').ok_or_else(bad)?;
        if domain.is_empty() || domain.contains('@') {
            return Err(bad());
        }
        if local.is_empty() {
            Ok(Self::Domain(domain.to_owned()))
        } else {
            Ok(Self::Address(lower))
        }
    }

    /// Whether an address matches.
    pub fn matches(&self, address: &str) -> bool {
        let address = address.trim().to_lowercase();
        match self {
            Self::Address(a) => address == *a,
            Self::Domain(d) => address.rsplit_once('@').is_some_and(|(_, ad)| ad == d),
        }
    }
}

/// A header that must have a value (any occurrence of it, if it repeats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEquals {
    name: String,
    value: String,
}

impl HeaderEquals {
    /// Header `name` (case-insensitive) equal to `value` (after unfolding and trimming).
    pub fn new(name: &str, value: &str) -> Result<Self, RuleError> {
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(RuleError(format!(
                "header name {:?} is not a header field name",
                name.chars().take(80).collect::<String>()
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            value: unfold(value),
        })
    }
}

/// Which messages a rule covers. Every criterion given must hold (AND); within a list any
/// entry may match (OR). An empty matcher matches every message.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// Folder globs ([`glob::matches`]).
    pub folders: Vec<String>,
    /// From addresses or domains.
    pub from: Vec<AddressPattern>,
    /// To addresses or domains.
    pub to: Vec<AddressPattern>,
    /// Cc addresses or domains.
    pub cc: Vec<AddressPattern>,
    /// Subject regex (searched, not anchored: use `^...$` for the whole subject).
    pub subject: Option<regex::Regex>,
    /// A header and its value.
    pub header: Option<HeaderEquals>,
    /// Smallest size in bytes (inclusive).
    pub min_size: Option<u64>,
    /// Largest size in bytes (inclusive).
    pub max_size: Option<u64>,
    /// Whether the message must (or must not) have an attachment.
    pub has_attachment: Option<bool>,
}

/// Compiles a subject regex under [`REGEX_SIZE_LIMIT`].
pub fn subject_regex(pattern: &str) -> Result<regex::Regex, RuleError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            RuleError(format!(
                "subjectRegex {:?} does not compile: {e}",
                pattern.chars().take(200).collect::<String>()
            ))
        })
}

impl Matcher {
    /// Checks what the fields cannot say alone.
    pub fn check(&self) -> Result<(), RuleError> {
        if let (Some(min), Some(max)) = (self.min_size, self.max_size)
            && min > max
        {
            return Err(RuleError(format!("minSize {min} exceeds maxSize {max}")));
        }
        Ok(())
    }

    /// Whether a message matches.
    pub fn matches(&self, facts: &MessageFacts) -> bool {
        let any = |patterns: &[AddressPattern], addresses: &[String]| {
            patterns.is_empty()
                || patterns
                    .iter()
                    .any(|p| addresses.iter().any(|a| p.matches(a)))
        };
        (self.folders.is_empty() || self.folders.iter().any(|g| glob::matches(g, &facts.folder)))
            && any(&self.from, &facts.from)
            && any(&self.to, &facts.to)
            && any(&self.cc, &facts.cc)
            && self
                .subject
                .as_ref()
                .is_none_or(|re| re.is_match(bounded(&facts.subject, SUBJECT_MATCH_BYTES)))
            && self.header.as_ref().is_none_or(|h| {
                facts
                    .headers
                    .iter()
                    .any(|(n, v)| n.trim().eq_ignore_ascii_case(&h.name) && v.trim() == h.value)
            })
            && self.min_size.is_none_or(|min| facts.size >= min)
            && self.max_size.is_none_or(|max| facts.size <= max)
            && self
                .has_attachment
                .is_none_or(|want| facts.has_attachment == want)
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A named rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    matcher: Matcher,
    outcome: Outcome,
}

impl Rule {
    /// A rule; its name must not be empty nor [`DEFAULT_RULE`].
    pub fn new(
        name: impl Into<String>,
        matcher: Matcher,
        outcome: Outcome,
    ) -> Result<Self, RuleError> {
        let name = name.into();
        if name.trim().is_empty() {
            return Err(RuleError("a rule has no name".into()));
        }
        if name == DEFAULT_RULE {
            return Err(RuleError(format!(
                "rule name {DEFAULT_RULE:?} is reserved for defaultRule"
            )));
        }
        matcher
            .check()
            .map_err(|e| RuleError(format!("rule {name}: {e}")))?;
        Ok(Self {
            name,
            matcher,
            outcome,
        })
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What happens to the records it matches.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }
}

/// Ordered rules and the default: how every record of an archive is classified.
#[derive(Debug, Clone)]
pub struct RetentionSchedule {
    rules: Vec<Rule>,
    default: Outcome,
}

/// How one record is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Name of the rule that matched, or [`DEFAULT_RULE`].
    pub rule: String,
    /// Record series.
    pub series: String,
    /// What happens when retention ends.
    pub disposition: Disposition,
    /// Until when the record is kept.
    pub retain_until: RetainUntil,
    /// The date retention was counted from.
    pub date_source: DateSource,
}

impl RetentionSchedule {
    /// A schedule; rule names must be unique.
    pub fn new(rules: Vec<Rule>, default: Outcome) -> Result<Self, RuleError> {
        let mut names = std::collections::HashSet::new();
        for rule in &rules {
            if !names.insert(rule.name.as_str()) {
                return Err(RuleError(format!("two rules are named {:?}", rule.name)));
            }
        }
        Ok(Self { rules, default })
    }

    /// One series and period for every record, counted from archiving (the CLI's
    /// `--series/--retain`).
    pub fn single(series: impl Into<String>, period: Period) -> Result<Self, RuleError> {
        let disposition = if period == Period::Permanent {
            Disposition::Permanent
        } else {
            Disposition::Destroy
        };
        Self::new(
            Vec::new(),
            Outcome::new(series, period, RetentionStart::ArchivedAt, disposition)?,
        )
    }

    /// Rules in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The default outcome.
    pub fn default_outcome(&self) -> &Outcome {
        &self.default
    }

    /// Classifies a message archived at `archived_at`: the first matching rule, or the
    /// default (always, for a message whose headers could not be parsed).
    pub fn classify(&self, facts: &MessageFacts, archived_at: UnixTime) -> Classification {
        let matched = if facts.unparseable {
            None
        } else {
            self.rules.iter().find(|r| r.matcher.matches(facts))
        };
        let (rule, outcome) = match matched {
            Some(r) => (r.name.as_str(), &r.outcome),
            None => (DEFAULT_RULE, &self.default),
        };
        let (retain_until, date_source) = retain_until(outcome, facts, archived_at);
        Classification {
            rule: rule.to_owned(),
            series: outcome.series.clone(),
            disposition: outcome.disposition,
            retain_until,
            date_source,
        }
    }
}

/// The message date and where it came from (see the module docs for which dates are believed).
pub fn message_date(facts: &MessageFacts, archived_at: UnixTime) -> (UnixTime, DateSource) {
    let believable =
        |t: &UnixTime| t.0 >= 0 && t.0 <= archived_at.0.saturating_add(FUTURE_DATE_TOLERANCE_SECS);
    if let Some(t) = facts.date.filter(believable) {
        (t, DateSource::DateHeader)
    } else if let Some(t) = facts.internal_date.filter(believable) {
        (t, DateSource::InternalDate)
    } else {
        (archived_at, DateSource::ArchivedAt)
    }
}

/// 1 January 00:00:00 UTC of the year after the one `t` falls in (in UTC).
pub fn end_of_calendar_year(t: UnixTime) -> UnixTime {
    let (year, ..) = t.to_civil();
    UnixTime::from_civil(year + 1, 1, 1, 0, 0, 0).unwrap_or(t)
}

fn retain_until(
    outcome: &Outcome,
    facts: &MessageFacts,
    archived_at: UnixTime,
) -> (RetainUntil, DateSource) {
    let (start, source) = match outcome.from {
        RetentionStart::ArchivedAt => (archived_at, DateSource::ArchivedAt),
        RetentionStart::MessageDate => message_date(facts, archived_at),
        RetentionStart::EndOfCalendarYear => {
            let (date, source) = message_date(facts, archived_at);
            (end_of_calendar_year(date), source)
        }
    };
    (outcome.period.retain_until(start), source)
}

mod fingerprint;

#[cfg(test)]
mod tests;
