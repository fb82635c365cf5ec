//! What a `MailboxArchive` reconcile should do, decided without I/O: spec, status, the related
//! objects and the clock in, a [`Plan`] out. The executor in [`super::mailbox_archive`] carries
//! it out (status, Events, starting a run); every branch here has a table test.
//!
//! `spec + status + policy + run in flight? + now -> Refuse | Suspended | Running | Wait | Run`

use super::schedule::{Decision, History, Schedule};
use crate::Reason;
use crate::crd::{MailboxArchiveSpec, MailboxArchiveStatus, RetentionPolicy};
use jiff::Timestamp;
use std::time::Duration;

/// The longest a reconciler sleeps before it looks again (schedules are recomputed on wake-up,
/// so a far slot costs nothing but this).
pub const MAX_REQUEUE: Duration = Duration::from_hours(1);

/// How long a refusal whose cause lies outside the spec (a policy not yet created) waits
/// before it looks again, in case no watch event says so.
pub const OUTSIDE_CAUSE_RETRY: Duration = Duration::from_mins(1);

/// The retention policy an archive names, as the apiserver has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyState {
    /// It exists and is valid.
    Valid,
    /// It does not exist.
    Missing,
    /// It exists but is invalid.
    Invalid(Vec<String>),
}

impl PolicyState {
    /// The state of the policy found (or not).
    pub fn of(policy: Option<&RetentionPolicy>) -> Self {
        match policy.map(|p| p.spec.validate()) {
            None => Self::Missing,
            Some(Ok(())) => Self::Valid,
            Some(Err(problems)) => Self::Invalid(problems),
        }
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The archive cannot run as it is: say why (Ready=False, Degraded=True, a Warning Event).
    /// `retry`: look again after this (a cause outside the spec), else wait for a change.
    Refuse {
        /// Why.
        reason: Reason,
        /// What to fix.
        message: String,
        /// When to look again.
        retry: Option<Duration>,
    },
    /// `spec.suspend`: no run starts; wait for a change.
    Suspended,
    /// A run of this archive is in flight; its end re-triggers the reconcile.
    Running,
    /// Nothing is due before `until` (the next slot, or the retry after a failure).
    Wait {
        /// When the next run is due.
        until: Timestamp,
    },
    /// A run is due now, for `slot`.
    Run {
        /// The slot the run stands for (recorded as `lastScheduleTime`).
        slot: Timestamp,
    },
}

/// Decides what a reconcile of an archive does.
pub fn plan(
    spec: &MailboxArchiveSpec,
    status: &MailboxArchiveStatus,
    policy: &PolicyState,
    running: bool,
    now: Timestamp,
) -> Plan {
    // What the schema could not check.
    let schedule = match spec
        .validate()
        .map_err(|p| p.join("; "))
        .and_then(|()| Schedule::parse(&spec.schedule, &spec.time_zone))
    {
        Ok(s) => s,
        Err(message) => {
            return Plan::Refuse {
                reason: Reason::InvalidSpec,
                message,
                retry: None,
            };
        }
    };
    let name = &spec.retention_policy_ref.name;
    match policy {
        PolicyState::Valid => {}
        PolicyState::Missing => {
            return Plan::Refuse {
                reason: Reason::RetentionPolicyNotFound,
                message: format!(
                    "RetentionPolicy {name} does not exist: no record can be archived without a retention schedule"
                ),
                retry: Some(OUTSIDE_CAUSE_RETRY),
            };
        }
        PolicyState::Invalid(problems) => {
            return Plan::Refuse {
                reason: Reason::RetentionPolicyInvalid,
                message: format!("RetentionPolicy {name} is invalid: {}", problems.join("; ")),
                retry: Some(OUTSIDE_CAUSE_RETRY),
            };
        }
    }
    if spec.suspend {
        return Plan::Suspended;
    }
    if running {
        return Plan::Running;
    }
    match schedule.decide(history(status), now) {
        Decision::Wait { until } => Plan::Wait { until },
        Decision::Run { slot } => Plan::Run { slot },
    }
}

/// What the status says the archive did last.
pub fn history(status: &MailboxArchiveStatus) -> History {
    let parse = |s: &Option<String>| s.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    History {
        last_slot: parse(&status.last_schedule_time),
        last_end: parse(&status.last_sync.as_ref().map(|s| s.end.clone())),
        failures: status.consecutive_failures,
    }
}

/// How long to sleep until `until`, capped at [`MAX_REQUEUE`], and a second late rather than
/// early (a wake-up before the slot would find nothing due).
pub fn until_from(now: Timestamp, until: Timestamp) -> Duration {
    let d = until.duration_since(now);
    Duration::try_from(d)
        .unwrap_or(Duration::ZERO)
        .saturating_add(Duration::from_secs(1))
        .min(MAX_REQUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{LastSync, RunResult};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(schedule: &str) -> MailboxArchiveSpec {
        serde_json::from_value(serde_json::json!({
            "imap": {"host": "mail.city.example", "username": "chief",
                     "passwordSecretRef": {"name": "imap", "key": "password"}},
            "storage": {"bucket": "records", "region": "us-east-1",
                        "credentialsSecretRef": {"name": "s3"}},
            "schedule": schedule,
            "retentionPolicyRef": {"name": "city"}
        }))
        .unwrap()
    }

    fn policy() -> PolicyState {
        PolicyState::Valid
    }

    /// A status whose last run (for `slot`) ended at `end` with `failures` failures in a row.
    fn after_run(slot: &str, end: &str, failures: u32) -> MailboxArchiveStatus {
        MailboxArchiveStatus {
            last_schedule_time: Some(slot.into()),
            last_sync: Some(LastSync {
                start: slot.into(),
                end: end.into(),
                messages: 1,
                bytes: 1,
                capture_gaps: 0,
                result: if failures == 0 {
                    RunResult::Succeeded
                } else {
                    RunResult::Failed
                },
                reason: None,
                message: None,
            }),
            consecutive_failures: failures,
            ..Default::default()
        }
    }

    const NOW: &str = "2026-11-28T02:07:00Z";

    #[test]
    fn an_invalid_spec_is_refused_until_it_changes() {
        let p = plan(
            &spec("61 * * * *"),
            &MailboxArchiveStatus::default(),
            &policy(),
            false,
            at(NOW),
        );
        let Plan::Refuse {
            reason,
            message,
            retry,
        } = p
        else {
            panic!("{p:?}")
        };
        assert_eq!(reason, Reason::InvalidSpec);
        assert!(message.contains("61 * * * *"), "{message}");
        assert_eq!(retry, None);
    }

    #[test]
    fn a_missing_or_invalid_policy_is_refused_and_looked_at_again() {
        let status = MailboxArchiveStatus::default();
        let p = plan(
            &spec("0 2 * * *"),
            &status,
            &PolicyState::Missing,
            false,
            at(NOW),
        );
        assert!(
            matches!(&p, Plan::Refuse { reason: Reason::RetentionPolicyNotFound, message, retry: Some(_) } if message.contains("city")),
            "{p:?}"
        );
        let invalid = PolicyState::Invalid(vec!["rules[0].retain: bad".into()]);
        let p = plan(&spec("0 2 * * *"), &status, &invalid, false, at(NOW));
        assert!(
            matches!(&p, Plan::Refuse { reason: Reason::RetentionPolicyInvalid, message, retry: Some(_) } if message.contains("retain")),
            "{p:?}"
        );
    }

    #[test]
    fn a_suspended_archive_never_runs() {
        let mut s = spec("0 2 * * *");
        s.suspend = true;
        assert_eq!(
            plan(
                &s,
                &MailboxArchiveStatus::default(),
                &policy(),
                false,
                at(NOW)
            ),
            Plan::Suspended
        );
        assert_eq!(PolicyState::of(None), PolicyState::Missing);
        // Even with a run in flight: suspend is what the status must say.
        assert_eq!(
            plan(
                &s,
                &MailboxArchiveStatus::default(),
                &policy(),
                true,
                at(NOW)
            ),
            Plan::Suspended
        );
    }

    #[test]
    fn a_run_in_flight_is_never_started_twice() {
        assert_eq!(
            plan(
                &spec("0 2 * * *"),
                &MailboxArchiveStatus::default(),
                &policy(),
                true,
                at(NOW)
            ),
            Plan::Running
        );
    }

    #[test]
    fn a_new_archive_runs_at_once_then_at_its_slots() {
        let s = spec("0 2 * * *");
        assert_eq!(
            plan(
                &s,
                &MailboxArchiveStatus::default(),
                &policy(),
                false,
                at(NOW)
            ),
            Plan::Run { slot: at(NOW) }
        );
        // Ran for 02:00 today: not due before 02:00 tomorrow.
        let done = after_run("2026-11-28T02:00:00Z", "2026-11-28T02:05:00Z", 0);
        assert_eq!(
            plan(&s, &done, &policy(), false, at(NOW)),
            Plan::Wait {
                until: at("2026-11-29T02:00:00Z")
            }
        );
        // Due at the slot.
        assert_eq!(
            plan(&s, &done, &policy(), false, at("2026-11-29T02:00:30Z")),
            Plan::Run {
                slot: at("2026-11-29T02:00:00Z")
            }
        );
    }

    #[test]
    fn failures_back_off_before_the_next_slot() {
        let s = spec("0 2 * * *");
        // Two failures in a row: retried 20 s after the last one ended, for the same slot.
        let failed = after_run("2026-11-28T02:00:00Z", "2026-11-28T02:06:50Z", 2);
        assert_eq!(
            plan(&s, &failed, &policy(), false, at("2026-11-28T02:07:00Z")),
            Plan::Wait {
                until: at("2026-11-28T02:07:10Z")
            }
        );
        assert_eq!(
            plan(&s, &failed, &policy(), false, at("2026-11-28T02:07:10Z")),
            Plan::Run {
                slot: at("2026-11-28T02:00:00Z")
            }
        );
    }

    #[test]
    fn history_reads_the_status() {
        let status = after_run("2026-11-28T02:00:00Z", "2026-11-28T02:03:00Z", 2);
        let h = history(&status);
        assert_eq!(h.failures, 2);
        assert_eq!(h.last_end, Some(at("2026-11-28T02:03:00Z")));
        assert_eq!(h.last_slot, Some(at("2026-11-28T02:00:00Z")));
    }

    #[test]
    fn requeue_is_capped() {
        let now = at("2026-11-28T00:00:00Z");
        let far = at("2027-11-28T00:00:00Z");
        assert_eq!(until_from(now, far), MAX_REQUEUE);
        assert_eq!(until_from(far, now), Duration::from_secs(1));
    }
}
