//! When an archive runs: cron slots in a time zone, missed slots collapsed into one, failed
//! runs retried with backoff. Pure: the clock comes in as an argument.

use jiff::{Timestamp, Zoned};
use std::time::Duration;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: jiff::tz::TimeZone,
}

/// What the archive did last, as its status records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// The slot the last run was started for.
    pub last_slot: Option<Timestamp>,
    /// When the last run ended.
    pub last_end: Option<Timestamp>,
    /// Failed runs in a row.
    pub failures: u32,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run now, for this slot.
    Run {
        /// The slot the run stands for (recorded as `lastScheduleTime`).
        slot: Timestamp,
    },
    /// Nothing to do before this instant.
    Wait {
        /// The next run is due then.
        until: Timestamp,
    },
}

/// First retry 10 s after a failure, doubling, at most 5 minutes apart: a fixed Secret or
/// password is picked up quickly, a long outage does not hammer the servers.
pub fn retry_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(10);
    Duration::from_secs(10u64.saturating_mul(1 << exp)).min(Duration::from_mins(5))
}

impl Schedule {
    /// Parses a cron expression (five fields or a macro) read in an IANA time zone.
    pub fn parse(expr: &str, time_zone: &str) -> Result<Self, String> {
        Ok(Self {
            cron: crate::crd::parse_cron(expr)?,
            tz: crate::crd::parse_time_zone(time_zone)?,
        })
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&t.to_zoned(self.tz.clone()), false)
            .ok()
            .map(|z: Zoned| z.timestamp())
    }

    /// The latest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&t.to_zoned(self.tz.clone()), true)
            .ok()
            .map(|z: Zoned| z.timestamp())
    }

    /// Decides whether to run. The first run of a new archive starts at once; after that a run
    /// is due at each slot, and slots missed while the operator was down collapse into one run
    /// for the latest of them. After a failure the run is retried with [`retry_delay`], or at
    /// the next slot if that comes first.
    pub fn decide(&self, history: History, now: Timestamp) -> Decision {
        let Some(last_slot) = history.last_slot else {
            return Decision::Run { slot: now };
        };
        let next_slot = self.next_after(last_slot);
        let retry_at = (history.failures > 0)
            .then(|| {
                let delay = jiff::SignedDuration::try_from(retry_delay(history.failures)).ok()?;
                history
                    .last_end
                    .unwrap_or(last_slot)
                    .checked_add(delay)
                    .ok()
            })
            .flatten();
        let due = match (next_slot, retry_at) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            // A schedule with no future slot (e.g. a date that never comes): nothing to do.
            (None, None) => {
                return Decision::Wait {
                    until: Timestamp::MAX,
                };
            }
        };
        if due > now {
            return Decision::Wait { until: due };
        }
        let slot = match next_slot {
            Some(n) if n <= now => self.latest_at_or_before(now).unwrap_or(n),
            // A retry stands for the slot that failed.
            _ => last_slot,
        };
        Decision::Run { slot }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_new_archive_runs_at_once() {
        let s = Schedule::parse("0 2 * * *", "UTC").unwrap();
        let now = at("2026-11-28T10:00:00Z");
        assert_eq!(
            s.decide(History::default(), now),
            Decision::Run { slot: now }
        );
    }

    #[test]
    fn waits_for_the_next_slot_in_its_time_zone() {
        // 02:00 in Chicago is 08:00 UTC in winter (CST, UTC-6).
        let s = Schedule::parse("0 2 * * *", "America/Chicago").unwrap();
        let h = History {
            last_slot: Some(at("2026-11-28T08:00:00Z")),
            last_end: Some(at("2026-11-28T08:01:00Z")),
            failures: 0,
        };
        assert_eq!(
            s.decide(h, at("2026-11-28T12:00:00Z")),
            Decision::Wait {
                until: at("2026-11-29T08:00:00Z")
            }
        );
    }

    #[test]
    fn missed_slots_collapse_into_one_run_for_the_latest() {
        let s = Schedule::parse("0 * * * *", "UTC").unwrap();
        let h = History {
            last_slot: Some(at("2026-11-20T00:00:00Z")),
            last_end: Some(at("2026-11-20T00:05:00Z")),
            failures: 0,
        };
        // Down for a week: one run, for the latest hourly slot, not 170 runs.
        let now = at("2026-11-27T13:42:10Z");
        assert_eq!(
            s.decide(h, now),
            Decision::Run {
                slot: at("2026-11-27T13:00:00Z")
            }
        );
        // After it, the next slot is the next hour.
        let after = History {
            last_slot: Some(at("2026-11-27T13:00:00Z")),
            last_end: Some(now),
            failures: 0,
        };
        assert_eq!(
            s.decide(after, now),
            Decision::Wait {
                until: at("2026-11-27T14:00:00Z")
            }
        );
    }

    #[test]
    fn a_failed_run_is_retried_with_backoff_before_the_next_slot() {
        let s = Schedule::parse("0 2 * * *", "UTC").unwrap();
        let failed = |failures| History {
            last_slot: Some(at("2026-11-28T02:00:00Z")),
            last_end: Some(at("2026-11-28T02:00:30Z")),
            failures,
        };
        assert_eq!(
            s.decide(failed(1), at("2026-11-28T02:00:35Z")),
            Decision::Wait {
                until: at("2026-11-28T02:00:40Z")
            }
        );
        assert_eq!(
            s.decide(failed(1), at("2026-11-28T02:00:41Z")),
            Decision::Run {
                slot: at("2026-11-28T02:00:00Z")
            }
        );
        assert_eq!(
            s.decide(failed(3), at("2026-11-28T02:00:41Z")),
            Decision::Wait {
                until: at("2026-11-28T02:01:10Z")
            }
        );
    }

    #[test]
    fn retry_delay_doubles_up_to_five_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(10));
        assert_eq!(retry_delay(2), Duration::from_secs(20));
        assert_eq!(retry_delay(5), Duration::from_secs(160));
        assert_eq!(retry_delay(6), Duration::from_mins(5));
        assert_eq!(retry_delay(u32::MAX), Duration::from_mins(5));
    }

    #[test]
    fn invalid_schedules_say_why() {
        assert!(Schedule::parse("0 2 * * *", "Atlantis/Capital").is_err());
        assert!(Schedule::parse("0 2 * *", "UTC").is_err());
    }
}
