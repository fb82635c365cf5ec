//! A record's rule disposition under the policy in force, from its record series.
//!
//! `RetentionSchedule --by series--> SeriesDispositions; record series -> (RuleDisposition, rule)`
//!
//! The log holds a record's series, not the rule that classified it (rules are about message
//! content, which the log never holds). So the destruction executor maps a record to a
//! disposition by its series under the policy in force:
//!
//! - one rule (or the default) names the series: its disposition;
//! - several rules name it: the most conservative, `Permanent` over `Review` over `Destroy`
//!   (destroying a record another rule of its series would keep is the error that cannot be
//!   undone; a review costs a records officer a look);
//! - no rule names it any more (the series was renamed or removed from the policy): `Review`,
//!   never `Destroy` — a records officer decides what happens to records the policy no longer
//!   describes.

use super::RuleDisposition;
use crate::rules::{DEFAULT_RULE, Disposition, RetentionSchedule};
use std::collections::BTreeMap;

/// The rule a series answers to: its disposition and the rule's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesRule {
    /// The most conservative disposition among the rules naming the series.
    pub disposition: RuleDisposition,
    /// The first rule (in policy order, the default last) with that disposition.
    pub rule: String,
}

/// Every series a policy names, with its disposition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesDispositions {
    by_series: BTreeMap<String, SeriesRule>,
}

fn rule_disposition(d: Disposition) -> RuleDisposition {
    match d {
        Disposition::Destroy => RuleDisposition::Destroy,
        Disposition::Review => RuleDisposition::Review,
        Disposition::Permanent => RuleDisposition::Permanent,
    }
}

impl SeriesDispositions {
    /// The dispositions of every series `schedule` names.
    pub fn of(schedule: &RetentionSchedule) -> Self {
        let mut by_series: BTreeMap<String, SeriesRule> = BTreeMap::new();
        let outcomes = schedule
            .rules()
            .iter()
            .map(|r| (r.name(), r.outcome()))
            .chain(std::iter::once((DEFAULT_RULE, schedule.default_outcome())));
        for (name, outcome) in outcomes {
            let disposition = rule_disposition(outcome.disposition());
            by_series
                .entry(outcome.series().to_owned())
                .and_modify(|r| {
                    // `RuleDisposition` orders Destroy < Review < Permanent.
                    if disposition > r.disposition {
                        *r = SeriesRule {
                            disposition,
                            rule: name.to_owned(),
                        };
                    }
                })
                .or_insert_with(|| SeriesRule {
                    disposition,
                    rule: name.to_owned(),
                });
        }
        Self { by_series }
    }

    /// The rule of a series, if the policy names it.
    pub fn get(&self, series: &str) -> Option<&SeriesRule> {
        self.by_series.get(series)
    }

    /// The disposition of a record of `series`: `Review` for a series the policy no longer
    /// names.
    pub fn disposition(&self, series: &str) -> RuleDisposition {
        self.get(series)
            .map_or(RuleDisposition::Review, |r| r.disposition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::Period;
    use crate::rules::{Matcher, Outcome, RetentionStart, Rule};

    fn rule(name: &str, series: &str, disposition: Disposition) -> Rule {
        let period = if disposition == Disposition::Permanent {
            Period::Permanent
        } else {
            "P1Y".parse().unwrap()
        };
        let matcher = Matcher {
            folders: vec![format!("{name}/*")],
            ..Matcher::default()
        };
        Rule::new(
            name,
            matcher,
            Outcome::new(series, period, RetentionStart::ArchivedAt, disposition).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_most_conservative_rule_of_a_series_wins_and_an_unnamed_series_is_reviewed() {
        let schedule = RetentionSchedule::new(
            vec![
                rule("a", "GS 1", Disposition::Destroy),
                rule("b", "GS 1", Disposition::Review),
                rule("c", "GS 2", Disposition::Destroy),
                rule("d", "GS 3", Disposition::Review),
                rule("e", "GS 3", Disposition::Permanent),
                rule("f", "GS 3", Disposition::Destroy),
            ],
            Outcome::new(
                "GS 2",
                "P3Y".parse().unwrap(),
                RetentionStart::ArchivedAt,
                Disposition::Destroy,
            )
            .unwrap(),
        )
        .unwrap();
        let d = SeriesDispositions::of(&schedule);
        assert_eq!(
            d.get("GS 1"),
            Some(&SeriesRule {
                disposition: RuleDisposition::Review,
                rule: "b".into()
            })
        );
        assert_eq!(
            d.get("GS 2"),
            Some(&SeriesRule {
                disposition: RuleDisposition::Destroy,
                rule: "c".into()
            })
        );
        assert_eq!(d.disposition("GS 3"), RuleDisposition::Permanent);
        assert_eq!(d.get("GS 3").unwrap().rule, "e");
        assert_eq!(d.disposition("GS 9 (removed)"), RuleDisposition::Review);
        assert_eq!(d.get("GS 9 (removed)"), None);
    }

    #[test]
    fn the_default_rule_answers_for_its_series() {
        let schedule = RetentionSchedule::single("MO-GS-003", "PT5S".parse().unwrap()).unwrap();
        let d = SeriesDispositions::of(&schedule);
        assert_eq!(
            d.get("MO-GS-003"),
            Some(&SeriesRule {
                disposition: RuleDisposition::Destroy,
                rule: DEFAULT_RULE.into()
            })
        );
    }
}
